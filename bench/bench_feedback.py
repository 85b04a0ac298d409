"""Refine by example, measured: text only vs relevance feedback vs the find-all classifier.

Builds a georeferenced mosaic GeoTIFF from the UCM-Captions val images (one 256 px image at
0.3 m per 76.8 m cell, UTM 31N, cells in a seeded random order), indexes it with the real engine
(one tile per image) and, for each of the 21 classes, plays a simulated analyst:

1. search with one caption-like query (QUERIES, written for this bench, not UCM captions);
2. mark the top 10 hits relevant or not by their true class, refine (Rocchio);
3. mark the next 10 unmarked hits of the refined ranking, refine again;
4. train the classifier on all 20 marks (when >= 3 are relevant) and rank by probability.

Each full ranking is scored by residual average precision: the marked tiles are removed and the
rest of the class is relevant (with ~10 images per class precision@k saturates). A class whose
members were all marked has no residual and is left out of that mean (counts are printed).
The text-only ranking is scored against both mark sets, so every method is compared with text
only on the same residual.

    nice -n 19 python bench/bench_feedback.py                      # shipped model, default weights
    nice -n 19 python bench/bench_feedback.py --tune               # grid over weights and settings
    nice -n 19 python bench/bench_feedback.py --marks 5            # more of each class left to score
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import load_bench_model, set_threads  # noqa: E402

# ../shared of the checkout (or of a folder above it, as for a git worktree).
UCM = next((p / "shared" / "datasets" / "ucm_captions" for p in Path(__file__).resolve().parents[1:]
            if (p / "shared" / "datasets" / "ucm_captions").is_dir()), Path("../shared/datasets/ucm_captions"))
CELL_PX = 256
RES_M = 0.3                    # 256 px x 0.3 m = 76.8 m, the model's training ground size
MARKS_PER_ROUND = 10
# One caption-like query per class, in class order ((N - 1) // 100 of image N).
QUERIES = [
    "a piece of farmland with crops in rows",             # agricultural
    "an airplane parked at the airport",                  # airplane
    "a baseball field next to some trees",                # baseballdiamond
    "waves washing onto a sandy beach",                   # beach
    "tall buildings with a parking lot beside them",      # buildings
    "bare land with scattered shrubs",                    # chaparral
    "many houses packed closely together",                # denseresidential
    "a dense forest full of trees",                       # forest
    "a freeway with cars driving on it",                  # freeway
    "a golf course with green lawns and trees",           # golfcourse
    "many boats docked in a harbor",                      # harbor
    "two roads crossing at an intersection",              # intersection
    "houses with gardens along curved roads",             # mediumresidential
    "mobile homes parked in neat rows",                   # mobilehomepark
    "an overpass crossing over roads",                    # overpass
    "many cars parked in a parking lot",                  # parkinglot
    "a river flowing through the land",                   # river
    "a long airport runway with markings",                # runway
    "a few houses scattered among trees and lawns",       # sparseresidential
    "several round white storage tanks",                  # storagetanks
    "a tennis court surrounded by trees",                 # tenniscourt
]


class TextCache:
    """The model with its text vectors remembered: the tuning grids ask for the same 21 queries
    hundreds of times, and the encoder would dominate the run time."""

    def __init__(self, model):
        self._model, self._vectors = model, {}

    def encode_texts(self, texts):
        missing = [t for t in texts if t not in self._vectors]
        if missing:
            self._vectors.update(zip(missing, self._model.encode_texts(missing).float().cpu()))
        import torch
        return torch.stack([self._vectors[t] for t in texts])

    def __getattr__(self, name):
        return getattr(self._model, name)


def build_mosaic(path: Path, ucm: Path, split: str = "val", seed: int = 0) -> tuple[str, np.ndarray, int]:
    """Write a split's images as one GeoTIFF grid (kept if already there, so its index is reused);
    returns (path, class per cell, columns)."""
    import rasterio
    from PIL import Image
    from rasterio.transform import from_origin
    images = [i for i in json.loads((ucm / "dataset_ucm.json").read_text())["images"] if i["split"] == split]
    numbers = np.random.default_rng(seed).permutation([int(i["filename"].split(".")[0]) for i in images])
    cols = int(np.ceil(np.sqrt(len(numbers))))
    rows = int(np.ceil(len(numbers) / cols))
    classes = (numbers - 1) // 100
    if path.exists():
        return str(path), classes, cols
    mosaic = np.zeros((3, rows * CELL_PX, cols * CELL_PX), np.uint8)
    for cell, number in enumerate(numbers):
        image = Image.open(ucm / "images" / f"{number}.webp").convert("RGB")
        if image.size != (CELL_PX, CELL_PX):   # a few UCM images are 1-7 px short
            image = image.resize((CELL_PX, CELL_PX), Image.BILINEAR)
        r, c = divmod(cell, cols)
        mosaic[:, r * CELL_PX:(r + 1) * CELL_PX, c * CELL_PX:(c + 1) * CELL_PX] = np.moveaxis(np.asarray(image), -1, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", width=mosaic.shape[2], height=mosaic.shape[1], count=3, dtype="uint8",
                   crs="EPSG:32631", transform=from_origin(500_000, 5_700_000, RES_M, RES_M),
                   photometric="RGB", tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    # Cells past the last image stay black: all-nodata tiles are never indexed.
    profile["nodata"] = 0 if rows * cols > len(numbers) else None
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(mosaic)
    return str(path), classes, cols


def tile_classes(index, mosaics: dict[str, tuple[np.ndarray, int]]) -> dict[int, int]:
    """tile id -> true class, from the tile's mosaic ({path: (class per cell, columns)}) and its
    window position in the mosaic grid."""
    from ssjdn.core.query.feedback import all_tile_ids
    ids = all_tile_ids(index)
    truth = {}
    for record in index.tiles(ids):
        w = record.window
        assert w.width == CELL_PX and w.col_off % CELL_PX == 0 and w.row_off % CELL_PX == 0, w
        classes, cols = mosaics[str(Path(record.raster_path).resolve())]
        truth[record.tile_id] = int(classes[int(w.row_off) // CELL_PX * cols + int(w.col_off) // CELL_PX])
    return truth


def residual_ap(ranking, relevant: set, marked: set) -> float | None:
    """Average precision of `ranking` with `marked` removed; None if no relevant tile is left."""
    rest = relevant - marked
    if not rest:
        return None
    found, total = 0, 0.0
    for rank, tile_id in enumerate((t for t in ranking if t not in marked), start=1):
        if tile_id in rest:
            found += 1
            total += found / rank
    return total / len(rest)


def mark_next(ranking, marks: dict, truth: dict, cls: int, n: int = MARKS_PER_ROUND) -> dict:
    """The analyst marks the top n not yet marked tiles of a ranking by their true class."""
    marks = dict(marks)
    for tile_id in [t for t in ranking if t not in marks][:n]:
        marks[tile_id] = truth[tile_id] == cls
    return marks


def split(marks: dict) -> tuple[list[int], list[int]]:
    return [t for t, ok in marks.items() if ok], [t for t, ok in marks.items() if not ok]


def run_class(index, model, query: str, cls: int, truth: dict, weights, settings,
              marks_per_round: int = MARKS_PER_ROUND) -> dict:
    from ssjdn.core.query.feedback import DEFAULT_THRESHOLD, MIN_POSITIVES, search_refined, tile_probabilities
    from ssjdn.core.query.search import search_text
    n = index.count
    relevant = {t for t, c in truth.items() if c == cls}
    text_rank = [h.tile_id for h in search_text(index, model, query, k=n)]
    marks1 = mark_next(text_rank, {}, truth, cls, marks_per_round)
    refined1 = [h.tile_id for h in search_refined(index, model, query, *split(marks1), k=n, weights=weights)]
    marks2 = mark_next(refined1, marks1, truth, cls, marks_per_round)
    refined2 = [h.tile_id for h in search_refined(index, model, query, *split(marks2), k=n, weights=weights)]
    result = {"text@1": residual_ap(text_rank, relevant, set(marks1)),
              "refine1": residual_ap(refined1, relevant, set(marks1)),
              "text@2": residual_ap(text_rank, relevant, set(marks2)),
              "refine2": residual_ap(refined2, relevant, set(marks2)),
              "positives": len(split(marks2)[0]), "classifier": None}
    if result["positives"] >= MIN_POSITIVES:
        ids, probabilities = tile_probabilities(index, *split(marks2), settings=settings)
        order = np.argsort(-probabilities, kind="stable")
        result["classifier"] = residual_ap(ids[order].tolist(), relevant, set(marks2))
        # What `ssjdn classify` writes at the default threshold, marked tiles aside.
        found = {int(t) for t, p in zip(ids, probabilities) if p >= DEFAULT_THRESHOLD} - set(marks2)
        rest = relevant - set(marks2)
        result["precision@0.5"] = len(found & rest) / len(found) if found else None
        result["recall@0.5"] = len(found & rest) / len(rest) if rest else None
    return result


def summarise(results: list[dict]) -> dict:
    """Means over the classes that have a residual (and, for the classifier, >= 3 positives)."""
    def mean(key, rows):
        values = [r[key] for r in rows]
        return float(np.mean(values)) if values else float("nan")
    round1 = [r for r in results if r["text@1"] is not None]
    round2 = [r for r in results if r["text@2"] is not None]
    trained = [r for r in round2 if r["classifier"] is not None]
    detected = [r for r in trained if r["precision@0.5"] is not None]
    return {"classes_round1": len(round1), "text@1": mean("text@1", round1), "refine1": mean("refine1", round1),
            "classes_round2": len(round2), "text@2": mean("text@2", round2), "refine2": mean("refine2", round2),
            "classes_classifier": len(trained), "text@cls": mean("text@2", trained),
            "refine2@cls": mean("refine2", trained), "classifier": mean("classifier", trained),
            "precision@0.5": mean("precision@0.5", detected), "recall@0.5": mean("recall@0.5", trained),
            "classes_detected": len(detected)}


def evaluate(index, model, truth, weights, settings, marks_per_round: int = MARKS_PER_ROUND):
    """(summary, per-class results) of the whole protocol with these weights and settings."""
    results = [run_class(index, model, q, cls, truth, weights, settings, marks_per_round)
               for cls, q in enumerate(QUERIES)]
    return summarise(results), results


def report(summary: dict, marks: int = MARKS_PER_ROUND) -> str:
    s = summary
    return (f"residual AP, mean over classes ({len(QUERIES)} classes)\n"
            f"  after 1 round of {marks} marks ({s['classes_round1']} classes with a residual):\n"
            f"    text only         {s['text@1']:.3f}\n"
            f"    refined once      {s['refine1']:.3f}   ({s['refine1'] - s['text@1']:+.3f})\n"
            f"  after 2 rounds, {2 * marks} marks ({s['classes_round2']} classes with a residual):\n"
            f"    text only         {s['text@2']:.3f}\n"
            f"    refined twice     {s['refine2']:.3f}   ({s['refine2'] - s['text@2']:+.3f})\n"
            f"  classifier on the {2 * marks} marks ({s['classes_classifier']} classes with >= 3 positives):\n"
            f"    text only         {s['text@cls']:.3f}\n"
            f"    refined twice     {s['refine2@cls']:.3f}\n"
            f"    classifier        {s['classifier']:.3f}   ({s['classifier'] - s['text@cls']:+.3f})\n"
            f"  at the default threshold 0.5, unmarked tiles: precision {s['precision@0.5']:.3f} "
            f"({s['classes_detected']} classes with detections), recall {s['recall@0.5']:.3f}")


def tune(index, model, truth, marks: int = MARKS_PER_ROUND) -> None:
    """Grids over the Rocchio weights and the classifier settings (one at a time: they are
    independent, the classifier only sees the marks)."""
    from ssjdn.core.query.feedback import DEFAULT_CLASSIFIER, DEFAULT_WEIGHTS, RocchioWeights
    print("Rocchio (text = 1): positive negative -> refine1 gain, refine2 gain")
    for positive, negative in itertools.product((0.5, 1.0, 2.0, 4.0, 8.0), (0.0, 0.25, 0.5, 1.0, 2.0)):
        s, _ = evaluate(index, model, truth, RocchioWeights(1.0, positive, negative), DEFAULT_CLASSIFIER,
                        marks)
        print(f"  {positive:4.2f} {negative:4.2f} -> {s['refine1'] - s['text@1']:+.3f} "
              f"{s['refine2'] - s['text@2']:+.3f}", flush=True)
    print("classifier: C min_negatives balanced -> classifier AP (vs text on the same classes)")
    for c, negatives, balanced in itertools.product((0.1, 1.0, 10.0, 100.0), (20, 50, 100), (True, False)):
        settings = replace(DEFAULT_CLASSIFIER, C=c, min_negatives=negatives, balanced=balanced)
        s, _ = evaluate(index, model, truth, DEFAULT_WEIGHTS, settings, marks)
        print(f"  {c:6.1f} {negatives:4d} {balanced!s:5} -> {s['classifier']:.3f} "
              f"({s['classifier'] - s['text@cls']:+.3f})", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shipped", help="checkpoint path, 'shipped' (default) or config name")
    parser.add_argument("--ucm", type=Path, default=UCM, help="UCM-Captions folder (dataset_ucm.json, images/)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ssjdn_bench_feedback"),
                        help="folder for the mosaic and its index (reused when present)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    parser.add_argument("--marks", type=int, default=MARKS_PER_ROUND,
                        help=f"tiles the analyst marks per round (default {MARKS_PER_ROUND}; fewer "
                             "leave more of each class unmarked to score)")
    parser.add_argument("--tune", action="store_true", help="print grids over weights and settings")
    parser.add_argument("--per-class", action="store_true", help="print each class's figures")
    args = parser.parse_args(argv)
    if not (args.ucm / "dataset_ucm.json").is_file():
        parser.error(f"UCM-Captions not found in {args.ucm}; pass --ucm FOLDER.")
    set_threads(args.threads)
    from ssjdn.core.query.feedback import DEFAULT_CLASSIFIER, DEFAULT_WEIGHTS
    from ssjdn.core.index.index_store import TileIndex
    from ssjdn.core.index.indexing import build_index

    model = load_bench_model(args.model)
    # The val split: the checkout's shared folder holds train + val, and train taught the model.
    raster, classes, cols = build_mosaic(args.work / "ucm_val_mosaic.tif", args.ucm, "val")
    mosaics = {str(Path(raster).resolve()): (classes, cols)}
    index_dir = args.work / "index_val"
    start = time.perf_counter()
    build_index(index_dir, raster, model, tile_px=CELL_PX)
    print(f"indexed {raster} into {index_dir} in {time.perf_counter() - start:.1f} s")
    model = TextCache(model)
    with TileIndex.open(index_dir, model=model) as index:
        truth = tile_classes(index, mosaics)
        print(f"{index.count} tiles; Rocchio {DEFAULT_WEIGHTS}; classifier {DEFAULT_CLASSIFIER}")
        if args.tune:
            tune(index, model, truth, args.marks)
        summary, results = evaluate(index, model, truth, DEFAULT_WEIGHTS, DEFAULT_CLASSIFIER, args.marks)
        if args.per_class:
            for query, r in zip(QUERIES, results):
                print(f"  {query[:44]:44} " + " ".join(
                    f"{key}={'-' if r[key] is None else format(r[key], '.3f')}"
                    for key in ("text@1", "refine1", "text@2", "refine2", "classifier")))
        print(report(summary, args.marks))


if __name__ == "__main__":
    main()
