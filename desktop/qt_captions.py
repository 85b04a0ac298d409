"""Caption panel: rank captions (typed or loaded from a file) against the selected tile."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QFileDialog, QHBoxLayout, QHeaderView, QLabel,
                               QLineEdit, QPlainTextEdit, QPushButton, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from ssjdn.desktop.captions import default_captions

CAPTION_LINES = 3   # the caption list's height: the ranked table below gets the room


class QtCaptionPanel(QWidget):
    rankRequested = Signal(list)      # captions

    def __init__(self, session=None, parent=None) -> None:
        super().__init__(parent)
        self.tile_label = QLabel("No tile selected: click a tile on the map or a search hit.")
        self.tile_label.setWordWrap(True)
        self.captions = QPlainTextEdit()
        self.captions.setPlaceholderText("One caption per line")
        self.captions.setToolTip("Captions to rank for the selected tile: your recent queries, "
                                 "then one caption per common kind of scene. Edit freely.")
        self.captions.setMaximumHeight(self.captions.fontMetrics().lineSpacing() * CAPTION_LINES + 12)
        self._defaults = True    # the list is ours (follows the queries) until the user edits it
        self.rank_label = QLabel()
        self.rank_label.hide()
        self.unread_label = QLabel()     # words of the captions the model cannot read
        self.unread_label.setWordWrap(True)
        self.unread_label.hide()
        self.single = QLineEdit(placeholderText="Type a caption, press Enter to score it")
        self.load_button = QPushButton("Load captions…")
        self.rank_button = QPushButton("Rank captions")
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["Score", "Caption"])
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        buttons = QHBoxLayout()
        buttons.addWidget(self.load_button)
        buttons.addStretch(1)
        buttons.addWidget(self.rank_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.tile_label)
        layout.addWidget(self.captions)
        layout.addLayout(buttons)
        layout.addWidget(self.single)
        layout.addWidget(self.rank_label)
        layout.addWidget(self.unread_label)
        layout.addWidget(self.table, 1)
        self.load_button.clicked.connect(self._load)
        self.rank_button.clicked.connect(lambda: self.rankRequested.emit(self.caption_list()))
        self.single.returnPressed.connect(self._score_single)
        self.captions.textChanged.connect(self._edited)
        self.set_tile(None)
        queries = session.queries if session is not None else []
        self._show_defaults(queries)
        if session is not None:
            session.events.connect("queries", self._show_defaults)

    def _show_defaults(self, queries) -> None:
        if self._defaults:
            self.captions.blockSignals(True)
            self.captions.setPlainText("\n".join(default_captions(list(queries))))
            self.captions.blockSignals(False)

    def _edited(self) -> None:
        self._defaults = False

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

    def show_ranking(self, ranked: list[tuple[str, float]], highlight: str | None = None,
                     unread_note: str | None = None) -> None:
        self.unread_label.setText(unread_note or "")
        self.unread_label.setVisible(bool(unread_note))
        order = [caption for caption, _ in ranked]
        self.rank_label.setText(f"\u201c{highlight}\u201d ranks {_ordinal(order.index(highlight) + 1)} "
                                f"of {len(order)}" if highlight in order else "")
        self.rank_label.setVisible(highlight in order)   # no empty line taking the table's room
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
        if highlight in order:
            self.table.setCurrentCell(order.index(highlight), 1)
            self.table.scrollToItem(self.table.item(order.index(highlight), 1),
                                    QAbstractItemView.ScrollHint.PositionAtCenter)


def _ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
