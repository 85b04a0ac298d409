"""Tile vectors on disk: float16 rows in append-only shard files, read by position.

An index folder keeps its vectors in `vectors/shard-NNNNN.f16` (raw float16, `dim` values a
row), not as SQLite rows: at ten million tiles SQLite blobs cost 20 GB and every read goes
through the database, while positional reads let a search read only the few hundred rows it
re-ranks and let a heatmap stream one raster's rows.

Float16 halves the disk and changes no ranking we could measure: on the UCM val split (210
images, 1050 captions) text->image ranks from float16 vectors equal the float32 ones for every
caption; on the 1680 train images 11 of 8400 ranks moved (docs/engine.md).

The database says where each tile's vector is (tiles.shard, tiles.row) and how many rows of
each shard are committed (table `shards`). Beside each shard, `shard-NNNNN.ids` holds the tile
id of every row (int64): a row's position (shard * SHARD_ROWS + row) is the label the search
structure returns, so a search reads its candidates' vectors and its hits' tile ids by position
without asking SQLite (3.5 ms of a 10M-tile search). A batch is written to both files and
flushed *before* the SQLite transaction that records it, so an interrupted write leaves at most
rows past the committed count, which nobody reads and the next writer overwrites. Rows of
replaced tiles stay in their shard unreferenced (a rebuilt raster's old rows): they cost disk,
never correctness, since the search structure only ever holds live positions.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

VECTOR_DIR = "vectors"
# Rows per shard file: 1 GiB at 512 dims, so a 10M-tile archive is ten files, each small
# enough to copy or checksum on its own.
SHARD_ROWS = 1 << 20
DTYPE = np.float16
ID_DTYPE = np.dtype("<i8")


class VectorShards:
    """The shard files of one index folder. Writers pass in the committed row counts (read from
    the database in the same transaction that will record the new ones)."""

    def __init__(self, index_dir, dim: int, shard_rows: int = SHARD_ROWS):
        self.folder = Path(index_dir) / VECTOR_DIR
        self.dim = int(dim)
        self.shard_rows = int(shard_rows)
        self._files: dict[Path, int] = {}   # file -> descriptor open for reading
        self._row_bytes = self.dim * np.dtype(DTYPE).itemsize

    def path(self, shard: int) -> Path:
        return self.folder / f"shard-{shard:05d}.f16"

    def ids_path(self, shard: int) -> Path:
        return self.folder / f"shard-{shard:05d}.ids"

    def positions(self, shards, rows) -> np.ndarray:
        return np.asarray(shards, np.int64) * self.shard_rows + np.asarray(rows, np.int64)

    # -- writing -------------------------------------------------------------------------------
    def append(self, vectors: np.ndarray, tile_ids, committed: dict[int, int]):
        """Write `vectors` and their `tile_ids` after the committed rows; returns (shard [N],
        row [N], new committed counts {shard: rows}) for the caller to record in its transaction."""
        vectors = np.ascontiguousarray(vectors, dtype=DTYPE).reshape(-1, self.dim)
        tile_ids = np.ascontiguousarray(tile_ids, dtype=ID_DTYPE).reshape(-1)
        shard = max(committed, default=0)
        row = committed.get(shard, 0)
        shards, rows, counts = [], [], dict(committed)
        start = 0
        while start < len(vectors):
            if row >= self.shard_rows:
                shard, row = shard + 1, 0
            take = min(len(vectors) - start, self.shard_rows - row)
            self._write(self.path(shard), row * self._row_bytes, vectors[start:start + take])
            self._write(self.ids_path(shard), row * ID_DTYPE.itemsize, tile_ids[start:start + take])
            shards.append(np.full(take, shard, np.int64))
            rows.append(np.arange(row, row + take, dtype=np.int64))
            row += take
            counts[shard] = row
            start += take
        empty = np.zeros(0, np.int64)
        return (np.concatenate(shards) if shards else empty,
                np.concatenate(rows) if rows else empty, counts)

    def write_ids(self, shard: int, tile_ids: np.ndarray) -> None:
        """A shard's whole tile-id file (the upgrade of an index written before they existed)."""
        self._write(self.ids_path(shard), 0, np.ascontiguousarray(tile_ids, dtype=ID_DTYPE))

    def _write(self, path: Path, offset: int, block: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            data = memoryview(block.tobytes())
            while data:   # a regular file may still take fewer bytes than asked
                written = os.pwrite(fd, data, offset)
                data, offset = data[written:], offset + written
            os.fsync(fd)   # on disk before the database says these rows exist
        finally:
            os.close(fd)

    # -- reading -------------------------------------------------------------------------------
    def read(self, shards: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """float32 [N, dim] of the given (shard, row) positions, in their order.

        Read with pread, one call per run of consecutive rows, not through a memory map: a
        mapped file's pages (and the kernel's read-ahead around each) count in the process's
        resident memory, so re-ranking 500 scattered rows per query made a 10M-tile search
        process grow past 5 GB. Read this way they stay in the page cache only."""
        return self._gather(self.path, DTYPE, self.dim, shards, rows).astype(np.float32)

    def read_positions(self, positions) -> np.ndarray:
        """float32 [N, dim] of rows given by position (shard * shard_rows + row)."""
        positions = np.asarray(positions, np.int64)
        return self.read(positions // self.shard_rows, positions % self.shard_rows)

    def tile_ids_at(self, positions) -> np.ndarray:
        """int64 [N]: the tile id recorded with each row."""
        positions = np.asarray(positions, np.int64)
        return self._gather(self.ids_path, ID_DTYPE, 1, positions // self.shard_rows,
                            positions % self.shard_rows).reshape(-1).astype(np.int64)

    def _gather(self, path_of, dtype, width: int, shards, rows) -> np.ndarray:
        shards = np.asarray(shards, np.int64).reshape(-1)
        rows = np.asarray(rows, np.int64).reshape(-1)
        out = np.empty((len(rows), width), dtype)
        for shard in np.unique(shards):
            where = np.flatnonzero(shards == shard)
            order = np.argsort(rows[where], kind="stable")   # front to back through the file
            out[where[order]] = self._read_sorted(path_of(int(shard)), dtype, width, rows[where][order])
        return out

    def _read_sorted(self, path: Path, dtype, width: int, picked: np.ndarray) -> np.ndarray:
        row_bytes = np.dtype(dtype).itemsize * width
        block = np.empty((len(picked), width), dtype)
        breaks = np.flatnonzero(np.diff(picked) != 1) + 1
        fd = self._file(path)
        for start, end in zip(np.r_[0, breaks], np.r_[breaks, len(picked)]):
            size = (end - start) * row_bytes
            data = os.pread(fd, size, int(picked[start]) * row_bytes)
            if len(data) < size:
                raise VectorStoreDamaged(
                    f"{path} ends before row {int(picked[end - 1])}: the file was "
                    f"truncated or replaced.")
            block[start:end] = np.frombuffer(data, dtype).reshape(end - start, width)
        return block

    def close_files(self) -> None:
        """Close the open shard files (another writer may have replaced them)."""
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()

    def _file(self, path: Path) -> int:
        fd = self._files.get(path)
        if fd is None:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError as exc:
                raise VectorStoreDamaged(f"{path} is missing.") from exc
            self._files[path] = fd
        return fd

    def __del__(self):
        try:
            self.close_files()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class VectorStoreDamaged(Exception):
    """A shard file is shorter than the database says (turned into a UserError by the index)."""
