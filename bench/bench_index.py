"""Indexing throughput: end-to-end tiles/s (GeoTIFF on disk -> faiss) beside model-only encoding.

Both numbers come from the same run, same model, same device, same tiles: the model-only rate
encodes the tiles from memory already on the device; the end-to-end rate is build_index from
the file. Their ratio is the pipeline's efficiency (goal >= 0.8).

    python bench/bench_index.py --model tiny --size 4096
    python bench/bench_index.py --model ssjdn-lite0-minilm --size 2048
    python bench/bench_index.py --model resources/ssjdn-default.safetensors --size 16384 --batch-size 1024
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (EncoderFreeModel, load_bench_model, profile_threads, set_threads,  # noqa: E402
                          top_functions, write_synthetic_geotiff)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="checkpoint path or config name (default tiny)")
    parser.add_argument("--size", type=int, default=4096, help="side of the synthetic raster in pixels")
    parser.add_argument("--res", type=float, default=0.3, help="pixel size in metres (0.3 = UCM)")
    parser.add_argument("--raster", help="index this existing raster instead of a synthetic one")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    parser.add_argument("--repeat", type=int, default=2, help="take the best of this many runs of each")
    parser.add_argument("--profile", action="store_true",
                        help="also profile an encoder-free build, its threads included (top 30 by own time)")
    parser.add_argument("--encoder-free", action="store_true",
                        help="also index with an encoder that costs nothing: the pipeline's ceiling")
    args = parser.parse_args(argv)
    set_threads(args.threads)

    import torch

    from ssjdn.core.index.indexing import build_index
    from ssjdn.core.geo.raster import raster_info, read_window_rgb
    from ssjdn.core.geo.tiling import plan_tiles

    model = load_bench_model(args.model)
    with tempfile.TemporaryDirectory(prefix="ssjdn-bench-") as tmp:
        raster = args.raster or write_synthetic_geotiff(Path(tmp) / "scene.tif", args.size, args.res)
        info = raster_info(raster)
        tiles = plan_tiles(info, model=model)
        batch_size = args.batch_size or (512 if model.device.type == "cuda" else 32)
        print(f"device {model.device}, model {model.name}, {info.width} x {info.height} px raster, "
              f"{len(tiles)} tiles of {int(tiles[0].window.width)} px, batch {batch_size}, "
              f"{args.threads} CPU threads")

        # Model only: the same tiles, already decoded and on the device.
        pixels = torch.from_numpy(np.stack([read_window_rgb(info, t.window) for t in tiles]))
        pixels = pixels.to(model.device)
        model.encode_images(pixels[:batch_size])  # warm-up (kernels, autotuning)
        model_rates = []
        for _ in range(args.repeat):
            _sync(model)
            start = time.perf_counter()
            for i in range(0, len(pixels), batch_size):
                model.encode_images(pixels[i:i + batch_size], batch_size=batch_size)
            _sync(model)
            model_rates.append(len(pixels) / (time.perf_counter() - start))
        del pixels

        end_to_end = []
        for run in range(args.repeat):
            index_dir = Path(tmp) / f"index{run}"
            stats = build_index(index_dir, raster, model, batch_size=batch_size, workers=args.workers)
            end_to_end.append(stats.tiles_encoded / stats.seconds)
        ceiling = []
        for run in range(args.repeat if args.encoder_free else 0):
            stats = build_index(Path(tmp) / f"free{run}", raster, EncoderFreeModel(model),
                                batch_size=batch_size, workers=args.workers)
            ceiling.append(stats.tiles_encoded / stats.seconds)
        if args.profile:   # where the pipeline's time goes, reader threads included
            with profile_threads() as profiled:
                build_index(Path(tmp) / "profiled", raster, EncoderFreeModel(model),
                            batch_size=batch_size, workers=args.workers)
            print(top_functions(profiled[0], "tottime", 30))
    model_rate, e2e_rate = max(model_rates), max(end_to_end)
    print(f"model-only encode : {model_rate:10.1f} tiles/s  (runs: {_fmt(model_rates)})")
    print(f"end to end (disk) : {e2e_rate:10.1f} tiles/s  (runs: {_fmt(end_to_end)})")
    print(f"ratio end-to-end / model-only: {e2e_rate / model_rate:.2f}  (goal >= 0.8)")
    if ceiling:
        print(f"encoder-free (the pipeline's ceiling): {max(ceiling):10.1f} tiles/s  (runs: {_fmt(ceiling)})")


def _sync(model) -> None:
    import torch
    if model.device.type == "cuda":
        torch.cuda.synchronize()


def _fmt(values) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


if __name__ == "__main__":
    main()
