"""Indexing on a Dask cluster: same result as a single-process build, survives a dead worker and
an interrupted client, and refuses bad addresses before anything loads."""
import dataclasses
import logging
import os
import re
import threading

import numpy as np
import pytest
import torch

from engine_fixtures import scene, write_raster
from ssjdn.core.cli.main import main
from ssjdn.core.index.cluster import build_index_on_cluster, connect, encode_chunk, parse_address
from ssjdn.core.errors import UserError
from ssjdn.core.index.index_store import TileIndex
from ssjdn.core.index.indexing import build_index
from ssjdn.core.query.search import search_text

distributed = pytest.importorskip("distributed")

# 80 tiles of 32 px in 20 chunks of 2 x 2 tiles, committed a few chunks at a time.
TILING = dict(tile_px=32, chunk_px=64)
QUERIES = ["a river", "many buildings", "a green field"]


@pytest.fixture(scope="module")
def client():
    """Two worker processes of one thread each, shared by this module's tests (starting them
    costs seconds)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=logging.CRITICAL) as cluster, \
            distributed.Client(cluster) as dask_client:
        yield dask_client


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_model):
    """The tiny model as a checkpoint file, what workers load: a config name is not enough, as
    its untrained weights differ in the last bit between thread counts (workers use one)."""
    from ssjdn.core.model.api import save_checkpoint
    return str(save_checkpoint(tiny_model, tmp_path_factory.mktemp("model") / "tiny.safetensors"))


@pytest.fixture(scope="module")
def raster(tmp_path_factory):
    """A 320 x 256 UTM scene whose top-left corner is nodata, so some tiles are skipped."""
    data = scene(256, 320)
    data[:, :64, :96] = 0
    return write_raster(tmp_path_factory.mktemp("cluster") / "scene.tif", data, nodata=0)


@pytest.fixture(scope="module")
def single(raster, tmp_path_factory, tiny_model):
    """The single-process build every cluster build must equal."""
    index_dir = tmp_path_factory.mktemp("single") / "idx"
    stats = build_index(index_dir, raster, tiny_model, **TILING)
    return index_dir, stats


def _contents(index_dir, model):
    """(tile ids, windows, vectors, top-10 ids per query) of an index."""
    with TileIndex.open(index_dir, model=model) as index:
        ids = []
        for record in index.rasters():
            ids += index.raster_grid(record.raster_id)[0].tolist()
        windows = [tuple(map(int, (t.window.col_off, t.window.row_off, t.window.width, t.window.height)))
                   for t in index.tiles(ids)]
        top = [[h.tile_id for h in search_text(index, model, q, k=10)] for q in QUERIES]
        return ids, windows, index.vectors(ids), top


def _assert_same_index(index_dir, reference_dir, model):
    ids, windows, vectors, top = _contents(index_dir, model)
    ref_ids, ref_windows, ref_vectors, ref_top = _contents(reference_dir, model)
    assert ids == ref_ids and windows == ref_windows
    # Both stored in float16: equal vectors may round to neighbouring float16 values.
    np.testing.assert_allclose(vectors, ref_vectors, atol=5e-4)
    assert top == ref_top


def _on_cluster(index_dir, raster, model, client, checkpoint, **kwargs):
    return build_index_on_cluster(index_dir, raster, model, client, model_spec=checkpoint,
                                  commit_every=8, **TILING, **kwargs)


def test_a_two_worker_build_equals_the_single_process_build(tmp_path, raster, single, tiny_model, client,
                                                             checkpoint):
    single_dir, single_stats = single
    seen = []
    stats = _on_cluster(tmp_path / "idx", raster, tiny_model, client, checkpoint,
                        progress=lambda p: seen.append((p.done, p.total, p.message)))
    assert len(client.nthreads()) == 2
    assert (stats.tiles_planned, stats.tiles_encoded, stats.tiles_nodata) == \
        (single_stats.tiles_planned, single_stats.tiles_encoded, single_stats.tiles_nodata) == (80, 74, 6)
    _assert_same_index(tmp_path / "idx", single_dir, tiny_model)
    # The progress says what the wait before the first tile is for, reaches the total, and its
    # messages carry the cluster's rate and size.
    assert [m for _, _, m in seen[:2]] == ["starting the cluster", "loading the model on 2 worker(s)"]
    assert seen[-1][:2] == (80, 80)
    assert any("tiles/s on 2 worker(s)" in message for _, _, message in seen)


def test_a_worker_killed_mid_run_loses_nothing(tmp_path, raster, single, tiny_model, client, checkpoint):
    from cluster_fixtures import KillWorkerOnce
    marker = tmp_path / "killed"
    # The worker that starts chunk 5 of the first raster dies; the scheduler reruns the chunk.
    client.register_plugin(KillWorkerOnce("ssjdn-chunk-", "-1-5", str(marker)))
    try:
        stats = _on_cluster(tmp_path / "idx", raster, tiny_model, client, checkpoint)
    finally:
        client.unregister_worker_plugin(KillWorkerOnce.name)
        client.wait_for_workers(2, timeout=60)   # the nanny restarts the dead worker
    assert marker.exists()
    assert stats.tiles_encoded == 74 and not stats.cancelled
    _assert_same_index(tmp_path / "idx", single[0], tiny_model)


def test_an_interrupted_client_resumes_to_the_same_result(tmp_path, raster, single, tiny_model, client,
                                                           checkpoint):
    cancel = threading.Event()

    def progress(update):
        if "tiles/s" in update.message and update.done >= update.total // 2:   # half the tiles encoded
            cancel.set()

    first = _on_cluster(tmp_path / "idx", raster, tiny_model, client, checkpoint, progress=progress,
                        cancel=cancel)
    assert first.cancelled and 0 < first.tiles_encoded < 74
    second = _on_cluster(tmp_path / "idx", raster, tiny_model, client, checkpoint)
    assert not second.cancelled and second.tiles_resumed > 0
    assert first.tiles_encoded + second.tiles_encoded == 74   # no chunk encoded twice
    _assert_same_index(tmp_path / "idx", single[0], tiny_model)


def test_workers_that_cannot_load_the_model_fail_before_the_index_is_made(tmp_path, raster, tiny_model,
                                                                           client):
    with pytest.raises(UserError, match="On the Dask worker .*Model file not found"):
        build_index_on_cluster(tmp_path / "idx", raster, tiny_model, client,
                               model_spec=str(tmp_path / "missing.safetensors"))
    assert not (tmp_path / "idx").exists()


def test_workers_with_another_model_than_the_client_are_refused(tmp_path, raster, client, checkpoint):
    from ssjdn.core.model.api import create_model
    torch.manual_seed(1)
    other = create_model("tiny")   # same config, other weights
    with pytest.raises(UserError, match="not the one this index is built with"):
        build_index_on_cluster(tmp_path / "idx", raster, other, client, model_spec=checkpoint)


def test_a_worker_that_cannot_see_the_raster_says_where_rasters_must_be(raster, tiny_model, checkpoint):
    from ssjdn.core.geo.raster import raster_info
    from ssjdn.core.geo.tiling import chunk_tiles, plan_tiles
    info = raster_info(raster)
    tiles = plan_tiles(info, tile_px=32)
    chunk = chunk_tiles(info, tiles, 64)[0]
    elsewhere = dataclasses.replace(info, path=os.path.join(os.path.dirname(raster), "not-here.tif"))
    with pytest.raises(UserError, match="same path"):
        encode_chunk(checkpoint, tiny_model.fingerprint, elsewhere, chunk,
                     {i: tiles[i] for i in chunk.tile_indices})


@pytest.mark.parametrize("address", ["local:0", "local:x", "local", "local:-2", "foo",
                                     "tcp://host", "http://host:8786", "host:port"])
def test_bad_cluster_addresses_are_refused(address):
    with pytest.raises(UserError, match="--cluster"):
        parse_address(address)


@pytest.mark.parametrize("address, kind, n, scheduler", [
    ("local:2", "local", 2, None), ("local-cuda", "local-cuda", None, None),
    ("local-cuda:4", "local-cuda", 4, None), ("tcp://10.0.0.5:8786", "scheduler", None, "tcp://10.0.0.5:8786"),
    ("node7:8786", "scheduler", None, "tcp://node7:8786")])
def test_cluster_addresses_are_understood(address, kind, n, scheduler):
    assert dataclasses.astuple(parse_address(address)) == (kind, n, scheduler)


def test_an_unreachable_scheduler_is_one_user_error():
    with pytest.raises(UserError, match="Cannot reach a Dask scheduler at tcp://127.0.0.1:9 .*dask scheduler"):
        with connect("tcp://127.0.0.1:9", timeout=1):
            pass


def test_local_cuda_without_dask_cuda_says_what_to_install(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_dask_cuda(name, *args, **kwargs):
        if name.startswith("dask_cuda"):
            raise ImportError("No module named 'dask_cuda'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_dask_cuda)
    with pytest.raises(UserError, match="pip install dask-cuda"):
        with connect("local-cuda:1"):
            pass


@pytest.mark.parametrize("extra, expected", [
    (["--cluster", "local:0"], "local:2"),
    (["--cluster", "tcp://host"], "scheduler"),
    (["--cluster", "local:2", "--workers", "4"], "--workers"),
    (["--cluster", "local:2", "--batch-size", "64"], "--batch-size"),
])
def test_the_cli_refuses_a_bad_cluster_before_the_model_loads(tmp_path, raster, capsys, monkeypatch,
                                                              extra, expected):
    from ssjdn.core.cli import commands
    monkeypatch.setattr(commands, "load_model_arg", lambda *a: pytest.fail("model loaded"))
    assert main(["index", raster, "--index", str(tmp_path / "idx"), *extra]) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "idx").exists()


def test_the_cli_indexes_through_a_scheduler_address(tmp_path, raster, single, tiny_model, capsys,
                                                     checkpoint, client):
    idx = str(tmp_path / "idx")
    assert main(["index", raster, "--index", idx, "--model", checkpoint, "--tile-px", "32",
                 "--cluster", client.scheduler.address]) == 0
    assert "74 tiles encoded" in capsys.readouterr().out
    with TileIndex.open(idx) as index:
        assert index.model_source == checkpoint
    # The default chunking of the CLI cuts other chunks; the tiles and vectors are the same.
    _assert_same_index(idx, single[0], tiny_model)


@pytest.mark.parametrize("failure, expected", [
    (ModuleNotFoundError("No module named 'ssjdn'"), "cannot import ssjdn .*Install SSJDN Explorer"),
    (distributed.KilledWorker("ssjdn-chunk-x-1-5", "tcp://10.0.0.5:40000", 3), "died while encoding it"),
])
def test_failures_on_workers_become_one_message(failure, expected):
    from ssjdn.core.index.cluster import _worker_error
    error = _worker_error(failure, "the Dask worker tcp://10.0.0.5:40000")
    assert isinstance(error, UserError)
    assert re.search(expected, str(error))


@pytest.fixture
def other_service():
    """A local TCP service that is not a Dask scheduler, on a free port: an HTTP server (as a
    scheduler's dashboard is), or one that sends bytes Dask would read as a huge frame length."""
    import http.server
    import socket
    import socketserver
    servers = []

    def start(kind: str) -> str:
        if kind == "http":
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
        else:
            class Banner(socketserver.BaseRequestHandler):
                def handle(self):
                    self.request.sendall(b"\xff" * 64)
                    self.request.recv(1024)

            server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Banner)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"tcp://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("kind, expected", [("http", "HTTP server"), ("banner", "not in Dask's protocol")])
def test_a_service_that_is_not_a_dask_scheduler_is_named_within_seconds(other_service, kind, expected):
    # An http.server on the port kept "starting the cluster" for minutes (Ctrl-C did nothing);
    # another service gave a false "Out of memory".
    import time
    address = other_service(kind)
    started = time.monotonic()
    with pytest.raises(UserError, match=f"{re.escape(address)}.*{expected}.*8786"):
        with connect(address, timeout=3):
            pass
    assert time.monotonic() - started < 15
