"""One search hub (search.search_vector): every search ranks through it and gets each hit's
stored vector and its position in the vector store with the hit, so no caller reads them again."""
import numpy as np
import pytest

from engine_fixtures import cli_index, utm_scene  # noqa: F401 - cli_index is a fixture
from ssjdn.core.index.index_store import TileIndex
from ssjdn.core.index.indexing import build_index
from ssjdn.core.query import search
from ssjdn.core.query.feedback import refine_query, search_refined


@pytest.fixture
def overlapping(tmp_path, tiny_model):
    """Two tilings, overlapping by half: a search must suppress hits on the same ground."""
    raster = utm_scene(tmp_path)
    build_index(tmp_path / "idx", raster, tiny_model, tile_px=[64, 32], overlap=0.5)
    with TileIndex.open(tmp_path / "idx", model=tiny_model) as index:
        assert index.has_overlapping_tiles()
        yield index


def _ranked_by_brute_force(index, query, k, exclude=()):
    """What a search must return, from every stored vector: scored, best first, the excluded
    left out, then of two hits on mostly the same ground only the better."""
    ids = index.tile_ids()
    scores = index.vectors(ids) @ query
    order = [i for i in np.argsort(-scores, kind="stable") if int(ids[i]) not in set(exclude)]
    hits = search.hits_for_ids(index, ids[order], scores[order])
    return search.suppress_same_ground(hits)[:k]


def _assert_carries_its_stored_vector(index, hits):
    assert all(h.vector is not None and h.position is not None for h in hits)
    stored = index.vectors([h.tile_id for h in hits])
    np.testing.assert_array_equal(np.stack([h.vector for h in hits]), stored)
    # The position names the same row of the vector store as the tile id does.
    np.testing.assert_array_equal(index.vectors_at([h.position for h in hits]), stored)


def test_the_hub_returns_the_hits_positions_and_vectors_of_the_index(overlapping, tiny_model):
    index = overlapping
    query = search.query_vector(tiny_model, "a river")
    some = [int(i) for i in index.tile_ids()[:40:3]]
    for exclude in ((), some):
        hits = search.search_vector(index, query, 12, exclude=exclude)
        expected = _ranked_by_brute_force(index, query, 12, exclude)
        assert [h.tile_id for h in hits] == [h.tile_id for h in expected]
        np.testing.assert_allclose([h.score for h in hits], [h.score for h in expected], atol=1e-5)
        assert not set(some) & {h.tile_id for h in hits} or not exclude
        _assert_carries_its_stored_vector(index, hits)


def test_text_similar_and_refined_searches_rank_through_the_hub(overlapping, tiny_model):
    index = overlapping
    text = search.search_text(index, tiny_model, "a river", k=8)
    assert [h.tile_id for h in text] == [
        h.tile_id for h in search.search_vector(index, search.query_vector(tiny_model, "a river"), 8)]
    similar = search.search_similar(index, tiny_model, text[0].tile_id, k=8)
    assert [h.tile_id for h in similar] == [
        h.tile_id for h in search.search_vector(index, text[0].vector, 8, exclude=[text[0].tile_id])]
    positives, negatives = [text[0].tile_id, text[1].tile_id], [text[-1].tile_id]
    refined = search_refined(index, tiny_model, "a river", positives, negatives, k=8)
    query = refine_query(index, tiny_model, "a river", positives, negatives)
    assert [h.tile_id for h in refined] == [h.tile_id for h in search.search_vector(index, query, 8)]
    for hits in (text, similar, refined):
        _assert_carries_its_stored_vector(index, hits)


def test_ssjdn_search_remembers_its_hits_without_reading_their_vectors_again(
        cli_index, monkeypatch, capsys, tmp_path):
    from ssjdn.core.cli.main import main
    _, idx = cli_index
    real_vectors = TileIndex.vectors

    def no_second_read(self, tile_ids):
        pytest.fail("the hits' vectors were read again after the search")

    monkeypatch.setattr(TileIndex, "vectors", no_second_read)
    assert main(["search", "a river", "--index", idx, "-k", "5"]) == 0
    monkeypatch.setattr(TileIndex, "vectors", real_vectors)
    # What was remembered is what the index holds: the export finds its fingerprints unchanged.
    assert main(["export", "--index", idx, "--out", str(tmp_path / "hits.geojson")]) == 0
    assert "(5 hits for 'a river')" in capsys.readouterr().out


def test_ssjdn_index_opens_the_index_folder_once(tmp_path, monkeypatch, capsys):
    from ssjdn.core.cli.main import main
    raster = utm_scene(tmp_path)
    idx = str(tmp_path / "idx")
    real_open = TileIndex.open.__func__
    opened = []

    def counting_open(cls, *args, **kwargs):
        opened.append(args[0])
        return real_open(cls, *args, **kwargs)

    monkeypatch.setattr(TileIndex, "open", classmethod(counting_open))
    for run in ("a new index", "adding to it"):
        opened.clear()
        assert main(["index", raster, "--index", idx, "--model", "tiny", "--tile-px", "64"]) == 0, run
        assert len(opened) == 1, run
    assert "the index holds 20 tiles" in capsys.readouterr().out
