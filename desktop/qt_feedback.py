"""Find-all panel: the marks so far, the classifier's detections over a threshold, labelled sets.

It shows the ExplorerModel's feedback state and forwards the user's actions as signals; the
window runs them (training off the GUI thread) and the model's events come back here.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (QComboBox, QGroupBox, QHBoxLayout, QLabel, QListWidget,
                               QListWidgetItem, QPushButton, QSlider, QVBoxLayout, QWidget)

from ssjdn.desktop.qt_map import MARK_COLORS, MARK_SIGNS
from ssjdn.desktop.qt_salience import QtColorLegend

SLIDER_STEPS = 100          # threshold slider: probability in hundredths
PROBABILITY_COLORMAP = "inferno"
MAX_LISTED = 200            # detections listed (all are exported)


class QtFeedbackPanel(QWidget):
    findAllRequested = Signal()
    clearMarksRequested = Signal()
    thresholdChanged = Signal(float)
    detectionActivated = Signal(object)     # Hit (score = probability)
    exportDetectionsRequested = Signal()
    saveSetRequested = Signal(str)          # name
    loadSetRequested = Signal(str)          # name
    exportSetRequested = Signal(str)        # name (for the file's property)
    importSetRequested = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
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
        self.clear_button.clicked.connect(self.clearMarksRequested.emit)
        self.threshold.valueChanged.connect(self._on_threshold)
        self.threshold.sliderMoved.connect(
            lambda value: self.threshold_label.setText(f"p \u2265 {value / SLIDER_STEPS:.2f}"))
        self.detections.itemClicked.connect(
            lambda item: self.detectionActivated.emit(item.data(Qt.ItemDataRole.UserRole)))
        self.export_button.clicked.connect(self.exportDetectionsRequested.emit)
        self.save_set_button.clicked.connect(lambda: self.saveSetRequested.emit(self.set_name.currentText().strip()))
        self.load_set_button.clicked.connect(lambda: self.loadSetRequested.emit(self.set_name.currentText().strip()))
        self.export_set_button.clicked.connect(lambda: self.exportSetRequested.emit(self.set_name.currentText().strip()))
        self.import_set_button.clicked.connect(self.importSetRequested.emit)
        self.set_marks({}, can_find_all=False)
        self.show_detections([], 0, self.threshold_value())
        self._on_threshold(self.threshold.value())

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
        set_buttons = QHBoxLayout()
        for button in (self.save_set_button, self.load_set_button, self.export_set_button, self.import_set_button):
            set_buttons.addWidget(button)
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
    def set_marks(self, marks: dict[int, bool], can_find_all: bool) -> None:
        relevant = sum(marks.values())
        self.summary.setText(
            f"{relevant} relevant, {len(marks) - relevant} not relevant marked. "
            + ("Find all scores every tile." if can_find_all else
               "Mark 3 tiles relevant (+) to find all like them."))
        self.find_all_button.setEnabled(can_find_all)
        self.clear_button.setEnabled(bool(marks))
        self.marks = dict(marks)

    def show_detections(self, hits: list, total: int, threshold: float) -> None:
        """The first detections (hits whose score is the probability) of `total` at `threshold`."""
        self.detections.clear()
        for hit in hits:
            col, row = int(hit.window.col_off), int(hit.window.row_off)
            mark = self.marks.get(int(hit.tile_id))
            tag = "" if mark is None else f"  {MARK_SIGNS[mark]}"
            item = QListWidgetItem(f"p {hit.score:.2f}{tag}   {Path(hit.raster_path).name}  px {col},{row}")
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
        self.total = total
        self.export_button.setEnabled(total > 0)
        self.threshold_label.setText(f"p \u2265 {threshold:.2f}: {total} tiles")

    def set_label_sets(self, sets: list[tuple[str, int, int]]) -> None:
        text = self.set_name.currentText()
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
        self.threshold_label.setText(f"p \u2265 {self.threshold_value():.2f}")
        self.thresholdChanged.emit(self.threshold_value())
