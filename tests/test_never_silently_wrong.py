"""Issue 21, engine half: results that were wrong without a word, each reproduced first.

Archive-sized id lists, damaged vector files, foreign files loaded into native parsers, and
messages that named the wrong cause.
"""
import json

import numpy as np
import pytest

from engine_fixtures import index_small_scene, synthetic_index
from ssjdn.core import index_store
from ssjdn.core.cli import main

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
        monkeypatch.setattr(index_store, "_IDS_PER_QUERY", 3)
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


@pytest.fixture
def cli_index(tmp_path, capsys):
    """A 320 x 256 UTM raster indexed by the CLI with the tiny config as 20 tiles of 64 px."""
    from engine_fixtures import utm_scene
    raster = utm_scene(tmp_path)
    idx = str(tmp_path / "idx")
    assert main(["index", raster, "--index", idx, "--model", "tiny", "--tile-px", "64"]) == 0
    capsys.readouterr()
    return raster, idx


def _no_model(monkeypatch):
    from ssjdn.core import commands
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
    from ssjdn.core.indexing import build_index
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
    from ssjdn.core import feedback
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
    from ssjdn.core import feedback
    _, idx = cli_index
    _no_model(monkeypatch)
    monkeypatch.setattr(feedback, "tile_probabilities", lambda *a, **k: pytest.fail("scored"))
    out = str(tmp_path / "hits.txt")
    argv = {"classify": ["classify", "--index", idx, "--positive", "1,2,3", "--out", out],
            "search": ["search", "a river", "--index", idx, "--out", out],
            "export": ["export", "--index", idx, "--query", "a river", "--out", out]}[command]
    assert main(argv) == 2
    assert ".geojson or .gpkg" in capsys.readouterr().err
