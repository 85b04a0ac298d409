"""Embed real imagery and captions with a model, for fitting and checking synthetic vectors.

The archive-scale benchmarks (bench_archive.py) need millions of vectors that look like real
tile embeddings. Those are fitted to the few thousand real embeddings this script writes:
every image of a captioned benchmark folder (e.g. UCM-Captions' images/) and the tiles of any
georeferenced scenes, plus the benchmark's captions as text queries (real queries sit farther
from image vectors than a held-out image vector does, which is what an ANN index must handle).

    python bench/real_embeddings.py --images DATA/ucm_captions/images \
        --captions DATA/ucm_captions/dataset_ucm.json --scenes scene1.tif scene2.tif --out emb.npz

The output .npz holds `images` [N, D] and `texts` [M, D], float32 unit vectors.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import load_bench_model, set_threads  # noqa: E402

IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".webp"}


def embed_image_files(model, folder: Path, batch: int = 32) -> np.ndarray:
    import torch

    from ssjdn.training.augment import read_image, resize
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    out = []
    for start in range(0, len(paths), batch):
        pixels = torch.stack([resize(read_image(p), model.input_size) for p in paths[start:start + batch]])
        out.append(model.encode_images(pixels).numpy())
        print(f"  images {min(start + batch, len(paths))}/{len(paths)}", flush=True)
    return np.concatenate(out) if out else np.zeros((0, model.embed_dim), np.float32)


def embed_scene_tiles(model, scene: Path, tile_px: int, batch: int = 32) -> np.ndarray:
    """Tiles of tile_px on a half-tile stride: many overlapping real tiles from a small scene."""
    import torch
    from rasterio.windows import Window

    from ssjdn.core.geo.raster import raster_info, read_window_rgb
    info = raster_info(scene)
    width, height = info.width, info.height
    step = tile_px // 2
    windows = [Window(c, r, tile_px, tile_px) for r in range(0, height - tile_px + 1, step)
               for c in range(0, width - tile_px + 1, step)]
    out = []
    for start in range(0, len(windows), batch):
        pixels = torch.stack([torch.from_numpy(read_window_rgb(info, w)) for w in windows[start:start + batch]])
        out.append(model.encode_images(pixels).numpy())
    print(f"  {scene.name}: {len(windows)} tiles of {tile_px} px", flush=True)
    return np.concatenate(out) if out else np.zeros((0, model.embed_dim), np.float32)


def caption_texts(captions_json: Path) -> list[str]:
    data = json.loads(captions_json.read_text())
    return sorted({s["raw"].strip() for image in data["images"] for s in image["sentences"]})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shipped", help="checkpoint path, 'shipped', or a config name")
    parser.add_argument("--images", type=Path, help="a folder of benchmark images")
    parser.add_argument("--captions", type=Path, help="a Karpathy-style captions json (queries)")
    parser.add_argument("--scenes", type=Path, nargs="*", default=[], help="georeferenced scenes to tile")
    parser.add_argument("--scene-tile-px", type=int, default=256)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    model = load_bench_model(args.model)
    parts = []
    if args.images:
        parts.append(embed_image_files(model, args.images))
    for scene in args.scenes:
        parts.append(embed_scene_tiles(model, scene, args.scene_tile_px))
    images = np.concatenate(parts) if parts else np.zeros((0, model.embed_dim), np.float32)
    texts = model.encode_texts(caption_texts(args.captions)).numpy() if args.captions else \
        np.zeros((0, images.shape[1]), np.float32)
    from ssjdn.core.files import atomic_path
    with atomic_path(args.out) as tmp, open(tmp, "wb") as handle:   # a file: savez adds no suffix
        np.savez(handle, images=images.astype(np.float32), texts=texts.astype(np.float32))
    print(f"wrote {args.out}: {len(images)} image and {len(texts)} text vectors of {images.shape[1]} dims")


if __name__ == "__main__":
    main()
