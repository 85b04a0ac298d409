"""The search structure's file (vectors.faiss): derived from the database, never trusted blindly.

It is brought up to date at the end of a build (extended with the new rows, the positions of
deleted tiles removed, or rebuilt; written to a temp file, then os.replace), and loaded only if
its checksum is the one this database recorded and this installation wrote; otherwise it is
rebuilt in memory from the checked vectors (and saved again where the folder allows), so it
can never be stale or foreign. Its labels are vector-store positions (vector_rows.py).
"""
from __future__ import annotations

import sqlite3

import numpy as np

from ssjdn.core import provenance
from ssjdn.core.errors import UserError
from ssjdn.core.files import file_sha256, sha256_of
from ssjdn.core.index import ann
from ssjdn.core.index.ann import APPROX_THRESHOLD
from ssjdn.core.index.database import IndexDatabase
from ssjdn.core.index.lock import IndexLock
from ssjdn.core.index.vector_rows import UNIT_NORM_TOLERANCE, VectorRows
from ssjdn.core.progress import Progress, Stage

FAISS_NAME = "vectors.faiss"
# Positions of deleted tiles that the saved faiss file still holds (see SearchFile.note_removed).
REMOVED_TABLE = "faiss_removed"


class SearchFile:
    """The loaded search structure of an index and its file; handed the index's database and
    vector rows."""

    def __init__(self, db: IndexDatabase, vectors: VectorRows):
        self.db = db
        self.vectors = vectors
        self._index = None
        # Why the saved file was not used (it came from elsewhere), for the caller to say.
        self.note: str | None = None

    def forget(self) -> None:
        """Load (and check) the file again on the next search: the database changed."""
        self._index = None

    def _count(self) -> int:
        return self.db.scalar("SELECT COUNT(*) FROM tiles")

    def search(self, queries: np.ndarray, k: int):
        """(scores, tile ids, positions), each [Q, k] (-1 pads), for float32 queries [Q, D]."""
        faiss_index = self.index()
        if faiss_index.ntotal == 0:
            none = np.zeros((len(queries), 0), np.int64)
            return np.zeros((len(queries), 0), np.float32), none, none
        # The search structure's labels are shard positions: candidates are read by position
        # and only the k found become tile ids, with no database lookup.
        with self.db.lock:
            scores, positions = ann.search(faiss_index, queries, k, self.vectors.read_positions)
            ids = np.full(positions.shape, -1, np.int64)
            found = positions >= 0
            ids[found] = self.vectors.checked_tile_ids(positions[found])
            if np.any(np.abs(scores[found]) > 1.0 + UNIT_NORM_TOLERANCE):
                raise self.vectors.damaged("a search scored beyond the cosine range [-1, 1]")
        return scores, ids, np.where(found, positions, -1).astype(np.int64)

    def index(self, progress=None):
        with self.db.lock:
            # Checked against the database once per load, not per query: COUNT(*) over a million
            # rows would cost more than the search. Writes through this object reset it.
            if self._index is None:
                self._index = self._load_file()
                if self._index is None and self.note and progress is not None:
                    stage = Stage.SEARCH_STRUCTURE   # the note goes to the app's status line
                    progress(Progress(stage, message=f"{stage.value}: {self.note}"))
                if self._index is None:
                    # e.g. an indexing run died before its last step: catch up from the saved
                    # file when it can be trusted, else rebuild from the database.
                    self._index = self._updated(APPROX_THRESHOLD, progress)
                    self._try_to_save_rebuilt(self._index)
            return self._index

    def save(self, faiss_index) -> None:
        """Write the faiss file atomically and record what it holds, with its checksum, here
        and in this installation's list of files it wrote (core.provenance): a file that is
        damaged, changed, or copied from another index or computer, never matches and is
        rebuilt from the checked vectors."""
        import faiss

        from ssjdn.core.files import atomic_path
        with atomic_path(self.db.index_dir / FAISS_NAME) as tmp:
            faiss.write_index(faiss_index, str(tmp))
            checksum = file_sha256(tmp)
            provenance.remember_written(checksum)
        with self.db.connection:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.set_meta("faiss_ntotal", str(faiss_index.ntotal))
            self.db.set_meta("faiss_rows", str(self.vectors.total_rows()))
            self.db.set_meta("faiss_sha256", checksum)
            self.db.set_meta("faiss_dirty", "0")
            if self.db.has_table(REMOVED_TABLE):
                self.db.execute(f"DELETE FROM {REMOVED_TABLE}")   # the file holds none of them

    def _try_to_save_rebuilt(self, faiss_index) -> None:
        """After a search had to rebuild the faiss file in memory, save it for the next run when
        the folder is writable and no indexer holds it; otherwise the next `ssjdn index` will."""
        if self.db.read_only:
            return
        lock = IndexLock(self.db.index_dir)
        if not lock.try_acquire():
            return
        try:
            self.save(faiss_index)
        except (OSError, UserError, sqlite3.Error):
            pass  # a cache of the database, not data: failing to save it loses nothing
        finally:
            lock.release()

    def is_current(self) -> bool:
        """True if the faiss file is the one last written for exactly this database content."""
        return self._load_file() is not None

    def _trusted_saved(self):
        """The saved faiss index (with its recorded nprobe) if its bytes are those this database
        recorded and this installation wrote, else None. The file is read once, hashed and
        parsed from the same bytes, so nothing can change it in between; a file written by
        another installation (an index folder shared by a colleague) sets
        `note` and is rebuilt from the index's checked vectors."""
        if self.db.meta("faiss_dirty") == "1" or self.db.meta("faiss_sha256") is None:
            return None
        path = self.db.index_dir / FAISS_NAME
        try:
            data = path.read_bytes()
        except OSError:
            return None
        digest = sha256_of(data)
        if digest != self.db.meta("faiss_sha256"):
            return None
        if not provenance.written_here(digest):
            self.note = (
                f"{path} was not written by this installation (a copied or shared index folder), "
                f"so it is rebuilt from the index's vectors" +
                ("." if self.db.read_only else " and saved again."))
            return None
        saved = _deserialize_faiss(data)
        if saved is None or str(saved.ntotal) != self.db.meta("faiss_ntotal"):
            return None
        ann.apply_nprobe(saved, self.db.meta("nprobe"))
        return saved

    def _load_file(self):
        """The saved faiss index if it matches the database exactly, else None."""
        if self.db.meta("faiss_ntotal") != str(self._count()) or self.db.meta("faiss_rows") != str(self.vectors.total_rows()):
            return None
        saved = self._trusted_saved()
        return saved if saved is not None and saved.ntotal == self._count() else None

    def _updated(self, approx_threshold: int, progress=None):
        saved = self._saved_for_append()
        count = self._count()
        if saved is not None and (count < approx_threshold) == ann.is_exact(saved):
            new_positions, read = self._live_positions(int(self.db.meta("faiss_rows") or 0))
            ann.add_blocks(saved, new_positions, read, progress)
            if saved.ntotal == count:
                return saved
        return self._build_all(approx_threshold, progress)

    def _saved_for_append(self):
        if self.db.meta("faiss_rows") is None:
            return None
        saved = self._trusted_saved()
        if saved is None:
            return None
        removed = self._removed()
        if len(removed):
            import faiss
            saved.remove_ids(faiss.IDSelectorBatch(removed))
        return saved

    def _build_all(self, approx_threshold: int, progress=None):
        positions, read = self._live_positions(0)
        faiss_index, nprobe = ann.build_ann(positions, read, self.vectors.dim, approx_threshold,
                                            progress=progress)
        if nprobe is not None and not self.db.read_only:
            with self.db.connection:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.set_meta("nprobe", str(nprobe))
        return faiss_index

    def _live_positions(self, first: int):
        """(positions >= `first` of every tile's row [N] ascending, read(indices into them) ->
        float32 vectors): the search structure's labels. 8 bytes a tile in memory; rows left by
        replaced tiles are not among them."""
        rows = self.vectors.store.shard_rows
        shard, row = divmod(int(first), rows)
        found = np.fromiter((v for pair in self.db.execute(
            "SELECT shard, row FROM tiles WHERE shard > ? OR (shard = ? AND row >= ?)",
            (shard, shard, row)) for v in pair), np.int64).reshape(-1, 2)
        positions = np.sort(self.vectors.store.positions(found[:, 0], found[:, 1]))
        return positions, lambda indices: self.vectors.read_positions(positions[indices])

    def note_removed(self, where: str, params: tuple) -> None:
        """Record the positions of the tiles `where` selects before they are deleted (same
        transaction): the saved faiss file drops them when it is next brought up to date,
        instead of being rebuilt (k-means over every vector: 17 min at 10M tiles). A crash in
        between leaves the record, so a search never returns a replaced tile."""
        self.db.execute(f"CREATE TABLE IF NOT EXISTS {REMOVED_TABLE} (position INTEGER PRIMARY KEY)")
        self.db.execute(f"INSERT OR IGNORE INTO {REMOVED_TABLE} SELECT shard * ? + row FROM tiles "
                         f"WHERE {where}", (self.vectors.store.shard_rows, *params))

    def _removed(self) -> np.ndarray:
        """Positions still in the saved faiss file whose tiles were deleted since."""
        if not self.db.has_table(REMOVED_TABLE):
            return np.zeros(0, np.int64)
        return np.fromiter((p for (p,) in self.db.execute(f"SELECT position FROM {REMOVED_TABLE}")),
                           np.int64)

    def short_result_note(self, asked: int, found: int) -> str | None:
        """Why a search found fewer hits than `asked` although the index holds more tiles, or
        None: a compressed search structure ranks only the tiles of the lists it probes."""
        faiss_index = self.index()
        if found >= asked or ann.is_exact(faiss_index) or found >= self._count() - 1:
            return None
        ivf = ann.probed_lists(faiss_index)
        return (f"{found} of the {asked} hits asked: this {self._count():,}-tile index searches "
                f"compressed codes, ranking only the tiles of the {ivf[0]} of {ivf[1]} lists it "
                f"probes; to score every tile use `ssjdn classify`, or ask for fewer (-k).")

    def finalize(self, approx_threshold: int = APPROX_THRESHOLD, progress=None) -> None:
        """Bring the faiss file up to date with the database (atomically replaced);
        `progress(Progress)` hears its steps."""
        with self.db.lock:
            current = self._load_file()
            if current is not None and (self._count() < approx_threshold) == ann.is_exact(current):
                self._index = current  # nothing changed (e.g. every raster was already indexed)
                return
            self._index = self._updated(approx_threshold, progress)
            with self.db.writing("save the search index file"):
                self.save(self._index)


def _deserialize_faiss(data: bytes):
    """The faiss index held in `data`, or None if faiss cannot parse it (damaged, truncated)."""
    import faiss
    try:
        return faiss.deserialize_index(np.frombuffer(data, np.uint8))
    except (RuntimeError, MemoryError):
        return None
