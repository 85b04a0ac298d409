"""Helpers shared by the engine benchmarks: thread limits, a model by name, a synthetic GeoTIFF."""
from __future__ import annotations

import contextlib

import numpy as np

from ssjdn.core.offline import use_offline_hub

use_offline_hub()


def set_threads(threads: int) -> None:
    """Pin torch and faiss to `threads` CPU threads, as on the 2-core target machines."""
    import faiss
    import torch
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)


def load_bench_model(spec: str | None = None):
    """A checkpoint path, "shipped" (default), or a config name (seeded: untrained heads, real
    architecture and speed)."""
    from ssjdn.core.model.api import model_from_spec
    return model_from_spec(spec).model


def write_synthetic_geotiff(path, size: int, res: float = 0.3, block: int = 512) -> str:
    """A size x size RGB uint8 GeoTIFF (UTM 31N, deflate, tiled) written strip by strip, so even
    20000 x 20000 needs little memory. Smooth stripes plus noise: compresses, yet tiles differ."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32631",
                   transform=from_origin(500_000, 5_700_000, res, res), tiled=True,
                   blockxsize=block, blockysize=block, compress="deflate", photometric="RGB",
                   BIGTIFF="IF_SAFER")
    rng = np.random.default_rng(0)
    cols = np.arange(size)
    with rasterio.open(path, "w", **profile) as dst:
        for row0 in range(0, size, block):
            rows = np.arange(row0, min(size, row0 + block))[:, None]
            strip = np.empty((3, len(rows), size), np.uint8)
            strip[0] = (cols[None] // 7 + rows // 5) % 256
            strip[1] = (cols[None] * 3 // 11 + rows * 2 // 9) % 256
            strip[2] = ((cols[None] // 64 + rows // 64) % 2) * 160
            strip += rng.integers(0, 16, size=strip.shape, dtype=np.uint8)
            dst.write(strip, window=Window(0, row0, size, len(rows)))
    return str(path)


class EncoderFreeModel:
    """A model's identity (fingerprint, name, input size, device) with an encoder that costs
    nothing. build_index with it measures what reading, cutting, moving and committing tiles
    allow on this machine: the ceiling of end-to-end indexing, whatever the model. (On the
    H200 on 2026-12-04 the shipped model encoded 17.0k tiles/s but indexed 3.7k end to end.)"""

    def __init__(self, model, bank: int = 4096, seed: int = 0):
        import torch

        self._model = model
        generator = torch.Generator().manual_seed(seed)
        vectors = torch.randn(bank, model.vector_dim, generator=generator)   # what an index stores
        self._bank = torch.nn.functional.normalize(vectors, dim=1).to(model.device)
        self._next = 0

    def __getattr__(self, name):
        return getattr(self._model, name)

    def encode_images(self, images, with_maps: bool = False, batch_size: int = 64):
        """Unit vectors from a fixed bank, one per image, with no work on the pixels."""
        import torch

        rows = (torch.arange(len(images)) + self._next) % len(self._bank)
        self._next += len(images)
        return self._bank[rows.to(self._bank.device)]


@contextlib.contextmanager
def profile_threads():
    """cProfile of the calling thread and of every thread started inside the block (the
    indexing pipeline reads and cuts tiles on pool threads, which a plain cProfile of the
    caller shows only as waiting). Yields a list; after the block it holds one
    pstats.Stats over all of them."""
    import cProfile
    import pstats
    import threading

    profiles, original_run = [], threading.Thread.run

    def profiled_run(thread):
        profile = cProfile.Profile()
        profiles.append((thread, profile))
        profile.runcall(original_run, thread)

    result: list = []
    main = cProfile.Profile()
    threading.Thread.run = profiled_run
    main.enable()
    try:
        yield result
    finally:
        main.disable()
        threading.Thread.run = original_run
        stats = pstats.Stats(main)
        for thread, profile in profiles:
            if not thread.is_alive():   # a thread still running has no finished profile to read
                stats.add(profile)
        result.append(stats)


def top_functions(stats, sort: str, count: int = 40) -> str:
    """The `count` heaviest functions of a pstats.Stats by `sort` ("tottime" or "cumtime"), as text."""
    import io

    buffer = io.StringIO()
    stats.stream = buffer
    stats.sort_stats(sort).print_stats(count)
    return buffer.getvalue()
