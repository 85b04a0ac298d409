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
