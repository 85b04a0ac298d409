"""Match likelihood: fitting, held-out calibration error, the file beside a checkpoint, and the
likelihood carried by search hits, `ssjdn search` and exports (tiny synthetic fits only)."""
import json

import numpy as np
import pytest

from engine_fixtures import utm_scene
from ssjdn.core.files import file_sha256
from ssjdn.core.model.calibration import (GOOD_MATCH, Calibration, calibration_path, cross_fitted,
                                    expected_calibration_error, fit_calibration,
                                    load_for_checkpoint, save_calibration, same_kind)


def synthetic_split(n_images=84, kinds=21, captions_per_image=5, seed=0):
    """Scores of a model that scores same-kind pairs higher, with noise: (scores, labels,
    caption -> image)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_images) % kinds
    caption_image = np.repeat(np.arange(n_images), captions_per_image)
    match = same_kind(labels, labels[caption_image])
    scores = rng.normal(0.0, 0.08, match.shape) + 0.2 * match
    return scores, labels, caption_image


def test_fit_recovers_a_known_logistic_curve():
    rng = np.random.default_rng(1)
    scores = rng.uniform(-0.3, 0.4, 200_000)
    matches = rng.random(scores.size) < 1 / (1 + np.exp(-(20 * scores - 3)))
    slope, intercept = fit_calibration(scores, matches)
    assert slope == pytest.approx(20, rel=0.05) and intercept == pytest.approx(-3, rel=0.05)
    calibration = Calibration(slope, intercept)
    assert calibration.likelihood(calibration.score_at(0.7)) == pytest.approx(0.7)


def test_cross_fitted_likelihoods_are_calibrated_on_pairs_the_fit_did_not_use():
    scores, labels, caption_image = synthetic_split()
    likelihoods, matches = cross_fitted(scores, labels, caption_image)
    # Two folds of images, each scored only with its own images' captions: half of each side.
    assert likelihoods.size == 2 * (scores.shape[0] // 2) * (scores.shape[1] // 2)
    assert expected_calibration_error(likelihoods, matches) <= 0.10
    assert expected_calibration_error(likelihoods, matches, min_likelihood=0.1) <= 0.10
    # A miscalibrated model (likelihoods pushed towards 1) is caught by the same measure.
    assert expected_calibration_error(np.sqrt(np.sqrt(likelihoods)), matches) > 0.10


def test_a_split_without_matches_cannot_be_calibrated():
    from ssjdn.core.errors import UserError
    with pytest.raises(UserError, match="both matching and non-matching"):
        fit_calibration(np.linspace(0, 1, 10), np.zeros(10, bool))


def test_a_checkpoint_finds_its_own_calibration_and_not_one_for_other_weights(tmp_path, tiny_model):
    from ssjdn.core.model.api import load_model, save_checkpoint
    checkpoint = save_checkpoint(tiny_model, tmp_path / "tiny.safetensors")
    assert load_model(checkpoint).calibration is None        # none fitted yet
    save_calibration(Calibration(10.0, -1.0, file_sha256(checkpoint), "synthetic"), calibration_path(checkpoint))
    assert load_model(checkpoint).calibration.slope == 10.0
    checkpoint.write_bytes(checkpoint.read_bytes() + b" ")    # other weights: the fit is not theirs
    assert load_for_checkpoint(checkpoint) is None


@pytest.fixture
def calibrated_index(tmp_path, tiny_model):
    """A tiny checkpoint with a synthetic calibration, and a raster indexed with it."""
    from ssjdn.core.model.api import save_checkpoint
    from ssjdn.core.cli.main import main
    checkpoint = save_checkpoint(tiny_model, tmp_path / "tiny.safetensors")
    raster = utm_scene(tmp_path)
    idx = str(tmp_path / "idx")
    assert main(["index", raster, "--index", idx, "--model", str(checkpoint), "--tile-px", "64"]) == 0
    return checkpoint, idx


def test_search_prints_the_likelihood_and_exports_carry_it(calibrated_index, tmp_path, capsys):
    from ssjdn.core.cli.main import main
    checkpoint, idx = calibrated_index
    capsys.readouterr()
    assert main(["search", "storage tanks", "--index", idx, "-k", "3"]) == 0
    assert "no calibration" in capsys.readouterr().out     # said once, no likelihood column
    # A calibration under which every score of the tiny model is a near-certain match.
    save_calibration(Calibration(1.0, 10.0, file_sha256(checkpoint), "synthetic"), calibration_path(checkpoint))
    assert main(["search", "storage tanks", "--index", idx, "-k", "3"]) == 0
    printed = capsys.readouterr().out
    assert "match" in printed and "100%" in printed and "no calibration" not in printed
    out = tmp_path / "hits.geojson"
    assert main(["export", "--index", idx, "--out", str(out)]) == 0
    likelihoods = [f["properties"]["likelihood"] for f in json.loads(out.read_text())["features"]]
    assert len(likelihoods) == 3 and all(p > 0.99 for p in likelihoods)
    gpkg = tmp_path / "hits.gpkg"
    assert main(["export", "--index", idx, "--query", "storage tanks", "-k", "2", "--out", str(gpkg)]) == 0
    import fiona
    with fiona.open(gpkg) as src:
        assert [round(f["properties"]["likelihood"], 2) for f in src] == [1.0, 1.0]


def test_search_says_no_good_match_when_nothing_reaches_the_threshold(calibrated_index, capsys):
    from ssjdn.core.cli.main import main
    checkpoint, idx = calibrated_index
    save_calibration(Calibration(1.0, -10.0, file_sha256(checkpoint), "synthetic"), calibration_path(checkpoint))
    assert main(["search", "storage tanks", "--index", idx, "-k", "3"]) == 0
    printed = capsys.readouterr().out
    assert f"No good match: no tile reaches a {GOOD_MATCH:.0%} match likelihood" in printed
