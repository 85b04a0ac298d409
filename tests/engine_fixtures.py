"""Small real GeoTIFFs written by the engine tests themselves (never files from outside)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin

# UTM zone 31N: easting 500 000 m lies on the zone's central meridian, 3 degrees east.
UTM31N = "EPSG:32631"
UTM_ORIGIN = (500_000.0, 5_700_000.0)


def write_raster(path, data, crs=UTM31N, res=0.3, origin=UTM_ORIGIN, nodata=None, block=None,
                 colorinterp=None, descriptions=None, **profile):
    """Write `data` [bands, rows, cols] as a GeoTIFF; crs=None writes one with no georeferencing."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    kwargs = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                  dtype=data.dtype.name, nodata=nodata, **profile)
    if crs is not None:
        kwargs.update(crs=crs, transform=from_origin(origin[0], origin[1], res, res))
    if block:
        kwargs.update(tiled=True, blockxsize=block, blockysize=block)
    if data.shape[0] == 3 and data.dtype == np.uint8 and colorinterp is None:
        kwargs.setdefault("photometric", "RGB")
    with rasterio.open(path, "w", **kwargs) as dst:
        dst.write(data)
        if colorinterp is not None:
            dst.colorinterp = colorinterp
        if descriptions is not None:
            for band, text in enumerate(descriptions, start=1):
                dst.set_band_description(band, text)
    return str(path)


def scene(rows=256, cols=320, seed=0) -> np.ndarray:
    """An RGB uint8 image with structure (gradients + blobs), so tiles differ from each other."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols]
    image = np.stack([(x * 255 // max(cols - 1, 1)), (y * 255 // max(rows - 1, 1)),
                      ((x + y) % 97) * 2]).astype(np.float64)
    for _ in range(12):
        cy, cx, r = rng.integers(0, rows), rng.integers(0, cols), rng.integers(6, 30)
        image[:, (y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.integers(0, 255, size=(3, 1))
    return image.clip(0, 255).astype(np.uint8)


def collared(rows=512, cols=512, value=0, seed=0) -> np.ndarray:
    """A 0.1 m-like scene inside a tilted quadrilateral; outside it every band holds `value`.
    The content has pure black blobs of its own, which are not nodata."""
    image = scene(rows, cols, seed)
    image[image == value] = 7 if value == 0 else 250          # content never equals the collar ...
    image[:, rows // 2 - 6:rows // 2 + 6, cols // 2 - 6:cols // 2 + 6] = value  # ... except this blob
    y, x = np.mgrid[0:rows, 0:cols]
    inside = (x > 0.25 * cols + 0.2 * y) & (y > 0.15 * rows) & (y < 0.9 * rows) & (x < 0.95 * cols)
    image[:, ~inside] = value
    return image


def utm_scene(tmp_path, name="scene.tif", rows=256, cols=320, seed=0, **kwargs) -> str:
    return write_raster(tmp_path / name, scene(rows, cols, seed), **kwargs)


__all__ = ["write_raster", "scene", "collared", "utm_scene", "UTM31N", "UTM_ORIGIN", "ColorInterp"]


def index_small_scene(tmp_path, model):
    """A 320 x 256 UTM raster indexed as a 5 x 4 grid of 64 px tiles: (open TileIndex, raster path)."""
    from ssjdn.core.index.index_store import TileIndex
    from ssjdn.core.index.indexing import build_index
    raster = utm_scene(tmp_path, rows=256, cols=320)
    build_index(tmp_path / "idx", raster, model, tile_px=64)
    return TileIndex.open(tmp_path / "idx", model=model), raster


def synthetic_index(folder, model, side_px=4080, tile_px=8, seed=0):
    """An index of a real side_px x side_px lon/lat raster cut into tile_px tiles whose vectors
    are random unit vectors (nothing encoded, tiles laid out here in numpy): 510 x 510 tiles of
    8 px are an archive-sized 260,100-tile index in seconds. Returns (open TileIndex, raster)."""
    from rasterio.windows import Window

    from ssjdn.core.index.index_store import TileIndex
    from ssjdn.core.geo.raster import raster_info
    from ssjdn.core.geo.tiling import Tile
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    res, (west, north) = 1e-5, (10.0, 50.0)
    raster = write_raster(folder / "big.tif", np.zeros((3, side_px, side_px), np.uint8),
                          crs="EPSG:4326", res=res, origin=(west, north), compress="deflate")
    info = raster_info(raster)
    per_side = side_px // tile_px
    rows, cols = np.divmod(np.arange(per_side * per_side), per_side)
    lefts, tops = west + cols * tile_px * res, north - rows * tile_px * res
    tiles = [Tile(info.path, Window(int(c) * tile_px, int(r) * tile_px, tile_px, tile_px), box, box, i)
             for i, (r, c, box) in enumerate(zip(rows, cols, zip(
                 lefts.tolist(), (tops - tile_px * res).tolist(), (lefts + tile_px * res).tolist(),
                 tops.tolist())))]
    index = TileIndex.open(folder / "idx", model=model, create=True)
    raster_id, _, _ = index.begin_raster(info, {"tile_px": [tile_px, tile_px], "overlap": 0.0},
                                         len(tiles))
    rng = np.random.default_rng(seed)
    for start in range(0, len(tiles), 65_536):
        part = tiles[start:start + 65_536]
        vectors = rng.normal(size=(len(part), index.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        index.commit(raster_id, part, vectors, [])
    index.mark_complete(raster_id)
    return index, raster


def bench_module(name: str):
    """A script of bench/ loaded as a module (bench/ is not a package); its folder goes on
    sys.path so the scripts can import each other as they do when run."""
    import importlib.util
    import sys
    from pathlib import Path
    folder = Path(__file__).resolve().parent.parent / "bench"
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def cli_index(tmp_path, capsys):
    """A 320 x 256 UTM raster indexed by the CLI with the tiny config as 20 tiles of 64 px:
    (raster path, index folder)."""
    from ssjdn.core.cli.main import main
    raster = utm_scene(tmp_path)
    idx = str(tmp_path / "idx")
    assert main(["index", raster, "--index", idx, "--model", "tiny", "--tile-px", "64"]) == 0
    capsys.readouterr()
    return raster, idx
