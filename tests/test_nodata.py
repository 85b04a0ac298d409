"""Black (and white) collars without a nodata tag, nodata settings and the nodata threshold."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from rasterio.windows import Window

from engine_fixtures import collared, scene, write_raster


def test_a_black_collar_without_nodata_tag_is_nodata_but_black_inside_it_is_not(tmp_path):
    from ssjdn.core.geo.raster import nodata_note, raster_info, read_window_rgb
    path = write_raster(tmp_path / "collar.tif", collared(), res=0.1)
    info = raster_info(path)
    assert (info.fill_value, info.fill_origin) == (0.0, "collar")
    assert 0.3 < info.fill_share < 0.6
    assert "treated as nodata" in nodata_note(info)
    rgb, valid = read_window_rgb(info, Window(0, 0, 512, 512), with_mask=True)
    assert not valid[10, 10] and not valid[500, 20]            # the collar, at two edges
    assert valid[256, 256] and (rgb[:, 256, 256] == 0).all()   # the black blob inside stays data
    assert valid[300, 400]


def test_a_white_collar_is_found_too(tmp_path):
    from ssjdn.core.geo.raster import raster_info
    info = raster_info(write_raster(tmp_path / "white.tif", collared(value=255), res=0.1))
    assert (info.fill_value, info.fill_origin) == (255.0, "collar")


def test_no_collar_is_looked_for_when_the_file_declares_nodata_or_none_is_there(tmp_path):
    from ssjdn.core.geo.raster import raster_info
    declared = raster_info(write_raster(tmp_path / "declared.tif", collared(), nodata=0, res=0.1))
    assert declared.fill_value is None and declared.nodata == 0
    clean = raster_info(write_raster(tmp_path / "clean.tif", scene(256, 256), res=0.1))
    assert clean.fill_value is None


def test_a_nodata_setting_overrides_detection(tmp_path):
    from ssjdn.core.errors import UserError
    from ssjdn.core.geo.raster import raster_info, read_window_rgb
    path = write_raster(tmp_path / "collar.tif", collared(), res=0.1)
    kept = raster_info(path, nodata="none")
    assert kept.fill_value is None
    assert read_window_rgb(kept, Window(0, 0, 512, 512), with_mask=True)[1].all()
    everywhere = raster_info(path, nodata=0)
    assert (everywhere.fill_value, everywhere.fill_origin) == (0.0, "setting")
    valid = read_window_rgb(everywhere, Window(0, 0, 512, 512), with_mask=True)[1]
    assert not valid[256, 256]                                  # a set value is nodata anywhere
    with pytest.raises(UserError, match="pixel value"):
        raster_info(path, nodata="black")


def test_collar_detection_memory_does_not_grow_with_the_raster(tmp_path):
    from ssjdn.core.geo import raster
    big = np.zeros((3, 3000, 3000), np.uint8)
    big[:, 500:2500, 700:2300] = 90
    path = write_raster(tmp_path / "big.tif", big, res=0.1, block=512, compress="deflate")
    tracemalloc.start()
    info = raster._cached_info.__wrapped__(path, 0, 0, None, raster.NODATA_AUTO)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert info.fill_origin == "collar"
    # Arrays of the decimated sample only (~5 MB), never of the raster (27 MB of pixels).
    assert peak < 8 * 2**20, f"{peak / 2**20:.1f} MB for a 27 MB raster"


# -- indexing ---------------------------------------------------------------------------------

def _nodata_shares(index, info):
    """The nodata share of every indexed tile of `info`'s raster, as read now."""
    from ssjdn.core.geo.raster import read_window_rgb
    _, windows = index.raster_grid(index.raster(info.path).raster_id)
    return [1.0 - read_window_rgb(info, Window(*map(int, w)), with_mask=True)[1].mean() for w in windows]


def test_no_mostly_black_tile_of_a_collared_scene_is_indexed_and_the_collar_is_named_once(
        tmp_path, tiny_model):
    from ssjdn.core.index.index_store import TileIndex
    from ssjdn.core.index.indexing import build_index
    from ssjdn.core.geo.raster import raster_info
    path = write_raster(tmp_path / "collar.tif", collared(), res=0.1)
    stats = build_index(tmp_path / "idx", path, tiny_model, tile_px=64)
    assert [w for w in stats.warnings if "treated as nodata" in w] == [stats.warnings[0]]
    assert len(stats.warnings) == 1
    assert stats.tiles_nodata >= 20 and stats.tiles_encoded == 64 - stats.tiles_nodata
    with TileIndex.open(tmp_path / "idx", model=tiny_model) as index:
        shares = _nodata_shares(index, raster_info(path))
    assert max(shares) <= 0.5 and len(shares) == stats.tiles_encoded
    again = build_index(tmp_path / "idx", path, tiny_model, tile_px=64)
    assert again.warnings == [] and again.tiles_encoded == 0


def test_the_nodata_threshold_is_a_setting(tmp_path, tiny_model):
    from ssjdn.core.errors import UserError
    from ssjdn.core.index.indexing import build_index
    path = write_raster(tmp_path / "collar.tif", collared(), res=0.1)
    strict = build_index(tmp_path / "strict", path, tiny_model, tile_px=64, max_nodata=0.1)
    loose = build_index(tmp_path / "loose", path, tiny_model, tile_px=64, max_nodata=1.0)
    default = build_index(tmp_path / "default", path, tiny_model, tile_px=64)
    assert strict.tiles_encoded < default.tiles_encoded < loose.tiles_encoded < 64
    with pytest.raises(UserError, match="between 0\\s+and 1"):
        build_index(tmp_path / "bad", path, tiny_model, tile_px=64, max_nodata=1.5)


def _vectors_by_tile(index):
    ids = index.tile_ids()
    return dict(zip(ids.tolist(), index.vectors(ids)))


def test_a_rerun_with_another_nodata_setting_encodes_only_tiles_that_changed(tmp_path, tiny_model):
    from ssjdn.core.index.index_store import TileIndex
    from ssjdn.core.index.indexing import build_index
    from ssjdn.core.query.search import search_text
    path = write_raster(tmp_path / "collar.tif", collared(value=255), res=0.1)
    first = build_index(tmp_path / "idx", path, tiny_model, tile_px=64)
    with TileIndex.open(tmp_path / "idx", model=tiny_model) as index:
        before = _vectors_by_tile(index)
    # A looser threshold: the same pixels, only the newly admitted tiles are encoded.
    looser = build_index(tmp_path / "idx", path, tiny_model, tile_px=64, max_nodata=0.9)
    with TileIndex.open(tmp_path / "idx", model=tiny_model) as index:
        after = _vectors_by_tile(index)
    assert looser.tiles_encoded == len(after) - len(before) > 0
    assert looser.tiles_unchanged == len(before)
    assert all(np.array_equal(after[i], v) for i, v in before.items())
    # The white collar kept as image: tiles touching it now show white, so only they change.
    kept = build_index(tmp_path / "idx", path, tiny_model, tile_px=64, max_nodata=0.9, nodata="none")
    assert kept.tiles_encoded + kept.tiles_unchanged == 64
    assert 0 < kept.tiles_unchanged < len(after)
    # Back to the first setting: tiles now over the threshold leave the index, search included.
    back = build_index(tmp_path / "idx", path, tiny_model, tile_px=64)
    assert back.tiles_encoded + back.tiles_unchanged == first.tiles_encoded
    with TileIndex.open(tmp_path / "idx", model=tiny_model) as index:
        assert set(_vectors_by_tile(index)) == set(before)
        hits = search_text(index, tiny_model, "white", k=64)
        assert len(hits) == len(before) and {h.tile_id for h in hits} == set(before)


def test_a_nodata_setting_per_raster(tmp_path, tiny_model):
    from ssjdn.core.index.index_store import TileIndex
    from ssjdn.core.index.indexing import build_index
    a = write_raster(tmp_path / "a.tif", collared(), res=0.1)
    b = write_raster(tmp_path / "b.tif", collared(seed=1), res=0.1)
    stats = build_index(tmp_path / "idx", [a, b], tiny_model, tile_px=64, nodata={a: "none"})
    assert len(stats.warnings) == 1 and "b.tif" in stats.warnings[0]
    with TileIndex.open(tmp_path / "idx", model=tiny_model) as index:
        counts = {r.path.rsplit("/", 1)[-1]: r.n_indexed for r in index.rasters()}
    assert counts["a.tif"] == 64 and counts["b.tif"] < 64


def test_the_cli_takes_a_nodata_value_and_a_threshold(tmp_path, capsys):
    from ssjdn.core.cli.main import main
    from ssjdn.core.index.index_store import TileIndex
    path = write_raster(tmp_path / "collar.tif", collared(), res=0.1)
    args = ["index", path, "--index", str(tmp_path / "idx"), "--model", "tiny", "--tile-px", "64"]
    assert main(args + ["--nodata", "none"]) == 0
    with TileIndex.open(tmp_path / "idx") as index:
        assert index.count == 64
    assert main(args + ["--max-nodata", "0.2"]) == 0
    out = capsys.readouterr()
    assert "treated as nodata" in out.err and "re-read unchanged" in out.out
    with TileIndex.open(tmp_path / "idx") as index:
        assert index.count < 40
    with pytest.raises(SystemExit):
        main(args + ["--nodata", "black"])
    assert "pixel value" in capsys.readouterr().err


def test_a_tile_is_read_again_with_the_nodata_setting_it_was_encoded_with(tmp_path, tiny_model):
    """Salience and caption ranking read a tile's pixels again: a set nodata value must black
    out the same pixels as when it was indexed, so the model sees the tile it encoded."""
    from ssjdn.core.index.index_store import TileIndex
    from ssjdn.core.index.indexing import build_index
    from ssjdn.core.query.search import _pixels
    path = write_raster(tmp_path / "collar.tif", collared(value=255), res=0.1)
    build_index(tmp_path / "idx", path, tiny_model, tile_px=64, nodata=250, max_nodata=1.0)
    with TileIndex.open(tmp_path / "idx", model=tiny_model) as index:
        ids = index.tile_ids()
        record = index.tile(int(ids[len(ids) // 2]))
        assert record.nodata == 250.0
        vector = tiny_model.encode_images(_pixels(record, index)).float().numpy()[0]
        np.testing.assert_allclose(vector, index.vectors([record.tile_id])[0], atol=2e-3)
