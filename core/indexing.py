"""Building a tile index: rasters -> tiles -> vectors -> TileIndex, as fast as the model allows.

Reading per tile (and resampling in GDAL above all) starves a GPU, so reader threads read large
block-aligned chunks at native resolution, cut the tiles in memory and hand over one uint8
array per chunk; the main thread moves it to the model's device, where the model resizes and
encodes. A bounded number of chunks is in flight, so memory does not grow with the raster.
Finished chunks are committed to SQLite together with their "done" marks: a rerun after an
interruption skips them, and rasters already indexed with the same tiling are skipped whole.
"""
from __future__ import annotations

import inspect
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ssjdn.core.errors import UserError
from ssjdn.core.index_store import APPROX_THRESHOLD, IndexLock, TileIndex
from ssjdn.core.raster import raster_info, read_window_rgb
from ssjdn.core.tiling import chunk_tiles, plan_windows, tile_size_px, tiles_for_windows

# File names a folder search picks up (ENVI: the .dat, not its .hdr, which GDAL cannot open).
RASTER_SUFFIXES = {".tif", ".tiff", ".jp2", ".j2k", ".vrt", ".img", ".ecw", ".sid", ".nitf", ".ntf",
                   ".dat", ".png", ".jpg", ".jpeg"}
# 1024 px: a few compressed blocks per read, and several chunks in flight even on small rasters.
DEFAULT_CHUNK_PX = 1024


@dataclass
class IndexStats:
    rasters: int = 0              # rasters looked at
    rasters_skipped: int = 0      # already fully indexed with the same tiling (incremental)
    tiles_planned: int = 0
    tiles_encoded: int = 0        # encoded in this run
    tiles_resumed: int = 0        # already in the index from an earlier (interrupted) run
    tiles_nodata: int = 0         # all-nodata tiles, never indexed
    seconds: float = 0.0
    cancelled: bool = False
    warnings: list[str] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)   # unreadable files found in folders

    @property
    def tiles_per_second(self) -> float:
        return self.tiles_encoded / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _RasterJob:
    raster_id: int
    info: object
    tiles: list
    chunks: list
    pending_chunks: list[int]
    explicit: bool = True          # named by the user (an error) rather than found in a folder
    failed: bool = False           # a read failed: the rest of the file is skipped


@dataclass
class _ReadChunk:
    job: _RasterJob
    chunk_id: int
    tiles: list            # tiles with valid pixels, in the order of `pixels`
    pixels: torch.Tensor | None   # uint8 [n, 3, h, w]; dropped once encoded
    n_nodata: int


def find_rasters(inputs) -> list[tuple[str, bool]]:
    """(path, named_explicitly) for each raster in `inputs`: files, folders (searched
    recursively for raster file names) or a mix."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found: list[tuple[str, bool]] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found += [(str(p.resolve()), False) for p in sorted(path.rglob("*"))
                      if p.suffix.lower() in RASTER_SUFFIXES and p.is_file()
                      and not any(part.startswith(".") for part in p.relative_to(path).parts)]
        elif path.exists():
            found.append((str(path.resolve()), True))
        else:
            raise UserError(f"Raster or folder not found: {path}.")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise UserError(f"No raster files found in {', '.join(map(str, inputs))} (looked for "
                        f"{', '.join(sorted(RASTER_SUFFIXES))}).")
    return unique


def build_index(index_dir, rasters, model, tile_ground_m=None, tile_px=None, overlap=0.0, bands=None,
                progress=None, cancel=None, batch_size=None, workers=None, chunk_px=DEFAULT_CHUNK_PX,
                commit_every=2048, approx_threshold=APPROX_THRESHOLD, model_source=None) -> IndexStats:
    """Index `rasters` (files and/or folders) into `index_dir` with `model`; see module docstring.

    progress(done, total, message) is called as tiles finish; cancel is a threading.Event or a
    callable returning True to stop early (work finished so far is kept; calling again resumes).
    `model_source` (a checkpoint path or config name) is recorded before any tile is encoded,
    so later commands find the model even if this run is interrupted. One build per folder at a
    time: another one in progress raises IndexLockedError naming it.
    """
    start = time.perf_counter()
    stats = IndexStats()
    should_stop = _stop_check(cancel)
    report = progress or (lambda done, total, message: None)
    found = find_rasters(rasters)   # a typo fails before an index folder is made
    store = TileIndex.open(index_dir, model=model, create=True)
    lock = IndexLock(store.index_dir)
    try:
        lock.acquire()
        if model_source is not None:
            store.set_model_source(model_source)
        jobs = _plan_jobs(store, found, model, tile_ground_m, tile_px, overlap, bands,
                          chunk_px, stats)
        done = _Counter(stats.tiles_resumed)
        report(done.value, stats.tiles_planned, "planned")
        pipeline = _Pipeline(store, model, batch_size, commit_every, stats,
                             lambda n, msg: report(done.add(n), stats.tiles_planned, msg))
        _run(jobs, pipeline, workers, should_stop, stats)
        _warn_empty_rasters(store, jobs, stats)
        store.finalize(approx_threshold)
        stats.seconds = time.perf_counter() - start
        report(done.value, stats.tiles_planned, "cancelled" if stats.cancelled else "done")
        return stats
    finally:
        lock.release()
        store.close()


# -- planning ---------------------------------------------------------------------------------

def _plan_jobs(store, found, model, tile_ground_m, tile_px, overlap, bands, chunk_px, stats):
    jobs = []
    for path, explicit in found:
        try:
            info = raster_info(path, bands=bands)
        except UserError as exc:
            if explicit:
                raise
            stats.warnings.append(f"skipped {path}: {exc}")
            stats.skipped_files.append(path)
            continue
        stats.rasters += 1
        if info.crs is None:
            stats.warnings.append(f"{path} has no coordinate system: its tiles are cut in pixels and "
                                  f"have no longitude/latitude (search works; map export does not).")
        windows = plan_windows(info, tile_ground_m, tile_px, overlap, model)
        tiling = {"tile_px": list(tile_size_px(info, tile_ground_m, tile_px, model)), "overlap": overlap,
                  "bands": list(info.rgb_bands), "chunk_px": chunk_px}
        stats.tiles_planned += len(windows)
        raster_id, complete, stored = store.begin_raster(info, tiling, len(windows))
        if complete:
            stats.rasters_skipped += 1
            stats.tiles_resumed += len(windows)
            continue
        tiles = tiles_for_windows(info, windows)
        # A resumed raster keeps the chunking its done marks refer to.
        chunks = chunk_tiles(info, tiles, stored.get("chunk_px", chunk_px))
        done_chunks = store.done_chunks(raster_id)
        stats.tiles_resumed += sum(len(chunks[c].tile_indices) for c in done_chunks if c < len(chunks))
        pending = [i for i in range(len(chunks)) if i not in done_chunks]
        jobs.append(_RasterJob(raster_id, info, tiles, chunks, pending, explicit))
    return jobs


def _warn_empty_rasters(store, jobs, stats) -> None:
    if stats.cancelled:
        return
    indexed = {r.raster_id: r.n_indexed for r in store.rasters()}
    for job in jobs:
        if not job.failed and indexed.get(job.raster_id, 0) == 0:
            stats.warnings.append(f"{job.info.path}: every tile is nodata (no valid pixels), so nothing "
                                  f"from it is in the index. Check its nodata value or mask.")


# -- reading ----------------------------------------------------------------------------------

def _read_chunk(job: _RasterJob, chunk_id: int, pin: bool) -> _ReadChunk:
    """Read one chunk at native resolution and cut its tiles (runs in a reader thread)."""
    chunk = job.chunks[chunk_id]
    rgb, valid = read_window_rgb(job.info, chunk.window, with_mask=True)
    col0, row0 = int(chunk.window.col_off), int(chunk.window.row_off)
    keep, n_nodata = [], 0
    for index in chunk.tile_indices:
        tile = job.tiles[index]
        rows, cols = _slices(tile.window, row0, col0)
        if valid[rows, cols].any():
            keep.append(tile)
        else:
            n_nodata += 1
    height, width = (int(job.tiles[chunk.tile_indices[0]].window.height),
                     int(job.tiles[chunk.tile_indices[0]].window.width))
    pixels = torch.empty((len(keep), 3, height, width), dtype=torch.uint8, pin_memory=pin)
    out = pixels.numpy()
    for i, tile in enumerate(keep):
        rows, cols = _slices(tile.window, row0, col0)
        out[i] = rgb[:, rows, cols]
    return _ReadChunk(job, chunk_id, keep, pixels, n_nodata)


def _slices(window, row0: int, col0: int):
    r, c = int(window.row_off) - row0, int(window.col_off) - col0
    return slice(r, r + int(window.height)), slice(c, c + int(window.width))


def _run(jobs, pipeline, workers, should_stop, stats) -> None:
    """Keep a bounded number of chunk reads in flight, in order, and feed the encoder."""
    work = [(job, chunk_id) for job in jobs for chunk_id in job.pending_chunks]
    workers = workers or min(8, os.cpu_count() or 2)
    max_in_flight = 2 * workers
    pin = pipeline.device.type == "cuda"
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ssjdn-read") as pool:
        in_flight: deque = deque()
        queue = iter(work)
        try:
            while True:
                while len(in_flight) < max_in_flight:
                    item = next(queue, None)
                    if item is None:
                        break
                    in_flight.append((item[0], pool.submit(_read_chunk, *item, pin)))
                if not in_flight:
                    break
                if should_stop():
                    stats.cancelled = True
                    break
                job, future = in_flight.popleft()
                chunk = _chunk_or_skip(job, future, stats)
                if chunk is not None:
                    pipeline.add(chunk)
            pipeline.flush()
            for job in jobs:
                if not stats.cancelled and not job.failed:
                    pipeline.store.mark_complete(job.raster_id)
        finally:
            for _, future in in_flight:
                future.cancel()
            pipeline.close()


def _chunk_or_skip(job: _RasterJob, future, stats):
    """The chunk a reader produced, or None when its file is (or turned out) unreadable.

    A file found in a folder that fails mid-read (e.g. truncated: its header is fine, its
    pixels are not) is skipped with a warning so the other files still get indexed; tiles of it
    already saved stay, and it is not marked complete, so a rerun tries it again. A file the
    user named is an error."""
    try:
        chunk = future.result()
    except UserError as exc:
        if job.explicit:
            raise
        if not job.failed:
            job.failed = True
            stats.warnings.append(f"skipped {job.info.path}: {exc}")
            stats.skipped_files.append(job.info.path)
        return None
    return None if job.failed else chunk


# -- encoding and committing ------------------------------------------------------------------

class _Pipeline:
    """Batches chunk pixels for the model and commits finished chunks in order."""

    def __init__(self, store, model, batch_size, commit_every, stats, on_done):
        self.store, self.model, self.stats, self.on_done = store, model, stats, on_done
        self.device = torch.device(getattr(model, "device", "cpu"))
        self.batch_size = batch_size or (512 if self.device.type == "cuda" else 32)
        self.commit_every = commit_every
        self._batch: list[_ReadChunk] = []        # chunks whose pixels wait for the model
        self._batch_pixels: list[torch.Tensor] = []
        self._encoded: list[tuple[_ReadChunk, np.ndarray]] = []  # waiting to be committed
        # SQLite writes of vectors cost ~25-40 us per tile (WAL, 2 KB blobs): as much as a GPU
        # needs to encode one, so one writer thread commits while the model encodes. A single
        # thread keeps commits in order; at most two commits wait, so memory stays bounded.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ssjdn-write")
        self._commits: deque = deque()
        # The model splits its input into its own (small) default batches unless told otherwise;
        # a GPU needs the whole batch at once to reach its throughput.
        self._whole_batch = "batch_size" in inspect.signature(model.encode_images).parameters

    def add(self, chunk: _ReadChunk) -> None:
        if self._batch_pixels and chunk.pixels.shape[1:] != self._batch_pixels[0].shape[1:]:
            self._encode()  # tiles of another size (a raster smaller than a tile): own batch
        self._batch.append(chunk)
        self._batch_pixels.append(chunk.pixels.to(self.device, non_blocking=True))
        if sum(len(p) for p in self._batch_pixels) >= self.batch_size:
            self._encode()

    def flush(self) -> None:
        """Encode what is batched, commit everything and wait until it is written."""
        self._encode()
        self._commit()
        while self._commits:
            self._commits.popleft().result()

    def close(self) -> None:
        """Let commits already handed to the writer finish (they hold finished work)."""
        self._writer.shutdown(wait=True)

    def _encode(self) -> None:
        if not self._batch:
            return
        pixels = torch.cat(self._batch_pixels) if len(self._batch_pixels) > 1 else self._batch_pixels[0]
        self._batch_pixels = []
        if len(pixels):
            kwargs = {"batch_size": len(pixels)} if self._whole_batch else {}
            vectors = self.model.encode_images(pixels, **kwargs).float().cpu().numpy()
        else:
            vectors = np.zeros((0, 1), np.float32)
        start = 0
        for chunk in self._batch:
            chunk.pixels = None  # only vectors wait for the commit, never pixels (memory bound)
            self._encoded.append((chunk, vectors[start:start + len(chunk.tiles)]))
            start += len(chunk.tiles)
            self.on_done(len(chunk.tiles) + chunk.n_nodata, Path(chunk.job.info.path).name)
        self._batch = []
        del pixels
        if sum(len(c.tiles) for c, _ in self._encoded) >= self.commit_every:
            self._commit()

    def _commit(self) -> None:
        # Group by raster: one transaction per raster, tiles and their chunk marks together.
        by_raster: dict[int, list[tuple[_ReadChunk, np.ndarray]]] = {}
        for chunk, vectors in self._encoded:
            by_raster.setdefault(chunk.job.raster_id, []).append((chunk, vectors))
        for raster_id, items in by_raster.items():
            tiles = [t for chunk, _ in items for t in chunk.tiles]
            vectors = [v for _, v in items if len(v)]
            stacked = np.concatenate(vectors) if vectors else np.zeros((0, 1), np.float32)
            while len(self._commits) >= 2:
                self._commits.popleft().result()  # re-raises a failed write here
            self._commits.append(self._writer.submit(self.store.commit, raster_id, tiles, stacked,
                                                     [chunk.chunk_id for chunk, _ in items]))
            for chunk, _ in items:
                self.stats.tiles_encoded += len(chunk.tiles)
                self.stats.tiles_nodata += chunk.n_nodata
        self._encoded = []


class _Counter:
    def __init__(self, value: int):
        self.value = value

    def add(self, n: int) -> int:
        self.value += n
        return self.value


def _stop_check(cancel):
    if cancel is None:
        return lambda: False
    if hasattr(cancel, "is_set"):
        return cancel.is_set
    return cancel
