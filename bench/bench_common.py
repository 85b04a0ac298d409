"""Helpers shared by the engine benchmarks: thread limits, a model by name, a synthetic GeoTIFF."""
from __future__ import annotations

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
    from ssjdn.core.api import model_from_spec
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
