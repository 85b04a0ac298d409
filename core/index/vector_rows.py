"""Where each tile's vector sits: the shard files (vector_store.py) as the index reads them.

Every read is checked to give unit vectors (random bytes or a foreign file give norms far from
1, or NaN, and no score is computed from them); the tile-id files that give a search's hits
their ids without a database lookup are checked against the database and rewritten from it
(the source of truth) when they disagree.
"""
from __future__ import annotations

import numpy as np

from ssjdn.core.errors import UserError
from ssjdn.core.index.database import IndexDatabase
from ssjdn.core.index.vector_store import VectorShards, VectorStoreDamaged

# Stored vectors are unit vectors; float16 rounding moves a norm by < 1e-3. A row further off
# (random bytes, a file from elsewhere) is damage, never a vector to score with.
UNIT_NORM_TOLERANCE = 1e-2


class VectorRows:
    """The index's vector shards, read with checks; handed the index's database."""

    def __init__(self, db: IndexDatabase):
        self.db = db
        self._store: VectorShards | None = None

    @property
    def dim(self) -> int:
        return int(self.db.meta("dim"))

    @property
    def store(self) -> VectorShards:
        if self._store is None:
            self._store = VectorShards(self.db.index_dir, self.dim)
        return self._store

    def close_files(self) -> None:
        """Forget open file descriptors (a replaced file must not be read through an old one)."""
        if self._store is not None:
            self._store.close_files()

    def committed_rows(self) -> dict[int, int]:
        """{shard: rows the database records}: rows past them are not part of the index."""
        return dict(self.db.execute("SELECT id, rows FROM shards"))

    def total_rows(self) -> int:
        return self.db.scalar("SELECT COALESCE(SUM(rows), 0) FROM shards")

    def read(self, shards: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Checked float32 vectors [N, D] of (shard, row) pairs."""
        return self._checked_read(np.asarray(shards), self.store.read, shards, rows)

    def read_positions(self, positions: np.ndarray) -> np.ndarray:
        """Checked float32 vectors [N, D] at positions (shard * shard_rows + row)."""
        shards = np.asarray(positions, np.int64) // self.store.shard_rows
        return self._checked_read(shards, self.store.read_positions, positions)

    def _checked_read(self, shards: np.ndarray, read, *args) -> np.ndarray:
        try:
            vectors = read(*args)
        except (VectorStoreDamaged, OSError) as exc:
            raise self.damaged(exc) from exc
        with np.errstate(all="ignore"):   # random bytes overflow: that is what is checked
            norms = np.linalg.norm(vectors, axis=1)
        bad = ~(np.abs(norms - 1.0) <= UNIT_NORM_TOLERANCE)   # NaN is bad too
        if bad.any():
            path = self.store.path(int(np.asarray(shards).reshape(-1)[bad][0]))
            raise self.damaged(f"{path} holds rows that are not the unit vectors written there")
        return vectors

    def damaged(self, cause) -> UserError:
        return UserError(f"The vectors of the index in {self.db.index_dir} are damaged or missing "
                         f"({cause}). Build the index again into a new folder (ssjdn index RASTER "
                         f"--index NEW_FOLDER).")

    def checked_tile_ids(self, positions: np.ndarray) -> np.ndarray:
        """The tile ids of the hits' rows from the tile-id files, checked against the database
        (k primary-key lookups); files that disagree are rewritten from it when the folder is
        writable, else the search is refused."""
        for attempt in range(2):
            try:
                ids = self.store.tile_ids_at(positions)
                problem = self._ids_disagree(positions, ids)
            except (VectorStoreDamaged, OSError) as exc:
                problem = str(exc)
            if problem is None:
                return ids
            if attempt or self.db.read_only:
                raise self.damaged(problem)
            with self.db.writing("repair the tile-id files"):
                self.write_id_files()
        raise AssertionError("unreachable")

    def _ids_disagree(self, positions: np.ndarray, ids: np.ndarray) -> str | None:
        store = self.store
        rows = np.array(self.db.rows_for_ids("SELECT id, shard, row FROM tiles WHERE id IN ({marks})",
                                             np.unique(ids).tolist()), np.int64).reshape(-1, 3)
        order = np.argsort(rows[:, 0])
        known_ids, known_positions = rows[order, 0], store.positions(rows[order, 1], rows[order, 2])
        at = np.minimum(np.searchsorted(known_ids, ids), max(len(known_ids) - 1, 0))
        right = (known_ids[at] == ids) & (known_positions[at] == positions) if len(known_ids) else \
            np.zeros(len(ids), bool)
        if right.all():
            return None
        wrong = int(np.asarray(positions)[~right][0])
        return f"{store.ids_path(wrong // store.shard_rows)} names other tiles than the index database"

    def write_id_files(self) -> None:
        """Every shard's tile-id file, rewritten whole from the database (the source of truth);
        rows no tile references get id -1."""
        store = self.store
        tables = {shard: np.full(rows, -1, np.int64) for shard, rows in self.committed_rows().items()}
        for tile_id, shard, row in self.db.execute("SELECT id, shard, row FROM tiles"):
            tables[shard][row] = tile_id
        for shard, ids in tables.items():
            store.write_ids(shard, ids)
        store.close_files()   # a replaced file must not be read through an old descriptor
