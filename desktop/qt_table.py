"""The attribute table (QGIS style): hits, detections and marked tiles, one row each, with
rank, score, likelihood, tile id, raster, the tile centre's latitude / longitude and mark.

It follows the model (napari style): the model's `results`, `detections` and `marks` events
refill it, its `selection` event selects the tile's row. Selecting a row asks the window to
select the tile and pan to it (`tileChosen`), a double click to zoom to it (`tileActivated`).
Copy coordinates and Export selected work on the selected rows.
"""
from __future__ import annotations

import math
from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QKeySequence, QShortcut
from PySide6.QtWidgets import (QAbstractItemView, QApplication, QComboBox, QFileDialog, QHBoxLayout,
                               QHeaderView, QLabel, QPushButton, QTableView, QVBoxLayout, QWidget)

from ssjdn.core.geo.formats import VECTOR_FORMATS, dialog_filter
from ssjdn.desktop.marks import NOT_RELEVANT, RELEVANT
from ssjdn.desktop.names import elide_middle
from ssjdn.desktop.qt_map import MARK_COLORS
from ssjdn.desktop.qt_workers import describe_error

SORT_ROLE = Qt.ItemDataRole.UserRole + 1
ROW_ROLE = Qt.ItemDataRole.UserRole
KINDS = ("all", "hit", "detection", "mark")
VECTOR_FILTER = dialog_filter(VECTOR_FORMATS)
LABEL_MARKS = {"relevant": RELEVANT, "not relevant": NOT_RELEVANT}


def _number(value, digits: int) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


class QtAttributeRows(QAbstractTableModel):
    """The model's attribute rows as a Qt table model (display text and a sort key a cell)."""

    COLUMNS = ("Kind", "Rank", "Score", "Likelihood", "Tile no.", "Raster", "Lat", "Lon", "Label")
    HEADER_TIPS = {"Tile no.": "The tile's number inside its raster; hover a cell for the full "
                               "tile id that ssjdn commands and exported files use"}

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.rows: list = []

    def set_rows(self, rows) -> None:
        self.beginResetModel()
        self.rows = list(rows)
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt API
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            return self.HEADER_TIPS.get(self.COLUMNS[section])
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        row = self.rows[index.row()]
        name = self.COLUMNS[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(row, name)
        if role == SORT_ROLE:
            return self._key(row, name)
        if role == ROW_ROLE:
            return row
        if role == Qt.ItemDataRole.ToolTipRole and name == "Raster":
            return row.raster_path
        if role == Qt.ItemDataRole.ToolTipRole and name == "Tile no.":
            return f"tile id {row.tile_id}"
        if role == Qt.ItemDataRole.BackgroundRole and row.label:
            tint = QColor(MARK_COLORS[LABEL_MARKS[row.label]])
            tint.setAlpha(60)
            return QBrush(tint)
        if role == Qt.ItemDataRole.TextAlignmentRole and name in ("Rank", "Score", "Likelihood", "Tile no.", "Lat", "Lon"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    @staticmethod
    def _text(row, name: str) -> str:
        if name == "Kind":
            return row.kind
        if name == "Rank":
            return "" if row.rank is None else str(row.rank)
        if name == "Score":
            return _number(row.score, 3)
        if name == "Likelihood":
            return _number(row.likelihood, 2)
        if name == "Tile no.":
            return str(row.tile_id & 0xFFFFFFFF)
        if name == "Raster":
            return elide_middle(Path(row.raster_path).stem, 24)
        if name in ("Lat", "Lon"):
            return _number(row.lat if name == "Lat" else row.lon, 6)
        return row.label

    @staticmethod
    def _key(row, name: str):
        """Numbers sort as numbers; a missing one sorts after every number."""
        value = {"Rank": row.rank, "Score": row.score, "Likelihood": row.likelihood,
                 "Tile no.": row.tile_id & 0xFFFFFFFF, "Lat": row.lat, "Lon": row.lon}.get(name, "missing")
        if value == "missing":
            return {"Kind": row.kind, "Raster": Path(row.raster_path).name, "Label": row.label}[name]
        return math.inf if value is None or not math.isfinite(value) else float(value)


class QtAttributeTable(QWidget):
    tileChosen = Signal(object)       # Hit: select it and pan to it
    tileActivated = Signal(object)    # Hit: zoom to it
    failed = Signal(str, str, str)    # title, message, details
    succeeded = Signal(str)

    COLUMNS = QtAttributeRows.COLUMNS

    def __init__(self, model, parent=None) -> None:
        super().__init__(parent)
        self.model = model
        self.rows = QtAttributeRows(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.rows)
        self.proxy.setSortRole(SORT_ROLE)
        self.proxy.setFilterKeyColumn(0)
        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(-1, Qt.SortOrder.AscendingOrder)   # the model's order until asked
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.verticalHeader().setVisible(False)
        self.view.verticalHeader().setDefaultSectionSize(22)
        self.view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.view.horizontalHeader().setStretchLastSection(True)
        self.kind = QComboBox()
        for kind in KINDS:
            self.kind.addItem({"all": "All rows", "hit": "Hits", "detection": "Detections",
                               "mark": "Marks"}[kind], kind)
        self.summary = QLabel()
        self.copy_button = QPushButton("Copy coordinates")
        self.copy_button.setToolTip("Copy 'lat, lon' of the selected rows' tile centres (Ctrl+C)")
        self.export_button = QPushButton("Export selected…")
        self.export_button.setToolTip("The selected rows as GeoJSON or GeoPackage polygons with "
                                      "their kind, label, score, lat and lon")
        bar = QHBoxLayout()
        bar.addWidget(self.kind)
        bar.addWidget(self.summary, 1)
        bar.addWidget(self.copy_button)
        bar.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(bar)
        layout.addWidget(self.view, 1)
        self._following = False    # True while the table follows the map's selection
        self.kind.currentIndexChanged.connect(self._filter)
        self.copy_button.clicked.connect(self.copy_coordinates)
        self.export_button.clicked.connect(self.export_selected_dialog)
        self.view.selectionModel().selectionChanged.connect(self._on_selection_changed)
        self.view.doubleClicked.connect(lambda index: self.tileActivated.emit(self._row(index).hit))
        copy = QShortcut(QKeySequence.StandardKey.Copy, self.view)
        copy.setContext(Qt.ShortcutContext.WidgetShortcut)
        copy.activated.connect(self.copy_coordinates)
        for component, event in ((model.results, "results"), (model.feedback, "detections"),
                                 (model.feedback, "marks")):
            component.events.connect(event, lambda **_: self.refresh())
        model.selection.events.connect("selection", lambda record: self.select_tile(record.tile_id))
        self.refresh()

    # -- the model's state --------------------------------------------------------------------
    def refresh(self) -> None:
        chosen = self.selected_tile_ids()
        self.rows.set_rows(self.model.table.rows())
        counts = {kind: sum(r.kind == kind for r in self.rows.rows) for kind in KINDS[1:]}
        self.summary.setText(f"{counts['hit']} hits, {counts['detection']} detections, {counts['mark']} marks")
        self.view.resizeColumnsToContents()
        if chosen:
            self.select_tile(chosen[0])
        self._enable()

    def select_tile(self, tile_id: int) -> None:
        """Select the first row of a tile (the map's selection), without asking the map back."""
        self._following = True
        try:
            self.view.clearSelection()
            for row in range(self.proxy.rowCount()):
                index = self.proxy.index(row, 0)
                if self._row(index).tile_id == int(tile_id):
                    self.view.selectRow(row)
                    self.view.scrollTo(index)
                    break
        finally:
            self._following = False
        self._enable()

    # -- the user's actions -------------------------------------------------------------------
    def cell(self, row: int, column: str) -> str:
        """The text shown at a row (in the table's current order) and a column."""
        return self.proxy.index(row, self.COLUMNS.index(column)).data()

    def selected_rows(self) -> list:
        rows = sorted(index.row() for index in self.view.selectionModel().selectedRows())
        return [self._row(self.proxy.index(r, 0)) for r in rows]

    def selected_tile_ids(self) -> list[int]:
        return [r.tile_id for r in self.selected_rows()]

    def copy_coordinates(self) -> None:
        rows = [r for r in self.selected_rows() if math.isfinite(r.lat)]
        if rows:
            QApplication.clipboard().setText("\n".join(f"{r.lat:.6f}, {r.lon:.6f}" for r in rows))
            self.succeeded.emit(f"Copied the coordinates of {len(rows)} tile centres")

    def export_selected_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export selected rows", "selected.geojson", VECTOR_FILTER)
        if path:
            self.export_selected(path)

    def export_selected(self, path: str) -> None:
        try:
            count = self.model.table.export(self.selected_rows(), path)
        except Exception as exc:  # noqa: BLE001 - a message box, never a traceback
            self.failed.emit("Export selected rows", *describe_error(exc))
            return
        self.succeeded.emit(f"Exported {count} rows to {path}")

    def _row(self, index):
        return self.proxy.data(index, ROW_ROLE)

    def _filter(self) -> None:
        kind = self.kind.currentData()
        self.proxy.setFilterFixedString("" if kind == "all" else kind)

    def _enable(self) -> None:
        chosen = bool(self.view.selectionModel().selectedRows())
        self.copy_button.setEnabled(chosen)
        self.export_button.setEnabled(chosen)

    def _on_selection_changed(self, *_args) -> None:
        self._enable()
        rows = self.selected_rows()
        if len(rows) == 1 and not self._following:
            self.tileChosen.emit(rows[0].hit)
