"""One query's text embedding on a CPU, fast: the model's text path run by ONNX Runtime.

A search encodes one short text. In PyTorch eager, MiniLM (fp32, 6 layers) took 21-41 ms of
that on 2 CPU cores, more than the rest of a 10M-tile search; the same graph exported to ONNX
and run by ONNX Runtime (fused attention, GELU and layer norm, its own GEMM kernels) takes
8-9 ms and gives the same vector (largest difference 1.3e-7 on unit vectors). So single
queries on a CPU go through here; batches (eval, training, caption ranking) stay in PyTorch.

The export is made once per model (keyed by its fingerprint) into the user's cache folder and
checked against PyTorch on a probe text before use; a cached file is run only if this
installation wrote it (its sha256 is recorded, core.provenance), else it is exported again. Anything that stops it (no onnxruntime,
an export error, a damaged file, a GPU model, a model being trained) falls back to PyTorch:
the same results, slower.
"""
from __future__ import annotations

import threading
import warnings
import weakref
from pathlib import Path

import numpy as np
import torch

from ssjdn.core import provenance
from ssjdn.core.files import atomic_path, sha256_of
from ssjdn.core.places import cache_dir

# Largest difference to PyTorch's embedding of the probe text accepted from an export.
AGREEMENT_ATOL = 1e-4
KEPT_EXPORTS = 4   # exported models kept in the cache folder, most recent first
_PROBE_TEXT = "many cars are parked in a parking lot next to a road"
_encoders: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


class QueryEncoder:
    """encode(text) -> float32 [1, D] unit vector; `runtime` says which ran it."""

    def __init__(self, model, session=None):
        self.model = model
        self.session = session
        self.runtime = "pytorch" if session is None else "onnxruntime"

    def encode(self, text: str) -> np.ndarray:
        if self.session is None:
            return self.model.encode_texts([text]).float().cpu().numpy()
        batch = self.model.tokenize([text])
        feeds = {"input_ids": batch["input_ids"].numpy().astype(np.int64),
                 "attention_mask": batch["attention_mask"].numpy().astype(np.int64)}
        return self.session.run(None, feeds)[0].astype(np.float32)


def encode_query(model, text: str) -> np.ndarray:
    """float32 [1, D]: `text` embedded by `model`, through ONNX Runtime when it can."""
    return query_encoder(model).encode(text)


def query_encoder(model) -> QueryEncoder:
    """The model's query encoder, made once per model object (the export once per model)."""
    if model.training or model.device.type != "cpu":
        return QueryEncoder(model)   # weights changing, or a GPU already fast: PyTorch
    with _lock:
        encoder = _encoders.get(model)
        if encoder is None:
            encoder = QueryEncoder(model, _onnx_session(model))
            _encoders[model] = encoder
        return encoder


def forget_encoders() -> None:
    """Drop the encoders made so far (tests; a process starting afresh)."""
    with _lock:
        _encoders.clear()


def _onnx_session(model):
    try:
        import onnxruntime
    except ImportError:
        return None
    path = cache_dir() / "onnx" / f"text-{model.fingerprint[:32]}.onnx"
    for attempt in range(2):   # a damaged or foreign cached file is exported again, once
        try:
            if attempt or not path.is_file():
                _export(model, path)
            # Run only a graph this installation wrote: a crafted one could map every text to
            # the probe's vector and pass the agreement check. Checked and loaded from the same
            # bytes, so the file cannot change in between.
            graph = path.read_bytes()
            if not provenance.written_here(sha256_of(graph)):
                raise ValueError(f"{path} was not written by this installation")
            session = _session(onnxruntime, graph)
            _check_agreement(model, session)
            return session
        except Exception as exc:  # noqa: BLE001 - any failure: PyTorch does the work
            if attempt:
                warnings.warn(f"Queries are encoded by PyTorch (slower): the ONNX text encoder "
                              f"could not be used ({type(exc).__name__}: {exc}).", stacklevel=3)
    return None


class _TextPath(torch.nn.Module):
    """The model's text side as encode_texts computes it, for export."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model.text_vectors(input_ids, attention_mask)


def _export(model, path: Path) -> None:
    sample = model.tokenize([_PROBE_TEXT])
    # whole or not at all: another process may read it
    with atomic_path(path) as tmp, torch.no_grad(), model._eval_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # An eval-mode wrapper: the exporter restores the wrapper's mode afterwards, and a
        # fresh module's train mode would put the model into training (and drop its fingerprint).
        torch.onnx.export(
            _TextPath(model).eval(), (sample["input_ids"], sample["attention_mask"]), str(tmp),
            input_names=["input_ids", "attention_mask"], output_names=["embedding"],
            dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                          "attention_mask": {0: "batch", 1: "tokens"}},
            opset_version=17, dynamo=False)
        provenance.remember_written(sha256_of(tmp.read_bytes()))
    _forget_old_exports(path.parent, keep=path)


def _forget_old_exports(folder: Path, keep: Path) -> None:
    """Keep the KEPT_EXPORTS most recently made exports (each ~90 MB for MiniLM): a user trying
    checkpoints one after another must not fill the cache folder."""
    exports = sorted(folder.glob("text-*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [p for p in exports if p != keep][KEPT_EXPORTS - 1:]:
        old.unlink(missing_ok=True)


def _session(onnxruntime, graph: bytes):
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Threads sleep between queries instead of spinning: an app waiting for the next query
    # must leave the cores to indexing and drawing.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def _check_agreement(model, session) -> None:
    expected = model.encode_texts([_PROBE_TEXT]).float().cpu().numpy()
    got = QueryEncoder(model, session).encode(_PROBE_TEXT)
    if got.shape != expected.shape or not np.allclose(got, expected, atol=AGREEMENT_ATOL):
        raise ValueError("the exported graph's embedding differs from PyTorch's")
