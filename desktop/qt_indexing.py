"""The indexing settings dialog: tile overlap, a second tile size, how much nodata a tile may
hold, and each open raster's nodata.

Like every view it only sets the session's attributes (Session.set_indexing); the main window
listens to the session and indexes again, re-encoding only the tiles whose pixels changed.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout,
                               QLabel, QSpinBox, QTableWidget, QVBoxLayout)

from ssjdn.core.index.indexing import DEFAULT_MAX_NODATA
from ssjdn.core.geo.raster import NODATA_AUTO, NODATA_NONE

# The nodata choices offered per raster; any other pixel value can be typed.
NODATA_CHOICES = ((NODATA_AUTO, "auto: a black or white border is nodata"),
                  (NODATA_NONE, "none: only what the file declares"),
                  ("0", "0: black is nodata everywhere"),
                  ("255", "255: white is nodata everywhere"))


class QtIndexingDialog(QDialog):
    def __init__(self, session, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Indexing settings")
        self.session = session
        settings = session.indexing_settings
        form = QFormLayout()
        self.overlap = QSpinBox(minimum=0, maximum=90, singleStep=25, suffix=" %")
        self.overlap.setValue(round(100 * settings.overlap))
        self.overlap.setToolTip("Neighbouring tiles share this much: a thing on a tile border is then "
                                "whole in another tile (50 % gives about 4x the tiles).")
        form.addRow("Overlap of neighbouring tiles", self.overlap)
        self.second_tile = QDoubleSpinBox(minimum=0.0, maximum=100000.0, decimals=1, singleStep=10.0,
                                          suffix=" m")
        self.second_tile.setSpecialValueText("none")
        self.second_tile.setValue(settings.second_tile_m or 0.0)
        self.second_tile.setToolTip("Also index every raster at this tile size (e.g. half the first): "
                                    "small things fill a small tile. A search keeps the better of two "
                                    "hits on mostly the same ground.")
        form.addRow("Second tile size", self.second_tile)
        self.max_nodata = QSpinBox(minimum=0, maximum=100, suffix=" %")
        self.max_nodata.setValue(round(100 * (DEFAULT_MAX_NODATA if settings.max_nodata is None
                                              else settings.max_nodata)))
        self.max_nodata.setToolTip("Tiles with more nodata than this are not indexed: a mostly black "
                                   "tile matches dark queries and crowds out real hits.")
        form.addRow("Leave out tiles with more nodata than", self.max_nodata)
        self.rasters = QTableWidget(len(session.rasters), 2)
        self.rasters.setHorizontalHeaderLabels(["Raster", "Nodata"])
        self.rasters.verticalHeader().hide()
        self.nodata_boxes: dict[str, QComboBox] = {}
        for row, path in enumerate(session.rasters):
            self.rasters.setCellWidget(row, 0, QLabel(Path(path).name, toolTip=path))
            box = QComboBox(editable=True)
            box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
            for value, label in NODATA_CHOICES:
                box.addItem(label, value)
            current = settings.nodata.get(path, NODATA_AUTO)
            at = box.findData(current if isinstance(current, str) else f"{current:g}")
            if at >= 0:
                box.setCurrentIndex(at)
            else:
                box.setEditText(f"{current:g}")
            self.rasters.setCellWidget(row, 1, box)
            self.nodata_boxes[path] = box
        self.rasters.resizeColumnsToContents()
        self.rasters.horizontalHeader().setStretchLastSection(True)
        self.setMinimumWidth(560)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(QLabel("Nodata of each open raster (a value: pixels holding it in all bands):"))
        layout.addWidget(self.rasters)
        layout.addWidget(buttons)

    def chosen(self) -> dict:
        """The settings as Session.indexing holds them (values not yet checked)."""
        return {"max_nodata": self.max_nodata.value() / 100.0,
                "nodata": {path: _box_value(box) for path, box in self.nodata_boxes.items()},
                "overlap": self.overlap.value() / 100.0, "second_tile_m": self.second_tile.value() or None}

    def accept(self) -> None:
        """Apply to the session; a value that is not one shows its message and keeps the dialog."""
        from ssjdn.core.errors import UserError
        try:
            self.session.set_indexing(self.chosen())
        except UserError as exc:
            if self.parent() is not None:
                self.parent().show_error("Indexing settings", str(exc))
            return
        super().accept()


def _box_value(box: QComboBox):
    text = box.currentText()
    at = box.findText(text)
    return box.itemData(at) if at >= 0 else text
