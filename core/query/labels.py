"""Labelled sets as GIS files: export marks with their label, import marks drawn in a GIS.

A labelled set is {tile_id: True (relevant) / False (not relevant)}; the index stores named sets
(TileIndex.save_label_set / load_label_set / label_sets / delete_label_set). This module turns
them into GeoJSON / GeoPackage polygons (through export.export_hits, the one feature writer) and
reads points or polygons from such files, in any CRS, marking the tiles they cover:

- a point marks every tile whose footprint contains it;
- a polygon marks every tile whose centre lies inside it; a polygon smaller than a tile (no
  centre inside) marks the tile under the mean of its outer ring's vertices.

The `label` property (any case of the name) says relevant or not; see LABEL_VALUES. A file
without a `label` property marks every feature relevant.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ssjdn.core.errors import UserError

RELEVANT = "relevant"
NOT_RELEVANT = "not relevant"
LABEL_VALUES = {
    True: ("relevant", "positive", "pos", "yes", "y", "true", "t", "1", "+"),
    False: ("not relevant", "not_relevant", "not-relevant", "notrelevant", "irrelevant", "negative",
            "neg", "no", "n", "false", "f", "0", "-"),
}
_LOOKUP = {text: flag for flag, texts in LABEL_VALUES.items() for text in texts}


def parse_label(value) -> bool:
    """True for relevant, False for not relevant; None (no value) counts as relevant."""
    if value is None:
        return True
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)) and value in (0, 1):
        return bool(value)
    flag = _LOOKUP.get(str(value).strip().lower())
    if flag is None:
        raise UserError(f"Unknown label '{value}'. Use relevant/positive/1 or not relevant/"
                        "negative/0 in the 'label' property.")
    return flag


def label_name(relevant: bool) -> str:
    return RELEVANT if relevant else NOT_RELEVANT


def export_labels(index, labels: dict, path, name: str | None = None) -> Path:
    """Write marked tiles as polygons with a `label` property ("relevant" / "not relevant") and
    `relevant` (1 / 0); `.geojson` or `.gpkg`. Score is 1 for relevant tiles, 0 for the others."""
    from ssjdn.core.geo.export import export_hits
    from ssjdn.core.query.search import hits_for_ids
    if not labels:
        raise UserError("There are no marked tiles to export; mark some tiles first.")
    ids = list(labels)
    hits = hits_for_ids(index, ids, [1.0 if labels[i] else 0.0 for i in ids])
    extra = [{"label": label_name(labels[h.tile_id]), "relevant": int(bool(labels[h.tile_id]))}
             for h in hits]
    return export_hits(hits, path, query=name, extra=extra)


def import_labels(index, path) -> dict[int, bool]:
    """{tile_id: relevant?} for the tiles that the points / polygons of a GeoJSON or GeoPackage
    cover (reprojected from the file's CRS; GeoJSON without one is EPSG:4326).

    UserError if the file cannot be read, holds other geometry types, has unknown label values,
    marks a tile both ways, or covers no tile of the index."""
    features, crs = _read_features(path)
    labels: dict[int, bool] = {}
    conflicts = set()
    for raster in index.rasters():
        if raster.crs is None:
            continue   # no coordinates to place the file's features on
        ids, windows = index.raster_grid(raster.raster_id)
        for geometry, relevant in features:
            for tile_id in _covered_tiles(geometry, crs, raster, ids, windows):
                if labels.setdefault(tile_id, relevant) != relevant:
                    conflicts.add(tile_id)
    if conflicts:
        raise UserError(f"{path}: {len(conflicts)} tile(s) (e.g. {min(conflicts)}) are covered by "
                        "both relevant and not relevant features; fix the overlap in a GIS.")
    if not labels:
        raise UserError(f"{path}: none of its {len(features)} features covers a tile of the index "
                        f"{index.index_dir}. Check that they lie on the indexed imagery.")
    return labels


# ---------------------------------------------------------------------------------------------

def _read_features(path) -> tuple[list[tuple[dict, bool]], str]:
    """[(GeoJSON-like geometry, relevant?)] and the file's CRS (as WKT or an EPSG string)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"Label file not found: {path}.")
    from ssjdn.core.geo.formats import GEOJSON, format_of
    reader = _read_geojson if format_of(path, (GEOJSON,)) is GEOJSON else _read_with_fiona
    rows, crs = reader(path)
    geographic = _checked_crs(crs, path).is_geographic
    features = []
    for number, (geometry, properties) in enumerate(rows, 1):
        if not geometry:
            continue
        try:
            checked = _checked_geometry(geometry, geographic)
        except _BadFeature as exc:
            raise UserError(f"{path}, feature {number}: {exc}.") from None
        key = next((k for k in properties if k.lower() == "label"), None)
        features.append((checked, parse_label(properties.get(key) if key else None)))
    if not features:
        raise UserError(f"{path} holds no features with a geometry.")
    return features, crs


class _BadFeature(ValueError):
    """A feature whose geometry cannot mark tiles; the text says what is wrong and what to do."""


_POSITION_DEPTH = {"Point": 0, "MultiPoint": 1, "Polygon": 2, "MultiPolygon": 3}


def _checked_crs(crs: str, path: Path):
    from rasterio.crs import CRS
    from rasterio.errors import CRSError
    try:
        return CRS.from_user_input(crs)
    except CRSError:
        raise UserError(f"{path} names an unknown coordinate system {crs!r}: export it as "
                        f"EPSG:4326 (longitude/latitude) or as a GeoPackage.") from None


def _checked_geometry(geometry, geographic: bool) -> dict:
    """The geometry as {"type", "coordinates"} once its shape fits its type (positions of 2 or 3
    finite numbers, rings of 3 points or more, nothing empty) and, in a geographic CRS, its
    numbers are longitudes and latitudes."""
    if not isinstance(geometry, dict):
        raise _BadFeature(f"its geometry {str(geometry)[:40]!r} is not a GeoJSON object with "
                          f"\"type\" and \"coordinates\"; export the file again from a GIS")
    kind = geometry.get("type")
    if kind not in _POSITION_DEPTH:
        raise _BadFeature(f"it is a {kind} feature; mark tiles with points or polygons")
    if geometry.get("coordinates") is None:
        raise _BadFeature(f"its {kind} has no coordinates; give them, or delete the feature")
    coords = geometry["coordinates"]
    positions = _positions(coords, _POSITION_DEPTH[kind], kind)
    if geographic:
        for x, y in ((p[0], p[1]) for p in positions):
            if not (-180 <= x <= 180 and -90 <= y <= 90):
                raise _BadFeature(f"coordinates ({x:g}, {y:g}) are not longitude/latitude, and "
                                  f"the file names no other coordinate system: export it as "
                                  f"EPSG:4326 or as a GeoPackage")
    return {"type": kind, "coordinates": coords}


def _positions(coords, depth: int, kind: str) -> list:
    """Every position in `coords` nested `depth` lists deep; _BadFeature if the shape is wrong."""
    if depth == 0:
        if not isinstance(coords, (list, tuple)) or not 2 <= len(coords) <= 3:
            raise _BadFeature(f"a position of its {kind} is {coords!r}, not x, y (or x, y, z)")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
                   for v in coords):
            raise _BadFeature(f"a position of its {kind} is {coords!r}; coordinates must be numbers")
        return [coords]
    if not isinstance(coords, (list, tuple)) or not coords:
        raise _BadFeature(f"its {kind} is empty; draw it again or delete the feature")
    if kind.endswith("Polygon") and depth == 1 and len(coords) < 3:
        raise _BadFeature(f"a ring of its {kind} has {len(coords)} points; a ring needs 3 or more")
    return [p for part in coords for p in _positions(part, depth - 1, kind)]


def _read_geojson(path: Path):
    """Read GeoJSON ourselves: GDAL types a `label` column mixing words and numbers as JSON and
    then fails on it. CRS: RFC 7946 (EPSG:4326) unless an old-style "crs" member names one."""
    import json
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        features = data["features"] if data.get("type") == "FeatureCollection" else [data]
        rows = [(f.get("geometry"), dict(f.get("properties") or {})) for f in features]
    except (ValueError, KeyError, AttributeError, TypeError) as exc:
        raise UserError(f"{path} is not a GeoJSON FeatureCollection ({exc}).") from exc
    name = ((data.get("crs") or {}).get("properties") or {}).get("name")
    return rows, name or "EPSG:4326"


def _read_with_fiona(path: Path):
    import fiona
    try:
        with fiona.open(path) as source:
            crs = source.crs.to_wkt() if source.crs else "EPSG:4326"
            rows = [(f.geometry and {"type": f.geometry["type"], "coordinates": f.geometry["coordinates"]},
                     dict(f.properties or {})) for f in source]
    except Exception as exc:  # noqa: BLE001 - fiona/GDAL raise several types for unreadable files
        raise UserError(f"Cannot read {path} as a GeoPackage or other GIS vector file ({exc}).") from exc
    return rows, crs


def _covered_tiles(geometry: dict, crs: str, raster, ids: np.ndarray, windows: np.ndarray) -> list[int]:
    from rasterio.warp import transform_geom
    placed = transform_geom(crs, raster.crs, geometry)
    to_pixels = ~raster.transform
    col0, row0 = windows[:, 0], windows[:, 1]
    col1, row1 = col0 + windows[:, 2], row0 + windows[:, 3]
    kind, coords = placed["type"], placed["coordinates"]
    if kind in ("Point", "MultiPoint"):
        points = np.atleast_2d(np.asarray(coords, np.float64))[:, :2]
        covered = np.zeros(len(ids), bool)
        for x, y in points:
            col, row = to_pixels * (x, y)
            covered |= (col0 <= col) & (col < col1) & (row0 <= row) & (row < row1)
        return ids[covered].tolist()
    polygons = [coords] if kind == "Polygon" else coords
    centres = np.stack([(col0 + col1) / 2, (row0 + row1) / 2], axis=1)
    covered = np.zeros(len(ids), bool)
    for rings in polygons:
        pixel_rings = [_to_pixels(ring, to_pixels) for ring in rings]
        inside = np.zeros(len(ids), bool)
        for ring in pixel_rings:   # even-odd over all rings: holes cut out
            inside ^= _inside_ring(centres, ring)
        if not inside.any():       # smaller than a tile: the tile under it
            col, row = pixel_rings[0][:-1].mean(0) if len(pixel_rings[0]) > 1 else pixel_rings[0][0]
            inside = (col0 <= col) & (col < col1) & (row0 <= row) & (row < row1)
        covered |= inside
    return ids[covered].tolist()


def _to_pixels(ring, to_pixels) -> np.ndarray:
    xy = np.asarray(ring, np.float64)[:, :2]
    if len(xy) and not np.array_equal(xy[0], xy[-1]):
        xy = np.vstack([xy, xy[:1]])   # GeoJSON rings are closed; tolerate ones that are not
    cols, rows = to_pixels * (xy[:, 0], xy[:, 1])
    return np.stack([cols, rows], axis=1)


def _inside_ring(points: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Even-odd ray casting: which points [N, 2] lie inside a closed ring [P, 2]."""
    x, y = points[:, 0:1], points[:, 1:2]
    ax, ay = ring[:-1, 0][None], ring[:-1, 1][None]
    bx, by = ring[1:, 0][None], ring[1:, 1][None]
    crosses = (ay > y) != (by > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = ax + (y - ay) * (bx - ax) / (by - ay)
    return ((crosses & (x < x_cross)).sum(1) % 2).astype(bool)
