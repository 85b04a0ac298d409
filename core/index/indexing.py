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
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ssjdn.core.errors import UserError, stop_check
from ssjdn.core.progress import Progress, Stage
from ssjdn.core.index.index_store import APPROX_THRESHOLD, SCALE_SHIFT, TileIndex
from ssjdn.core.index.lock import IndexLock
from ssjdn.core.geo.raster import (is_virtual, nodata_note, nodata_policy, raster_info, raster_path,
                               read_window_rgb)
from ssjdn.core.geo.tiling import chunk_tiles, plan_windows, tile_size_px, tiles_for_windows

# File names a folder search picks up (ENVI: the .dat, not its .hdr, which GDAL cannot open).
RASTER_SUFFIXES = {".tif", ".tiff", ".jp2", ".j2k", ".vrt", ".img", ".ecw", ".sid", ".nitf", ".ntf",
                   ".dat", ".png", ".jpg", ".jpeg"}
# 1024 px: a few compressed blocks per read, and several chunks in flight even on small rasters.
DEFAULT_CHUNK_PX = 1024
# A tile more than this share nodata (declared, a collar, or a set value) is not indexed: a
# mostly black tile matches dark queries and crowds out real hits.
DEFAULT_MAX_NODATA = 0.5
# Fewer tiles than this and a search ranks a handful of candidates: its order means little, and
# an object on a tile border is cut in two. The user is told, and how to get more.
MIN_TILES_FOR_SEARCH = 30


@dataclass
class IndexStats:
    rasters: int = 0              # rasters looked at
    rasters_skipped: int = 0      # already fully indexed with the same tiling (incremental)
    tiles_planned: int = 0
    tiles_encoded: int = 0        # encoded in this run
    tiles_resumed: int = 0        # already in the index from an earlier (interrupted) run
    tiles_nodata: int = 0         # tiles over the nodata threshold, never indexed
    tiles_unchanged: int = 0      # re-read after a nodata setting changed, same pixels: kept
    tiles_in_index: int = 0       # what the index holds when the build ends (every raster's)
    seconds: float = 0.0
    cancelled: bool = False
    warnings: list[str] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)   # unreadable files found in folders

    @property
    def tiles_per_second(self) -> float:
        return self.tiles_encoded / self.seconds if self.seconds > 0 else 0.0


@dataclass
class RasterJob:
    """One raster to index: its tiles, their chunks and the chunks not yet done."""

    raster_id: int
    info: object
    tiles: list
    chunks: list
    pending_chunks: list[int]
    explicit: bool = True          # named by the user (an error) rather than found in a folder
    failed: bool = False           # a read failed: the rest of the file is skipped
    max_nodata: float = DEFAULT_MAX_NODATA
    # A refresh (the nodata setting changed): {tile index: pixel checksum or None} of the tiles
    # already in the index, and whether they were encoded under the same pixel setting.
    existing: dict | None = None
    same_pixels: bool = False

    def sort_out(self, chunk, keep, crcs):
        """Of a chunk's kept tiles (and their pixel checksums): (indices into `keep` to encode,
        {tile index: crc} of tiles kept as they are, tile indices to delete) -- in a refresh a
        tile is encoded again only if its pixels changed, and leaves if it is now over the
        threshold; otherwise every kept tile is encoded."""
        if self.existing is None:
            return list(range(len(keep))), {}, []
        encode, unchanged = [], {}
        for i, (tile, crc) in enumerate(zip(keep, crcs)):
            if tile.index in self.existing and (self.existing[tile.index] == crc or
                                                (self.existing[tile.index] is None and self.same_pixels)):
                unchanged[tile.index] = crc
            else:
                encode.append(i)
        kept = {t.index for t in keep}
        removed = [i for i in chunk.tile_indices if i in self.existing and i not in kept]
        return encode, unchanged, removed

    def sorted_chunk(self, chunk_id: int, keep, crcs, n_nodata: int, pixels=None):
        """(the ReadChunk of the kept tiles to encode, `pixels` cut to them; the indices into
        `keep` of those tiles, to cut anything else held per tile, e.g. a worker's vectors)."""
        encode, unchanged, removed = self.sort_out(self.chunks[chunk_id], keep, crcs)
        if pixels is not None and len(encode) < len(keep):
            pixels = pixels[encode]
        checks = {keep[i].index: crcs[i] for i in encode}
        checks.update(unchanged)
        return ReadChunk(self, chunk_id, [keep[i] for i in encode], pixels, n_nodata, checks,
                         removed, len(unchanged)), encode


@dataclass
class ReadChunk:
    """A chunk's tiles read (pixels) or encoded (pixels None), waiting for the next step."""

    job: RasterJob
    chunk_id: int
    tiles: list            # tiles to encode, in the order of `pixels`
    pixels: torch.Tensor | None   # uint8 [n, 3, h, w]; dropped once encoded
    n_nodata: int
    checks: dict = field(default_factory=dict)    # {tile index: pixel crc} to record
    removed: list = field(default_factory=list)   # tile indices to delete (a refresh)
    n_unchanged: int = 0                          # kept as they were (a refresh)


def find_rasters(inputs) -> list[tuple[str, bool]]:
    """(path, named_explicitly) for each raster in `inputs`: files, folders (searched
    recursively for raster file names), STAC assets (stac.StacAsset: found in a catalog, so
    skipped with a warning when unreadable, like a file in a folder) or a mix."""
    from ssjdn.core.geo.stac import StacAsset
    if isinstance(inputs, (str, os.PathLike, StacAsset)):
        inputs = [inputs]
    found: list[tuple[str, bool]] = []
    for item in inputs:
        if isinstance(item, StacAsset):
            found.append((item.path, False))
            continue
        if is_virtual(item):   # object storage: GDAL opens it later, or names what is wrong
            found.append((str(item), True))
            continue
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
                commit_every=2048, approx_threshold=APPROX_THRESHOLD, model_source=None,
                nodata=None, max_nodata=DEFAULT_MAX_NODATA) -> IndexStats:
    """Index `rasters` (files and/or folders) into `index_dir` with `model`; see module docstring.
    `index_dir` is a folder (made if new), or a TileIndex already open on one, which stays open.

    `nodata` is raster_info's setting for every raster (None: auto, look for collars), or a
    dict {raster path: setting} for some; a tile more than `max_nodata` nodata is left out.
    A rerun with another nodata setting re-reads the raster and encodes only changed tiles.

    progress(Progress) hears the stages (core.progress: planned, encoding as tiles finish, the
    search structure, done or cancelled), counting tiles; cancel is a threading.Event or a
    callable returning True to stop early (work finished so far is kept; calling again resumes).
    `model_source` (a checkpoint path or config name) is recorded before any tile is encoded,
    so later commands find the model even if this run is interrupted. One build per folder at a
    time: another one in progress raises IndexLockedError naming it.
    """
    def encode_here(store, jobs, stats, on_done, should_stop):
        pipeline = _Pipeline(store, model, batch_size, commit_every, stats, on_done)
        _run(jobs, pipeline, workers, should_stop, stats)

    return build_with(encode_here, index_dir, rasters, model, tile_ground_m=tile_ground_m,
                      tile_px=tile_px, overlap=overlap, bands=bands, progress=progress,
                      cancel=cancel, chunk_px=chunk_px, approx_threshold=approx_threshold,
                      model_source=model_source, nodata=nodata, max_nodata=max_nodata)


def build_with(encode, index_dir, rasters, model, tile_ground_m=None, tile_px=None, overlap=0.0,
               bands=None, progress=None, cancel=None, chunk_px=DEFAULT_CHUNK_PX,
               approx_threshold=APPROX_THRESHOLD, model_source=None, nodata=None,
               max_nodata=DEFAULT_MAX_NODATA) -> IndexStats:
    """What every build does around its encoding: find and plan the rasters, hold the folder's
    lock, record the model, mark finished rasters complete and bring the search file up to date.

    `encode(store, jobs, stats, on_done, should_stop)` encodes the pending chunks of `jobs` (a
    list of RasterJob) and commits them to `store` with their done marks (a ChunkCommitter does
    that), calls on_done(n_tiles, message) as tiles finish and sets stats.cancelled when it stops
    because should_stop() became true. build_index encodes in this process; core.index.cluster on Dask.
    """
    start = time.perf_counter()
    stats = IndexStats()
    should_stop = stop_check(cancel)
    report = progress or (lambda update: None)
    found = find_rasters(rasters)   # a typo fails before an index folder is made
    sources = _stac_sources(rasters)
    max_nodata = check_max_nodata(max_nodata)
    given = isinstance(index_dir, TileIndex)   # the caller's open index: used, left open
    store = index_dir if given else TileIndex.open(index_dir, model=model, create=True, verify_model=False)
    lock = IndexLock(store.index_dir)
    try:
        lock.acquire()
        store.check_model_for_building(model)
        stats.warnings += store.repair_vector_files()   # before planning: it may unfinish rasters
        if model_source is not None:
            store.set_model_source(model_source)
        jobs = _plan_jobs(store, found, model, tile_ground_m, tile_px, overlap, bands,
                          chunk_px, stats, _NodataSettings(nodata, max_nodata), sources)
        if note := few_tiles_note(stats.tiles_planned, overlap):
            stats.warnings.append(note)
        done = _Counter(stats.tiles_resumed)
        report(Progress(Stage.PLANNED, done.value, stats.tiles_planned, "planned"))
        encode(store, jobs, stats, lambda n, message: report(
            Progress(Stage.ENCODING, done.add(n), stats.tiles_planned, message)), should_stop)
        for job in jobs:
            if not stats.cancelled and not job.failed:
                store.mark_complete(job.raster_id)
        _warn_empty_rasters(store, jobs, stats)
        # The search structure counts vectors; the build's listeners count tiles throughout.
        store.finalize(approx_threshold, progress=lambda update: report(
            replace(update, done=done.value, total=stats.tiles_planned)))
        stats.tiles_in_index = store.count
        stats.seconds = time.perf_counter() - start
        end = Stage.CANCELLED if stats.cancelled else Stage.DONE
        report(Progress(end, done.value, stats.tiles_planned, end.value))
        return stats
    finally:
        lock.release()
        if not given:
            store.close()


# -- planning ---------------------------------------------------------------------------------

def check_max_nodata(value) -> float:
    """The nodata threshold as a float in [0, 1], or a UserError."""
    given = value
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise UserError(f"The nodata threshold is the share of a tile that may be nodata, between 0 "
                        f"and 1 (e.g. 0.5; 1 keeps every tile with any valid pixel); got {given!r}.")
    return value


@dataclass(frozen=True)
class _NodataSettings:
    setting: object        # raster_info's nodata setting, or {raster path: setting}
    max_nodata: float

    def for_path(self, path):
        if isinstance(self.setting, dict):
            by_path = {raster_path(p): v for p, v in self.setting.items()}
            return by_path.get(raster_path(path))
        return self.setting


def _stac_sources(rasters) -> dict[str, dict]:
    """{raster path: its STAC item's record} of the StacAssets among `rasters`."""
    from ssjdn.core.geo.stac import StacAsset
    items = [rasters] if isinstance(rasters, StacAsset) else \
        [] if isinstance(rasters, (str, os.PathLike)) else list(rasters)
    return {a.path: a.source for a in items if isinstance(a, StacAsset)}


@dataclass
class _PlannedRaster:
    """A raster as a build would tile it: what begin_raster (or is_current) compares."""
    path: str
    explicit: bool
    info: object
    grids: list
    tiling: dict

    @property
    def n_windows(self) -> int:
        return sum(len(windows) for _, windows in self.grids)


def _planned_rasters(found, model, tile_ground_m, tile_px, overlap, bands, chunk_px, stats,
                     nodata: _NodataSettings, sources: dict):
    """Each readable raster of `found` with its tile grids and the tiling record a build stores;
    an unreadable one found in a folder is skipped with a warning (a named one raises)."""
    for path, explicit in found:
        try:
            info = raster_info(path, bands=bands, nodata=nodata.for_path(path))
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
        grids = _scale_grids(info, tile_ground_m, tile_px, overlap, model)
        tiling = {"tile_px": list(grids[0][0]), "overlap": overlap, "bands": list(info.rgb_bands),
                  "chunk_px": chunk_px, "max_nodata": nodata.max_nodata}
        if len(grids) > 1:
            tiling["scales"] = [{"tile_px": list(size), "overlap": overlap} for size, _ in grids[1:]]
        if (policy := nodata_policy(info)) is not None:
            tiling["nodata"] = policy
        if path in sources:   # a new version of the item re-encodes it (part of the grid key)
            tiling["stac"] = sources[path]
        yield _PlannedRaster(path, explicit, info, grids, tiling)


def rasters_to_index(index: TileIndex, rasters, model, tile_ground_m=None, tile_px=None, overlap=0.0,
                     bands=None, chunk_px=DEFAULT_CHUNK_PX, nodata=None,
                     max_nodata=DEFAULT_MAX_NODATA, **_build_only) -> list[str]:
    """The paths of `rasters` that build_index with these settings would encode into `index`:
    not in it, not finished, changed on disk since, or tiled otherwise. Only reads, so it
    answers for an index that cannot be built into (a read-only folder, an archive). Settings
    that only steer a build (batch size, workers, progress) are accepted and ignored."""
    planned = _planned_rasters(find_rasters(rasters), model, tile_ground_m, tile_px, overlap, bands,
                               chunk_px, IndexStats(), _NodataSettings(nodata, check_max_nodata(max_nodata)),
                               _stac_sources(rasters))
    return [p.path for p in planned if not index.is_current(p.info, p.tiling)]


def _plan_jobs(store, found, model, tile_ground_m, tile_px, overlap, bands, chunk_px, stats,
               nodata: _NodataSettings, sources: dict):
    jobs = []
    for planned in _planned_rasters(found, model, tile_ground_m, tile_px, overlap, bands, chunk_px,
                                    stats, nodata, sources):
        info, tiling, n_windows = planned.info, planned.tiling, planned.n_windows
        stats.tiles_planned += n_windows
        raster_id, complete, stored = store.begin_raster(info, tiling, n_windows)
        if complete:
            stats.rasters_skipped += 1
            stats.tiles_resumed += n_windows
            continue
        if note := nodata_note(info):
            stats.warnings.append(note)
        # A resumed raster keeps the chunking its done marks refer to.
        tiles, chunks = _scale_tiles_and_chunks(info, planned.grids, stored.get("chunk_px", chunk_px))
        done_chunks = store.done_chunks(raster_id)
        stats.tiles_resumed += sum(len(chunks[c].tile_indices) for c in done_chunks if c in chunks)
        pending = [i for i in chunks if i not in done_chunks]
        job = RasterJob(raster_id, info, tiles, chunks, pending, planned.explicit,
                        max_nodata=nodata.max_nodata)
        if "refresh_from" in stored:
            job.existing = store.tile_checks(raster_id)
            job.same_pixels = stored["refresh_from"].get("nodata") == tiling.get("nodata")
        jobs.append(job)
    return jobs


def few_tiles_note(n_tiles: int, overlap: float) -> str | None:
    """What to say when rasters give too few tiles for a search to mean much (None: enough)."""
    if n_tiles >= MIN_TILES_FOR_SEARCH:
        return None
    how = ("overlapping tiles (--overlap 0.5, or Overlap in the app's Indexing settings)"
           if overlap == 0 else
           "a second, smaller tile size (e.g. --tile-m 76.8,38.4, or Second tile size in the app)")
    return (f"these rasters give only {n_tiles} tile(s); a search ranks so few that its order means "
            f"little and things on tile borders are cut in two. For more, use {how}.")


def tile_sizes(tile_ground_m=None, tile_px=None) -> list[dict]:
    """One tile_size_px keyword set per scale: `tile_ground_m` or `tile_px` may be one size or
    several (e.g. [76.8, 38.4]: a second, finer tiling of every raster)."""
    if tile_ground_m is not None and tile_px is not None:
        raise UserError("Give either tile sizes in pixels or in metres, not both.")
    sizes = tile_px if tile_px is not None else tile_ground_m
    key = "tile_px" if tile_px is not None else "tile_ground_m"
    if sizes is None:
        return [{}]
    sizes = list(sizes) if isinstance(sizes, (list, tuple)) else [sizes]
    if not sizes or len(set(sizes)) != len(sizes):
        raise UserError(f"Give each tile size once (e.g. 76.8,38.4); got {sizes}.")
    return [{key: size} for size in sizes]


def _scale_grids(info, tile_ground_m, tile_px, overlap, model) -> list[tuple[tuple[int, int], list]]:
    """((width, height) px, windows) of each scale's tile grid over `info`."""
    grids = []
    for size in tile_sizes(tile_ground_m, tile_px):
        px = tile_size_px(info, model=model, **size)
        if any(px == other for other, _ in grids):
            continue   # two ground sizes that round to the same pixels: one tiling
        windows = plan_windows(info, overlap=overlap, model=model, **size)
        if len(windows) >= 1 << SCALE_SHIFT:
            raise UserError(f"{info.path} would be cut into {len(windows)} tiles of {px[0]} px; the "
                            f"most one tiling may hold is {1 << SCALE_SHIFT}. Use larger tiles.")
        grids.append((px, windows))
    return grids


def _scale_tiles_and_chunks(info, grids, chunk_px) -> tuple[dict, dict]:
    """({tile index: Tile}, {chunk id: Chunk}) over every scale: a scale's tile indices and chunk
    ids start at scale << SCALE_SHIFT, so each scale's grid is chunked and resumed on its own."""
    tiles, chunks = {}, {}
    for scale, (_, windows) in enumerate(grids):
        first = scale << SCALE_SHIFT
        scale_tiles = tiles_for_windows(info, windows, first_index=first)
        tiles.update((t.index, t) for t in scale_tiles)
        chunks.update((first + i, c) for i, c in enumerate(chunk_tiles(info, scale_tiles, chunk_px)))
    return tiles, chunks


def _warn_empty_rasters(store, jobs, stats) -> None:
    if stats.cancelled:
        return
    indexed = {r.raster_id: r.n_indexed for r in store.rasters()}
    for job in jobs:
        if not job.failed and indexed.get(job.raster_id, 0) == 0:
            stats.warnings.append(f"{job.info.path}: every tile is nodata (no valid pixels), so nothing "
                                  f"from it is in the index. Check its nodata value or mask.")


# -- reading ----------------------------------------------------------------------------------

def cut_chunk(info, chunk, tiles, pin: bool = False,
              max_nodata: float = DEFAULT_MAX_NODATA) -> tuple[list, torch.Tensor, int, list[int]]:
    """Read one chunk of a raster at native resolution and cut its tiles in memory.

    `tiles` maps a tile index to its Tile (a raster's list of tiles, or a dict of the chunk's).
    Returns (tiles kept, their uint8 pixels [n, 3, h, w], number of tiles left out because
    more than `max_nodata` of them is nodata (or all of it), the kept tiles' pixel checksums).
    Raises UserError when the pixels cannot be read."""
    rgb, valid = read_window_rgb(info, chunk.window, with_mask=True)
    col0, row0 = int(chunk.window.col_off), int(chunk.window.row_off)
    keep, n_nodata = [], 0
    for index in chunk.tile_indices:
        tile = tiles[index]
        rows, cols = _slices(tile.window, row0, col0)
        tile_valid = valid[rows, cols]
        if tile_valid.any() and 1.0 - tile_valid.mean() <= max_nodata:
            keep.append(tile)
        else:
            n_nodata += 1
    first = tiles[chunk.tile_indices[0]].window
    pixels = torch.empty((len(keep), 3, int(first.height), int(first.width)), dtype=torch.uint8,
                         pin_memory=pin)
    out = pixels.numpy()
    for i, tile in enumerate(keep):
        rows, cols = _slices(tile.window, row0, col0)
        out[i] = rgb[:, rows, cols]
    return keep, pixels, n_nodata, [zlib.crc32(out[i]) for i in range(len(keep))]


def _read_chunk(job: RasterJob, chunk_id: int, pin: bool) -> ReadChunk:
    """Read one chunk and cut its tiles (runs in a reader thread)."""
    chunk = job.chunks[chunk_id]
    keep, pixels, n_nodata, crcs = cut_chunk(job.info, chunk, job.tiles, pin, job.max_nodata)
    return job.sorted_chunk(chunk_id, keep, crcs, n_nodata, pixels)[0]


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
        finally:
            for _, future in in_flight:
                future.cancel()
            pipeline.close()


def _chunk_or_skip(job: RasterJob, future, stats):
    """The chunk a reader produced, or None when its file is (or turned out) unreadable."""
    try:
        chunk = future.result()
    except UserError as exc:
        skip_unreadable(job, exc, stats)
        return None
    return None if job.failed else chunk


def skip_unreadable(job: RasterJob, exc: UserError, stats) -> None:
    """A read of `job`'s pixels failed with `exc`: raise it for a file the user named, else
    skip the file with a warning.

    A file found in a folder that fails mid-read (e.g. truncated: its header is fine, its
    pixels are not) is skipped so the other files still get indexed; tiles of it already saved
    stay, and it is not marked complete, so a rerun tries it again."""
    if job.explicit:
        raise exc
    if not job.failed:
        job.failed = True
        stats.warnings.append(f"skipped {job.info.path}: {exc}")
        stats.skipped_files.append(job.info.path)


# -- encoding and committing ------------------------------------------------------------------

def encode_tiles(model, pixels: torch.Tensor) -> np.ndarray:
    """float32 vectors [n, D] of uint8 tile pixels [n, 3, h, w] already on the model's device."""
    if not len(pixels):
        return np.zeros((0, 1), np.float32)
    # The model splits its input into its own (small) default batches unless told otherwise;
    # a GPU needs the whole batch at once to reach its throughput.
    whole_batch = "batch_size" in inspect.signature(model.encode_images).parameters
    kwargs = {"batch_size": len(pixels)} if whole_batch else {}
    return model.encode_images(pixels, **kwargs).float().cpu().numpy()


class _Pipeline:
    """Batches chunk pixels for the model and hands the encoded chunks to a ChunkCommitter."""

    def __init__(self, store, model, batch_size, commit_every, stats, on_done):
        self.store, self.model, self.stats, self.on_done = store, model, stats, on_done
        self.device = torch.device(getattr(model, "device", "cpu"))
        self.batch_size = batch_size or (512 if self.device.type == "cuda" else 32)
        self.committer = ChunkCommitter(store, commit_every, stats)
        self._batch: list[ReadChunk] = []        # chunks whose pixels wait for the model
        self._batch_pixels: list[torch.Tensor] = []

    def add(self, chunk: ReadChunk) -> None:
        if self._batch_pixels and chunk.pixels.shape[1:] != self._batch_pixels[0].shape[1:]:
            self._encode()  # tiles of another size (a raster smaller than a tile): own batch
        self._batch.append(chunk)
        self._batch_pixels.append(chunk.pixels.to(self.device, non_blocking=True))
        if sum(len(p) for p in self._batch_pixels) >= self.batch_size:
            self._encode()

    def flush(self) -> None:
        """Encode what is batched, commit everything and wait until it is written."""
        self._encode()
        self.committer.flush()

    def close(self) -> None:
        self.committer.close()

    def _encode(self) -> None:
        if not self._batch:
            return
        pixels = torch.cat(self._batch_pixels) if len(self._batch_pixels) > 1 else self._batch_pixels[0]
        self._batch_pixels = []
        vectors = encode_tiles(self.model, pixels)
        start = 0
        for chunk in self._batch:
            chunk.pixels = None  # only vectors wait for the commit, never pixels (memory bound)
            self.committer.add(chunk, vectors[start:start + len(chunk.tiles)])
            start += len(chunk.tiles)
            self.on_done(len(chunk.tiles) + chunk.n_nodata + chunk.n_unchanged,
                         Path(chunk.job.info.path).name)
        self._batch = []
        del pixels


class ChunkCommitter:
    """Commits encoded chunks to the index with their done marks, a few thousand tiles at a time.

    SQLite writes of vectors cost ~25-40 us per tile (WAL, 2 KB blobs): as much as a GPU needs
    to encode one, so one writer thread commits while encoding goes on. A single thread keeps
    commits in order; at most two commits wait, so memory stays bounded. Chunks may arrive in
    any order: each commit is one transaction per raster holding its tiles and chunk marks.
    """

    def __init__(self, store, commit_every, stats):
        self.store, self.commit_every, self.stats = store, commit_every, stats
        self._encoded: list[tuple[ReadChunk, np.ndarray]] = []  # waiting to be committed
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ssjdn-write")
        self._commits: deque = deque()

    def add(self, chunk: ReadChunk, vectors: np.ndarray) -> None:
        """Queue a chunk's vectors (one per tile in chunk.tiles) for the next commit."""
        self._encoded.append((chunk, vectors))
        if sum(len(c.tiles) for c, _ in self._encoded) >= self.commit_every:
            self._commit()

    def flush(self) -> None:
        """Commit everything queued and wait until it is written."""
        self._commit()
        while self._commits:
            self._commits.popleft().result()

    def close(self) -> None:
        """Let commits already handed to the writer finish (they hold finished work)."""
        self._writer.shutdown(wait=True)

    def _commit(self) -> None:
        # Group by raster: one transaction per raster, tiles and their chunk marks together.
        by_raster: dict[int, list[tuple[ReadChunk, np.ndarray]]] = {}
        for chunk, vectors in self._encoded:
            by_raster.setdefault(chunk.job.raster_id, []).append((chunk, vectors))
        for raster_id, items in by_raster.items():
            tiles = [t for chunk, _ in items for t in chunk.tiles]
            vectors = [v for _, v in items if len(v)]
            stacked = np.concatenate(vectors) if vectors else np.zeros((0, 1), np.float32)
            checks = {i: crc for chunk, _ in items for i, crc in chunk.checks.items()}
            removed = [i for chunk, _ in items for i in chunk.removed]
            while len(self._commits) >= 2:
                self._commits.popleft().result()  # re-raises a failed write here
            self._commits.append(self._writer.submit(
                self.store.commit, raster_id, tiles, stacked, [chunk.chunk_id for chunk, _ in items],
                checks, removed, items[0][0].job.existing is not None))
            for chunk, _ in items:
                self.stats.tiles_encoded += len(chunk.tiles)
                self.stats.tiles_nodata += chunk.n_nodata
                self.stats.tiles_unchanged += chunk.n_unchanged
        self._encoded = []


class _Counter:
    def __init__(self, value: int):
        self.value = value

    def add(self, n: int) -> int:
        self.value += n
        return self.value
