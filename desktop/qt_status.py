"""The status bar: the cursor's place, the map CRS, the model and device, and the progress bars
with their Cancel buttons of the two job queues (an index build, and an engine job that
reports progress such as find-all, may run side by side).

It only shows: it follows the model's load events, the map's cursor and the job queues'
signals; its Cancel buttons ask the queues to stop.
"""
from __future__ import annotations

from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton, QStatusBar

from ssjdn.core.progress import Progress, Stage
from ssjdn.desktop import models as model_choices
from ssjdn.desktop.geo import MapFrame, format_lonlat
from ssjdn.desktop.qt_workers import QtJobQueue


class QtStatusBar(QStatusBar):
    def __init__(self, model, jobs: QtJobQueue, index_jobs: QtJobQueue, parent=None) -> None:
        super().__init__(parent)
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
        self.cancel_button.clicked.connect(lambda: index_jobs.cancel())
        # Jobs that report progress (find-all scoring every tile) get their own bar and Cancel:
        # indexing may run beside them.
        self.job_progress = QProgressBar()
        self.job_progress.setMaximumWidth(240)
        self.job_progress.setTextVisible(True)
        self.job_progress.hide()
        self.job_cancel = QPushButton("Cancel")
        self.job_cancel.setToolTip("Stop this job; what is on screen stays as it was")
        self.job_cancel.hide()
        self.job_cancel.clicked.connect(lambda: jobs.cancel())
        self.addWidget(self.cursor_label, 1)
        for widget in (self.crs_label, self.model_label, self.device_label, self.progress,
                       self.cancel_button, self.job_progress, self.job_cancel):
            self.addPermanentWidget(widget)
        jobs.started.connect(lambda job: self.showMessage(f"{job.label}…"))
        jobs.progressed.connect(self.show_job_progress)
        jobs.cancelling.connect(lambda: self.job_progress.setFormat("Cancelling…"))
        jobs.ended.connect(lambda _job: self._job_ended())
        index_jobs.started.connect(lambda _job: self._indexing_started())
        index_jobs.progressed.connect(self.show_index_progress)
        index_jobs.cancelling.connect(lambda: self.progress.setFormat("Cancelling…"))
        index_jobs.idle.connect(lambda: (self.progress.hide(), self.cancel_button.hide()))
        model.events.connect("model_loading", self._model_loading)
        model.events.connect("model_failed", self._model_failed)
        model.events.connect("model", self._model_loaded)

    # -- the model ---------------------------------------------------------------------------
    def _model_loading(self, spec: str) -> None:
        self.model_label.setText(f"Model: loading {model_choices.label_for(spec)}…")

    def _model_failed(self, spec: str) -> None:
        self.model_label.setText(f"Model: {model_choices.label_for(spec)} failed to load")
        self.model_label.setStyleSheet("color: #c03030; font-weight: bold;")

    def _model_loaded(self, loaded) -> None:
        self.model_label.setText(f"Model: {loaded.label}" + ("  ⚠" if loaded.warning else ""))
        self.model_label.setToolTip(loaded.warning or loaded.label)
        self.model_label.setStyleSheet("color: #d08000; font-weight: bold;" if loaded.warning else "")
        self.device_label.setText(f"Device: {loaded.model.device}")
        if loaded.warning:
            self.showMessage(loaded.warning, 15000)

    # -- the map -----------------------------------------------------------------------------
    def show_cursor(self, frame: MapFrame, x: float, y: float) -> None:
        text = f"x {x:,.1f}  y {y:,.1f} ({frame.describe()})"
        lonlat = frame.to_lonlat(x, y) if frame.crs is not None else None
        if lonlat is not None:
            text = f"{format_lonlat(*lonlat)}    {text}"
        self.cursor_label.setText(text)

    def show_crs(self, frame: MapFrame, rasters) -> None:
        """The map's CRS, and in the tooltip those of the rasters reprojected into it."""
        self.crs_label.setText(f"CRS: {frame.describe()}")
        others = sorted({MapFrame(i.crs).describe() for i in rasters if i.crs is not None and i.crs != frame.crs})
        self.crs_label.setToolTip("The map's CRS" + (f"; rasters in {', '.join(others)} are reprojected "
                                                     "into it on the fly" if others else ""))

    # -- jobs --------------------------------------------------------------------------------
    def _indexing_started(self) -> None:
        self.progress.setRange(0, 0)
        self.progress.setFormat("Indexing…")
        self.progress.show()
        self.cancel_button.show()

    def show_index_progress(self, update: Progress) -> None:
        self.progress.setRange(0, max(update.total, 1))
        self.progress.setValue(update.done)
        if update.stage is Stage.SEARCH_STRUCTURE:   # every tile done; minutes at 10M tiles
            # The bar is narrow: it names the step, the status line has room for the detail.
            self.progress.setFormat("Building the search structure…")
            self.progress.setToolTip(update.message)
            self.showMessage(_sentence(update.message))
            return
        if self.currentMessage().startswith(_sentence(Stage.SEARCH_STRUCTURE.value)):
            self.clearMessage()   # the step's line is over (DONE comes after it)
        self.progress.setFormat("Indexing %v / %m tiles")
        self.progress.setToolTip(f"Indexing {update.message}" if update.message else "")

    def show_job_progress(self, update: Progress) -> None:
        self.job_progress.setRange(0, max(update.total, 1))
        self.job_progress.setValue(update.done)
        self.job_progress.setFormat("%p %")
        self.job_progress.setToolTip(update.message)
        self.job_progress.show()
        self.job_cancel.show()

    def _job_ended(self) -> None:
        self.clearMessage()
        self.job_progress.hide()
        self.job_cancel.hide()


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]
