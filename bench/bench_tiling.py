"""What overlap and a second tile size cost and gain when things fall across tile borders
(issue 19, item 2).

    PYTHONPATH=.pkg .venv/bin/python bench/bench_tiling.py --out /tmp/tiling
        [--checkpoint shipped] [--data-root ../shared/datasets/ucm_captions] [--threads 2]

Built from UCM-Captions **val** images only (split "val" of dataset_ucm.json; the model never
trained on them). 81 val images (seeded draw, every class) are laid edge to edge in a 9 x 9
grid at 0.3 m, and the raster is that grid with `--cut` px cut off each side, holding 7 x 7
whole images whose borders lie that far off the tile grid. With --cut 128 (half a default
tile) every whole image is cut into four quarters by the default 76.8 m tiles, but the 38.4 m
grid then lines up with the images exactly (a best case for the second scale); --cut 96 lines
up with no grid (images are 62.5 % / 37.5 % across 76.8 m tiles, 75 % / 25 % across 38.4 m
ones). A control raster (--control) keeps 8 x 8 images aligned with the grid (no cut).

Each whole image is one query: its first caption. Two measures per query, over the search's
top hits (with the suppression of hits on mostly the same ground that search applies):
* found@10: a top-10 hit lies mostly (> 50 % of its area) on the query's own image;
* P@5 (class): the share of the top 5 hits that lie mostly on images of the query's class.
Tilings (all through build_index, each into its own index, timed): 76.8 m; 76.8 m with
overlap 0.5; 76.8 + 38.4 m; 76.8 + 38.4 m with overlap 0.5; and the control at 76.8 m.
Prints a table and one JSON line; writes result.json into --out.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import load_bench_model, set_threads  # noqa: E402
from bench_find_objects import CLASSES, ucm_class  # noqa: E402

import numpy as np  # noqa: E402

TILE = 256          # px of a UCM image and of a 76.8 m tile at 0.3 m
PIXEL_M = 0.3
GRID = 9            # images per side of the canvas
MOSTLY = 0.5        # a hit lies "mostly" on an image when more than this share of it does
CONFIGS = {         # name -> (tile sizes in metres, overlap)
    "76.8 m": ([76.8], 0.0),
    "76.8 m, overlap 0.5": ([76.8], 0.5),
    "76.8 + 38.4 m": ([76.8, 38.4], 0.0),
    "76.8 + 38.4 m, overlap 0.5": ([76.8, 38.4], 0.5),
}


def val_entries(data_root: Path, n: int, seed: int = 0) -> list[dict]:
    """`n` val images (path, class, first caption), every class represented, seeded order."""
    data = json.loads((data_root / "dataset_ucm.json").read_text())
    val = [e for e in data["images"] if e["split"] == "val"]
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[dict]] = {}
    for e in val:
        by_class.setdefault(ucm_class(e["filename"]), []).append(e)
    picked = []
    while len(picked) < n:   # round robin over classes, so each holds about n / 21 images
        for name in CLASSES:
            pool = [e for e in by_class.get(name, []) if e not in picked]
            if pool and len(picked) < n:
                picked.append(pool[rng.integers(len(pool))])
    order = rng.permutation(len(picked))
    images = data_root / "images"
    return [{"path": next(images.glob(f"{Path(picked[i]['filename']).stem}.*")),
             "class": ucm_class(picked[i]["filename"]),
             "caption": picked[i]["sentences"][0]["raw"].strip(" .")} for i in order]


def write_canvas(entries: list[dict], path: Path, cut: int) -> dict:
    """Lay the images out GRID x GRID, cut `cut` px off each side; returns {image number:
    (col0, row0) of its top-left in the raster} for the images kept whole."""
    import rasterio
    from PIL import Image
    from rasterio.transform import from_origin
    canvas = np.zeros((3, GRID * TILE, GRID * TILE), np.uint8)
    for i, entry in enumerate(entries[:GRID * GRID]):
        image = Image.open(entry["path"]).convert("RGB").resize((TILE, TILE))
        r, c = divmod(i, GRID)
        canvas[:, r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE] = np.asarray(image).transpose(2, 0, 1)
    side = GRID * TILE - 2 * cut if cut else (GRID - 1) * TILE
    raster = canvas[:, cut:cut + side, cut:cut + side]
    profile = dict(driver="GTiff", width=side, height=side, count=3, dtype="uint8", crs="EPSG:32633",
                   transform=from_origin(500_000, 4_600_000, PIXEL_M, PIXEL_M), tiled=True,
                   blockxsize=256, blockysize=256, photometric="RGB", compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(raster)
    whole = {}
    for i in range(GRID * GRID):
        r, c = divmod(i, GRID)
        col0, row0 = c * TILE - cut, r * TILE - cut
        if col0 >= 0 and row0 >= 0 and col0 + TILE <= side and row0 + TILE <= side:
            whole[i] = (col0, row0)
    return whole


def image_shares(window, layout_cut: int) -> dict[int, float]:
    """{image number: share of the hit's window lying on it}."""
    col0, row0, w, h = (int(window.col_off) + layout_cut, int(window.row_off) + layout_cut,
                        int(window.width), int(window.height))
    shares = {}
    for r in range(row0 // TILE, (row0 + h - 1) // TILE + 1):
        for c in range(col0 // TILE, (col0 + w - 1) // TILE + 1):
            dx = min(col0 + w, (c + 1) * TILE) - max(col0, c * TILE)
            dy = min(row0 + h, (r + 1) * TILE) - max(row0, r * TILE)
            if dx > 0 and dy > 0:
                shares[r * GRID + c] = dx * dy / (w * h)
    return shares


def evaluate(index, model, entries, whole, cut) -> dict:
    from ssjdn.core.query.search import search_text
    found, precision = [], []
    for number in whole:
        hits = search_text(index, model, entries[number]["caption"], k=10)
        mostly = [max(image_shares(h.window, cut).items(), key=lambda kv: kv[1]) for h in hits]
        found.append(any(img == number and share > MOSTLY for img, share in mostly))
        top5 = [entries[img]["class"] == entries[number]["class"] and share > MOSTLY
                for img, share in mostly[:5]]
        precision.append(sum(top5) / 5)
    return {"found@10": round(100 * float(np.mean(found)), 1),
            "P@5_class": round(100 * float(np.mean(precision)), 1), "queries": len(whole)}


def run_config(model, raster: Path, index_dir: Path, sizes, overlap) -> dict:
    from ssjdn.core.index.index_store import TileIndex
    from ssjdn.core.index.indexing import build_index
    start = time.perf_counter()
    stats = build_index(index_dir, raster, model, tile_ground_m=sizes, overlap=overlap)
    seconds = time.perf_counter() - start
    return {"tiles": stats.tiles_encoded, "encode_s": round(seconds, 1),
            "index": TileIndex.open(index_dir, model=model)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoint", default="shipped")
    parser.add_argument("--data-root", type=Path, default=Path("../shared/datasets/ucm_captions"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cut", type=int, default=96, help="px cut off each side (0 < cut < 256)")
    parser.add_argument("--control", action="store_true", help="also the aligned control at 76.8 m")
    args = parser.parse_args()
    set_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    model = load_bench_model(args.checkpoint)
    entries = val_entries(args.data_root, GRID * GRID)
    layouts = {f"cut {args.cut}": (args.cut, CONFIGS)}
    if args.control:
        layouts["aligned"] = (0, {"76.8 m": CONFIGS["76.8 m"]})
    results = {}
    for layout, (cut, configs) in layouts.items():
        raster = args.out / f"layout-{cut}.tif"
        whole = write_canvas(entries, raster, cut)
        for name, (sizes, overlap) in configs.items():
            run = run_config(model, raster, args.out / f"idx-{cut}-{len(sizes)}-{overlap}", sizes, overlap)
            with run.pop("index") as index:
                run.update(evaluate(index, model, entries, whole, cut))
            results[f"{layout}: {name}"] = run
            print(f"{layout:8s} {name:28s} {run['tiles']:5d} tiles {run['encode_s']:7.1f} s  "
                  f"found@10 {run['found@10']:5.1f}  P@5 class {run['P@5_class']:5.1f}  "
                  f"({run['queries']} queries)", flush=True)
    (args.out / "result.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
