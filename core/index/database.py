"""The index database that TileIndex's parts share: one SQLite connection and one lock (the app
searches from worker threads), the meta table, id lists bound in chunks, and the translation of
a full disk or a read-only file into one message.

SQLite is the source of truth of an index folder (see index_store.py); the parts (formats.py,
vector_rows.py, search_file.py, label_sets.py) are each handed this object, never each other's
connection, so they read and write in the same transactions.
"""
from __future__ import annotations

import errno
import shutil
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from ssjdn.core.errors import UserError, os_error_as_user_error

DB_NAME = "index.sqlite"
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
# Tile ids bound to one SQL query (IN (...)): under every SQLite build's limit of bound values.
IDS_PER_QUERY = 10_000


class IndexDatabase:
    """The connection to an index folder's database, with the lock every access holds."""

    def __init__(self, index_dir: Path, connection: sqlite3.Connection, read_only: bool = False):
        self.index_dir = index_dir
        self.connection = connection
        self.read_only = read_only   # e.g. an archive on a shared drive: search works, nothing is written
        self.lock = threading.RLock()
        # How many writing() blocks have ended: a cache of what any write may change (the
        # rasters' records) is valid while this count is the one it was read at.
        self.writes = 0

    @classmethod
    def connect(cls, index_dir: Path, read_only: bool) -> "IndexDatabase":
        return cls(index_dir, _connect(index_dir / DB_NAME, read_only), read_only)

    def execute(self, sql: str, params=()) -> sqlite3.Cursor:
        return self.connection.execute(sql, params)

    def meta(self, key: str) -> str | None:
        with self.lock:
            row = self.connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        """Inside the caller's transaction."""
        self.connection.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def scalar(self, sql: str, params=()):
        with self.lock:
            return self.connection.execute(sql, params).fetchone()[0]

    def has_table(self, name: str) -> bool:
        return self.scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
                           (name,)) == 1

    def rows_for_ids(self, sql: str, ids: list[int]) -> list[tuple]:
        """Rows of `sql` (whose `{marks}` is the id list) for every id, a chunk of ids per query:
        SQLite refuses more bound values than its limit (250,000 in Python's build, 32,766 in
        others), and find-all or a label file reaches that on an archive."""
        rows = []
        for start in range(0, len(ids), IDS_PER_QUERY):
            part = ids[start:start + IDS_PER_QUERY]
            rows += self.connection.execute(sql.format(marks=marks(part)), part).fetchall()
        return rows

    @contextmanager
    def writing(self, what: str):
        """Turn a full disk or a read-only database into one message; committed work is safe
        (each batch is one SQLite transaction and the faiss file is replaced atomically)."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            text = str(exc).lower()
            if "full" in text or ("disk i/o error" in text and _nearly_full(self.index_dir)):
                raise UserError(self._disk_full_message(what)) from exc
            if "readonly" in text or "read-only" in text:
                raise UserError(f"Cannot {what}: the index {self.index_dir} is read-only. Index into "
                                f"a folder you can write to, or ask for write access.") from exc
            raise
        except (OSError, UserError) as exc:
            # atomic_path already names the file; a full disk still gets the indexing message.
            cause = exc.__cause__ if isinstance(exc, UserError) else exc
            if isinstance(cause, OSError) and cause.errno in _DISK_FULL:
                raise UserError(self._disk_full_message(what)) from cause
            user_error = None if isinstance(exc, UserError) else os_error_as_user_error(exc, self.index_dir)
            if user_error is None:
                raise
            raise user_error from exc
        finally:
            self.writes += 1   # any write may change a raster's record

    def _disk_full_message(self, what: str) -> str:
        return (f"The disk holding {self.index_dir} is full: could not {what}, so indexing stopped. "
                f"Everything indexed before is saved and safe. Free some space and run the same "
                f"command again to continue where it stopped.")

    def close(self) -> None:
        with self.lock:
            self.connection.close()


def marks(values) -> str:
    """The `?` placeholders of an IN (...) list of `values`."""
    return ",".join("?" * len(values))


def fits_int64(tile_id: int) -> bool:
    """Tile ids are SQLite integers (raster_id << 32 | tile index): longer numbers name no tile."""
    return -(1 << 63) <= tile_id < (1 << 63)


def _nearly_full(folder: Path) -> bool:
    """A write to a full disk can also surface as SQLite's "disk I/O error"."""
    try:
        return shutil.disk_usage(folder).free < 64 * 2**20
    except OSError:
        return False


def _connect(db_path: Path, read_only: bool) -> sqlite3.Connection:
    """A connection to the index database; read-only ones write nothing, not even WAL files."""
    if not read_only:
        db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db
    uri = f"file:{quote(str(db_path))}?mode=ro"
    db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
    try:
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        # A WAL database in a folder we cannot write (no -shm file can be made): nobody can be
        # writing it either, so read it as immutable.
        db.close()
        return sqlite3.connect(uri + "&immutable=1", uri=True, check_same_thread=False,
                               isolation_level=None)
