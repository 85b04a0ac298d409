"""Building and reopening a tile index: resume, incremental, nodata, model mismatch, faiss."""
import threading

import numpy as np
import pytest
import torch

from engine_fixtures import scene, utm_scene, write_raster
from ssjdn.core.errors import UserError
from ssjdn.core.index import ann
from ssjdn.core.index.index_store import IndexMismatchError, TileIndex
from ssjdn.core.index.search_file import FAISS_NAME, SearchFile
from ssjdn.core.index.indexing import build_index
from ssjdn.core.progress import Progress, Stage
from ssjdn.core.query.search import search_text

# Small chunks and commits so that a 320 x 256 raster is several committed steps.
SMALL = dict(tile_px=32, chunk_px=64, commit_every=8, workers=2)


def _contents(index_dir):
    with TileIndex.open(index_dir) as index:
        ids = sorted(r.tile_id for r in index.tiles(_all_ids(index)))
        return ids, index.vectors(ids)


def _all_ids(index):
    ids = []
    for record in index.rasters():
        ids += index.raster_grid(record.raster_id)[0].tolist()
    return ids


def test_index_then_search(tmp_path, tiny_model):
    raster = utm_scene(tmp_path)
    stats = build_index(tmp_path / "idx", raster, tiny_model, tile_px=64)
    assert stats.tiles_encoded == stats.tiles_planned == 5 * 4 and not stats.cancelled
    with TileIndex.open(tmp_path / "idx", model=tiny_model) as index:
        assert index.count == 20
        hits = search_text(index, tiny_model, "a river", k=5)
    assert len(hits) == 5
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # Scores are the model's own cosine similarities for the stored tiles.
    text = tiny_model.encode_texts(["a river"]).cpu().numpy()[0]
    with TileIndex.open(tmp_path / "idx") as index:
        assert hits[0].score == pytest.approx(float(index.vectors([hits[0].tile_id])[0] @ text), abs=1e-5)


def test_stored_vectors_are_the_models_encoding_of_the_tile(tmp_path, tiny_model):
    from ssjdn.core.geo.raster import read_window_rgb
    raster = utm_scene(tmp_path)
    build_index(tmp_path / "idx", raster, tiny_model, **SMALL)
    with TileIndex.open(tmp_path / "idx") as index:
        record = index.tile(_all_ids(index)[7])
        stored = index.vectors([record.tile_id])[0]
    pixels = torch.from_numpy(read_window_rgb(raster, record.window))[None]
    expected = tiny_model.encode_images(pixels).cpu().numpy()[0]
    # Stored in float16: equal within its rounding (2^-11 relative, < 5e-4 for unit vectors).
    np.testing.assert_allclose(stored, expected, atol=5e-4)


@pytest.mark.parametrize("how", ["cancel", "crash"])
def test_interrupted_index_resumes_to_the_same_result(tmp_path, tiny_model, how):
    raster = utm_scene(tmp_path)
    build_index(tmp_path / "whole", raster, tiny_model, **SMALL)

    cancel = threading.Event()

    def progress(update):
        if 0 < update.done < update.total // 2:
            return
        if update.done >= update.total // 2 and update.stage is Stage.ENCODING:
            if how == "cancel":
                cancel.set()
            else:
                raise KeyboardInterrupt  # as if the process were killed mid-run

    if how == "cancel":
        stats = build_index(tmp_path / "resumed", raster, tiny_model, progress=progress, cancel=cancel, **SMALL)
        assert stats.cancelled
    else:
        with pytest.raises(KeyboardInterrupt):
            build_index(tmp_path / "resumed", raster, tiny_model, progress=progress, **SMALL)
    partial_ids, _ = _contents(tmp_path / "resumed")
    assert 0 < len(partial_ids) < 80

    stats = build_index(tmp_path / "resumed", raster, tiny_model, **SMALL)
    assert stats.tiles_resumed == len(partial_ids)
    assert stats.tiles_encoded == 80 - len(partial_ids)
    whole_ids, whole_vectors = _contents(tmp_path / "whole")
    resumed_ids, resumed_vectors = _contents(tmp_path / "resumed")
    assert resumed_ids == whole_ids and len(whole_ids) == 80
    np.testing.assert_allclose(resumed_vectors, whole_vectors, atol=1e-5)
    with TileIndex.open(tmp_path / "whole") as a, TileIndex.open(tmp_path / "resumed") as b:
        assert [h.tile_id for h in search_text(a, tiny_model, "houses", k=10)] == \
               [h.tile_id for h in search_text(b, tiny_model, "houses", k=10)]


def test_resuming_with_another_chunk_size_keeps_the_first_chunking(tmp_path, tiny_model):
    # The app uses small chunks on a CPU and the default on a GPU: a build started on one and
    # finished on the other must neither start over nor skip or repeat tiles.
    raster = utm_scene(tmp_path)
    cancel = threading.Event()
    stats = build_index(tmp_path / "idx", raster, tiny_model, progress=lambda p: p.done >= 20 and cancel.set(),
                        cancel=cancel, **SMALL)
    assert stats.cancelled
    done = stats.tiles_encoded
    stats = build_index(tmp_path / "idx", raster, tiny_model, tile_px=32, chunk_px=1024)
    assert stats.tiles_resumed == done and stats.tiles_encoded == 80 - done
    whole_ids, _ = _contents(tmp_path / "idx")
    assert len(whole_ids) == 80
    again = build_index(tmp_path / "idx", raster, tiny_model, tile_px=32, chunk_px=256)
    assert again.rasters_skipped == 1 and again.tiles_encoded == 0


def test_adding_a_raster_encodes_only_the_new_one(tmp_path, tiny_model):
    first = utm_scene(tmp_path, "a.tif", seed=1)
    second = utm_scene(tmp_path, "b.tif", seed=2)
    build_index(tmp_path / "idx", first, tiny_model, tile_px=64)
    stats = build_index(tmp_path / "idx", [first, second], tiny_model, tile_px=64)
    assert stats.rasters_skipped == 1 and stats.tiles_resumed == 20 and stats.tiles_encoded == 20
    with TileIndex.open(tmp_path / "idx") as index:
        assert index.count == 40 and len(index.rasters()) == 2
        last = index.vectors(_all_ids(index)[-1:])
        found = index.search(last, 1)[1][0, 0]
        # The last tile is found: itself or a twin tile with the same pixels (float16 rounding
        # decides between equal vectors).
        np.testing.assert_allclose(index.vectors([found]), last, atol=1e-3)


def test_a_changed_raster_is_encoded_again(tmp_path, tiny_model):
    path = utm_scene(tmp_path, seed=1)
    build_index(tmp_path / "idx", path, tiny_model, tile_px=64)
    utm_scene(tmp_path, seed=2)  # same name, new pixels
    stats = build_index(tmp_path / "idx", path, tiny_model, tile_px=64)
    assert stats.tiles_encoded == 20 and stats.rasters_skipped == 0
    with TileIndex.open(tmp_path / "idx") as index:
        assert index.count == 20


def _two_scenes_indexed(tmp_path, model, approx_threshold):
    a = utm_scene(tmp_path, "a.tif", seed=1)
    b = utm_scene(tmp_path, "b.tif", seed=2)
    build_index(tmp_path / "idx", [a, b], model, tile_px=32, approx_threshold=approx_threshold)
    utm_scene(tmp_path, "b.tif", seed=3)   # b changes: its 80 tiles are replaced
    return a, b


def _search_hits(index_dir, model, k=160):
    """(live tile ids, faiss vectors, (scores, ids) of 3 queries), checking that every id found
    is a live tile, found once per query."""
    with TileIndex.open(index_dir) as index:
        queries = model.encode_texts(["trees", "a river", "roofs"]).numpy()
        scores, ids = index.search(queries, k)
        live = set(_all_ids(index))
        in_faiss = index.search_file.index().ntotal
    for row in ids.tolist():
        found = [i for i in row if i >= 0]
        assert set(found) <= live and len(set(found)) == len(found)
    return live, in_faiss, (scores, ids)


@pytest.mark.parametrize("approx_threshold", [10_000, 100], ids=["exact", "compressed"])
def test_a_changed_raster_updates_the_search_file_without_rebuilding_it(
        tmp_path, tiny_model, monkeypatch, approx_threshold):
    """At archive scale a rebuild is k-means over every vector (17 min at 10M tiles): a changed
    raster's old vectors leave the search file and its new ones join it, nothing else moves."""
    a, b = _two_scenes_indexed(tmp_path, tiny_model, approx_threshold)
    with monkeypatch.context() as patch:
        patch.setattr(SearchFile, "_build_all", lambda *args: pytest.fail("faiss rebuilt"))
        stats = build_index(tmp_path / "idx", [a, b], tiny_model, tile_px=32,
                            approx_threshold=approx_threshold)
    assert stats.tiles_encoded == 80 and stats.rasters_skipped == 1
    live, in_faiss, (scores, ids) = _search_hits(tmp_path / "idx", tiny_model)
    assert len(live) == in_faiss == 160
    if approx_threshold == 10_000:   # exact: every tile found, as a build from scratch finds them
        assert (ids >= 0).all()
        build_index(tmp_path / "fresh", [a, b], tiny_model, tile_px=32)
        _, _, (fresh_scores, fresh_ids) = _search_hits(tmp_path / "fresh", tiny_model)
        np.testing.assert_allclose(scores, fresh_scores, atol=1e-5)
        assert {frozenset(r) for r in ids[:, :10].tolist()} == {frozenset(r) for r in fresh_ids[:, :10].tolist()}


def test_a_search_after_an_interrupted_reindex_never_returns_replaced_tiles(
        tmp_path, tiny_model, monkeypatch):
    a, b = _two_scenes_indexed(tmp_path, tiny_model, 10_000)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt   # the process dies before the search file is brought up to date

    with monkeypatch.context() as patch:
        patch.setattr(TileIndex, "finalize", killed)
        with pytest.raises(KeyboardInterrupt):
            build_index(tmp_path / "idx", [a, b], tiny_model, tile_px=32)
    with monkeypatch.context() as patch:
        patch.setattr(SearchFile, "_build_all", lambda *args: pytest.fail("faiss rebuilt"))
        live, in_faiss, (_, ids) = _search_hits(tmp_path / "idx", tiny_model)
    assert len(live) == in_faiss == 160 and (ids >= 0).all()


def test_building_the_search_structure_reports_progress(tmp_path, tiny_model):
    """At 10M tiles the search structure takes minutes after the last tile is encoded: the
    progress callback says what it is doing, with the vectors added so far; every report is a
    Progress whose stage says which step it is (planned, tiles, search structure, done)."""
    a = utm_scene(tmp_path, "a.tif", seed=1)
    b = utm_scene(tmp_path, "b.tif", seed=2)
    updates = []
    build_index(tmp_path / "idx", [a, b], tiny_model, tile_px=32, approx_threshold=100,
                progress=updates.append)
    assert all(isinstance(u, Progress) for u in updates)
    stages = [u.stage for u in updates]
    assert stages[0] is Stage.PLANNED and stages[-1] is Stage.DONE
    first, last = stages.index(Stage.SEARCH_STRUCTURE), len(stages) - 1 - stages[::-1].index(Stage.SEARCH_STRUCTURE)
    assert set(stages[1:first]) == {Stage.ENCODING} and set(stages[first:last + 1]) == {Stage.SEARCH_STRUCTURE}
    structure = [u for u in updates if u.stage is Stage.SEARCH_STRUCTURE]
    assert all(u.done == u.total == 160 for u in structure)     # the bar counts tiles throughout
    assert any("160 / 160 vectors" in u.message for u in structure)
    assert any("lists" in u.message for u in structure)         # the k-means step is named
    assert {u.message for u in updates if u.stage is Stage.ENCODING} == {"a.tif", "b.tif"}


def test_folder_input_finds_rasters_and_skips_broken_ones(tmp_path, tiny_model):
    folder = tmp_path / "rasters"
    folder.mkdir()
    utm_scene(folder, "a.tif")
    (folder / "broken.tif").write_bytes(b"not a tiff")
    stats = build_index(tmp_path / "idx", folder, tiny_model, tile_px=64)
    assert stats.rasters == 1 and stats.tiles_encoded == 20
    assert any("broken.tif" in w for w in stats.warnings)
    with pytest.raises(UserError, match="damaged"):
        build_index(tmp_path / "idx2", folder / "broken.tif", tiny_model, tile_px=64)


def test_all_nodata_raster_indexes_nothing_and_says_so(tmp_path, tiny_model):
    path = write_raster(tmp_path / "empty.tif", np.zeros((3, 128, 128), np.uint8), nodata=0)
    stats = build_index(tmp_path / "idx", path, tiny_model, tile_px=32)
    assert stats.tiles_nodata == 16 and stats.tiles_encoded == 0
    assert any("nodata" in w for w in stats.warnings)
    with TileIndex.open(tmp_path / "idx") as index:
        assert index.count == 0
        assert search_text(index, tiny_model, "anything", k=5) == []


def test_tiles_that_are_all_nodata_are_skipped(tmp_path, tiny_model):
    data = scene(128, 128)
    data[:, :, :64] = 0  # left half is nodata
    path = write_raster(tmp_path / "half.tif", data, nodata=0)
    stats = build_index(tmp_path / "idx", path, tiny_model, tile_px=32)
    assert stats.tiles_nodata == 8 and stats.tiles_encoded == 8
    with TileIndex.open(tmp_path / "idx") as index:
        assert all(r.window.col_off >= 64 for r in index.tiles(_all_ids(index)))


def test_raster_without_crs_is_indexed_in_pixels(tmp_path, tiny_model):
    path = write_raster(tmp_path / "plain.tif", scene(128, 192), crs=None)
    stats = build_index(tmp_path / "idx", path, tiny_model)
    assert any("no coordinate system" in w for w in stats.warnings)
    with TileIndex.open(tmp_path / "idx") as index:
        records = index.tiles(_all_ids(index))
    size = tiny_model.input_size
    assert len(records) == (128 // size) * (192 // size)
    assert all(r.bounds_wgs84 is None and r.window.width == size for r in records)


def test_index_built_by_another_model_is_refused(tmp_path, tiny_model):
    from ssjdn.core.model.api import create_model
    build_index(tmp_path / "idx", utm_scene(tmp_path), tiny_model, tile_px=64)
    torch.manual_seed(123)
    other = create_model("tiny")
    assert other.fingerprint != tiny_model.fingerprint
    with pytest.raises(IndexMismatchError, match="another folder"):
        TileIndex.open(tmp_path / "idx", model=other)
    with pytest.raises(IndexMismatchError):
        build_index(tmp_path / "idx", utm_scene(tmp_path, "b.tif"), other, tile_px=64)


def test_missing_index_gives_a_user_error(tmp_path):
    with pytest.raises(UserError, match="ssjdn index"):
        TileIndex.open(tmp_path / "none")


def test_a_missing_or_stale_faiss_file_is_rebuilt_from_the_database(tmp_path, tiny_model):
    build_index(tmp_path / "idx", utm_scene(tmp_path), tiny_model, tile_px=64)
    (tmp_path / "idx" / FAISS_NAME).unlink()
    with TileIndex.open(tmp_path / "idx") as index:
        assert len(search_text(index, tiny_model, "trees", k=20)) == 20


def test_large_indexes_switch_to_compressed_codes_with_measured_recall():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 32))
    vectors = centres[rng.integers(0, 40, 6000)] + rng.normal(0, 0.3, (6000, 32))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    ids = np.arange(6000, dtype=np.int64) * 7 + 3  # ids are not row numbers
    read_calls = []

    def read(positions):
        read_calls.append(len(positions))
        return vectors[positions]

    exact, nprobe = ann.build_ann(ids, read, 32, approx_threshold=10_000)
    assert nprobe is None and ann.is_exact(exact)
    approx, nprobe = ann.build_ann(ids, read, 32, approx_threshold=1_000)
    assert not ann.is_exact(approx) and approx.nprobe == nprobe
    assert nprobe <= approx.nlist and approx.code_size < 32 * 4 / 4   # far smaller than float32
    queries = ann.probe_queries(vectors[:100], rng)   # text-like: far from every vector

    def fetch(wanted):
        return vectors[(wanted - 3) // 7]

    _, truth = ann.search(exact, queries, 10, fetch)
    _, found = ann.search(approx, queries, 10, fetch)
    assert ann.measure_recall(found, truth) >= 0.95
    assert max(read_calls) <= ann.BLOCK   # vectors were read block by block, never all at once


def test_growing_past_the_threshold_switches_the_saved_index_to_ivf(tmp_path, tiny_model):
    import faiss
    first = utm_scene(tmp_path, "a.tif", seed=1)
    second = utm_scene(tmp_path, "b.tif", seed=2)
    build_index(tmp_path / "idx", first, tiny_model, tile_px=32, approx_threshold=100)
    assert not hasattr(faiss.read_index(str(tmp_path / "idx" / FAISS_NAME)), "nprobe")
    build_index(tmp_path / "idx", [first, second], tiny_model, tile_px=32, approx_threshold=100)
    saved = faiss.read_index(str(tmp_path / "idx" / FAISS_NAME))
    assert saved.ntotal == 160 and hasattr(saved, "nprobe")
    with TileIndex.open(tmp_path / "idx") as index:
        some = _all_ids(index)[::17]
        queries = index.vectors(some)
        scores, found = index.search(queries, 1)
        # Every stored vector finds itself through the compressed lists, or a near-identical
        # twin tile that float16 rounding scores as high (their cosine is above 0.9999).
        own = np.einsum("qd,qd->q", queries, queries)
        assert np.all(scores[:, 0] >= own - 1e-3)
        assert np.all(np.einsum("qd,qd->q", index.vectors(found[:, 0]), queries) > 0.999)


def test_nprobe_stops_rising_where_more_lists_stop_helping():
    """An unreachable recall target (re-ranking depth, not lists, limits recall) must not end in
    probing every list, which would make each query scan the whole index."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(6000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(6000, dtype=np.int64)
    index, nprobe = ann.build_ann(ids, lambda p: vectors[p], 32, approx_threshold=1_000,
                                  target_recall=1.01)
    assert ann.MIN_NPROBE <= nprobe < index.nlist


def _zipped(tmp_path, raster, name="scenes.zip"):
    import zipfile
    archive = tmp_path / name
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(raster, "scenes/a.tif")
    return f"/vsizip/{archive}/scenes/a.tif"


def test_gdal_virtual_paths_index_search_and_resume(tmp_path, tiny_model):
    # Archives live in object storage (/vsis3/, /vsigs/, /vsiaz/); /vsizip/ is the same GDAL
    # virtual file system without a network: read through GDAL, never stat'ed or resolved.
    from ssjdn.core.query.search import score_heatmap
    local = utm_scene(tmp_path, "a.tif", seed=1)
    virtual = _zipped(tmp_path, local)
    stats = build_index(tmp_path / "idx", virtual, tiny_model, tile_px=64)
    assert stats.tiles_encoded == 20
    again = build_index(tmp_path / "idx", [virtual], tiny_model, tile_px=64)
    assert again.rasters_skipped == 1 and again.tiles_encoded == 0
    with TileIndex.open(tmp_path / "idx") as index:
        assert [r.path for r in index.rasters()] == [virtual] and index.raster(virtual) is not None
        hits = search_text(index, tiny_model, "a river", k=3)
        assert {h.raster_path for h in hits} == {virtual}
        assert score_heatmap(index, tiny_model, "a river", virtual).array.shape == (4, 5)
        # The same pixels indexed from the local file give the same vectors.
        build_index(tmp_path / "local", local, tiny_model, tile_px=64)
        with TileIndex.open(tmp_path / "local") as local_index:
            np.testing.assert_array_equal(index.vectors(_all_ids(index)),
                                          local_index.vectors(_all_ids(local_index)))


def test_a_virtual_raster_with_a_new_grid_is_encoded_again_and_a_missing_one_is_named(tmp_path, tiny_model):
    virtual = _zipped(tmp_path, utm_scene(tmp_path, "a.tif", seed=1))
    build_index(tmp_path / "idx", virtual, tiny_model, tile_px=64)
    _zipped(tmp_path, utm_scene(tmp_path, "b.tif", rows=128, cols=128, seed=2))  # replaced object
    stats = build_index(tmp_path / "idx", virtual, tiny_model, tile_px=64)
    assert stats.tiles_encoded == 4 and stats.rasters_skipped == 0
    with pytest.raises(UserError, match=r"GDAL cannot open /vsizip/.*missing\.zip.*credentials"):
        build_index(tmp_path / "idx", f"/vsizip/{tmp_path}/missing.zip/a.tif", tiny_model, tile_px=64)
