"""Refine by example through the UI (pytest-qt, offscreen): marking hits with keys and buttons,
refining, find-all with its probability heatmap and threshold slider, export, labelled sets."""
from __future__ import annotations

import json

import numpy as np
from desktop_fixtures import INDEX_TIMEOUT_MS, indexed_window, make_window, small_raster, user_dirs  # noqa: F401
from PySide6.QtCore import Qt

from test_desktop_search import SIGNAL_MS, search_through_ui


def mark_rows(qtbot, window, rows, key):
    """Mark hits of the list with a key, the list having the focus."""
    results = window.search_panel.results
    window.activateWindow()
    results.setFocus()
    qtbot.waitUntil(results.hasFocus, timeout=5000)
    for row in rows:
        results.setCurrentRow(row)
        qtbot.keyClick(results, key)


def find_all(qtbot, window):
    with qtbot.waitSignal(window.findAllFinished, timeout=SIGNAL_MS):
        qtbot.mouseClick(window.feedback_panel.find_all_button, Qt.MouseButton.LeftButton)


def test_keys_mark_hits_which_are_tinted_in_the_list_and_outlined_on_the_map(qtbot, indexed_window):
    from ssjdn.desktop.qt_map import MARK_COLORS
    window = indexed_window
    window.show()
    qtbot.waitExposed(window)
    hits = search_through_ui(qtbot, window)
    mark_rows(qtbot, window, [0, 2], Qt.Key.Key_Plus)
    mark_rows(qtbot, window, [1], Qt.Key.Key_Minus)
    assert window.model.feedback.marks == {hits[0].tile_id: True, hits[2].tile_id: True, hits[1].tile_id: False}

    results = window.search_panel.results
    assert "+ relevant" in results.item(0).text() and "not relevant" in results.item(1).text()
    assert results.item(0).background().color().rgb() == MARK_COLORS[True].rgb()
    assert results.item(1).background().color().rgb() == MARK_COLORS[False].rgb()
    outlines = window.map_view.layer_items("marks")
    assert sorted(item.pen().color().rgb() for item in outlines) == sorted(
        [MARK_COLORS[True].rgb()] * 2 + [MARK_COLORS[False].rgb()])
    mark_rows(qtbot, window, [2], Qt.Key.Key_0)                # 0 clears a mark
    assert hits[2].tile_id not in window.model.feedback.marks and len(window.map_view.layer_items("marks")) == 2

    query = window.search_panel.query
    query.setFocus()
    qtbot.waitUntil(query.hasFocus, timeout=5000)
    qtbot.keyClick(query, Qt.Key.Key_Plus)                     # typing a query is not marking
    assert query.text().endswith("+") and len(window.model.feedback.marks) == 2


def test_the_buttons_mark_the_current_hit_and_refine_keeps_the_marks(qtbot, indexed_window):
    window = indexed_window
    panel = window.search_panel
    hits = search_through_ui(qtbot, window)
    assert not panel.refine_button.isEnabled()                 # nothing marked yet
    panel.results.setCurrentRow(0)
    qtbot.mouseClick(panel.relevant_button, Qt.MouseButton.LeftButton)
    panel.results.setCurrentRow(1)
    qtbot.mouseClick(panel.not_relevant_button, Qt.MouseButton.LeftButton)
    assert panel.refine_button.isEnabled()

    with qtbot.waitSignal(window.searchFinished, timeout=SIGNAL_MS) as refined:
        qtbot.mouseClick(panel.refine_button, Qt.MouseButton.LeftButton)
    assert window.model.feedback.marks == {hits[0].tile_id: True, hits[1].tile_id: False}
    assert "1 relevant, 1 not relevant" in panel.status.text()
    shown = {panel.results.item(i).data(Qt.ItemDataRole.UserRole).tile_id: panel.results.item(i).text()
             for i in range(panel.results.count())}
    assert [h.tile_id for h in refined.args[0]] == list(shown)
    for tile_id, mark in window.model.feedback.marks.items():          # marked tiles still say so
        if tile_id in shown:
            assert ("+ relevant" if mark else "not relevant") in shown[tile_id]
    assert len(window.map_view.layer_items("marks")) == 2


def test_find_all_shows_a_probability_heatmap_that_the_threshold_slider_filters(qtbot, indexed_window):
    window = indexed_window
    panel = window.feedback_panel
    hits = search_through_ui(qtbot, window)
    for hit in hits[:2]:
        window.model.feedback.mark(hit.tile_id, True)
    assert not panel.find_all_button.isEnabled()               # 3 relevant tiles needed
    window.model.feedback.mark(hits[2].tile_id, True)
    assert panel.find_all_button.isEnabled()
    find_all(qtbot, window)

    layer = next(n for n, s in window.map_view.layers.items() if s.kind == "probability")
    heat = next(n for n, s in window.map_view.layers.items() if s.kind == "heatmap")
    assert not window.map_view.layers[heat].visible                  # one heatmap at a time
    assert window.search_panel.heat_legend.isHidden()                # and its legend with it
    assert panel.detections.count() == len(window.model.feedback.detections) > 0
    assert panel.detections.item(0).text().startswith("p ")
    panel.threshold.setValue(0)
    assert panel.detections.count() == window.model.index.count
    assert np.isfinite(window.map_view.overlay_item(layer).georaster.array).all()
    cut = float(np.median(window.model.feedback.probabilities.values))
    panel.threshold.setValue(int(np.ceil(cut * 100)))
    assert 0 < panel.detections.count() < window.model.index.count
    grid = window.map_view.overlay_item(layer).georaster.array
    assert np.nanmin(grid) >= panel.threshold_value() and np.isnan(grid).any()
    assert f"{panel.detections.count()} tiles" in panel.threshold_label.text()

    with qtbot.waitSignal(window.salienceReady, timeout=SIGNAL_MS):
        panel.detections.itemClicked.emit(panel.detections.item(0))   # a detection is a tile to look at
    assert window.model.selection.selected_tile.tile_id == window.model.feedback.detections[0][0]
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=SIGNAL_MS)


def test_detections_export_from_the_window_with_their_probability(qtbot, indexed_window, tmp_path):
    window = indexed_window
    hits = search_through_ui(qtbot, window)
    for hit in hits[:3]:
        window.model.feedback.mark(hit.tile_id, True)
    find_all(qtbot, window)
    window.feedback_panel.threshold.setValue(0)
    window.feedback_panel.export_detections(str(tmp_path / "found.geojson"))
    features = json.loads((tmp_path / "found.geojson").read_text())["features"]
    assert len(features) == window.model.index.count
    probabilities = [f["properties"]["probability"] for f in features]
    assert probabilities == sorted(probabilities, reverse=True)
    assert {f["properties"]["tile_id"] for f in features} == set(window.model.feedback.probabilities.as_dict())


def test_a_labelled_set_saved_in_the_panel_loads_back_and_exports(qtbot, indexed_window, tmp_path):
    window = indexed_window
    panel = window.feedback_panel
    hits = search_through_ui(qtbot, window)
    window.model.feedback.mark(hits[0].tile_id, True)
    window.model.feedback.mark(hits[1].tile_id, False)
    panel.set_name.setEditText("fields")
    qtbot.mouseClick(panel.save_set_button, Qt.MouseButton.LeftButton)
    assert [panel.set_name.itemText(i) for i in range(panel.set_name.count())] == ["fields"]
    qtbot.mouseClick(panel.clear_button, Qt.MouseButton.LeftButton)
    assert window.model.feedback.marks == {} and window.map_view.layer_items("marks") == []
    qtbot.mouseClick(panel.load_set_button, Qt.MouseButton.LeftButton)
    assert window.model.feedback.marks == {hits[0].tile_id: True, hits[1].tile_id: False}
    assert len(window.map_view.layer_items("marks")) == 2

    window.feedback_panel.export_marks(str(tmp_path / "fields.gpkg"), "fields")
    window.model.feedback.set_marks({})
    window.feedback_panel.import_marks(str(tmp_path / "fields.gpkg"))
    assert window.model.feedback.marks == {hits[0].tile_id: True, hits[1].tile_id: False}


def test_find_all_without_marks_is_a_message_not_a_traceback(qtbot, indexed_window):
    window = indexed_window
    with qtbot.waitSignal(window.errorShown, timeout=SIGNAL_MS) as shown:
        window.find_all()
    assert "at least 3" in shown.args[0]


def test_find_all_shows_its_progress_and_can_be_cancelled(qtbot, indexed_window, monkeypatch):
    # Scoring an archive takes minutes: the status bar shows how far it is, and Cancel stops it
    # with no message and nothing changed.
    import threading
    from ssjdn.core.query import feedback
    from ssjdn.core.errors import Cancelled
    from ssjdn.core.progress import Progress, Stage
    window = indexed_window
    window.show()
    ids = [int(i) for i in window.model.index.tile_ids()]
    window.model.feedback.set_marks({i: True for i in ids[:3]})
    started = threading.Event()

    def slow(index, positives, negatives, progress=None, cancel=None, **kwargs):
        progress(Progress(Stage.SCORING, 5, 20, "Scoring every tile with the classifier"))
        started.set()
        assert cancel.wait(20)
        raise Cancelled()

    monkeypatch.setattr(feedback, "tile_probabilities", slow)
    errors = []
    window.errorShown.connect(errors.append)
    window.find_all()
    qtbot.waitUntil(lambda: window.status.job_progress.isVisible() and window.status.job_progress.value() == 5, timeout=SIGNAL_MS)
    assert window.status.job_cancel.isVisible() and "Scoring" in window.status.job_progress.toolTip()
    qtbot.mouseClick(window.status.job_cancel, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=SIGNAL_MS)
    assert started.is_set() and errors == [] and len(window.model.feedback.probabilities) == 0
    assert not window.status.job_progress.isVisible() and not window.status.job_cancel.isVisible()


def test_the_tile_size_box_follows_the_session_and_reindexes(qtbot, indexed_window):
    window = indexed_window
    with qtbot.waitSignal(window.indexReady, timeout=INDEX_TIMEOUT_MS):
        window.session.set_tile_ground_m(38.4)
    assert window.choice.tile_size.value() == 38.4
    assert window.model.current_index_dir().name != ""
    assert window.model.index.count < 20                       # bigger tiles, fewer of them


def test_the_find_all_panel_follows_its_model_and_drives_it(qtbot):
    from ssjdn.desktop.explorer import ExplorerModel
    from ssjdn.desktop.qt_feedback import QtFeedbackPanel
    model = ExplorerModel()
    panel = QtFeedbackPanel(model)
    qtbot.addWidget(panel)
    model.feedback.set_marks({11: True, 12: False})
    assert panel.summary.text().startswith("1 relevant, 1 not relevant marked")
    assert panel.clear_button.isEnabled() and not panel.find_all_button.isEnabled()
    panel.threshold.setValue(70)
    assert model.feedback.threshold == 0.7 and panel.threshold_label.text() == "p \u2265 0.70: 0 tiles"
    qtbot.mouseClick(panel.clear_button, Qt.MouseButton.LeftButton)
    assert model.feedback.marks == {} and not panel.clear_button.isEnabled()


def test_refined_hits_list_the_new_first_and_the_marked_dimmed_at_the_end(qtbot, indexed_window):
    window = indexed_window
    window.search_panel.k.setValue(5)
    hits = search_through_ui(qtbot, window)
    window.model.feedback.mark(hits[0].tile_id, True)
    window.model.feedback.mark(hits[1].tile_id, True)
    with qtbot.waitSignal(window.searchFinished, timeout=SIGNAL_MS) as refined:
        window.refine()
    refined = refined.args[0]
    marked = [h for h in refined if h.tile_id in window.model.feedback.marks]
    assert [h.tile_id not in window.model.feedback.marks for h in refined] == [True] * 5 + [False] * len(marked)
    results = window.search_panel.results
    dim = results.item(results.count() - 1).foreground().color()
    assert not marked or dim.lightness() != results.item(0).foreground().color().lightness()
    assert f"then the {len(marked)} marked" in window.search_panel.status.text()
    window.model.feedback.mark(refined[0].tile_id, False)      # marked in place: no longer "new first"
    assert f"{len(marked) + 1} of them marked" in window.search_panel.status.text()


def test_a_key_over_the_map_marks_the_tile_under_the_cursor(qtbot, indexed_window):
    window = indexed_window
    window.show()
    qtbot.waitExposed(window)
    hits = search_through_ui(qtbot, window)
    view = window.map_view
    x, y, w, h = view.frame.bounds_to_scene(hits[3].bounds, hits[3].crs)
    point = view.mapFromScene(x + w / 2, y + h / 2)
    qtbot.mouseMove(view.viewport(), point)
    qtbot.waitUntil(lambda: view.hover_xy is not None, timeout=5000)
    view.setFocus()
    qtbot.keyClick(view, Qt.Key.Key_Plus)
    assert window.model.feedback.marks == {hits[3].tile_id: True}
