"""Writing results for GIS software: hits as GeoJSON / GeoPackage, grids as GeoTIFF.

The formats and their suffixes are data in formats.py; a new one is an entry there and its
writer here.

Every file is written through core.files.atomic_path, so a crash or a full disk never leaves a
half-written file under the real name.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio

from ssjdn.core.errors import UserError
from ssjdn.core.files import atomic_path
from ssjdn.core.geo.formats import GEOPACKAGE, RASTER_FORMATS, VECTOR_FORMATS, format_of, suffix_choice

# 7 decimals of a degree is about 1 cm: finer than any pixel we tile, and keeps files small.
_COORD_DECIMALS = 7


def export_hits(hits, path, query: str | None = None, extra: list[dict] | None = None) -> Path:
    """Write search hits as polygons in EPSG:4326: `.geojson`/`.json` (RFC 7946) or `.gpkg`.

    `extra` holds one dict of further properties per hit (e.g. a probability or a label); every
    dict has the same keys, whose values are int, float or str."""
    path = check_hits_path(path)
    from ssjdn.core.geo.tiling import tile_centres_wgs84
    centres = tile_centres_wgs84(hits)
    features = [_feature(rank, hit, query, centre)
                for rank, (hit, centre) in enumerate(zip(hits, centres), start=1)]
    for feature, more in zip(features, extra or ()):
        feature["properties"].update(more)
    if format_of(path, VECTOR_FORMATS) is GEOPACKAGE:
        _write_gpkg(features, path, _field_types(extra[0]) if extra else {})
    else:
        collection = {"type": "FeatureCollection", "features": features}
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(collection), encoding="utf-8")
    return path


def check_hits_path(path) -> Path:
    """The path export_hits can write hits to, or a UserError: cheap, so that commands check
    their output before the work (a find-all over an archive takes minutes)."""
    path = Path(path).expanduser()
    if format_of(path, VECTOR_FORMATS) is None:
        raise UserError(f"Cannot export to '{path.name}': use a {suffix_choice(VECTOR_FORMATS)} "
                        "file name.")
    return path


def check_geotiff_path(path) -> Path:
    """The path write_geotiff can write to, or a UserError (checked before the work)."""
    path = Path(path).expanduser()
    if format_of(path, RASTER_FORMATS) is None:
        raise UserError(f"Cannot write a GeoTIFF to '{path.name}': use a "
                        f"{suffix_choice(RASTER_FORMATS)} file name.")
    return path


def write_geotiff(georaster, path) -> Path:
    """Write a GeoRaster (float32 grid + transform + CRS) as a single-band GeoTIFF."""
    path = check_geotiff_path(path)
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

def _feature(rank: int, hit, query, centre) -> dict:
    ring = _footprint(hit)
    crs = hit.crs.to_string() if hit.crs is not None else None
    w = hit.window
    properties = {
        # null for a tile with no score (e.g. a marked tile exported from the app's table)
        "rank": rank, "score": _optional(hit.score), "tile_id": int(hit.tile_id),
        "raster": str(hit.raster_path), "col_off": int(w.col_off), "row_off": int(w.row_off),
        "width": int(w.width), "height": int(w.height), "raster_crs": crs,
        "minx": hit.bounds[0], "miny": hit.bounds[1], "maxx": hit.bounds[2], "maxy": hit.bounds[3],
        # null when the model has no calibration or the hit is not from a text search
        "likelihood": _likelihood(hit),
        # The tile's centre in degrees (WGS84): what an analyst reads out or pastes elsewhere.
        "lat": round(float(centre[1]), _COORD_DECIMALS), "lon": round(float(centre[0]), _COORD_DECIMALS),
        "tiling": getattr(hit, "tiling", ""),   # e.g. "38.4 m, overlap 0.5"
        # The STAC item the raster came from (null for rasters not read from a catalog).
        **_stac_fields(getattr(hit, "stac", None)),
    }
    if query is not None:
        properties["query"] = query
    return {"type": "Feature", "id": int(hit.tile_id), "bbox": _bbox(ring),
            "geometry": geojson_geometry(ring), "properties": properties}


def _stac_fields(stac: dict | None) -> dict:
    stac = stac or {}
    return {"stac_item": stac.get("item"), "stac_collection": stac.get("collection"),
            "datetime": stac.get("datetime")}


def _likelihood(hit) -> float | None:
    return _optional(getattr(hit, "likelihood", None))


def _optional(value) -> float | None:
    """A number for a property, None (null) for a missing or NaN one."""
    return None if value is None or not np.isfinite(value) else round(float(value), 6)


def geojson_geometry(ring) -> dict:
    """A lon/lat ring as an RFC 7946 geometry: latitudes clamped to [-90, 90]; a ring past the
    antimeridian (longitudes beyond +-180, as `windows_to_wgs84` keeps them continuous) is cut
    there into a MultiPolygon whose parts lie within [-180, 180] (section 3.1.9)."""
    ring = _continuous(np.asarray(ring, dtype=np.float64))
    ring[:, 1] = np.clip(ring[:, 1], -90.0, 90.0)
    parts = []
    for low, high in ((-540.0, -180.0), (-180.0, 180.0), (180.0, 540.0)):
        part = _clip_lon(_clip_lon(ring, low, keep_above=True), high, keep_above=False)
        part[:, 0] -= 360.0 * round((low + high) / 2 / 360.0)   # shift back into [-180, 180]
        part = np.round(part, _COORD_DECIMALS)   # a sliver thinner than the rounding is no part
        if len(part) >= 3 and _area(part) > 0:
            parts.append([_rounded(np.vstack([part, part[:1]]))])
    if len(parts) == 1:
        return {"type": "Polygon", "coordinates": parts[0]}
    return {"type": "MultiPolygon", "coordinates": parts}


def _bbox(ring) -> list[float]:
    """RFC 7946 bbox (section 5.2): across the antimeridian, west is greater than east."""
    ring = _continuous(np.asarray(ring, dtype=np.float64))
    west, south = ring.min(0)
    east, north = ring.max(0)
    wrap = lambda lon: (lon + 180.0) % 360.0 - 180.0 if abs(lon) > 180.0 else lon  # noqa: E731
    box = [wrap(west), max(south, -90.0), wrap(east), min(north, 90.0)]
    return [round(float(v), _COORD_DECIMALS) for v in box]


def _continuous(ring: np.ndarray) -> np.ndarray:
    """Longitudes without jumps of 360 degrees between neighbours (a ring that was wrapped)."""
    ring = ring.copy()
    steps = np.diff(ring[:, 0])
    ring[1:, 0] -= 360.0 * np.cumsum(np.round(steps / 360.0))
    return ring


def _clip_lon(ring: np.ndarray, lon: float, keep_above: bool) -> np.ndarray:
    """Sutherland-Hodgman: the part of a closed ring on one side of a meridian (open ring out)."""
    points = ring[:-1] if len(ring) > 1 and (ring[0] == ring[-1]).all() else ring
    inside = points[:, 0] >= lon if keep_above else points[:, 0] <= lon
    out = []
    for i in range(len(points)):
        a, b = points[i - 1], points[i]
        if inside[i] != inside[i - 1]:
            t = (lon - a[0]) / (b[0] - a[0])
            out.append([lon, a[1] + t * (b[1] - a[1])])
        if inside[i]:
            out.append(b)
    return np.array(out, dtype=np.float64).reshape(-1, 2)


def _area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return abs(float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))) / 2


def _rounded(points: np.ndarray) -> list[list[float]]:
    return [[round(float(x), _COORD_DECIMALS), round(float(y), _COORD_DECIMALS)] for x, y in points]


def _footprint(hit) -> np.ndarray:
    ring = getattr(hit, "footprint_wgs84", None)
    if ring is not None:
        return np.asarray(ring)
    if hit.crs is None:
        raise UserError(f"{hit.raster_path} has no coordinate system, so its tiles cannot be placed on a "
                        f"map. Assign a CRS in a GIS (e.g. gdal_edit.py -a_srs EPSG:...) and index again.")
    from ssjdn.core.geo.tiling import windows_to_wgs84
    return windows_to_wgs84(hit.crs, hit.transform, [hit.window])[1][0]


def _field_types(properties: dict) -> dict[str, str]:
    """fiona field types of extra properties ("int", "float" or "str")."""
    kinds = {bool: "int", int: "int", float: "float"}
    return {key: kinds.get(type(value), "str") for key, value in properties.items()}


def _write_gpkg(features: list[dict], path: Path, extra_fields: dict[str, str] | None = None) -> None:
    import fiona
    # A tile cut at the antimeridian is a MultiPolygon; a layer has one geometry type.
    multi = any(f["geometry"]["type"] == "MultiPolygon" for f in features)
    schema = {"geometry": "MultiPolygon" if multi else "Polygon", "properties": {
        "rank": "int", "score": "float", "tile_id": "int", "raster": "str", "col_off": "int",
        "row_off": "int", "width": "int", "height": "int", "raster_crs": "str", "minx": "float",
        "miny": "float", "maxx": "float", "maxy": "float", "lat": "float", "lon": "float", "query": "str",
        "likelihood": "float", "tiling": "str", "stac_item": "str", "stac_collection": "str",
        "datetime": "str", **(extra_fields or {})}}
    with atomic_path(path) as tmp:
        with fiona.open(tmp, "w", driver="GPKG", layer="hits", crs="EPSG:4326", schema=schema) as dst:
            for feature in features:
                props = {key: feature["properties"].get(key) for key in schema["properties"]}
                geometry = feature["geometry"]
                if multi and geometry["type"] == "Polygon":
                    geometry = {"type": "MultiPolygon", "coordinates": [geometry["coordinates"]]}
                dst.write({"type": "Feature", "geometry": geometry, "properties": props})
