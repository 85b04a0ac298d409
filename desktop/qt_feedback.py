"""Find-all panel: the marks so far, the classifier's detections over a threshold, labelled sets.

It wraps an ExplorerModel: it follows the model's `marks`, `detections` and `index` events and
calls the model for what is quick (threshold, clearing, labelled sets, exports). Training the
classifier is slow, so *Find all* is a signal the window answers with a worker thread; failures
are a signal the window shows as a message box.
"""
from __future__ import annotations


from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (QComboBox, QFileDialog, QGridLayout, QGroupBox, QHBoxLayout, QLabel,
                               QListWidget, QListWidgetItem, QMessageBox, QPushButton, QSlider,
                               QVBoxLayout, QWidget)

from ssjdn.core.geo.formats import GEOPACKAGE, VECTOR_FORMATS, dialog_filter
from ssjdn.desktop.names import place_names
from ssjdn.desktop.qt_map import MARK_COLORS, MARK_SIGNS
from ssjdn.desktop.qt_salience import QtColorLegend
from ssjdn.desktop.qt_workers import describe_error

SLIDER_STEPS = 100          # threshold slider: probability in hundredths
PROBABILITY_COLORMAP = "inferno"
MAX_LISTED = 200            # detections listed (all are exported)
VECTOR_FILTER = dialog_filter(VECTOR_FORMATS, first=GEOPACKAGE)


class QtFeedbackPanel(QWidget):
    findAllRequested = Signal()
    detectionActivated = Signal(object)     # Hit (score = probability)
    failed = Signal(str, str, str)          # title, message for the user, details
    succeeded = Signal(str)                 # a line for the status bar

    def __init__(self, model, parent=None) -> None:
        super().__init__(parent)
        self.model = model
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.find_all_button = QPushButton("Find all")
        self.find_all_button.setToolTip("Train a classifier on the marked tiles and score every tile "
                                         "(needs 3 relevant; unmarked tiles are sampled as negatives)")
        self.clear_button = QPushButton("Clear marks")
        self.threshold = QSlider(Qt.Orientation.Horizontal)
        self.threshold.setRange(0, SLIDER_STEPS)
        self.threshold.setValue(SLIDER_STEPS // 2)
        # Relist on release, not on every step of a drag (a list of detections is read from the
        # index each time); the label follows the drag live.
        self.threshold.setTracking(False)
        self.threshold_label = QLabel()
        self.legend = QtColorLegend()
        self.legend.set_range(PROBABILITY_COLORMAP, 0.0, 1.0, "probability of a match")
        self.detections = QListWidget()
        self.detections.setToolTip("Click: zoom to the tile")
        self.export_button = QPushButton("Export detections…")
        self.export_button.setToolTip("GeoJSON or GeoPackage polygons with their probability")
        self.set_name = QComboBox()
        self.set_name.setEditable(True)
        self.set_name.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.set_name.lineEdit().setPlaceholderText("name of a labelled set")
        self.save_set_button = QPushButton("Save")
        self.load_set_button = QPushButton("Load")
        self.export_set_button = QPushButton("Export…")
        self.import_set_button = QPushButton("Import…")
        self.import_set_button.setToolTip("Mark the tiles under the points / polygons of a GeoJSON or "
                                          "GeoPackage (e.g. drawn in QGIS); a 'label' property says "
                                          "relevant or not")
        self._build_layout()
        self.find_all_button.clicked.connect(self.findAllRequested.emit)
        self.clear_button.clicked.connect(lambda: model.feedback.set_marks({}))
        self.threshold.valueChanged.connect(self._on_threshold)
        self.threshold.sliderMoved.connect(
            lambda value: self.threshold_label.setText(f"p \u2265 {value / SLIDER_STEPS:.2f}"))
        self.detections.itemClicked.connect(
            lambda item: self.detectionActivated.emit(item.data(Qt.ItemDataRole.UserRole)))
        self.export_button.clicked.connect(self.export_detections_dialog)
        self.save_set_button.clicked.connect(lambda: self.save_label_set(self.set_name.currentText().strip()))
        self.load_set_button.clicked.connect(lambda: self.load_label_set(self.set_name.currentText().strip()))
        self.export_set_button.clicked.connect(lambda: self.export_marks_dialog(self.set_name.currentText().strip()))
        self.import_set_button.clicked.connect(self.import_marks_dialog)
        model.feedback.events.connect("marks", lambda marks: self.show_marks())
        model.feedback.events.connect("detections", lambda detections, threshold: self.show_detections())
        model.events.connect("index", lambda index: self.show_label_sets())
        model.feedback.set_threshold(self.threshold_value())
        self.show_marks()

    def _build_layout(self) -> None:
        buttons = QHBoxLayout()
        buttons.addWidget(self.find_all_button)
        buttons.addWidget(self.clear_button)
        buttons.addStretch(1)
        slider = QHBoxLayout()
        slider.addWidget(QLabel("Threshold"))
        slider.addWidget(self.threshold, 1)
        slider.addWidget(self.threshold_label)
        sets = QGroupBox("Labelled sets (kept in the index)")
        set_buttons = QGridLayout()   # two by two: four in a row would widen the dock over the map
        for i, button in enumerate((self.save_set_button, self.load_set_button, self.export_set_button,
                                    self.import_set_button)):
            set_buttons.addWidget(button, i // 2, i % 2)
        set_layout = QVBoxLayout(sets)
        set_layout.addWidget(self.set_name)
        set_layout.addLayout(set_buttons)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.summary)
        layout.addLayout(buttons)
        layout.addLayout(slider)
        layout.addWidget(self.legend)
        layout.addWidget(self.detections, 1)
        layout.addWidget(self.export_button)
        layout.addWidget(sets)

    # -- the model's state --------------------------------------------------------------------
    def show_marks(self) -> None:
        marks, can_find_all = self.model.feedback.marks, self.model.feedback.can_find_all()
        relevant = sum(marks.values())
        self.summary.setText(
            f"{relevant} relevant, {len(marks) - relevant} not relevant marked. "
            + ("Find all scores every tile." if can_find_all else
               "Mark 3 tiles relevant (+) to find all like them."))
        self.find_all_button.setEnabled(can_find_all)
        self.clear_button.setEnabled(bool(marks))
        self.show_detections()        # their marks show in the list

    def show_detections(self) -> None:
        """The first MAX_LISTED detections (hits whose score is the probability)."""
        hits, total, threshold = self.model.feedback.detection_hits(MAX_LISTED), len(self.model.feedback.detections), self.model.feedback.threshold
        self.detections.clear()
        for hit, place in zip(hits, place_names(hits, chars=24, sep="\n")):
            mark = self.model.feedback.marks.get(int(hit.tile_id))
            tag = "" if mark is None else f"  {MARK_SIGNS[mark]}"
            item = QListWidgetItem(f"p {hit.score:.2f}{tag}   {place}")
            item.setToolTip(hit.raster_path)
            item.setData(Qt.ItemDataRole.UserRole, hit)
            if mark is not None:
                tint = QColor(MARK_COLORS[mark])
                tint.setAlpha(70)
                item.setBackground(QBrush(tint))
            self.detections.addItem(item)
        if total > len(hits):
            more = QListWidgetItem(f"… and {total - len(hits)} more (all are exported)")
            more.setFlags(Qt.ItemFlag.NoItemFlags)
            self.detections.addItem(more)
        self.export_button.setEnabled(total > 0)
        self.threshold_label.setText(f"p \u2265 {threshold:.2f}: {total} tiles")

    def show_label_sets(self) -> None:
        sets, text = self.model.feedback.label_sets(), self.set_name.currentText()
        self.set_name.blockSignals(True)
        self.set_name.clear()
        for name, relevant, not_relevant in sets:
            self.set_name.addItem(name)
            self.set_name.setItemData(self.set_name.count() - 1,
                                      f"{relevant} relevant, {not_relevant} not relevant",
                                      Qt.ItemDataRole.ToolTipRole)
        self.set_name.setEditText(text)
        self.set_name.blockSignals(False)

    # -- the user's actions -------------------------------------------------------------------
    def threshold_value(self) -> float:
        return self.threshold.value() / SLIDER_STEPS

    def _on_threshold(self, _value: int) -> None:
        self.model.feedback.set_threshold(self.threshold_value())

    def _run(self, title: str, action, success: str) -> bool:
        """Call the model; a failure becomes the `failed` signal (a message box), not a traceback."""
        try:
            action()
        except Exception as exc:  # noqa: BLE001
            self.failed.emit(title, *describe_error(exc))
            return False
        self.succeeded.emit(success)
        return True

    def export_detections_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export detections", "detections.gpkg", VECTOR_FILTER)
        if path:
            self.export_detections(path)

    def export_detections(self, path: str) -> None:
        self._run("Export detections", lambda: self.model.feedback.export_detections(path),
                  f"Exported the detections (p \u2265 {self.model.feedback.threshold:.2f}) to {path}")

    def save_label_set(self, name: str, overwrite: bool | None = None) -> None:
        """Store the marks under `name` in the index; asks before replacing a stored set."""
        if overwrite is None:
            overwrite = name in [n for n, _, _ in self.model.feedback.label_sets()]
            if overwrite and QMessageBox.question(
                    self, "Save labelled set", f"Replace the stored set '{name}' with the current marks?") \
                    != QMessageBox.StandardButton.Yes:
                return
        if self._run("Save labelled set", lambda: self.model.feedback.save_label_set(name, overwrite=overwrite),
                     f"Saved {len(self.model.feedback.marks)} marks as '{name}'"):
            self.show_label_sets()

    def load_label_set(self, name: str) -> None:
        self._run("Load labelled set", lambda: self.model.feedback.load_label_set(name), f"Loaded the labelled set '{name}'")

    def export_marks_dialog(self, name: str = "") -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export marks", f"{name or 'marks'}.gpkg", VECTOR_FILTER)
        if path:
            self.export_marks(path, name or None)

    def export_marks(self, path: str, name: str | None = None) -> None:
        self._run("Export marks", lambda: self.model.feedback.export_marks(path, name),
                  f"Exported {len(self.model.feedback.marks)} marks to {path}")

    def import_marks_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import marks", "", VECTOR_FILTER)
        if path:
            self.import_marks(path)

    def import_marks(self, path: str) -> None:
        self._run("Import marks", lambda: self.model.feedback.import_marks(path), f"Marked the tiles under {path}")
