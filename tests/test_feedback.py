"""Refine by example without any window: Rocchio refinement, the find-all classifier, model specs."""
import numpy as np
import pytest

from engine_fixtures import index_small_scene
from ssjdn.core.errors import UserError
from ssjdn.core.query.feedback import (MIN_POSITIVES, ClassifierSettings, RocchioWeights, _negatives,
                                 all_tile_ids, classify_tiles, refine_query, search_refined,
                                 tile_probabilities)


@pytest.fixture
def indexed(tmp_path, tiny_model):
    """A 320 x 256 UTM raster indexed as a 5 x 4 grid of 64 px tiles."""
    index, raster = index_small_scene(tmp_path, tiny_model)
    yield index
    index.close()


def _ids(index):
    return [int(i) for i in all_tile_ids(index)]


def _text_vector(model, text):
    return model.encode_texts([text]).float().cpu().numpy()[0]


def test_refined_query_is_the_normalised_rocchio_combination(indexed, tiny_model):
    ids = _ids(indexed)
    weights = RocchioWeights(text=1.0, positive=2.0, negative=0.5)
    query = refine_query(indexed, tiny_model, "a lake", ids[:3], ids[10:12], weights)
    expected = (_text_vector(tiny_model, "a lake") + 2.0 * indexed.vectors(ids[:3]).mean(0)
                - 0.5 * indexed.vectors(ids[10:12]).mean(0))
    np.testing.assert_allclose(query, expected / np.linalg.norm(expected), atol=1e-5)
    assert abs(np.linalg.norm(query) - 1) < 1e-5


def test_words_alone_give_the_text_query(indexed, tiny_model):
    text = _text_vector(tiny_model, "a lake")
    np.testing.assert_allclose(refine_query(indexed, tiny_model, "a lake"), text / np.linalg.norm(text), atol=1e-5)


def test_marks_pull_the_query_towards_positives_and_away_from_negatives(indexed, tiny_model):
    ids = _ids(indexed)
    text = refine_query(indexed, tiny_model, "a lake")
    positives, negatives = indexed.vectors(ids[:2]).mean(0), indexed.vectors(ids[5:7]).mean(0)
    # Each term alone turns the query in the plane it spans with the text: closer / farther.
    assert refine_query(indexed, tiny_model, "a lake", ids[:2]) @ positives > text @ positives
    assert refine_query(indexed, tiny_model, "a lake", [], ids[5:7]) @ negatives < text @ negatives


def test_words_are_optional_when_tiles_are_marked_relevant(indexed, tiny_model):
    ids = _ids(indexed)
    for words in (None, "", "   "):
        query = refine_query(indexed, tiny_model, words, ids[:2])
        mean = indexed.vectors(ids[:2]).mean(0)
        np.testing.assert_allclose(query, mean / np.linalg.norm(mean), atol=1e-5)


def test_no_words_and_no_relevant_tiles_is_a_user_error(indexed, tiny_model):
    ids = _ids(indexed)
    with pytest.raises(UserError, match="Say what to find"):
        refine_query(indexed, tiny_model, None, [], ids[:2])


def test_unknown_or_doubly_marked_tiles_are_user_errors(indexed, tiny_model):
    ids = _ids(indexed)
    with pytest.raises(UserError, match="Tile 12345 is not in the index"):
        refine_query(indexed, tiny_model, "a lake", [ids[0], 12345])
    with pytest.raises(UserError, match="both relevant and not relevant"):
        refine_query(indexed, tiny_model, "a lake", ids[:2], ids[1:3])
    with pytest.raises(UserError, match="not a tile id"):
        refine_query(indexed, tiny_model, "a lake", ["abc"])


def test_refined_search_ranks_every_tile_by_cosine_to_the_refined_query(indexed, tiny_model):
    ids = _ids(indexed)
    hits = search_refined(indexed, tiny_model, "a lake", ids[:2], ids[5:6], k=len(ids))
    query = refine_query(indexed, tiny_model, "a lake", ids[:2], ids[5:6])
    scores = [h.score for h in hits]
    assert sorted(h.tile_id for h in hits) == sorted(ids)
    assert scores == sorted(scores, reverse=True)
    np.testing.assert_allclose(scores, indexed.vectors([h.tile_id for h in hits]) @ query, atol=1e-5)


def test_refined_search_can_leave_the_marked_tiles_out(indexed, tiny_model):
    ids = _ids(indexed)
    hits = search_refined(indexed, tiny_model, "a lake", ids[:2], ids[5:6], k=5, skip_marked=True)
    assert len(hits) == 5 and not {h.tile_id for h in hits} & {ids[0], ids[1], ids[5]}


def test_classifier_needs_three_relevant_tiles(indexed):
    ids = _ids(indexed)
    with pytest.raises(UserError, match=f"at least {MIN_POSITIVES} tiles marked relevant"):
        classify_tiles(indexed, ids[:2], ids[5:8])


def test_classifier_scores_every_tile_with_a_probability(indexed):
    ids = _ids(indexed)
    tile_ids, probabilities = tile_probabilities(indexed, ids[:3], ids[10:14])
    assert sorted(tile_ids.tolist()) == sorted(ids)
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    by_id = dict(zip(tile_ids.tolist(), probabilities))
    assert np.mean([by_id[i] for i in ids[:3]]) > np.mean([by_id[i] for i in ids[10:14]])


def test_scoring_every_tile_reports_progress_and_stops_on_cancel(indexed, monkeypatch):
    # An archive has millions of tiles to score: the app shows how far it is and can stop it.
    import threading
    from ssjdn.core.index import index_store
    from ssjdn.core.errors import Cancelled
    ids = _ids(indexed)
    real = index_store.TileIndex.iter_raster_vectors
    monkeypatch.setattr(index_store.TileIndex, "iter_raster_vectors",
                        lambda self, rid, block=65_536: real(self, rid, block=6))   # 4 blocks
    reports = []
    tile_probabilities(indexed, ids[:3], ids[10:14], progress=lambda p: reports.append((p.done, p.total, p.message)))
    assert [done for done, _, _ in reports] == [6, 12, 18, 20]
    assert {total for _, total, _ in reports} == {20} and "Scoring" in reports[0][2]
    cancel = threading.Event()
    with pytest.raises(Cancelled):
        tile_probabilities(indexed, ids[:3], ids[10:14], cancel=cancel,
                           progress=lambda update: cancel.set())


def test_classify_keeps_tiles_above_the_threshold_best_first(indexed):
    ids = _ids(indexed)
    everything = classify_tiles(indexed, ids[:3], ids[10:14], threshold=0.0)
    probabilities = [p for _, p in everything]
    assert len(everything) == len(ids) and probabilities == sorted(probabilities, reverse=True)
    threshold = float(np.median(probabilities))
    kept = classify_tiles(indexed, ids[:3], ids[10:14], threshold=threshold)
    assert kept == [(t, p) for t, p in everything if p >= threshold]
    with pytest.raises(UserError, match="between 0 and 1"):
        classify_tiles(indexed, ids[:3], threshold=1.5)


def test_probability_heatmap_puts_each_tile_probability_in_its_cell(indexed):
    from ssjdn.core.query.feedback import probability_heatmap
    ids = _ids(indexed)
    tile_ids, probabilities = tile_probabilities(indexed, ids[:3], ids[10:14])
    raster = indexed.rasters()[0].path
    scored = {int(t): float(p) for t, p in zip(tile_ids, probabilities)}
    del scored[ids[-1]]   # an unscored tile stays NaN
    heat = probability_heatmap(indexed, raster, list(scored), list(scored.values()))
    assert heat.array.shape == (4, 5)
    for record in indexed.tiles(ids):
        cell = heat.array[int(record.window.row_off) // 64, int(record.window.col_off) // 64]
        if record.tile_id in scored:
            assert cell == pytest.approx(scored[record.tile_id], abs=1e-6)
        else:
            assert np.isnan(cell)


def test_sampled_negatives_never_include_a_relevant_tile(indexed):
    ids = np.array(_ids(indexed))
    positives = [int(i) for i in ids[:4]]
    sampled = _negatives(ids, positives, [int(ids[4])], ClassifierSettings(min_negatives=100))
    assert int(ids[4]) in sampled and not set(sampled) & set(positives)
    assert len(sampled) == len(ids) - len(positives)   # all that is left when the index is small


def test_an_index_all_marked_relevant_cannot_be_classified(indexed):
    with pytest.raises(UserError, match="nothing to tell"):
        classify_tiles(indexed, _ids(indexed))


# -- model specs and the offline environment ---------------------------------------------------

def test_a_config_name_gives_the_same_untrained_model_every_time():
    from ssjdn.core.model.api import model_from_spec
    first, second = model_from_spec("tiny", device="cpu"), model_from_spec("config:tiny", device="cpu")
    assert first.model.fingerprint == second.model.fingerprint
    assert (first.trained, first.source) == (False, "tiny")


def test_a_checkpoint_path_loads_the_trained_model(tmp_path, tiny_model):
    from ssjdn.core.model.api import model_from_spec, save_checkpoint
    path = save_checkpoint(tiny_model, tmp_path / "m.safetensors")
    for spec in (str(path), f"file:{path}"):
        resolved = model_from_spec(spec, device="cpu")
        assert resolved.trained and resolved.source == str(path.resolve())
        assert resolved.model.fingerprint == tiny_model.fingerprint


def test_a_missing_checkpoint_or_unknown_config_is_a_user_error(tmp_path):
    from ssjdn.core.model.api import model_from_spec
    with pytest.raises(UserError, match="Model file not found"):
        model_from_spec(str(tmp_path / "gone.safetensors"))
    with pytest.raises(UserError, match="Unknown model config"):
        model_from_spec("no-such-config")


def test_the_shipped_spec_loads_the_default_checkpoint():
    from ssjdn.core.model.api import default_model_path, model_from_spec
    if not default_model_path().is_file():
        pytest.skip("no shipped checkpoint in this checkout")
    resolved = model_from_spec("shipped", device="cpu")
    assert resolved.trained and resolved.source == str(default_model_path())


def test_offline_helper_sets_both_variables_and_keeps_user_values():
    from ssjdn.core.offline import use_offline_hub
    env = {"TRANSFORMERS_OFFLINE": "0"}
    use_offline_hub(env)
    assert env == {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "0"}
