"""An index folder: SQLite for tiles, rasters and vectors; a faiss file derived from them.

SQLite is the source of truth. Each committed batch holds tile rows, their vectors and the
"chunk done" marks in one transaction, so an interrupted build loses at most the batch in
flight and a rerun continues exactly where the last commit ended. The faiss file is rebuilt or
extended from SQLite at the end of a build (written to a temp file, then os.replace), and
rebuilt in memory whenever it does not match the database, so it can never be stale.

Search is exact (IndexFlatIP) below APPROX_THRESHOLD vectors; above it an IVF index is
trained and its nprobe is chosen by measuring recall@10 against exact search on a sample.
"""
from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from ssjdn.core.errors import UserError

FORMAT_VERSION = "1"
DB_NAME = "index.sqlite"
FAISS_NAME = "vectors.faiss"
# Below this many vectors exact search is fast enough: ~6 ms at 50k x 512 on one core, while
# at 100k it is 12-19 ms, most of the 20 ms budget that text encoding also needs (bench_search).
APPROX_THRESHOLD = 50_000
# nprobe is raised until IVF recall@10 against exact search reaches this on a sample.
TARGET_RECALL = 0.97
# Never probe fewer lists than this: the calibration sample is small and real queries (text)
# sit farther from the data than it; 16 lists of a 1M index are ~8k vectors, well under 1 ms.
MIN_NPROBE = 16
# Rasters whose vectors stay in memory for heatmaps (each is N x D float32).
_CACHED_RASTERS = 2
# Tile ids are raster_id << 32 | tile index, so ids do not depend on the order tiles are written.
_TILE_BITS = 32


class IndexMismatchError(UserError):
    """The index was built with a different model than the one in use."""


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


def tile_id_for(raster_id: int, tile_index: int) -> int:
    return (raster_id << _TILE_BITS) | tile_index


class TileIndex:
    """A tile index on disk. Open with TileIndex.open(dir, model=model)."""

    def __init__(self, index_dir: Path, db: sqlite3.Connection):
        self.index_dir = index_dir
        self._db = db
        self._lock = threading.RLock()   # the app searches from worker threads
        self._faiss = None
        self._raster_cache: dict[int, tuple] = {}

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, index_dir, model=None, create: bool = False) -> "TileIndex":
        """Open an index folder; with `create=True` make it (for `model`) if it does not exist.
        Raises IndexMismatchError if `model` is not the model that built the index."""
        index_dir = Path(index_dir).expanduser().resolve()
        db_path = index_dir / DB_NAME
        if not db_path.exists():
            if not create:
                raise UserError(f"No index in {index_dir}. Build one first: "
                                f"ssjdn index RASTER --index {index_dir}")
            if model is None:
                raise UserError("A new index needs the model that will fill it.")
            index_dir.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            index = cls(index_dir, db)
            index._create_schema(model)
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
                CREATE TABLE IF NOT EXISTS tiles (
                    id INTEGER PRIMARY KEY, raster_id INTEGER NOT NULL,
                    col_off INTEGER, row_off INTEGER, width INTEGER, height INTEGER,
                    left REAL, bottom REAL, right REAL, top REAL,
                    west REAL, south REAL, east REAL, north REAL, vector BLOB NOT NULL);
                CREATE INDEX IF NOT EXISTS tiles_by_raster ON tiles (raster_id);
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
            self._faiss = None
            self._raster_cache.clear()

    def close(self) -> None:
        with self._lock:
            self._db.close()

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
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._set_meta("model_source", str(source))

    def rasters(self) -> list[RasterRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT r.id, r.path, r.width, r.height, r.crs_wkt, r.transform, r.tiling, r.n_tiles,"
                " r.complete, (SELECT COUNT(*) FROM tiles t WHERE t.raster_id = r.id)"
                " FROM rasters r ORDER BY r.id").fetchall()
        return [RasterRecord(rid, path, w, h, _crs(wkt), Affine(*json.loads(tr)), json.loads(tiling),
                             n, ni, bool(done)) for rid, path, w, h, wkt, tr, tiling, n, done, ni in rows]

    def raster(self, path) -> RasterRecord | None:
        path = str(Path(path).expanduser().resolve())
        return next((r for r in self.rasters() if r.path == path), None)

    def tile(self, tile_id: int) -> TileRecord:
        records = self.tiles([tile_id])
        if not records:
            raise UserError(f"Tile {tile_id} is not in the index {self.index_dir}; tile ids are the "
                            f"numbers printed by `ssjdn search`.")
        return records[0]

    def tiles(self, tile_ids) -> list[TileRecord]:
        """Tile records in the order of `tile_ids` (unknown ids are left out)."""
        ids = [int(i) for i in tile_ids]
        if not ids:
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT t.id, r.path, t.col_off, t.row_off, t.width, t.height, t.left, t.bottom,"
                " t.right, t.top, t.west, t.south, t.east, t.north, r.crs_wkt, r.transform, r.tiling"
                f" FROM tiles t JOIN rasters r ON r.id = t.raster_id WHERE t.id IN ({_marks(ids)})",
                ids).fetchall()
        by_id = {}
        for (tid, path, col, row, w, h, left, bottom, right, top, west, south, east, north,
             wkt, tr, tiling) in rows:
            wgs84 = None if west is None else (west, south, east, north)
            by_id[tid] = TileRecord(tid, path, Window(col, row, w, h), (left, bottom, right, top),
                                    _crs(wkt), wgs84, Affine(*json.loads(tr)),
                                    tuple(json.loads(tiling).get("bands", ())))
        return [by_id[i] for i in ids if i in by_id]

    def vectors(self, tile_ids) -> np.ndarray:
        ids = [int(i) for i in tile_ids]
        with self._lock:
            rows = dict(self._db.execute(
                f"SELECT id, vector FROM tiles WHERE id IN ({_marks(ids)})", ids).fetchall()) if ids else {}
        missing = [i for i in ids if i not in rows]
        if missing:
            raise UserError(f"Tile {missing[0]} is not in the index {self.index_dir}; tile ids are the "
                            f"numbers printed by `ssjdn search`.")
        return np.stack([np.frombuffer(rows[i], dtype=np.float32) for i in ids]) if ids \
            else np.zeros((0, self.dim), np.float32)

    def raster_vectors(self, raster_id: int):
        """(tile ids [N], windows [N, 4] as col, row, width, height, vectors [N, D]) of one raster.

        The last few rasters asked for stay in memory: a heatmap per search would otherwise
        read every vector of the raster from SQLite each time (seconds at a million tiles)."""
        with self._lock:
            if raster_id in self._raster_cache:
                return self._raster_cache[raster_id]
            rows = self._db.execute(
                "SELECT id, col_off, row_off, width, height, vector FROM tiles WHERE raster_id = ?"
                " ORDER BY id", (raster_id,)).fetchall()
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            windows = np.array([r[1:5] for r in rows], dtype=np.int64).reshape(-1, 4)
            result = ids, windows, _stack_blobs([r[5] for r in rows], self.dim)
            while len(self._raster_cache) >= _CACHED_RASTERS:
                self._raster_cache.pop(next(iter(self._raster_cache)))
            self._raster_cache[raster_id] = result
            return result

    def search(self, queries: np.ndarray, k: int):
        """(scores [Q, k], tile ids [Q, k]) by inner product; ids of -1 pad missing results."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise IndexMismatchError(f"Query vectors have {queries.shape[1]} dimensions, the index "
                                     f"{self.dim}; use the model that built the index.")
        faiss_index = self._faiss_index()
        if faiss_index.ntotal == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        return faiss_index.search(queries, min(int(k), faiss_index.ntotal))

    # -- writing (used by the indexing pipeline) -------------------------------------------------
    def begin_raster(self, info, tiling: dict, n_tiles: int) -> tuple[int, bool, dict]:
        """Register a raster for indexing; returns (raster_id, already_complete, stored tiling).

        A raster indexed before with the same file and tiling keeps its tiles (incremental and
        resumable); a changed file or tiling drops its old tiles so they are encoded again.
        "chunk_px" is not part of the comparison: it only says how the work was cut, and a
        resumed raster keeps its stored chunking (returned) so its done marks stay valid.
        """
        stat = os.stat(info.path)
        same = _without_chunking(tiling)
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT id, mtime_ns, size, tiling, complete FROM rasters "
                                   "WHERE path = ?", (info.path,)).fetchone()
            if row is not None:
                rid, mtime_ns, size, old_tiling, complete = row
                stored = json.loads(old_tiling)
                if (mtime_ns, size) == (stat.st_mtime_ns, stat.st_size) and _without_chunking(stored) == same:
                    return rid, bool(complete), stored
                self._db.execute("DELETE FROM tiles WHERE raster_id = ?", (rid,))
                self._db.execute("DELETE FROM chunks WHERE raster_id = ?", (rid,))
                self._db.execute("DELETE FROM rasters WHERE id = ?", (rid,))
                self._set_meta("faiss_dirty", "1")  # removed vectors: the faiss file must be rebuilt
                self._faiss = None
                self._raster_cache.clear()
            cur = self._db.execute(
                "INSERT INTO rasters (id, path, mtime_ns, size, width, height, crs_wkt, transform,"
                " tiling, n_tiles, complete) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                (row[0] if row else None, info.path, stat.st_mtime_ns, stat.st_size, info.width,
                 info.height, info.crs.to_wkt() if info.crs else None,
                 json.dumps(list(info.transform)[:6]), json.dumps(tiling, sort_keys=True), n_tiles))
            return cur.lastrowid, False, tiling

    def done_chunks(self, raster_id: int) -> set[int]:
        with self._lock:
            return {c for (c,) in self._db.execute("SELECT chunk FROM chunks WHERE raster_id = ?",
                                                    (raster_id,))}

    def commit(self, raster_id: int, tiles, vectors: np.ndarray, chunk_ids) -> None:
        """Write encoded tiles and mark their chunks done, all or nothing."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        rows = []
        for tile, vector in zip(tiles, vectors):
            w = tile.window
            wgs84 = tile.bounds_wgs84 or (None, None, None, None)
            rows.append((tile_id_for(raster_id, tile.index), raster_id, int(w.col_off), int(w.row_off),
                         int(w.width), int(w.height), *tile.bounds, *wgs84, vector.tobytes()))
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT OR REPLACE INTO tiles VALUES "
                                 "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self._db.executemany("INSERT OR IGNORE INTO chunks VALUES (?, ?)",
                                 [(raster_id, c) for c in chunk_ids])
            self._faiss = None
            self._raster_cache.clear()

    def mark_complete(self, raster_id: int) -> None:
        with self._lock, self._db:
            self._db.execute("UPDATE rasters SET complete = 1 WHERE id = ?", (raster_id,))

    def finalize(self, approx_threshold: int = APPROX_THRESHOLD) -> None:
        """Bring the faiss file up to date with the database (atomically replaced)."""
        with self._lock:
            current = self._load_faiss_file()
            if current is not None and (self.count < approx_threshold) == _is_flat(current):
                self._faiss = current  # nothing changed (e.g. every raster was already indexed)
                return
            self._faiss = self._updated_faiss(approx_threshold)
            from ssjdn.core.export import atomic_path
            import faiss
            with atomic_path(self.index_dir / FAISS_NAME) as tmp:
                faiss.write_index(self._faiss, str(tmp))
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._set_meta("faiss_ntotal", str(self._faiss.ntotal))
                self._set_meta("faiss_max_id", str(self._max_id()))
                self._set_meta("faiss_dirty", "0")

    # -- labelled sets (relevance marks, issue 10) ----------------------------------------------
    # Tables are created on first use, so indexes built before labelled sets existed still open.
    def save_label_set(self, name: str, labels: dict, overwrite: bool = False) -> None:
        """Store `labels` ({tile_id: True relevant / False not relevant}) as the set `name`, in one
        transaction. An existing set is replaced only with `overwrite` (else UserError)."""
        name = _label_set_name(name)
        rows = [(name, int(tile_id), int(bool(label))) for tile_id, label in labels.items()]
        with self._lock, self._db:
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
        with self._lock, self._db:
            if not self._has_label_tables():
                return False
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM labels WHERE set_name = ?", (name,))
            return self._db.execute("DELETE FROM label_sets WHERE name = ?", (name,)).rowcount > 0

    def _has_label_tables(self) -> bool:
        # Reading never creates them: a read-only index must still list (no) sets.
        return self._db.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND "
                                "name IN ('label_sets', 'labels')").fetchone()[0] == 2

    def _ensure_label_tables(self) -> None:
        self._db.execute("CREATE TABLE IF NOT EXISTS label_sets (name TEXT PRIMARY KEY, updated REAL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS labels (set_name TEXT NOT NULL, tile_id INTEGER "
                         "NOT NULL, label INTEGER NOT NULL, PRIMARY KEY (set_name, tile_id))")

    # -- faiss ---------------------------------------------------------------------------------
    def _faiss_index(self):
        with self._lock:
            # Checked against the database once per load, not per query: COUNT(*) over a million
            # rows would cost more than the search. Writes through this object reset it.
            if self._faiss is None:
                self._faiss = self._load_faiss_file() or self._build_faiss_all(APPROX_THRESHOLD)
            return self._faiss

    def _load_faiss_file(self):
        """The saved faiss index if it matches the database exactly, else None."""
        import faiss
        path = self.index_dir / FAISS_NAME
        if not path.exists() or self._meta("faiss_dirty") == "1":
            return None
        if self._meta("faiss_ntotal") != str(self.count) or self._meta("faiss_max_id") != str(self._max_id()):
            return None
        faiss_index = faiss.read_index(str(path))
        _apply_nprobe(faiss_index, self._meta("nprobe"))
        return faiss_index if faiss_index.ntotal == self.count else None

    def _updated_faiss(self, approx_threshold: int):
        saved = self._load_saved_for_append()
        count = self.count
        if saved is not None and (count < approx_threshold) == _is_flat(saved):
            new_ids, new_vectors = self._vectors_after(int(self._meta("faiss_max_id") or -1))
            if len(new_ids):
                saved.add_with_ids(new_vectors, new_ids)
            if saved.ntotal == count:
                return saved
        return self._build_faiss_all(approx_threshold)

    def _load_saved_for_append(self):
        import faiss
        path = self.index_dir / FAISS_NAME
        if not path.exists() or self._meta("faiss_dirty") == "1" or self._meta("faiss_max_id") is None:
            return None
        saved = faiss.read_index(str(path))
        _apply_nprobe(saved, self._meta("nprobe"))
        return saved if str(saved.ntotal) == self._meta("faiss_ntotal") else None

    def _build_faiss_all(self, approx_threshold: int):
        ids, vectors = self._vectors_after(-1)
        faiss_index, nprobe = build_faiss(vectors, ids, self.dim, approx_threshold)
        if nprobe is not None:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._set_meta("nprobe", str(nprobe))
        return faiss_index

    def _vectors_after(self, min_id: int):
        rows = self._db.execute("SELECT id, vector FROM tiles WHERE id > ? ORDER BY id",
                                (min_id,)).fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        return ids, _stack_blobs([r[1] for r in rows], self.dim)

    def _max_id(self) -> int:
        return self._scalar("SELECT COALESCE(MAX(id), -1) FROM tiles")

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


def build_faiss(vectors: np.ndarray, ids: np.ndarray, dim: int, approx_threshold: int = APPROX_THRESHOLD,
                target_recall: float = TARGET_RECALL):
    """A faiss index over `vectors` with `ids`: exact below `approx_threshold`, else IVF with an
    nprobe measured to reach `target_recall`. Returns (index, nprobe or None)."""
    import faiss
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(vectors)
    if n < approx_threshold:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if n:
            index.add_with_ids(vectors, ids)
        return index, None
    nlist = int(min(4096, max(64, 2 * math.sqrt(n))))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    train = vectors[rng.choice(n, size=min(n, 40 * nlist), replace=False)]
    index.cp.niter = 10  # k-means converges enough for routing; more iterations cost minutes at 1M
    index.train(train)
    index.add_with_ids(vectors, ids)
    nprobe = calibrate_nprobe(index, vectors, ids, target_recall, rng)
    return index, nprobe


def calibrate_nprobe(index, vectors: np.ndarray, ids: np.ndarray, target_recall: float, rng,
                     n_queries: int = 200, k: int = 10) -> int:
    """Smallest power-of-two nprobe (>= MIN_NPROBE) whose recall@k against exact search reaches
    the target.

    The probe queries are database vectors plus noise: near the data like real queries, but not
    trivially found at distance zero."""
    import faiss
    sample = vectors[rng.choice(len(vectors), size=min(n_queries, len(vectors)), replace=False)]
    queries = sample + rng.normal(0, 0.5 / math.sqrt(vectors.shape[1]), sample.shape).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, rows = exact.search(queries, k)
    truth = ids[rows]
    nprobe = MIN_NPROBE
    while True:
        index.nprobe = nprobe
        _, found = index.search(queries, k)
        if measure_recall(found, truth) >= target_recall or nprobe >= index.nlist:
            return nprobe
        nprobe *= 2


def measure_recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true top-k ids found in the returned top-k."""
    hits = sum(len(set(f[f >= 0]) & set(t[t >= 0])) for f, t in zip(found, truth))
    return hits / max(1, truth.size)


def _apply_nprobe(index, nprobe) -> None:
    if nprobe is not None and hasattr(index, "nprobe"):
        index.nprobe = int(nprobe)


def _is_flat(index) -> bool:
    return not hasattr(index, "nprobe")


def _stack_blobs(blobs, dim: int) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dim), np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim).copy()


def _model_dim(model) -> int:
    dim = (getattr(model, "config", None) or {}).get("embed_dim") or getattr(model, "dim", None)
    if dim:
        return int(dim)
    return int(model.encode_texts(["dimension probe"]).shape[-1])


def _label_set_name(name) -> str:
    text = str(name or "").strip()
    if not text:
        raise UserError("A labelled set needs a name, e.g. 'solar farms'.")
    return text


def _without_chunking(tiling: dict) -> dict:
    return {key: value for key, value in tiling.items() if key != "chunk_px"}


def _crs(wkt):
    return CRS.from_wkt(wkt) if wkt else None


def _marks(values) -> str:
    return ",".join("?" * len(values))
