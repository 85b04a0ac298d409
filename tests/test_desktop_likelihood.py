"""Match likelihood in the app: shown beside the score, hits under the threshold not drawn,
the heatmap transparent there, an absolute colour scale, and a plain 'no good match'."""
from __future__ import annotations

import numpy as np
import pytest
from desktop_fixtures import INDEX_TIMEOUT_MS, make_window, small_raster, user_dirs  # noqa: F401
from PySide6.QtCore import Qt

from ssjdn.core.files import file_sha256
from ssjdn.core.model.calibration import Calibration, calibration_path, save_calibration

SIGNAL_MS = 30_000


@pytest.fixture
def calibrated_window(qtbot, make_window, small_raster, tiny_model, tmp_path):
    """The small raster indexed with a tiny checkpoint with a (synthetic) calibration."""
    from ssjdn.core.model.api import save_checkpoint
    checkpoint = save_checkpoint(tiny_model, tmp_path / "tiny.safetensors")
    save_calibration(Calibration(10.0, 0.0, file_sha256(checkpoint), "synthetic pairs"),
                     calibration_path(checkpoint))
    window = make_window(f"file:{checkpoint}")
    window.open_rasters([small_raster])
    with qtbot.waitSignal(window.indexReady, timeout=INDEX_TIMEOUT_MS):
        window.load_model()
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=INDEX_TIMEOUT_MS)
    return window


def search(qtbot, window, query="a river next to a road", k=20):
    window.search_panel.query.setText(query)
    window.search_panel.k.setValue(k)
    with qtbot.waitSignal(window.searchFinished, timeout=SIGNAL_MS) as blocker:
        qtbot.mouseClick(window.search_panel.search_button, Qt.MouseButton.LeftButton)
    return blocker.args[0]


def heat_alpha(window) -> np.ndarray:
    name = next(n for n, s in window.map_view.layers.items() if s.kind == "heatmap")
    image = window.map_view.overlay_item(name).pixmap().toImage()
    return np.array([[image.pixelColor(x, y).alpha() for x in range(image.width())]
                     for y in range(image.height())])


def test_likelihood_shows_beside_the_score_and_the_threshold_hides_weak_hits(qtbot, calibrated_window):
    window = calibrated_window
    hits = search(qtbot, window)
    assert len(hits) == 20 and all(h.likelihood == pytest.approx(1 / (1 + np.exp(-10 * h.score))) for h in hits)
    first = window.search_panel.results.item(0).text()
    assert f"score {hits[0].score:.3f}" in first and f"match {hits[0].likelihood:.0%}" in first

    assert len(window.map_view.hit_items) == sum(h.likelihood >= 0.5 for h in hits)
    window.search_panel.threshold.setValue(int(hits[9].likelihood * 100))   # about half pass
    passing = [h for h in hits if h.likelihood >= window.search_panel.threshold.value() / 100]
    assert 0 < len(passing) < len(hits)
    assert len(window.map_view.hit_items) == len(passing)    # weak hits are not drawn
    assert f"{len(passing)} of 20 tiles" in window.search_panel.status.text()
    # The heatmap is transparent where the likelihood is under the threshold.
    alpha = heat_alpha(window)
    assert 0 < (alpha > 0).sum() < alpha.size
    # The absolute scale: colours mean the same likelihood in every search.
    name = next(n for n, s in window.map_view.layers.items() if s.kind == "heatmap")
    assert (window.map_view.overlay_item(name).vmin, window.map_view.overlay_item(name).vmax) == (0.0, 1.0)
    window.search_panel.absolute.setChecked(False)
    item = window.map_view.overlay_item(next(n for n, s in window.map_view.layers.items() if s.kind == "heatmap"))
    assert item.vmin >= passing[-1].likelihood - 0.05 and item.vmax == pytest.approx(max(h.likelihood for h in hits), abs=0.05)
    assert window.search_panel.heat_legend.title == "heatmap: match likelihood"


def test_nothing_above_the_threshold_says_no_good_match(qtbot, calibrated_window):
    window = calibrated_window
    hits = search(qtbot, window)
    best = max(h.likelihood for h in hits)
    window.search_panel.threshold.setValue(int(best * 100) + 1)
    assert window.map_view.hit_items == []
    text = window.search_panel.status.text()
    assert text.startswith("No good match in this area") and f"{best:.0%}" in text
    assert (heat_alpha(window) == 0).all()                   # the imagery shows everywhere
    window.search_panel.threshold.setValue(0)                # everything passes again
    assert len(window.map_view.hit_items) == len(hits)


def test_a_model_without_calibration_shows_raw_scores_and_says_so_once(qtbot, make_window, small_raster):
    window = make_window()   # the tiny config: no calibration
    window.open_rasters([small_raster])
    with qtbot.waitSignal(window.indexReady, timeout=INDEX_TIMEOUT_MS):
        window.load_model()
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=INDEX_TIMEOUT_MS)
    assert "no calibration, so no match likelihood" in window.search_panel.status.text()
    hits = search(qtbot, window, k=5)
    assert all(h.likelihood is None for h in hits)
    assert "match" not in window.search_panel.results.item(0).text()
    assert len(window.map_view.hit_items) == 5 and not window.search_panel.threshold.isEnabled()
