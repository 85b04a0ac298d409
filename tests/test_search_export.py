"""Queries and exports: similar tiles, captions, heatmaps, salience, GeoJSON/GPKG/GeoTIFF, CLI."""
import json

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform as warp_transform
from rasterio.windows import bounds as window_bounds

from engine_fixtures import index_small_scene, scene, utm_scene, write_raster
from ssjdn.core.errors import UserError
from ssjdn.core.geo.export import export_hits, write_geotiff
from ssjdn.core.index.index_store import TileIndex
from ssjdn.core.index.indexing import build_index
from ssjdn.core.geo.raster import GeoRaster, raster_info
from ssjdn.core.query.search import (rank_captions, score_heatmap, search_similar, search_text,
                               tile_query_map, tile_salience)


@pytest.fixture
def indexed(tmp_path, tiny_model):
    """A 320 x 256 UTM raster indexed as a 5 x 4 grid of 64 px tiles."""
    index, raster = index_small_scene(tmp_path, tiny_model)
    yield index, raster
    index.close()


def test_empty_query_gives_a_clear_error(indexed, tiny_model):
    index, _ = indexed
    for query in ("", "   ", None):
        with pytest.raises(UserError, match="query is empty"):
            search_text(index, tiny_model, query)


def test_similar_tiles_leave_out_the_tile_itself(indexed, tiny_model):
    index, _ = indexed
    tile_id = search_text(index, tiny_model, "a lake", k=1)[0].tile_id
    hits = search_similar(index, tiny_model, tile_id, k=5)
    assert len(hits) == 5 and tile_id not in [h.tile_id for h in hits]
    own = index.vectors([tile_id])[0]
    others = index.vectors([h.tile_id for h in hits])
    np.testing.assert_allclose([h.score for h in hits], others @ own, atol=1e-5)


def test_unknown_tile_ids_give_a_user_error(indexed, tiny_model):
    index, _ = indexed
    with pytest.raises(UserError, match="not in the index"):
        search_similar(index, tiny_model, 12345, k=3)
    with pytest.raises(UserError, match="not in the index"):
        tile_salience(index, tiny_model, 12345)


def test_an_image_finds_the_tile_it_was_cut_from(indexed, tiny_model):
    index, raster = indexed
    from ssjdn.core.geo.raster import read_window_rgb
    record = index.tile(search_text(index, tiny_model, "a road", k=1)[0].tile_id)
    pixels = read_window_rgb(raster, record.window)                 # [3, h, w]
    hits = search_similar(index, tiny_model, np.moveaxis(pixels, 0, -1), k=1)  # as HxWx3
    assert hits[0].tile_id == record.tile_id and hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_rank_captions_is_sorted_and_matches_the_model(indexed, tiny_model):
    index, _ = indexed
    tile_id = search_text(index, tiny_model, "fields", k=1)[0].tile_id
    captions = ["a river", "many planes at an airport", "dense forest", "a parking lot"]
    ranked = rank_captions(tiny_model, tile_id, captions, index=index)
    assert sorted(c for c, _ in ranked) == sorted(captions)
    scores = [s for _, s in ranked]
    assert scores == sorted(scores, reverse=True)
    expected = index.vectors([tile_id])[0] @ tiny_model.encode_texts(captions).cpu().numpy().T
    assert dict(ranked) == pytest.approx(dict(zip(captions, expected.tolist())), abs=1e-4)
    with pytest.raises(UserError, match="at least one caption"):
        rank_captions(tiny_model, tile_id, ["  "], index=index)


def test_heatmap_is_every_tiles_score_on_the_raster_grid(indexed, tiny_model):
    index, raster = indexed
    heat = score_heatmap(index, tiny_model, "a river", raster)
    assert heat.array.shape == (4, 5)
    info = raster_info(raster)
    assert heat.crs == info.crs
    assert heat.transform.c == info.transform.c and heat.transform.f == info.transform.f
    assert heat.transform.a == pytest.approx(64 * info.res[0])
    text = tiny_model.encode_texts(["a river"]).cpu().numpy()[0]
    for record in index.tiles([h.tile_id for h in search_text(index, tiny_model, "x", k=20)]):
        row, col = record.window.row_off // 64, record.window.col_off // 64
        assert heat.array[row, col] == pytest.approx(float(index.vectors([record.tile_id])[0] @ text), abs=1e-5)
    with pytest.raises(UserError, match="not in the index"):
        score_heatmap(index, tiny_model, "a river", "/elsewhere.tif")


def test_salience_maps_lie_on_the_tiles_footprint(indexed, tiny_model):
    index, _ = indexed
    record = index.tile(search_text(index, tiny_model, "houses", k=1)[0].tile_id)
    maps = tile_salience(index, tiny_model, record.tile_id)
    assert {k[0] for k in maps} == {"sem", "ssm"} and {k[2] for k in maps} == {0, 1, 2}
    # The SSM of each pass's end scale is 1.0 everywhere by construction: not offered.
    assert len(maps) == 10 and all(np.ptp(grid.array) > 0 for grid in maps.values())
    for grid in maps.values():
        rows, cols = grid.array.shape
        left, top = grid.transform @ (0, 0)
        right, bottom = grid.transform @ (cols, rows)
        assert (left, bottom, right, top) == pytest.approx(record.bounds, abs=1e-6)
        assert grid.crs == record.crs and 0 <= grid.array.min() and grid.array.max() <= 1


def test_geojson_is_valid_rfc7946_and_inside_the_rasters_footprint(indexed, tiny_model, tmp_path):
    index, raster = indexed
    hits = search_text(index, tiny_model, "storage tanks", k=20)
    path = export_hits(hits, tmp_path / "out" / "hits.geojson", query="storage tanks")
    doc = json.loads(path.read_text())
    assert doc["type"] == "FeatureCollection" and "crs" not in doc and len(doc["features"]) == 20
    info = raster_info(raster)
    left, bottom, right, top = info.bounds
    for rank, feature in enumerate(doc["features"], start=1):
        assert feature["type"] == "Feature" and feature["properties"]["rank"] == rank
        ring = np.array(feature["geometry"]["coordinates"][0])
        assert feature["geometry"]["type"] == "Polygon" and len(ring) >= 4
        assert (ring[0] == ring[-1]).all()
        x, y = ring[:-1, 0], ring[:-1, 1]
        assert np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) > 0   # right-hand rule: CCW
        assert (np.abs(x) <= 180).all() and (np.abs(y) <= 90).all()  # lon, lat order
        # Back in the raster's CRS every vertex is inside the raster (1 cm rounding slack).
        xs, ys = warp_transform("EPSG:4326", info.crs, x.tolist(), y.tolist())
        assert min(xs) >= left - 0.01 and max(xs) <= right + 0.01
        assert min(ys) >= bottom - 0.01 and max(ys) <= top + 0.01
        # ...and on the tile it names.
        props = feature["properties"]
        tile_box = window_bounds(rasterio.windows.Window(props["col_off"], props["row_off"],
                                                         props["width"], props["height"]), info.transform)
        assert min(xs) == pytest.approx(tile_box[0], abs=0.01) and max(ys) == pytest.approx(tile_box[3], abs=0.01)
        # `lat` / `lon`: the tile's centre, where an analyst would send someone.
        cx, cy = warp_transform("EPSG:4326", info.crs, [props["lon"]], [props["lat"]])
        assert cx[0] == pytest.approx((tile_box[0] + tile_box[2]) / 2, abs=0.01)
        assert cy[0] == pytest.approx((tile_box[1] + tile_box[3]) / 2, abs=0.01)


def test_geopackage_holds_the_same_hits(indexed, tiny_model, tmp_path):
    import fiona
    index, _ = indexed
    hits = search_text(index, tiny_model, "a bridge", k=5)
    path = export_hits(hits, tmp_path / "hits.gpkg", query="a bridge")
    with fiona.open(path) as layer:
        assert layer.crs.to_epsg() == 4326
        features = list(layer)
    assert [f["properties"]["tile_id"] for f in features] == [h.tile_id for h in hits]
    assert features[0]["properties"]["query"] == "a bridge"
    with open(export_hits(hits, tmp_path / "hits.geojson")) as f:
        as_json = [feature["properties"] for feature in json.load(f)["features"]]
    assert [(f["properties"]["lat"], f["properties"]["lon"]) for f in features] == \
        [(p["lat"], p["lon"]) for p in as_json]


def test_geotiff_round_trip(tmp_path):
    from affine import Affine
    from rasterio.crs import CRS
    grid = GeoRaster(np.arange(12, dtype=np.float32).reshape(3, 4),
                     Affine(10, 0, 500000, 0, -10, 5700000), CRS.from_epsg(32631))
    grid.array[0, 0] = np.nan
    path = write_geotiff(grid, tmp_path / "grid.tif")
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 32631 and src.transform == grid.transform
        np.testing.assert_array_equal(src.read(1), grid.array)


def test_failed_export_leaves_the_previous_file_and_no_temp_files(indexed, tiny_model, tmp_path):
    index, _ = indexed
    path = tmp_path / "exports" / "hits.geojson"
    export_hits(search_text(index, tiny_model, "a river", k=3), path)
    before = path.read_text()
    plain = write_raster(tmp_path / "plain.tif", scene(64, 64), crs=None)
    build_index(tmp_path / "plain_idx", plain, tiny_model, tile_px=32)
    with TileIndex.open(tmp_path / "plain_idx") as plain_index:
        no_crs_hits = search_text(plain_index, tiny_model, "a river", k=3)
    with pytest.raises(UserError, match="no coordinate system"):
        export_hits(no_crs_hits, path)
    assert path.read_text() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["hits.geojson"]
    with pytest.raises(UserError, match=".geojson or .gpkg"):
        export_hits([], tmp_path / "hits.shp")


def test_cli_index_search_export(tmp_path, capsys):
    from ssjdn.core.cli.main import main
    raster = utm_scene(tmp_path)
    idx = str(tmp_path / "idx")
    assert main(["index", raster, "--index", idx, "--model", "tiny", "--tile-px", "64"]) == 0
    assert "20 tiles encoded" in capsys.readouterr().out
    assert main(["search", "storage tanks", "--index", idx, "-k", "3"]) == 0
    printed = capsys.readouterr().out
    assert "top 3 for: storage tanks" in printed and "scene.tif" in printed
    out = tmp_path / "hits.geojson"
    assert main(["export", "--index", idx, "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert len(doc["features"]) == 3 and doc["features"][0]["properties"]["query"] == "storage tanks"
    assert main(["search", " ", "--index", idx]) == 2
    assert "query is empty" in capsys.readouterr().err
    heat = tmp_path / "heat.tif"
    assert main(["export", "--index", idx, "--query", "a river", "--heatmap", raster, "--out", str(heat)]) == 0
    with rasterio.open(heat) as src:
        assert src.shape == (4, 5)


def test_hits_for_ids_keep_each_score_with_its_tile_when_some_ids_are_missing(indexed):
    from ssjdn.core.query.feedback import all_tile_ids
    from ssjdn.core.query.search import hits_for_ids
    index, _ = indexed
    first, second = (int(i) for i in all_tile_ids(index)[:2])
    hits = hits_for_ids(index, [-1, first, 999_999_999, second], [0.9, 0.8, 0.7, 0.6])
    assert [(h.tile_id, h.score) for h in hits] == [(first, pytest.approx(0.8)), (second, pytest.approx(0.6))]



def test_hits_from_rasters_of_one_crs_are_projected_in_one_call(tmp_path, tiny_model, monkeypatch):
    # An archive's top ten come from many rasters of one CRS; one projection call per raster
    # cost about a millisecond of a search each (issue 8). The rings must stay each tile's own.
    from ssjdn.core.query import search as search_module
    from ssjdn.core.geo import tiling
    rasters = [utm_scene(tmp_path, name=f"{n}.tif", rows=128, cols=128, seed=n,
                         origin=(500_000.0 + 100 * n, 5_700_000.0)) for n in range(3)]
    build_index(tmp_path / "idx", rasters, tiny_model, tile_px=64)
    index = TileIndex.open(tmp_path / "idx")
    ids = [int(i) for i in index.tile_ids()]
    calls = []
    real = tiling.warp_transform
    monkeypatch.setattr(tiling, "warp_transform", lambda *a: calls.append(1) or real(*a))
    hits = search_module.hits_for_ids(index, ids, np.linspace(1, 0, len(ids)))
    assert len(calls) == 1 and len({h.raster_path for h in hits}) == 3
    for hit in hits:
        with rasterio.open(hit.raster_path) as src:
            left, bottom, right, top = src.window_bounds(hit.window)
        lon, lat = warp_transform(src.crs, "EPSG:4326", [left, right], [bottom, top])
        ring = hit.footprint_wgs84
        assert ring[:, 0].min() == pytest.approx(min(lon), abs=1e-6)
        assert ring[:, 1].max() == pytest.approx(max(lat), abs=1e-6)
    index.close()


def test_cli_reads_rasters_through_gdal_virtual_paths(tmp_path, capsys):
    # `ssjdn index /vsis3/bucket/scene.tif` on a cluster; /vsizip/ is GDAL's same machinery offline.
    import zipfile
    from ssjdn.core.cli.main import main
    raster = utm_scene(tmp_path)
    with zipfile.ZipFile(tmp_path / "scenes.zip", "w") as zipped:
        zipped.write(raster, "scene.tif")
    virtual = f"/vsizip/{tmp_path}/scenes.zip/scene.tif"
    idx = str(tmp_path / "idx")
    assert main(["index", virtual, "--index", idx, "--model", "tiny", "--tile-px", "64"]) == 0
    assert "20 tiles encoded" in capsys.readouterr().out
    assert main(["search", "storage tanks", "--index", idx, "-k", "3"]) == 0
    out = tmp_path / "hits.geojson"
    assert main(["export", "--index", idx, "--out", str(out)]) == 0
    assert json.loads(out.read_text())["features"][0]["properties"]["raster"] == virtual
    heat = tmp_path / "heat.tif"
    assert main(["export", "--index", idx, "--query", "a river", "--heatmap", virtual, "--out", str(heat)]) == 0
    with rasterio.open(heat) as src:
        assert src.shape == (4, 5)
    capsys.readouterr()
    assert main(["index", f"/vsizip/{tmp_path}/none.zip/scene.tif", "--index", idx, "--model", "tiny"]) == 2
    assert "GDAL cannot open" in capsys.readouterr().err


def test_heatmap_cells_line_up_with_the_tile_outlines_when_edge_tiles_are_shifted(tmp_path, tiny_model):
    # 300 x 200 px of 64 px tiles: the last column starts at 236 and the last row at 136,
    # overlapping their neighbours. Every cell edge must be a tile edge, and every cell shows
    # the tile whose centre is nearest (the one a click there selects).
    from ssjdn.core.index.indexing import build_index
    from ssjdn.core.index.index_store import TileIndex
    raster = write_raster(tmp_path / "shifted.tif", scene(200, 300, seed=4))
    build_index(tmp_path / "idx", [raster], tiny_model)
    index = TileIndex.open(tmp_path / "idx", model=tiny_model)
    heat = score_heatmap(index, tiny_model, "a river", raster)
    record = index.raster(raster)
    ids, windows = index.raster_grid(record.raster_id)
    assert sorted(set(windows[:, 0].tolist())) == [0, 64, 128, 192, 236]   # the last one shifted
    cell = heat.transform.a / raster_info(raster).res[0]                  # raster px per cell
    edges = set((windows[:, 0]).tolist()) | set((windows[:, 0] + windows[:, 2]).tolist())
    assert all(float(e / cell).is_integer() for e in edges)
    text = tiny_model.encode_texts(["a river"]).cpu().numpy()[0]
    scores = index.vectors(ids.tolist()) @ text
    centres = windows[:, :2] + windows[:, 2:] / 2
    rows, cols = heat.array.shape
    for r in range(0, rows, 3):
        for c in range(0, cols, 3):
            x, y = (c + 0.5) * cell, (r + 0.5) * cell
            inside = ((windows[:, 0] <= x) & (x < windows[:, 0] + windows[:, 2]) &
                      (windows[:, 1] <= y) & (y < windows[:, 1] + windows[:, 3]))
            nearest = np.flatnonzero(inside)[np.argmin(((centres[inside] - (x, y)) ** 2).sum(1))]
            assert heat.array[r, c] == pytest.approx(float(scores[nearest]), abs=1e-5)


def test_query_map_lies_on_the_tiles_footprint_with_nodata_where_the_tile_has_no_data(tmp_path, tiny_model):
    data = scene(256, 320)
    data[:, 0:40, 0:24] = 0                       # a nodata corner inside the first tile
    raster = write_raster(tmp_path / "holes.tif", data, nodata=0)
    build_index(tmp_path / "idx", raster, tiny_model, tile_px=64)
    with TileIndex.open(tmp_path / "idx", model=tiny_model) as index:
        record = next(r for r in index.tiles(index.raster_grid(index.raster(raster).raster_id)[0])
                      if (r.window.col_off, r.window.row_off) == (0, 0))
        grid = tile_query_map(index, tiny_model, record.tile_id, "a small lake")
    rows, cols = grid.array.shape
    left, top = grid.transform @ (0, 0)
    right, bottom = grid.transform @ (cols, rows)
    assert (left, bottom, right, top) == pytest.approx(record.bounds, abs=1e-6)
    assert grid.array.dtype == np.float32 and np.isnan(grid.nodata)
    cell = 64 / rows
    assert np.isnan(grid.array[0, 0]) and np.isnan(grid.array[int(39 // cell), int(23 // cell)])
    assert np.isfinite(grid.array[-1, -1]) and np.isfinite(grid.array[:, int(24 // cell) + 1:]).all()


def test_export_writes_the_query_map_of_a_tile_as_one_geotiff(tmp_path, capsys):
    from ssjdn.core.cli.main import main
    raster = utm_scene(tmp_path)
    idx = str(tmp_path / "idx")
    assert main(["index", raster, "--index", idx, "--model", "tiny", "--tile-px", "64"]) == 0
    assert main(["search", "a river", "--index", idx, "-k", "1", "--out", str(tmp_path / "h.geojson")]) == 0
    hit = json.loads((tmp_path / "h.geojson").read_text())["features"][0]["properties"]
    out = tmp_path / "map.tif"
    assert main(["export", "--index", idx, "--salience", str(hit["tile_id"]), "--query", "a river",
                 "--out", str(out)]) == 0
    with rasterio.open(out) as src, rasterio.open(raster) as scene_src:
        assert src.count == 1 and src.dtypes[0] == "float32" and np.isnan(src.nodata)
        assert src.crs == scene_src.crs
        assert tuple(src.bounds) == pytest.approx((hit["minx"], hit["miny"], hit["maxx"], hit["maxy"]), abs=1e-6)
        assert float(np.nanmax(src.read(1))) > 0
    capsys.readouterr()
    # A folder is for the SEM/SSM maps; the query map is one file, which must be a .tif.
    assert main(["export", "--index", idx, "--salience", str(hit["tile_id"]), "--query", "a river",
                 "--out", str(tmp_path / "folder")]) == 2
    assert ".tif" in capsys.readouterr().err and not (tmp_path / "folder").exists()


def test_export_of_a_query_map_checks_its_file_name_before_any_work(tmp_path, capsys):
    """A bad --out is said first: not after opening the index, loading the model and computing
    the map (here the index does not even exist, and that is not what is reported)."""
    from ssjdn.core.cli.main import main
    assert main(["export", "--index", str(tmp_path / "no-index"), "--salience", "1",
                 "--query", "a river", "--out", str(tmp_path / "map.png")]) == 2
    err = capsys.readouterr().err
    assert ".tif" in err and "no-index" not in err


def test_export_formats_are_data_that_checks_help_and_dialogs_share():
    from ssjdn.core.errors import UserError
    from ssjdn.core.geo.export import check_geotiff_path, check_hits_path
    from ssjdn.core.geo.formats import (GEOPACKAGE, RASTER_FORMATS, VECTOR_FORMATS, dialog_filter,
                                        suffix_choice)
    assert suffix_choice(VECTOR_FORMATS) == ".geojson or .gpkg"
    assert dialog_filter(VECTOR_FORMATS) == "GeoJSON (*.geojson *.json);;GeoPackage (*.gpkg)"
    assert dialog_filter(VECTOR_FORMATS, first=GEOPACKAGE).startswith("GeoPackage (*.gpkg);;")
    assert dialog_filter(RASTER_FORMATS) == "GeoTIFF (*.tif *.tiff)"
    for name in ("a.geojson", "a.JSON", "a.gpkg"):
        check_hits_path(name)
    with pytest.raises(UserError, match=r"use a \.geojson or \.gpkg file name"):
        check_hits_path("a.shp")
    with pytest.raises(UserError, match=r"use a \.tif file name"):
        check_geotiff_path("a.png")
