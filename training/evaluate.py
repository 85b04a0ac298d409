"""Retrieval evaluation of a model on one split (the peers' protocol, see metrics.py).

The metrics are tie-aware: "mR" and the R@K are their expected values when tied candidates
(identical captions, equal scores) come in a random order; the "_pessimistic" and "_plain"
(stable sort, this project's numbers before) variants ride along for comparison."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ssjdn.core.errors import UserError
from ssjdn.core.files import atomic_path
from ssjdn.training.augment import load_images, test_view
from ssjdn.training.benchmarks import benchmark
from ssjdn.training.datasets import CaptionDataset, load_dataset
from ssjdn.training.metrics import all_metrics, format_metrics

TIES_NOTE = ("R@K and mR: expected values when tied candidates (identical captions, scores "
             "within 1e-6) come in a random order; _pessimistic: all tied competitors ranked "
             "first; _plain: ties broken by candidate order (stable sort)")

@torch.no_grad()
def image_embeddings_from_features(model, features: list[torch.Tensor],
                                   batch_size: int = 64) -> torch.Tensor:
    """The model's unit vectors from the cached frozen backbone prefix (same path and vectors
    as encode_images, class evidence included), of the cached view only: a model with
    image.test_views 2 or 4 is validated here on one view (`ssjdn eval` encodes all of them)."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(features[0]), batch_size):
            batch = [f[start:start + batch_size].to(model.device).float() for f in features]
            with model._autocast():
                base, logits, _ = model.image_from_features(model.backbone.resume(batch))
            out.append(model.joint_vectors(base, logits))
    finally:
        model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def score_matrix(model, dataset: CaptionDataset, images: list[torch.Tensor] | None = None,
                 features: list[torch.Tensor] | None = None, test_size: int | None = None,
                 batch_size: int = 64) -> torch.Tensor:
    """Cosine scores [n_images, n_captions]; images (uint8 [3,H,W]) or cached features."""
    if features is not None:
        img = image_embeddings_from_features(model, features, batch_size)
    else:
        size = test_size or model.input_size
        views = [test_view(image, {"test_size": size}) for image in images]
        img = torch.cat([model.encode_images(torch.stack(views[s:s + batch_size]))
                         for s in range(0, len(views), batch_size)])
    txt = model.encode_texts(dataset.all_captions)
    return model.similarity(img, txt).cpu()


def evaluate_model(model, dataset: CaptionDataset, images=None, features=None,
                   folds: int = 1, test_size: int | None = None) -> dict[str, float]:
    scores = score_matrix(model, dataset, images, features, test_size)
    return all_metrics(scores, folds, captions=dataset.all_captions)


def evaluate_checkpoint(checkpoint: str | Path, data_root: str | Path, split: str,
                        dataset_name: str | None = None, fmt: str = "auto",
                        folds: int | None = None, report: str | Path | None = None,
                        device: str | None = None, log=print) -> dict:
    """`ssjdn eval`: load a checkpoint, score a split, print and write a JSON report."""
    from ssjdn.core.model.api import load_model

    if folds is not None and folds < 1:
        raise UserError(f"--folds must be 1 or more, not {folds}.")
    model = load_model(checkpoint, device=device)
    extra = getattr(model, "checkpoint_extra", {}) or {}
    train_cfg = extra.get("train_config") or {}
    # No name given and none in the checkpoint: the reader tells it from the folder's files.
    dataset = load_dataset(data_root, split, name=dataset_name or train_cfg.get("dataset"), fmt=fmt)
    name = dataset.name
    folds = folds or benchmark(name).folds   # the benchmark's usual protocol
    if folds > len(dataset):
        raise UserError(f"--folds {folds} is more than the {len(dataset)} images of split "
                        f"{split!r}.")
    started = time.time()
    images = load_images(dataset.image_paths)
    test_size = (train_cfg.get("augment") or {}).get("test_size")
    metrics = evaluate_model(model, dataset, images=images, folds=folds, test_size=test_size)
    result = {
        "checkpoint": str(checkpoint), "model": model.name, "dataset": name, "split": split,
        "images": len(dataset), "captions": len(dataset.all_captions), "folds": folds,
        "metrics": metrics, "ties": TIES_NOTE, "seconds": round(time.time() - started, 1),
        "trained_epoch": extra.get("epoch"),
    }
    log(f"{name} {split} ({len(dataset)} images, {len(dataset.all_captions)} captions"
        f"{', %d-fold average' % folds if folds > 1 else ''}): {format_metrics(metrics)}")
    report = Path(report) if report else Path(checkpoint).with_suffix(f".eval-{name}-{split}.json")
    _write_report(report, result)
    log(f"report written to {report}")
    result["report"] = str(report)
    return result


def _write_report(path: Path, result: dict) -> None:
    """Atomically; a place that cannot take it (read-only install, a file in the way) is the
    user's to change."""
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")
    except UserError as exc:   # no space or no permission: atomic_path's words, and the way out
        raise UserError(f"{exc} Give another path with --report.") from None
    except OSError as exc:
        raise UserError(f"Cannot write the report {path}: {exc.strerror or exc}. Give another "
                        "path with --report.") from None
