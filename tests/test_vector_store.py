"""Vectors in float16 shard files (issue 8): layout, crash safety, streaming, upgrade of old indexes."""
import os
import sqlite3

import numpy as np
import pytest

from engine_fixtures import utm_scene
from ssjdn.core.index import formats, index_store
from ssjdn.core.errors import UserError
from ssjdn.core.index.database import DB_NAME
from ssjdn.core.index.index_store import TileIndex
from ssjdn.core.index.indexing import build_index
from ssjdn.core.query.search import score_heatmap, search_text
from ssjdn.core.index.vector_store import VectorShards

SMALL = dict(tile_px=32, chunk_px=64, commit_every=8, workers=2)


def _ids(index):
    return np.concatenate([index.raster_grid(r.raster_id)[0] for r in index.rasters()])


@pytest.fixture
def built(tmp_path, tiny_model):
    raster = utm_scene(tmp_path)
    build_index(tmp_path / "idx", raster, tiny_model, **SMALL)
    return tmp_path / "idx", raster


def test_shards_roll_over_and_read_back_in_any_order(tmp_path):
    store = VectorShards(tmp_path, dim=4, shard_rows=5)
    vectors = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    tile_ids = np.arange(100, 112) * 7
    shards, rows, counts = store.append(vectors[:7], tile_ids[:7], {})
    assert counts == {0: 5, 1: 2} and shards.tolist() == [0] * 5 + [1] * 2
    more_shards, more_rows, counts = store.append(vectors[7:], tile_ids[7:], counts)
    assert counts == {0: 5, 1: 5, 2: 2}
    all_shards, all_rows = np.concatenate([shards, more_shards]), np.concatenate([rows, more_rows])
    order = np.random.default_rng(1).permutation(12)
    np.testing.assert_allclose(store.read(all_shards[order], all_rows[order]), vectors[order],
                               atol=2e-3)   # float16 on disk
    assert (tmp_path / "vectors" / "shard-00000.f16").stat().st_size == 5 * 4 * 2
    # Positions (shard * shard_rows + row) are what a search's candidates are: each row's
    # vector and tile id are read from them directly.
    positions = store.positions(all_shards, all_rows)
    assert positions.tolist() == list(range(12))
    np.testing.assert_array_equal(store.read_positions(positions[order]), store.read(all_shards[order], all_rows[order]))
    assert store.tile_ids_at(positions[order]).tolist() == tile_ids[order].tolist()
    assert (tmp_path / "vectors" / "shard-00000.ids").stat().st_size == 5 * 8


def test_vectors_live_in_float16_shards_not_in_sqlite(built, tiny_model):
    index_dir, _ = built
    with TileIndex.open(index_dir) as index:
        columns = [c[1] for c in index.db.execute("PRAGMA table_info(tiles)")]
        n, dim = index.count, index.dim
    assert "vector" not in columns and {"shard", "row"} <= set(columns)
    assert (index_dir / "vectors" / "shard-00000.f16").stat().st_size == n * dim * 2


def test_a_write_that_fails_before_its_transaction_commits_leaves_no_trace(built, tiny_model, monkeypatch):
    index_dir, _ = built
    with TileIndex.open(index_dir) as index:
        before_count, before = index.count, index.vector_rows.committed_rows()
        tiles = index.tiles(_ids(index)[:3])
        reference = index.vectors(_ids(index))

        def fail(*args):
            raise sqlite3.OperationalError("simulated crash after the shard write")

        monkeypatch.setattr(index, "_write_batch", fail)
        with pytest.raises(sqlite3.OperationalError):
            index.commit(index.rasters()[0].raster_id, [_FakeTile(t) for t in tiles],
                         np.ones((3, index.dim), np.float32), [999])
        monkeypatch.undo()
    # The shard got rows past the committed count; nothing in the index refers to them.
    with TileIndex.open(index_dir) as index:
        assert index.count == before_count and index.vector_rows.committed_rows() == before
        np.testing.assert_array_equal(index.vectors(_ids(index)), reference)
        assert 999 not in index.done_chunks(index.rasters()[0].raster_id)


def test_raster_vectors_are_streamed_in_blocks_that_match_single_reads(built):
    index_dir, _ = built
    with TileIndex.open(index_dir) as index:
        record = index.rasters()[0]
        ids, windows = index.raster_grid(record.raster_id)
        blocks = list(index.iter_raster_vectors(record.raster_id, block=7))
        assert len(blocks) == -(-len(ids) // 7) and len(windows) == len(ids)
        streamed = np.concatenate([vectors for _, vectors in blocks])
        np.testing.assert_array_equal(streamed, index.vectors(ids))


def test_a_truncated_shard_is_one_clear_message(built, tiny_model):
    index_dir, raster = built
    shard = index_dir / "vectors" / "shard-00000.f16"
    os.truncate(shard, shard.stat().st_size // 2)
    with TileIndex.open(index_dir) as index:
        with pytest.raises(UserError, match="damaged or missing.*Build the index again"):
            score_heatmap(index, tiny_model, "trees", raster)


# -- indexes written before the shards (format 1) ------------------------------------------------

def _downgrade_to_format_1(index_dir):
    """Rewrite a built index the way format 1 stored it: float32 vectors as SQLite blobs."""
    with TileIndex.open(index_dir) as index:
        ids = _ids(index)
        vectors = index.vectors(ids)
    db = sqlite3.connect(index_dir / DB_NAME, isolation_level=None)
    db.executescript("""
        BEGIN;
        CREATE TABLE tiles_old (id INTEGER PRIMARY KEY, raster_id INTEGER NOT NULL,
            col_off INTEGER, row_off INTEGER, width INTEGER, height INTEGER,
            left REAL, bottom REAL, right REAL, top REAL,
            west REAL, south REAL, east REAL, north REAL, vector BLOB NOT NULL);
        INSERT INTO tiles_old SELECT id, raster_id, col_off, row_off, width, height, left, bottom,
            right, top, west, south, east, north, x'' FROM tiles;
        DROP TABLE tiles; DROP TABLE shards;
        ALTER TABLE tiles_old RENAME TO tiles;
        CREATE INDEX tiles_by_raster ON tiles (raster_id);
        UPDATE meta SET value = '1' WHERE key = 'format_version';
        COMMIT;""")
    db.executemany("UPDATE tiles SET vector = ? WHERE id = ?",
                   [(v.astype(np.float32).tobytes(), int(i)) for i, v in zip(ids, vectors)])
    db.close()
    for shard in (index_dir / "vectors").iterdir():
        shard.unlink()
    return ids, vectors


def test_a_format_1_index_is_upgraded_in_place_on_first_open(built, tiny_model):
    index_dir, _ = built
    with TileIndex.open(index_dir) as index:
        expected_hits = [h.tile_id for h in search_text(index, tiny_model, "a river", k=10)]
    ids, vectors = _downgrade_to_format_1(index_dir)
    with TileIndex.open(index_dir, model=tiny_model) as index:
        assert index.db.meta("format_version") == formats.FORMAT_VERSION
        np.testing.assert_array_equal(index.vectors(ids), vectors)
        assert [h.tile_id for h in search_text(index, tiny_model, "a river", k=10)] == expected_hits
    assert (index_dir / "vectors" / "shard-00000.f16").exists()


def test_indexing_more_into_a_format_1_index_upgrades_it_first(built, tmp_path, tiny_model):
    index_dir, first = built
    ids, vectors = _downgrade_to_format_1(index_dir)
    second = utm_scene(tmp_path, "second.tif", seed=3)
    stats = build_index(index_dir, [first, second], tiny_model, **SMALL)
    assert stats.rasters_skipped == 1 and stats.tiles_encoded == len(ids)
    with TileIndex.open(index_dir) as index:
        assert index.count == 2 * len(ids)
        np.testing.assert_array_equal(index.vectors(ids), vectors)


def test_an_interrupted_upgrade_leaves_the_old_index_intact_and_can_run_again(
        built, tiny_model, monkeypatch):
    index_dir, _ = built
    ids, vectors = _downgrade_to_format_1(index_dir)
    monkeypatch.setattr(formats, "_MIGRATE_BATCH", 16)
    calls = []
    real_append = VectorShards.append

    def append_then_crash(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(5, "simulated I/O error during the upgrade")
        return real_append(self, *args)

    monkeypatch.setattr(VectorShards, "append", append_then_crash)
    with pytest.raises((UserError, OSError)):
        TileIndex.open(index_dir)
    db = sqlite3.connect(index_dir / DB_NAME)
    assert "vector" in [c[1] for c in db.execute("PRAGMA table_info(tiles)")]
    assert db.execute("SELECT COUNT(*) FROM tiles").fetchone()[0] == len(ids)
    db.close()
    monkeypatch.setattr(VectorShards, "append", real_append)
    with TileIndex.open(index_dir) as index:
        np.testing.assert_array_equal(index.vectors(ids), vectors)


class _FakeTile:
    """What commit() reads from a planned tile."""

    def __init__(self, record):
        self.index = record.tile_id & 0xFFFFFFFF
        self.window = record.window
        self.bounds = record.bounds
        self.bounds_wgs84 = record.bounds_wgs84


def test_all_tile_ids_follow_the_rasters_and_their_grids(built, tmp_path, tiny_model):
    """tile_probabilities pairs all_tile_ids with vectors streamed raster by raster: same order."""
    from ssjdn.core.query.feedback import all_tile_ids
    index_dir, first = built
    build_index(index_dir, [first, utm_scene(tmp_path, "second.tif", seed=3)], tiny_model, **SMALL)
    with TileIndex.open(index_dir) as index:
        assert len(index.rasters()) == 2
        np.testing.assert_array_equal(all_tile_ids(index), _ids(index))


def test_search_takes_candidates_by_position_without_asking_the_database(built, tiny_model, monkeypatch):
    # At ten million tiles, looking 500 candidates up in SQLite cost 3.5 ms of every search:
    # the search structure's labels are shard positions, and only the final k become tile ids.
    index_dir, _ = built
    for threshold in (10_000, 10):                      # exact, then compressed + re-ranked
        with TileIndex.open(index_dir) as index:
            index.finalize(approx_threshold=threshold)
            ids = _ids(index)
            query = tiny_model.encode_texts(["a river"]).float().numpy()
            truth = ids[np.argsort(-(index.vectors(ids) @ query[0]), kind="stable")[:5]]
            monkeypatch.setattr(TileIndex, "vectors", lambda *a: pytest.fail("SQLite lookup in search"))
            scores, found = index.search(query, 5)
            monkeypatch.undo()
            assert set(found[0].tolist()) <= set(ids.tolist())
            np.testing.assert_allclose(scores[0], np.sort(index.vectors(found[0]) @ query[0])[::-1], atol=1e-5)
            if threshold == 10_000:
                assert found[0].tolist() == truth.tolist()


def _downgrade_to_format_2(index_dir):
    for ids_file in (index_dir / "vectors").glob("*.ids"):
        ids_file.unlink()
    db = sqlite3.connect(index_dir / DB_NAME, isolation_level=None)
    db.execute("UPDATE meta SET value = '2' WHERE key = 'format_version'")
    db.close()


def test_a_format_2_index_gets_its_tile_id_files_on_first_open(built, tiny_model):
    index_dir, _ = built
    with TileIndex.open(index_dir) as index:
        expected = [h.tile_id for h in search_text(index, tiny_model, "a river", k=10)]
    _downgrade_to_format_2(index_dir)
    with TileIndex.open(index_dir, model=tiny_model) as index:
        assert index.db.meta("format_version") == formats.FORMAT_VERSION
        assert [h.tile_id for h in search_text(index, tiny_model, "a river", k=10)] == expected
    assert (index_dir / "vectors" / "shard-00000.ids").exists()


@pytest.mark.parametrize("downgrade", [_downgrade_to_format_1, _downgrade_to_format_2])
def test_a_read_only_older_index_says_how_to_upgrade_it(built, monkeypatch, downgrade):
    index_dir, _ = built
    downgrade(index_dir)
    monkeypatch.setattr(index_store, "folder_is_writable", lambda path: False)
    with pytest.raises(UserError, match="earlier version.*read-only.*Copy the folder"):
        TileIndex.open(index_dir)
