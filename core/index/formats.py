"""The index database's tables, and the upgrades of indexes written by earlier versions.

Format 1 kept vectors as SQLite blobs; format 2 had shard files without their tile-id files;
format 3 (current) has both. An older index is upgraded in place the first time it is opened
with write access, in one transaction, so an interruption leaves it as it was.
"""
from __future__ import annotations

import sqlite3
import time

import numpy as np

from ssjdn.core.index.database import IndexDatabase
from ssjdn.core.index.vector_rows import VectorRows

FORMAT_VERSION = "3"
# A tile's record; its vector is row `row` of shard `shard` (vector_store.py).
TILES_TABLE = """CREATE TABLE IF NOT EXISTS {name} (
    id INTEGER PRIMARY KEY, raster_id INTEGER NOT NULL,
    col_off INTEGER, row_off INTEGER, width INTEGER, height INTEGER,
    left REAL, bottom REAL, right REAL, top REAL,
    west REAL, south REAL, east REAL, north REAL, shard INTEGER NOT NULL, row INTEGER NOT NULL)"""
TILE_FIELDS = ("id, raster_id, col_off, row_off, width, height, left, bottom, right, top, "
               "west, south, east, north")
# Tiles upgraded from format 1 per step (float32 blobs read, float16 rows written).
_MIGRATE_BATCH = 50_000


def create_schema(db: IndexDatabase, model) -> None:
    """The tables (those added since an index was built, too); with `model`, the meta of a new
    index: its format, the model's fingerprint, name and vector size."""
    with db.lock:
        db.connection.executescript("""
            BEGIN;
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
            CREATE TABLE IF NOT EXISTS rasters (
                id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, mtime_ns INTEGER, size INTEGER,
                width INTEGER, height INTEGER, crs_wkt TEXT, transform TEXT, tiling TEXT,
                n_tiles INTEGER, complete INTEGER DEFAULT 0);
            CREATE TABLE IF NOT EXISTS chunks (
                raster_id INTEGER, chunk INTEGER, PRIMARY KEY (raster_id, chunk));
            CREATE TABLE IF NOT EXISTS shards (id INTEGER PRIMARY KEY, rows INTEGER NOT NULL);
        """ + TILES_TABLE.format(name="tiles") + """;
            CREATE INDEX IF NOT EXISTS tiles_by_raster ON tiles (raster_id);
            CREATE TABLE IF NOT EXISTS tile_pixels (id INTEGER PRIMARY KEY, crc INTEGER NOT NULL);
            COMMIT;
        """)
    if model is None:
        return
    with db.lock, db.connection:
        db.execute("BEGIN IMMEDIATE")
        if db.meta("model_fingerprint") is None:
            _write_model_meta(db, model)


def adopt_model_if_never_filled(db: IndexDatabase, model) -> bool:
    """Bind an index that never registered a raster (a first build that failed before planning,
    e.g. on a bad --bands) to `model`: nothing in it depends on the model that made it, so the
    next build's model takes it over instead of being refused as a mismatch. True if it did."""
    if db.read_only:
        return False
    with db.lock, db.connection:
        db.execute("BEGIN IMMEDIATE")
        if not never_filled(db):
            return False
        _write_model_meta(db, model)
        return True


def _write_model_meta(db: IndexDatabase, model) -> None:
    for key, value in (("format_version", FORMAT_VERSION), ("model_fingerprint", model.fingerprint),
                       ("model_name", getattr(model, "name", "")), ("dim", str(int(model_dim(model)))),
                       ("created", str(time.time()))):
        db.set_meta(key, value)


def never_filled(db: IndexDatabase) -> bool:
    """No raster was ever registered and no vector stored."""
    return (db.execute("SELECT 1 FROM rasters LIMIT 1").fetchone() is None
            and db.execute("SELECT 1 FROM shards LIMIT 1").fetchone() is None)


def is_format_1(db: IndexDatabase) -> bool:
    """Vectors still stored as SQLite blobs (indexes written before the shard files)."""
    with db.lock:
        return any(col[1] == "vector" for col in db.execute("PRAGMA table_info(tiles)"))


def is_format_2(db: IndexDatabase) -> bool:
    """Shards without their tile-id files (indexes written before search read by position)."""
    return not is_format_1(db) and db.meta("format_version") == "2"


def upgrade_old_formats(db: IndexDatabase, vectors: VectorRows) -> None:
    _upgrade_format_1(db, vectors)
    _upgrade_format_2(db, vectors)


def _upgrade_format_2(db: IndexDatabase, vectors: VectorRows) -> None:
    """Write each shard's tile-id file from the database, then record format 3 and a faiss
    file to rebuild (its labels were tile ids, now positions). Rows no tile references get
    id -1. Interrupted, it runs again from the start: the files are rewritten whole."""
    if not is_format_2(db):
        return
    with db.writing("upgrade the index to the current format"), db.lock:
        vectors.write_id_files()
        with db.connection:
            db.execute("BEGIN IMMEDIATE")
            db.set_meta("format_version", FORMAT_VERSION)
            db.set_meta("faiss_dirty", "1")


def _upgrade_format_1(db: IndexDatabase, vectors: VectorRows) -> None:
    """Move format-1 vectors (float32 blobs) into float16 shards, in one transaction: until
    it commits the old table is untouched, and shard rows written by an interrupted upgrade
    are overwritten by the next try (no row of `shards` records them)."""
    if not is_format_1(db):
        return
    dim = vectors.dim
    store = vectors.store
    with db.writing("upgrade the index to the current format"), db.lock, db.connection:
        db.execute("BEGIN IMMEDIATE")
        if not is_format_1(db):
            return   # another process upgraded it meanwhile
        db.execute("DROP TABLE IF EXISTS tiles_v2")
        db.execute(TILES_TABLE.format(name="tiles_v2"))
        committed, last_id = {}, -1
        while rows := db.execute(
                f"SELECT {TILE_FIELDS}, vector FROM tiles WHERE id > ? ORDER BY id LIMIT ?",
                (last_id, _MIGRATE_BATCH)).fetchall():
            shards, shard_rows, committed = store.append(
                _stack_blobs([r[-1] for r in rows], dim), [r[0] for r in rows], committed)
            db.connection.executemany(
                "INSERT INTO tiles_v2 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(*r[:-1], int(a), int(b)) for r, a, b in zip(rows, shards, shard_rows)])
            last_id = rows[-1][0]
        db.execute("DROP TABLE tiles")
        db.execute("ALTER TABLE tiles_v2 RENAME TO tiles")
        db.execute("CREATE INDEX IF NOT EXISTS tiles_by_raster ON tiles (raster_id)")
        db.execute("DELETE FROM shards")
        db.connection.executemany("INSERT INTO shards VALUES (?, ?)", committed.items())
        db.set_meta("format_version", FORMAT_VERSION)
        db.set_meta("faiss_dirty", "1")   # rebuilt from the float16 rows, like new indexes
    try:
        db.execute("VACUUM")   # give the blobs' space back to the disk
    except sqlite3.Error:
        pass   # only space: the index is complete without it


def _stack_blobs(blobs, dim: int) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dim), np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim).copy()


def model_dim(model) -> int:
    # vector_dim: an SSJDN's vectors (the embedding plus class evidence when on); `dim`: the
    # stand-in encoders of tests and benches.
    dim = getattr(model, "vector_dim", None) or getattr(model, "dim", None)
    if dim:
        return int(dim)
    return int(model.encode_texts(["dimension probe"]).shape[-1])
