"""The main window's menu bar, toolbar and the map's tile menu. Each entry calls the window (which runs the model's
jobs), its `dialogs` (what a menu opens) or a view; the actions the window enables and disables
while a build runs (`index_action`, `cancel_action`) are kept on it."""
from __future__ import annotations

from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QLabel, QMenu, QToolBar

from ssjdn.desktop.marks import NOT_RELEVANT, RELEVANT


def build_menus_and_toolbar(window) -> None:
    bar, dialogs = window.menuBar(), window.dialogs
    file_menu = bar.addMenu("&File")
    window.open_action = file_menu.addAction("&Open raster…", QKeySequence.StandardKey.Open, dialogs.open_raster_dialog)
    window.recent_menu = file_menu.addMenu("Open &recent")
    file_menu.addAction("Open &sample scene", dialogs.open_sample)
    file_menu.addAction("Open STAC catalog…", dialogs.open_stac_dialog)
    file_menu.addSeparator()
    file_menu.addAction("Open session…", dialogs.open_session_dialog)
    file_menu.addAction("&Save session…", QKeySequence.StandardKey.Save, dialogs.save_session_dialog)
    file_menu.addSeparator()
    window.export_hits_action = file_menu.addAction("Export hits (GeoJSON / GeoPackage)…", dialogs.export_hits_dialog)
    window.export_heatmap_action = file_menu.addAction("Export heatmap (GeoTIFF)…", dialogs.export_heatmap_dialog)
    file_menu.addAction("Export detections (GeoJSON / GeoPackage)…", window.feedback_panel.export_detections_dialog)
    file_menu.addSeparator()
    file_menu.addAction("&Quit", QKeySequence.StandardKey.Quit, window.close)

    model_menu = bar.addMenu("&Model")
    model_menu.addAction("Add checkpoint file…", dialogs.add_checkpoint_dialog)
    index_menu = bar.addMenu("&Index")
    window.index_action = index_menu.addAction("Build / resume index", window.start_indexing)
    window.cancel_action = index_menu.addAction("Cancel indexing", window.cancel_indexing)
    index_menu.addAction("Indexing settings…", dialogs.open_indexing_dialog)
    window.cancel_action.setEnabled(False)
    mark_menu = bar.addMenu("M&ark")
    # Single keys: a line edit with focus takes them as text first (Qt's shortcut override).
    mark_menu.addAction("Mark relevant", QKeySequence("+"), lambda: mark_current(window, RELEVANT))
    mark_menu.addAction("Mark not relevant", QKeySequence("-"), lambda: mark_current(window, NOT_RELEVANT))
    mark_menu.addAction("Clear mark", QKeySequence("0"), lambda: mark_current(window, None))
    mark_menu.addSeparator()
    mark_menu.addAction("Refine search", QKeySequence("Ctrl+R"), window.refine)
    mark_menu.addAction("Find all", QKeySequence("Ctrl+Shift+F"), window.find_all)
    mark_menu.addAction("Clear all marks", lambda: window.model.feedback.set_marks({}))
    tools_menu = bar.addMenu("&Tools")
    tools_menu.addAction("&Train model…", dialogs.open_training_dialog)
    view_menu = bar.addMenu("&View")
    view_menu.addAction("Zoom to all rasters", window.map_view.fit_all)
    view_menu.addAction("Search…", QKeySequence.StandardKey.Find, dialogs.focus_search)
    view_menu.addSeparator()
    window.measure_action = view_menu.addAction("Measure distance / area", QKeySequence("M"))
    window.measure_action.setCheckable(True)
    window.measure_action.setToolTip("Click points on the map: length and area on the ellipsoid. "
                                   "Double-click ends a line, Esc clears (M)")
    window.measure_action.toggled.connect(window.map_view.set_measuring)
    view_menu.addAction("Background map (XYZ / WMTS URL)…", dialogs.background_dialog)
    view_menu.addSeparator()
    for dock in window.docks.values():
        view_menu.addAction(dock.toggleViewAction())
    help_menu = bar.addMenu("&Help")
    help_menu.addAction("About", dialogs.show_about)

    toolbar = QToolBar("Main")
    toolbar.setObjectName("toolbar-main")
    window.addToolBar(toolbar)
    toolbar.addAction(window.open_action)
    toolbar.addSeparator()
    toolbar.addWidget(QLabel(" Model "))
    toolbar.addWidget(window.choice.model_combo)
    toolbar.addWidget(QLabel(" Device "))
    toolbar.addWidget(window.choice.device_combo)
    toolbar.addWidget(QLabel(" Tile "))
    toolbar.addWidget(window.choice.tile_size)
    toolbar.addAction(window.index_action)
    toolbar.addSeparator()
    toolbar.addAction(window.measure_action)
    window.refresh_recent_menu()


def mark_current(window, label) -> None:
    """Mark the hit current in the list (when the list has focus), else the tile under the
    cursor on the map (one key marks straight from the map), else the selected tile."""
    tile_id = window.search_panel.current_tile_id() if window.search_panel.results.hasFocus() else None
    if tile_id is None and window.map_view.hover_xy is not None:
        tile_id = window.model.tile_at(*window.map_view.hover_xy)
    if tile_id is None and window.model.selection.selected_tile is not None:
        tile_id = window.model.selection.selected_tile.tile_id
    if tile_id is None:
        window.statusBar().showMessage("Select a tile first: click a hit or a tile on the map.", 8000)
        return
    window.model.feedback.mark(tile_id, label)


def show_tile_menu(window, x: float, y: float, global_pos) -> None:
    """The map's context menu at a map point: what can be done with the tile there."""
    tile_id = window.model.tile_at(x, y)
    menu = QMenu(window)
    if tile_id is None:
        menu.addAction("No indexed tile here").setEnabled(False)
    else:
        menu.addAction("Find similar tiles", lambda: window.search_similar(tile_id))
        menu.addAction("Select tile (SEM/SSM, captions)", lambda: window.select_tile(tile_id))
        menu.addSeparator()
        menu.addAction("Mark relevant (+)", lambda: window.model.feedback.mark(tile_id, RELEVANT))
        menu.addAction("Mark not relevant (-)", lambda: window.model.feedback.mark(tile_id, NOT_RELEVANT))
        if tile_id in window.model.feedback.marks:
            menu.addAction("Clear mark (0)", lambda: window.model.feedback.mark(tile_id, None))
    menu.addSeparator()
    menu.addAction("Zoom to all rasters", window.map_view.fit_all)
    menu.popup(global_pos)
