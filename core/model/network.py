"""The SSJDN model: image branch with BSD and LSD, text branch, joint embedding space.

A reconstruction from the paper's abstract (see docs/model.md): the roles of the parts are the
paper's, the equations are ours. Every part has a switch so that an ablation can measure it.
"""
from __future__ import annotations

import hashlib
import json
import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ssjdn.core.errors import UserError
from ssjdn.core.model.backbones import build_backbone
from ssjdn.core.model.loss import SemanticTripleLoss
from ssjdn.core.model.text import TextEncoder, load_tokenizer, mean_pool

DIRECTIONS = ("coarse_to_fine", "fine_to_coarse")
# The scale at which each pass ends: it has no neighbour to suppress, so its SSM is 1.0.
END_SCALE = {"coarse_to_fine": 2, "fine_to_coarse": 0}


def salience_keys(scales: int = 3) -> list[tuple[str, str, int]]:
    """(kind, direction, scale) of every map worth showing: the SEM maps, and the SSM maps
    other than each pass's end scale (constant 1.0 by construction)."""
    return [(kind, direction, scale) for kind in ("sem", "ssm") for direction in DIRECTIONS
            for scale in range(scales) if kind == "sem" or scale != END_SCALE[direction]]


@dataclass
class SalienceMaps:
    """Per direction, per scale (0 = finest, stride 8) maps in [0, 1], each [B, h, w]."""

    sem: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    ssm: dict[str, list[torch.Tensor]] = field(default_factory=dict)


@dataclass
class ModelOutput:
    img_emb: torch.Tensor
    txt_emb: torch.Tensor
    img_logits: torch.Tensor | None = None
    txt_logits: torch.Tensor | None = None
    # SEM supervision (loss.sem_weight / loss.sem_sparsity): class logits of each of the six
    # SEM-pooled clues [B, 6, K], and the mean SEM value over all maps [B].
    sem_logits: torch.Tensor | None = None
    sem_mean: torch.Tensor | None = None


def projection_head(in_dim: int, out_dim: int) -> nn.Module:
    """The same two-layer head on every path, so switches compare parts, not head sizes."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(inplace=True), nn.Linear(out_dim, out_dim))


class SalienceExtractionUnit(nn.Module):
    """SEM unit: A_s = sigmoid(conv(F_s)), a spatial map of what this scale should keep."""

    def __init__(self, width: int):
        super().__init__()
        hidden = max(width // 4, 4)
        # Replicate padding: zero padding made every finest map bright along the bottom edge
        # (3.7x the map mean on 100 UCM val tiles; 1.2-1.4x with replicate, bench_sem_edges.py).
        self.net = nn.Sequential(nn.Conv2d(width, hidden, 3, padding=1, padding_mode="replicate"),
                                 nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, 1, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(features))


class BidirectionalScaleDecoupling(nn.Module):
    """BSD: each scale keeps its salient part and suppresses what its neighbour scale took.

    Coarse-to-fine: M_s = 1 - l * resize(A_(s+1)); fine-to-coarse: M_s = 1 - l * resize(A_(s-1)).
    The clue of scale s is the (A_s * M_s)-weighted average of F_s; six clues are fused.
    """

    def __init__(self, width: int, out_dim: int, scales: int = 3):
        super().__init__()
        self.scales = scales
        self.sem_units = nn.ModuleDict({d: nn.ModuleList(SalienceExtractionUnit(width)
                                                         for _ in range(scales)) for d in DIRECTIONS})
        # l = sigmoid(logit) keeps the suppression strength learned and inside [0, 1].
        self.suppression_logit = nn.Parameter(torch.zeros(len(DIRECTIONS)))
        self.fuse = projection_head(width * scales * len(DIRECTIONS), out_dim)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, SalienceMaps, torch.Tensor]:
        """(fused feature, maps, the six clues [B, 6, width])."""
        maps = SalienceMaps()
        clues = []
        for index, direction in enumerate(DIRECTIONS):
            strength = torch.sigmoid(self.suppression_logit[index])
            extraction = [unit(f) for unit, f in zip(self.sem_units[direction], feats)]
            suppression = []
            for s, f in enumerate(feats):
                neighbour = s + 1 if direction == "coarse_to_fine" else s - 1
                if s != END_SCALE[direction]:
                    other = F.interpolate(extraction[neighbour], size=f.shape[-2:], mode="bilinear",
                                          align_corners=False)
                    suppression.append(1.0 - strength * other)
                else:  # the end scale of a pass has nothing to suppress
                    suppression.append(torch.ones_like(extraction[s]))
                weight = extraction[s] * suppression[s]
                clues.append((f * weight).sum((2, 3)) / weight.sum((2, 3)).clamp_min(1e-6))
            maps.sem[direction] = [a.squeeze(1) for a in extraction]
            maps.ssm[direction] = [m.squeeze(1) for m in suppression]
        return self.fuse(torch.cat(clues, dim=1)), maps, torch.stack(clues, dim=1)


class CategoryAttention(nn.Module):
    """Each category embedding queries a set of features: one pooled feature per category."""

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int):
        super().__init__()
        self.query = nn.Linear(query_dim, attn_dim)
        self.key = nn.Linear(key_dim, attn_dim)
        self.value = nn.Linear(key_dim, attn_dim)
        self.scale = 1.0 / math.sqrt(attn_dim)

    def forward(self, categories: torch.Tensor, tokens: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        scores = torch.einsum("ka,bna->bkn", self.query(categories), self.key(tokens)) * self.scale
        if mask is not None:
            scores = scores.masked_fill(~mask.bool().unsqueeze(1), torch.finfo(scores.dtype).min)
        return torch.einsum("bkn,bna->bka", scores.softmax(-1), self.value(tokens))


class SemanticSide(nn.Module):
    """One modality's half of LSD: category features, a classifier, a gated semantic term."""

    def __init__(self, categories: int, query_dim: int, key_dim: int, attn_dim: int, embed_dim: int):
        super().__init__()
        self.attention = CategoryAttention(query_dim, key_dim, attn_dim)
        # One weight vector per category (SSGRL style): logit_k = <w_k, v_k> + b_k.
        self.class_weight = nn.Parameter(torch.randn(categories, attn_dim) * attn_dim ** -0.5)
        self.class_bias = nn.Parameter(torch.zeros(categories))
        self.project = nn.Linear(attn_dim, embed_dim)
        self.gate = nn.Linear(2 * embed_dim, embed_dim)

    def forward(self, category_embeddings, tokens, base, mask=None):
        per_category = self.attention(category_embeddings, tokens, mask)
        logits = (per_category * self.class_weight).sum(-1) + self.class_bias
        # Weighted by the predicted label distribution in training and test alike, so the
        # embedding never depends on a label that is missing at search time.
        semantic = self.project((logits.softmax(-1).unsqueeze(-1) * per_category).sum(1))
        gate = torch.sigmoid(self.gate(torch.cat([base, semantic], dim=-1)))
        return base + gate * semantic, logits


class LabelSemanticDecoupling(nn.Module):
    """LSD: category embeddings (from the text encoder's encoding of class names) guide
    attention over image regions and caption tokens; both sides are classified."""

    def __init__(self, categories: int, text_dim: int, image_width: int, embed_dim: int,
                 attn_dim: int = 256):
        super().__init__()
        self.category_embeddings = nn.Parameter(torch.zeros(categories, text_dim))
        self.image = SemanticSide(categories, text_dim, image_width, attn_dim, embed_dim)
        self.text = SemanticSide(categories, text_dim, text_dim, attn_dim, embed_dim)


class SSJDN(nn.Module):
    def __init__(self, config: dict, pretrained: bool = True):
        super().__init__()
        self.config = config
        image_cfg, text_cfg = config["image"], config["text"]
        dim, width = int(config["embed_dim"]), int(image_cfg["width"])
        self.switches = {k: bool(config.get(k, True)) for k in ("bsd", "lsd", "stl")}
        self.categories = list(config.get("categories") or [])
        if not self.categories:
            self.switches["lsd"] = False  # nothing to supervise with

        self.backbone = build_backbone(image_cfg, pretrained)
        self.lateral = nn.ModuleList(nn.Sequential(nn.Conv2d(c, width, 1, bias=False),
                                                   nn.BatchNorm2d(width), nn.ReLU(inplace=True))
                                     for c in self.backbone.channels)
        if self.switches["bsd"]:
            self.bsd = BidirectionalScaleDecoupling(width, dim)
            if float(config.get("loss", {}).get("sem_weight", 0)) > 0 and self.categories:
                # SEM supervision: each SEM-pooled clue alone must tell the scene class, so a
                # map has to weight the regions that show it (the object, not the background).
                self.sem_classifier = nn.Linear(width, len(self.categories))
        if not self.switches["bsd"] or config.get("bsd_global_path", False):
            # VSE++: one global pooled feature of the coarsest scale. With bsd_global_path
            # BSD's fused clues are added to it, starting at zero: training begins from the
            # plain pooled model and BSD adds only what pays (as a replacement it cost val mR
            # on frozen maps, docs/training.md).
            self.image_head = projection_head(width, dim)
            if self.switches["bsd"]:
                nn.init.zeros_(self.bsd.fuse[-1].weight)
                nn.init.zeros_(self.bsd.fuse[-1].bias)
        self.text_encoder = TextEncoder(text_cfg, pretrained)
        self.tokenizer = load_tokenizer(text_cfg["encoder"])
        self.text_head = projection_head(self.text_encoder.hidden_size, dim)
        if self.switches["lsd"]:
            self.lsd = LabelSemanticDecoupling(len(self.categories), self.text_encoder.hidden_size,
                                               width, dim, int(config.get("lsd_attn_dim", 256)))
            self._init_category_embeddings()
        self.criterion = SemanticTripleLoss(config.get("loss", {}), self.switches)
        self.register_buffer("pixel_mean", torch.tensor(image_cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(image_cfg["std"]).view(1, 3, 1, 1), persistent=False)
        self._fingerprint: str | None = None
        self.class_evidence_weight = _class_evidence_weight(config, self.switches["lsd"])
        _view_turns(image_cfg.get("test_views", 1))   # a bad value is refused when the model is built

    # ----------------------------------------------------------------- properties
    @property
    def vector_dim(self) -> int:
        """Length of the vectors encode_images / encode_texts return (what an index stores)."""
        extra = len(self.categories) if self.class_evidence_weight else 0
        return int(self.config["embed_dim"]) + extra

    @property
    def view_turns(self) -> tuple[int, ...]:
        """Quarter turns of a tile whose vectors encode_images averages (config image.test_views)."""
        return _view_turns(self.config["image"].get("test_views", 1))

    @property
    def name(self) -> str:
        return self.config["name"]

    @property
    def input_size(self) -> int:
        return int(self.config["image"]["input_size"])

    @property
    def ground_size_m(self) -> float | None:
        value = self.config["image"].get("ground_size_m")
        return float(value) if value else None

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def fingerprint(self) -> str:
        """sha256 over the config and every weight: an index built by another model differs."""
        if self._fingerprint is None:
            digest = hashlib.sha256(json.dumps(self.config, sort_keys=True).encode())
            for key, tensor in sorted(self.state_dict().items()):
                digest.update(key.encode())
                digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def train(self, mode: bool = True):
        if mode:
            self._fingerprint = None  # weights may change from here on
        return super().train(mode)

    # ----------------------------------------------------------------- building blocks
    @torch.no_grad()
    def _init_category_embeddings(self) -> None:
        """LSD's category embeddings from the class names read by the text encoder.

        Computed in float64 and rounded once to float32: these values enter the fingerprint,
        and a float32 pass rounds differently on another thread count or CPU, so an index
        built with a config model was refused by a search in a process with other threads."""
        names = [c.replace("_", " ") for c in self.categories]
        batch = self.tokenizer(names, padding=True, return_tensors="pt")
        dtype = next(self.text_encoder.parameters()).dtype
        self.text_encoder.double()   # float32 -> float64 -> float32 is exact for the weights
        try:
            tokens = self.text_encoder(batch["input_ids"], batch["attention_mask"])
            pooled = mean_pool(tokens, batch["attention_mask"])
        finally:
            self.text_encoder.to(dtype)
        self.lsd.category_embeddings.copy_(pooled.float())

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(list(texts), padding=True, truncation=True,
                               max_length=int(self.config["text"].get("max_length", 32)),
                               return_tensors="pt")
        return {k: batch[k].to(self.device) for k in ("input_ids", "attention_mask")}

    def preprocess_images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 0..255 or float 0..1 RGB [B,3,H,W] -> normalised [B,3,S,S] on the model device."""
        images = images.to(self.device, non_blocking=True)
        images = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        size = self.input_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                                   align_corners=False)
        return (images - self.pixel_mean) / self.pixel_std

    def backbone_features(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone(pixels)

    def image_from_features(self, feats: list[torch.Tensor]):
        """Backbone features -> (embedding before norm, LSD logits, salience maps).

        Split from the backbone so training can cache frozen backbone features.
        """
        return self._image_branch(feats)[:3]

    def _image_branch(self, feats: list[torch.Tensor]):
        """image_from_features plus the BSD clues [B, 6, width] (None with BSD off)."""
        return self._decouple(self._project(feats))

    def _project(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Backbone maps -> the three scale maps at the common width."""
        return [lateral(f.float()) for lateral, f in zip(self.lateral, feats)]

    def _decouple(self, feats: list[torch.Tensor]):
        """Projected scale maps -> (embedding before norm, LSD logits, maps, clues)."""
        maps = clues = None
        base = 0
        if self.switches["bsd"]:
            base, maps, clues = self.bsd(feats)
        if hasattr(self, "image_head"):
            base = base + self.image_head(feats[-1].mean((2, 3)))
        logits = None
        if self.switches["lsd"]:
            # The finest fused map: every scale summed at stride 8.
            fused = feats[0] + sum(F.interpolate(f, size=feats[0].shape[-2:], mode="bilinear",
                                                 align_corners=False) for f in feats[1:])
            base, logits = self.lsd.image(self.lsd.category_embeddings,
                                          fused.flatten(2).transpose(1, 2), base)
        return base, logits, maps, clues

    def text_forward(self, input_ids, attention_mask):
        tokens = self.text_encoder(input_ids, attention_mask)
        base = self.text_head(mean_pool(tokens, attention_mask))
        logits = None
        if self.switches["lsd"]:
            base, logits = self.lsd.text(self.lsd.category_embeddings, tokens, base, attention_mask)
        return base, logits

    def forward(self, pixels, input_ids, attention_mask, features=None) -> ModelOutput:
        """`features`: the frozen backbone prefix's cached output (see backbone.frozen_prefix);
        only the trainable stages then run."""
        feats = self.backbone.resume(features) if features is not None else self.backbone_features(pixels)
        img, img_logits, maps, clues = self._image_branch(feats)
        txt, txt_logits = self.text_forward(input_ids, attention_mask)
        sem_logits = self.sem_classifier(clues.float()) if hasattr(self, "sem_classifier") else None
        sem_mean = None
        if maps is not None and float(self.config.get("loss", {}).get("sem_sparsity", 0)) > 0:
            sem_mean = torch.stack([a.flatten(1).mean(1) for per in maps.sem.values()
                                    for a in per]).mean(0)
        return ModelOutput(F.normalize(img.float(), dim=-1), F.normalize(txt.float(), dim=-1),
                           img_logits, txt_logits, sem_logits, sem_mean)

    # ----------------------------------------------------------------- inference API
    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    @contextmanager
    def _eval_mode(self):
        """Eval mode for the block, restoring training mode after; a no-op when already in
        eval mode (walking every module costs ~10 ms, and train() drops the fingerprint)."""
        was_training = self.training
        if was_training:
            self.eval()
        try:
            yield
        finally:
            if was_training:
                self.train()

    def _stack_embeddings(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(parts) if parts else torch.zeros(0, self.vector_dim, device=self.device)

    def joint_vectors(self, base: torch.Tensor, logits: torch.Tensor | None) -> torch.Tensor:
        """The unit vectors the product compares: the embedding, and with class evidence on,
        the LSD class distribution appended (weight w): cosine = (g.t + w p_image.p_text) / norms.

        Why: the LSD image side attends to each category wherever it lies in the tile, so a
        thing covering a quarter of it moves p_image for its class while the pooled embedding
        still reads as the background. On pasted UCM-val objects (bench/bench_tile_scores.py)
        w = 3 lifted mean AP from 0.739 to 0.852 with val mR 49.31 -> 49.57; the vectors stay
        unit-norm, so every cosine, threshold and image-to-image search keeps its meaning."""
        vector = F.normalize(base.float(), dim=-1)
        if self.class_evidence_weight and logits is not None:
            probs = logits.float().softmax(-1) * self.class_evidence_weight ** 0.5
            vector = F.normalize(torch.cat([vector, probs], -1), dim=-1)
        return vector

    def text_vectors(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Tokens -> joint text vectors (encode_texts and the exported query encoder)."""
        return self.joint_vectors(*self.text_forward(input_ids, attention_mask))

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, with_maps: bool = False, batch_size: int = 64):
        """Unit-norm image embeddings [B, D] (float32), optionally with SalienceMaps."""
        embeddings, all_maps = [], []
        with self._eval_mode():
            for start in range(0, len(images), batch_size):
                pixels = self.preprocess_images(images[start:start + batch_size])
                vectors, maps = self._view_vectors(pixels)
                embeddings.append(vectors)
                all_maps.append(maps)
        emb = self._stack_embeddings(embeddings)
        if not with_maps:
            return emb
        return emb, _concat_maps(all_maps, len(images), self)

    def _view_vectors(self, pixels: torch.Tensor):
        """Joint vectors of preprocessed pixels, with the upright view's SalienceMaps.

        With config image.test_views 2 or 4 the vector is the normalised mean of the vectors of
        the tile turned by 0 and 180 (or 0, 90, 180, 270) degrees. Why: the backbone pads its
        stride-2 convolutions on one side, so a single view sees the tile's sides unequally;
        on UCM val the mean of two opposite views scored ~1 mR above the upright view alone
        (docs/training.md, "Test-time views"), at 2x the encoding cost. Turning the tile by any
        of those turns then leaves its vector unchanged."""
        _, *turned = self.view_turns   # (0, ...): the upright view comes first; its maps are returned
        vectors, upright_maps = self._one_view(pixels)
        if not turned:
            return vectors, upright_maps
        for turns in turned:
            vectors = vectors + self._one_view(torch.rot90(pixels, turns, (-2, -1)))[0]
        return F.normalize(vectors, dim=-1), upright_maps

    def _one_view(self, pixels: torch.Tensor):
        with self._autocast():
            base, logits, maps = self.image_from_features(self.backbone_features(pixels))
        return self.joint_vectors(base, logits), maps

    def query_maps(self, images: torch.Tensor, query: str | torch.Tensor,
                   batch_size: int = 16) -> torch.Tensor:
        """Where in each image the query matches: float32 [B, S/8, S/8] (S = input_size), >= 0.

        Each cell is the positive part of its first-order contribution to the image's cosine
        similarity with the query: gradient x activation of the three projected scale maps
        (summed over channels, upsampled to the stride-8 grid and summed over scales). So
        it follows every path the tile score takes (BSD clues, LSD attention, fusion); higher
        = that place raises the match more. `query` is a text or its embedding [D].

        The map is the mean of the maps of the image's four 90-degree rotations, each turned
        back: the backbone pads its stride-2 convolutions on the top and left only, and a
        single view's map left the top and left quarters of a tile nearly dark (on UCM val
        pasted objects, pointing 2.91 -> 3.10 and maxima in the object 0.87 -> 0.91; a blur
        of the single view lowers both, so this is not smoothing). Turning the image turns
        the map with it. Four forward + backward passes per image."""
        text = (self.encode_texts([query])[0] if isinstance(query, str)
                else query.to(self.device).float().reshape(-1))
        parts = []
        with self._eval_mode():
            for start in range(0, len(images), batch_size):
                pixels = self.preprocess_images(images[start:start + batch_size])
                parts.append(sum(torch.rot90(self._view_contribution_map(
                    torch.rot90(pixels, turns, (-2, -1)), text), -turns, (-2, -1))
                    for turns in range(4)) / 4)
        side = self.input_size // 8
        return torch.cat(parts) if parts else torch.zeros(0, side, side, device=self.device)

    def _view_contribution_map(self, pixels: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            scale_maps = [f.detach() for f in self._project(self.backbone_features(pixels))]
        return self._contribution_map(scale_maps, text)

    def _contribution_map(self, scale_maps: list[torch.Tensor], text: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            leaves = [f.requires_grad_(True) for f in scale_maps]
            base, logits = self._decouple(leaves)[:2]
            score = (self.joint_vectors(base, logits) @ text).sum()
            # With BSD off only the coarsest scale reaches the embedding: unused maps add 0.
            grads = torch.autograd.grad(score, leaves, allow_unused=True)
        size = scale_maps[0].shape[-2:]
        total = sum(F.interpolate((g * f).sum(1, keepdim=True), size=size, mode="bilinear",
                                  align_corners=False) for g, f in zip(grads, leaves) if g is not None)
        return total[:, 0].detach().float().clamp_min(0)

    @torch.no_grad()
    def encode_texts(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """Unit-norm text embeddings [N, D] (float32)."""
        out = []
        with self._eval_mode():
            for start in range(0, len(texts), batch_size):
                batch = self.tokenize(texts[start:start + batch_size])
                with self._autocast():
                    out.append(self.text_vectors(batch["input_ids"], batch["attention_mask"]))
        return self._stack_embeddings(out)

    @staticmethod
    def similarity(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        return image_embeddings.float() @ text_embeddings.float().T


def _concat_maps(batches: list[SalienceMaps | None], count: int, model: SSJDN) -> SalienceMaps:
    if not batches or batches[0] is None:
        # BSD off: no salience; give neutral maps so callers need no special case.
        side = model.input_size // 8
        ones = [torch.ones(count, side >> s, side >> s, device=model.device) for s in range(3)]
        return SalienceMaps({d: ones for d in DIRECTIONS}, {d: ones for d in DIRECTIONS})
    cat = lambda key: {d: [torch.cat([getattr(b, key)[d][s].float() for b in batches])  # noqa: E731
                           for s in range(3)] for d in DIRECTIONS}
    return SalienceMaps(cat("sem"), cat("ssm"))


def _view_turns(views) -> tuple[int, ...]:
    """config image.test_views (1, 2 or 4) -> the quarter turns whose vectors are averaged."""
    turns = {1: (0,), 2: (0, 2), 4: (0, 1, 2, 3)}
    if isinstance(views, bool) or not isinstance(views, int) or views not in turns:
        raise UserError(f"image.test_views must be 1, 2 or 4 (views of a tile turned by 0/180 "
                        f"or 0/90/180/270 degrees, averaged), not {views!r}.")
    return turns[views]


def _class_evidence_weight(config: dict, lsd_on: bool) -> float:
    """config `class_evidence_weight` (default 0: the plain embedding), checked. The evidence is
    LSD's class distribution, so with LSD off (an ablation, or a dataset without categories)
    there is none and the vectors are the embeddings."""
    weight = config.get("class_evidence_weight", 0) or 0
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
            or weight < 0:
        raise UserError(f"class_evidence_weight must be a number >= 0, not {weight!r}.")
    return float(weight) if lsd_on else 0.0
