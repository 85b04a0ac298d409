"""Reading georeferenced rasters: the one place a window of pixels becomes an RGB uint8 image.

Everything that shows or encodes pixels (the indexing pipeline, searches by tile, the app's
overviews) goes through `read_window_rgb`, so band choice, the 16-bit/float stretch and nodata
handling are the same everywhere and a tile looks the same in the app as it did to the model.
"""
from __future__ import annotations

import functools
import math
import os
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

# GDAL's block cache defaults to 5% of RAM and fills up while a large raster is streamed; we read
# large block-aligned chunks ourselves, so a small cache keeps memory bounded. Must be set before
# GDAL allocates its cache, i.e. before the first read anywhere in the process.
os.environ.setdefault("GDAL_CACHEMAX", "128")

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from affine import Affine  # noqa: E402
from rasterio.crs import CRS  # noqa: E402
from rasterio.enums import ColorInterp, MaskFlags, Resampling  # noqa: E402
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError  # noqa: E402
from rasterio.warp import transform_bounds  # noqa: E402
from rasterio.windows import Window  # noqa: E402

from ssjdn.core.errors import UserError  # noqa: E402

WGS84 = CRS.from_epsg(4326)
# Mean metres per degree of latitude and, at the equator, of longitude (WGS84 ellipsoid).
_M_PER_DEG_LAT = 110_574.0
_M_PER_DEG_LON = 111_320.0
# Percentiles of the robust stretch applied to anything that is not already 8-bit: the same
# cut as the "cumulative count cut" default of common GIS software, so tiles look familiar.
STRETCH_PERCENTILES = (2.0, 98.0)
# How many pixels the stretch is estimated from: a grid of small windows over the whole raster,
# so that the estimate costs a few hundred block reads whatever the raster size.
_STRETCH_SAMPLE_GRID = 12
_STRETCH_SAMPLE_PX = 64
# GDAL virtual file systems (/vsis3/, /vsigs/, /vsiaz/, /vsicurl/, /vsizip/, ...): archives in
# object storage are read through GDAL by these paths, which are not local files.
VIRTUAL_PREFIX = "/vsi"
# Black (or white) collars: mosaics and drone orthophotos are often delivered with a constant
# border and no nodata tag. It is looked for on a decimated image (overviews when the file has
# them) of at most this many pixels a side, so the cost and memory do not grow with the raster.
COLLAR_SAMPLE_PX = 512
# A border region of constant pixels is a collar when it covers at least this share of the raster.
MIN_COLLAR_SHARE = 0.005
# The `nodata` setting of raster_info: look for a collar when the file declares nothing ...
NODATA_AUTO = "auto"
# ... or trust the file alone (no detection).
NODATA_NONE = "none"


@dataclass(frozen=True)
class RasterInfo:
    """What the engine needs to know about a raster; cheap to create, safe to share."""

    path: str
    width: int
    height: int
    count: int
    dtype: str
    crs: CRS | None
    transform: Affine
    nodata: float | None
    res: tuple[float, float]
    rgb_bands: tuple[int, int, int]          # 1-based band numbers shown as R, G, B
    bounds: tuple[float, float, float, float]  # left, bottom, right, top in the raster CRS (or pixels)
    bounds_wgs84: tuple[float, float, float, float] | None  # west, south, east, north; None without CRS
    block_shape: tuple[int, int]              # (rows, cols) of the file's internal blocks
    # Per output channel (low, high) values mapped to 0..255; None for 8-bit data shown as is.
    stretch: tuple[tuple[float, float], ...] | None = None
    band_descriptions: tuple[str, ...] = field(default=())
    # A value that is nodata where all shown bands hold it, beyond what the file declares: a
    # detected collar's ("collar", only inside `collar_region`) or one the user set ("setting").
    fill_value: float | None = None
    fill_origin: str | None = None
    fill_share: float = 0.0           # share of the raster a detected collar covers
    # Where a collar may be, on a coarse grid over the whole raster (bool [rows, cols]).
    collar_region: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def has_crs(self) -> bool:
        return self.crs is not None

    @property
    def pixel_size_m(self) -> tuple[float, float] | None:
        """Ground size of one pixel (x, y) in metres, or None when the raster has no CRS."""
        return pixel_size_m(self)


@dataclass
class GeoRaster:
    """A float32 grid placed on the ground: a heatmap or a salience map, ready for GeoTIFF."""

    array: np.ndarray        # float32 [rows, cols]
    transform: Affine
    crs: CRS | None
    nodata: float | None = float("nan")


def pixel_size_m(info) -> tuple[float, float] | None:
    """Ground size of a pixel (x, y) in metres; None without a CRS. `info` needs crs, res and
    bounds (a RasterInfo, or the grid of an index record)."""
    if info.crs is None:
        return None
    res_x, res_y = abs(info.res[0]), abs(info.res[1])
    if info.crs.is_geographic:
        # Degrees: metres per degree of longitude shrink with latitude; use the scene centre.
        lat = (info.bounds[1] + info.bounds[3]) / 2.0
        return res_x * _M_PER_DEG_LON * max(math.cos(math.radians(lat)), 1e-6), res_y * _M_PER_DEG_LAT
    try:
        factor = info.crs.linear_units_factor[1]
    except Exception:  # noqa: BLE001 - an odd CRS without declared units: assume metres
        factor = 1.0
    return res_x * factor, res_y * factor


def bounds_to_wgs84(crs, bounds) -> tuple[float, float, float, float]:
    """(west, south, east, north) of raster-CRS bounds, densified so curved edges are enclosed."""
    return tuple(float(v) for v in transform_bounds(crs, WGS84, *bounds, densify_pts=21))


def raster_info(path, bands=None, nodata=NODATA_AUTO) -> RasterInfo:
    """Open `path` and describe it; `bands` overrides the RGB band choice (1-based, 1 or 3 ints).

    `nodata` says which pixels besides the file's own nodata, mask or alpha are nodata:
    NODATA_AUTO a constant black (0) or white (255) border reaching the edge when the file
    declares none (a collar), NODATA_NONE nothing more, a number the pixels holding it in all
    shown bands (anywhere).
    A raster without a CRS is accepted for pixel-only use (tiles in pixels, no lat/lon).
    Raises UserError for missing, unreadable or corrupt files and for impossible band choices.
    """
    path = _check_path(path)
    normalized = _normalize_bands(bands)
    nodata = normalize_nodata(nodata)
    if is_virtual(path):   # no stat to tell a replaced object: described at every call
        return _cached_info.__wrapped__(path, None, None, normalized, nodata)
    stat = os.stat(path)
    return _cached_info(path, stat.st_mtime_ns, stat.st_size, normalized, nodata)


def normalize_nodata(value):
    """A nodata setting as raster_info takes it: NODATA_AUTO, NODATA_NONE or a float; None and ""
    mean auto. UserError for anything else."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", NODATA_AUTO)):
        return NODATA_AUTO
    if isinstance(value, str) and value.strip().lower() == NODATA_NONE:
        return NODATA_NONE
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"A nodata setting is a pixel value (e.g. 0 or 255), 'auto' (look for a "
                        f"black or white collar) or 'none' (only what the file declares); got "
                        f"{value!r}.") from None
    if not np.isfinite(number):
        raise UserError(f"A nodata value must be a finite number; got {value!r}.")
    return number


def nodata_policy(info: RasterInfo) -> dict | None:
    """What besides the file's own mask is nodata in `info`, as recorded with its tiles (None:
    nothing). Tiles encoded under another policy may hold other pixels."""
    if info.fill_value is None:
        return None
    return {"value": info.fill_value, "origin": info.fill_origin}


def nodata_note(info: RasterInfo) -> str | None:
    """The one sentence that tells the user a collar was found and treated as nodata."""
    if info.fill_origin != "collar":
        return None
    colour = "black (0)" if info.fill_value == 0 else f"constant {info.fill_value:g}"
    return (f"{info.path}: declares no nodata, but a {colour} border reaching its edge covers "
            f"{100 * info.fill_share:.0f}% of it; treated as nodata (to change that: --nodata VALUE, "
            f"or --nodata none to keep it).")


def is_virtual(path) -> bool:
    """A GDAL virtual path: opened by GDAL as given, never stat'ed or resolved as a local file."""
    return str(path).startswith(VIRTUAL_PREFIX)


def raster_path(path) -> str:
    """The one spelling under which a raster is indexed and looked up: a local file's resolved
    absolute path, a GDAL virtual path exactly as given (its slashes mean something to GDAL)."""
    return str(path) if is_virtual(path) else str(Path(path).expanduser().resolve())


def file_change_key(path) -> tuple[int, int]:
    """(mtime_ns, size) of a local file: change_key's, without opening the raster."""
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size


def change_key(info: RasterInfo) -> tuple[int, int]:
    """(mtime_ns, size): changes when the raster does, so its tiles are encoded again. rasterio
    cannot stat a GDAL virtual file, so for one it is (0, a checksum of its grid, bands and
    CRS): an object replaced in place by one of the same grid is not noticed (docs/cluster.md)."""
    if not is_virtual(info.path):
        return file_change_key(info.path)
    grid = (info.width, info.height, info.count, info.dtype, tuple(info.transform)[:6],
            info.crs.to_wkt() if info.crs else None, info.block_shape, info.nodata)
    return 0, zlib.crc32(repr(grid).encode())


def read_window_rgb(path_or_info, window: Window, out_size=None, bands=None,
                    with_mask: bool = False, resampling: Resampling = Resampling.average):
    """Read `window` of a raster as an RGB uint8 array [3, h, w].

    `out_size` (h, w) or a single int (longest side) reads a decimated image through GDAL's
    out_shape, using the file's overviews when it has them (what the app needs when zoomed out).
    Bands and stretch come from `raster_info` (or `bands`); nodata pixels come back black.
    With `with_mask=True` returns (rgb, valid) where `valid` is a bool array [h, w].
    """
    info = path_or_info if isinstance(path_or_info, RasterInfo) and bands is None \
        else raster_info(getattr(path_or_info, "path", path_or_info), bands=bands)
    window = _clip_window(info, window)
    out_shape = _out_shape(window, out_size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(info.path) as src:
                data = src.read(list(info.rgb_bands), window=window, out_shape=(3, *out_shape),
                                resampling=resampling if out_shape != _shape(window) else Resampling.nearest)
                # The dataset mask folds together nodata values, alpha bands and internal masks.
                mask = src.read_masks(info.rgb_bands[0], window=window, out_shape=out_shape,
                                      resampling=Resampling.nearest)
    except RasterioIOError as exc:
        raise _missing_source(info.path, exc) or UserError(
            f"Could not read pixels from {info.path}: {gdal_reason(exc)}. The file may be damaged "
            f"or truncated; check it opens in a GIS, or re-export it as GeoTIFF.") from exc
    valid = mask > 0
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data).all(axis=0)
    if info.fill_value is not None:
        valid &= ~_filled(info, data, window)
    rgb = _to_uint8(data, info.stretch)
    if not valid.all():
        rgb[:, ~valid] = 0
    return (rgb, valid) if with_mask else rgb


def full_window(info: RasterInfo) -> Window:
    return Window(0, 0, info.width, info.height)


# ---------------------------------------------------------------------------------------------

def _check_path(path) -> str:
    if is_virtual(path):
        return str(path)   # GDAL says at open whether it exists (_cached_info's message)
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"Raster not found: {path}. Check the path (a GeoTIFF, COG, JPEG2000 or any "
                        f"GDAL raster).")
    if path.is_dir():
        raise UserError(f"{path} is a folder; give a raster file (the indexer accepts folders).")
    return str(path.resolve())


def _normalize_bands(bands) -> tuple[int, ...] | None:
    if bands is None:
        return None
    if isinstance(bands, str):
        try:
            bands = [int(b) for b in bands.replace(" ", "").split(",") if b]
        except ValueError:
            raise UserError(f"Bands must be band numbers like '4,3,2' or '1'; got {bands!r}.") from None
    if isinstance(bands, int):
        bands = [bands]
    bands = tuple(int(b) for b in bands)
    if len(bands) not in (1, 3):
        raise UserError(f"Give 3 band numbers (R,G,B, e.g. 4,3,2) or one band for grey; got {bands}.")
    return bands


@functools.lru_cache(maxsize=64)
def _cached_info(path: str, mtime_ns: int, size: int, bands, nodata) -> RasterInfo:
    # mtime and size are part of the key so an edited file is described again.
    del mtime_ns, size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                return _describe(src, path, bands, nodata)
    except RasterioIOError as exc:
        missing = _missing_source(path, exc)
        if missing is not None:
            raise missing from exc
        if is_virtual(path):
            raise UserError(f"GDAL cannot open {path}: {gdal_reason(exc)}. Check the path, and for object "
                            f"storage the credentials (e.g. AWS_PROFILE or AWS_ACCESS_KEY_ID for "
                            f"/vsis3/; docs/cluster.md).") from exc
        raise UserError(f"Cannot open {path} as a raster: {gdal_reason(exc)}. The file is damaged, "
                        f"truncated or not an image GDAL understands; re-export it as GeoTIFF.") from exc


def gdal_reason(exc: BaseException) -> str:
    """GDAL's own words for a failure, without a final full stop: rasterio's "Read failed. See
    previous exception for details." says nothing, the GDAL error it chains to does."""
    for cause in _chain(exc):
        text = str(cause).strip().rstrip(".")
        if text and "see previous exception" not in text.lower():
            return text
    return str(exc).strip().rstrip(".")


def _missing_source(path: str, exc: BaseException) -> UserError | None:
    """A UserError naming the file a VRT (or any raster made of others) refers to that does not
    exist, when that is why GDAL failed; else None."""
    for cause in _chain(exc):
        text = str(cause)
        if "No such file or directory" in text and ":" in text:
            source = text.split(": No such file or directory")[0].strip()
            if Path(source).name == Path(path).name:
                return None   # the raster itself: _check_path's message
            if not Path(source).is_absolute() and not is_virtual(path):
                source = str(Path(path).parent / source)   # VRT sources are relative to it
            return UserError(f"Cannot read {path}: the file it is made from, {source}, is missing. "
                             f"Put it back at that path, or rebuild {Path(path).name} (e.g. with "
                             f"gdalbuildvrt) from where the files are now.")
    return None


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _describe(src, path: str, bands, nodata_setting) -> RasterInfo:
    rgb_bands = _choose_bands(src, bands)
    crs = src.crs if src.crs else None
    bounds = tuple(src.bounds)
    bounds_wgs84 = None
    if crs is not None:
        bounds_wgs84 = bounds_to_wgs84(crs, bounds)
    nodata = src.nodatavals[rgb_bands[0] - 1]
    fill = _fill(src, rgb_bands, nodata_setting)
    stretch = None if src.dtypes[rgb_bands[0] - 1] == "uint8" else \
        _estimate_stretch(src, rgb_bands, fill["fill_value"])
    block_rows, block_cols = src.block_shapes[0]
    return RasterInfo(
        path=path, width=src.width, height=src.height, count=src.count,
        dtype=src.dtypes[rgb_bands[0] - 1], crs=crs, transform=src.transform, nodata=nodata,
        res=tuple(src.res), rgb_bands=rgb_bands, bounds=bounds, bounds_wgs84=bounds_wgs84,
        block_shape=(block_rows, block_cols), stretch=stretch,
        band_descriptions=tuple(d or "" for d in src.descriptions), **fill,
    )


def _fill(src, rgb_bands, setting) -> dict:
    """RasterInfo's fill_* fields for a nodata setting (see raster_info)."""
    none = {"fill_value": None, "fill_origin": None, "fill_share": 0.0, "collar_region": None}
    if setting == NODATA_NONE:
        return none
    if setting != NODATA_AUTO:
        return dict(none, fill_value=float(setting), fill_origin="setting")
    if _declares_nodata(src, rgb_bands):
        return none
    collar = _detect_collar(src, rgb_bands)
    if collar is None:
        return none
    value, share, region = collar
    return {"fill_value": value, "fill_origin": "collar", "fill_share": share, "collar_region": region}


def _declares_nodata(src, rgb_bands) -> bool:
    """A nodata value, an alpha band or an internal mask: the file says itself what is nodata."""
    return any(MaskFlags.all_valid not in src.mask_flag_enums[b - 1] for b in rgb_bands)


def _detect_collar(src, rgb_bands):
    """(value, share of the raster, region) of a constant border reaching the raster's edge, or
    None. Candidates: 0 in all shown bands, and 255 for 8-bit data. Read decimated (nearest, so
    values stay exact); the region is the collar's coarse cells grown by one cell, so that
    full-resolution pixels along its edge, between two samples, are inside it."""
    from scipy import ndimage
    scale = min(1.0, COLLAR_SAMPLE_PX / max(src.width, src.height))
    shape = (max(1, round(src.height * scale)), max(1, round(src.width * scale)))
    sample = src.read(list(rgb_bands), out_shape=(len(rgb_bands), *shape), resampling=Resampling.nearest)
    candidates = (0, 255) if sample.dtype == np.uint8 else (0,)
    best = None
    for value in candidates:
        constant = (sample == value).all(axis=0)
        labels, _ = ndimage.label(constant)
        edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        collar = np.isin(labels, edge[edge > 0])
        share = float(collar.mean())
        if share >= MIN_COLLAR_SHARE and (best is None or share > best[1]):
            best = (float(value), share, ndimage.binary_dilation(collar, iterations=1))
    return best


def _filled(info: RasterInfo, data: np.ndarray, window: Window) -> np.ndarray:
    """bool [h, w]: pixels of `data` (read from `window`, maybe decimated) holding the fill value
    in every band, inside the collar region when the fill is a detected collar."""
    filled = (data == info.fill_value).all(axis=0)
    region = info.collar_region
    if region is None or not filled.any():
        return filled
    # Each output pixel's centre in raster pixels, then the coarse cell it falls in.
    out_h, out_w = filled.shape
    rows = window.row_off + (np.arange(out_h) + 0.5) * (window.height / out_h)
    cols = window.col_off + (np.arange(out_w) + 0.5) * (window.width / out_w)
    cell_rows = np.clip((rows * region.shape[0] / info.height).astype(np.int64), 0, region.shape[0] - 1)
    cell_cols = np.clip((cols * region.shape[1] / info.width).astype(np.int64), 0, region.shape[1] - 1)
    return filled & region[np.ix_(cell_rows, cell_cols)]


def _choose_bands(src, bands) -> tuple[int, int, int]:
    if bands is not None:
        bad = [b for b in bands if not 1 <= b <= src.count]
        if bad:
            raise UserError(f"{src.name} has {src.count} band(s); band(s) {bad} do not exist. "
                            f"Choose bands between 1 and {src.count}.")
        return bands * 3 if len(bands) == 1 else bands
    if src.count < 3:
        return (1, 1, 1)  # grey (or grey + alpha): show band 1 in all three channels
    by_interp = {ci: i + 1 for i, ci in reversed(list(enumerate(src.colorinterp)))}
    if all(c in by_interp for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)):
        return (by_interp[ColorInterp.red], by_interp[ColorInterp.green], by_interp[ColorInterp.blue])
    by_name = {}
    for i, desc in enumerate(src.descriptions):
        word = (desc or "").strip().lower()
        for colour in ("red", "green", "blue"):
            if colour not in by_name and (word == colour or word.startswith(colour + " ")
                                          or word in (f"b_{colour}", f"{colour}_band")):
                by_name[colour] = i + 1
    if len(by_name) == 3:
        return (by_name["red"], by_name["green"], by_name["blue"])
    return (1, 2, 3)


def _estimate_stretch(src, rgb_bands, fill_value=None) -> tuple[tuple[float, float], ...]:
    """Low/high percentiles per channel over a sparse grid of windows (nodata, NaN and pixels
    holding `fill_value` in every band excluded)."""
    samples = []
    n = _STRETCH_SAMPLE_GRID
    size = _STRETCH_SAMPLE_PX
    for row in np.linspace(0, max(src.height - size, 0), n).astype(int):
        for col in np.linspace(0, max(src.width - size, 0), n).astype(int):
            win = Window(int(col), int(row), min(size, src.width), min(size, src.height))
            data = src.read(list(rgb_bands), window=win).reshape(3, -1).astype(np.float64)
            valid = src.read_masks(rgb_bands[0], window=win).reshape(-1) > 0
            valid &= np.isfinite(data).all(axis=0)
            if fill_value is not None:
                valid &= ~(data == fill_value).all(axis=0)
            samples.append(data[:, valid])
    pixels = np.concatenate(samples, axis=1)
    if pixels.shape[1] == 0:
        return ((0.0, 1.0),) * 3  # all nodata: nothing to stretch, tiles are skipped anyway
    lo, hi = np.percentile(pixels, STRETCH_PERCENTILES, axis=1)
    return tuple((float(a), float(b) if b > a else float(a) + 1.0) for a, b in zip(lo, hi))


def _to_uint8(data: np.ndarray, stretch) -> np.ndarray:
    if stretch is None:
        return np.ascontiguousarray(data, dtype=np.uint8)
    out = np.empty(data.shape, dtype=np.uint8)
    for channel, (lo, hi) in enumerate(stretch):
        scaled = (data[channel].astype(np.float32) - lo) * (255.0 / (hi - lo))
        np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255, out=scaled)
        out[channel] = (scaled + 0.5).astype(np.uint8)
    return out


def _clip_window(info: RasterInfo, window: Window) -> Window:
    window = Window(*(int(round(v)) for v in (window.col_off, window.row_off, window.width,
                                              window.height)))
    clipped = window.intersection(full_window(info)) if _overlaps(info, window) else None
    if clipped is None or clipped.width <= 0 or clipped.height <= 0:
        raise UserError(f"Window {window} lies outside {info.path} ({info.width} x {info.height} px).")
    return clipped


def _overlaps(info: RasterInfo, w: Window) -> bool:
    return w.col_off < info.width and w.row_off < info.height and \
        w.col_off + w.width > 0 and w.row_off + w.height > 0


def _shape(window: Window) -> tuple[int, int]:
    return int(window.height), int(window.width)


def _out_shape(window: Window, out_size) -> tuple[int, int]:
    if out_size is None:
        return _shape(window)
    if isinstance(out_size, int):
        scale = out_size / max(window.width, window.height)
        return max(1, round(window.height * scale)), max(1, round(window.width * scale))
    return int(out_size[0]), int(out_size[1])
