"""Building a tile index on a Dask cluster: many machines (or GPUs) encode, this process writes.

The work is cut as in a single-process build (core.index.indexing): one task per read chunk of one
raster. A worker loads the model once (cached per process by its spec: a checkpoint path or a
config name, never a pickled model), reads the chunk's pixels, encodes its tiles and returns
(tile indexes, float32 vectors, number of all-nodata tiles): about 1 KB per tile.

This client is the index's only writer. The index folder has one writer by design (SQLite and
the vector store are written by one process holding the folder's lock), and what comes back per
chunk is small, so workers never touch the index folder: they need not see it, and a worker that
dies cannot leave it half-written. The client commits finished chunks with their done marks as
they arrive, in any order, exactly as a single-process build does, so resume and incremental
behaviour are the same: a re-run skips chunks already committed. A worker that dies loses only
its chunks in flight; the scheduler gives them to another worker (and tasks that fail with an
error are retried a few times). The workers read the rasters at the paths this client sees them,
so rasters must be on storage every worker mounts at the same path (a shared disk, NFS, an
object store mounted as a folder).

Workers pick their device as a single-process build does (CUDA if available, else the CPU). On
a multi-GPU machine, `local-cuda` (dask-cuda's LocalCUDACluster) starts one worker per GPU.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ssjdn.core.errors import UserError
from ssjdn.core.progress import Progress, Stage
from ssjdn.core.index.index_store import APPROX_THRESHOLD
from ssjdn.core.index.indexing import (DEFAULT_CHUNK_PX, DEFAULT_MAX_NODATA, ChunkCommitter, IndexStats,
                                 build_with, cut_chunk, encode_tiles, skip_unreadable)

# A task that fails with an error (a network read of a raster, say) is run again this often;
# a task whose worker died is given to another worker by the scheduler regardless.
RETRIES = 2
# Chunks in flight per worker thread: enough that no worker waits for the client, few enough
# that memory does not grow with the raster.
IN_FLIGHT_PER_THREAD = 2
CONNECT_TIMEOUT_S = 10.0
# How long the scheduler may have no worker at all before the build stops (work is saved).
NO_WORKERS_TIMEOUT_S = 60.0
# Threads per worker of `local-cuda`: one reads the next chunk while another encodes on the GPU.
CUDA_WORKER_THREADS = 2
SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")
ADDRESS_FORMS = ("local:N (N worker processes on this machine), local-cuda[:N] (one worker per "
                 "GPU, needs dask-cuda) or a Dask scheduler's address such as tcp://host:8786")


@dataclass(frozen=True)
class ClusterAddress:
    kind: str              # "local", "local-cuda" or "scheduler"
    n_workers: int | None  # for local kinds (None: one per GPU)
    address: str | None    # for a scheduler


def parse_address(text: str) -> ClusterAddress:
    """--cluster's value checked for its form only (nothing is started or contacted)."""
    text = str(text).strip()
    kind, sep, rest = text.partition(":")
    if kind in ("local", "local-cuda"):
        if kind == "local-cuda" and not sep:
            return ClusterAddress(kind, None, None)
        if not re.fullmatch(r"[1-9][0-9]*", rest):
            raise UserError(f"--cluster {text}: give the number of workers, 1 or more, e.g. "
                            f"{kind}:2.")
        return ClusterAddress(kind, int(rest), None)
    scheme, sep, hostport = text.partition("://")
    if not sep:
        scheme, hostport = "tcp", text
    host, _, port = hostport.rpartition(":")
    if scheme not in SCHEMES or not host or not port.isdigit():
        raise UserError(f"--cluster {text} is not a cluster address; give {ADDRESS_FORMS}.")
    return ClusterAddress("scheduler", None, f"{scheme}://{hostport}")


@contextmanager
def connect(cluster, timeout: float = CONNECT_TIMEOUT_S):
    """A distributed.Client for `cluster`: a Client (used as is) or an address (parse_address);
    a local cluster started here is shut down on exit."""
    from distributed import Client
    if not isinstance(cluster, (str, ClusterAddress)):
        yield cluster
        return
    where = cluster if isinstance(cluster, ClusterAddress) else parse_address(cluster)
    if where.kind == "scheduler":
        try:
            _check_dask_answers(where.address, timeout)
            client = Client(where.address, timeout=timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            raise UserError(f"Cannot reach a Dask scheduler at {where.address} ({exc}). Start one "
                            f"with `dask scheduler` on that machine and `dask worker {where.address}` "
                            f"on each worker machine, check the host, port and firewall, or use "
                            f"--cluster local:N to run N workers on this machine.") from None
        with client:
            yield client
        return
    local = _local_cluster(where)
    try:
        with Client(local) as client:
            yield client
    finally:
        local.close()


# A Dask peer's first message (its handshake) is small; what is not is another protocol's bytes,
# which Dask would take for a frame length and try to allocate ("Out of memory").
HANDSHAKE_MAX_BYTES = 1 << 20
NOT_A_SCHEDULER = ("; it is not a Dask scheduler. Give the scheduler's own port (8786 unless "
                   "it was started with another --port; 8787 is its dashboard, a web page)")


def _check_dask_answers(address: str, timeout: float) -> None:
    """Over plain TCP a Dask scheduler sends its handshake as soon as a client connects: read
    its first frame header within `timeout`, so another service on the port is named at once
    instead of a Dask client waiting on it for minutes. Other schemes are left to Dask."""
    scheme, _, hostport = address.partition("://")
    if scheme != "tcp":
        return
    host, _, port = hostport.rpartition(":")
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock:
        sock.settimeout(timeout)
        try:
            first = sock.recv(8)
        except socket.timeout:
            first = _silent_service_answer(sock)
            if not first.startswith(b"HTTP"):
                raise UserError(f"{address} accepted the connection but sent nothing within "
                                f"{timeout:g} s, as a service waiting for a request does"
                                f"{NOT_A_SCHEDULER}.") from None
    if first.startswith(b"HTTP") or first.lstrip().startswith(b"<"):
        raise UserError(f"{address} answered as an HTTP server{NOT_A_SCHEDULER}.")
    length = int.from_bytes(first.ljust(8, b"\0"), "little")
    if len(first) < 8 or not 0 < length <= HANDSHAKE_MAX_BYTES:
        shown = first.decode("ascii", "replace") if first.isascii() else first.hex()
        raise UserError(f"{address} answered, but not in Dask's protocol (first bytes: "
                        f"{shown!r}){NOT_A_SCHEDULER}.")


def _silent_service_answer(sock) -> bytes:
    """What a service that waits for a request answers to a minimal HTTP one (a web server,
    such as a scheduler's dashboard, says "HTTP/..."), or b"" if nothing."""
    try:
        sock.sendall(b"HEAD / HTTP/1.0\r\n\r\n")
        return sock.recv(8)
    except OSError:
        return b""


def _local_cluster(where: ClusterAddress):
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if where.kind == "local-cuda" or (gpus and _has_dask_cuda() and where.n_workers <= gpus):
        return _local_cuda_cluster(where.n_workers, gpus)
    from distributed import LocalCluster
    # One thread per process: torch in each uses one core (Dask sets OMP_NUM_THREADS=1 in the
    # workers it spawns), so N workers on N cores do not oversubscribe them. Dask's warnings
    # (a slow worker shutdown, a worker restarted) would break the progress bar; errors show.
    return LocalCluster(n_workers=where.n_workers, threads_per_worker=1, processes=True,
                        silence_logs=logging.ERROR)


def _local_cuda_cluster(n_workers: int | None, gpus: int):
    if not _has_dask_cuda():
        raise UserError("--cluster local-cuda needs the dask-cuda package (pip install dask-cuda), "
                        "or use --cluster local:N.")
    if gpus == 0:
        raise UserError("--cluster local-cuda needs CUDA GPUs and this machine has none that torch "
                        "can use; use --cluster local:N to run N CPU workers.")
    n_workers = n_workers or gpus
    if n_workers > gpus:
        raise UserError(f"--cluster local-cuda:{n_workers} asks for more workers than this "
                        f"machine's {gpus} GPU(s); give at most local-cuda:{gpus}.")
    from dask_cuda import LocalCUDACluster
    return LocalCUDACluster(CUDA_VISIBLE_DEVICES=list(range(n_workers)),
                            threads_per_worker=CUDA_WORKER_THREADS, silence_logs=logging.ERROR)


def _has_dask_cuda() -> bool:
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        return False
    return True


def worker_spec(spec) -> str:
    """The canonical spec to send to workers: the shipped model by name (each worker has its own
    copy where its ssjdn is installed), anything else as given."""
    from ssjdn.core.model.api import default_model_path
    from ssjdn.core.model.spec import SHIPPED, ModelSpec
    parsed = ModelSpec.parse(spec)
    if parsed.resolved() == ModelSpec("file", str(default_model_path())):
        return SHIPPED
    return str(parsed)


def build_index_on_cluster(index_dir, rasters, model, cluster, model_spec=None, tile_ground_m=None,
                           tile_px=None, overlap=0.0, bands=None, progress=None, cancel=None,
                           chunk_px=DEFAULT_CHUNK_PX, commit_every=2048,
                           approx_threshold=APPROX_THRESHOLD, model_source=None,
                           connect_timeout=CONNECT_TIMEOUT_S, nodata=None,
                           max_nodata=DEFAULT_MAX_NODATA) -> IndexStats:
    """build_index with the encoding done by the workers of a Dask cluster (see module docstring).

    `cluster` is a distributed.Client or an address (parse_address). `model` is this process's
    copy of the model (it plans the tiles and stamps the index); the workers load `model_spec`
    (default `model_source`) themselves, which must give the same model (same fingerprint).
    progress, cancel and the result are those of build_index; progress messages carry the
    cluster's rate and worker count.
    """
    spec = model_spec if model_spec is not None else model_source
    if spec is None:
        raise UserError("The workers load the model themselves: give model_spec (a checkpoint "
                        "path or config name that every worker can load).")
    spec = worker_spec(spec)
    report = progress or (lambda update: None)
    report(Progress(Stage.STARTING, message="starting the cluster"))
    with connect(cluster, connect_timeout) as client:
        _wait_for_workers(client)
        report(Progress(Stage.STARTING, message=f"loading the model on {len(client.nthreads())} worker(s)"))
        _check_workers(client, spec, model.fingerprint)
        encode = _ClusterEncoder(client, spec, model.fingerprint, commit_every)
        return build_with(encode, index_dir, rasters, model, tile_ground_m=tile_ground_m,
                          tile_px=tile_px, overlap=overlap, bands=bands, progress=progress,
                          cancel=cancel, chunk_px=chunk_px, approx_threshold=approx_threshold,
                          model_source=model_source, nodata=nodata, max_nodata=max_nodata)


def _wait_for_workers(client) -> None:
    try:
        client.wait_for_workers(1, timeout=NO_WORKERS_TIMEOUT_S)
    except TimeoutError:
        address = client.scheduler.address
        raise UserError(f"The Dask scheduler at {address} has no workers (waited "
                        f"{NO_WORKERS_TIMEOUT_S:.0f} s). Start `dask worker {address}` on each "
                        f"worker machine (or `dask cuda worker {address}` for one per GPU), then "
                        f"run this command again.") from None


def _check_workers(client, spec: str, fingerprint: str) -> None:
    """Load the model on every worker now: a worker without ssjdn or without the model fails
    here with one message, before any tile is planned, and encoding starts with models loaded."""
    token = uuid.uuid4().hex[:8]
    futures = {address: client.submit(_load_model_on_worker, spec, fingerprint, workers=[address],
                                      allow_other_workers=False, pure=False,
                                      key=f"ssjdn-load-model-{token}-{i}")
               for i, address in enumerate(client.nthreads())}
    for address, future in futures.items():
        if _failed(future):
            raise _worker_error(future.exception(), f"the Dask worker {address}") from None


def _failed(future) -> bool:
    """Wait for `future`; True when it failed."""
    try:
        future.result()
    except Exception:  # noqa: BLE001 - the caller turns it into a message
        return True
    return False


def _worker_error(exc: BaseException, where: str) -> BaseException:
    """What a failure on a worker means for the user: a UserError saying what to do when it is
    one the user can fix, else the exception itself (a bug: logged with its traceback)."""
    from distributed import KilledWorker
    if isinstance(exc, UserError):
        return type(exc)(f"On {where}: {exc}")
    if isinstance(exc, ImportError) and "ssjdn" in str(exc):
        return UserError(f"{where[0].upper()}{where[1:]} cannot import ssjdn ({exc}). Install "
                         f"SSJDN Explorer, the same version as on this machine, in the Python "
                         f"environment the workers run in, and restart them.")
    if isinstance(exc, KilledWorker):
        return UserError(f"The Dask workers that took {where} died while encoding it, several "
                         f"times (out of memory? see the workers' logs). Everything encoded before "
                         f"is saved: fix the workers and run the same command again to continue.")
    return exc


class _ClusterEncoder:
    """The `encode` step of build_with on a Dask cluster: keep a bounded number of chunk tasks
    in flight, commit each chunk the workers return, and report tiles done with the rate."""

    def __init__(self, client, spec: str, fingerprint: str, commit_every: int):
        self.client, self.spec, self.fingerprint = client, spec, fingerprint
        self.commit_every = commit_every
        self._n_workers = self._threads = 0
        self._workers_checked = 0.0
        self._no_workers_since = None

    def __call__(self, store, jobs, stats, on_done, should_stop) -> None:
        work = iter([(job, chunk_id) for job in jobs for chunk_id in job.pending_chunks])
        committer = ChunkCommitter(store, self.commit_every, stats)
        token = uuid.uuid4().hex[:8]
        in_flight: dict = {}   # future -> (job, chunk_id)
        start, tiles_done = time.perf_counter(), 0
        try:
            while True:
                self._fill(in_flight, work, token)
                if not in_flight:
                    break
                if should_stop():
                    stats.cancelled = True
                    break
                for future in self._finished(in_flight):
                    job, chunk_id = in_flight.pop(future)
                    n = self._take(future, job, chunk_id, committer, stats)
                    tiles_done += n
                    rate = tiles_done / max(time.perf_counter() - start, 1e-9)
                    on_done(n, f"{Path(job.info.path).name}: {rate:.0f} tiles/s on "
                               f"{self._n_workers} worker(s)")
            committer.flush()
        finally:
            if in_flight and self.client.status == "running":
                self.client.cancel(list(in_flight))
            committer.close()

    def _fill(self, in_flight: dict, work, token: str) -> None:
        self._refresh_workers()
        while len(in_flight) < IN_FLIGHT_PER_THREAD * max(self._threads, 1):
            item = next(work, None)
            if item is None:
                return
            job, chunk_id = item
            if job.failed:
                continue   # an unreadable file found in a folder: its other chunks are skipped
            chunk = job.chunks[chunk_id]
            tiles = {i: job.tiles[i] for i in chunk.tile_indices}
            future = self.client.submit(encode_chunk, self.spec, self.fingerprint, job.info, chunk,
                                        tiles, job.max_nodata, key=f"ssjdn-chunk-{token}-{job.raster_id}-{chunk_id}",
                                        retries=RETRIES, pure=False)
            in_flight[future] = item

    def _finished(self, in_flight: dict) -> list:
        """The futures of `in_flight` that are finished, waiting at most a moment so that a
        cancel is seen soon; UserError when the cluster has had no worker for too long."""
        from distributed import wait
        try:
            done, _ = wait(list(in_flight), timeout=0.5, return_when="FIRST_COMPLETED")
        except TimeoutError:
            done = set()
        if self._refresh_workers() == 0 and not done:
            self._no_workers_since = self._no_workers_since or time.monotonic()
            if time.monotonic() - self._no_workers_since > NO_WORKERS_TIMEOUT_S:
                raise UserError(f"Every Dask worker has gone for over {NO_WORKERS_TIMEOUT_S:.0f} s, "
                                f"so indexing stopped. Everything encoded is saved: start workers "
                                f"and run the same command again to continue.")
        else:
            self._no_workers_since = None
        return [f for f in in_flight if f in done]

    def _take(self, future, job, chunk_id: int, committer, stats) -> int:
        """Queue a finished chunk for commit; the number of its tiles (0 if skipped)."""
        if future.status == "error":
            raise _worker_error(future.exception(),
                                f"chunk {chunk_id} of {job.info.path}") from None
        if future.status == "cancelled":   # the client lost the scheduler and gave up on it
            raise UserError(f"Lost the connection to the Dask scheduler at "
                            f"{self.client.scheduler.address}. Everything encoded before is saved: "
                            f"check the scheduler and run the same command again to continue.")
        result = future.result()
        if result.error is not None:
            skip_unreadable(job, UserError(result.error), stats)
        if job.failed:
            return 0
        keep = [job.tiles[i] for i in result.tile_indices]
        # A refresh encodes every kept tile on the workers (they do not know the index); only
        # those whose pixels changed are written.
        chunk, encode = job.sorted_chunk(chunk_id, keep, result.crcs, result.n_nodata)
        vectors = result.vectors[encode] if result.vectors is not None else result.vectors
        committer.add(chunk, vectors)
        return len(keep) + result.n_nodata

    def _refresh_workers(self) -> int:
        """The number of workers, asked of the scheduler at most once a second."""
        if time.monotonic() - self._workers_checked > 1.0:
            nthreads = self.client.nthreads()
            self._n_workers, self._threads = len(nthreads), sum(nthreads.values())
            self._workers_checked = time.monotonic()
        return self._n_workers


# -- on the workers ---------------------------------------------------------------------------

@dataclass
class EncodedChunk:
    """What a worker returns for one chunk."""
    tile_indices: tuple[int, ...]   # tiles with valid pixels, in the order of `vectors`
    vectors: np.ndarray | None      # float32 [n, D]
    n_nodata: int
    error: str | None = None        # the chunk's pixels could not be read (a damaged file)
    crcs: tuple[int, ...] = ()      # checksums of the kept tiles' pixels


_models: dict[str, object] = {}
_models_lock = threading.Lock()


def _worker_model(spec: str, fingerprint: str):
    """The model for `spec`, loaded once per worker process, on this worker's device."""
    from ssjdn.core.model.api import model_from_spec
    with _models_lock:
        model = _models.get(spec)
        if model is None:
            model = _models[spec] = model_from_spec(spec).model
    if model.fingerprint != fingerprint:
        raise UserError(f"the model '{spec}' there is not the one this index is built with "
                        f"(fingerprint {model.fingerprint[:12]}, expected {fingerprint[:12]}). Give "
                        f"every worker the same checkpoint file (--model with a path they all "
                        f"see); a config name builds untrained weights that can differ slightly "
                        f"from one machine (or thread count) to another.")
    return model


def _load_model_on_worker(spec: str, fingerprint: str) -> str:
    return str(getattr(_worker_model(spec, fingerprint), "device", "cpu"))


def encode_chunk(spec: str, fingerprint: str, info, chunk, tiles: dict,
                 max_nodata: float = DEFAULT_MAX_NODATA) -> EncodedChunk:
    """Read one chunk of a raster, cut and encode its tiles (runs on a worker)."""
    model = _worker_model(spec, fingerprint)
    if not str(info.path).startswith("/vsi") and not os.path.exists(info.path):
        raise UserError(f"{info.path} is not there on the Dask worker on {socket.gethostname()}. "
                        f"Workers read rasters at the same path as the machine that runs `ssjdn "
                        f"index`: put them on storage every worker mounts at that path.")
    try:
        keep, pixels, n_nodata, crcs = cut_chunk(info, chunk, tiles, max_nodata=max_nodata)
    except UserError as exc:   # the client decides: an error for a named file, else a skip
        return EncodedChunk((), None, 0, error=str(exc))
    vectors = encode_tiles(model, pixels.to(getattr(model, "device", "cpu")))
    return EncodedChunk(tuple(t.index for t in keep), vectors, n_nodata, crcs=tuple(crcs))
