"""The main window: the map in the middle, panels in docks, and the job runner.

The window shows an `ExplorerModel` (desktop/explorer.py, no Qt): each panel and the map are
bound to the model's components (qt_search, qt_salience, qt_overlays, qt_layers, qt_status,
qt_toolbar…), the menus are built in qt_menus and what they open is in qt_actions. What is left
here is running the model's jobs: it turns the user's actions and the model's requests
(load_requested, index_requested, search_requested) into Jobs for two QtJobQueues (engine jobs
one at a time, in order, since the model and the index are shared; an index build beside them)
and hands results back to the model, whose events update the views. Every failure ends in a
message box, never a traceback on the terminal.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QDockWidget, QMainWindow, QMessageBox

from ssjdn.desktop.explorer import ExplorerModel
from ssjdn.desktop.qt_actions import QtWindowActions
from ssjdn.desktop.qt_captions import QtCaptionPanel
from ssjdn.desktop.qt_feedback import QtFeedbackPanel
from ssjdn.desktop.qt_layers import QtLayerPanel
from ssjdn.desktop.qt_map import QtMapView
from ssjdn.desktop.qt_menus import build_menus_and_toolbar, show_tile_menu
from ssjdn.desktop.qt_overlays import QtMapOverlays
from ssjdn.desktop.qt_salience import QtSaliencePanel, QtSelectionBinding
from ssjdn.desktop.qt_search import QtSearchBinding, QtSearchPanel
from ssjdn.desktop.qt_status import QtStatusBar
from ssjdn.desktop.qt_table import QtAttributeTable
from ssjdn.desktop.qt_toolbar import QtModelChoice
from ssjdn.desktop.qt_workers import Job, QtJobQueue, describe_error
from ssjdn.desktop.resources import APP_TITLE
from ssjdn.desktop.settings import Preferences
from ssjdn.desktop.state import Session

class QtMainWindow(QMainWindow):
    # Signals the app and the tests wait on.
    modelReady = Signal(str)         # label of the loaded model
    indexReady = Signal(object)      # IndexStats of the finished (or cancelled) build
    indexingStarted = Signal()
    searchFinished = Signal(list)    # hits (of a search, a similar-tiles search or a refinement)
    salienceReady = Signal(object)   # tile id (64-bit: raster id << 32 | tile index)
    captionsRanked = Signal(list)    # [(caption, score)]
    findAllFinished = Signal(int)    # number of tiles scored
    errorShown = Signal(str)         # the message a box shows
    idle = Signal()                  # nothing running or queued
    stacOpened = Signal(int)         # number of STAC assets read from a catalog

    def __init__(self, session: Session | None = None, preferences: Preferences | None = None,
                 auto_index: bool = True) -> None:
        super().__init__()
        self.model = ExplorerModel(session, auto_index=auto_index)
        self.session = self.model.session
        self.prefs = preferences or Preferences()
        # Engine jobs (search, salience, find-all…) run one at a time, in order; an index build
        # runs beside them in its own queue.
        self.jobs = QtJobQueue(self)
        self.index_jobs = QtJobQueue(self)
        self.setWindowTitle(APP_TITLE)
        self.resize(1400, 860)
        self._build_views()
        build_menus_and_toolbar(self)
        self._build_status_bar()
        self._connect()
        self._listen()

    # == construction ==========================================================================
    def _build_views(self) -> None:
        self.map_view = QtMapView(self.model.layers)
        self.setCentralWidget(self.map_view)
        self.overlays = QtMapOverlays(self.model, self.map_view)
        self.layer_panel = QtLayerPanel(self.model.layers, self.map_view)
        self.search_panel = QtSearchPanel()
        self.search_binding = QtSearchBinding(self.search_panel, self.model, self.overlays)
        self.caption_panel = QtCaptionPanel(self.session)
        self.salience_panel = QtSaliencePanel()
        self.selection_binding = QtSelectionBinding(self.salience_panel, self.caption_panel, self.model, self.overlays)
        self.feedback_panel = QtFeedbackPanel(self.model)
        self.attribute_table = QtAttributeTable(self.model)
        self.docks = {}
        for key, title, widget, area in (
                ("layers", "Layers", self.layer_panel, Qt.DockWidgetArea.LeftDockWidgetArea),
                ("search", "Search", self.search_panel, Qt.DockWidgetArea.RightDockWidgetArea),
                ("salience", "SEM / SSM salience", self.salience_panel, Qt.DockWidgetArea.LeftDockWidgetArea),
                ("findall", "Find all (by example)", self.feedback_panel, Qt.DockWidgetArea.LeftDockWidgetArea),
                ("captions", "Caption matching", self.caption_panel, Qt.DockWidgetArea.RightDockWidgetArea),
                ("table", "Attribute table", self.attribute_table, Qt.DockWidgetArea.BottomDockWidgetArea)):
            dock = QDockWidget(title, self)
            dock.setObjectName(f"dock-{key}")
            dock.setWidget(widget)
            self.addDockWidget(area, dock)
            self.docks[key] = dock
        # The side docks run the full height; the attribute table sits under the map only.
        self.setCorner(Qt.Corner.BottomLeftCorner, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        self.splitDockWidget(self.docks["search"], self.docks["captions"], Qt.Orientation.Vertical)
        self.resizeDocks([self.docks["search"], self.docks["captions"]], [420, 440], Qt.Orientation.Vertical)
        self.tabifyDockWidget(self.docks["salience"], self.docks["findall"])
        self.docks["salience"].raise_()
        self.resizeDocks([self.docks["table"]], [190], Qt.Orientation.Vertical)
        # The docks together take under half the window, so the map keeps the larger part.
        self.resizeDocks([self.docks["layers"], self.docks["search"]], [280, 360], Qt.Orientation.Horizontal)
        self.choice = QtModelChoice(self.session, self.prefs)   # the toolbar's model, device, tile
        self.dialogs = QtWindowActions(self)   # what the menus open: files, sessions, exports…


    def _build_status_bar(self) -> None:
        self.status = QtStatusBar(self.model, self.jobs, self.index_jobs)
        self.setStatusBar(self.status)

    def _connect(self) -> None:
        """The user's actions in the views, forwarded."""
        self.map_view.cursorMoved.connect(lambda x, y: self.status.show_cursor(self.map_view.frame, x, y))
        self.map_view.measured.connect(lambda text: self.statusBar().showMessage(text))
        self.map_view.backgroundStatus.connect(lambda text: self.statusBar().showMessage(text, 15000))
        self.map_view.filesDropped.connect(self.open_rasters)
        self.map_view.mapClicked.connect(self._on_map_clicked)
        self.map_view.tileMenuRequested.connect(lambda x, y, pos: show_tile_menu(self, x, y, pos))
        self.search_panel.searchRequested.connect(self.search)
        self.search_panel.hitActivated.connect(self.activate_hit)
        self.search_panel.similarRequested.connect(self.search_similar)
        self.search_panel.refineRequested.connect(self.refine)
        self.caption_panel.rankRequested.connect(self.rank_captions)
        self.layer_panel.closeRasterRequested.connect(self.model.close_raster)
        self.feedback_panel.findAllRequested.connect(self.find_all)
        self.feedback_panel.detectionActivated.connect(self.activate_hit)
        self.feedback_panel.failed.connect(self.show_error)
        self.attribute_table.tileChosen.connect(self.show_tile)
        self.attribute_table.tileActivated.connect(self.activate_hit)
        self.attribute_table.failed.connect(self.show_error)
        self.attribute_table.succeeded.connect(lambda message: self.statusBar().showMessage(message, 8000))
        self.feedback_panel.succeeded.connect(lambda message: self.statusBar().showMessage(message, 8000))

    def _listen(self) -> None:
        """The model's and the session's changes, and the jobs' progress, shown."""
        for queue in (self.jobs, self.index_jobs):
            queue.failed.connect(self.show_error)
        self.jobs.idle.connect(self._maybe_idle)
        self.index_jobs.started.connect(self._on_indexing_started)
        self.index_jobs.idle.connect(self._on_indexing_ended)
        events = self.model.events
        events.connect("load_requested", self.load_model)
        events.connect("index_requested", self._on_index_requested)
        events.connect("search_requested", lambda query: self.search(query, self.search_panel.k.value()))
        events.connect("raster_opened", self._on_raster_opened)
        events.connect("model_loading", self._on_model_loading)
        events.connect("model_failed", self._on_model_failed)
        events.connect("model", self._on_model_loaded)
        self.model.results.events.connect("results", lambda hits, **_: self.searchFinished.emit(hits))
        self.model.selection.events.connect("salience", lambda tile_id, maps: self.salienceReady.emit(tile_id))

    # == the model ==============================================================================
    def load_model(self) -> None:
        """Load the session's model off the GUI thread, then index the open rasters with it."""
        self.cancel_indexing()
        spec = self.session.model_spec
        self.jobs.submit(Job("Loading model", self.model.load_job(), self.model.apply_loaded,
                             on_error=lambda: self.model.load_failed(spec)))

    def _on_model_loading(self, spec: str) -> None:
        self.search_panel.set_ready(False, "Loading the model…")

    def _on_model_failed(self, spec: str) -> None:
        self.search_panel.set_ready(False, "The model could not be loaded: choose another one.")

    def _on_model_loaded(self, loaded) -> None:
        self.modelReady.emit(loaded.label)
        self._update_search_ready()   # the model may start a build next (ExplorerModel's policy)

    # == rasters ===============================================================================
    def open_rasters(self, paths: list[str]) -> bool:
        """Show rasters on the map (errors as messages); the model indexes the new ones."""
        opened, failed = self.model.open_rasters(paths)
        for exc in failed:
            self.show_error("Cannot open raster", *describe_error(exc))
        for info in opened:
            self.prefs.add_recent(info.path)
        if opened:
            self.refresh_recent_menu()
            self.map_view.fit_all()
            self.status.show_crs(self.map_view.frame, self.model.rasters.values())
        return bool(opened)

    def _on_raster_opened(self, info, note) -> None:
        if note:
            self.statusBar().showMessage(note, 15000)
        if self.prefs.background_url and self.map_view.background_url is None and info.crs is not None:
            self.dialogs.show_background(self.prefs.background_url)   # the one the user set last time

    def refresh_recent_menu(self) -> None:
        self.recent_menu.clear()
        for path in self.prefs.recent_files:
            self.recent_menu.addAction(path, lambda p=path: self.open_rasters([p]))
        self.recent_menu.setEnabled(bool(self.prefs.recent_files))

    # == indexing ==============================================================================
    def _on_index_requested(self, stale: bool) -> None:
        if stale:
            self.cancel_indexing()
        self.start_indexing()

    def start_indexing(self) -> None:
        """Build the index of the open rasters, or resume it: finished work is never redone.
        Asked for while a build runs (or cancels), it starts once that one has ended."""
        self.index_jobs.submit_once(self._index_job)

    def _index_job(self) -> Job | None:
        if not self.model.can_index():
            return None
        work, token = self.model.index_job()
        done = lambda stats: self._on_index_done(stats, token)  # noqa: E731 - a cancelled build is kept too
        return Job("Indexing", work, done, on_cancelled=done, reports_progress=True)

    def _on_indexing_started(self, _job) -> None:
        self.index_action.setEnabled(False)
        self.cancel_action.setEnabled(True)
        self.search_panel.set_ready(False, "Indexing the open rasters… (search is available when it ends)")
        self.indexingStarted.emit()

    def cancel_indexing(self) -> None:
        self.index_jobs.cancel()

    def _on_index_done(self, stats, token) -> None:
        try:
            if not self.model.apply_index(stats, token):
                return   # a build for a model or tile size the user has since left
        except Exception as exc:  # noqa: BLE001
            self.show_error("Cannot open the index", *describe_error(exc))
            return
        for warning in getattr(stats, "warnings", []):
            self.statusBar().showMessage(warning, 10000)
        self.indexReady.emit(stats)

    def _on_indexing_ended(self) -> None:
        self.index_action.setEnabled(True)
        self.cancel_action.setEnabled(False)
        self._update_search_ready()
        self.model.indexing_ended()
        self._maybe_idle()

    def _update_search_ready(self) -> None:
        self.search_panel.set_ready(*self.model.ready_text())
        self.overlays.draw_marks()
        self.search_binding.show_marks()

    # == engine jobs: one at a time, in order ==================================================
    def run_job(self, function, on_result, label: str, with_progress: bool = False) -> None:
        """Queue `function()` (or, with_progress, `function(progress=, cancel=)`, shown with a
        bar and a Cancel; a cancelled job's result is dropped)."""
        self.jobs.submit(Job(label, function, on_result, reports_progress=with_progress))

    def _guarded_job(self, title: str, make_job, on_result, label: str, with_progress: bool = False) -> None:
        """Make a job from the model (a UserError there, e.g. no index, is a message) and run it."""
        try:
            job = make_job()
        except Exception as exc:  # noqa: BLE001
            self.show_error(title, *describe_error(exc))
            return
        if job is not None:
            self.run_job(job, on_result, label, with_progress=with_progress)

    def _maybe_idle(self) -> None:
        if not self.is_busy():
            self.idle.emit()

    def is_busy(self) -> bool:
        return self.jobs.is_busy() or self.index_jobs.is_busy()

    # == search ================================================================================
    def search(self, query: str, k: int = 20) -> None:
        with_heatmap = self.search_panel.heatmap.isChecked()
        self._guarded_job("Search", lambda: self.model.results.search_job(query, k, with_heatmap),
                          self.model.results.show, "Searching")
        self.search_panel.set_history(self.session.queries)

    def search_similar(self, tile) -> None:
        tile_id = tile if isinstance(tile, int) else tile.tile_id
        self.search_panel.query.setText("")
        self._guarded_job("Similar tiles", lambda: self.model.results.similar_job(tile_id, self.search_panel.k.value()),
                          self.model.results.show, "Finding similar tiles")

    def refine(self) -> None:
        """Search again with the words and the marks; the marks stay."""
        with_heatmap = self.search_panel.heatmap.isChecked()
        self._guarded_job("Refine", lambda: self.model.feedback.refine_job(self.search_panel.k.value(), with_heatmap),
                          self.model.results.show, "Refining the search")

    def show_tile(self, hit) -> None:
        """Select a tile and bring it into view at the present scale (a row of the table)."""
        self.map_view.pan_to_bounds(hit.bounds, hit.crs)
        self.select_tile(hit.tile_id)

    def activate_hit(self, hit) -> None:
        self.map_view.zoom_to_bounds(hit.bounds, hit.crs)
        self.select_tile(hit.tile_id)

    # == relevance feedback and find all =======================================================
    def find_all(self) -> None:
        """Train the classifier on the marks (off the GUI thread) and score every tile."""
        def done(result):
            self.model.feedback.apply_find_all(result)
            self.docks["findall"].show()
            self.docks["findall"].raise_()
            self.findAllFinished.emit(len(self.model.feedback.probabilities))

        self._guarded_job("Find all", self.model.feedback.find_all_job, done, "Training a classifier on the marks",
                          with_progress=True)

    # == selected tile: salience and captions ==================================================
    def _on_map_clicked(self, x: float, y: float) -> None:
        tile_id = self.model.tile_at(x, y)
        if tile_id is not None:
            self.select_tile(tile_id)

    def select_tile(self, tile_id: int) -> None:
        job = self.model.selection.select(tile_id)
        if job is not None:
            self.run_job(job, self.model.selection.apply_salience, "Computing SEM/SSM maps")
            if self.caption_panel.caption_list():
                self.rank_captions(self.caption_panel.caption_list())

    def rank_captions(self, captions: list[str]) -> None:
        job = self.model.selection.captions_job(captions)
        if job is None:
            return
        highlight = self.caption_panel.single.text().strip() or None

        def show(result):
            ranked, unread_note = result
            self.caption_panel.show_ranking(ranked, highlight, unread_note)
            self.captionsRanked.emit(ranked)

        self.run_job(job, show, "Ranking captions")

    # == status and messages ===================================================================
    def show_error(self, title: str, message: str, details: str = "") -> QMessageBox:
        """A non-blocking message box: work already running goes on behind it."""
        box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, self)
        if details:
            box.setDetailedText(details)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()
        self.errorShown.emit(message)
        return box

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        for queue in (self.index_jobs, self.jobs):
            queue.stop()   # no queued job starts a thread on a closing window, none outlives it
        if self.dialogs.training_dialog is not None:
            self.dialogs.training_dialog.stop_training()
        super().closeEvent(event)
