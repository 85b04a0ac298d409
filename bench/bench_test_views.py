"""Val mR of models encoding each tile once, as 0 + 180 degree views, or as four quarter turns.

    .venv/bin/python bench/bench_test_views.py --data-root ../shared/datasets/ucm_captions \
        runs/global_s0 runs/global_s1 runs/global_s2 [--split val] [--threads 2] [--ensemble]

Each model is a checkpoint file, or a training folder (its last epoch's moving-average
weights, what that epoch's validation scored: no best-epoch picking). Prints, per model and
as mean +- std over the models, the tie-aware mR for image.test_views 1 / 2 / 4 with the
model's vectors as they are and with class evidence 3 (one view); with --ensemble also the
mR of the models' mean score matrix (one view and two views), and the turned single views
(90, 180, 270 degrees) that tell a bias of the upright view from the gain of averaging.
On UCM it also scores the mean AP of the pasted-object benchmark (bench_find_objects.py,
in-process, one view) as the model is and with class evidence 3: a model can gain val mR and
lose the small objects.

Why: averaging a tile's rotated views did not lift the shipped Lite0 model on val (49.57 ->
49.27), but first looks at the stacked Lite1 recipe with BSD on a global path suggested +1
mR. Encoding cost is the number of views times one view's (the FLOPs are exact multiples).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import statistics
from pathlib import Path

from ssjdn.core.offline import use_offline_hub

use_offline_hub()   # before torch/transformers load

import torch  # noqa: E402

VIEWS = (1, 2, 4)
sys.path.insert(0, str(Path(__file__).resolve().parent))   # bench_find_objects


def load(path: str):
    from ssjdn.core.model.api import load_model
    from ssjdn.training.checkpoints import load_final_average
    return load_final_average(path, device="cpu") if Path(path).is_dir() else load_model(path, device="cpu")


@contextlib.contextmanager
def encoding(model, views: int = 1, class_evidence: float | None = None):
    """The model encoding `views` views per tile, with `class_evidence` as its class-evidence
    weight when given; as it came afterwards (its config is its fingerprint)."""
    image_cfg, kept_weight = model.config["image"], model.class_evidence_weight
    kept_cfg = dict(image_cfg)
    image_cfg["test_views"] = views
    if class_evidence is not None:
        model.class_evidence_weight = class_evidence
    try:
        yield model
    finally:
        image_cfg.clear()
        image_cfg.update(kept_cfg)
        model.class_evidence_weight = kept_weight


def scores_of(model, dataset, images, views: int, class_evidence: float | None = None) -> torch.Tensor:
    from ssjdn.training.evaluate import score_matrix
    with encoding(model, views, class_evidence):
        return score_matrix(model, dataset, images=images, test_size=model.input_size)


def pasted_benchmark(data_root: Path):
    """(tiles, records) of the pasted-object benchmark, or None (said) where the data root has
    no UCM val images of its classes."""
    from bench_find_objects import build_benchmark, missing_classes
    missing = missing_classes(data_root)
    if missing:
        print(f"pasted-object AP left out: {data_root} has no UCM val images of {', '.join(missing)}")
        return None
    tiles, records, _ = build_benchmark(data_root)
    return tiles, records


def pasted_rows(model, tiles, records) -> dict[str, float]:
    """Mean AP on the pasted-object benchmark (bench_find_objects), one view, with the model's
    vectors as they are and with class evidence 3: a recipe that gains val mR can lose the
    small objects (2026-12-06), so runs are compared on both."""
    from bench_find_objects import in_process_ap
    rows = {}
    for label, weight in (("", None), (", class evidence 3", 3.0)):
        with encoding(model, 1, weight):
            rows[f"pasted AP{label}"] = round(in_process_ap(model, tiles, records)["mean"], 3)
    return rows


def turned_scores(model, dataset, images, turns: int) -> torch.Tensor:
    """One view, the tile turned by `turns` quarter turns before encoding."""
    return scores_of(model, dataset, [torch.rot90(image, turns, (-2, -1)) for image in images], 1)


def mean_std(values: list[float], digits: int = 2) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} +- {spread:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="checkpoint files or training folders")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ensemble", action="store_true",
                        help="also score the mean of the models' score matrices")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from ssjdn.training.augment import load_images, test_view
    from ssjdn.training.datasets import load_dataset
    from ssjdn.training.metrics import all_metrics

    dataset = load_dataset(args.data_root, args.split, name="ucm")
    originals = load_images(dataset.image_paths)
    pasted = pasted_benchmark(Path(args.data_root))

    def mean_recall(scores: torch.Tensor) -> float:
        return round(all_metrics(scores, 1, captions=dataset.all_captions)["mR"], 2)

    table: dict[str, list[float]] = {}
    kept: dict[tuple[str, int], torch.Tensor] = {}
    for path in args.models:
        model = load(path)
        images = [test_view(image, {"test_size": model.input_size}) for image in originals]
        row = {}
        for views in VIEWS:
            kept[(path, views)] = scores_of(model, dataset, images, views)
            row[f"views {views}"] = mean_recall(kept[(path, views)])
        row["views 1, class evidence 3"] = mean_recall(scores_of(model, dataset, images, 1, 3.0))
        for turns in (1, 2, 3):
            row[f"one view turned {90 * turns}"] = mean_recall(turned_scores(model, dataset, images, turns))
        if pasted:
            row.update(pasted_rows(model, *pasted))
        print(path, json.dumps(row), flush=True)
        for key, value in row.items():
            table.setdefault(key, []).append(value)
    print(f"mean +- std over {len(args.models)} models:")
    for key, values in table.items():
        print(f"  {key}: {mean_std(values, 3 if key.startswith('pasted') else 2)}")
    if args.ensemble and len(args.models) > 1:
        for views in (1, 2):
            mean = sum(kept[(path, views)] for path in args.models) / len(args.models)
            print(f"ensemble of {len(args.models)} (mean score), views {views}: {mean_recall(mean)}")


if __name__ == "__main__":
    main()
