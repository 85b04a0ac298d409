"""Search panel: a query box, the ranked hits with thumbnails and scores, and relevance marks.

A hit is marked relevant / not relevant with the buttons under the list or the + / - / 0 keys
(the window's Mark menu); marked hits are tinted in the mark's colour, as on the map. 'Refine'
searches again with the words and the marks.
"""
from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QIcon, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (QCheckBox, QCompleter, QHBoxLayout, QLabel, QLineEdit, QListWidget,
                               QListWidgetItem, QMenu, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from ssjdn.core.model.calibration import GOOD_MATCH
from ssjdn.desktop.names import place_names
from ssjdn.desktop.qt_map import HIT_COLOR, MARK_COLORS, MARK_SIGNS, rgb_to_qimage
from ssjdn.desktop.qt_salience import QtColorLegend
from ssjdn.desktop.resources import THUMB_PX

MARK_TINT_ALPHA = 70


class QtSearchPanel(QWidget):
    searchRequested = Signal(str, int)     # query, k
    hitActivated = Signal(object)          # Hit: zoom to it and select it
    similarRequested = Signal(object)      # Hit: find tiles like it
    markRequested = Signal(object, object)  # tile id (64-bit), True relevant / False not / None clear
    refineRequested = Signal()
    likelihoodDisplayChanged = Signal(float, bool)   # likelihood threshold, absolute colour scale

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.query = QLineEdit(placeholderText="Describe what to find, e.g. 'a river with a bridge'")
        self.query.setClearButtonEnabled(True)
        self.search_button = QPushButton("Search")
        self.k = QSpinBox(minimum=1, maximum=500, value=20, prefix="top ")
        self.heatmap = QCheckBox("Score heatmap", checked=True)
        # Match likelihood: hits under the threshold are not drawn, nor is the heatmap there.
        self.threshold = QSpinBox(minimum=0, maximum=99, value=round(GOOD_MATCH * 100),
                                  prefix="match ≥ ", suffix=" %", singleStep=5)
        self.threshold.setToolTip("Tiles whose match likelihood is under this are not drawn as hits, "
                                  "and the heatmap is transparent there")
        self.absolute = QCheckBox("0–1 scale", checked=True)
        self.absolute.setToolTip("Heatmap colours on the absolute likelihood scale (0 to 1), so the "
                                 "same colour means the same likelihood in every search")
        self.threshold.setEnabled(False)
        self.absolute.setEnabled(False)
        self.heat_legend = QtColorLegend()
        self.heat_legend.set_range("viridis", 0.0, 1.0, "heatmap: tile score")
        self.heat_legend.hide()
        self.status = QLabel("Open a raster and build its index to search.")
        self.status.setWordWrap(True)
        self.results = QListWidget()
        self.results.setIconSize(QSize(THUMB_PX, THUMB_PX))
        self.results.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.results.setUniformItemSizes(True)
        self.relevant_button = QPushButton("+ Relevant")
        self.relevant_button.setToolTip("Mark the current hit relevant (key +)")
        self.not_relevant_button = QPushButton("− Not relevant")
        self.not_relevant_button.setToolTip("Mark the current hit not relevant (key -); 0 clears a mark")
        self.refine_button = QPushButton("Refine")
        self.refine_button.setToolTip("Search again with the words and the marked tiles (Ctrl+R)")
        self.refine_button.setEnabled(False)
        marks = QHBoxLayout()
        marks.addWidget(self.relevant_button)
        marks.addWidget(self.not_relevant_button)
        marks.addStretch(1)
        marks.addWidget(self.refine_button)
        top = QHBoxLayout()
        top.addWidget(self.query, 1)
        top.addWidget(self.search_button)
        options = QHBoxLayout()
        options.addWidget(self.k)
        options.addWidget(self.heatmap)
        options.addStretch(1)
        # A row of its own: all four in one row would widen the dock over the map.
        likelihood = QHBoxLayout()
        likelihood.addWidget(self.threshold)
        likelihood.addWidget(self.absolute)
        likelihood.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addLayout(options)
        layout.addLayout(likelihood)
        layout.addWidget(self.heat_legend)
        layout.addWidget(self.status)
        layout.addWidget(self.results, 1)
        layout.addLayout(marks)
        self.query.returnPressed.connect(self._request)
        self.search_button.clicked.connect(self._request)
        self.results.itemClicked.connect(lambda item: self.hitActivated.emit(item.data(Qt.ItemDataRole.UserRole)))
        self.results.customContextMenuRequested.connect(self._menu)
        self.relevant_button.clicked.connect(lambda: self._mark_current(True))
        self.not_relevant_button.clicked.connect(lambda: self._mark_current(False))
        self.refine_button.clicked.connect(self.refineRequested.emit)
        self.threshold.valueChanged.connect(lambda _value: self._emit_likelihood_display())
        self.absolute.toggled.connect(lambda _checked: self._emit_likelihood_display())
        self.likelihood_threshold = GOOD_MATCH
        self.hits: list = []
        self.places: list[str] = []      # each hit's short name: raster stem and coordinates
        self.marks: dict[int, bool] = {}

    def set_history(self, queries: list[str]) -> None:
        completer = QCompleter(list(reversed(queries)), self)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.query.setCompleter(completer)

    def set_ready(self, ready: bool, message: str) -> None:
        self.search_button.setEnabled(ready)
        self.status.setText(message)

    def _request(self) -> None:
        if self.search_button.isEnabled():
            self.searchRequested.emit(self.query.text().strip(), self.k.value())

    def show_hits(self, query: str, hits: list, thumbnails: list[QPixmap | None]) -> None:
        self.hits = list(hits)
        self.places = place_names(hits, sep="\n")   # three lines beside a thumbnail: all fit
        self.results.clear()
        for hit, thumb in zip(hits, thumbnails):
            item = QListWidgetItem()
            if thumb is not None:
                item.setIcon(QIcon(thumb))
            item.setData(Qt.ItemDataRole.UserRole, hit)
            item.setToolTip(f"{hit.raster_path}\nClick: zoom to the tile and show its SEM/SSM maps. "
                            "+ / - / 0: mark relevant, not relevant, clear. Right-click: similar tiles.")
            self.results.addItem(item)
        self._label_items()

    def set_calibrated(self, calibration) -> None:
        """Enable the likelihood controls for a model with a calibration (None: raw scores)."""
        self.threshold.setEnabled(calibration is not None)
        self.absolute.setEnabled(calibration is not None)
        self.threshold.setToolTip(self.threshold.toolTip().split("\n")[0] + (
            f"\nCalibrated on {calibration.fitted_on}" if calibration is not None
            else "\nThis model has no calibration: no likelihood is shown"))

    def _emit_likelihood_display(self) -> None:
        self.likelihoodDisplayChanged.emit(self.threshold.value() / 100, self.absolute.isChecked())

    def show_likelihoods(self, threshold: float, text: str) -> None:
        """The results line, and the hits under the threshold dimmed in the list."""
        self.likelihood_threshold = threshold
        self.status.setText(text)
        self._label_items()

    def set_marks(self, marks: dict[int, bool], can_refine: bool) -> None:
        self.marks = dict(marks)
        self.refine_button.setEnabled(can_refine)
        self._label_items()

    def _label_items(self) -> None:
        """Each hit's text and tint: rank, score, and its mark if it has one."""
        for rank in range(1, self.results.count() + 1):
            item = self.results.item(rank - 1)
            hit = item.data(Qt.ItemDataRole.UserRole)
            mark = self.marks.get(int(hit.tile_id))
            tag = "" if mark is None else f"   {MARK_SIGNS[mark]} {'relevant' if mark else 'not relevant'}"
            match = "" if hit.likelihood is None else f"   match {hit.likelihood:.0%}"
            item.setText(f"#{rank}   score {hit.score:.3f}{match}{tag}\n{self.places[rank - 1]}")
            weak = hit.likelihood is not None and hit.likelihood < self.likelihood_threshold
            # Marked tiles are judged already: dimmed, so the eye goes to the new candidates.
            item.setForeground(QBrush(QColor(140, 140, 140)) if weak or mark is not None else QBrush())
            tint = QColor(MARK_COLORS[mark]) if mark is not None else None
            if tint is not None:
                tint.setAlpha(MARK_TINT_ALPHA)
            item.setBackground(QBrush(tint) if tint is not None else QBrush())

    def current_tile_id(self) -> int | None:
        item = self.results.currentItem()
        return None if item is None else int(item.data(Qt.ItemDataRole.UserRole).tile_id)

    def _mark_current(self, label: bool | None) -> None:
        tile_id = self.current_tile_id()
        if tile_id is not None:
            self.markRequested.emit(tile_id, label)

    def show_heat_range(self, ranges: list[tuple[float, float]], title: str = "tile score") -> None:
        """Legend of the heatmap colours: the range over all shown heatmaps."""
        if not ranges:
            self.heat_legend.hide()
            return
        self.heat_legend.set_range("viridis", min(r[0] for r in ranges), max(r[1] for r in ranges),
                                   f"heatmap: {title}")
        self.heat_legend.show()

    def _menu(self, pos) -> None:
        item = self.results.itemAt(pos)
        if item is None:
            return
        menu = QMenu(self)
        menu.addAction("Zoom to tile", lambda: self.hitActivated.emit(item.data(Qt.ItemDataRole.UserRole)))
        menu.addAction("Find similar tiles", lambda: self.similarRequested.emit(item.data(Qt.ItemDataRole.UserRole)))
        tile_id = int(item.data(Qt.ItemDataRole.UserRole).tile_id)
        menu.addSeparator()
        menu.addAction("Mark relevant (+)", lambda: self.markRequested.emit(tile_id, True))
        menu.addAction("Mark not relevant (-)", lambda: self.markRequested.emit(tile_id, False))
        menu.addAction("Clear mark (0)", lambda: self.markRequested.emit(tile_id, None))
        menu.exec(self.results.viewport().mapToGlobal(pos))


class QtSearchBinding:
    """Binds the Search panel to the model (napari style): it shows the results component's
    hits, likelihood line and heatmap legend, and the feedback component's marks, following
    their events; the panel's mark buttons and likelihood controls set the model's state. The
    heatmaps' colour range comes from what the map drew (QtMapOverlays)."""

    def __init__(self, panel: QtSearchPanel, model, overlays) -> None:
        self.panel, self.model, self.overlays = panel, model, overlays
        panel.markRequested.connect(model.feedback.mark)
        panel.likelihoodDisplayChanged.connect(
            lambda threshold, absolute: model.results.set_likelihood_display(threshold, absolute))
        model.events.connect("model", lambda loaded: panel.set_calibrated(model.calibration))
        model.events.connect("raster_closed", lambda path: self.show_marks())
        model.results.events.connect("results", self._show_results)
        model.results.events.connect("likelihood", lambda threshold, absolute: self.show_likelihoods())
        model.feedback.events.connect("marks", lambda marks: self.show_marks())
        model.layers.events.connect("layer", self._follow_heat_legend)

    def _show_results(self, query, hits, heatmaps, thumbnails) -> None:
        self.panel.show_hits(query, hits, [thumbnail_pixmap(t) for t in thumbnails])
        self.show_likelihoods()
        self.show_marks()

    def show_likelihoods(self) -> None:
        """The threshold line and the heatmaps' legend (the map has drawn them)."""
        results = self.model.results
        self.panel.show_likelihoods(results.likelihood_threshold, results.text(self.model.feedback.marks))
        value_range = self.overlays.heat_range
        self.panel.show_heat_range([value_range] if value_range else [], self.overlays.heat_title)

    def show_marks(self) -> None:
        feedback = self.model.feedback
        self.panel.set_marks(feedback.marks, feedback.can_refine() and self.model.index is not None)
        if self.model.results.hits:   # how many of the listed hits are marked
            self.panel.status.setText(self.model.results.text(feedback.marks))

    def _follow_heat_legend(self, layer: str) -> None:
        """The score legend shows while a score heatmap does (find-all hides it, the Layers
        panel may bring it back)."""
        if layer.startswith("heatmap:"):
            shown = any(s.visible for n, s in self.model.layers.items() if n.startswith("heatmap:"))
            self.panel.heat_legend.setVisible(shown and bool(self.model.results.heatmaps))

def thumbnail_pixmap(thumb) -> QPixmap | None:
    """A hit's thumbnail (read_thumbnails: RGB and the tile's rect in it) as the list shows it."""
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
