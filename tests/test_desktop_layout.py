"""The layout never clips the map: long names are elided (full path in a tooltip), docks keep
their width, the view is refitted when the docks change, and zoom-to-hit frames the tile."""
from __future__ import annotations

import pytest
from desktop_fixtures import INDEX_TIMEOUT_MS, make_window, user_dirs  # noqa: F401
from engine_fixtures import scene, write_raster
from PySide6.QtCore import QRectF

SIGNAL_MS = 30_000
LONG_NAME = "manila_ph_010m_" + "x" * 64 + "_fab355_4310_long.tif"


def shown_window(qtbot, make_window, raster):
    window = make_window()
    window.resize(1400, 860)
    window.show()
    qtbot.waitExposed(window)
    window.open_rasters([raster])
    with qtbot.waitSignal(window.indexReady, timeout=INDEX_TIMEOUT_MS):
        window.load_model()
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=INDEX_TIMEOUT_MS)
    return window


def visible_rect(view) -> QRectF:
    return view.mapToScene(view.viewport().rect()).boundingRect()


def test_a_100_character_file_name_leaves_the_map_half_the_window(qtbot, make_window, tmp_path):
    assert len(LONG_NAME) == 100
    raster = write_raster(tmp_path / LONG_NAME, scene(256, 320, seed=1))
    window = shown_window(qtbot, make_window, raster)
    window.search_panel.k.setValue(20)
    with qtbot.waitSignal(window.searchFinished, timeout=SIGNAL_MS):
        window.search("a river", 20)
    with qtbot.waitSignal(window.salienceReady, timeout=SIGNAL_MS):
        window.select_tile(window.model.results.hits[0].tile_id)
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=SIGNAL_MS)
    qtbot.wait(50)   # let the layout settle

    assert window.map_view.width() >= 0.5 * window.width()
    # The names are elided where they show, the full path is a tooltip away.
    for label in (window.caption_panel.tile_label, window.salience_panel.info):
        assert LONG_NAME not in label.text() and "…" in label.text()
        assert str(raster) in label.toolTip()
    # The whole raster is still in view: the view was refitted when the panels changed.
    raster_rect = next(iter(window.map_view.rasters.values())).sceneBoundingRect()
    assert visible_rect(window.map_view).adjusted(-1e-6, -1e-6, 1e-6, 1e-6).contains(raster_rect)


def test_the_view_is_refitted_when_a_dock_closes(qtbot, make_window, tmp_path):
    raster = write_raster(tmp_path / "small.tif", scene(256, 320, seed=1))
    window = shown_window(qtbot, make_window, raster)
    view = window.map_view
    before, before_width = visible_rect(view), view.width()
    raster_rect = next(iter(view.rasters.values())).sceneBoundingRect()
    window.docks["search"].hide()
    window.docks["captions"].hide()
    qtbot.waitUntil(lambda: view.width() > before_width + 300, timeout=5000)
    qtbot.wait(50)
    after = visible_rect(view)
    assert after.contains(raster_rect)
    # Fitted again, not just widened: the raster fills the taller side of the bigger view.
    assert after.height() <= before.height() + 1e-6 or after.width() <= raster_rect.width() * 1.05


@pytest.mark.parametrize("pixel_m", [0.3, 1.0])   # tiles of 64 and of 19 pixels
def test_zoom_to_a_hit_frames_the_tile_readably(qtbot, make_window, tmp_path, pixel_m):
    raster = write_raster(tmp_path / "big.tif", scene(512, 640, seed=2), res=pixel_m)
    window = shown_window(qtbot, make_window, raster)
    with qtbot.waitSignal(window.searchFinished, timeout=SIGNAL_MS):
        window.search("a river", 5)
    hit = window.model.results.hits[0]
    window.activate_hit(hit)
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=SIGNAL_MS)
    view = window.map_view
    x, y, w, h = view.frame.bounds_to_scene(hit.bounds, hit.crs)
    tile = QRectF(x, y, w, h)
    visible = visible_rect(view)
    assert visible.contains(tile)
    on_screen = view.mapFromScene(tile).boundingRect()
    side = min(view.viewport().width(), view.viewport().height())
    assert on_screen.width() >= side / 4   # the tile and its SEM overlay can be read


def screen_box(view, label):
    """Where Qt paints a label that ignores the view's scale, in viewport pixels."""
    return label.deviceTransform(view.viewportTransform()).mapRect(label.boundingRect())


def test_hit_numbers_never_overlap_even_where_shifted_edge_tiles_overlap(qtbot, make_window, tmp_path):
    # 300 px wide: the fifth tile column is shifted inwards to 236, 44 px from the fourth.
    raster = write_raster(tmp_path / "shifted.tif", scene(256, 300, seed=3))
    window = shown_window(qtbot, make_window, raster)
    with qtbot.waitSignal(window.searchFinished, timeout=SIGNAL_MS):
        window.search("a river", 20)
    view = window.map_view
    labels = [outline.childItems()[0] for outline in view.hit_items]
    assert len(labels) == 20
    for zoom in (1.0, 0.3, 0.15):           # fitted, then zoomed out until tiles are 10 px
        view.fit_all()
        view.scale(zoom, zoom)
        view._view_changed()
        shown = [screen_box(view, label) for label in labels if label.isVisible()]
        assert labels[0].isVisible()                    # the best hit always keeps its number
        assert all(not a.intersects(b) for i, a in enumerate(shown) for b in shown[i + 1:])
        if zoom == 1.0:
            assert len(shown) == 20                     # with room, every hit has its number
