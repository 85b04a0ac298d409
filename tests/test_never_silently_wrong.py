"""Issue 21, engine half: results that were wrong without a word, each reproduced first.

Archive-sized id lists, damaged vector files, foreign files loaded into native parsers, and
messages that named the wrong cause.
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from engine_fixtures import cli_index, index_small_scene, synthetic_index  # noqa: F401
from ssjdn.core.index import database, index_store, search_file
from ssjdn.core.cli.main import main

TILE_OF_RASTER_1 = 1 << 32


@pytest.fixture(scope="module")
def archive(tmp_path_factory, tiny_model):
    """A 260,100-tile index (random unit vectors): more tile ids than SQLite binds in a query."""
    folder = tmp_path_factory.mktemp("archive")
    index, raster = synthetic_index(folder, tiny_model)
    index.close()
    return folder / "idx", raster


# -- 1: find-all and label files above SQLite's bound-value limit ------------------------------

def test_tile_records_of_more_ids_than_sqlite_binds(archive):
    with index_store.TileIndex.open(archive[0]) as index:
        ids = index.tile_ids()
        assert len(ids) > 250_000
        wanted = np.r_[ids[::-1], [7, 8]]                  # unknown ids are left out
        records = index.tiles(wanted)
        assert [r.tile_id for r in records] == ids[::-1].tolist()


def test_tiles_and_vectors_keep_their_order_across_query_chunks(tmp_path, tiny_model, monkeypatch):
    index, _ = index_small_scene(tmp_path, tiny_model)
    with index:
        ids = index.tile_ids()
        whole = index.vectors(ids[::-1])
        monkeypatch.setattr(database, "IDS_PER_QUERY", 3)
        assert [r.tile_id for r in index.tiles(ids[::-1])] == ids[::-1].tolist()
        np.testing.assert_array_equal(index.vectors(ids[::-1]), whole)


def test_classify_with_a_label_file_marking_every_tile_of_an_archive(archive, tmp_path, capsys):
    idx, _ = archive
    labels = tmp_path / "all.geojson"
    labels.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"label": "relevant"}, "geometry": {
            # every tile but the first column (whose centres lie west of 10.0001)
            "type": "Polygon", "coordinates": [[[10.0001, 49.9], [10.1, 49.9], [10.1, 50.1],
                                                [10.0001, 50.1], [10.0001, 49.9]]]}},
        {"type": "Feature", "properties": {"label": "not relevant"}, "geometry": {
            "type": "Point", "coordinates": [10.00001, 49.99999]}}]}))
    out = tmp_path / "found.geojson"
    assert main(["classify", "--index", str(idx), "--labels", str(labels), "--threshold", "1",
                 "--out", str(out)]) == 0
    assert "259590 relevant, 1 not relevant" in capsys.readouterr().out
    assert out.exists()


def _no_model(monkeypatch):
    from ssjdn.core.cli import commands
    monkeypatch.setattr(commands, "load_model_arg", lambda *a, **k: pytest.fail("model loaded"))


# -- 9: a tile id too long for the index is refused by the parser -------------------------------

TOO_LONG = "99999999999999999999"


@pytest.mark.parametrize("argv", [
    ["search", "--index", "I", "--positive", TOO_LONG],
    ["search", "--index", "I", "--like", TOO_LONG],
    ["classify", "--index", "I", "--positive", f"1,2,{TOO_LONG}", "--out", "a.geojson"],
    ["match", "--index", "I", "--tile", TOO_LONG, "a river"],
    ["export", "--index", "I", "--salience", TOO_LONG, "--out", "maps"],
    ["search", "--index", "I", "--like", "-4"],
])
def test_a_tile_id_with_too_many_digits_is_refused_before_the_model_loads(argv, capsys, monkeypatch):
    _no_model(monkeypatch)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "not a tile id" in err and "ssjdn search" in err and "Traceback" not in err


def test_the_engine_treats_a_too_long_tile_id_as_unknown(tmp_path, tiny_model):
    from ssjdn.core.errors import UserError
    index, _ = index_small_scene(tmp_path, tiny_model)
    with index:
        assert index.tiles([int(TOO_LONG)]) == []
        with pytest.raises(UserError, match="not in the index"):
            index.vectors([int(TOO_LONG)])


# -- 12: an empty result is not an empty index ---------------------------------------------------

def test_an_empty_classification_says_what_to_change(cli_index, tmp_path, capsys):
    _, idx = cli_index
    with index_store.TileIndex.open(idx) as index:
        marks = ",".join(map(str, index.tile_ids()[:3]))
    assert main(["classify", "--index", idx, "--positive", marks, "--threshold", "1",
                 "--out", str(tmp_path / "none.geojson")]) == 0
    out = capsys.readouterr().out
    assert "No tiles in the index yet" not in out
    assert "lower --threshold" in out


# -- 13: a compressed index that returns fewer hits than asked says so ---------------------------

def test_a_search_past_the_compressed_index_cap_says_so(tmp_path, tiny_model, capsys):
    from engine_fixtures import utm_scene
    from ssjdn.core.index.indexing import build_index
    rasters = [utm_scene(tmp_path, "a.tif", seed=1), utm_scene(tmp_path, "b.tif", seed=2)]
    build_index(tmp_path / "idx", rasters, tiny_model, tile_px=32, approx_threshold=100)
    assert main(["search", "houses", "--index", str(tmp_path / "idx"), "--model", "tiny",
                 "-k", "160"]) == 0
    captured = capsys.readouterr()
    shown = sum(1 for line in captured.out.splitlines() if line.strip()[:1].isdigit())
    assert shown < 160
    note = [line for line in captured.err.splitlines() if "compressed" in line]
    assert len(note) == 1 and f"{shown} of the 160" in note[0] and "classify" in note[0]


# -- 16: outputs are checked before the work ------------------------------------------------------

def test_classify_refuses_an_empty_label_set_name_before_scoring(cli_index, tmp_path, capsys, monkeypatch):
    from ssjdn.core.query import feedback
    _, idx = cli_index
    monkeypatch.setattr(feedback, "tile_probabilities", lambda *a, **k: pytest.fail("scored"))
    with index_store.TileIndex.open(idx) as index:
        marks = ",".join(map(str, index.tile_ids()[:3]))
    assert main(["classify", "--index", idx, "--positive", marks, "--save-labels", " ",
                 "--out", str(tmp_path / "a.geojson")]) == 2
    assert "--save-labels" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["classify", "search", "export"])
def test_a_bad_output_extension_is_refused_before_the_work(cli_index, tmp_path, capsys, monkeypatch,
                                                           command):
    from ssjdn.core.query import feedback
    _, idx = cli_index
    _no_model(monkeypatch)
    monkeypatch.setattr(feedback, "tile_probabilities", lambda *a, **k: pytest.fail("scored"))
    out = str(tmp_path / "hits.txt")
    argv = {"classify": ["classify", "--index", idx, "--positive", "1,2,3", "--out", out],
            "search": ["search", "a river", "--index", idx, "--out", out],
            "export": ["export", "--index", idx, "--query", "a river", "--out", out]}[command]
    assert main(argv) == 2
    assert ".geojson or .gpkg" in capsys.readouterr().err


def test_a_heatmap_to_a_bad_extension_is_refused_before_the_model_loads(cli_index, tmp_path, capsys,
                                                                        monkeypatch):
    raster, idx = cli_index
    _no_model(monkeypatch)
    assert main(["export", "--index", idx, "--query", "a river", "--heatmap", raster,
                 "--out", str(tmp_path / "heat.png")]) == 2
    assert ".tif" in capsys.readouterr().err


# -- 4: damaged vector files are caught, and what can be rebuilt is ------------------------------

def _hits(idx, model, query="houses", k=20):
    from ssjdn.core.query.search import search_text
    with index_store.TileIndex.open(idx) as index:
        return [(h.tile_id, round(h.score, 4)) for h in search_text(index, model, query, k=k)]


def _shard_file(idx, suffix):
    return Path(idx) / "vectors" / f"shard-00000.{suffix}"


@pytest.mark.parametrize("damage", ["random", "permuted", "missing"])
def test_a_damaged_ids_file_is_rewritten_from_the_database(cli_index, tiny_model, damage):
    _, idx = cli_index
    truth = _hits(idx, tiny_model)
    path = _shard_file(idx, "ids")
    ids = np.frombuffer(path.read_bytes(), "<i8")
    if damage == "random":
        path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))
    elif damage == "permuted":
        path.write_bytes(ids[np.random.default_rng(0).permutation(len(ids))].tobytes())
    else:
        path.unlink()
    assert _hits(idx, tiny_model) == truth
    np.testing.assert_array_equal(np.frombuffer(path.read_bytes(), "<i8"), ids)   # repaired


def test_a_damaged_ids_file_in_a_read_only_index_is_refused(cli_index, tiny_model, monkeypatch, capsys):
    _, idx = cli_index
    path = _shard_file(idx, "ids")
    ids = np.frombuffer(path.read_bytes(), "<i8")
    path.write_bytes(ids[::-1].tobytes())
    monkeypatch.setattr(index_store, "folder_is_writable", lambda path: False)
    assert main(["search", "houses", "--index", idx, "--out", str(Path(idx).parent / "h.geojson")]) == 2
    err = capsys.readouterr().err
    assert "damaged" in err and "shard-00000.ids" in err


@pytest.mark.parametrize("argv", [
    ["search", "--like", "{tile}"],
    ["search", "houses", "--positive", "{tile}"],
    ["classify", "--positive", "{tiles}", "--out", "{out}"],
    ["export", "--query", "houses", "--heatmap", "{raster}", "--out", "{heat}"],
])
def test_random_bytes_in_a_vector_shard_are_reported_not_used(cli_index, tmp_path, capsys, argv):
    raster, idx = cli_index
    with index_store.TileIndex.open(idx) as index:
        ids = index.tile_ids()
    path = _shard_file(idx, "f16")
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))
    fill = dict(tile=ids[0], tiles=",".join(map(str, ids[:3])), out=tmp_path / "all.geojson",
                raster=raster, heat=tmp_path / "heat.tif")
    assert main([argv[0], "--index", idx] + [a.format(**fill) for a in argv[1:]]) == 2
    err = capsys.readouterr().err
    assert "damaged" in err and "shard-00000.f16" in err and "Unexpected" not in err


def test_a_faiss_file_changed_in_place_is_not_used(cli_index, tiny_model):
    _, idx = cli_index
    truth = _hits(idx, tiny_model)
    path = Path(idx) / search_file.FAISS_NAME
    before = os.stat(path)
    with open(path, "r+b") as f:            # same size, same inode; mtime put back below
        f.seek(before.st_size // 2)
        f.write(np.full(64, 1e30, np.float32).tobytes())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_ino == before.st_ino
    hits = _hits(idx, tiny_model)
    assert hits == truth and all(-1 <= s <= 1 for _, s in hits)


@pytest.mark.parametrize("lost", ["f16", "ids"])
def test_indexing_again_notices_a_missing_shard_file(cli_index, tiny_model, capsys, lost):
    raster, idx = cli_index
    truth = _hits(idx, tiny_model)
    _shard_file(idx, lost).unlink()
    assert main(["index", raster, "--index", idx, "--tile-px", "64"]) == 0
    captured = capsys.readouterr()
    if lost == "f16":
        assert "20 tiles encoded" in captured.out and "shard-00000.f16" in captured.err
    assert _hits(idx, tiny_model) == truth


# -- security: files loaded into native parsers must be ones this installation wrote -------------

def test_a_faiss_file_written_elsewhere_is_rebuilt_from_checked_vectors(cli_index, tiny_model,
                                                                       tmp_path, monkeypatch, capsys):
    """A colleague's index folder: its faiss file matches its database, but this installation
    did not write it, so it is never parsed; the folder stays usable."""
    import shutil
    from ssjdn.core.index.index_store import TileIndex
    _, idx = cli_index
    truth = _hits(idx, tiny_model)
    shutil.copytree(idx, tmp_path / "shared")
    monkeypatch.setenv("SSJDN_CACHE_DIR", str(tmp_path / "another-user"))   # another installation
    monkeypatch.setattr(search_file, "_deserialize_faiss", lambda data: pytest.fail("parsed"))
    assert main(["search", "houses", "--index", str(tmp_path / "shared"), "-k", "20"]) == 0
    err = capsys.readouterr().err
    assert "not written by this installation" in err and "rebuilt" in err
    monkeypatch.undo()
    monkeypatch.setenv("SSJDN_CACHE_DIR", str(tmp_path / "another-user"))
    assert _hits(tmp_path / "shared", tiny_model) == truth
    with TileIndex.open(tmp_path / "shared") as index:     # saved again: now it is this one's
        assert index.search_file.is_current()


def test_a_cached_text_encoder_not_written_here_is_exported_again(tmp_path, tiny_model, monkeypatch):
    from ssjdn.core.model import fast_text
    monkeypatch.setenv("SSJDN_CACHE_DIR", str(tmp_path / "cache"))
    fast_text.forget_encoders()
    fast_text.query_encoder(tiny_model)
    (cached,) = (tmp_path / "cache" / "onnx").glob("*.onnx")
    exports = []
    real_export = fast_text._export
    monkeypatch.setattr(fast_text, "_export", lambda *a: exports.append(1) or real_export(*a))
    # A crafted graph passes the probe-text check by design; only its origin can tell.
    monkeypatch.setattr(fast_text, "_check_agreement", lambda model, session: None)
    for tamper in ("foreign", "changed"):
        if tamper == "foreign":
            for record in (tmp_path / "cache" / "written-files").iterdir():
                record.unlink()          # as a file put there by someone else
        else:
            data = bytearray(cached.read_bytes())
            data[-8:] = bytes(8)
            cached.write_bytes(bytes(data))
        fast_text.forget_encoders()
        assert fast_text.query_encoder(tiny_model).runtime == "onnxruntime"
        assert len(exports) == 1
        exports.clear()
    fast_text.forget_encoders()


# -- 17: GDAL's own reason, not rasterio's "See previous exception" --------------------------------

def _vrt_of(folder, source_name, name="mosaic.vrt"):
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource><SourceFilename relativeToVRT="1">'
        f'{source_name}</SourceFilename><SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>'
        for b in (1, 2, 3))
    path = Path(folder) / name
    path.write_text(f'<VRTDataset rasterXSize="320" rasterYSize="256"><SRS>EPSG:32631</SRS>'
                    f'<GeoTransform>500000, 0.3, 0, 5700000, 0, -0.3</GeoTransform>{bands}</VRTDataset>')
    return path


def test_a_vrt_whose_source_is_missing_names_the_source(tmp_path):
    from engine_fixtures import utm_scene
    from ssjdn.core.errors import UserError
    from ssjdn.core.geo.raster import full_window, raster_info, read_window_rgb
    source = Path(utm_scene(tmp_path, "part.tif"))
    vrt = _vrt_of(tmp_path, "part.tif")
    info = raster_info(vrt)
    source.rename(tmp_path / "moved.tif")
    opened_after = _vrt_of(tmp_path, "part.tif", "after.vrt")
    for attempt in (lambda: read_window_rgb(info, full_window(info)), lambda: raster_info(opened_after)):
        with pytest.raises(UserError) as error:
            attempt()
        message = str(error.value)
        assert str(source) in message and "missing" in message
        assert "previous exception" not in message and ".." not in message


def test_a_truncated_raster_gives_gdals_reason(tmp_path):
    from engine_fixtures import utm_scene
    from ssjdn.core.errors import UserError
    from ssjdn.core.geo.raster import full_window, raster_info, read_window_rgb
    path = utm_scene(tmp_path, "cut.tif", rows=512, cols=512, block=128, compress="deflate")
    raw = Path(path).read_bytes()
    Path(path).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError) as error:
        read_window_rgb(path, full_window(raster_info(path)))
    message = str(error.value)
    assert "previous exception" not in message and ".." not in message
    assert "cut.tif" in message and "re-export" in message


def test_the_app_hears_why_a_shared_index_rebuilds_its_search_file(cli_index, tmp_path, monkeypatch):
    import shutil
    _, idx = cli_index
    shutil.copytree(idx, tmp_path / "shared")
    monkeypatch.setenv("SSJDN_CACHE_DIR", str(tmp_path / "another-user"))
    steps = []
    with index_store.TileIndex.open(tmp_path / "shared") as index:
        index.prepare_search(progress=steps.append)     # what the app's status line shows
    assert any("not written by this installation" in step.message for step in steps)


# -- a raster changed or gone since it was indexed ---------------------------------------------

def _touch_later(path) -> None:
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


def test_a_search_says_when_a_hit_raster_changed_on_disk_since_it_was_indexed(cli_index, capsys):
    # Before: the hits of the old pixels were printed as if current, without a word.
    raster, idx = cli_index
    _touch_later(raster)
    assert main(["search", "a river", "--index", idx, "--model", "tiny", "-k", "3"]) == 0
    err = capsys.readouterr().err
    assert f"{Path(raster).name} changed on disk since it was indexed" in err
    assert f"ssjdn index {raster} --index {idx}" in err


@pytest.mark.parametrize("command", [
    ["match", "--tile", "{tile}", "a river", "houses"],
    ["export", "--salience", "{tile}", "--query", "a river", "--out", "{out}/map.tif"],
    ["export", "--salience", "{tile}", "--out", "{out}/maps"],
])
def test_a_tile_read_again_says_when_its_raster_changed_since_it_was_indexed(cli_index, tmp_path,
                                                                               capsys, command):
    # Before: match --tile and the salience exports read the raster's current pixels and
    # printed scores or maps of a tile the index had never seen, without a word.
    raster, idx = cli_index
    with index_store.TileIndex.open(idx) as index:
        tile = int(index.tile_ids()[0])
    _touch_later(raster)
    args = [part.format(tile=tile, out=tmp_path) for part in command]
    assert main([*args, "--index", idx, "--model", "tiny"]) == 0
    err = capsys.readouterr().err
    assert f"{Path(raster).name} changed on disk since it was indexed" in err
    assert "current pixels" in err and f"ssjdn index {raster} --index {idx}" in err


def test_changed_rasters_tells_changed_from_missing_and_leaves_current_ones(tmp_path, tiny_model):
    index, raster = index_small_scene(tmp_path, tiny_model)
    with index:
        assert index.changed_rasters([raster]) == {}
        _touch_later(raster)
        assert index.changed_rasters([raster]) == {raster: "changed"}
        os.remove(raster)
        assert index.changed_rasters([raster]) == {raster: "missing"}


# -- earlier outputs are not replaced without being asked -----------------------------------------

def test_an_export_refuses_to_replace_an_earlier_file_unless_told(cli_index, tmp_path, capsys):
    # Before: a second export to the same name replaced the first without a word.
    _, idx = cli_index
    out = tmp_path / "hits.geojson"
    assert main(["export", "--index", idx, "--model", "tiny", "--query", "a river", "--out", str(out)]) == 0
    first = out.read_bytes()
    assert main(["export", "--index", idx, "--model", "tiny", "--query", "houses", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err
    assert out.read_bytes() == first
    assert main(["export", "--index", idx, "--model", "tiny", "--query", "houses", "--out", str(out),
                 "--overwrite"]) == 0
    assert out.read_bytes() != first


def test_search_classify_and_map_exports_check_their_output_before_the_work(cli_index, tmp_path, capsys,
                                                                           monkeypatch):
    from ssjdn.core.query import feedback, search
    _, idx = cli_index
    taken = tmp_path / "taken.geojson"
    taken.write_text("an analyst's earlier work")
    grid = tmp_path / "taken.tif"
    grid.write_text("an earlier map")

    def never(*args, **kwargs):
        raise AssertionError("the work ran although its output was refused")
    monkeypatch.setattr(search, "search_text", never)
    monkeypatch.setattr(search, "tile_query_map", never)
    monkeypatch.setattr(feedback, "classify_tiles", never)
    with index_store.TileIndex.open(idx) as index:
        ids = index.tile_ids()
    marks = ",".join(map(str, ids[:3]))
    for argv in (["search", "a river", "--index", idx, "--model", "tiny", "--out", str(taken)],
                 ["classify", "--index", idx, "--positive", marks, "--out", str(taken)],
                 ["export", "--index", idx, "--model", "tiny", "--salience", str(ids[0]),
                  "--query", "a river", "--out", str(grid)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "already exists" in err and "--overwrite" in err, argv
    assert taken.read_text() == "an analyst's earlier work" and grid.read_text() == "an earlier map"


def test_classify_replaces_a_stored_labelled_set_only_when_it_read_it_or_was_told(cli_index, tmp_path, capsys):
    _, idx = cli_index
    with index_store.TileIndex.open(idx) as index:
        ids = index.tile_ids()
        index.save_label_set("tanks", {int(ids[5]): True})
    marks = ",".join(map(str, ids[:3]))
    common = ["classify", "--index", idx, "--threshold", "0"]
    assert main(common + ["--positive", marks, "--save-labels", "tanks", "--out", str(tmp_path / "a.geojson")]) == 2
    assert "labelled set named 'tanks' already exists" in capsys.readouterr().err
    with index_store.TileIndex.open(idx) as index:
        assert index.load_label_set("tanks") == {int(ids[5]): True}
    # Read and saved back with the new marks: nothing is lost, so no flag is needed.
    assert main(common + ["--positive", marks, "--label-set", "tanks", "--save-labels", "tanks",
                          "--out", str(tmp_path / "b.geojson")]) == 0
    with index_store.TileIndex.open(idx) as index:
        assert set(index.load_label_set("tanks")) == {int(i) for i in ids[:3]} | {int(ids[5])}


def test_a_first_build_that_failed_before_any_raster_does_not_bind_the_folder_to_its_model(
        tmp_path, tiny_model, capsys):
    # Before: `ssjdn index --bands 5,3,2` failed, but its empty index kept the model, so the
    # retry with another model was refused as "built with model ..., not comparable".
    from engine_fixtures import utm_scene
    raster, idx = utm_scene(tmp_path), str(tmp_path / "idx")
    assert main(["index", raster, "--index", idx, "--model", "tiny", "--tile-px", "64",
                 "--bands", "5,3,2"]) == 2
    assert "do not exist" in capsys.readouterr().err
    other = ["--model", "ssjdn-lite0-minilm"]
    assert main(["index", raster, "--index", idx, *other, "--tile-px", "64"]) == 0
    with index_store.TileIndex.open(idx) as index:
        assert index.db.meta("model_name") == "ssjdn-lite0-minilm" and index.count == 20


def test_an_index_error_starts_its_own_line_not_after_an_empty_progress_bar(tmp_path, capsys):
    # Before: "indexing: 0tile [00:00, ?tile/s]error: ... has 3 band(s)" on one line.
    from engine_fixtures import utm_scene
    raster = utm_scene(tmp_path)
    assert main(["index", raster, "--index", str(tmp_path / "idx"), "--model", "tiny",
                 "--bands", "5,3,2"]) == 2
    shown = [line.split("\r")[-1] for line in capsys.readouterr().err.split("\n")]
    assert any(line.startswith("error: ") and "band" in line for line in shown), shown


# -- words the model cannot read ----------------------------------------------------------------

def test_a_query_the_model_cannot_read_at_all_is_refused_in_words_not_searched(tiny_model):
    # Before: "飞机 停在 机场" became [UNK] tokens only, and the search ranked tiles by them.
    from ssjdn.core.errors import UserError
    from ssjdn.core.query.search import query_vector
    with pytest.raises(UserError, match="reads English.*none of the words"):
        query_vector(tiny_model, "飞机 停在 机场")
    with pytest.raises(UserError, match="English"):
        query_vector(tiny_model, "🏠 🌳")


def test_the_words_a_model_cannot_read_are_named(tiny_model):
    from ssjdn.core.query.search import unread_words_note
    assert unread_words_note(tiny_model, "a bridge over a river") is None
    note = unread_words_note(tiny_model, "a house with a pool 🏊")
    assert "🏊" in note and "house" not in note and "ignored" in note


def test_a_cli_search_says_which_words_the_model_ignored(cli_index, capsys):
    _, idx = cli_index
    assert main(["search", "a river 🌊", "--index", idx, "--model", "tiny", "-k", "2"]) == 0
    err = capsys.readouterr().err
    assert "🌊" in err and "ignored" in err
    assert main(["search", "河流", "--index", idx, "--model", "tiny"]) == 2
    assert "English" in capsys.readouterr().err


def test_match_says_which_caption_words_the_model_ignored(cli_index, capsys):
    _, idx = cli_index
    with index_store.TileIndex.open(idx) as index:
        tile = str(int(index.tile_ids()[0]))
    assert main(["match", "--index", idx, "--model", "tiny", "--tile", tile, "a river", "河流"]) == 0
    err = capsys.readouterr().err
    assert "“河流”" in err and "ignored" in err and "a river" not in err


def test_a_refinement_by_marks_with_blank_words_still_runs(cli_index, capsys):
    # The unread-words note must not treat blank words (allowed with --positive) as an empty query.
    _, idx = cli_index
    with index_store.TileIndex.open(idx) as index:
        marked = str(int(index.tile_ids()[0]))
    assert main(["search", "  ", "--index", idx, "--model", "tiny", "--positive", marked, "-k", "2"]) == 0
    assert "error" not in capsys.readouterr().err
