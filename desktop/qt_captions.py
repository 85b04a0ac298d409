"""Caption panel: rank captions (typed or loaded from a file) against the selected tile."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                               QPlainTextEdit, QPushButton, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

EXAMPLE_CAPTIONS = ("a river runs through the area\nmany buildings in a dense residential area\n"
                    "green farmland divided into fields\na dense forest\nan airport with planes\n"
                    "a road crosses the scene")


class QtCaptionPanel(QWidget):
    rankRequested = Signal(list)      # captions

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.tile_label = QLabel("No tile selected: click a tile on the map or a search hit.")
        self.tile_label.setWordWrap(True)
        self.captions = QPlainTextEdit(EXAMPLE_CAPTIONS)
        self.captions.setPlaceholderText("One caption per line")
        self.single = QLineEdit(placeholderText="Type a caption, press Enter to score it")
        self.load_button = QPushButton("Load captions…")
        self.rank_button = QPushButton("Rank captions")
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["Score", "Caption"])
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        buttons = QHBoxLayout()
        buttons.addWidget(self.load_button)
        buttons.addStretch(1)
        buttons.addWidget(self.rank_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.tile_label)
        layout.addWidget(self.captions, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.single)
        layout.addWidget(self.table, 2)
        self.load_button.clicked.connect(self._load)
        self.rank_button.clicked.connect(lambda: self.rankRequested.emit(self.caption_list()))
        self.single.returnPressed.connect(self._score_single)
        self.set_tile(None)

    def caption_list(self) -> list[str]:
        return [line.strip() for line in self.captions.toPlainText().splitlines() if line.strip()]

    def set_tile(self, description: str | None, path: str = "") -> None:
        enabled = description is not None
        self.rank_button.setEnabled(enabled)
        self.single.setEnabled(enabled)
        self.tile_label.setText(f"Tile: {description}" if enabled else
                                "No tile selected: click a tile on the map or a search hit.")
        self.tile_label.setToolTip(path)

    def _score_single(self) -> None:
        text = self.single.text().strip()
        if text:
            self.rankRequested.emit([text] + [c for c in self.caption_list() if c != text])

    def load_file(self, path: str) -> None:
        from ssjdn.core.errors import UserError
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"Cannot read captions from {path}: {exc}. Use a UTF-8 text file, "
                            f"one caption per line.") from exc
        self.captions.setPlainText(text)

    def _load(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load captions", "", "Text files (*.txt);;All files (*)")
        if path:
            self.load_file(path)

    def show_ranking(self, ranked: list[tuple[str, float]], highlight: str | None = None) -> None:
        self.table.setRowCount(len(ranked))
        for row, (caption, score) in enumerate(ranked):
            score_item = QTableWidgetItem(f"{score:.3f}")
            caption_item = QTableWidgetItem(caption)
            if caption == highlight:
                font = caption_item.font()
                font.setBold(True)
                caption_item.setFont(font)
                score_item.setFont(font)
            self.table.setItem(row, 0, score_item)
            self.table.setItem(row, 1, caption_item)
        self.table.resizeColumnToContents(0)
