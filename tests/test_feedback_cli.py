"""`ssjdn search --positive/--negative` and `ssjdn classify` end to end on a tiny index."""
import json

import fiona
import numpy as np
import pytest

from engine_fixtures import utm_scene
from ssjdn.core.cli.main import main
from ssjdn.core.query.feedback import all_tile_ids, refine_query
from ssjdn.core.index.index_store import TileIndex


@pytest.fixture(scope="module")
def cli_index(tmp_path_factory):
    """(index dir, tile ids) of a 5 x 4 tile index built through the CLI with the tiny config."""
    tmp = tmp_path_factory.mktemp("cli")
    raster = utm_scene(tmp, rows=256, cols=320)
    idx = str(tmp / "idx")
    assert main(["index", raster, "--index", idx, "--model", "tiny", "--tile-px", "64"]) == 0
    with TileIndex.open(idx) as index:
        ids = [int(i) for i in all_tile_ids(index)]
    return idx, ids


def _ids_arg(ids):
    return ",".join(map(str, ids))


def _features(path):
    with fiona.open(path) as source:
        return [dict(f.properties) for f in source]


def test_search_with_marks_writes_the_refined_ranking(cli_index, tmp_path, tiny_model):
    idx, ids = cli_index
    out = tmp_path / "refined.geojson"
    assert main(["search", "a lake", "--index", idx, "--positive", _ids_arg(ids[:2]),
                 "--negative", _ids_arg(ids[5:7]), "-k", "6", "--out", str(out)]) == 0
    features = json.loads(out.read_text())["features"]
    with TileIndex.open(idx) as index:
        query = refine_query(index, tiny_model, "a lake", ids[:2], ids[5:7])
        order = np.argsort(-(index.vectors(ids) @ query), kind="stable")
    assert [f["properties"]["tile_id"] for f in features] == [ids[i] for i in order[:6]]
    assert "+2 relevant, -2 not relevant" in features[0]["properties"]["query"]


def test_search_needs_no_words_when_tiles_are_marked_relevant(cli_index, capsys):
    idx, ids = cli_index
    assert main(["search", "--index", idx, "--positive", _ids_arg(ids[:2]), "-k", "3"]) == 0
    assert "tiles like the marked ones" in capsys.readouterr().out


def test_search_with_marks_can_leave_the_marked_tiles_out(cli_index, tmp_path):
    """--new-only: every hit is a tile the analyst has not judged yet (without it the marked
    tiles come back, as the app shows them, dimmed)."""
    idx, ids = cli_index
    marked = ids[:2] + ids[5:7]
    plain, new = tmp_path / "all.geojson", tmp_path / "new.geojson"
    common = ["search", "a lake", "--index", idx, "--positive", _ids_arg(ids[:2]),
              "--negative", _ids_arg(ids[5:7]), "-k", "6"]
    assert main(common + ["--out", str(plain)]) == 0
    assert main(common + ["--new-only", "--out", str(new)]) == 0
    plain_ids = [f["properties"]["tile_id"] for f in json.loads(plain.read_text())["features"]]
    new_ids = [f["properties"]["tile_id"] for f in json.loads(new.read_text())["features"]]
    assert set(plain_ids) & set(marked)               # the marked tiles rank high themselves
    assert len(new_ids) == 6 and not set(new_ids) & set(marked)
    assert new_ids == [t for t in plain_ids if t not in marked] + new_ids[len(set(plain_ids) - set(marked)):]
    assert main(["search", "a lake", "--index", idx, "--new-only"]) == 2   # nothing marked


def test_search_marks_with_bad_ids_or_like_are_refused(cli_index, capsys):
    idx, ids = cli_index
    assert main(["search", "a lake", "--index", idx, "--positive", "999"]) == 2
    assert "Tile 999 is not in the index" in capsys.readouterr().err
    assert main(["search", "--index", idx, "--negative", _ids_arg(ids[:1])]) == 2
    assert "Say what to find" in capsys.readouterr().err
    assert main(["search", "--index", idx, "--like", str(ids[0]), "--positive", str(ids[1])]) == 2
    with pytest.raises(SystemExit):   # argparse: not a list of ids
        main(["search", "x", "--index", idx, "--positive", "a,b"])


@pytest.mark.parametrize("suffix", [".geojson", ".gpkg"])
def test_classify_writes_tiles_above_the_threshold_most_probable_first(cli_index, tmp_path, suffix):
    idx, ids = cli_index
    everything = tmp_path / f"all{suffix}"
    common = ["classify", "--index", idx, "--positive", _ids_arg(ids[:3]), "--negative", _ids_arg(ids[10:13])]
    assert main(common + ["--threshold", "0", "--out", str(everything)]) == 0
    rows = _features(everything)
    probabilities = [r["probability"] for r in rows]
    assert sorted(r["tile_id"] for r in rows) == sorted(ids)
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(0 <= p <= 1 for p in probabilities)
    threshold = float(np.median(probabilities))
    kept = tmp_path / f"kept{suffix}"
    assert main(common + ["--threshold", str(threshold), "--out", str(kept)]) == 0
    assert [r["tile_id"] for r in _features(kept)] == [r["tile_id"] for r in rows if r["probability"] >= threshold]


def test_classify_takes_marks_from_a_gis_file(cli_index, tmp_path, capsys):
    idx, ids = cli_index
    from ssjdn.core.query.labels import export_labels
    with TileIndex.open(idx) as index:
        marks = export_labels(index, {ids[0]: True, ids[1]: True, ids[2]: False}, tmp_path / "marks.gpkg")
    out = tmp_path / "found.geojson"
    assert main(["classify", "--index", idx, "--labels", str(marks), "--positive", str(ids[3]),
                 "--threshold", "0", "--out", str(out)]) == 0
    assert "2 relevant, 1 not relevant" in capsys.readouterr().out
    assert len(json.loads(out.read_text())["features"]) == len(ids)


def test_classify_with_too_few_marks_says_what_to_do(cli_index, tmp_path, capsys):
    idx, ids = cli_index
    out = tmp_path / "x.geojson"
    assert main(["classify", "--index", idx, "--positive", _ids_arg(ids[:2]), "--out", str(out)]) == 2
    assert "at least 3 tiles marked relevant" in capsys.readouterr().err
    assert main(["classify", "--index", idx, "--out", str(out)]) == 2
    assert "--positive" in capsys.readouterr().err
    assert main(["classify", "--index", idx, "--positive", _ids_arg(ids[:3]), "--threshold", "2",
                 "--out", str(out)]) == 2
    assert not out.exists()


def test_classify_stores_its_marks_and_reuses_a_stored_set(cli_index, tmp_path, capsys):
    idx, ids = cli_index
    first, again = tmp_path / "first.geojson", tmp_path / "again.geojson"
    assert main(["classify", "--index", idx, "--positive", _ids_arg(ids[:3]), "--negative", str(ids[9]),
                 "--threshold", "0", "--save-labels", "round one", "--out", str(first)]) == 0
    with TileIndex.open(idx) as index:
        assert index.load_label_set("round one") == {ids[9]: False, ids[0]: True, ids[1]: True, ids[2]: True}
    assert main(["classify", "--index", idx, "--label-set", "round one", "--threshold", "0",
                 "--out", str(again)]) == 0
    assert _features(first) == _features(again)
    assert main(["classify", "--index", idx, "--label-set", "nope", "--out", str(tmp_path / "never.geojson")]) == 2
    assert "No labelled set named 'nope'" in capsys.readouterr().err


def test_searching_an_index_whose_first_build_failed_says_it_holds_no_tiles(tmp_path, capsys):
    """A first `ssjdn index` that fails on an unreadable raster leaves an index with no tiles;
    a search on it ended with exit 0 and "No tiles in the index yet" (other commands said less):
    every command that opens an index now stops with one error and the command to rebuild it."""
    bad = tmp_path / "bad.tif"
    bad.write_text("not a raster")
    idx = str(tmp_path / "idx")
    assert main(["index", str(bad), "--index", idx, "--model", "tiny"]) == 2
    capsys.readouterr()
    assert main(["search", "a lake", "--index", idx]) == 2
    err = capsys.readouterr().err
    assert "holds no tiles" in err and f"ssjdn index RASTER --index {idx}" in err
