"""Find the thing, not the scene: pasted-object retrieval AP and map pointing (issue 16, item 4).

    PYTHONPATH=.pkg .venv/bin/python bench/bench_find_objects.py --out /tmp/find_objects
        [--checkpoint resources/ssjdn-default.safetensors]
        [--data-root ../shared/datasets/ucm_captions] [--per-kind 10] [--threads 2]

Built from UCM-Captions **val** images only (split "val" of dataset_ucm.json; the model never
trained on them). The class of image N is (N - 1) // 100 over the 21 alphabetical classes.

* Objects: up to `--per-kind` val images of each compact-object class (airplane, baseball
  diamond, storage tanks, tennis court). From each, one 128 x 128 px crop (a quarter of a
  256 px tile's area) at native scale, chosen by a fixed rule, not by eye and not by the
  model: the window (stride 8) whose pixels differ most from the image's median colour (sum
  of the per-pixel RGB distance), i.e. the least background-like quarter. The crops are
  written to `objects.png` so the rule can be checked by eye.
* Scenes: val images of natural (agricultural, beach, chaparral, forest, river) and built-up
  (buildings, dense residential, freeway, mobile home park, parking lot) classes, none of
  which holds those objects. Each object is pasted into one natural and one built-up scene,
  at a seeded random position; each such scene is also kept unchanged. So there are
  4 x 2 x per_kind composites and as many plain scenes (airplane has only 9 val images:
  156 tiles at per_kind 10).
* The tiles make one GeoTIFF mosaic (0.3 m pixels, UTM 33N, 256 px tiles = the model's 76.8 m),
  indexed with `ssjdn index` and searched with `ssjdn search -k ALL --out hits.geojson` for
  one plain query per object; AP per object counts that object's composites as relevant,
  every other tile (the plain scenes and the other objects' composites) as not.
* Pointing of a map on a composite: its mass inside the pasted box divided by the box's share
  of the tile (1 = uniform, 4 = all inside). A map is shifted to a minimum of 0 first (a
  similarity map has an arbitrary offset; the app's colour scale also spans min..max); the
  SEM maps (sigmoids in [0, 1]) are also scored raw, as bench/bench_pointing.py does.
  "hit" is the share of composites whose map maximum lies inside the box.
Prints a table and one JSON line; writes result.json into --out.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from ssjdn.core.offline import use_offline_hub

use_offline_hub()   # before torch/transformers load

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

TILE = 256
OBJECT_SIDE = 128            # a quarter of the tile's area
PIXEL_M = 0.3                # UCM's ground sample distance
CLASSES = ["agricultural", "airplane", "baseballdiamond", "beach", "buildings", "chaparral",
           "denseresidential", "forest", "freeway", "golfcourse", "harbor", "intersection",
           "mediumresidential", "mobilehomepark", "overpass", "parkinglot", "river", "runway",
           "sparseresidential", "storagetanks", "tenniscourt"]
# Object class -> the plain query searched for it.
OBJECT_QUERIES = {"airplane": "an airplane", "baseballdiamond": "a baseball diamond",
                  "storagetanks": "storage tanks", "tenniscourt": "a tennis court"}
NATURAL = ["agricultural", "beach", "chaparral", "forest", "river"]
BUILT_UP = ["buildings", "denseresidential", "freeway", "mobilehomepark", "parkinglot"]


def ucm_class(filename: str) -> str:
    return CLASSES[(int(Path(filename).stem) - 1) // 100]


def val_images_by_class(data_root: Path) -> dict[str, list[Path]]:
    data = json.loads((data_root / "dataset_ucm.json").read_text())
    images = data_root / "images"
    by_class: dict[str, list[Path]] = {}
    for entry in sorted(data["images"], key=lambda e: int(Path(e["filename"]).stem)):
        if entry["split"] == "val":
            stem = Path(entry["filename"]).stem
            path = next(images.glob(f"{stem}.*"))
            by_class.setdefault(ucm_class(entry["filename"]), []).append(path)
    return by_class


def missing_classes(data_root: Path) -> list[str]:
    """The classes the benchmark draws on that have no val image under data_root (the
    benchmark is built from UCM-Captions; other folders lack some or all of them)."""
    if not (Path(data_root) / "dataset_ucm.json").is_file():
        return [*OBJECT_QUERIES, *NATURAL, *BUILT_UP]
    present = val_images_by_class(Path(data_root))
    return [c for c in (*OBJECT_QUERIES, *NATURAL, *BUILT_UP) if c not in present]


def object_box(image: torch.Tensor, side: int = OBJECT_SIDE, stride: int = 8) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the side x side window least like the image's median colour."""
    pixels = image.float()
    median = pixels.flatten(1).median(dim=1).values.view(3, 1, 1)
    distance = (pixels - median).norm(dim=0)
    sums = F.avg_pool2d(distance[None, None], side, stride=stride)[0, 0]
    row, col = divmod(int(sums.argmax()), sums.shape[1])
    x0, y0 = col * stride, row * stride
    return x0, y0, x0 + side, y0 + side


def build_benchmark(data_root: Path, per_kind: int = 10, seed: int = 0):
    """(tiles uint8 [N, 3, 256, 256], records, object crops): records[i] says what tile i is."""
    from ssjdn.training.augment import read_image, resize

    by_class = val_images_by_class(data_root)
    natural = [p for c in NATURAL for p in by_class[c]]
    built_up = [p for c in BUILT_UP for p in by_class[c]]
    rng = np.random.default_rng(seed)
    rng.shuffle(natural)
    rng.shuffle(built_up)
    tiles, records, crops = [], [], []
    for kind in OBJECT_QUERIES:
        for source in by_class[kind][:per_kind]:
            image = resize(read_image(source), TILE)
            x0, y0, x1, y1 = object_box(image)
            crop = image[:, y0:y1, x0:x1]
            crops.append(crop)
            for scenes, ground in ((natural, "natural"), (built_up, "built-up")):
                scene_path = scenes.pop()
                scene = resize(read_image(scene_path), TILE)
                px, py = (int(v) for v in rng.integers(0, TILE - OBJECT_SIDE + 1, size=2))
                composite = scene.clone()
                composite[:, py:py + OBJECT_SIDE, px:px + OBJECT_SIDE] = crop
                common = {"scene": scene_path.name, "ground": ground, "object_source": source.name}
                tiles += [composite, scene]
                records += [dict(common, kind=kind, box=[px, py, px + OBJECT_SIDE, py + OBJECT_SIDE]),
                            dict(common, kind=None, box=None)]
    return torch.stack(tiles), records, crops


def write_mosaic(tiles: torch.Tensor, path: Path, max_cols: int = 16) -> tuple[int, int]:
    """The tiles as one RGB GeoTIFF, row by row, in a full grid (no filler tiles to index:
    the column count divides the tile count); returns (cols, rows)."""
    import rasterio
    from rasterio.transform import from_origin

    cols = max(c for c in range(1, max_cols + 1) if len(tiles) % c == 0)
    rows = len(tiles) // cols
    mosaic = np.zeros((3, rows * TILE, cols * TILE), np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        mosaic[:, r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE] = tile.numpy()
    profile = dict(driver="GTiff", width=mosaic.shape[2], height=mosaic.shape[1], count=3,
                   dtype="uint8", crs="EPSG:32633", photometric="RGB", compress="deflate",
                   transform=from_origin(400_000, 5_000_000, PIXEL_M, PIXEL_M))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(mosaic)
    return cols, rows


def average_precision(ranked_relevance: list[bool], total_relevant: int) -> float:
    """AP of a ranking (relevant items missing from it count as never found)."""
    hits, precision_sum = 0, 0.0
    for rank, relevant in enumerate(ranked_relevance, start=1):
        if relevant:
            hits += 1
            precision_sum += hits / rank
    return precision_sum / total_relevant if total_relevant else 0.0


def pointing(salience: torch.Tensor, box, shift: bool = True) -> tuple[float, bool]:
    """(mass inside box / box area share, whether the maximum is inside) of one map [h, w]."""
    up = F.interpolate(salience[None, None].float(), size=(TILE, TILE), mode="bilinear",
                       align_corners=False)[0, 0]
    up = up - up.min() if shift else up.clamp_min(0)
    if float(up.sum()) <= 1e-12:   # a constant map points nowhere: uniform
        up = torch.ones_like(up)
    x0, y0, x1, y1 = box
    share = float(up[y0:y1, x0:x1].sum() / up.sum().clamp_min(1e-12))
    row, col = divmod(int(up.argmax()), TILE)
    area = (x1 - x0) * (y1 - y0) / float(TILE * TILE)
    return share / area, bool(x0 <= col < x1 and y0 <= row < y1)


def cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "ssjdn.core.cli", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"ssjdn {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def retrieval_ap(out: Path, records: list[dict], cols: int, checkpoint: str) -> dict:
    """Index the mosaic and search each object query with the CLI; AP per object."""
    index_dir = out / "index"
    started = time.perf_counter()
    cli("index", str(out / "mosaic.tif"), "--index", str(index_dir), "--model", checkpoint)
    result = {"index_s": round(time.perf_counter() - started, 1)}
    for kind, query in OBJECT_QUERIES.items():
        hits_path = out / f"hits_{kind}.geojson"
        cli("search", query, "--index", str(index_dir), "-k", str(len(records)), "--out", str(hits_path))
        order = [f["properties"]["row_off"] // TILE * cols + f["properties"]["col_off"] // TILE
                 for f in json.loads(hits_path.read_text())["features"]]
        relevant = [records[i]["kind"] == kind for i in order]
        total = sum(r["kind"] == kind for r in records)
        result[kind] = {"query": query, "ap": average_precision(relevant, total), "relevant": total,
                        "top10_relevant": int(sum(relevant[:10]))}
    result["mean_ap"] = float(np.mean([result[k]["ap"] for k in OBJECT_QUERIES]))
    return result


def in_process_ap(model, tiles: torch.Tensor, records: list[dict]) -> dict:
    """AP per object query and their mean from the model's own vectors (encode_images /
    encode_texts, as an index stores them, in float32, without the CLI): what retrieval_ap
    measures end to end, cheap enough to score every run of a training study."""
    images = model.encode_images(tiles)
    queries = model.encode_texts(list(OBJECT_QUERIES.values()))
    scores = model.similarity(images, queries)
    result = {}
    for column, kind in enumerate(OBJECT_QUERIES):
        order = torch.argsort(scores[:, column], descending=True, stable=True).tolist()
        total = sum(r["kind"] == kind for r in records)
        result[kind] = average_precision([records[i]["kind"] == kind for i in order], total)
    result["mean"] = float(np.mean([result[k] for k in OBJECT_QUERIES]))
    return result


def map_providers(model):
    """name -> f(images uint8 [B,3,H,W], query) -> maps [B, h, w]; the SEM maps, and the
    query map where the model API has it."""
    def sem(direction, scale):
        return lambda images, query: model.encode_images(images, with_maps=True)[1].sem[direction][scale]
    providers = {f"sem {d} scale {s}": sem(d, s) for d in ("coarse_to_fine", "fine_to_coarse")
                 for s in range(3)}
    if hasattr(model, "query_maps"):
        providers["query map"] = lambda images, query: model.query_maps(images, query)
    return providers


def pointing_scores(model, tiles: torch.Tensor, records: list[dict], providers=None) -> dict:
    result = {}
    composites = [i for i, r in enumerate(records) if r["kind"]]
    for name, provider in (providers or map_providers(model)).items():
        rows = []
        for kind, query in OBJECT_QUERIES.items():
            chosen = [i for i in composites if records[i]["kind"] == kind]
            maps = provider(tiles[chosen], query).float().cpu()
            for i, grid in zip(chosen, maps):
                rows.append((kind,) + pointing(grid, records[i]["box"])
                            + (pointing(grid, records[i]["box"], shift=False)[0],))
        entry = {"pointing": float(np.mean([r[1] for r in rows])),
                 "hit": float(np.mean([r[2] for r in rows])),
                 "pointing_raw": float(np.mean([r[3] for r in rows]))}
        entry["per_kind"] = {k: float(np.mean([r[1] for r in rows if r[0] == k])) for k in OBJECT_QUERIES}
        result[name] = entry
    return result


def save_crops(crops, path: Path) -> None:
    from PIL import Image
    sheet = torch.cat([torch.cat(list(crops[i:i + 10]) + [torch.zeros(3, OBJECT_SIDE, OBJECT_SIDE,
                                                                     dtype=torch.uint8)] * (10 - len(crops[i:i + 10])), 2)
                       for i in range(0, len(crops), 10)], 1)
    Image.fromarray(sheet.permute(1, 2, 0).numpy()).save(path)


def main(argv=None) -> None:
    from ssjdn.core.model.api import default_model_path, load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="a folder for the mosaic, index and results")
    parser.add_argument("--checkpoint", default=str(default_model_path()))
    parser.add_argument("--data-root", default=str(Path(__file__).resolve().parents[1].parent
                                                   / "shared" / "datasets" / "ucm_captions"))
    parser.add_argument("--per-kind", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-search", action="store_true", help="pointing only (no index/search)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "index").exists():
        raise SystemExit(f"{out}/index exists: give a new --out folder.")
    tiles, records, crops = build_benchmark(Path(args.data_root), args.per_kind)
    save_crops(crops, out / "objects.png")
    cols, _ = write_mosaic(tiles, out / "mosaic.tif")
    (out / "tiles.json").write_text(json.dumps(records))
    result = {"checkpoint": args.checkpoint, "tiles": len(records),
              "composites": sum(bool(r["kind"]) for r in records)}
    if not args.no_search:
        result["retrieval"] = retrieval_ap(out, records, cols, args.checkpoint)
    model = load_model(args.checkpoint, device="cpu")
    result["pointing"] = pointing_scores(model, tiles, records)
    print(f"{result['tiles']} tiles, {result['composites']} with a pasted object")
    for kind, row in result.get("retrieval", {}).items():
        if isinstance(row, dict):
            print(f"AP {kind:16s} {row['ap']:.3f}  ({row['top10_relevant']}/10 relevant in the top 10)")
    if "retrieval" in result:
        print(f"mean AP {result['retrieval']['mean_ap']:.3f}")
    for name, row in result["pointing"].items():
        print(f"pointing {name:28s} {row['pointing']:.2f}  raw {row['pointing_raw']:.2f}  "
              f"max inside {row['hit']:.2f}")
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
