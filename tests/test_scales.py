"""Several tilings of a raster in one index: planning, incremental changes, suppression in search."""
from __future__ import annotations

import json

import numpy as np
import pytest
from rasterio.windows import Window

from engine_fixtures import scene, write_raster


def _raster(tmp_path, rows=256, cols=320):
    return write_raster(tmp_path / "scene.tif", scene(rows, cols), res=0.3)


def test_two_tile_sizes_index_both_grids_and_ids_say_the_scale(tmp_path, tiny_model):
    from ssjdn.core.index.index_store import TileIndex, scale_of
    from ssjdn.core.index.indexing import build_index
    path = _raster(tmp_path)
    stats = build_index(tmp_path / "idx", path, tiny_model, tile_px=[64, 32], overlap=0.5)
    # 64 px at overlap 0.5: 9 x 7 windows; 32 px: 19 x 15.
    assert stats.tiles_planned == stats.tiles_encoded == 9 * 7 + 19 * 15
    with TileIndex.open(tmp_path / "idx", model=tiny_model) as index:
        ids, windows = index.raster_grid(index.raster(path).raster_id)
        scales = np.array([scale_of(i) for i in ids])
        assert set(windows[scales == 0, 2]) == {64} and set(windows[scales == 1, 2]) == {32}
        assert (scales == 0).sum() == 63
        records = index.tiles([int(ids[scales == 0][0]), int(ids[scales == 1][0])])
        assert [r.tiling for r in records] == ["19.2 m, overlap 0.5", "9.6 m, overlap 0.5"]
    again = build_index(tmp_path / "idx", path, tiny_model, tile_px=[64, 32], overlap=0.5)
    assert again.tiles_encoded == 0 and again.rasters_skipped == 1


def test_adding_or_dropping_a_scale_encodes_only_that_scale(tmp_path, tiny_model):
    from ssjdn.core.index.index_store import TileIndex
    from ssjdn.core.index.indexing import build_index
    from ssjdn.core.query.search import search_text
    path = _raster(tmp_path)
    build_index(tmp_path / "idx", path, tiny_model, tile_px=64)
    with TileIndex.open(tmp_path / "idx", model=tiny_model) as index:
        first = dict(zip(index.tile_ids().tolist(), index.vectors(index.tile_ids())))
    added = build_index(tmp_path / "idx", path, tiny_model, tile_px=[64, 32])
    assert added.tiles_encoded == 10 * 8 and added.tiles_resumed == 20
    with TileIndex.open(tmp_path / "idx", model=tiny_model) as index:
        assert index.count == 100
        assert all(np.array_equal(index.vectors([i])[0], v) for i, v in first.items())
    dropped = build_index(tmp_path / "idx", path, tiny_model, tile_px=64)
    assert dropped.tiles_encoded == 0
    with TileIndex.open(tmp_path / "idx", model=tiny_model) as index:
        assert sorted(index.tile_ids().tolist()) == sorted(first)
        hits = search_text(index, tiny_model, "houses", k=100)
        assert {h.tile_id for h in hits} == set(first)          # the dropped scale left search too
        tiling = json.loads(json.dumps(index.raster(path).tiling))
        assert "scales" not in tiling


def test_search_keeps_the_better_of_two_hits_on_mostly_the_same_ground(tmp_path, tiny_model):
    from ssjdn.core.index.index_store import TileIndex
    from ssjdn.core.index.indexing import build_index
    from ssjdn.core.query.search import SAME_GROUND, _shared_share, search_text
    path = _raster(tmp_path)
    build_index(tmp_path / "idx", path, tiny_model, tile_px=[64, 32], overlap=0.5)
    with TileIndex.open(tmp_path / "idx", model=tiny_model) as index:
        hits = search_text(index, tiny_model, "a parking lot with many cars", k=30)
        assert len(hits) == 30
        for i, a in enumerate(hits):
            for b in hits[i + 1:]:
                assert _shared_share(a.window, b.window) <= SAME_GROUND
        # Without suppression the same query ranks tiles of one place at both scales.
        scores, ids = index.search(np.atleast_2d(_query(tiny_model)), 30)
        windows = {r.tile_id: r.window for r in index.tiles(ids[0])}
        raw = [windows[int(i)] for i in ids[0]]
        assert any(_shared_share(a, b) > SAME_GROUND for i, a in enumerate(raw) for b in raw[i + 1:])
        # The kept hit is the better one: every suppressed candidate scores below its keeper.
        kept = {h.tile_id for h in hits}
        for tile_id, score in zip(ids[0], scores[0]):
            if int(tile_id) not in kept:
                keeper = [h for h in hits if _shared_share(h.window, windows[int(tile_id)]) > SAME_GROUND]
                assert keeper and all(h.score >= score for h in keeper[:1])


def _query(model):
    from ssjdn.core.model.fast_text import encode_query
    return encode_query(model, "a parking lot with many cars")


def test_shared_share_is_intersection_over_the_smaller_footprint():
    from ssjdn.core.query.search import _shared_share
    assert _shared_share(Window(0, 0, 64, 64), Window(16, 16, 32, 32)) == 1.0   # small inside large
    assert _shared_share(Window(0, 0, 64, 64), Window(32, 0, 64, 64)) == 0.5    # half-overlap neighbours
    assert _shared_share(Window(0, 0, 64, 64), Window(64, 0, 64, 64)) == 0.0


def test_few_tiles_are_warned_with_what_to_do(tmp_path, tiny_model, capsys):
    from ssjdn.core.cli.main import main
    from ssjdn.core.index.indexing import build_index
    path = _raster(tmp_path)
    stats = build_index(tmp_path / "idx", path, tiny_model, tile_px=64)
    assert [w for w in stats.warnings if "only 20 tile(s)" in w and "--overlap 0.5" in w]
    overlapped = build_index(tmp_path / "idx2", path, tiny_model, tile_px=64, overlap=0.5)
    assert not [w for w in overlapped.warnings if "tile(s)" in w]
    args = ["index", path, "--index", str(tmp_path / "idx3"), "--model", "tiny", "--tile-px", "64,32"]
    assert main(args) == 0
    assert "tile(s)" not in capsys.readouterr().err     # 20 + 80 tiles
    from ssjdn.core.cli.commands import _print_hits
    from ssjdn.core.geo.export import export_hits
    from ssjdn.core.index.index_store import TileIndex, scale_of
    from ssjdn.core.query.search import hits_for_ids
    with TileIndex.open(tmp_path / "idx3") as index:
        ids = index.tile_ids()
        one_of_each = [int(ids[[scale_of(i) for i in ids].index(s)]) for s in (0, 1)]
        hits = hits_for_ids(index, one_of_each, [0.5, 0.4])
    _print_hits(hits, "houses")
    printed = capsys.readouterr().out
    assert "(19.2 m)" in printed and "(9.6 m)" in printed
    out = export_hits(hits, tmp_path / "hits.geojson")
    assert [f["properties"]["tiling"] for f in json.loads(out.read_text())["features"]] == ["19.2 m", "9.6 m"]
