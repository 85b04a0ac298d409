"""An index folder: SQLite for tiles and rasters, float16 vector shards, a faiss file derived.

SQLite is the source of truth: it holds each tile's record and where its vector sits in the
shard files (vector_store.py), and commits tile rows, shard row counts and the "chunk done"
marks in one transaction, so an interrupted build loses at most the batch in flight and a rerun
continues exactly where the last commit ended. The faiss file is rebuilt or extended from them
at the end of a build (written to a temp file, then os.replace), and rebuilt in memory whenever
it does not match the database, so it can never be stale.

Search is exact below APPROX_THRESHOLD vectors; above it compressed codes propose candidates
that are re-scored exactly from the shards (ann.py). Nothing loads every vector: heatmaps
stream one raster's rows, search reads a few hundred.

Indexes written before the shards existed (format 1: vectors as SQLite blobs) are upgraded in
place the first time they are opened with write access (one transaction, so an interruption
leaves the old index as it was).
"""
from __future__ import annotations

import errno
import json
import os
import socket
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from ssjdn.core.index import ann
from ssjdn.core import provenance
from ssjdn.core.index.ann import APPROX_THRESHOLD
from ssjdn.core.errors import UserError, os_error_as_user_error
from ssjdn.core.files import file_sha256, sha256_of
from ssjdn.core.progress import Progress, Stage
from ssjdn.core.geo.raster import change_key, raster_path
from ssjdn.core.index.vector_store import VectorShards, VectorStoreDamaged

FORMAT_VERSION = "3"
DB_NAME = "index.sqlite"
FAISS_NAME = "vectors.faiss"
LOCK_NAME = "index.lock"
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
# A lock file without readable content is being written by its owner for at most this long;
# older, its owner died between creating and filling it.
_UNREADABLE_LOCK_GRACE_S = 10.0
# Rasters whose tile grids (ids, windows, shard positions: 56 bytes a tile) stay in memory.
_CACHED_RASTERS = 4
# Stored vectors are unit vectors; float16 rounding moves a norm by < 1e-3. A row further off
# (random bytes, a file from elsewhere) is damage, never a vector to score with.
_UNIT_NORM_TOLERANCE = 1e-2
# Tile ids bound to one SQL query (IN (...)): under every SQLite build's limit of bound values.
_IDS_PER_QUERY = 10_000
# Tiles upgraded from format 1 per step (float32 blobs read, float16 rows written).
_MIGRATE_BATCH = 50_000
# Positions of deleted tiles that the saved faiss file still holds (see _note_removed_from_faiss).
_REMOVED_TABLE = "faiss_removed"
# A tile's record; its vector is row `row` of shard `shard` (vector_store.py).
_TILES_TABLE = """CREATE TABLE IF NOT EXISTS {name} (
    id INTEGER PRIMARY KEY, raster_id INTEGER NOT NULL,
    col_off INTEGER, row_off INTEGER, width INTEGER, height INTEGER,
    left REAL, bottom REAL, right REAL, top REAL,
    west REAL, south REAL, east REAL, north REAL, shard INTEGER NOT NULL, row INTEGER NOT NULL)"""
_TILE_FIELDS = ("id, raster_id, col_off, row_off, width, height, left, bottom, right, top, "
                "west, south, east, north")
# Tile ids are raster_id << 32 | tile index, so ids do not depend on the order tiles are written.
_TILE_BITS = 32
# A raster may be tiled at several scales (tile sizes): a tile index is scale << 26 | position in
# that scale's grid (67 million tiles a scale), and a chunk id likewise. Scale 0 keeps the ids
# of indexes built before scales existed.
SCALE_SHIFT = 26
_ALL_TILES = 1 << _TILE_BITS   # past the last tile index (and chunk id) of a raster


class IndexMismatchError(UserError):
    """The index was built with a different model than the one in use."""


class IndexLockedError(UserError):
    """Another process is adding to this index folder."""


class IndexLock:
    """One writer per index folder: a lock file naming its holder (pid, host, since).

    Two indexers on one folder would each encode every tile (correct, but twice the work), so
    the second is refused with the holder's name. A lock left by a dead process on this host is
    taken over. Readers (search, export) never need it: SQLite (WAL) keeps them consistent.
    """

    def __init__(self, index_dir):
        self.path = Path(index_dir) / LOCK_NAME
        self._token = None

    def acquire(self) -> "IndexLock":
        """Take the lock or raise IndexLockedError saying who holds it."""
        holder = self._try_take()
        if holder is not None:
            raise IndexLockedError(self._held_message(holder))
        return self

    def raise_if_held(self) -> None:
        """IndexLockedError if another live process holds the lock (which is not taken): a cheap
        check before work that comes ahead of acquire(), such as loading a model."""
        if self.path.exists():
            holder = _read_lock(self.path)
            if not _is_stale(self.path, holder):
                raise IndexLockedError(self._held_message(holder or {}))

    def try_acquire(self) -> bool:
        return self._try_take() is None

    def release(self) -> None:
        # Only remove our own lock: a lock taken over after ours went stale belongs to another.
        if self._token is not None and _read_lock(self.path) == self._token:
            self.path.unlink(missing_ok=True)
        self._token = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

    def _try_take(self):
        """None once the lock is ours, else the holder's record ({} if not yet readable)."""
        token = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_lock(self.path)
                if not _is_stale(self.path, holder):
                    return holder or {}
                self.path.unlink(missing_ok=True)   # its owner is gone: take it over
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(token, f)
            self._token = token
            return None
        return _read_lock(self.path) or {}

    def _held_message(self, holder: dict) -> str:
        folder = self.path.parent
        if not holder:
            who = "another process that is just starting"
        else:
            since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(holder.get("since", 0))))
            who = f"pid {holder.get('pid')} on {holder.get('host')}, since {since}"
        return (f"Another `ssjdn index` (or the app) is adding to {folder}: {who}. Wait until it "
                f"finishes, or stop it, and run this command again; searching works meanwhile. "
                f"If that process is no longer running, delete {self.path}.")


def _read_lock(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "pid" in record else None


def _is_stale(path: Path, holder: dict | None) -> bool:
    if holder is None:
        try:
            return time.time() - path.stat().st_mtime > _UNREADABLE_LOCK_GRACE_S
        except OSError:
            return True   # gone meanwhile
    if holder.get("host") != socket.gethostname():
        return False      # another machine's process: we cannot tell whether it still runs
    try:
        pid, since = int(holder["pid"]), float(holder.get("since", 0))
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, TypeError, OverflowError):
        return False      # alive under another user (or an odd record): leave it
    # The pid lives, but if that process started after the lock was taken (after a reboot, say)
    # it is another process that reuses the number.
    started = _process_start_time(pid)
    return started is not None and started > since + 1.0


def _process_start_time(pid: int) -> float | None:
    """When process `pid` started (epoch seconds), where /proc tells (Linux); else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")   # field 22: start in clock ticks
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def check_index_dir(index_dir, for_writing: bool = False) -> Path:
    """The index folder as an absolute path, or a UserError if it is a file, or read-only when
    `for_writing` (cheap: the CLI checks before loading a model)."""
    index_dir = Path(index_dir).expanduser().resolve()
    if index_dir.exists() and not index_dir.is_dir():
        raise UserError(f"--index {index_dir} is a file, not a folder. Give the folder that holds "
                        f"(or will hold) the index, e.g. --index my_index.")
    if for_writing and index_dir.exists() and not folder_is_writable(index_dir):
        raise UserError(f"The index folder {index_dir} is read-only: rasters cannot be added to "
                        f"it. Index into a folder you can write to (ssjdn index RASTER --index "
                        f"NEW_FOLDER), or ask for write access.")
    return index_dir


def _nearly_full(folder: Path) -> bool:
    """A write to a full disk can also surface as SQLite's "disk I/O error"."""
    import shutil
    try:
        return shutil.disk_usage(folder).free < 64 * 2**20
    except OSError:
        return False


def folder_is_writable(path) -> bool:
    """True if we may create and replace files in folder `path` (and write its database)."""
    path = Path(path)
    db = path / DB_NAME
    return os.access(path, os.W_OK) and (not db.exists() or os.access(db, os.W_OK))


@dataclass(frozen=True)
class RasterRecord:
    raster_id: int
    path: str
    width: int
    height: int
    crs: CRS | None
    transform: Affine
    tiling: dict
    n_tiles: int       # tiles planned
    n_indexed: int     # tiles with a vector (all-nodata tiles are never indexed)
    complete: bool


@dataclass(frozen=True)
class TileRecord:
    tile_id: int
    raster_path: str
    window: Window
    bounds: tuple[float, float, float, float]
    crs: CRS | None
    bounds_wgs84: tuple[float, float, float, float] | None
    transform: Affine   # the raster's transform (tile pixels -> raster CRS via the window)
    bands: tuple[int, ...] = ()   # the RGB bands the tile was encoded from
    tiling: str = ""    # which of its raster's tilings the tile is of, e.g. "76.8 m, overlap 0.5"
    stac: dict | None = None   # the STAC item it came from: item, collection, datetime
    nodata: object = "none"    # raster_info's nodata setting that gives the pixels it was encoded from


def tile_id_for(raster_id: int, tile_index: int) -> int:
    return (raster_id << _TILE_BITS) | tile_index


def scale_of(tile_id: int) -> int:
    """Which of its raster's tilings (0: the first) a tile id or tile index belongs to."""
    return (int(tile_id) & ((1 << _TILE_BITS) - 1)) >> SCALE_SHIFT


def tiling_slots(tiling: dict) -> list[dict]:
    """A raster's tilings, one {"tile_px": [w, h], "overlap": f} per scale, in scale order."""
    first = {"tile_px": list(tiling["tile_px"]), "overlap": float(tiling.get("overlap", 0.0))}
    return [first] + [dict(slot) for slot in tiling.get("scales", [])]


def raster_id_of(tile_ids):
    """The raster id of tile ids (an int or an int64 array), from the id alone."""
    if isinstance(tile_ids, int):
        return tile_ids >> _TILE_BITS
    return np.asarray(tile_ids, np.int64) >> _TILE_BITS


class TileIndex:
    """A tile index on disk. Open with TileIndex.open(dir, model=model)."""

    def __init__(self, index_dir: Path, db: sqlite3.Connection, read_only: bool = False):
        self.index_dir = index_dir
        self.read_only = read_only   # e.g. an archive on a shared drive: search works, nothing is written
        self._db = db
        self._lock = threading.RLock()   # the app searches from worker threads
        self._faiss = None
        self._grids: dict[int, tuple] = {}
        self._raster_fields_cache: dict[int, tuple] = {}
        self._raster_records: list[RasterRecord] | None = None
        self._store: VectorShards | None = None
        # Why the saved search file was not used (it came from elsewhere), for the caller to say.
        self.search_file_note: str | None = None

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, index_dir, model=None, create: bool = False) -> "TileIndex":
        """Open an index folder; with `create=True` make it (for `model`) if it does not exist.
        Raises IndexMismatchError if `model` is not the model that built the index."""
        index_dir = check_index_dir(index_dir, for_writing=create)
        db_path = index_dir / DB_NAME
        if not create:
            if not db_path.exists():
                raise UserError(f"No index in {index_dir}. Build one first: "
                                f"ssjdn index RASTER --index {index_dir}")
            if db_path.stat().st_size == 0:
                raise UserError(f"{db_path} is empty: the index was never built (or was wiped). "
                                f"Build it again: ssjdn index RASTER --index {index_dir}")
        elif model is None:
            raise UserError("A new index needs the model that will fill it.")
        try:
            index_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_error_as_user_error(exc, index_dir, doing="create the index folder") or exc
        read_only = not create and not folder_is_writable(index_dir)
        try:
            index = cls(index_dir, _connect(db_path, read_only), read_only)
            if create:
                with index._writing("create the index"):
                    index._create_schema(model)
                index._upgrade_old_formats()   # adding to an index written by an older version
            elif index._meta("model_fingerprint") is None:
                index.close()
                raise UserError(f"{db_path} holds no finished index (it is empty or was never "
                                f"filled). Build it again: ssjdn index RASTER --index {index_dir}")
            elif not read_only:
                index._create_schema(None)   # tables added since the index was built
                index._upgrade_old_formats()
            elif index._is_format_1() or index._is_format_2():
                index.close()
                raise UserError(f"The index in {index_dir} was built by an earlier version of SSJDN "
                                f"Explorer and must be upgraded once, but the folder is read-only. "
                                f"Copy the folder somewhere you can write and open the copy, or ask "
                                f"for write access (the upgrade rewrites part of the index once).")
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{db_path} is not a readable index ({exc}). Delete the folder and "
                            f"build the index again.") from exc
        if model is not None:
            index.check_model(model)
        return index

    def _create_schema(self, model) -> None:
        with self._lock:
            self._db.executescript("""
                BEGIN;
                CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
                CREATE TABLE IF NOT EXISTS rasters (
                    id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, mtime_ns INTEGER, size INTEGER,
                    width INTEGER, height INTEGER, crs_wkt TEXT, transform TEXT, tiling TEXT,
                    n_tiles INTEGER, complete INTEGER DEFAULT 0);
                CREATE TABLE IF NOT EXISTS chunks (
                    raster_id INTEGER, chunk INTEGER, PRIMARY KEY (raster_id, chunk));
                CREATE TABLE IF NOT EXISTS shards (id INTEGER PRIMARY KEY, rows INTEGER NOT NULL);
            """ + _TILES_TABLE.format(name="tiles") + """;
                CREATE INDEX IF NOT EXISTS tiles_by_raster ON tiles (raster_id);
                CREATE TABLE IF NOT EXISTS tile_pixels (id INTEGER PRIMARY KEY, crc INTEGER NOT NULL);
                COMMIT;
            """)
        if model is None:
            return
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            if self._meta("model_fingerprint") is None:
                dim = int(_model_dim(model))
                for key, value in (("format_version", FORMAT_VERSION),
                                   ("model_fingerprint", model.fingerprint),
                                   ("model_name", getattr(model, "name", "")),
                                   ("dim", str(dim)), ("created", str(time.time()))):
                    self._set_meta(key, value)

    def _is_format_1(self) -> bool:
        """Vectors still stored as SQLite blobs (indexes written before the shard files)."""
        with self._lock:
            return any(col[1] == "vector" for col in self._db.execute("PRAGMA table_info(tiles)"))

    def _upgrade_old_formats(self) -> None:
        self._upgrade_format_1()
        self._upgrade_format_2()

    def _is_format_2(self) -> bool:
        """Shards without their tile-id files (indexes written before search read by position)."""
        return not self._is_format_1() and self._meta("format_version") == "2"

    def _upgrade_format_2(self) -> None:
        """Write each shard's tile-id file from the database, then record format 3 and a faiss
        file to rebuild (its labels were tile ids, now positions). Rows no tile references get
        id -1. Interrupted, it runs again from the start: the files are rewritten whole."""
        if not self._is_format_2():
            return
        with self._writing("upgrade the index to the current format"), self._lock:
            self._write_id_files()
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._set_meta("format_version", FORMAT_VERSION)
                self._set_meta("faiss_dirty", "1")

    def _write_id_files(self) -> None:
        """Every shard's tile-id file, rewritten whole from the database (the source of truth);
        rows no tile references get id -1."""
        store = self._vector_store()
        tables = {shard: np.full(rows, -1, np.int64) for shard, rows in self._committed_rows().items()}
        for tile_id, shard, row in self._db.execute("SELECT id, shard, row FROM tiles"):
            tables[shard][row] = tile_id
        for shard, ids in tables.items():
            store.write_ids(shard, ids)
        store.close_files()   # a replaced file must not be read through an old descriptor

    def repair_vector_files(self) -> list[str]:
        """Before a build adds to the folder: tile-id files that are missing or short are
        rewritten from the database; a vector file that is missing or short loses the tiles it
        held (their rasters are marked unfinished, so a build encodes them again). Returns one
        warning per repair. Checks sizes only: the content is checked as it is read."""
        store, warnings = self._vector_store(), []
        committed = self._committed_rows()
        row_bytes = self.dim * np.dtype(np.float16).itemsize
        with self._writing("repair the index's vector files"), self._lock:
            short_ids = [s for s, rows in committed.items() if _size(store.ids_path(s)) < rows * 8]
            lost = [s for s, rows in committed.items() if _size(store.path(s)) < rows * row_bytes]
            if short_ids:
                self._write_id_files()
                warnings.append(f"{store.ids_path(short_ids[0])} was missing or cut short; rewrote "
                                f"the tile-id files from the index database.")
            for shard in lost:
                names = self._forget_tiles_of_shard(shard)
                warnings.append(f"{store.path(shard)} was missing or cut short: the tiles stored in "
                                f"it are gone, so {', '.join(names)} must be encoded again (this run "
                                f"does it for the rasters it was given; give the others to "
                                f"`ssjdn index` too).")
        return warnings

    def _forget_tiles_of_shard(self, shard: int) -> list[str]:
        """Drop the tiles of every raster with a vector in `shard` and mark those rasters
        unfinished, in one transaction; returns their file names."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            rasters = self._db.execute(
                "SELECT id, path FROM rasters WHERE id IN (SELECT DISTINCT raster_id FROM tiles "
                "WHERE shard = ?)", (shard,)).fetchall()
            for raster_id, _ in rasters:
                self._forget_tile_range(raster_id, 0, _ALL_TILES)
                self._db.execute("UPDATE rasters SET complete = 0 WHERE id = ?", (raster_id,))
        self._forget_loaded()
        return [Path(path).name for _, path in rasters]

    def _upgrade_format_1(self) -> None:
        """Move format-1 vectors (float32 blobs) into float16 shards, in one transaction: until
        it commits the old table is untouched, and shard rows written by an interrupted upgrade
        are overwritten by the next try (no row of `shards` records them)."""
        if not self._is_format_1():
            return
        dim = self.dim
        store = self._vector_store()
        with self._writing("upgrade the index to the current format"), self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            if not self._is_format_1():
                return   # another process upgraded it meanwhile
            self._db.execute("DROP TABLE IF EXISTS tiles_v2")
            self._db.execute(_TILES_TABLE.format(name="tiles_v2"))
            committed, last_id = {}, -1
            while rows := self._db.execute(
                    f"SELECT {_TILE_FIELDS}, vector FROM tiles WHERE id > ? ORDER BY id LIMIT ?",
                    (last_id, _MIGRATE_BATCH)).fetchall():
                shards, shard_rows, committed = store.append(
                    _stack_blobs([r[-1] for r in rows], dim), [r[0] for r in rows], committed)
                self._db.executemany(
                    "INSERT INTO tiles_v2 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(*r[:-1], int(a), int(b)) for r, a, b in zip(rows, shards, shard_rows)])
                last_id = rows[-1][0]
            self._db.execute("DROP TABLE tiles")
            self._db.execute("ALTER TABLE tiles_v2 RENAME TO tiles")
            self._db.execute("CREATE INDEX IF NOT EXISTS tiles_by_raster ON tiles (raster_id)")
            self._db.execute("DELETE FROM shards")
            self._db.executemany("INSERT INTO shards VALUES (?, ?)", committed.items())
            self._set_meta("format_version", FORMAT_VERSION)
            self._set_meta("faiss_dirty", "1")   # rebuilt from the float16 rows, like new indexes
        try:
            self._db.execute("VACUUM")   # give the blobs' space back to the disk
        except sqlite3.Error:
            pass   # only space: the index is complete without it

    def check_model(self, model) -> None:
        built_with = self._meta("model_fingerprint")
        if built_with is not None and built_with != model.fingerprint:
            raise IndexMismatchError(
                f"The index in {self.index_dir} was built with model '{self._meta('model_name')}' "
                f"(fingerprint {built_with[:12]}), not with the model in use "
                f"'{getattr(model, 'name', '?')}' ({model.fingerprint[:12]}); their vectors are not "
                f"comparable. Search it with the model that built it, or build a new index for this "
                f"model in another folder (ssjdn index RASTER --index NEW_FOLDER).")

    def refresh(self) -> None:
        """Forget the loaded vectors so the next search sees tiles another process added."""
        with self._lock:
            self._forget_loaded()

    def _forget_loaded(self) -> None:
        self._faiss = None
        self._grids.clear()
        self._raster_fields_cache.clear()
        self._raster_records = None
        if self._store is not None:
            self._store.close_files()

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._store is not None:
                self._store.close_files()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- reading -------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return self._scalar("SELECT COUNT(*) FROM tiles")

    @property
    def dim(self) -> int:
        return int(self._meta("dim"))

    @property
    def model_fingerprint(self) -> str:
        return self._meta("model_fingerprint")

    @property
    def model_name(self) -> str:
        return self._meta("model_name") or ""

    @property
    def model_source(self) -> str | None:
        """The checkpoint path or config name the index was last built with, if recorded."""
        return self._meta("model_source")

    def set_model_source(self, source: str) -> None:
        with self._writing("record the model"), self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._set_meta("model_source", str(source))

    def rasters(self) -> list[RasterRecord]:
        """Every raster's record, read once until this index writes or refresh() (counting
        the tiles of ten million-tile rasters takes most of a second; the app asks per search)."""
        with self._lock:
            if self._raster_records is None:
                rows = self._db.execute(
                    "SELECT r.id, r.path, r.width, r.height, r.crs_wkt, r.transform, r.tiling, r.n_tiles,"
                    " r.complete, (SELECT COUNT(*) FROM tiles t WHERE t.raster_id = r.id)"
                    " FROM rasters r ORDER BY r.id").fetchall()
                self._raster_records = [
                    RasterRecord(rid, path, w, h, _crs(wkt), Affine(*json.loads(tr)), json.loads(tiling),
                                 n, ni, bool(done)) for rid, path, w, h, wkt, tr, tiling, n, done, ni in rows]
            return list(self._raster_records)

    def has_overlapping_tiles(self) -> bool:
        """True when some raster has several tilings or tiles overlapping by more than half:
        then a search may find two tiles of mostly the same ground (search.search_vector)."""
        return any(len(slots) > 1 or slots[0]["overlap"] > 0.5
                   for slots in (tiling_slots(r.tiling) for r in self.rasters()))

    def raster(self, path) -> RasterRecord | None:
        path = raster_path(path)
        return next((r for r in self.rasters() if r.path == path), None)

    def tile(self, tile_id: int) -> TileRecord:
        records = self.tiles([tile_id])
        if not records:
            raise self._unknown_tile(tile_id)
        return records[0]

    def _unknown_tile(self, tile_id) -> UserError:
        return UserError(f"Tile {tile_id} is not in the index {self.index_dir}; tile ids are the "
                         f"numbers printed by `ssjdn search`.")

    def tiles(self, tile_ids) -> list[TileRecord]:
        """Tile records in the order of `tile_ids` (unknown ids are left out)."""
        ids = [int(i) for i in tile_ids]
        if not ids:
            return []
        with self._lock:
            rows = self._rows_for_ids(
                "SELECT id, raster_id, col_off, row_off, width, height, left, bottom, right, top,"
                " west, south, east, north FROM tiles WHERE id IN ({marks})",
                [i for i in ids if _fits_int64(i)])   # SQLite cannot even compare longer ones
            by_id = {}
            for (tid, rid, col, row, w, h, left, bottom, right, top, west, south, east, north) in rows:
                path, crs, transform, bands, labels, stac, nodata = self._raster_fields(rid)
                wgs84 = None if west is None else (west, south, east, north)
                label = labels[scale_of(tid)] if scale_of(tid) < len(labels) else ""
                by_id[tid] = TileRecord(tid, path, Window(col, row, w, h), (left, bottom, right, top),
                                        crs, wgs84, transform, bands, label, stac, nodata)
        return [by_id[i] for i in ids if i in by_id]

    def _rows_for_ids(self, sql: str, ids: list[int]) -> list[tuple]:
        """Rows of `sql` (whose `{marks}` is the id list) for every id, a chunk of ids per query:
        SQLite refuses more bound values than its limit (250,000 in Python's build, 32,766 in
        others), and find-all or a label file reaches that on an archive."""
        rows = []
        for start in range(0, len(ids), _IDS_PER_QUERY):
            part = ids[start:start + _IDS_PER_QUERY]
            rows += self._db.execute(sql.format(marks=_marks(part)), part).fetchall()
        return rows

    def _raster_fields(self, raster_id: int):
        """(path, CRS, transform, bands, tiling labels per scale, STAC item record or None, nodata
        setting) of a raster, parsed once:
        parsing a CRS from WKT costs about a millisecond, which every hit of every search would
        otherwise pay."""
        fields = self._raster_fields_cache.get(raster_id)
        if fields is None:
            path, wkt, transform, tiling, width, height = self._db.execute(
                "SELECT path, crs_wkt, transform, tiling, width, height FROM rasters WHERE id = ?",
                (raster_id,)).fetchone()
            crs, transform, tiling = _crs(wkt), Affine(*json.loads(transform)), json.loads(tiling)
            stac = tiling.get("stac")
            fields = (path, crs, transform, tuple(tiling.get("bands", ())),
                      tiling_labels(tiling, crs, transform, width, height),
                      {k: stac.get(k) for k in ("item", "collection", "datetime")} if stac else None,
                      _nodata_setting(tiling.get("nodata")))
            self._raster_fields_cache[raster_id] = fields
        return fields

    def vectors(self, tile_ids) -> np.ndarray:
        """float32 [N, D] vectors of `tile_ids`, in their order (UserError for an unknown id).
        Search re-ranks hundreds of candidates per query with it, so it stays in numpy."""
        if not isinstance(tile_ids, np.ndarray):
            tile_ids = [int(i) for i in tile_ids]
            if too_long := [i for i in tile_ids if not _fits_int64(i)]:
                raise self._unknown_tile(too_long[0])
        ids = np.asarray(tile_ids, np.int64).reshape(-1)
        if not len(ids):
            return np.zeros((0, self.dim), np.float32)
        with self._lock:
            rows = self._rows_for_ids("SELECT id, shard, row FROM tiles WHERE id IN ({marks})",
                                      ids.tolist())
            found = np.array(rows, np.int64).reshape(-1, 3)
            found = found[np.argsort(found[:, 0])]
            at = np.minimum(np.searchsorted(found[:, 0], ids), max(len(found) - 1, 0))
            known = (found[at, 0] == ids) if len(found) else np.zeros(len(ids), bool)
            if not known.all():
                raise self._unknown_tile(ids[~known][0])
            return self._read_vectors(found[at, 1], found[at, 2])

    def tile_ids(self) -> np.ndarray:
        """Every tile id, ascending: raster by raster (ids are raster_id << 32 | tile index), each
        raster's in tile order, as rasters() and raster_grid() list them."""
        with self._lock:
            return np.array(self._db.execute("SELECT id FROM tiles ORDER BY id").fetchall(),
                            dtype=np.int64).reshape(-1)

    def raster_grid(self, raster_id: int):
        """(tile ids [N], windows [N, 4] as col, row, width, height) of one raster, by id (which
        is tile order). Cheap after the first call: heatmaps and the map ask for it often."""
        ids, windows, _ = self._grid(raster_id)
        return ids, windows

    def iter_raster_vectors(self, raster_id: int, block: int = 65_536):
        """Yield (slice into raster_grid's order, float32 vectors [n, D]) block by block: one
        raster's vectors without holding them all (a million tiles are 2 GB in float32)."""
        ids, _, positions = self._grid(raster_id)
        for start in range(0, len(ids), block):
            part = slice(start, min(start + block, len(ids)))
            with self._lock:
                vectors = self._read_vectors(positions[part, 0], positions[part, 1])
            yield part, vectors

    def _grid(self, raster_id: int):
        with self._lock:
            if raster_id in self._grids:
                return self._grids[raster_id]
            # A raster's ids are one range of the primary key (tile_id_for): a range scan, and
            # values straight into numpy, load a million-tile grid in half the time.
            cursor = self._db.execute(
                "SELECT id, col_off, row_off, width, height, shard, row FROM tiles WHERE id >= ? AND"
                " id < ? ORDER BY id", (tile_id_for(raster_id, 0), tile_id_for(raster_id + 1, 0)))
            rows = np.fromiter((v for row in cursor for v in row), np.int64).reshape(-1, 7)
            grid = rows[:, 0].copy(), rows[:, 1:5].copy(), rows[:, 5:7].copy()
            while len(self._grids) >= _CACHED_RASTERS:
                self._grids.pop(next(iter(self._grids)))
            self._grids[raster_id] = grid
            return grid

    def _read_vectors(self, shards: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return self._checked_read(np.asarray(shards), self._vector_store().read, shards, rows)

    def _read_positions(self, positions: np.ndarray) -> np.ndarray:
        shards = np.asarray(positions, np.int64) // self._vector_store().shard_rows
        return self._checked_read(shards, self._vector_store().read_positions, positions)

    def _checked_read(self, shards: np.ndarray, read, *args) -> np.ndarray:
        """Vectors read from the shards, each checked to be a unit vector: random bytes or a
        foreign file give norms far from 1 (or NaN), and no score is computed from them."""
        try:
            vectors = read(*args)
        except (VectorStoreDamaged, OSError) as exc:
            raise self._damaged(exc) from exc
        with np.errstate(all="ignore"):   # random bytes overflow: that is what is checked
            norms = np.linalg.norm(vectors, axis=1)
        bad = ~(np.abs(norms - 1.0) <= _UNIT_NORM_TOLERANCE)   # NaN is bad too
        if bad.any():
            path = self._vector_store().path(int(np.asarray(shards).reshape(-1)[bad][0]))
            raise self._damaged(f"{path} holds rows that are not the unit vectors written there")
        return vectors

    def _damaged(self, cause) -> UserError:
        return UserError(f"The vectors of the index in {self.index_dir} are damaged or missing "
                         f"({cause}). Build the index again into a new folder (ssjdn index RASTER "
                         f"--index NEW_FOLDER).")

    def search(self, queries: np.ndarray, k: int):
        """(scores [Q, k], tile ids [Q, k]) by inner product; ids of -1 pad missing results."""
        scores, ids, _ = self.search_positions(queries, k)
        return scores, ids

    def search_positions(self, queries: np.ndarray, k: int):
        """search() with the hits' positions in the vector store (scores, tile ids, positions,
        each [Q, k]; -1 pads): vectors_at(positions) reads the hits' vectors with no lookup."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise IndexMismatchError(f"Query vectors have {queries.shape[1]} dimensions, the index "
                                     f"{self.dim}; use the model that built the index.")
        faiss_index = self._faiss_index()
        if faiss_index.ntotal == 0:
            none = np.zeros((len(queries), 0), np.int64)
            return np.zeros((len(queries), 0), np.float32), none, none
        # The search structure's labels are shard positions: candidates are read by position
        # and only the k found become tile ids, with no database lookup.
        with self._lock:
            scores, positions = ann.search(faiss_index, queries, k, self._read_positions)
            ids = np.full(positions.shape, -1, np.int64)
            found = positions >= 0
            ids[found] = self._checked_tile_ids(positions[found])
            if np.any(np.abs(scores[found]) > 1.0 + _UNIT_NORM_TOLERANCE):
                raise self._damaged("a search scored beyond the cosine range [-1, 1]")
        return scores, ids, np.where(found, positions, -1).astype(np.int64)

    def vectors_at(self, positions) -> np.ndarray:
        """float32 [N, D] stored vectors at vector-store positions (from search_positions),
        checked like every read."""
        positions = np.asarray(positions, np.int64).reshape(-1)
        if not len(positions):
            return np.zeros((0, self.dim), np.float32)
        with self._lock:
            return self._read_positions(positions)

    def _checked_tile_ids(self, positions: np.ndarray) -> np.ndarray:
        """The tile ids of the hits' rows from the tile-id files, checked against the database
        (k primary-key lookups); files that disagree are rewritten from it when the folder is
        writable, else the search is refused."""
        for attempt in range(2):
            try:
                ids = self._vector_store().tile_ids_at(positions)
                problem = self._ids_disagree(positions, ids)
            except (VectorStoreDamaged, OSError) as exc:
                problem = str(exc)
            if problem is None:
                return ids
            if attempt or self.read_only:
                raise self._damaged(problem)
            with self._writing("repair the tile-id files"):
                self._write_id_files()
        raise AssertionError("unreachable")

    def _ids_disagree(self, positions: np.ndarray, ids: np.ndarray) -> str | None:
        store = self._vector_store()
        rows = np.array(self._rows_for_ids("SELECT id, shard, row FROM tiles WHERE id IN ({marks})",
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

    def short_result_note(self, asked: int, found: int) -> str | None:
        """Why a search found fewer hits than `asked` although the index holds more tiles, or
        None: a compressed search structure ranks only the tiles of the lists it probes."""
        faiss_index = self._faiss_index()
        if found >= asked or ann.is_exact(faiss_index) or found >= self.count - 1:
            return None
        ivf = ann.probed_lists(faiss_index)
        return (f"{found} of the {asked} hits asked: this {self.count:,}-tile index searches "
                f"compressed codes, ranking only the tiles of the {ivf[0]} of {ivf[1]} lists it "
                f"probes; to score every tile use `ssjdn classify`, or ask for fewer (-k).")

    # -- writing (used by the indexing pipeline) -------------------------------------------------
    def begin_raster(self, info, tiling: dict, n_tiles: int) -> tuple[int, bool, dict]:
        """Register a raster for indexing; returns (raster_id, already_complete, stored tiling).

        A raster indexed before with the same file and tiling keeps its tiles (incremental and
        resumable); a changed file or tiling drops its old tiles so they are encoded again.
        "chunk_px" is not part of the comparison: it only says how the work was cut, and a
        resumed raster keeps its stored chunking (returned) so its done marks stay valid.
        """
        mtime_ns, size = change_key(info)
        with self._writing("add a raster"), self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT id, mtime_ns, size, tiling, complete FROM rasters "
                                   "WHERE path = ?", (info.path,)).fetchone()
            if row is not None:
                rid, old_mtime_ns, old_size, old_tiling, complete = row
                stored = json.loads(old_tiling)
                if (old_mtime_ns, old_size) == (mtime_ns, size) and _grid(stored) == _grid(tiling):
                    if tiling_slots(stored) != tiling_slots(tiling):
                        stored, complete = self._change_scales(rid, stored, tiling, n_tiles), False
                    if _content(stored) == _content(tiling):
                        return rid, bool(complete), stored
                    return rid, False, self._begin_refresh(rid, stored, tiling)
                self._forget_tile_range(rid, 0, _ALL_TILES)
                self._db.execute("DELETE FROM rasters WHERE id = ?", (rid,))
                self._forget_loaded()
            cur = self._db.execute(
                "INSERT INTO rasters (id, path, mtime_ns, size, width, height, crs_wkt, transform,"
                " tiling, n_tiles, complete) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                (row[0] if row else None, info.path, mtime_ns, size, info.width,
                 info.height, info.crs.to_wkt() if info.crs else None,
                 json.dumps(list(info.transform)[:6]), json.dumps(tiling, sort_keys=True), n_tiles))
            return cur.lastrowid, False, tiling

    def _change_scales(self, raster_id: int, stored: dict, tiling: dict, n_tiles: int) -> dict:
        """Same file, other tilings: a scale whose tiling is unchanged keeps its tiles, the
        others' tiles go (a new scale's are encoded). Returns the stored record with the new
        tilings, its content part and chunking unchanged."""
        old, new = tiling_slots(stored), tiling_slots(tiling)
        for scale, slot in enumerate(old):
            if scale >= len(new) or new[scale] != slot:
                self._drop_scale(raster_id, scale)
        updated = dict(stored, tile_px=tiling["tile_px"], overlap=tiling.get("overlap", 0.0))
        updated.pop("scales", None)
        if "scales" in tiling:
            updated["scales"] = tiling["scales"]
        self._db.execute("UPDATE rasters SET tiling = ?, n_tiles = ?, complete = 0 WHERE id = ?",
                         (json.dumps(updated, sort_keys=True), n_tiles, raster_id))
        self._forget_loaded()
        return updated

    def _drop_scale(self, raster_id: int, scale: int) -> None:
        self._forget_tile_range(raster_id, scale << SCALE_SHIFT, (scale + 1) << SCALE_SHIFT)

    def _forget_tile_range(self, raster_id: int, first: int, past: int) -> None:
        """Delete a raster's tiles with an index in [first, past) (chunk ids share the range),
        their pixel checksums and chunk marks, after recording their positions in the saved
        faiss file (see _note_removed_from_faiss). Inside the caller's transaction."""
        lo, hi = tile_id_for(raster_id, first), tile_id_for(raster_id, past)
        self._note_removed_from_faiss("id >= ? AND id < ?", (lo, hi))
        for table in ("tiles", "tile_pixels"):
            self._db.execute(f"DELETE FROM {table} WHERE id >= ? AND id < ?", (lo, hi))
        self._db.execute("DELETE FROM chunks WHERE raster_id = ? AND chunk >= ? AND chunk < ?",
                         (raster_id, first, past))

    def _begin_refresh(self, raster_id: int, stored: dict, tiling: dict) -> dict:
        """Same grid, other nodata setting: the raster's tiles stay, every chunk is read again and
        only tiles whose pixels changed are encoded (see tile_checks). `refresh_from` keeps the
        setting the tiles were encoded under until the raster is complete, so an interrupted
        refresh resumes as one."""
        refreshed = dict(tiling, refresh_from=stored.get("refresh_from", _content(stored)))
        self._db.execute("UPDATE rasters SET tiling = ?, complete = 0 WHERE id = ?",
                         (json.dumps(refreshed, sort_keys=True), raster_id))
        self._db.execute("DELETE FROM chunks WHERE raster_id = ?", (raster_id,))
        self._forget_loaded()
        return refreshed

    def tile_checks(self, raster_id: int) -> dict[int, int | None]:
        """{tile index: checksum of the pixels it was encoded from (None if not recorded)} of a
        raster's tiles in the index."""
        with self._lock:
            rows = self._db.execute(
                "SELECT t.id, p.crc FROM tiles t LEFT JOIN tile_pixels p ON p.id = t.id"
                " WHERE t.id >= ? AND t.id < ?", (tile_id_for(raster_id, 0), tile_id_for(raster_id + 1, 0)))
            return {tile_id & ((1 << _TILE_BITS) - 1): crc for tile_id, crc in rows}

    def _note_removed_from_faiss(self, where: str, params: tuple) -> None:
        """Record the positions of the tiles `where` selects before they are deleted (same
        transaction): the saved faiss file drops them when it is next brought up to date,
        instead of being rebuilt (k-means over every vector: 17 min at 10M tiles). A crash in
        between leaves the record, so a search never returns a replaced tile."""
        self._db.execute(f"CREATE TABLE IF NOT EXISTS {_REMOVED_TABLE} (position INTEGER PRIMARY KEY)")
        self._db.execute(f"INSERT OR IGNORE INTO {_REMOVED_TABLE} SELECT shard * ? + row FROM tiles "
                         f"WHERE {where}", (self._vector_store().shard_rows, *params))

    def _removed_from_faiss(self) -> np.ndarray:
        """Positions still in the saved faiss file whose tiles were deleted since."""
        if not self._has_table(_REMOVED_TABLE):
            return np.zeros(0, np.int64)
        return np.fromiter((p for (p,) in self._db.execute(f"SELECT position FROM {_REMOVED_TABLE}")),
                           np.int64)

    def _has_table(self, name: str) -> bool:
        return self._db.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND "
                                "name = ?", (name,)).fetchone()[0] == 1

    def done_chunks(self, raster_id: int) -> set[int]:
        with self._lock:
            return {c for (c,) in self._db.execute("SELECT chunk FROM chunks WHERE raster_id = ?",
                                                    (raster_id,))}

    def commit(self, raster_id: int, tiles, vectors: np.ndarray, chunk_ids, checks=None,
               removed=(), replacing: bool = False) -> None:
        """Write encoded tiles and mark their chunks done, all or nothing. `checks` maps tile
        indices to the checksums of their pixels (the tiles written, and tiles kept as they
        were); `removed` are tile indices to delete. With `replacing` the written tiles may
        already be in the index (a refresh): their old vectors leave the search structure."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        rows = []
        for tile, vector in zip(tiles, vectors):
            w = tile.window
            wgs84 = tile.bounds_wgs84 or (None, None, None, None)
            rows.append((tile_id_for(raster_id, tile.index), raster_id, int(w.col_off), int(w.row_off),
                         int(w.width), int(w.height), *tile.bounds, *wgs84))
        with self._writing("save encoded tiles"), self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            # The shard rows are on disk before this transaction records them (vector_store.py).
            shards, shard_rows, counts = self._vector_store().append(
                vectors, [r[0] for r in rows], self._committed_rows())
            rows = [(*r, int(shard), int(row)) for r, shard, row in zip(rows, shards, shard_rows)]
            gone = [tile_id_for(raster_id, i) for i in removed]
            if replacing or gone:
                self._drop_tiles(gone, [r[0] for r in rows])
            self._write_batch(rows, [(raster_id, c) for c in chunk_ids], counts)
            self._db.executemany("INSERT OR REPLACE INTO tile_pixels VALUES (?, ?)",
                                 [(tile_id_for(raster_id, i), int(crc)) for i, crc in (checks or {}).items()])
            self._forget_loaded()

    def _drop_tiles(self, removed_ids: list[int], replaced_ids: list[int]) -> None:
        """Delete tiles, and take them and the tiles about to be replaced out of the saved faiss
        file (their rows stay in the shards, unreferenced; see _note_removed_from_faiss)."""
        ids = removed_ids + replaced_ids
        for start in range(0, len(ids), _IDS_PER_QUERY):   # under SQLite's limit of bound values
            part = ids[start:start + _IDS_PER_QUERY]
            self._note_removed_from_faiss(f"id IN ({_marks(part)})", tuple(part))
        for start in range(0, len(removed_ids), _IDS_PER_QUERY):
            part = removed_ids[start:start + _IDS_PER_QUERY]
            self._db.execute(f"DELETE FROM tiles WHERE id IN ({_marks(part)})", part)
            self._db.execute(f"DELETE FROM tile_pixels WHERE id IN ({_marks(part)})", part)

    def _write_batch(self, tile_rows, chunk_rows, shard_counts: dict) -> None:
        self._db.executemany("INSERT OR REPLACE INTO tiles VALUES "
                             "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", tile_rows)
        self._db.executemany("INSERT OR IGNORE INTO chunks VALUES (?, ?)", chunk_rows)
        self._db.executemany("INSERT OR REPLACE INTO shards VALUES (?, ?)", shard_counts.items())

    def _committed_rows(self) -> dict[int, int]:
        return dict(self._db.execute("SELECT id, rows FROM shards"))

    def _vector_store(self) -> VectorShards:
        if self._store is None:
            self._store = VectorShards(self.index_dir, self.dim)
        return self._store

    def mark_complete(self, raster_id: int) -> None:
        with self._writing("finish a raster"), self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            (tiling,) = self._db.execute("SELECT tiling FROM rasters WHERE id = ?", (raster_id,)).fetchone()
            finished = {k: v for k, v in json.loads(tiling).items() if k != "refresh_from"}
            self._db.execute("UPDATE rasters SET complete = 1, tiling = ? WHERE id = ?",
                             (json.dumps(finished, sort_keys=True), raster_id))

    @contextmanager
    def _writing(self, what: str):
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
            self._raster_records = None   # any write may change a raster's record

    def _disk_full_message(self, what: str) -> str:
        return (f"The disk holding {self.index_dir} is full: could not {what}, so indexing stopped. "
                f"Everything indexed before is saved and safe. Free some space and run the same "
                f"command again to continue where it stopped.")

    def finalize(self, approx_threshold: int = APPROX_THRESHOLD, progress=None) -> None:
        """Bring the faiss file up to date with the database (atomically replaced);
        `progress(Progress)` hears its steps."""
        with self._lock:
            current = self._load_faiss_file()
            if current is not None and (self.count < approx_threshold) == ann.is_exact(current):
                self._faiss = current  # nothing changed (e.g. every raster was already indexed)
                return
            self._faiss = self._updated_faiss(approx_threshold, progress)
            with self._writing("save the search index file"):
                self._save_faiss(self._faiss)

    # -- labelled sets (relevance marks, issue 10) ----------------------------------------------
    # Tables are created on first use, so indexes built before labelled sets existed still open.
    def save_label_set(self, name: str, labels: dict, overwrite: bool = False) -> None:
        """Store `labels` ({tile_id: True relevant / False not relevant}) as the set `name`, in one
        transaction. An existing set is replaced only with `overwrite` (else UserError)."""
        name = _label_set_name(name)
        rows = [(name, int(tile_id), int(bool(label))) for tile_id, label in labels.items()]
        with self._writing("save a labelled set"), self._lock, self._db:
            self._ensure_label_tables()
            self._db.execute("BEGIN IMMEDIATE")
            exists = self._db.execute("SELECT 1 FROM label_sets WHERE name = ?", (name,)).fetchone()
            if exists and not overwrite:
                raise UserError(f"A labelled set named '{name}' already exists in {self.index_dir}; "
                                "choose another name or replace it.")
            known = {r.tile_id for r in self.tiles([r[1] for r in rows])}
            unknown = [r[1] for r in rows if r[1] not in known]
            if unknown:
                raise UserError(f"Tile {unknown[0]} is not in the index {self.index_dir}; a labelled "
                                "set holds tiles of its own index only.")
            self._db.execute("DELETE FROM labels WHERE set_name = ?", (name,))
            self._db.execute("INSERT OR REPLACE INTO label_sets VALUES (?, ?)", (name, time.time()))
            self._db.executemany("INSERT INTO labels VALUES (?, ?, ?)", rows)

    def label_sets(self) -> list[tuple[str, int, int]]:
        """(name, relevant count, not relevant count) of every stored set, by name."""
        with self._lock:
            if not self._has_label_tables():
                return []
            return [tuple(r) for r in self._db.execute(
                "SELECT s.name, COALESCE(SUM(l.label = 1), 0), COALESCE(SUM(l.label = 0), 0)"
                " FROM label_sets s LEFT JOIN labels l ON l.set_name = s.name"
                " GROUP BY s.name ORDER BY s.name")]

    def load_label_set(self, name: str) -> dict[int, bool]:
        """{tile_id: relevant?} of a stored set; UserError naming the stored sets if unknown."""
        with self._lock:
            if not self._has_label_tables() or not self._db.execute(
                    "SELECT 1 FROM label_sets WHERE name = ?", (name,)).fetchone():
                names = ", ".join(s[0] for s in self.label_sets()) or "none yet"
                raise UserError(f"No labelled set named '{name}' in {self.index_dir} (stored: {names}).")
            return {tid: bool(label) for tid, label in self._db.execute(
                "SELECT tile_id, label FROM labels WHERE set_name = ? ORDER BY rowid", (name,))}

    def delete_label_set(self, name: str) -> bool:
        """Remove a stored set; False if there was none of that name."""
        with self._writing("delete a labelled set"), self._lock, self._db:
            if not self._has_label_tables():
                return False
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM labels WHERE set_name = ?", (name,))
            return self._db.execute("DELETE FROM label_sets WHERE name = ?", (name,)).rowcount > 0

    def _has_label_tables(self) -> bool:
        # Reading never creates them: a read-only index must still list (no) sets.
        return self._has_table("label_sets") and self._has_table("labels")

    def _ensure_label_tables(self) -> None:
        self._db.execute("CREATE TABLE IF NOT EXISTS label_sets (name TEXT PRIMARY KEY, updated REAL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS labels (set_name TEXT NOT NULL, tile_id INTEGER "
                         "NOT NULL, label INTEGER NOT NULL, PRIMARY KEY (set_name, tile_id))")

    # -- faiss ---------------------------------------------------------------------------------
    def prepare_search(self, progress=None) -> None:
        """Load the search structure now, bringing it up to date if it must be (a missing or
        damaged file, an interrupted build: minutes at 10M tiles); `progress(Progress)` hears
        those steps. Searching does the same on its first call, silently."""
        self._faiss_index(progress)

    def _faiss_index(self, progress=None):
        with self._lock:
            # Checked against the database once per load, not per query: COUNT(*) over a million
            # rows would cost more than the search. Writes through this object reset it.
            if self._faiss is None:
                self._faiss = self._load_faiss_file()
                if self._faiss is None and self.search_file_note and progress is not None:
                    stage = Stage.SEARCH_STRUCTURE   # the note goes to the app's status line
                    progress(Progress(stage, message=f"{stage.value}: {self.search_file_note}"))
                if self._faiss is None:
                    # e.g. an indexing run died before its last step: catch up from the saved
                    # file when it can be trusted, else rebuild from the database.
                    self._faiss = self._updated_faiss(APPROX_THRESHOLD, progress)
                    self._try_to_save_rebuilt(self._faiss)
            return self._faiss

    def _save_faiss(self, faiss_index) -> None:
        """Write the faiss file atomically and record what it holds, with its checksum, here
        and in this installation's list of files it wrote (core.provenance): a file that is
        damaged, changed, or copied from another index or computer, never matches and is
        rebuilt from the checked vectors."""
        import faiss

        from ssjdn.core.files import atomic_path
        with atomic_path(self.index_dir / FAISS_NAME) as tmp:
            faiss.write_index(faiss_index, str(tmp))
            checksum = file_sha256(tmp)
            provenance.remember_written(checksum)
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._set_meta("faiss_ntotal", str(faiss_index.ntotal))
            self._set_meta("faiss_rows", str(self._total_rows()))
            self._set_meta("faiss_sha256", checksum)
            self._set_meta("faiss_dirty", "0")
            if self._has_table(_REMOVED_TABLE):
                self._db.execute(f"DELETE FROM {_REMOVED_TABLE}")   # the file holds none of them

    def _try_to_save_rebuilt(self, faiss_index) -> None:
        """After a search had to rebuild the faiss file in memory, save it for the next run when
        the folder is writable and no indexer holds it; otherwise the next `ssjdn index` will."""
        if self.read_only:
            return
        lock = IndexLock(self.index_dir)
        if not lock.try_acquire():
            return
        try:
            self._save_faiss(faiss_index)
        except (OSError, UserError, sqlite3.Error):
            pass  # a cache of the database, not data: failing to save it loses nothing
        finally:
            lock.release()

    def _faiss_file_is_current(self) -> bool:
        """True if the faiss file is the one last written for exactly this database content."""
        return self._load_faiss_file() is not None

    def _trusted_saved_faiss(self):
        """The saved faiss index (with its recorded nprobe) if its bytes are those this database
        recorded and this installation wrote, else None. The file is read once, hashed and
        parsed from the same bytes, so nothing can change it in between; a file written by
        another installation (an index folder shared by a colleague) sets
        `search_file_note` and is rebuilt from the index's checked vectors."""
        if self._meta("faiss_dirty") == "1" or self._meta("faiss_sha256") is None:
            return None
        path = self.index_dir / FAISS_NAME
        try:
            data = path.read_bytes()
        except OSError:
            return None
        digest = sha256_of(data)
        if digest != self._meta("faiss_sha256"):
            return None
        if not provenance.written_here(digest):
            self.search_file_note = (
                f"{path} was not written by this installation (a copied or shared index folder), "
                f"so it is rebuilt from the index's vectors" +
                ("." if self.read_only else " and saved again."))
            return None
        saved = _deserialize_faiss(data)
        if saved is None or str(saved.ntotal) != self._meta("faiss_ntotal"):
            return None
        ann.apply_nprobe(saved, self._meta("nprobe"))
        return saved

    def _load_faiss_file(self):
        """The saved faiss index if it matches the database exactly, else None."""
        if self._meta("faiss_ntotal") != str(self.count) or self._meta("faiss_rows") != str(self._total_rows()):
            return None
        saved = self._trusted_saved_faiss()
        return saved if saved is not None and saved.ntotal == self.count else None

    def _updated_faiss(self, approx_threshold: int, progress=None):
        saved = self._load_saved_for_append()
        count = self.count
        if saved is not None and (count < approx_threshold) == ann.is_exact(saved):
            new_positions, read = self._live_positions(int(self._meta("faiss_rows") or 0))
            ann.add_blocks(saved, new_positions, read, progress)
            if saved.ntotal == count:
                return saved
        return self._build_faiss_all(approx_threshold, progress)

    def _load_saved_for_append(self):
        if self._meta("faiss_rows") is None:
            return None
        saved = self._trusted_saved_faiss()
        if saved is None:
            return None
        removed = self._removed_from_faiss()
        if len(removed):
            import faiss
            saved.remove_ids(faiss.IDSelectorBatch(removed))
        return saved

    def _build_faiss_all(self, approx_threshold: int, progress=None):
        positions, read = self._live_positions(0)
        faiss_index, nprobe = ann.build_ann(positions, read, self.dim, approx_threshold,
                                            progress=progress)
        if nprobe is not None and not self.read_only:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._set_meta("nprobe", str(nprobe))
        return faiss_index

    def _live_positions(self, first: int):
        """(positions >= `first` of every tile's row [N] ascending, read(indices into them) ->
        float32 vectors): the search structure's labels. 8 bytes a tile in memory; rows left by
        replaced tiles are not among them."""
        rows = self._vector_store().shard_rows
        shard, row = divmod(int(first), rows)
        found = np.fromiter((v for pair in self._db.execute(
            "SELECT shard, row FROM tiles WHERE shard > ? OR (shard = ? AND row >= ?)",
            (shard, shard, row)) for v in pair), np.int64).reshape(-1, 2)
        positions = np.sort(self._vector_store().positions(found[:, 0], found[:, 1]))
        return positions, lambda indices: self._read_positions(positions[indices])

    def _total_rows(self) -> int:
        return self._scalar("SELECT COALESCE(SUM(rows), 0) FROM shards")

    # -- small helpers -------------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def _scalar(self, sql: str, params=()):
        with self._lock:
            return self._db.execute(sql, params).fetchone()[0]


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


def _deserialize_faiss(data: bytes):
    """The faiss index held in `data`, or None if faiss cannot parse it (damaged, truncated)."""
    import faiss
    try:
        return faiss.deserialize_index(np.frombuffer(data, np.uint8))
    except (RuntimeError, MemoryError):
        return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _stack_blobs(blobs, dim: int) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dim), np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim).copy()


def _model_dim(model) -> int:
    # vector_dim: an SSJDN's vectors (the embedding plus class evidence when on); `dim`: the
    # stand-in encoders of tests and benches.
    dim = getattr(model, "vector_dim", None) or getattr(model, "dim", None)
    if dim:
        return int(dim)
    return int(model.encode_texts(["dimension probe"]).shape[-1])


def _label_set_name(name) -> str:
    text = str(name or "").strip()
    if not text:
        raise UserError("A labelled set needs a name, e.g. 'solar farms'.")
    return text


# Parts of a raster's tiling record that say what its tiles hold rather than where they are:
# a change re-reads the raster but encodes only tiles whose pixels changed.
_CONTENT_KEYS = ("nodata", "max_nodata")
# Before the nodata threshold existed only tiles without any valid pixel were left out.
_OLD_MAX_NODATA = 1.0


def _grid(tiling: dict) -> dict:
    """What must match for any of a raster's tiles to be kept (each scale's own tiling is
    compared apart, see _change_scales)."""
    return {key: value for key, value in tiling.items()
            if key not in ("chunk_px", "refresh_from", "tile_px", "overlap", "scales", *_CONTENT_KEYS)}


def _content(tiling: dict) -> dict:
    return {"nodata": tiling.get("nodata"), "max_nodata": tiling.get("max_nodata", _OLD_MAX_NODATA)}


def tiling_labels(tiling: dict, crs, transform: Affine, width: int, height: int) -> list[str]:
    """Each scale's tiling in words, e.g. "76.8 m, overlap 0.5" ("256 px" without a CRS)."""
    from types import SimpleNamespace

    from rasterio.transform import array_bounds

    from ssjdn.core.geo.raster import pixel_size_m
    left, bottom, right, top = array_bounds(height, width, transform)
    grid = SimpleNamespace(crs=crs, res=(abs(transform.a), abs(transform.e)),
                           bounds=(left, bottom, right, top))
    pixel_m = pixel_size_m(grid)
    labels = []
    for slot in tiling_slots(tiling):
        size = f"{slot['tile_px'][0] * pixel_m[0]:.1f} m" if pixel_m else f"{slot['tile_px'][0]} px"
        labels.append(size + (f", overlap {slot['overlap']:g}" if slot["overlap"] else ""))
    return labels


def _nodata_setting(policy: dict | None):
    """raster_info's nodata setting that reproduces a recorded policy (raster.nodata_policy):
    none recorded means nothing beyond the file's own mask was nodata."""
    from ssjdn.core.geo.raster import NODATA_AUTO, NODATA_NONE
    if not policy:
        return NODATA_NONE
    return NODATA_AUTO if policy.get("origin") == "collar" else policy["value"]


def _crs(wkt):
    return CRS.from_wkt(wkt) if wkt else None


def _fits_int64(tile_id: int) -> bool:
    """Tile ids are SQLite integers (raster_id << 32 | tile index): longer numbers name no tile."""
    return -(1 << 63) <= tile_id < (1 << 63)


def _marks(values) -> str:
    return ",".join("?" * len(values))
