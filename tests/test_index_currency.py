"""Which rasters a build would (re)encode, asked without writing (for an index that cannot be
built into: a read-only folder). Before, the app trusted a raster's `complete` flag alone, so a
raster changed on disk or tiled otherwise was searched with its stale tiles."""
import os

from engine_fixtures import index_small_scene, scene, write_raster
from ssjdn.core.index.indexing import rasters_to_index


def test_a_complete_current_raster_needs_nothing(tmp_path, tiny_model):
    index, raster = index_small_scene(tmp_path, tiny_model)
    with index:
        assert rasters_to_index(index, [raster], tiny_model, tile_px=64) == []


def test_a_raster_changed_on_disk_another_tiling_or_a_new_raster_need_work(tmp_path, tiny_model):
    index, raster = index_small_scene(tmp_path, tiny_model)
    other = write_raster(tmp_path / "other.tif", scene(128, 128, seed=3))
    with index:
        assert rasters_to_index(index, [raster], tiny_model, tile_px=32) == [raster]
        assert rasters_to_index(index, [raster], tiny_model, tile_px=64, overlap=0.5) == [raster]
        assert rasters_to_index(index, [raster, other], tiny_model, tile_px=64) == [other]
        stat = os.stat(raster)
        os.utime(raster, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        assert rasters_to_index(index, [raster], tiny_model, tile_px=64) == [raster]
        assert index.count > 0   # nothing was written or dropped: it only asked
