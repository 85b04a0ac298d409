"""The attribute table dock: hits, detections and marks with their coordinates; sorting; the
table and the map select together; copy coordinates; export what is selected."""
from __future__ import annotations

import json

from desktop_fixtures import INDEX_TIMEOUT_MS, indexed_window, make_window, small_raster, user_dirs  # noqa: F401
from PySide6.QtCore import QItemSelectionModel, Qt
from PySide6.QtWidgets import QApplication

SIGNAL_MS = 30_000


def searched(qtbot, window, k=6):
    with qtbot.waitSignal(window.searchFinished, timeout=SIGNAL_MS):
        window.search("a river next to a road", k)
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=SIGNAL_MS)
    return window.model.results.hits


def column(table, name):
    return table.COLUMNS.index(name)


def test_the_table_lists_hits_and_marks_and_sorts_by_any_column(qtbot, indexed_window):
    window = indexed_window
    table = window.attribute_table
    hits = searched(qtbot, window)
    window.model.feedback.mark(hits[2].tile_id, True)
    view = table.view
    assert view.model().rowCount() == 6 + 1
    assert table.cell(0, "Kind") == "hit" and table.cell(0, "Rank") == "1"
    assert table.cell(2, "Label") == "relevant" and table.cell(6, "Kind") == "mark"
    assert "°" not in table.cell(0, "Lat") and -90 <= float(table.cell(0, "Lat")) <= 90
    assert "Likelihood" in table.COLUMNS
    # The tile's number inside its raster is labelled so it does not read as a rank; its
    # tooltip gives the full id that ssjdn commands and exported files use.
    tile_column = column(table, "Tile no.")
    rows = table.view.model()
    assert "number" in rows.headerData(tile_column, Qt.Orientation.Horizontal, Qt.ItemDataRole.ToolTipRole)
    assert str(hits[0].tile_id) in rows.index(0, tile_column).data(Qt.ItemDataRole.ToolTipRole)

    view.sortByColumn(column(table, "Score"), Qt.SortOrder.AscendingOrder)
    scores = [table.cell(r, "Score") for r in range(6)]
    assert scores == [f"{s:.3f}" for s in sorted(h.score for h in hits)]
    view.sortByColumn(column(table, "Rank"), Qt.SortOrder.AscendingOrder)
    assert [table.cell(r, "Rank") for r in range(6)] == ["1", "2", "3", "4", "5", "6"]


def test_selecting_a_row_selects_and_shows_the_tile_and_the_map_selects_the_row(qtbot, indexed_window):
    window = indexed_window
    table = window.attribute_table
    hits = searched(qtbot, window)
    with qtbot.waitSignal(window.salienceReady, timeout=SIGNAL_MS):
        table.view.selectRow(3)
    assert window.model.selection.selected_tile.tile_id == hits[3].tile_id
    view = window.map_view
    visible = view.mapToScene(view.viewport().rect()).boundingRect()
    assert visible.contains(view.layer_items("selection")[0].rect().center())

    with qtbot.waitSignal(window.salienceReady, timeout=SIGNAL_MS):
        window.select_tile(hits[5].tile_id)            # e.g. a click on the map
    assert table.selected_tile_ids() == [hits[5].tile_id]
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=SIGNAL_MS)


def test_copy_coordinates_and_export_the_selected_rows(qtbot, indexed_window, tmp_path):
    from ssjdn.core.geo.tiling import tile_centres_wgs84
    window = indexed_window
    table = window.attribute_table
    hits = searched(qtbot, window)
    selection = table.view.selectionModel()
    for row in (1, 4):
        index = table.view.model().index(row, 0)
        selection.select(index, QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows)
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=SIGNAL_MS)
    table.copy_coordinates()
    lines = QApplication.clipboard().text().splitlines()
    centres = tile_centres_wgs84([hits[1], hits[4]])
    assert lines == [f"{lat:.6f}, {lon:.6f}" for lon, lat in centres]

    path = tmp_path / "selected.geojson"
    table.export_selected(str(path))
    features = json.loads(path.read_text())["features"]
    assert [f["properties"]["tile_id"] for f in features] == [hits[1].tile_id, hits[4].tile_id]
    assert all("lat" in f["properties"] and "lon" in f["properties"] for f in features)


def test_the_hit_list_names_each_place_by_raster_and_coordinates_and_it_fits(qtbot, indexed_window):
    window = indexed_window
    window.resize(1400, 860)
    window.show()
    qtbot.waitExposed(window)
    searched(qtbot, window)
    results = window.search_panel.results
    text = results.item(0).text()
    assert "px " not in text and "°N" in text and "°E" in text and "small" in text
    room = results.viewport().width() - results.iconSize().width() - 12
    assert max(results.fontMetrics().horizontalAdvance(line) for line in text.splitlines()) <= room
