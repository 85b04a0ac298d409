"""Labelled sets (relevance marks, issue 10): named sets of tiles marked relevant or not,
stored in the index so the app and `ssjdn classify` can use them again.

Their tables are created on first use, so indexes built before labelled sets existed still
open, and reading never creates them (a read-only index still lists its (no) sets).
"""
from __future__ import annotations

import time

from ssjdn.core.errors import UserError
from ssjdn.core.index.database import IndexDatabase, fits_int64


class LabelSets:
    """The labelled sets of one index; handed the index's database."""

    def __init__(self, db: IndexDatabase):
        self.db = db

    def save(self, name: str, labels: dict, overwrite: bool = False) -> None:
        """Store `labels` ({tile_id: True relevant / False not relevant}) as the set `name`, in one
        transaction. An existing set is replaced only with `overwrite` (else UserError)."""
        name = _set_name(name)
        rows = [(name, int(tile_id), int(bool(label))) for tile_id, label in labels.items()]
        with self.db.writing("save a labelled set"), self.db.lock, self.db.connection:
            self._ensure_label_tables()
            self.db.execute("BEGIN IMMEDIATE")
            exists = self.db.execute("SELECT 1 FROM label_sets WHERE name = ?", (name,)).fetchone()
            if exists and not overwrite:
                raise UserError(f"A labelled set named '{name}' already exists in {self.db.index_dir}; "
                                "choose another name or replace it.")
            known = {tile_id for (tile_id,) in self.db.rows_for_ids(
                "SELECT id FROM tiles WHERE id IN ({marks})", [r[1] for r in rows if fits_int64(r[1])])}
            unknown = [r[1] for r in rows if r[1] not in known]
            if unknown:
                raise UserError(f"Tile {unknown[0]} is not in the index {self.db.index_dir}; a labelled "
                                "set holds tiles of its own index only.")
            self.db.execute("DELETE FROM labels WHERE set_name = ?", (name,))
            self.db.execute("INSERT OR REPLACE INTO label_sets VALUES (?, ?)", (name, time.time()))
            self.db.connection.executemany("INSERT INTO labels VALUES (?, ?, ?)", rows)

    def summary(self) -> list[tuple[str, int, int]]:
        """(name, relevant count, not relevant count) of every stored set, by name."""
        with self.db.lock:
            if not self._has_label_tables():
                return []
            return [tuple(r) for r in self.db.execute(
                "SELECT s.name, COALESCE(SUM(l.label = 1), 0), COALESCE(SUM(l.label = 0), 0)"
                " FROM label_sets s LEFT JOIN labels l ON l.set_name = s.name"
                " GROUP BY s.name ORDER BY s.name")]

    def load(self, name: str) -> dict[int, bool]:
        """{tile_id: relevant?} of a stored set; UserError naming the stored sets if unknown."""
        with self.db.lock:
            if not self._has_label_tables() or not self.db.execute(
                    "SELECT 1 FROM label_sets WHERE name = ?", (name,)).fetchone():
                names = ", ".join(s[0] for s in self.summary()) or "none yet"
                raise UserError(f"No labelled set named '{name}' in {self.db.index_dir} (stored: {names}).")
            return {tid: bool(label) for tid, label in self.db.execute(
                "SELECT tile_id, label FROM labels WHERE set_name = ? ORDER BY rowid", (name,))}

    def delete(self, name: str) -> bool:
        """Remove a stored set; False if there was none of that name."""
        with self.db.writing("delete a labelled set"), self.db.lock, self.db.connection:
            if not self._has_label_tables():
                return False
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("DELETE FROM labels WHERE set_name = ?", (name,))
            return self.db.execute("DELETE FROM label_sets WHERE name = ?", (name,)).rowcount > 0

    def _has_label_tables(self) -> bool:
        # Reading never creates them: a read-only index must still list (no) sets.
        return self.db.has_table("label_sets") and self.db.has_table("labels")

    def _ensure_label_tables(self) -> None:
        self.db.execute("CREATE TABLE IF NOT EXISTS label_sets (name TEXT PRIMARY KEY, updated REAL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS labels (set_name TEXT NOT NULL, tile_id INTEGER "
                         "NOT NULL, label INTEGER NOT NULL, PRIMARY KEY (set_name, tile_id))")


def _set_name(name) -> str:
    text = str(name or "").strip()
    if not text:
        raise UserError("A labelled set needs a name, e.g. 'solar farms'.")
    return text
