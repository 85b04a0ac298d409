"""Salience panel: choose which map of the selected tile to overlay (where the query's words
match, or one of the model's SEM/SSM maps), and how."""
from __future__ import annotations

from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QLinearGradient, QPainter
from PySide6.QtWidgets import (QComboBox, QFormLayout, QLabel, QSlider, QVBoxLayout, QWidget)

from ssjdn.core.model.network import salience_keys
from ssjdn.desktop.colormaps import NAMES, lookup_table
from ssjdn.desktop.names import describe_tile
from ssjdn.desktop.selection import QUERY_MAP_KEY

KINDS = {"Query: where the words match": "query", "SEM (semantic)": "sem", "SSM (scale)": "ssm"}
DIRECTIONS = {"coarse → fine": "coarse_to_fine", "fine → coarse": "fine_to_coarse"}
SCALES = {"0: finest (stride 8)": 0, "1: middle (stride 16)": 1, "2: coarsest (stride 32)": 2}


class QtColorLegend(QWidget):
    """A horizontal colour bar with its value range."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.colormap = "inferno"
        self.vmin, self.vmax = 0.0, 1.0
        self.title = "no tile selected"
        self.setMinimumHeight(40)

    def set_range(self, colormap: str, vmin: float, vmax: float, title: str = "") -> None:
        self.colormap, self.vmin, self.vmax, self.title = colormap, vmin, vmax, title
        self.update()

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        bar = QRectF(6, 4, self.width() - 12, 14)
        gradient = QLinearGradient(bar.topLeft(), bar.topRight())
        table = lookup_table(self.colormap)
        for i in range(0, 256, 32):
            gradient.setColorAt(i / 255, QColor(*table[i]))
        gradient.setColorAt(1.0, QColor(*table[255]))
        painter.fillRect(bar, gradient)
        painter.setPen(self.palette().windowText().color())
        text_rect = QRectF(6, 20, self.width() - 12, 16)
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignLeft, f"{self.vmin:.3g}")
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignHCenter, self.title)
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignRight, f"{self.vmax:.3g}")


class QtSaliencePanel(QWidget):
    changed = Signal()           # which map, colormap or opacity changed

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.words = ""
        self.info = QLabel("Select a tile (click a hit or the map) to see where the words match "
                           "and where the model looks.")
        self.info.setWordWrap(True)
        self.kind = _combo(KINDS)
        self.direction = _combo(DIRECTIONS)
        self.scale = _combo(SCALES)
        self.colormap = QComboBox()
        self.colormap.addItems(NAMES)
        self.colormap.setCurrentText("inferno")
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(60)
        self.legend = QtColorLegend()
        # What the shown map means, one line under the colour bar (the bar's own title is short).
        self.legend_line = QLabel()
        self.legend_line.setWordWrap(True)   # a long query wraps rather than being cut off
        form = QFormLayout()
        form.addRow("Map", self.kind)
        form.addRow("Direction", self.direction)
        form.addRow("Scale", self.scale)
        form.addRow("Colormap", self.colormap)
        form.addRow("Opacity", self.opacity)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.info)
        layout.addLayout(form)
        layout.addWidget(self.legend)
        layout.addWidget(self.legend_line)
        layout.addStretch(1)
        self.set_query("")
        for combo in (self.kind, self.direction):
            combo.currentIndexChanged.connect(self._offer_scales)
        for combo in (self.kind, self.direction, self.scale, self.colormap):
            combo.currentIndexChanged.connect(self.changed)
        self.opacity.valueChanged.connect(self.changed)

    def set_query(self, words: str) -> None:
        """The words the selected tile's query map is for ("": no query, no query map). With
        words the query map becomes the shown map; SEM/SSM stay a choice away."""
        self.words = words
        self.kind.model().item(self.kind.findData("query")).setEnabled(bool(words))
        wanted = "query" if words else ("sem" if self.kind.currentData() == "query" else None)
        if wanted and self.kind.currentData() != wanted:
            self.kind.setCurrentIndex(self.kind.findData(wanted))
        else:
            self.changed.emit()

    def _offer_scales(self) -> None:
        """Offer only the scales whose map says something: an SSM map at the end scale of its
        pass is 1.0 everywhere by construction (core.model.network.salience_keys)."""
        kind, direction = self.kind.currentData(), self.direction.currentData()
        for combo in (self.direction, self.scale):   # the query map has one scale, no direction
            combo.setEnabled(kind != "query")
        if kind == "query":
            return
        offered = {scale for k, d, scale in salience_keys() if (k, d) == (kind, direction)}
        items = self.scale.model()
        for row in range(self.scale.count()):
            items.item(row).setEnabled(self.scale.itemData(row) in offered)
        if self.scale.currentData() not in offered:
            self.scale.setCurrentIndex(self.scale.findData(min(offered)))

    def selection(self) -> tuple[str, str, int]:
        """(kind, direction, scale) as the engine's tile_salience keys them, or QUERY_MAP_KEY."""
        if self.kind.currentData() == "query":
            return QUERY_MAP_KEY
        return self.kind.currentData(), self.direction.currentData(), self.scale.currentData()

    def show_range(self, colormap: str, vmin: float, vmax: float) -> None:
        """The shown map's colour scale, and one line saying what it means."""
        kind = self.kind.currentData()
        self.legend.set_range(colormap, vmin, vmax, "match" if kind == "query" else kind.upper())
        self.legend_line.setText(self.key_label())

    def key_label(self) -> str:
        """One line saying what the shown map means."""
        if self.kind.currentData() == "query":
            return f"Where “{self.words}” matches: brighter = better"
        return f"{self.kind.currentText().split()[0]} {self.direction.currentText()}, scale {self.scale.currentData()}"



class QtSelectionBinding:
    """Binds the salience and caption panels to the selection component (napari style): both
    name the selected tile, the salience panel offers the map of where the words match while
    words are searched for, and its choices draw the map's salience layer (QtMapOverlays)."""

    def __init__(self, salience_panel: QtSaliencePanel, caption_panel, model, overlays) -> None:
        self.salience_panel, self.caption_panel = salience_panel, caption_panel
        self.model, self.overlays = model, overlays
        model.selection.events.connect("selection", self._show_tile)
        model.selection.events.connect("salience", self._show_salience)
        salience_panel.changed.connect(self.draw)

    def _show_tile(self, record) -> None:
        description = describe_tile(record)
        self.caption_panel.set_tile(description, record.raster_path)
        self.salience_panel.info.setText(f"Tile {description}")
        self.salience_panel.info.setToolTip(record.raster_path)

    def _show_salience(self, tile_id, maps) -> None:
        # While words are searched for, the map of where they match is shown (the panel redraws).
        self.salience_panel.set_query(self.model.results.words if QUERY_MAP_KEY in maps else "")

    def draw(self) -> None:
        panel = self.salience_panel
        colormap = panel.colormap.currentText()
        item = self.overlays.draw_salience(panel.selection(), colormap, panel.key_label(), panel.opacity.value() / 100.0)
        if item is not None:
            panel.show_range(colormap, item.vmin, item.vmax)

def _combo(options: dict) -> QComboBox:
    combo = QComboBox()
    for label, value in options.items():
        combo.addItem(label, value)
    return combo
