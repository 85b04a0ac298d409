"""An index folder: SQLite for tiles and rasters, float16 vector shards, a faiss file derived.

SQLite is the source of truth: it holds each tile's record and where its vector sits in the
shard files (vector_store.py), and commits tile rows, shard row counts and the "chunk done"
marks in one transaction, so an interrupted build loses at most the batch in flight and a rerun
continues exactly where the last commit ended. The faiss file is rebuilt or extended from them
at the end of a build, and rebuilt in memory whenever it does not match the database, so it
can never be stale (search_file.py).

Search is exact below APPROX_THRESHOLD vectors; above it compressed codes propose candidates
that are re-scored exactly from the shards (ann.py). Nothing loads every vector: heatmaps
stream one raster's rows, search reads a few hundred.

TileIndex is a facade: it reads and writes the rasters' and tiles' records itself and hands
the rest to parts that share its database (database.py: the connection, its lock and the
disk-full message): formats.py (tables, upgrades of older indexes), vector_rows.py (checked
vector reads, tile-id files), search_file.py (the faiss file), label_sets.py (labelled sets).
The writer lock of the folder is lock.py. No part imports this module.
"""
from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from ssjdn.core.errors import UserError, os_error_as_user_error
from ssjdn.core.geo.raster import change_key, file_change_key, is_virtual, raster_path
from ssjdn.core.index import formats
from ssjdn.core.index.ann import APPROX_THRESHOLD
from ssjdn.core.index.database import DB_NAME, IDS_PER_QUERY, IndexDatabase, fits_int64, marks
from ssjdn.core.index.label_sets import LabelSets
from ssjdn.core.index.search_file import SearchFile
from ssjdn.core.index.vector_rows import VectorRows

# Rasters whose tile grids (ids, windows, shard positions: 56 bytes a tile) stay in memory.
_CACHED_RASTERS = 4
# Tile ids are raster_id << 32 | tile index, so ids do not depend on the order tiles are written.
_TILE_BITS = 32
# A raster may be tiled at several scales (tile sizes): a tile index is scale << 26 | position in
# that scale's grid (67 million tiles a scale), and a chunk id likewise. Scale 0 keeps the ids
# of indexes built before scales existed.
SCALE_SHIFT = 26
_ALL_TILES = 1 << _TILE_BITS   # past the last tile index (and chunk id) of a raster


class IndexMismatchError(UserError):
    """The index was built with a different model than the one in use."""


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

    def __init__(self, db: IndexDatabase):
        self.db = db
        self.vector_rows = VectorRows(db)
        self.search_file = SearchFile(db, self.vector_rows)
        self.labelled_sets = LabelSets(db)
        self._grids: dict[int, tuple] = {}
        self._raster_fields_cache: dict[int, tuple] = {}
        # (db.writes when read, records): valid until the next write or refresh().
        self._raster_records: tuple[int, list[RasterRecord]] | None = None

    @property
    def index_dir(self) -> Path:
        return self.db.index_dir

    @property
    def read_only(self) -> bool:
        """E.g. an archive on a shared drive: search works, nothing is written."""
        return self.db.read_only

    @property
    def search_file_note(self) -> str | None:
        """Why the saved search file was not used (it came from elsewhere), for the caller to say."""
        return self.search_file.note

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, index_dir, model=None, create: bool = False, verify_model: bool = True) -> "TileIndex":
        """Open an index folder; with `create=True` make it (for `model`) if it does not exist.
        Raises IndexMismatchError if `model` is not the model that built the index (unless
        `verify_model` is False: a build checks it once it holds the writer lock)."""
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
            index = cls(IndexDatabase.connect(index_dir, read_only))
            db = index.db
            if create:
                with db.writing("create the index"):
                    formats.create_schema(db, model)
                formats.upgrade_old_formats(db, index.vector_rows)   # adding to an older index
            elif db.meta("model_fingerprint") is None:
                index.close()
                raise UserError(f"{db_path} holds no finished index (it is empty or was never "
                                f"filled). Build it again: ssjdn index RASTER --index {index_dir}")
            elif not read_only:
                formats.create_schema(db, None)   # tables added since the index was built
                formats.upgrade_old_formats(db, index.vector_rows)
            elif formats.is_format_1(db) or formats.is_format_2(db):
                index.close()
                raise UserError(f"The index in {index_dir} was built by an earlier version of SSJDN "
                                f"Explorer and must be upgraded once, but the folder is read-only. "
                                f"Copy the folder somewhere you can write and open the copy, or ask "
                                f"for write access (the upgrade rewrites part of the index once).")
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{db_path} is not a readable index ({exc}). Delete the folder and "
                            f"build the index again.") from exc
        if model is not None and verify_model:
            index.check_model(model)
        return index

    def repair_vector_files(self) -> list[str]:
        """Before a build adds to the folder: tile-id files that are missing or short are
        rewritten from the database; a vector file that is missing or short loses the tiles it
        held (their rasters are marked unfinished, so a build encodes them again). Returns one
        warning per repair. Checks sizes only: the content is checked as it is read."""
        store, warnings = self.vector_rows.store, []
        committed = self.vector_rows.committed_rows()
        row_bytes = self.dim * np.dtype(np.float16).itemsize
        with self.db.writing("repair the index's vector files"), self.db.lock:
            short_ids = [s for s, rows in committed.items() if _size(store.ids_path(s)) < rows * 8]
            lost = [s for s, rows in committed.items() if _size(store.path(s)) < rows * row_bytes]
            if short_ids:
                self.vector_rows.write_id_files()
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
        with self.db.connection:
            self.db.execute("BEGIN IMMEDIATE")
            rasters = self.db.execute(
                "SELECT id, path FROM rasters WHERE id IN (SELECT DISTINCT raster_id FROM tiles "
                "WHERE shard = ?)", (shard,)).fetchall()
            for raster_id, _ in rasters:
                self._forget_tile_range(raster_id, 0, _ALL_TILES)
                self.db.execute("UPDATE rasters SET complete = 0 WHERE id = ?", (raster_id,))
        self._forget_loaded()
        return [Path(path).name for _, path in rasters]

    def check_model_for_building(self, model) -> None:
        """check_model for a build that holds the writer lock: an index that never registered
        a raster (a first build that failed before planning, e.g. on a bad --bands) is taken
        over by this build's model instead of being refused as a mismatch."""
        with self.db.writing("bind the empty index to the model in use"):
            formats.adopt_model_if_never_filled(self.db, model)
        self.check_model(model)

    def check_model(self, model) -> None:
        built_with = self.db.meta("model_fingerprint")
        if built_with is not None and built_with != model.fingerprint:
            raise IndexMismatchError(
                f"The index in {self.index_dir} was built with model '{self.db.meta('model_name')}' "
                f"(fingerprint {built_with[:12]}), not with the model in use "
                f"'{getattr(model, 'name', '?')}' ({model.fingerprint[:12]}); their vectors are not "
                f"comparable. Search it with the model that built it, or build a new index for this "
                f"model in another folder (ssjdn index RASTER --index NEW_FOLDER).")

    def refresh(self) -> None:
        """Forget the loaded vectors so the next search sees tiles another process added."""
        with self.db.lock:
            self._forget_loaded()

    def _forget_loaded(self) -> None:
        self.search_file.forget()
        self._grids.clear()
        self._raster_fields_cache.clear()
        self._raster_records = None
        self.vector_rows.close_files()

    def close(self) -> None:
        with self.db.lock:
            self.db.close()
            self.vector_rows.close_files()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- reading -------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return self.db.scalar("SELECT COUNT(*) FROM tiles")

    @property
    def has_tiles(self) -> bool:
        """Whether any tile is indexed (EXISTS stops at the first row; COUNT(*) reads them all)."""
        return bool(self.db.scalar("SELECT EXISTS (SELECT 1 FROM tiles)"))

    @property
    def dim(self) -> int:
        return int(self.db.meta("dim"))

    @property
    def model_fingerprint(self) -> str:
        return self.db.meta("model_fingerprint")

    @property
    def model_name(self) -> str:
        return self.db.meta("model_name") or ""

    @property
    def model_source(self) -> str | None:
        """The checkpoint path or config name the index was last built with, if recorded."""
        return self.db.meta("model_source")

    def set_model_source(self, source: str) -> None:
        with self.db.writing("record the model"), self.db.lock, self.db.connection:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.set_meta("model_source", str(source))

    def rasters(self) -> list[RasterRecord]:
        """Every raster's record, read once until this index writes or refresh() (counting
        the tiles of ten million-tile rasters takes most of a second; the app asks per search)."""
        with self.db.lock:
            if self._raster_records is None or self._raster_records[0] != self.db.writes:
                rows = self.db.execute(
                    "SELECT r.id, r.path, r.width, r.height, r.crs_wkt, r.transform, r.tiling, r.n_tiles,"
                    " r.complete, (SELECT COUNT(*) FROM tiles t WHERE t.raster_id = r.id)"
                    " FROM rasters r ORDER BY r.id").fetchall()
                self._raster_records = (self.db.writes, [
                    RasterRecord(rid, path, w, h, _crs(wkt), Affine(*json.loads(tr)), json.loads(tiling),
                                 n, ni, bool(done)) for rid, path, w, h, wkt, tr, tiling, n, done, ni in rows])
            return list(self._raster_records[1])

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
        with self.db.lock:
            rows = self.db.rows_for_ids(
                "SELECT id, raster_id, col_off, row_off, width, height, left, bottom, right, top,"
                " west, south, east, north FROM tiles WHERE id IN ({marks})",
                [i for i in ids if fits_int64(i)])   # SQLite cannot even compare longer ones
            by_id = {}
            for (tid, rid, col, row, w, h, left, bottom, right, top, west, south, east, north) in rows:
                path, crs, transform, bands, labels, stac, nodata = self._raster_fields(rid)
                wgs84 = None if west is None else (west, south, east, north)
                label = labels[scale_of(tid)] if scale_of(tid) < len(labels) else ""
                by_id[tid] = TileRecord(tid, path, Window(col, row, w, h), (left, bottom, right, top),
                                        crs, wgs84, transform, bands, label, stac, nodata)
        return [by_id[i] for i in ids if i in by_id]

    def _raster_fields(self, raster_id: int):
        """(path, CRS, transform, bands, tiling labels per scale, STAC item record or None, nodata
        setting) of a raster, parsed once:
        parsing a CRS from WKT costs about a millisecond, which every hit of every search would
        otherwise pay."""
        fields = self._raster_fields_cache.get(raster_id)
        if fields is None:
            path, wkt, transform, tiling, width, height = self.db.execute(
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
            if too_long := [i for i in tile_ids if not fits_int64(i)]:
                raise self._unknown_tile(too_long[0])
        ids = np.asarray(tile_ids, np.int64).reshape(-1)
        if not len(ids):
            return np.zeros((0, self.dim), np.float32)
        with self.db.lock:
            rows = self.db.rows_for_ids("SELECT id, shard, row FROM tiles WHERE id IN ({marks})",
                                        ids.tolist())
            found = np.array(rows, np.int64).reshape(-1, 3)
            found = found[np.argsort(found[:, 0])]
            at = np.minimum(np.searchsorted(found[:, 0], ids), max(len(found) - 1, 0))
            known = (found[at, 0] == ids) if len(found) else np.zeros(len(ids), bool)
            if not known.all():
                raise self._unknown_tile(ids[~known][0])
            return self.vector_rows.read(found[at, 1], found[at, 2])

    def tile_ids(self) -> np.ndarray:
        """Every tile id, ascending: raster by raster (ids are raster_id << 32 | tile index), each
        raster's in tile order, as rasters() and raster_grid() list them."""
        with self.db.lock:
            return np.array(self.db.execute("SELECT id FROM tiles ORDER BY id").fetchall(),
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
            with self.db.lock:
                vectors = self.vector_rows.read(positions[part, 0], positions[part, 1])
            yield part, vectors

    def _grid(self, raster_id: int):
        with self.db.lock:
            if raster_id in self._grids:
                return self._grids[raster_id]
            # A raster's ids are one range of the primary key (tile_id_for): a range scan, and
            # values straight into numpy, load a million-tile grid in half the time.
            cursor = self.db.execute(
                "SELECT id, col_off, row_off, width, height, shard, row FROM tiles WHERE id >= ? AND"
                " id < ? ORDER BY id", (tile_id_for(raster_id, 0), tile_id_for(raster_id + 1, 0)))
            rows = np.fromiter((v for row in cursor for v in row), np.int64).reshape(-1, 7)
            grid = rows[:, 0].copy(), rows[:, 1:5].copy(), rows[:, 5:7].copy()
            while len(self._grids) >= _CACHED_RASTERS:
                self._grids.pop(next(iter(self._grids)))
            self._grids[raster_id] = grid
            return grid

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
        return self.search_file.search(queries, k)

    def vectors_at(self, positions) -> np.ndarray:
        """float32 [N, D] stored vectors at vector-store positions (from search_positions),
        checked like every read."""
        positions = np.asarray(positions, np.int64).reshape(-1)
        if not len(positions):
            return np.zeros((0, self.dim), np.float32)
        with self.db.lock:
            return self.vector_rows.read_positions(positions)

    def short_result_note(self, asked: int, found: int) -> str | None:
        """Why a search found fewer hits than `asked` although the index holds more tiles, or
        None: a compressed search structure ranks only the tiles of the lists it probes."""
        return self.search_file.short_result_note(asked, found)

    # -- writing (used by the indexing pipeline) -------------------------------------------------
    def is_current(self, info, tiling: dict) -> bool:
        """Whether the raster `info` is indexed completely with `tiling`, from the same file as
        now: what begin_raster would keep as it is. Reads only."""
        with self.db.lock:
            row = self.db.execute("SELECT mtime_ns, size, tiling, complete FROM rasters "
                                  "WHERE path = ?", (info.path,)).fetchone()
        if row is None or not row[3] or (row[0], row[1]) != change_key(info):
            return False
        stored = json.loads(row[2])
        return (_grid(stored) == _grid(tiling) and tiling_slots(stored) == tiling_slots(tiling)
                and _content(stored) == _content(tiling))

    def changed_rasters(self, paths) -> dict[str, str]:
        """Of the indexed rasters `paths`, those whose file is no longer the one encoded:
        path -> "changed" (modified since) or "missing". Only stats files, so a search can ask
        for its hits' rasters; a GDAL virtual path is not checked (that would mean opening it)."""
        wanted = {str(p) for p in paths if not is_virtual(p)}
        if not wanted:
            return {}
        with self.db.lock:   # one row per raster: read whole, no bound-value limit to mind
            rows = self.db.execute("SELECT path, mtime_ns, size FROM rasters").fetchall()
        found = {}
        for path, mtime_ns, size in rows:
            if path in wanted:
                try:
                    if file_change_key(path) != (mtime_ns, size):
                        found[path] = "changed"
                except FileNotFoundError:
                    found[path] = "missing"
        return found

    def begin_raster(self, info, tiling: dict, n_tiles: int) -> tuple[int, bool, dict]:
        """Register a raster for indexing; returns (raster_id, already_complete, stored tiling).

        A raster indexed before with the same file and tiling keeps its tiles (incremental and
        resumable); a changed file or tiling drops its old tiles so they are encoded again.
        "chunk_px" is not part of the comparison: it only says how the work was cut, and a
        resumed raster keeps its stored chunking (returned) so its done marks stay valid.
        """
        mtime_ns, size = change_key(info)
        with self.db.writing("add a raster"), self.db.lock, self.db.connection:
            self.db.execute("BEGIN IMMEDIATE")
            row = self.db.execute("SELECT id, mtime_ns, size, tiling, complete FROM rasters "
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
                self.db.execute("DELETE FROM rasters WHERE id = ?", (rid,))
                self._forget_loaded()
            cur = self.db.execute(
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
        self.db.execute("UPDATE rasters SET tiling = ?, n_tiles = ?, complete = 0 WHERE id = ?",
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
        self.search_file.note_removed("id >= ? AND id < ?", (lo, hi))
        for table in ("tiles", "tile_pixels"):
            self.db.execute(f"DELETE FROM {table} WHERE id >= ? AND id < ?", (lo, hi))
        self.db.execute("DELETE FROM chunks WHERE raster_id = ? AND chunk >= ? AND chunk < ?",
                         (raster_id, first, past))

    def _begin_refresh(self, raster_id: int, stored: dict, tiling: dict) -> dict:
        """Same grid, other nodata setting: the raster's tiles stay, every chunk is read again and
        only tiles whose pixels changed are encoded (see tile_checks). `refresh_from` keeps the
        setting the tiles were encoded under until the raster is complete, so an interrupted
        refresh resumes as one."""
        refreshed = dict(tiling, refresh_from=stored.get("refresh_from", _content(stored)))
        self.db.execute("UPDATE rasters SET tiling = ?, complete = 0 WHERE id = ?",
                         (json.dumps(refreshed, sort_keys=True), raster_id))
        self.db.execute("DELETE FROM chunks WHERE raster_id = ?", (raster_id,))
        self._forget_loaded()
        return refreshed

    def tile_checks(self, raster_id: int) -> dict[int, int | None]:
        """{tile index: checksum of the pixels it was encoded from (None if not recorded)} of a
        raster's tiles in the index."""
        with self.db.lock:
            rows = self.db.execute(
                "SELECT t.id, p.crc FROM tiles t LEFT JOIN tile_pixels p ON p.id = t.id"
                " WHERE t.id >= ? AND t.id < ?", (tile_id_for(raster_id, 0), tile_id_for(raster_id + 1, 0)))
            return {tile_id & ((1 << _TILE_BITS) - 1): crc for tile_id, crc in rows}

    def done_chunks(self, raster_id: int) -> set[int]:
        with self.db.lock:
            return {c for (c,) in self.db.execute("SELECT chunk FROM chunks WHERE raster_id = ?",
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
        with self.db.writing("save encoded tiles"), self.db.lock, self.db.connection:
            self.db.execute("BEGIN IMMEDIATE")
            # The shard rows are on disk before this transaction records them (vector_store.py).
            shards, shard_rows, counts = self.vector_rows.store.append(
                vectors, [r[0] for r in rows], self.vector_rows.committed_rows())
            rows = [(*r, int(shard), int(row)) for r, shard, row in zip(rows, shards, shard_rows)]
            gone = [tile_id_for(raster_id, i) for i in removed]
            if replacing or gone:
                self._drop_tiles(gone, [r[0] for r in rows])
            self._write_batch(rows, [(raster_id, c) for c in chunk_ids], counts)
            self.db.connection.executemany("INSERT OR REPLACE INTO tile_pixels VALUES (?, ?)",
                                 [(tile_id_for(raster_id, i), int(crc)) for i, crc in (checks or {}).items()])
            self._forget_loaded()

    def _drop_tiles(self, removed_ids: list[int], replaced_ids: list[int]) -> None:
        """Delete tiles, and take them and the tiles about to be replaced out of the saved faiss
        file (their rows stay in the shards, unreferenced; see _note_removed_from_faiss)."""
        ids = removed_ids + replaced_ids
        for start in range(0, len(ids), IDS_PER_QUERY):   # under SQLite's limit of bound values
            part = ids[start:start + IDS_PER_QUERY]
            self.search_file.note_removed(f"id IN ({marks(part)})", tuple(part))
        for start in range(0, len(removed_ids), IDS_PER_QUERY):
            part = removed_ids[start:start + IDS_PER_QUERY]
            self.db.execute(f"DELETE FROM tiles WHERE id IN ({marks(part)})", part)
            self.db.execute(f"DELETE FROM tile_pixels WHERE id IN ({marks(part)})", part)

    def _write_batch(self, tile_rows, chunk_rows, shard_counts: dict) -> None:
        self.db.connection.executemany("INSERT OR REPLACE INTO tiles VALUES "
                             "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", tile_rows)
        self.db.connection.executemany("INSERT OR IGNORE INTO chunks VALUES (?, ?)", chunk_rows)
        self.db.connection.executemany("INSERT OR REPLACE INTO shards VALUES (?, ?)", shard_counts.items())

    def mark_complete(self, raster_id: int) -> None:
        with self.db.writing("finish a raster"), self.db.lock, self.db.connection:
            self.db.execute("BEGIN IMMEDIATE")
            (tiling,) = self.db.execute("SELECT tiling FROM rasters WHERE id = ?", (raster_id,)).fetchone()
            finished = {k: v for k, v in json.loads(tiling).items() if k != "refresh_from"}
            self.db.execute("UPDATE rasters SET complete = 1, tiling = ? WHERE id = ?",
                             (json.dumps(finished, sort_keys=True), raster_id))

    def finalize(self, approx_threshold: int = APPROX_THRESHOLD, progress=None) -> None:
        """Bring the faiss file up to date with the database (atomically replaced);
        `progress(Progress)` hears its steps."""
        self.search_file.finalize(approx_threshold, progress)

    # -- labelled sets (relevance marks, issue 10): label_sets.py --------------------------------
    def save_label_set(self, name: str, labels: dict, overwrite: bool = False) -> None:
        """Store `labels` ({tile_id: True relevant / False not relevant}) as the set `name`, in one
        transaction. An existing set is replaced only with `overwrite` (else UserError)."""
        self.labelled_sets.save(name, labels, overwrite)

    def label_sets(self) -> list[tuple[str, int, int]]:
        """(name, relevant count, not relevant count) of every stored set, by name."""
        return self.labelled_sets.summary()

    def load_label_set(self, name: str) -> dict[int, bool]:
        """{tile_id: relevant?} of a stored set; UserError naming the stored sets if unknown."""
        return self.labelled_sets.load(name)

    def delete_label_set(self, name: str) -> bool:
        """Remove a stored set; False if there was none of that name."""
        return self.labelled_sets.delete(name)

    # -- the search structure: search_file.py ---------------------------------------------------
    def prepare_search(self, progress=None) -> None:
        """Load the search structure now, bringing it up to date if it must be (a missing or
        damaged file, an interrupted build: minutes at 10M tiles); `progress(Progress)` hears
        those steps. Searching does the same on its first call, silently."""
        self.search_file.index(progress)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


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
