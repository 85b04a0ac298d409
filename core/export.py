"""Writing results for GIS software: hits as GeoJSON / GeoPackage, grids as GeoTIFF.

Every file is written under a temporary name beside its destination and moved into place with
os.replace, so a crash or a full disk never leaves a half-written file under the real name.
"""
from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import rasterio

from ssjdn.core.errors import UserError

# 7 decimals of a degree is about 1 cm: finer than any pixel we tile, and keeps files small.
_COORD_DECIMALS = 7


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path` to write to; it replaces `path` only on success."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the real extension: GDAL and fiona pick their driver from it.
    tmp = path.with_name(f".{path.stem}.partial-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def export_hits(hits, path, query: str | None = None, extra: list[dict] | None = None) -> Path:
    """Write search hits as polygons in EPSG:4326: `.geojson`/`.json` (RFC 7946) or `.gpkg`.

    `extra` holds one dict of further properties per hit (e.g. a probability or a label); every
    dict has the same keys, whose values are int, float or str."""
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in (".geojson", ".json", ".gpkg"):
        raise UserError(f"Cannot export to '{path.name}': use a .geojson or .gpkg file name.")
    features = [_feature(rank, hit, query) for rank, hit in enumerate(hits, start=1)]
    for feature, more in zip(features, extra or ()):
        feature["properties"].update(more)
    if suffix == ".gpkg":
        _write_gpkg(features, path, _field_types(extra[0]) if extra else {})
    else:
        collection = {"type": "FeatureCollection", "features": features}
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(collection), encoding="utf-8")
    return path


def write_geotiff(georaster, path) -> Path:
    """Write a GeoRaster (float32 grid + transform + CRS) as a single-band GeoTIFF."""
    path = Path(path).expanduser()
    if path.suffix.lower() not in (".tif", ".tiff"):
        raise UserError(f"Cannot write a GeoTIFF to '{path.name}': use a .tif file name.")
    array = np.asarray(georaster.array, dtype=np.float32)
    profile = {"driver": "GTiff", "width": array.shape[1], "height": array.shape[0], "count": 1,
               "dtype": "float32", "transform": georaster.transform, "nodata": georaster.nodata,
               "compress": "deflate", "predictor": 3}
    if georaster.crs is not None:
        profile["crs"] = georaster.crs
    if array.shape[0] >= 256 and array.shape[1] >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(array, 1)
    return path


# ---------------------------------------------------------------------------------------------

def _feature(rank: int, hit, query) -> dict:
    ring = _footprint(hit)
    crs = hit.crs.to_string() if hit.crs is not None else None
    w = hit.window
    properties = {
        "rank": rank, "score": round(float(hit.score), 6), "tile_id": int(hit.tile_id),
        "raster": str(hit.raster_path), "col_off": int(w.col_off), "row_off": int(w.row_off),
        "width": int(w.width), "height": int(w.height), "raster_crs": crs,
        "minx": hit.bounds[0], "miny": hit.bounds[1], "maxx": hit.bounds[2], "maxy": hit.bounds[3],
    }
    if query is not None:
        properties["query"] = query
    coords = [[round(float(x), _COORD_DECIMALS), round(float(y), _COORD_DECIMALS)] for x, y in ring]
    return {"type": "Feature", "id": int(hit.tile_id),
            "bbox": [round(float(v), _COORD_DECIMALS) for v in np.r_[np.min(ring, 0), np.max(ring, 0)]],
            "geometry": {"type": "Polygon", "coordinates": [coords]}, "properties": properties}


def _footprint(hit) -> np.ndarray:
    ring = getattr(hit, "footprint_wgs84", None)
    if ring is not None:
        return np.asarray(ring)
    if hit.crs is None:
        raise UserError(f"{hit.raster_path} has no coordinate system, so its tiles cannot be placed on a "
                        f"map. Assign a CRS in a GIS (e.g. gdal_edit.py -a_srs EPSG:...) and index again.")
    from ssjdn.core.tiling import windows_to_wgs84
    return windows_to_wgs84(hit.crs, hit.transform, [hit.window])[1][0]


def _field_types(properties: dict) -> dict[str, str]:
    """fiona field types of extra properties ("int", "float" or "str")."""
    kinds = {bool: "int", int: "int", float: "float"}
    return {key: kinds.get(type(value), "str") for key, value in properties.items()}


def _write_gpkg(features: list[dict], path: Path, extra_fields: dict[str, str] | None = None) -> None:
    import fiona
    schema = {"geometry": "Polygon", "properties": {
        "rank": "int", "score": "float", "tile_id": "int", "raster": "str", "col_off": "int",
        "row_off": "int", "width": "int", "height": "int", "raster_crs": "str", "minx": "float",
        "miny": "float", "maxx": "float", "maxy": "float", "query": "str", **(extra_fields or {})}}
    with atomic_path(path) as tmp:
        with fiona.open(tmp, "w", driver="GPKG", layer="hits", crs="EPSG:4326", schema=schema) as dst:
            for feature in features:
                props = {key: feature["properties"].get(key) for key in schema["properties"]}
                dst.write({"type": "Feature", "geometry": feature["geometry"], "properties": props})
