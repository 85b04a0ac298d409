"""Labelled sets: stored in index.sqlite, exported and imported as GeoJSON / GeoPackage."""
import json
import sqlite3

import fiona
import numpy as np
import pytest
from rasterio.warp import transform as warp_transform

from engine_fixtures import UTM_ORIGIN, utm_scene
from ssjdn.core.errors import UserError
from ssjdn.core.query.feedback import all_tile_ids
from ssjdn.core.index.database import DB_NAME
from ssjdn.core.index.index_store import TileIndex
from ssjdn.core.index.indexing import build_index
from ssjdn.core.query.labels import export_labels, import_labels, parse_label

RES = 0.3
TILE = 64   # px, 19.2 m


@pytest.fixture
def indexed(tmp_path, tiny_model):
    """A 320 x 256 UTM raster indexed as a 5 x 4 grid of 64 px tiles."""
    raster = utm_scene(tmp_path, rows=256, cols=320)
    build_index(tmp_path / "idx", raster, tiny_model, tile_px=TILE)
    index = TileIndex.open(tmp_path / "idx", model=tiny_model)
    yield index
    index.close()


def _tile_at(index, col, row) -> int:
    """The id of the tile in grid column `col`, row `row`."""
    ids = [int(i) for i in all_tile_ids(index)]
    return next(r.tile_id for r in index.tiles(ids)
                if (r.window.col_off, r.window.row_off) == (col * TILE, row * TILE))


def _utm(col_px, row_px):
    """UTM coordinates of a raster pixel position."""
    return UTM_ORIGIN[0] + col_px * RES, UTM_ORIGIN[1] - row_px * RES


def _lonlat(col_px, row_px):
    xs, ys = warp_transform("EPSG:32631", "EPSG:4326", *map(list, zip(_utm(col_px, row_px))))
    return xs[0], ys[0]


def _write_geojson(path, features):
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": g, "properties": p} for g, p in features]}))
    return path


# -- the table ---------------------------------------------------------------------------------

def test_label_sets_round_trip_through_the_index(indexed, tmp_path, tiny_model):
    a, b, c = (_tile_at(indexed, i, 0) for i in range(3))
    indexed.save_label_set("solar farms", {a: True, b: False, c: True})
    indexed.close()
    with TileIndex.open(tmp_path / "idx", model=tiny_model) as reopened:
        assert reopened.label_sets() == [("solar farms", 2, 1)]
        assert reopened.load_label_set("solar farms") == {a: True, b: False, c: True}
        assert reopened.delete_label_set("solar farms") is True
        assert reopened.label_sets() == [] and reopened.delete_label_set("solar farms") is False


def test_an_existing_set_is_replaced_only_when_asked(indexed):
    a, b = _tile_at(indexed, 0, 0), _tile_at(indexed, 1, 0)
    indexed.save_label_set("s", {a: True})
    with pytest.raises(UserError, match="already exists"):
        indexed.save_label_set("s", {b: True})
    assert indexed.load_label_set("s") == {a: True}
    indexed.save_label_set("s", {b: False}, overwrite=True)
    assert indexed.load_label_set("s") == {b: False}


def test_a_set_with_an_unknown_tile_is_refused_whole(indexed):
    a = _tile_at(indexed, 0, 0)
    with pytest.raises(UserError, match="Tile 12345 is not in the index"):
        indexed.save_label_set("s", {a: True, 12345: False})
    assert indexed.label_sets() == []


def test_loading_an_unknown_set_names_the_stored_ones(indexed):
    indexed.save_label_set("ships", {_tile_at(indexed, 0, 0): True})
    with pytest.raises(UserError, match=r"No labelled set named 'boats'.*ships"):
        indexed.load_label_set("boats")


def test_an_index_built_before_labelled_sets_still_opens(indexed, tmp_path, tiny_model):
    indexed.close()
    with sqlite3.connect(tmp_path / "idx" / DB_NAME) as db:   # as an older index: no label tables
        db.execute("DROP TABLE IF EXISTS labels")
        db.execute("DROP TABLE IF EXISTS label_sets")
    with TileIndex.open(tmp_path / "idx", model=tiny_model) as index:
        assert index.count == 20 and index.label_sets() == []


# -- label values and files --------------------------------------------------------------------

@pytest.mark.parametrize("value, relevant", [
    ("relevant", True), ("Positive", True), (1, True), ("1", True), (True, True), (None, True),
    ("not relevant", False), ("irrelevant", False), ("NEGATIVE", False), (0, False), ("0", False)])
def test_label_values_accepted(value, relevant):
    assert parse_label(value) is relevant


def test_an_unknown_label_value_is_a_user_error():
    with pytest.raises(UserError, match="Unknown label 'maybe'"):
        parse_label("maybe")


@pytest.mark.parametrize("suffix", [".geojson", ".gpkg"])
def test_exported_labels_import_back_to_the_same_tiles(indexed, tmp_path, suffix):
    labels = {_tile_at(indexed, 0, 0): True, _tile_at(indexed, 3, 2): False, _tile_at(indexed, 4, 3): True}
    path = export_labels(indexed, labels, tmp_path / f"marks{suffix}", name="test")
    with fiona.open(path) as source:
        rows = {f.properties["tile_id"]: (f.properties["label"], f.properties["relevant"]) for f in source}
    assert rows == {t: ("relevant" if ok else "not relevant", int(ok)) for t, ok in labels.items()}
    assert import_labels(indexed, path) == labels


def test_points_in_lon_lat_mark_the_tiles_that_contain_them(indexed, tmp_path):
    path = _write_geojson(tmp_path / "points.geojson", [
        ({"type": "Point", "coordinates": _lonlat(10, 10)}, {"label": "relevant"}),
        ({"type": "Point", "coordinates": _lonlat(300, 200)}, {"label": 0}),
        ({"type": "Point", "coordinates": _lonlat(5000, 5000)}, {"label": 1})])   # off the raster
    assert import_labels(indexed, path) == {_tile_at(indexed, 0, 0): True, _tile_at(indexed, 4, 3): False}


def test_a_polygon_in_utm_marks_the_tiles_whose_centres_it_covers(indexed, tmp_path):
    # Pixel box (20, 20)-(120, 120) covers the centres (32, 32), (96, 32), (32, 96), (96, 96).
    ring = [_utm(20, 20), _utm(120, 20), _utm(120, 120), _utm(20, 120), _utm(20, 20)]
    path = tmp_path / "poly.gpkg"
    schema = {"geometry": "Polygon", "properties": {"Label": "str"}}
    with fiona.open(path, "w", driver="GPKG", crs="EPSG:32631", schema=schema) as dst:
        dst.write({"geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": {"Label": "positive"}})
    expected = {_tile_at(indexed, c, r): True for c in (0, 1) for r in (0, 1)}
    assert import_labels(indexed, path) == expected


def test_a_polygon_smaller_than_a_tile_marks_the_tile_under_it(indexed, tmp_path):
    ring = [_utm(130, 70), _utm(140, 70), _utm(140, 80), _utm(130, 80), _utm(130, 70)]
    path = _write_geojson(tmp_path / "small.geojson", [({"type": "Polygon", "coordinates": [
        [_lonlat(*_pixel(x, y)) for x, y in ring]]}, {})])
    assert import_labels(indexed, path) == {_tile_at(indexed, 2, 1): True}


def _pixel(x, y):
    return (x - UTM_ORIGIN[0]) / RES, (UTM_ORIGIN[1] - y) / RES


def test_a_tile_marked_both_ways_by_a_file_is_a_user_error(indexed, tmp_path):
    path = _write_geojson(tmp_path / "clash.geojson", [
        ({"type": "Point", "coordinates": _lonlat(10, 10)}, {"label": "relevant"}),
        ({"type": "Point", "coordinates": _lonlat(20, 20)}, {"label": "not relevant"})])
    with pytest.raises(UserError, match="both relevant and not relevant"):
        import_labels(indexed, path)


def test_lines_or_features_off_the_imagery_are_user_errors(indexed, tmp_path):
    line = _write_geojson(tmp_path / "line.geojson", [
        ({"type": "LineString", "coordinates": [_lonlat(0, 0), _lonlat(50, 50)]}, {})])
    with pytest.raises(UserError, match="points or polygons"):
        import_labels(indexed, line)
    far = _write_geojson(tmp_path / "far.geojson", [({"type": "Point", "coordinates": [10.0, 45.0]}, {})])
    with pytest.raises(UserError, match="covers a tile"):
        import_labels(indexed, far)
    with pytest.raises(UserError, match="not found"):
        import_labels(indexed, tmp_path / "missing.geojson")


@pytest.mark.parametrize("geometry, crs, expected", [
    ({"type": "Point", "coordinates": list(UTM_ORIGIN)}, None, r"feature 2: .*not longitude/latitude.*EPSG:4326"),
    ({"type": "Point"}, None, r"feature 2: .*no coordinates"),
    ("POINT (2.1 48.8)", None, r"feature 2: .*geometry .*GeoJSON object"),
    ({"type": "Polygon", "coordinates": []}, None, r"feature 2: .*empty"),
    ({"type": "Point", "coordinates": [2.1]}, None, r"feature 2: .*x, y"),
    ({"type": "Point", "coordinates": ["2.1", "48.8"]}, None, r"feature 2: .*numbers"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}, None, r"feature 2: .*ring"),
    ({"type": "Point", "coordinates": [2.1, 48.8]}, "EPSG:999999", r"unknown coordinate system.*EPSG:999999"),
])
def test_mistakes_in_a_label_file_are_one_line_naming_the_file_and_feature(indexed, tmp_path, geometry,
                                                                          crs, expected):
    # Each ended in "Unexpected error" (KeyError, TypeError, CRSError, ...).
    features = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": list(_lonlat(10, 10))},
                 "properties": {}},
                {"type": "Feature", "geometry": geometry, "properties": {}}]
    data = {"type": "FeatureCollection", "features": features}
    if crs:
        data["crs"] = {"type": "name", "properties": {"name": crs}}
    path = tmp_path / "marks.geojson"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=expected) as raised:
        import_labels(indexed, path)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)
