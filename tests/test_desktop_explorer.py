"""The explorer model with no window (plain pytest, no qtbot): search, selection, relevance
feedback, find-all, labelled sets. Jobs are run directly, as a worker thread would run them."""
from __future__ import annotations

import json

import numpy as np
import pytest

from desktop_fixtures import small_raster, user_dirs  # noqa: F401


@pytest.fixture
def explorer(user_dirs, small_raster):
    """An ExplorerModel on the tiny model with the small raster (20 tiles) indexed."""
    from ssjdn.desktop.explorer import ExplorerModel
    from ssjdn.desktop.state import Session
    model = ExplorerModel(Session(model_spec="config:tiny", device="cpu"))
    model.open_raster(small_raster)
    assert model.apply_loaded(model.load_job()())
    work, token = model.index_job()
    assert model.apply_index(work(), token)
    return model


def recorder(model, *names):
    seen = []
    for name in names:
        model.events.connect(name, lambda name=name, **kwargs: seen.append((name, kwargs)))
    return seen


def search(model, query="a river next to a road", k=5):
    model.results.show(model.results.search_job(query, k)())
    return model.results.hits


def test_a_text_search_gives_hits_heatmaps_thumbnails_and_a_results_event(explorer, small_raster):
    seen = recorder(explorer.results, "results")
    hits = search(explorer, k=5)
    assert len(hits) == 5 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert list(explorer.results.heatmaps) == [small_raster]
    assert len(explorer.results.thumbnails) == 5 and explorer.results.thumbnails[0][0].shape[0] == 3
    assert [name for name, _ in seen] == ["results"] and seen[0][1]["hits"] == hits
    assert explorer.session.queries == ["a river next to a road"] and explorer.results.words == "a river next to a road"


def test_loading_the_model_prepares_the_fast_query_encoder(explorer):
    from ssjdn.core.model import fast_text
    assert explorer.loaded.model in fast_text._encoders   # no export waits in the first search


def test_the_tile_at_a_map_point_is_the_tile_covering_it(explorer):
    tile_id = explorer.tile_at(500_001.0, 5_699_999.0)           # top-left corner of the raster
    record = explorer.index.tile(tile_id)
    assert (int(record.window.col_off), int(record.window.row_off)) == (0, 0)
    assert explorer.tile_at(400_000.0, 5_699_999.0) is None     # off the raster


def test_opening_an_index_loads_no_tile_grid_until_one_is_needed(user_dirs, small_raster, monkeypatch):
    # An archive raster holds a million tiles (3 s and 40 MB to load its grid); the index of
    # ten of them must open in seconds, so grids load when a click or a map layer asks.
    from ssjdn.core.index.index_store import TileIndex
    from ssjdn.desktop.explorer import ExplorerModel
    from ssjdn.desktop.state import Session
    model = ExplorerModel(Session(model_spec="config:tiny", device="cpu"))
    model.open_raster(small_raster)
    assert model.apply_loaded(model.load_job()())
    work, token = model.index_job()
    stats = work()
    loaded = []
    real = TileIndex.raster_grid
    monkeypatch.setattr(TileIndex, "raster_grid", lambda self, rid: loaded.append(rid) or real(self, rid))
    assert model.apply_index(stats, token)
    assert loaded == [] and model.indexed_rasters() == [small_raster]
    assert model.tile_at(400_000.0, 5_699_999.0) is None and loaded == []   # off every raster
    tile_id = model.tile_at(500_001.0, 5_699_999.0)
    assert model.index.tile(tile_id).window.col_off == 0 and len(loaded) == 1
    ids, windows = model.tile_grid(small_raster)
    assert len(ids) == model.index.count == len(windows)


def test_past_the_heatmap_budget_only_the_rasters_of_the_best_hits_get_heatmaps(explorer, small_raster,
                                                                               tmp_path, monkeypatch):
    # A heatmap reads every vector of its raster: ten million-tile rasters would read 10 GB per
    # search. Past the budget, heatmaps follow the hits, best first.
    from engine_fixtures import scene, write_raster
    from ssjdn.desktop import explorer as explorer_module
    other = write_raster(tmp_path / "other.tif", scene(128, 128, seed=5), origin=(520_000.0, 5_700_000.0))
    explorer.open_raster(other)
    work, token = explorer.index_job()
    assert explorer.apply_index(work(), token)
    assert sorted(search(explorer, k=30) and explorer.results.heatmaps) == sorted([small_raster, other])
    monkeypatch.setattr(explorer_module, "HEATMAP_TILE_BUDGET", 1)
    hits = search(explorer, k=30)
    assert list(explorer.results.heatmaps) == [hits[0].raster_path]
    explorer.feedback.set_marks({hits[0].tile_id: True})
    explorer.results.show(explorer.feedback.refine_job(k=30)())
    assert list(explorer.results.heatmaps) == [explorer.results.hits[0].raster_path]
    explorer.feedback.set_marks({h.tile_id: True for h in hits[:3]})
    explorer.feedback.apply_find_all(explorer.feedback.find_all_job()())
    best = explorer.feedback.probabilities.tile_ids[np.argmax(explorer.feedback.probabilities.values)]
    assert list(explorer.feedback.probability_maps) == [explorer.index.tile(int(best)).raster_path]


def test_selecting_a_tile_computes_its_salience_unless_another_was_selected_since(explorer):
    first, second = (explorer.tile_at(500_001.0 + 20 * i, 5_699_999.0) for i in range(2))
    stale = explorer.selection.select(first)()
    explorer.selection.select(second)
    assert not explorer.selection.apply_salience(stale)                    # the user moved on: dropped
    assert explorer.selection.apply_salience(explorer.selection.select(second)())
    assert len(explorer.selection.salience) == 10


def test_marks_change_with_an_event_and_survive_a_refined_search(explorer):
    from ssjdn.core.query.feedback import search_refined
    hits = search(explorer, k=8)
    seen = recorder(explorer.feedback, "marks")
    explorer.feedback.mark(hits[0].tile_id, True)
    explorer.feedback.mark(hits[1].tile_id, False)
    explorer.feedback.mark(hits[2].tile_id, True)
    explorer.feedback.mark(hits[2].tile_id, None)                          # cleared again
    assert explorer.feedback.marks == {hits[0].tile_id: True, hits[1].tile_id: False}
    assert len(seen) == 4 and seen[-1][1]["marks"] == explorer.feedback.marks
    footprints = explorer.feedback.mark_footprints()                       # what the map outlines
    assert sorted((b, r) for b, _, r in footprints) == sorted([(hits[0].bounds, True), (hits[1].bounds, False)])

    explorer.results.show(explorer.feedback.refine_job(k=8)())
    expected = search_refined(explorer.index, explorer.loaded.model, "a river next to a road",
                              [hits[0].tile_id], [hits[1].tile_id], k=10)
    marked = {hits[0].tile_id, hits[1].tile_id}
    # The refined list shows what is new first: 8 unmarked candidates in the refined order,
    # then the marked tiles the refined search also found, at the end.
    new = [h.tile_id for h in expected if h.tile_id not in marked][:8]
    judged = [h.tile_id for h in expected if h.tile_id in marked]
    assert [h.tile_id for h in explorer.results.hits] == new + judged
    assert explorer.feedback.marks == {hits[0].tile_id: True, hits[1].tile_id: False}    # marks kept
    assert explorer.results.words == "a river next to a road"                          # refine again from them
    assert "1 relevant, 1 not relevant" in explorer.results.last_query
    assert set(explorer.results.heatmaps) == set(explorer.session.rasters)


def test_refining_needs_a_relevant_mark(explorer):
    from ssjdn.core.errors import UserError
    explorer.results.show(explorer.results.similar_job(explorer.tile_at(500_001.0, 5_699_999.0))())
    explorer.feedback.mark(explorer.results.hits[0].tile_id, False)
    assert not explorer.feedback.can_refine()                 # no words after 'similar', no relevant tile
    with pytest.raises(UserError, match="relevant"):
        explorer.feedback.refine_job()


def test_find_all_needs_three_relevant_tiles_then_scores_every_tile(explorer, small_raster):
    from ssjdn.core.errors import UserError
    hits = search(explorer, k=6)
    for hit in hits[:2]:
        explorer.feedback.mark(hit.tile_id, True)
    assert not explorer.feedback.can_find_all()
    with pytest.raises(UserError, match="at least 3"):
        explorer.feedback.find_all_job()()
    explorer.feedback.mark(hits[2].tile_id, True)
    explorer.feedback.mark(hits[5].tile_id, False)
    assert explorer.feedback.can_find_all()
    seen = recorder(explorer.feedback, "probabilities", "detections")
    explorer.feedback.apply_find_all(explorer.feedback.find_all_job()())

    assert len(explorer.feedback.probabilities) == explorer.index.count
    assert all(0.0 <= p <= 1.0 for p in explorer.feedback.probabilities.values)
    grid = explorer.feedback.probability_maps[small_raster].array
    assert np.isfinite(grid).all() and grid.max() <= 1.0
    assert [name for name, _ in seen] == ["probabilities", "detections"]
    probabilities = [p for _, p in explorer.feedback.detections]
    assert probabilities == sorted(probabilities, reverse=True) and min(probabilities) >= 0.5


def test_the_threshold_filters_the_detections_and_blanks_the_map_below_it(explorer, small_raster):
    hits = search(explorer, k=4)
    for hit in hits[:3]:
        explorer.feedback.mark(hit.tile_id, True)
    explorer.feedback.apply_find_all(explorer.feedback.find_all_job()())
    explorer.feedback.set_threshold(0.0)
    assert len(explorer.feedback.detections) == explorer.index.count
    middle = float(np.median(explorer.feedback.probabilities.values))
    explorer.feedback.set_threshold(middle)
    assert 0 < len(explorer.feedback.detections) < explorer.index.count
    assert all(p >= middle for _, p in explorer.feedback.detections)
    shown = explorer.feedback.thresholded_maps()[small_raster].array
    full = explorer.feedback.probability_maps[small_raster].array
    assert np.isnan(shown[full < middle]).all() and (shown[full >= middle] == full[full >= middle]).all()


@pytest.mark.parametrize("suffix", [".geojson", ".gpkg"])
def test_detections_export_with_their_probability_and_tile_id(explorer, tmp_path, suffix):
    import fiona
    hits = search(explorer, k=4)
    for hit in hits[:3]:
        explorer.feedback.mark(hit.tile_id, True)
    explorer.feedback.apply_find_all(explorer.feedback.find_all_job()())
    explorer.feedback.set_threshold(0.0)
    path = tmp_path / f"detections{suffix}"
    assert explorer.feedback.export_detections(str(path)) == explorer.index.count
    with fiona.open(path) as features:
        rows = [(f["properties"]["tile_id"], f["properties"]["probability"]) for f in features]
    assert rows == [(t, pytest.approx(p, abs=1e-6)) for t, p in explorer.feedback.detections]


def test_exporting_with_nothing_found_says_what_to_do(explorer, tmp_path):
    from ssjdn.core.errors import UserError
    with pytest.raises(UserError, match="Find all"):
        explorer.feedback.export_detections(str(tmp_path / "none.geojson"))
    with pytest.raises(UserError, match="run a search"):
        explorer.results.export_hits(str(tmp_path / "none.geojson"))


def test_labelled_sets_round_trip_through_the_index_and_a_gis_file(explorer, tmp_path):
    from ssjdn.core.errors import UserError
    hits = search(explorer, k=4)
    marks = {hits[0].tile_id: True, hits[1].tile_id: True, hits[3].tile_id: False}
    explorer.feedback.set_marks(marks)
    explorer.feedback.save_label_set("roofs")
    with pytest.raises(UserError, match="already exists"):
        explorer.feedback.save_label_set("roofs")                          # never overwritten silently
    assert explorer.feedback.label_sets() == [("roofs", 2, 1)]
    explorer.feedback.set_marks({})
    explorer.feedback.load_label_set("roofs")
    assert explorer.feedback.marks == marks

    explorer.feedback.export_marks(str(tmp_path / "roofs.geojson"), "roofs")
    labels = {f["properties"]["tile_id"]: f["properties"]["label"]
              for f in json.loads((tmp_path / "roofs.geojson").read_text())["features"]}
    assert labels == {hits[0].tile_id: "relevant", hits[1].tile_id: "relevant", hits[3].tile_id: "not relevant"}
    explorer.feedback.set_marks({hits[2].tile_id: True})
    assert explorer.feedback.import_marks(str(tmp_path / "roofs.geojson")) == 3
    assert explorer.feedback.marks == {**marks, hits[2].tile_id: True}    # imported marks join the others


def test_the_session_owns_the_tile_size_and_announces_changes():
    from ssjdn.desktop.state import Session
    session, seen = Session(), []
    session.events.connect("tile_size", lambda tile_ground_m: seen.append(tile_ground_m))
    session.set_tile_ground_m(120)
    session.set_tile_ground_m(120.0)                               # no change, no event
    session.set_tile_ground_m(0.0)                                 # 0 means the model's own size
    assert seen == [120.0, None] and session.tile_ground_m is None


def test_closing_a_raster_takes_its_tiles_hits_and_maps_away(explorer, small_raster):
    search(explorer, k=4)
    seen = recorder(explorer, "raster_closed", "tiles")
    explorer.close_raster(small_raster)
    assert explorer.results.hits == [] and explorer.results.heatmaps == {} and explorer.indexed_rasters() == []
    assert [name for name, _ in seen] == ["raster_closed", "tiles"]
    assert explorer.tile_at(500_001.0, 5_699_999.0) is None
    assert explorer.index.raster(small_raster) is not None        # still cached in the index


def test_the_model_asks_for_loads_builds_and_the_pending_search_as_the_app_policy_says(user_dirs, small_raster):
    # The window only runs what the model asks for: index after a model load or a new raster,
    # load again after a model or device change, build again (the running build is stale)
    # after a tiling change, and run a restored session's last query once indexed.
    from ssjdn.desktop.explorer import ExplorerModel
    from ssjdn.desktop.state import Session
    model = ExplorerModel(Session(model_spec="config:tiny", device="cpu"))
    seen = recorder(model, "load_requested", "index_requested", "search_requested")
    model.open_rasters([small_raster])
    assert seen == []                                              # no model yet
    assert model.apply_loaded(model.load_job()())
    assert seen == [("index_requested", {"stale": False})]
    work, token = model.index_job()
    model.apply_index(work(), token)
    model.pending_query = "a river"
    model.indexing_ended()
    assert seen[-1] == ("search_requested", {"query": "a river"}) and model.pending_query is None
    model.session.set_tile_ground_m(40.0)
    assert seen[-1] == ("index_requested", {"stale": True}) and model.index is None
    model.session.set_device("auto")
    assert seen[-1] == ("load_requested", {})
    quiet = ExplorerModel(Session(model_spec="config:tiny", device="cpu"), auto_index=False)
    seen = recorder(quiet, "index_requested")
    quiet.open_rasters([small_raster])
    assert quiet.apply_loaded(quiet.load_job()()) and seen == []


def test_a_stale_index_build_is_dropped(explorer):
    work, token = explorer.index_job()
    explorer.session.set_tile_ground_m(40.0)                       # the user changed the tiling
    assert not explorer.apply_index(work(), token)
    assert explorer.index is None


def test_marks_are_dropped_when_another_index_takes_over_but_kept_on_a_resume(explorer):
    hits = search(explorer, k=2)
    explorer.feedback.mark(hits[0].tile_id, True)
    work, token = explorer.index_job()                              # the same index, resumed
    assert explorer.apply_index(work(), token) and explorer.feedback.marks == {hits[0].tile_id: True}
    explorer.session.set_tile_ground_m(38.4)                        # another tiling: other tile ids
    work, token = explorer.index_job()
    assert explorer.apply_index(work(), token) and explorer.feedback.marks == {}


def test_search_refine_and_find_all_run_with_no_qt_binding_installed(user_dirs, small_raster):
    # The napari rule, enforced: the model layer works where no Qt binding can be imported.
    import os
    import subprocess
    import sys
    code = f"""
import sys
for name in ('PySide6', 'PyQt5', 'PyQt6', 'PySide2'):
    sys.modules[name] = None
from ssjdn.desktop.explorer import ExplorerModel
from ssjdn.desktop.state import Session
model = ExplorerModel(Session(model_spec='config:tiny', device='cpu'))
model.open_raster({small_raster!r})
model.apply_loaded(model.load_job()())
work, token = model.index_job()
model.apply_index(work(), token)
model.results.show(model.results.search_job('a river', 5)())
for hit in model.results.hits[:3]:
    model.feedback.mark(hit.tile_id, True)
model.results.show(model.feedback.refine_job(5)())
model.feedback.apply_find_all(model.feedback.find_all_job()())
print(len(model.results.hits), len(model.feedback.probabilities))
"""
    done = subprocess.run([sys.executable, "-c", code], env=dict(os.environ), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["8", "20"]    # 5 new hits, then the 3 marked ones


def test_the_ready_line_counts_the_tiles_of_the_open_rasters_not_the_whole_cached_index(explorer, tmp_path):
    from engine_fixtures import scene, write_raster
    other = write_raster(tmp_path / "other.tif", scene(128, 128, seed=5))
    explorer.open_raster(other)
    work, token = explorer.index_job()
    assert explorer.apply_index(work(), token)
    assert explorer.ready_text()[1].startswith("24 tiles indexed")
    explorer.close_raster(other)            # its 4 tiles stay in the cached index
    assert explorer.index.count == 24
    assert explorer.ready_text()[1].startswith("20 tiles indexed")


def test_the_attribute_rows_hold_hits_detections_and_marks_with_their_centres(explorer, tmp_path):
    from ssjdn.core.geo.tiling import tile_centres_wgs84
    hits = search(explorer, k=4)
    for hit in hits[:3]:
        explorer.feedback.mark(hit.tile_id, True)
    explorer.feedback.mark(hits[3].tile_id, False)
    explorer.feedback.apply_find_all(explorer.feedback.find_all_job()())
    explorer.feedback.set_threshold(0.9)
    rows = explorer.table.rows()
    kinds = [r.kind for r in rows]
    assert kinds == ["hit"] * 4 + ["detection"] * len(explorer.feedback.detections) + ["mark"] * 4
    assert [r.tile_id for r in rows[:4]] == [h.tile_id for h in hits] and rows[0].rank == 1
    assert [r.label for r in rows[:4]] == ["relevant"] * 3 + ["not relevant"]
    assert all(r.score == p for r, (_, p) in zip(rows[4:], explorer.feedback.detections))
    assert all(r.score is None for r in rows if r.kind == "mark")   # a mark has no score of its own
    lon, lat = tile_centres_wgs84([hits[0]])[0]
    assert (rows[0].lon, rows[0].lat) == (lon, lat) and 40 < lat < 60   # the fixture lies in UTM 31N

    path = tmp_path / "chosen.geojson"
    assert explorer.table.export([rows[0], rows[-1]], str(path)) == 2
    features = json.loads(path.read_text())["features"]
    assert [f["properties"]["kind"] for f in features] == ["hit", "mark"]
    assert features[1]["properties"]["label"] == "not relevant" and features[1]["properties"]["score"] is None
    assert features[0]["properties"]["lat"] == pytest.approx(lat, abs=1e-6)


def test_the_results_line_says_which_words_the_model_ignored(explorer):
    search(explorer, "a river 🌊")
    assert "no word for “🌊”" in explorer.results.text(set())
    search(explorer, "a river")
    assert "ignored" not in explorer.results.text(set())
