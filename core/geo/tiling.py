"""Cutting a raster into a grid of tiles, and the one place tiles get geographic coordinates.

A tile is a pixel window of one raster. Its size defaults to the ground size the model was
trained on (UCM: 256 px x 0.3 m = 76.8 m), so a 0.25 m scene is cut into ~307 px tiles that the
model resizes to its input; without a CRS the size falls back to the model's input in pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds

from ssjdn.core.errors import UserError
from ssjdn.core.geo.raster import WGS84

# Points per tile edge when a window is projected to lon/lat: enough to follow the curvature
# of any projection at tile scale, cheap enough for a million tiles in one vectorised call.
_EDGE_POINTS = 4
DEFAULT_TILE_PX = 256


@dataclass(frozen=True)
class Tile:
    raster_path: str
    window: Window
    bounds: tuple[float, float, float, float]        # left, bottom, right, top in the raster CRS
    bounds_wgs84: tuple[float, float, float, float] | None  # west, south, east, north
    index: int                                        # position in the raster's plan


@dataclass(frozen=True)
class Chunk:
    """A block-aligned window read in one go; its tiles are cut from it in memory."""

    window: Window
    tile_indices: tuple[int, ...]


def plan_tiles(info, tile_ground_m=None, tile_px=None, overlap=0.0, model=None) -> list[Tile]:
    """Grid of tiles over `info` (a RasterInfo). Edge tiles are shifted inwards so every tile is
    full size and inside the raster; a raster smaller than one tile gives one tile of it all."""
    return tiles_for_windows(info, plan_windows(info, tile_ground_m, tile_px, overlap, model))


def check_overlap(value) -> float:
    """The tiles' overlap as a float in [0, 0.9], or a UserError."""
    try:
        overlap = float(value)
    except (TypeError, ValueError):
        overlap = float("nan")
    if not 0.0 <= overlap <= 0.9:
        raise UserError(f"Overlap is a fraction of the tile between 0 and 0.9 (e.g. 0.25); got {value!r}.")
    return overlap


def plan_windows(info, tile_ground_m=None, tile_px=None, overlap=0.0, model=None) -> list[Window]:
    """The tile grid as pixel windows only (no coordinates): cheap, for counting and planning."""
    width_px, height_px = tile_size_px(info, tile_ground_m, tile_px, model)
    check_overlap(overlap)
    cols = _offsets(info.width, width_px, overlap)
    rows = _offsets(info.height, height_px, overlap)
    return [Window(c, r, min(width_px, info.width), min(height_px, info.height))
            for r in rows for c in cols]


def tiles_for_windows(info, windows, first_index: int = 0) -> list[Tile]:
    """Tiles for given windows of a raster, with raster-CRS and lon/lat bounds; their indices
    count from `first_index`."""
    bounds = _windows_bounds(info.transform, windows)
    wgs84 = windows_to_wgs84(info.crs, info.transform, windows)[0] if info.crs else None
    return [Tile(info.path, w, tuple(float(v) for v in b),
                 tuple(float(v) for v in wgs84[i]) if wgs84 is not None else None, first_index + i)
            for i, (w, b) in enumerate(zip(windows, bounds))]


def tile_size_px(info, tile_ground_m=None, tile_px=None, model=None) -> tuple[int, int]:
    """(width, height) of a tile in pixels: from `tile_px`, else from a ground size in metres
    (`tile_ground_m`, default the model's training ground size), else the model's input size."""
    if tile_px is not None and tile_ground_m is not None:
        raise UserError("Give either a tile size in pixels or in metres, not both.")
    if tile_px is not None:
        side = int(tile_px)
        if side < 8:
            raise UserError(f"Tile size {side} px is too small; use at least 8 px (typically 256).")
        return side, side
    default_px = int(getattr(model, "input_size", None) or DEFAULT_TILE_PX)
    ground = tile_ground_m if tile_ground_m is not None else getattr(model, "ground_size_m", None)
    if ground is None:
        return default_px, default_px
    pixel_m = info.pixel_size_m
    if pixel_m is None:
        if tile_ground_m is not None:
            raise UserError(f"{info.path} has no coordinate system, so a tile size in metres cannot be "
                            f"converted to pixels. Give the tile size in pixels instead (--tile-px).")
        return default_px, default_px  # pixel-only raster: the model's own input size
    if ground <= 0:
        raise UserError(f"Tile ground size must be positive; got {ground} m.")
    return max(8, round(ground / pixel_m[0])), max(8, round(ground / pixel_m[1]))


def windows_to_wgs84(crs, transform, windows):
    """Lon/lat boxes and footprint rings of many windows in one projection call: of one raster
    (`transform` its Affine) or of several rasters in one CRS (`transform` a list, one Affine
    per window), since each projection call costs about as much as hundreds of points.

    Returns (bounds [N, 4] as west, south, east, north; rings [N, P, 2] closed, counter-clockwise
    in lon/lat as RFC 7946 asks). The ring follows the tile's true edges, which in lon/lat are
    not axis-aligned for a projected raster. Latitudes are clamped to [-90, 90]; a ring across
    the antimeridian stays continuous, so its longitudes (and east) may pass 180 (or -180).
    """
    if crs is None:
        raise UserError("This raster has no coordinate system, so its tiles have no longitude/latitude; "
                        "assign a CRS in a GIS (e.g. gdal_edit.py -a_srs) to export or map them.")
    n = len(windows)
    frac = np.linspace(0.0, 1.0, _EDGE_POINTS + 1)[:-1]
    # Unit-square ring (col, row fractions), counter-clockwise on the ground when rows go south:
    # top-left -> bottom-left -> bottom-right -> top-right.
    ring = np.concatenate([
        np.stack([np.zeros_like(frac), frac], 1),
        np.stack([frac, np.ones_like(frac)], 1),
        np.stack([np.ones_like(frac), 1 - frac], 1),
        np.stack([1 - frac, np.zeros_like(frac)], 1),
    ])
    offs = np.array([[w.col_off, w.row_off] for w in windows], dtype=np.float64).reshape(n, 1, 2)
    sizes = np.array([[w.width, w.height] for w in windows], dtype=np.float64).reshape(n, 1, 2)
    pix = offs + ring[None] * sizes                          # [N, P, 2] pixel col/row
    per_window = [transform] * n if isinstance(transform, Affine) else list(transform)
    a, b, c, d, e, f = np.array([tuple(t)[:6] for t in per_window], np.float64).reshape(n, 6, 1).transpose(1, 0, 2)
    xs = a * pix[..., 0] + b * pix[..., 1] + c
    ys = d * pix[..., 0] + e * pix[..., 1] + f
    lon, lat = warp_transform(crs, WGS84, xs.ravel().tolist(), ys.ravel().tolist())
    lonlat = np.stack([np.asarray(lon), np.asarray(lat)], -1).reshape(n, -1, 2)
    # A tile across the antimeridian comes back with longitudes wrapped from 180 to -180: keep
    # each ring continuous (export cuts it at 180 for GeoJSON), and no latitude past a pole.
    lonlat[..., 1:, 0] -= 360.0 * np.cumsum(np.round(np.diff(lonlat[..., 0], axis=1) / 360.0), axis=1)
    lonlat[..., 1] = np.clip(lonlat[..., 1], -90.0, 90.0)
    lonlat = _counter_clockwise(lonlat)
    rings = np.concatenate([lonlat, lonlat[:, :1]], axis=1)  # closed
    bounds = np.concatenate([lonlat.min(1), lonlat.max(1)], axis=1) if n else np.zeros((0, 4))
    return bounds, rings


def tile_centres_wgs84(records) -> np.ndarray:
    """(lon, lat) [N, 2] of the centres of tiles (anything with crs, transform and window: a
    search hit, an index record); NaN for a tile whose raster has no CRS. One projection call
    per CRS, as for footprints: a table of hundreds of tiles from many rasters stays quick."""
    records = list(records)
    centres = np.full((len(records), 2), np.nan)
    by_crs: dict[object, list[int]] = {}
    for i, r in enumerate(records):
        if r.crs is not None:
            by_crs.setdefault(r.crs, []).append(i)
    for crs, rows in by_crs.items():
        pixels = [(records[i].window.col_off + records[i].window.width / 2,
                   records[i].window.row_off + records[i].window.height / 2) for i in rows]
        xy = [records[i].transform * p for i, p in zip(rows, pixels)]
        lon, lat = warp_transform(crs, WGS84, [x for x, _ in xy], [y for _, y in xy])
        centres[rows] = np.stack([lon, lat], -1)
    return centres


def _windows_bounds(transform, windows) -> list[tuple[float, ...]]:
    """rasterio.windows.bounds for many windows at once (the common north-up case vectorised)."""
    if transform.b != 0 or transform.d != 0 or not windows:
        return [window_bounds(w, transform) for w in windows]
    arr = np.array([[w.col_off, w.row_off, w.width, w.height] for w in windows], dtype=np.float64)
    xs = transform.c + transform.a * np.stack([arr[:, 0], arr[:, 0] + arr[:, 2]], 1)
    ys = transform.f + transform.e * np.stack([arr[:, 1], arr[:, 1] + arr[:, 3]], 1)
    return list(zip(xs.min(1), ys.min(1), xs.max(1), ys.max(1)))


def chunk_tiles(info, tiles: list[Tile], chunk_px: int = 1024) -> list[Chunk]:
    """Group tiles into chunks of about `chunk_px` square, each widened to the file's block grid,
    so reads are few, large and never split a compressed block between two reads."""
    if not tiles:
        return []
    tile_w, tile_h = int(tiles[0].window.width), int(tiles[0].window.height)
    per_col = max(1, chunk_px // max(tile_w, 1))
    per_row = max(1, chunk_px // max(tile_h, 1))
    col_starts = sorted({int(t.window.col_off) for t in tiles})
    row_starts = sorted({int(t.window.row_off) for t in tiles})
    col_group = {c: i // per_col for i, c in enumerate(col_starts)}
    row_group = {r: i // per_row for i, r in enumerate(row_starts)}
    groups: dict[tuple[int, int], list[int]] = {}
    for t in tiles:
        key = (row_group[int(t.window.row_off)], col_group[int(t.window.col_off)])
        groups.setdefault(key, []).append(t.index)
    by_index = {t.index: t for t in tiles}
    chunks = []
    for key in sorted(groups):
        members = groups[key]
        col0 = min(int(by_index[i].window.col_off) for i in members)
        row0 = min(int(by_index[i].window.row_off) for i in members)
        col1 = max(int(by_index[i].window.col_off + by_index[i].window.width) for i in members)
        row1 = max(int(by_index[i].window.row_off + by_index[i].window.height) for i in members)
        chunks.append(Chunk(_align_to_blocks(info, col0, row0, col1, row1), tuple(members)))
    return chunks


def _align_to_blocks(info, col0, row0, col1, row1) -> Window:
    block_rows, block_cols = info.block_shape
    col0 = (col0 // block_cols) * block_cols
    row0 = (row0 // block_rows) * block_rows
    col1 = min(info.width, -(-col1 // block_cols) * block_cols)
    row1 = min(info.height, -(-row1 // block_rows) * block_rows)
    return Window(col0, row0, col1 - col0, row1 - row0)


def _offsets(length: int, tile: int, overlap: float) -> list[int]:
    if length <= tile:
        return [0]
    step = max(1, round(tile * (1.0 - overlap)))
    offsets = list(range(0, length - tile + 1, step))
    if offsets[-1] + tile < length:
        offsets.append(length - tile)  # last tile shifted inwards to cover the edge
    return offsets


def _counter_clockwise(rings: np.ndarray) -> np.ndarray:
    """Reverse the rings [N, P, 2] whose shoelace area is negative (clockwise)."""
    x, y = rings[..., 0], rings[..., 1]
    signed_area = np.sum(x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y, axis=1)
    return np.where((signed_area < 0)[:, None, None], rings[:, ::-1], rings)
