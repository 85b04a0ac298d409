"""Issue 9, engine and CLI half: failure cases a demanding user hit, each reproduced first.

Nothing lost (stale exports, foreign or damaged faiss files, full disks, read-only folders,
concurrent indexers) and nothing cryptic (one clear message, the traceback kept in a log).
"""
import errno
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine_fixtures import cli_index, utm_scene, write_raster, scene  # noqa: F401
from ssjdn.core.index import index_store
from ssjdn.core.cli.main import main
from ssjdn.core.errors import UserError, write_error_log
from ssjdn.core.index.database import DB_NAME
from ssjdn.core.index.index_store import TileIndex
from ssjdn.core.index.lock import LOCK_NAME, IndexLockedError
from ssjdn.core.index.search_file import FAISS_NAME, SearchFile
from ssjdn.core.index.indexing import build_index
from ssjdn.core.query.search import search_text


def _err(capsys) -> str:
    return capsys.readouterr().err


# -- 3: a remembered search whose tiles are gone is refused ------------------------------------

def test_export_refuses_a_last_search_whose_tiles_were_retiled(cli_index, tmp_path, capsys):
    raster, idx = cli_index
    assert main(["search", "a river", "--index", idx, "-k", "5"]) == 0
    assert main(["index", raster, "--index", idx, "--tile-px", "32"]) == 0   # re-tiles the raster
    capsys.readouterr()
    out = tmp_path / "h.geojson"
    assert main(["export", "--index", idx, "--out", str(out)]) == 2
    err = _err(capsys)
    assert "search again" in err.lower() and "a river" in err
    assert not out.exists()


def test_export_refuses_a_last_search_of_a_reencoded_raster(cli_index, tmp_path, capsys):
    raster, idx = cli_index
    assert main(["search", "a river", "--index", idx, "-k", "5"]) == 0
    utm_scene(tmp_path, seed=7)                       # same name and tiling, new pixels
    assert main(["index", raster, "--index", idx, "--tile-px", "64"]) == 0
    capsys.readouterr()
    assert main(["export", "--index", idx, "--out", str(tmp_path / "h.geojson")]) == 2
    assert "search again" in _err(capsys).lower()


def test_export_of_an_unchanged_last_search_still_works(cli_index, tmp_path, capsys):
    raster, idx = cli_index
    assert main(["search", "a river", "--index", idx, "-k", "5"]) == 0
    other = utm_scene(tmp_path, "other.tif", seed=3)
    assert main(["index", other, "--index", idx, "--tile-px", "64"]) == 0   # adding is harmless
    out = tmp_path / "h.geojson"
    assert main(["export", "--index", idx, "--out", str(out), "-k", "2"]) == 0
    assert len(json.loads(out.read_text())["features"]) == 2


# -- 4 and 5: the faiss file must belong to this database, and damage is repaired ---------------

def _search_ids(index_dir, model, query="houses", k=20):
    with TileIndex.open(index_dir) as index:
        return [(h.tile_id, round(h.score, 5)) for h in search_text(index, model, query, k=k)]


def test_a_faiss_file_from_another_index_with_as_many_tiles_is_not_used(tmp_path, tiny_model):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = utm_scene(tmp_path / "a", seed=1)
    b = utm_scene(tmp_path / "b", seed=2)
    build_index(tmp_path / "ia", a, tiny_model, tile_px=64)
    build_index(tmp_path / "ib", b, tiny_model, tile_px=64)
    # Different pixels, same file name pattern: the rasters get the same ids and tile ids.
    truth = _search_ids(tmp_path / "ia", tiny_model)
    shutil.copy2(tmp_path / "ib" / FAISS_NAME, tmp_path / "ia" / FAISS_NAME)   # keeps its mtime
    assert _search_ids(tmp_path / "ia", tiny_model) == truth


def test_a_copied_index_folder_uses_its_faiss_file_without_rebuilding(tmp_path, tiny_model, monkeypatch):
    build_index(tmp_path / "idx", utm_scene(tmp_path), tiny_model, tile_px=64)
    truth = _search_ids(tmp_path / "idx", tiny_model)
    shutil.copytree(tmp_path / "idx", tmp_path / "copy")         # new inodes, same content
    monkeypatch.setattr(SearchFile, "_build_all", lambda *a: pytest.fail("faiss rebuilt"))
    assert _search_ids(tmp_path / "copy", tiny_model) == truth


def test_a_faiss_file_from_before_checksums_is_rebuilt_then_checked(tmp_path, tiny_model, monkeypatch):
    """Issue 21 (security): a file without a recorded checksum cannot be shown to be one this
    installation wrote, so it is rebuilt from the checked vectors once (it used to be adopted)."""
    build_index(tmp_path / "idx", utm_scene(tmp_path), tiny_model, tile_px=64)
    truth = _search_ids(tmp_path / "idx", tiny_model)
    with sqlite3.connect(tmp_path / "idx" / DB_NAME) as db:   # as an index of the previous version
        db.execute("DELETE FROM meta WHERE key IN ('faiss_sha256', 'faiss_stat')")
    rebuilt = []
    real = SearchFile._build_all
    with monkeypatch.context() as patch:
        patch.setattr(SearchFile, "_build_all", lambda *a: rebuilt.append(1) or real(*a))
        assert _search_ids(tmp_path / "idx", tiny_model) == truth
    assert rebuilt == [1]
    with TileIndex.open(tmp_path / "idx") as index:
        assert index.db.meta("faiss_sha256") is not None     # from now on it is checked
    (tmp_path / "idx" / FAISS_NAME).write_bytes(b"garbage")
    assert _search_ids(tmp_path / "idx", tiny_model) == truth


@pytest.mark.parametrize("damage", ["truncated", "random"])
def test_a_damaged_faiss_file_is_rebuilt_from_the_database(tmp_path, tiny_model, capsys, damage):
    raster = utm_scene(tmp_path)
    build_index(tmp_path / "idx", raster, tiny_model, tile_px=64)
    truth = _search_ids(tmp_path / "idx", tiny_model)
    path = tmp_path / "idx" / FAISS_NAME
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3] if damage == "truncated" else os.urandom(len(raw)))
    assert _search_ids(tmp_path / "idx", tiny_model) == truth          # search
    with TileIndex.open(tmp_path / "idx") as index:                    # and it is repaired on disk
        assert index.search_file.is_current()
    path.write_bytes(b"garbage")
    stats = build_index(tmp_path / "idx", raster, tiny_model, tile_px=64)   # index
    assert stats.rasters_skipped == 1 and _search_ids(tmp_path / "idx", tiny_model) == truth
    path.write_bytes(b"garbage")
    out = tmp_path / "h.geojson"                                       # and the CLI export
    assert main(["export", "--index", str(tmp_path / "idx"), "--model", "tiny", "--query", "houses",
                 "--out", str(out)]) == 0
    assert len(json.loads(out.read_text())["features"]) == 10


def test_a_search_that_must_rebuild_the_search_structure_says_so(cli_index, capsys):
    """A missing faiss file is rebuilt inside the first search: minutes at 10M tiles, so the CLI
    says what it is doing on stderr instead of sitting silent; the next search is quiet."""
    _, idx = cli_index
    (Path(idx) / FAISS_NAME).unlink()
    assert main(["search", "a river", "--index", idx, "-k", "5"]) == 0
    captured = capsys.readouterr()
    assert "search structure: 20 / 20 vectors added" in captured.err
    assert "tile" in captured.out
    assert main(["search", "a river", "--index", idx, "-k", "5"]) == 0
    assert "search structure" not in capsys.readouterr().err


# -- 6: one damaged file in a folder is skipped, the rest is indexed ------------------------------

def _truncated_tif(folder, name="bad.tif"):
    path = utm_scene(folder, name, rows=512, cols=512, block=128, compress="deflate")
    raw = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(raw[: len(raw) // 2])   # the header survives, half of the pixel blocks do not
    return path


def test_a_truncated_file_in_a_folder_is_skipped_and_the_rest_indexed(tmp_path, tiny_model):
    folder = tmp_path / "rasters"
    folder.mkdir()
    utm_scene(folder, "a_good.tif")
    bad = _truncated_tif(folder)
    utm_scene(folder, "c_good.tif", seed=4)
    stats = build_index(tmp_path / "idx", folder, tiny_model, tile_px=64, workers=1)
    assert stats.skipped_files == [bad]
    assert any("bad.tif" in w for w in stats.warnings)
    with TileIndex.open(tmp_path / "idx") as index:
        by_name = {os.path.basename(r.path): r for r in index.rasters()}
    assert by_name["a_good.tif"].complete and by_name["c_good.tif"].complete
    assert by_name["a_good.tif"].n_indexed == 20 and by_name["c_good.tif"].n_indexed == 20
    assert "bad.tif" not in by_name or not by_name["bad.tif"].complete


def test_cli_exit_code_says_some_files_were_skipped(tmp_path, capsys):
    folder = tmp_path / "rasters"
    folder.mkdir()
    utm_scene(folder, "a_good.tif")
    _truncated_tif(folder)
    idx = str(tmp_path / "idx")
    assert main(["index", str(folder), "--index", idx, "--model", "tiny", "--tile-px", "64"]) == 3
    captured = capsys.readouterr()
    assert "bad.tif" in captured.err and "skipped" in captured.out.lower()
    # On every rerun the good file stays indexed and the bad one is reported again.
    assert main(["index", str(folder), "--index", idx, "--tile-px", "64"]) == 3


# -- 7: a read-only index folder -----------------------------------------------------------------

@pytest.fixture
def read_only(monkeypatch):
    """Make an index folder read-only; as root (who may write anyway) also report it read-only."""
    made = []

    def make(folder):
        for path in [folder, *folder.iterdir()]:
            os.chmod(path, 0o555 if path.is_dir() else 0o444)
            made.append(path)
        if os.geteuid() == 0:
            real = index_store.folder_is_writable
            monkeypatch.setattr(index_store, "folder_is_writable",
                                lambda p: False if os.path.samefile(p, folder) else real(p))
    yield make
    for path in made:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)


def test_search_works_on_a_read_only_index_and_says_hits_were_not_remembered(
        cli_index, capsys, read_only, monkeypatch):
    import pathlib
    raster, idx = cli_index
    read_only(pathlib.Path(idx))
    if os.geteuid() == 0:   # root writes anyway: make the last_search.json write fail as it would
        from ssjdn.core import files as files_module
        real_replace = os.replace

        def refuse(src, dst):
            if str(dst).startswith(idx):
                raise PermissionError(errno.EACCES, "Permission denied", str(dst))
            return real_replace(src, dst)
        monkeypatch.setattr(files_module.os, "replace", refuse)
    assert main(["search", "a river", "--index", idx, "-k", "3"]) == 0
    captured = capsys.readouterr()
    assert "top 3 for: a river" in captured.out
    assert "not remembered" in captured.err and "read-only" in captured.err


def test_adding_rasters_to_a_read_only_index_says_so(cli_index, tmp_path, capsys, read_only, monkeypatch):
    import pathlib

    from ssjdn.core.cli import commands
    raster, idx = cli_index
    read_only(pathlib.Path(idx))
    monkeypatch.setattr(commands, "load_model_arg", lambda *a: pytest.fail("model loaded"))
    other = utm_scene(tmp_path, "other.tif", seed=3)
    assert main(["index", other, "--index", idx]) == 2
    assert "read-only" in _err(capsys)


def test_exporting_into_a_read_only_folder_says_so(cli_index, tmp_path, capsys, monkeypatch):
    raster, idx = cli_index
    target = tmp_path / "locked"
    target.mkdir()
    from ssjdn.core import files as files_module
    real_replace = os.replace

    def refuse(src, dst):
        if str(dst).startswith(str(target)):
            raise PermissionError(errno.EACCES, "Permission denied", str(dst))
        return real_replace(src, dst)
    monkeypatch.setattr(files_module.os, "replace", refuse)
    out = target / "h.geojson"
    assert main(["export", "--index", idx, "--query", "a river", "--out", str(out)]) == 2
    err = _err(capsys)
    assert "Cannot write" in err and str(out) in err and "Traceback" not in err
    assert list(target.iterdir()) == []


def test_a_geotiff_export_into_a_folder_without_write_access_says_so(cli_index, tmp_path, capsys,
                                                                     monkeypatch):
    raster, idx = cli_index
    target = tmp_path / "locked"
    target.mkdir()
    from ssjdn.core import files as files_module
    real_access = os.access
    monkeypatch.setattr(files_module.os, "access",
                        lambda p, mode: False if str(p) == str(target) else real_access(p, mode))
    out = target / "heat.tif"
    assert main(["export", "--index", idx, "--query", "a river", "--heatmap", raster, "--out", str(out)]) == 2
    err = _err(capsys)
    assert "Cannot write" in err and "permission denied" in err and list(target.iterdir()) == []


def test_gdal_messages_of_a_full_disk_or_no_permission_become_user_errors():
    from rasterio.errors import RasterioIOError

    from ssjdn.core.errors import os_error_as_user_error
    full = os_error_as_user_error(RasterioIOError("x.tif: No space left on device"), "x.tif", "write")
    assert "disk is full" in str(full)
    denied = os_error_as_user_error(RasterioIOError("Attempt to create x.tif failed: Permission denied"))
    assert "permission denied" in str(denied)
    assert os_error_as_user_error(RasterioIOError("not a TIFF file")) is None


# -- 10: a full disk during indexing -------------------------------------------------------------

def test_disk_full_during_indexing_is_one_message_and_keeps_committed_work(tmp_path, tiny_model, monkeypatch):
    raster = utm_scene(tmp_path)
    calls = []
    real = TileIndex._write_batch

    def fill_up(self, *args):
        calls.append(1)
        if len(calls) > 2:
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, *args)
    monkeypatch.setattr(TileIndex, "_write_batch", fill_up)
    with pytest.raises(UserError, match="disk .*full") as caught:
        build_index(tmp_path / "idx", raster, tiny_model, tile_px=32, chunk_px=64, commit_every=8,
                    workers=1)
    assert "safe" in str(caught.value) and "again" in str(caught.value)
    monkeypatch.setattr(TileIndex, "_write_batch", real)
    with TileIndex.open(tmp_path / "idx") as index:
        kept = index.count
    assert kept > 0
    stats = build_index(tmp_path / "idx", raster, tiny_model, tile_px=32, chunk_px=64, commit_every=8)
    assert stats.tiles_resumed == kept and stats.tiles_encoded == 80 - kept


def test_disk_full_writing_the_faiss_file_is_one_message(tmp_path, tiny_model, monkeypatch, capsys):
    import faiss

    def no_space(index, path):
        raise OSError(errno.ENOSPC, "No space left on device", path)
    monkeypatch.setattr(faiss, "write_index", no_space)
    raster = utm_scene(tmp_path)
    assert main(["index", raster, "--index", str(tmp_path / "idx"), "--model", "tiny",
                 "--tile-px", "64"]) == 2
    err = _err(capsys)
    assert "full" in err and "safe" in err and "Traceback" not in err


# -- 11: clear messages for odd paths and damaged small files -------------------------------------

def test_index_pointing_to_a_file_is_a_clear_error(tmp_path, capsys, monkeypatch):
    from ssjdn.core.cli import commands
    monkeypatch.setattr(commands, "load_model_arg", lambda *a: pytest.fail("model loaded"))
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    raster = utm_scene(tmp_path)
    assert main(["index", raster, "--index", str(not_a_folder)]) == 2
    assert "not a folder" in _err(capsys)
    assert main(["search", "a river", "--index", str(not_a_folder)]) == 2
    assert "not a folder" in _err(capsys)


def test_salience_export_refuses_an_existing_file(cli_index, tmp_path, capsys):
    raster, idx = cli_index
    existing = tmp_path / "keep.txt"
    existing.write_text("precious")
    with TileIndex.open(idx) as index:
        tile_id = index.raster_grid(index.rasters()[0].raster_id)[0][0]
    assert main(["export", "--index", idx, "--salience", str(tile_id), "--out", str(existing)]) == 2
    assert "folder" in _err(capsys) and existing.read_text() == "precious"


def test_a_corrupt_last_search_is_a_clear_error(cli_index, tmp_path, capsys):
    raster, idx = cli_index
    for content in ("{not json", '{"query": 3}', "[]"):
        (tmp_path / "idx" / "last_search.json").write_text(content)
        assert main(["export", "--index", idx, "--out", str(tmp_path / "h.geojson")]) == 2
        assert "search again" in _err(capsys).lower()


def test_an_empty_index_database_is_a_clear_error(tmp_path, capsys):
    folder = tmp_path / "idx"
    folder.mkdir()
    (folder / DB_NAME).write_bytes(b"")
    assert main(["search", "a river", "--index", str(folder)]) == 2
    err = _err(capsys)
    assert "empty" in err and "ssjdn index" in err
    assert (folder / DB_NAME).stat().st_size == 0   # nothing written into it
    raster = utm_scene(tmp_path)                    # and building it again works
    assert main(["index", raster, "--index", str(folder), "--model", "tiny", "--tile-px", "64"]) == 0
    assert main(["search", "a river", "--index", str(folder)]) == 0


def test_a_missing_captions_file_is_a_clear_error(tmp_path, capsys):
    image = utm_scene(tmp_path)
    assert main(["match", "--image", image, "--captions-file", str(tmp_path / "none.txt"),
                 "--model", "tiny"]) == 2
    assert "Captions file not found" in _err(capsys)


# -- 12: arguments are checked before anything loads ----------------------------------------------

@pytest.mark.parametrize("argv", [
    ["search", "x", "--index", "I", "-k", "0"],
    ["search", "x", "--index", "I", "-k", "-1"],
    ["export", "--index", "I", "--out", "h.geojson", "-k", "0"],
    ["index", "r.tif", "--index", "I", "--tile-px", "0"],
    ["index", "r.tif", "--index", "I", "--tile-m", "-5"],
    ["index", "r.tif", "--index", "I", "--overlap", "1.5"],
    ["index", "r.tif", "--index", "I", "--batch-size", "0"],
    ["index", "r.tif", "--index", "I", "--workers", "-2"],
])
def test_bad_numbers_are_refused_by_the_parser(argv, capsys, monkeypatch):
    from ssjdn.core.cli import commands
    monkeypatch.setattr(commands, "load_model_arg", lambda *a: pytest.fail("model loaded"))
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "invalid" in _err(capsys)


# -- 14: the model is recorded before encoding starts ---------------------------------------------

def test_a_first_index_that_is_interrupted_still_records_its_model(tmp_path, capsys, monkeypatch):
    from ssjdn.core.index import indexing

    def killed(self):
        raise KeyboardInterrupt
    monkeypatch.setattr(indexing._Pipeline, "_encode", killed)
    raster = utm_scene(tmp_path)
    idx = str(tmp_path / "idx")
    assert main(["index", raster, "--index", idx, "--model", "tiny", "--tile-px", "64"]) == 130
    monkeypatch.undo()
    with TileIndex.open(idx) as index:
        assert index.model_source == "tiny"
    assert main(["index", raster, "--index", idx, "--tile-px", "64"]) == 0   # no --model needed
    assert main(["search", "a river", "--index", idx]) == 0


# -- 15: GeoJSON coordinates stay in range --------------------------------------------------------

def _antimeridian_scene(tmp_path):
    # Geographic raster from 179.9 E to 180.05 E (96 px of 0.0015625 deg): with 64 px tiles the
    # first ends on the antimeridian, the second (shifted inwards) straddles it.
    return write_raster(tmp_path / "fiji.tif", scene(64, 96), crs="EPSG:4326",
                        res=0.2 / 128, origin=(179.9, -16.0))


def _polygons(geometry):
    return geometry["coordinates"] if geometry["type"] == "MultiPolygon" else [geometry["coordinates"]]


def test_geojson_splits_tiles_at_the_antimeridian(tmp_path, tiny_model):
    from ssjdn.core.geo.export import export_hits
    build_index(tmp_path / "idx", _antimeridian_scene(tmp_path), tiny_model, tile_px=64)
    with TileIndex.open(tmp_path / "idx") as index:
        hits = search_text(index, tiny_model, "an island", k=2)
    doc = json.loads(export_hits(hits, tmp_path / "h.geojson").read_text())
    by_col = {f["properties"]["col_off"]: f for f in doc["features"]}
    assert by_col[0]["geometry"]["type"] == "Polygon"          # 179.9 .. 180.0: whole
    straddling = by_col[32]
    assert straddling["geometry"]["type"] == "MultiPolygon"    # 179.95 .. 180.05: cut in two
    east, west = sorted((np.array(p[0]) for p in _polygons(straddling["geometry"])),
                        key=lambda ring: -ring[:, 0].max())
    assert east[:, 0].min() == pytest.approx(179.95) and east[:, 0].max() == pytest.approx(180.0)
    assert west[:, 0].min() == pytest.approx(-180.0) and west[:, 0].max() == pytest.approx(-179.95)
    west_, _, east_, _ = straddling["bbox"]
    assert west_ == pytest.approx(179.95) and east_ == pytest.approx(-179.95)   # RFC 7946 5.2
    for feature in doc["features"]:
        for polygon in _polygons(feature["geometry"]):
            ring = np.array(polygon[0])
            assert (np.abs(ring[:, 0]) <= 180).all() and (np.abs(ring[:, 1]) <= 90).all()
            assert (ring[0] == ring[-1]).all()
    import fiona
    with fiona.open(export_hits(hits, tmp_path / "h.gpkg")) as layer:
        features = list(layer)
    assert {f["geometry"]["type"] for f in features} == {"MultiPolygon"}
    for feature in features:
        for polygon in feature["geometry"]["coordinates"]:
            assert (np.abs(np.array(polygon[0])[:, 0]) <= 180).all()


def test_geojson_splits_a_tile_straddling_the_antimeridian_into_two_parts(tmp_path):
    from ssjdn.core.geo.export import geojson_geometry
    ring = np.array([[179.9, 10], [179.9, 9], [180.2, 9], [180.2, 10], [179.9, 10]])
    geometry = geojson_geometry(ring)
    assert geometry["type"] == "MultiPolygon" and len(geometry["coordinates"]) == 2
    east, west = sorted((np.array(p[0]) for p in geometry["coordinates"]), key=lambda r: -r[:, 0].max())
    assert east[:, 0].min() == pytest.approx(179.9) and east[:, 0].max() == pytest.approx(180.0)
    assert west[:, 0].min() == pytest.approx(-180.0) and west[:, 0].max() == pytest.approx(-179.8)
    for part in (east, west):   # still closed and counter-clockwise (right-hand rule)
        x, y = part[:-1, 0], part[:-1, 1]
        assert (part[0] == part[-1]).all() and np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) > 0


def test_geojson_latitudes_are_clamped_at_the_poles(tmp_path, tiny_model):
    from ssjdn.core.geo.export import export_hits
    polar = write_raster(tmp_path / "polar.tif", scene(64, 64), crs="EPSG:4326", res=0.1,
                         origin=(10.0, 92.0))            # a grid reaching past the pole
    build_index(tmp_path / "idx", polar, tiny_model, tile_px=32)
    with TileIndex.open(tmp_path / "idx") as index:
        hits = search_text(index, tiny_model, "ice", k=4)
    doc = json.loads(export_hits(hits, tmp_path / "h.geojson").read_text())
    lats = np.concatenate([np.array(f["geometry"]["coordinates"][0])[:, 1] for f in doc["features"]])
    assert lats.max() == pytest.approx(90.0) and lats.min() >= -90


# -- 16: queries of invisible characters are empty ------------------------------------------------

@pytest.mark.parametrize("query", ["\u200b", "\u200b\u200c\u200d\ufeff", "\x00\x07 \u2060", "\u00ad\u202e"])
def test_invisible_queries_are_empty(cli_index, capsys, query):
    raster, idx = cli_index
    assert main(["search", query, "--index", idx]) == 2
    assert "query is empty" in _err(capsys)


# -- 17: one indexer per folder at a time ---------------------------------------------------------

def _write_lock(folder, pid, since, host=None):
    folder.mkdir(exist_ok=True)
    (folder / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                                "since": since}))


def test_a_second_indexer_says_who_holds_the_folder(cli_index, tmp_path, capsys, tiny_model, monkeypatch):
    raster, idx = cli_index
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    since = time.time() + 0.5       # it took the lock once it ran
    try:
        _write_lock(tmp_path / "idx", holder.pid, since)
        with pytest.raises(IndexLockedError):
            build_index(idx, raster, tiny_model, tile_px=64)
        from ssjdn.core.cli import commands
        with monkeypatch.context() as patch:
            patch.setattr(commands, "load_model_arg", lambda *a: pytest.fail("model loaded"))
            assert main(["index", raster, "--index", idx, "--tile-px", "32"]) == 2
        err = _err(capsys)
        day = time.strftime("%Y-%m-%d", time.gmtime(since))
        assert f"pid {holder.pid}" in err and socket.gethostname() in err and day in err
        assert main(["search", "a river", "--index", idx]) == 0      # reading needs no lock
    finally:
        holder.kill()
        holder.wait()
    with TileIndex.open(idx) as index:
        assert index.count == 20    # the refused run changed nothing


def test_a_stale_lock_of_a_dead_process_is_taken_over(cli_index, tmp_path, tiny_model):
    raster, idx = cli_index
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(tmp_path / "idx", dead.pid, time.time())
    stats = build_index(idx, raster, tiny_model, tile_px=32)
    assert stats.tiles_encoded == 80
    assert not (tmp_path / "idx" / LOCK_NAME).exists()


def test_a_lock_whose_pid_now_names_a_younger_process_is_taken_over(cli_index, tmp_path, tiny_model):
    raster, idx = cli_index
    # Written before a reboot by a process whose pid the running test now has.
    _write_lock(tmp_path / "idx", os.getpid(), since=time.time() - 10 * 365 * 86400)
    stats = build_index(idx, raster, tiny_model, tile_px=64)
    assert stats.rasters_skipped == 1 and not (tmp_path / "idx" / LOCK_NAME).exists()


def test_a_lock_on_another_host_is_respected(cli_index, tmp_path, tiny_model):
    raster, idx = cli_index
    _write_lock(tmp_path / "idx", 1, time.time(), host="another-machine")
    with pytest.raises(IndexLockedError, match="another-machine"):
        build_index(idx, raster, tiny_model, tile_px=64)


# -- the rule: one line for the user, the traceback in a log --------------------------------------

def test_an_unexpected_error_prints_one_line_and_the_log_path(cli_index, capsys, monkeypatch, tmp_path):
    raster, idx = cli_index
    monkeypatch.setenv("SSJDN_LOG_DIR", str(tmp_path / "logs"))
    from ssjdn.core.query import search

    def broken(*args, **kwargs):
        raise ValueError("something inside broke")
    monkeypatch.setattr(search, "search_text", broken)
    assert main(["search", "a river", "--index", idx]) == 1
    err = _err(capsys)
    assert "Traceback" not in err and "something inside broke" in err
    logs = list((tmp_path / "logs").iterdir())
    assert len(logs) == 1 and str(logs[0]) in err
    assert "Traceback" in logs[0].read_text() and "something inside broke" in logs[0].read_text()
    assert main(["--debug", "search", "a river", "--index", idx]) == 1
    assert "Traceback" in _err(capsys)


def test_the_error_log_falls_back_to_the_temp_folder(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("SSJDN_LOG_DIR", str(blocked / "logs"))   # cannot be created
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        path = write_error_log(exc, "testing")
    assert str(path).startswith(str(tmp_path / "tmp")) and "boom" in path.read_text()


def test_keyboard_interrupt_still_exits_130(cli_index, capsys, monkeypatch):
    raster, idx = cli_index
    from ssjdn.core.query import search

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(search, "search_text", interrupted)
    assert main(["search", "a river", "--index", idx]) == 130
    assert "Interrupted" in _err(capsys)


def test_saving_a_labelled_set_in_a_read_only_index_says_so(cli_index, tmp_path, capsys, read_only):
    import pathlib
    import sqlite3
    raster, idx = cli_index
    with sqlite3.connect(pathlib.Path(idx) / "index.sqlite") as db:
        ids = [r[0] for r in db.execute("SELECT id FROM tiles ORDER BY id LIMIT 4")]
    read_only(pathlib.Path(idx))
    out = tmp_path / "found.geojson"
    assert main(["classify", "--index", idx, "--positive", ",".join(map(str, ids[:3])),
                 "--negative", str(ids[3]), "--threshold", "0", "--save-labels", "marks",
                 "--out", str(out)]) == 2
    assert "read-only" in _err(capsys)
