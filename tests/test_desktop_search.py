"""Searching through the UI: hits on the map and in the list, similar tiles, captions, salience,
export and sessions."""
from __future__ import annotations

import json

import numpy as np
import pytest
from desktop_fixtures import INDEX_TIMEOUT_MS, indexed_window, make_window, small_raster, user_dirs  # noqa: F401
from PySide6.QtCore import QRectF, Qt

from ssjdn.desktop.selection import QUERY_MAP_KEY

SIGNAL_MS = 30_000


def search_through_ui(qtbot, window, query="a river next to a road"):
    window.search_panel.query.setText(query)
    with qtbot.waitSignal(window.searchFinished, timeout=SIGNAL_MS) as blocker:
        qtbot.mouseClick(window.search_panel.search_button, Qt.MouseButton.LeftButton)
    return blocker.args[0]


def test_a_search_through_the_ui_shows_hits_on_the_map_and_in_the_list(qtbot, indexed_window):
    window = indexed_window
    window.search_panel.k.setValue(5)
    hits = search_through_ui(qtbot, window)

    assert len(hits) == 5
    results = window.search_panel.results
    assert results.count() == 5
    assert results.item(0).text().startswith("#1")
    assert not results.item(0).icon().isNull()                       # a thumbnail
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)

    outlines = window.map_view.hit_items
    assert len(outlines) == 5 and all(item.isVisible() for item in outlines)
    raster_area = next(iter(window.map_view.rasters.values())).sceneBoundingRect()
    for hit, outline in zip(hits, outlines):
        rect = outline.rect()
        assert raster_area.adjusted(-1e-6, -1e-6, 1e-6, 1e-6).contains(rect)
        left, bottom, right, top = hit.bounds
        assert rect == QRectF(left, -top, right - left, top - bottom)  # drawn where the tile is
    heat_layers = [n for n, s in window.map_view.layers.items() if s.kind == "heatmap"]
    assert len(heat_layers) == 1
    heat = window.map_view.overlay_item(heat_layers[0])
    legend = window.search_panel.heat_legend
    assert not legend.isHidden() and (legend.vmin, legend.vmax) == (heat.vmin, heat.vmax)
    assert window.session.queries[-1] == "a river next to a road"


def test_clicking_a_hit_zooms_to_it_and_shows_its_salience_and_captions(qtbot, indexed_window):
    window = indexed_window
    hits = search_through_ui(qtbot, window)
    first = window.search_panel.results.item(0)
    with qtbot.waitSignal(window.salienceReady, timeout=SIGNAL_MS), \
            qtbot.waitSignal(window.captionsRanked, timeout=SIGNAL_MS) as ranked:
        window.search_panel.results.itemClicked.emit(first)

    assert window.model.selection.selected_tile.tile_id == hits[0].tile_id
    visible = window.map_view.mapToScene(window.map_view.viewport().rect()).boundingRect()
    assert visible.contains(window.map_view.layer_items("selection")[0].rect().center())
    # SEM x 6, SSM x 4 (2 are constant by construction), and where the query's words match.
    assert len(window.model.selection.salience) == 11
    query_map = window.model.selection.salience[QUERY_MAP_KEY]
    assert window.map_view.overlay_item("salience").georaster is query_map   # shown by default
    legend, line = window.salience_panel.legend, window.salience_panel.legend_line.text()
    assert window.model.results.words in line and "\n" not in line
    assert (legend.vmin, legend.vmax) == pytest.approx((np.nanmin(query_map.array), np.nanmax(query_map.array)))
    window.salience_panel.kind.setCurrentIndex(window.salience_panel.kind.findData("sem"))
    window.salience_panel.scale.setCurrentIndex(2)        # the coarsest SEM map replaces the overlay
    assert window.map_view.overlay_item("salience").georaster is window.model.selection.salience[("sem", "coarse_to_fine", 2)]
    captions = window.caption_panel.caption_list()
    assert sorted(c for c, _ in ranked.args[0]) == sorted(captions)
    assert window.caption_panel.table.rowCount() == len(captions)


def test_a_typed_caption_is_scored_for_the_selected_tile(qtbot, indexed_window):
    window = indexed_window
    tile_id = window.model.tile_at(500_010.0, 5_699_990.0)
    with qtbot.waitSignal(window.salienceReady, timeout=SIGNAL_MS):
        window.select_tile(tile_id)
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=SIGNAL_MS)
    window.caption_panel.single.setText("a lonely tree in a field")
    with qtbot.waitSignal(window.captionsRanked, timeout=SIGNAL_MS) as ranked:
        qtbot.keyClick(window.caption_panel.single, Qt.Key.Key_Return)
    assert "a lonely tree in a field" in [c for c, _ in ranked.args[0]]
    bold_rows = [r for r in range(window.caption_panel.table.rowCount())
                 if window.caption_panel.table.item(r, 1).font().bold()]
    assert [window.caption_panel.table.item(r, 1).text() for r in bold_rows] == ["a lonely tree in a field"]


def test_clicking_the_map_selects_the_tile_under_the_cursor(qtbot, indexed_window):
    window = indexed_window
    tile_id = window.model.tile_at(500_001.0, 5_699_999.0)       # top-left corner of the raster
    record = window.model.index.tile(tile_id)
    assert (int(record.window.col_off), int(record.window.row_off)) == (0, 0)
    with qtbot.waitSignal(window.salienceReady, timeout=SIGNAL_MS):
        window.map_view.mapClicked.emit(500_001.0, 5_699_999.0)
    assert window.model.selection.selected_tile.tile_id == tile_id
    assert window.model.tile_at(400_000.0, 5_699_999.0) is None  # off the raster: no tile


def test_similar_tiles_leave_out_the_tile_itself(qtbot, indexed_window):
    window = indexed_window
    tile_id = window.model.tile_at(500_001.0, 5_699_999.0)
    with qtbot.waitSignal(window.searchFinished, timeout=SIGNAL_MS) as blocker:
        window.search_similar(tile_id)
    hits = blocker.args[0]
    assert hits and tile_id not in [h.tile_id for h in hits]
    assert window.search_panel.results.count() == len(hits)


def test_hits_and_heatmap_export_and_the_session_round_trips(qtbot, indexed_window, make_window, tmp_path):
    window = indexed_window
    hits = search_through_ui(qtbot, window, "farmland")
    window.dialogs.export_hits(str(tmp_path / "hits.geojson"))
    features = json.loads((tmp_path / "hits.geojson").read_text())["features"]
    assert len(features) == len(hits)
    window.dialogs.export_heatmap(str(tmp_path / "heat.tif"))
    import rasterio
    with rasterio.open(tmp_path / "heat.tif") as heat:
        assert heat.crs.to_epsg() == 32631 and heat.count == 1

    raster_layer = next(n for n, s in window.map_view.layers.items() if s.kind == "raster")
    window.model.layers.set_opacity(raster_layer, 0.3)
    window.model.layers.set_visible("tiles", True)
    window.dialogs.save_session(str(tmp_path / "session.json"))

    restored = make_window()
    with qtbot.waitSignal(restored.modelReady, timeout=INDEX_TIMEOUT_MS):
        restored.load_model()
    with qtbot.waitSignal(restored.searchFinished, timeout=INDEX_TIMEOUT_MS) as rerun:
        restored.dialogs.restore_session(str(tmp_path / "session.json"))
    assert restored.session.rasters == window.session.rasters
    assert restored.session.queries == ["farmland"]
    assert restored.search_panel.query.text() == "farmland"
    assert abs(restored.map_view.layers[raster_layer].opacity - 0.3) < 1e-6
    # Layers that exist only once the index is ready (the tile grid) come back as saved too.
    assert restored.map_view.layers["tiles"].visible and len(restored.map_view.layer_items("tiles")) == 1
    assert restored.model.index.count == window.model.index.count      # the same cached index, reused
    assert [h.tile_id for h in rerun.args[0]] == [h.tile_id for h in hits]   # the last query ran again
    saved = json.loads((tmp_path / "session.json").read_text())
    assert saved["index"] == str(window.model.current_index_dir())


def test_a_closed_raster_leaves_the_map_and_its_tiles_leave_the_results(qtbot, indexed_window, tmp_path):
    from engine_fixtures import scene, write_raster
    window = indexed_window
    second = write_raster(tmp_path / "second.tif", scene(128, 128, seed=7), origin=(500_200.0, 5_700_000.0))
    with qtbot.waitSignal(window.indexReady, timeout=INDEX_TIMEOUT_MS):
        window.open_rasters([second])
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=INDEX_TIMEOUT_MS)
    first = window.session.rasters[0]
    window.layer_panel.closeRasterRequested.emit(first)
    assert first not in window.map_view.rasters and window.session.rasters == [second]
    hits = search_through_ui(qtbot, window, "houses")
    assert hits and {h.raster_path for h in hits} == {second}   # the closed raster's tiles stay out
    assert window.model.index.raster(first) is not None               # but stay cached for later


def test_dropping_files_on_the_map_opens_them(qtbot, make_window, small_raster):
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent
    window = make_window(auto_index=False)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(small_raster)])
    drop = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                      Qt.KeyboardModifier.NoModifier)
    window.map_view.dropEvent(drop)
    assert list(window.map_view.rasters) == [small_raster]
    assert window.prefs.recent_files[0] == small_raster
    assert [a.text() for a in window.recent_menu.actions()] == [small_raster]


def test_captions_loaded_from_a_file_are_ranked_for_the_selected_tile(qtbot, indexed_window, tmp_path):
    window = indexed_window
    with qtbot.waitSignal(window.salienceReady, timeout=SIGNAL_MS):
        window.select_tile(window.model.tile_at(500_010.0, 5_699_990.0))
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=SIGNAL_MS)
    captions = tmp_path / "captions.txt"
    captions.write_text("many cars in a parking lot\n\nan orange roof\n", encoding="utf-8")
    window.caption_panel.load_file(str(captions))
    with qtbot.waitSignal(window.captionsRanked, timeout=SIGNAL_MS) as ranked:
        qtbot.mouseClick(window.caption_panel.rank_button, Qt.MouseButton.LeftButton)
    assert sorted(c for c, _ in ranked.args[0]) == ["an orange roof", "many cars in a parking lot"]
    assert window.caption_panel.table.rowCount() == 2


def test_a_search_with_its_heatmap_encodes_the_query_once(qtbot, indexed_window, monkeypatch):
    # The hits and the heatmap share one query vector (the text was encoded twice before).
    from ssjdn.core.model import fast_text
    from ssjdn.core.query import search as search_module
    calls = []
    encode = fast_text.encode_query

    def counted(*args, **kwargs):
        calls.append(args[1])
        return encode(*args, **kwargs)

    for module in (fast_text, search_module):   # every name the query can be encoded through
        monkeypatch.setattr(module, "encode_query", counted)
    hits = search_through_ui(qtbot, indexed_window)
    assert hits and len(calls) == 1
    assert [n for n, s in indexed_window.map_view.layers.items() if s.kind == "heatmap"]
