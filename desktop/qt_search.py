"""Search panel: a query box and the ranked hits with thumbnails and scores."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (QCheckBox, QCompleter, QHBoxLayout, QLabel, QLineEdit, QListWidget,
                               QListWidgetItem, QMenu, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from ssjdn.desktop.qt_salience import QtColorLegend

THUMB_PX = 72
NAME_CHARS = 30


def _elide(name: str) -> str:
    return name if len(name) <= NAME_CHARS else f"{name[:NAME_CHARS // 2 - 1]}…{name[-(NAME_CHARS // 2):]}"


class QtSearchPanel(QWidget):
    searchRequested = Signal(str, int)     # query, k
    hitActivated = Signal(object)          # Hit: zoom to it and select it
    similarRequested = Signal(object)      # Hit: find tiles like it

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.query = QLineEdit(placeholderText="Describe what to find, e.g. 'a river with a bridge'")
        self.query.setClearButtonEnabled(True)
        self.search_button = QPushButton("Search")
        self.k = QSpinBox(minimum=1, maximum=500, value=20, prefix="top ")
        self.heatmap = QCheckBox("Score heatmap", checked=True)
        self.heat_legend = QtColorLegend()
        self.heat_legend.set_range("viridis", 0.0, 1.0, "heatmap: tile score")
        self.heat_legend.hide()
        self.status = QLabel("Open a raster and build its index to search.")
        self.status.setWordWrap(True)
        self.results = QListWidget()
        self.results.setIconSize(QSize(THUMB_PX, THUMB_PX))
        self.results.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.results.setUniformItemSizes(True)
        top = QHBoxLayout()
        top.addWidget(self.query, 1)
        top.addWidget(self.search_button)
        options = QHBoxLayout()
        options.addWidget(self.k)
        options.addWidget(self.heatmap)
        options.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addLayout(options)
        layout.addWidget(self.heat_legend)
        layout.addWidget(self.status)
        layout.addWidget(self.results, 1)
        self.query.returnPressed.connect(self._request)
        self.search_button.clicked.connect(self._request)
        self.results.itemClicked.connect(lambda item: self.hitActivated.emit(item.data(Qt.ItemDataRole.UserRole)))
        self.results.customContextMenuRequested.connect(self._menu)
        self.hits: list = []

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
        self.results.clear()
        for rank, (hit, thumb) in enumerate(zip(hits, thumbnails), start=1):
            col, row = int(hit.window.col_off), int(hit.window.row_off)
            item = QListWidgetItem(f"#{rank}   score {hit.score:.3f}\n{_elide(Path(hit.raster_path).name)}  "
                                   f"px {col},{row}")
            if thumb is not None:
                item.setIcon(QIcon(thumb))
            item.setData(Qt.ItemDataRole.UserRole, hit)
            item.setToolTip(f"{hit.raster_path}\nClick: zoom to the tile and show its SEM/SSM maps. "
                            "Right-click: similar tiles.")
            self.results.addItem(item)
        self.status.setText(f"{len(hits)} tiles for \u201c{query}\u201d" if hits else f"No tiles for \u201c{query}\u201d")

    def show_heat_range(self, ranges: list[tuple[float, float]]) -> None:
        """Legend of the heatmap colours: the score range over all shown heatmaps."""
        if not ranges:
            self.heat_legend.hide()
            return
        self.heat_legend.set_range("viridis", min(r[0] for r in ranges), max(r[1] for r in ranges),
                                   "heatmap: tile score")
        self.heat_legend.show()

    def _menu(self, pos) -> None:
        item = self.results.itemAt(pos)
        if item is None:
            return
        menu = QMenu(self)
        menu.addAction("Zoom to tile", lambda: self.hitActivated.emit(item.data(Qt.ItemDataRole.UserRole)))
        menu.addAction("Find similar tiles", lambda: self.similarRequested.emit(item.data(Qt.ItemDataRole.UserRole)))
        menu.exec(self.results.viewport().mapToGlobal(pos))
