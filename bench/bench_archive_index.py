"""An archive-size index through the engine itself: build time, disk, open time, search latency,
recall and peak memory of a search process, at 1M or 10M tiles on this machine's cores.

Vectors come from bench/synthetic_vectors.py (a float16 .npy fitted to real tile embeddings of
the shipped model); they are written into a real index folder through TileIndex.commit, as
`ssjdn index` does, one fake raster (a tiny real GeoTIFF) per million tiles. `finalize()` then
builds the search structure exactly as after indexing (ann.py: compressed codes above 50k
vectors, nprobe calibrated). The search runs in a fresh process, so its peak RSS is what a
user's search costs: the shipped model, text encoding of real UCM captions, TileIndex.search
with exact re-ranking from the float16 shards. Recall@10 is against exact search over all
vectors, for the same caption embeddings.

    python bench/synthetic_vectors.py --real emb.npz --n 10000000 --out vec_10m.npy
    python bench/bench_archive_index.py build --vectors vec_10m.npy --index /data/idx_10m
    python bench/bench_archive_index.py ann --vectors vec_10m.npy --index /data/idx_10m  # ANN only
    python bench/bench_archive_index.py app --index /data/idx_10m    # what the app pays
    python bench/bench_archive_index.py search --vectors vec_10m.npy --index /data/idx_10m \\
        --captions DATA/ucm_captions/dataset_ucm.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import load_bench_model, set_threads  # noqa: E402

TILES_PER_RASTER = 1_000_000
BATCH = 50_000
TILE_PX = 256


def _placeholder_raster(folder: Path, number: int) -> str:
    """A 1 x 1 GeoTIFF: begin_raster records a real file's size and mtime; no pixel is read."""
    import rasterio
    from rasterio.transform import from_origin
    path = folder / f"archive_{number:03d}.tif"
    with rasterio.open(path, "w", driver="GTiff", width=1, height=1, count=3, dtype="uint8",
                       crs="EPSG:32631", transform=from_origin(500_000, 5_700_000, 0.3, 0.3)) as dst:
        dst.write(np.zeros((3, 1, 1), np.uint8))
    return str(path)


def _tiles(first: int, count: int, columns: int):
    from rasterio.windows import Window
    out = []
    for index in range(first, first + count):
        col, row = (index % columns) * TILE_PX, (index // columns) * TILE_PX
        left, top = 500_000 + col * 0.3, 5_700_000 - row * 0.3
        out.append(SimpleNamespace(index=index, window=Window(col, row, TILE_PX, TILE_PX),
                                   bounds=(left, top - 76.8, left + 76.8, top), bounds_wgs84=None))
    return out


def build(args) -> None:
    from rasterio.crs import CRS
    from rasterio.transform import from_origin
    from ssjdn.core.index.index_store import TileIndex
    vectors = np.load(args.vectors, mmap_mode="r")
    n = len(vectors) if args.n is None else min(args.n, len(vectors))
    if args.index.exists():
        shutil.rmtree(args.index)
    model = load_bench_model(args.model)
    (args.index.parent / "archive_rasters").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with TileIndex.open(args.index, model=model, create=True) as index:
        for raster_number, first in enumerate(range(0, n, TILES_PER_RASTER)):
            count = min(TILES_PER_RASTER, n - first)
            columns = int(np.ceil(np.sqrt(count)))
            path = _placeholder_raster(args.index.parent / "archive_rasters", raster_number)
            info = SimpleNamespace(path=path, width=columns * TILE_PX,
                                   height=int(np.ceil(count / columns)) * TILE_PX,
                                   crs=CRS.from_epsg(32631),
                                   transform=from_origin(500_000, 5_700_000, 0.3, 0.3))
            raster_id, _, _ = index.begin_raster(info, {"tile_px": [TILE_PX, TILE_PX]}, count)
            for start in range(0, count, BATCH):
                size = min(BATCH, count - start)
                block = np.asarray(vectors[first + start:first + start + size], np.float32)
                index.commit(raster_id, _tiles(start, size, columns), block, [start // BATCH])
            index.mark_complete(raster_id)
            print(f"  {first + count:,} tiles written, {time.perf_counter() - t0:.0f} s", flush=True)
        t_write = time.perf_counter() - t0
        t1 = time.perf_counter()
        index.finalize()
        t_ann = time.perf_counter() - t1
        nprobe = index.db.meta("nprobe")
    sizes = {p.name: p.stat().st_size for p in args.index.iterdir() if p.is_file()}
    shards = sum(p.stat().st_size for p in (args.index / "vectors").iterdir())
    result = {"tiles": n, "write_s": round(t_write, 1), "ann_build_s": round(t_ann, 1),
              "nprobe": nprobe, "disk_mb": {**{k: round(v / 2**20) for k, v in sizes.items()},
                                            "vectors/": round(shards / 2**20)},
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    print(json.dumps(result, indent=1))


def rebuild_ann(args) -> None:
    """Build the search structure of an existing index again (e.g. after changing ann.py),
    through the same path as after indexing: the faiss file is marked stale, then finalize()."""
    from ssjdn.core.index.index_store import TileIndex
    with TileIndex.open(args.index) as index:
        with index.db.connection:
            index.db.execute("BEGIN IMMEDIATE")
            index.db.set_meta("faiss_dirty", "1")
        t0 = time.perf_counter()
        index.finalize()
        print(json.dumps({"tiles": index.count, "ann_build_s": round(time.perf_counter() - t0, 1),
                          "nprobe": index.db.meta("nprobe"),
                          "faiss_mb": round((args.index / "vectors.faiss").stat().st_size / 2**20)}))


def app_figures(args) -> None:
    """What the app pays on an archive index: opening it, the raster list (asked per search),
    one million-tile raster's grid (loaded on a click or when the grid layer is shown), its
    outline on the map, and one raster's heatmap (a search draws them within a tile budget)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from ssjdn.core.index.index_store import TileIndex
    from ssjdn.core.query.search import vector_heatmap
    from ssjdn.desktop.qt_map import tile_outline
    timings = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        value = fn()
        timings[name] = round(time.perf_counter() - t0, 3)
        return value

    index = timed("open_s", lambda: TileIndex.open(args.index))
    records = timed("rasters_first_s", index.rasters)
    timed("rasters_again_s", index.rasters)
    ids, windows = timed("one_raster_grid_s", lambda: index.raster_grid(records[0].raster_id))
    path = timed("grid_outline_s", lambda: tile_outline(windows))
    query = np.asarray(index.vectors(ids[:1]), np.float32)[0]
    timed("one_raster_heatmap_s", lambda: vector_heatmap(index, records[0], query))
    print(json.dumps({"tiles": index.count, "rasters": len(records), "tiles_in_raster": len(ids),
                      "outline_elements": path.elementCount(), **timings,
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)},
                     indent=1))


def _caption_queries(captions_json: Path, count: int) -> list[str]:
    data = json.loads(captions_json.read_text())
    texts = sorted({s["raw"].strip() for image in data["images"] for s in image["sentences"]})
    rng = np.random.default_rng(1)
    return [texts[i] for i in rng.permutation(len(texts))[:count]]


def _warm_page_cache(index_dir: Path) -> float:
    """Read the shard files once, as a search process in use for a while has them cached."""
    t0 = time.perf_counter()
    for shard in sorted((index_dir / "vectors").iterdir()):
        with open(shard, "rb") as f:
            while f.read(64 << 20):
                pass
    return time.perf_counter() - t0


def search(args) -> None:
    from ssjdn.core.index import ann
    from ssjdn.core.index.index_store import TileIndex
    from ssjdn.core.query.search import search_text
    model = load_bench_model(args.model)
    queries = _caption_queries(args.captions, args.queries)
    warm_s = _warm_page_cache(args.index) if args.warm else None
    t0 = time.perf_counter()
    index = TileIndex.open(args.index, model=model)
    t_open = time.perf_counter() - t0
    t0 = time.perf_counter()
    search_text(index, model, queries[0], k=10)       # loads the search structure
    t_first = time.perf_counter() - t0
    for text in queries[1:6]:
        search_text(index, model, text, k=10)          # warm-up
    times, found = [], []
    for text in queries:
        t0 = time.perf_counter()
        hits = search_text(index, model, text, k=10)
        times.append(time.perf_counter() - t0)
        found.append([h.tile_id for h in hits])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from ssjdn.core.model.fast_text import query_encoder
    t_enc, t_torch = [], []
    for text in queries[:50]:
        t0 = time.perf_counter()
        query_encoder(model).encode(text)      # what search_text runs (ONNX Runtime on a CPU)
        t1 = time.perf_counter()
        model.encode_texts([text])             # PyTorch eager, for comparison
        t_enc.append(t1 - t0)
        t_torch.append(time.perf_counter() - t1)
    # The parts of a search, each alone: the index (candidates, re-ranking, tile ids) and the
    # hit records (tile rows, footprints) for the same queries.
    from ssjdn.core.query.search import hits_for_ids
    text_vectors = model.encode_texts(queries).float().cpu().numpy()
    t_index, t_hits = [], []
    for vector in text_vectors:
        t0 = time.perf_counter()
        scores, ids = index.search(vector[None], 10)
        t1 = time.perf_counter()
        hits_for_ids(index, ids[0], scores[0])
        t_index.append(t1 - t0)
        t_hits.append(time.perf_counter() - t1)
    # Ground truth after the timing (its reads of the .npy would count in the peak RSS and
    # evict the shards): exact top-10 over every vector (tile id = raster << 32 | index).
    vectors = np.load(args.vectors, mmap_mode="r")
    positions = np.arange(index.count)
    ids = ((positions // TILES_PER_RASTER + 1) << 32) | (positions % TILES_PER_RASTER)
    truth = ann.exact_top_k(ids, lambda p: np.asarray(vectors[p], np.float32), text_vectors, 10)
    result = {"tiles": index.count, "queries": len(queries), "page_cache": "warm" if args.warm else "as found",
              "warm_s": warm_s and round(warm_s, 1), "open_s": round(t_open, 2),
              "first_search_s": round(t_first, 2),
              "search_p50_ms": round(1e3 * float(np.median(times)), 1),
              "search_p95_ms": round(1e3 * float(np.percentile(times, 95)), 1),
              "text_encoding_p50_ms": round(1e3 * float(np.median(t_enc)), 1),
              "text_runtime": query_encoder(model).runtime,
              "text_encoding_pytorch_p50_ms": round(1e3 * float(np.median(t_torch)), 1),
              "index_search_p50_ms": round(1e3 * float(np.median(t_index)), 1),
              "hit_records_p50_ms": round(1e3 * float(np.median(t_hits)), 1),
              "recall_at_10": round(ann.measure_recall(np.array(found), truth), 4),
              "nprobe": index.db.meta("nprobe"), "peak_rss_mb": round(rss),
              "threads": args.threads, "load_average": round(os.getloadavg()[0], 2)}
    print(json.dumps(result, indent=1))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["build", "ann", "search", "app"])
    parser.add_argument("--vectors", type=Path, help="the .npy of vectors (build, ann, search)")
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--n", type=int, help="use the first N vectors (default: all)")
    parser.add_argument("--captions", type=Path, help="UCM dataset_ucm.json: the query captions")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--model", default="shipped")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warm", action="store_true",
                        help="read the shard files into the page cache before timing")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    if args.what == "build":
        build(args)
    elif args.what == "ann":
        rebuild_ann(args)
    elif args.what == "app":
        app_figures(args)
    else:
        if args.captions is None:
            parser.error("search needs --captions")
        search(args)


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
