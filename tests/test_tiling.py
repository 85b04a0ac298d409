"""The tile grid: sizes, edges, block-aligned chunks, and raster-CRS / lon-lat bounds."""
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform as warp_transform

from engine_fixtures import scene, utm_scene, write_raster
from ssjdn.core.errors import UserError
from ssjdn.core.geo.raster import raster_info
from ssjdn.core.geo.tiling import chunk_tiles, plan_tiles, tile_size_px, windows_to_wgs84

MODEL_77M = SimpleNamespace(input_size=256, ground_size_m=76.8)


def test_tile_bounds_equal_rasterio_window_bounds(tmp_path):
    path = utm_scene(tmp_path, rows=300, cols=350)
    tiles = plan_tiles(raster_info(path), tile_px=64, overlap=0.25)
    with rasterio.open(path) as src:
        for tile in tiles:
            assert tile.bounds == pytest.approx(src.window_bounds(tile.window), abs=1e-9)


def test_tiles_are_full_size_inside_the_raster_and_cover_it(tmp_path):
    path = utm_scene(tmp_path, rows=300, cols=350)
    tiles = plan_tiles(raster_info(path), tile_px=64)
    covered = np.zeros((300, 350), bool)
    for t in tiles:
        w = t.window
        assert (w.width, w.height) == (64, 64)
        assert w.col_off >= 0 and w.row_off >= 0 and w.col_off + 64 <= 350 and w.row_off + 64 <= 300
        covered[w.row_off:w.row_off + 64, w.col_off:w.col_off + 64] = True
    assert covered.all()
    assert len(tiles) == 6 * 5  # 5 full steps + 1 edge tile shifted inwards, per axis (6 x 5)


def test_overlap_shortens_the_step(tmp_path):
    path = utm_scene(tmp_path, rows=64, cols=256)
    cols = sorted({t.window.col_off for t in plan_tiles(raster_info(path), tile_px=64, overlap=0.5)})
    assert cols[:4] == [0, 32, 64, 96] and cols[-1] == 192


def test_default_tile_covers_the_models_training_ground_size(tmp_path):
    path = utm_scene(tmp_path, rows=700, cols=700, res=0.25)
    info = raster_info(path)
    assert tile_size_px(info, model=MODEL_77M) == (307, 307)        # 76.8 m / 0.25 m
    assert tile_size_px(info, tile_ground_m=50, model=MODEL_77M) == (200, 200)
    assert tile_size_px(info, tile_px=128, model=MODEL_77M) == (128, 128)
    with pytest.raises(UserError, match="not both"):
        tile_size_px(info, tile_ground_m=50, tile_px=128)


def test_raster_without_crs_is_tiled_in_model_input_pixels(tmp_path):
    path = write_raster(tmp_path / "plain.tif", scene(600, 600), crs=None)
    info = raster_info(path)
    tiles = plan_tiles(info, model=MODEL_77M)
    assert {(t.window.width, t.window.height) for t in tiles} == {(256, 256)}
    assert all(t.bounds_wgs84 is None for t in tiles)
    with pytest.raises(UserError, match="no coordinate system"):
        tile_size_px(info, tile_ground_m=50)
    with pytest.raises(UserError, match="no coordinate system"):
        windows_to_wgs84(info.crs, info.transform, [tiles[0].window])


def test_raster_smaller_than_a_tile_gives_one_tile_of_it_all(tmp_path):
    path = utm_scene(tmp_path, rows=40, cols=50)
    tiles = plan_tiles(raster_info(path), tile_px=64)
    assert len(tiles) == 1 and (tiles[0].window.width, tiles[0].window.height) == (50, 40)


def test_lonlat_of_a_utm_raster(tmp_path):
    # UTM 31N: easting 500 000 m is the central meridian, 3 deg E exactly; northing 5 700 000 m
    # is about 51.45 deg N. Guards against swapped axes, a wrong zone or a wrong hemisphere.
    path = utm_scene(tmp_path, rows=256, cols=256, res=1.0)
    info = raster_info(path)
    west, south, east, north = info.bounds_wgs84
    assert west == pytest.approx(3.0, abs=1e-9)
    assert 51.44 < south < north < 51.46 and 3.0 < east < 3.01
    tile = plan_tiles(info, tile_px=128)[3]  # bottom-right tile
    lon, lat = warp_transform(info.crs, "EPSG:4326", [tile.bounds[0], tile.bounds[2]],
                              [tile.bounds[1], tile.bounds[3]])
    assert tile.bounds_wgs84[0] == pytest.approx(min(lon), abs=1e-7)
    assert tile.bounds_wgs84[2] == pytest.approx(max(lon), abs=1e-5)
    assert tile.bounds_wgs84[1] == pytest.approx(min(lat), abs=1e-5)
    assert tile.bounds_wgs84[3] == pytest.approx(max(lat), abs=1e-7)
    # 128 m of northing is about 0.00115 deg of latitude at 51 deg N.
    assert tile.bounds_wgs84[3] - tile.bounds_wgs84[1] == pytest.approx(128 / 111_250, rel=0.01)


def test_footprint_rings_are_closed_and_counter_clockwise(tmp_path):
    info = raster_info(utm_scene(tmp_path, rows=256, cols=256))
    tiles = plan_tiles(info, tile_px=128)
    _, rings = windows_to_wgs84(info.crs, info.transform, [t.window for t in tiles])
    for ring in rings:
        assert (ring[0] == ring[-1]).all()
        x, y = ring[:-1, 0], ring[:-1, 1]
        assert np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) > 0


def test_geographic_raster_pixel_size_in_metres(tmp_path):
    path = write_raster(tmp_path / "geo.tif", scene(64, 64), crs="EPSG:4326", res=1e-5, origin=(5.0, 60.0))
    size_x, size_y = raster_info(path).pixel_size_m
    assert size_y == pytest.approx(1.106, rel=0.01)
    assert size_x == pytest.approx(1.113 * 0.5, rel=0.01)  # cos(60 deg) = 0.5


def test_chunks_are_block_aligned_and_hold_their_tiles(tmp_path):
    path = utm_scene(tmp_path, rows=700, cols=600, block=128)
    info = raster_info(path)
    tiles = plan_tiles(info, tile_px=100, overlap=0.1)
    chunks = chunk_tiles(info, tiles, chunk_px=300)
    assert sorted(i for c in chunks for i in c.tile_indices) == list(range(len(tiles)))
    for chunk in chunks:
        w = chunk.window
        assert w.col_off % 128 == 0 and w.row_off % 128 == 0
        assert (w.col_off + w.width) % 128 == 0 or w.col_off + w.width == info.width
        assert (w.row_off + w.height) % 128 == 0 or w.row_off + w.height == info.height
        for i in chunk.tile_indices:
            t = tiles[i].window
            assert w.col_off <= t.col_off and t.col_off + t.width <= w.col_off + w.width
            assert w.row_off <= t.row_off and t.row_off + t.height <= w.row_off + w.height


def test_windows_of_several_rasters_in_one_call_equal_one_call_per_raster(tmp_path):
    # Search projects the footprints of hits from many rasters that share a CRS in one call.
    first = raster_info(utm_scene(tmp_path, name="a.tif", rows=256, cols=256))
    second = raster_info(utm_scene(tmp_path, name="b.tif", rows=256, cols=256, origin=(431_000.0, 5_712_000.0)))
    windows = [t.window for t in plan_tiles(first, tile_px=128)]
    bounds_a, rings_a = windows_to_wgs84(first.crs, first.transform, windows)
    bounds_b, rings_b = windows_to_wgs84(second.crs, second.transform, windows)
    bounds, rings = windows_to_wgs84(first.crs, [first.transform] * 4 + [second.transform] * 4,
                                     windows + windows)
    assert np.array_equal(rings, np.concatenate([rings_a, rings_b]))
    assert np.array_equal(bounds, np.concatenate([bounds_a, bounds_b]))
    assert not np.allclose(rings_a, rings_b)
