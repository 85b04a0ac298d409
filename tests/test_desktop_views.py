"""Views follow their models: the session's model, the map's layers."""
from __future__ import annotations

import numpy as np
import yaml
from desktop_fixtures import INDEX_TIMEOUT_MS, indexed_window, make_window, small_raster, user_dirs  # noqa: F401
from PySide6.QtCore import Qt


def test_changing_the_model_updates_the_view_and_reindexes(qtbot, indexed_window, tmp_path):
    window = indexed_window
    first_dir = window.model.current_index_dir()
    config = dict(window.model.loaded.model.config, name="tiny-narrow", embed_dim=8)
    other = tmp_path / "tiny-narrow.yaml"
    other.write_text(yaml.safe_dump(config))

    with qtbot.waitSignal(window.indexReady, timeout=INDEX_TIMEOUT_MS):
        window.session.set_model(f"config:{other}")
        assert window.choice.model_combo.currentData() == f"config:{other}"   # the view followed at once

    assert "tiny-narrow" in window.status.model_label.text()
    assert window.model.loaded.model.name == "tiny-narrow"
    assert window.model.current_index_dir() != first_dir   # one index per model, never mixed
    assert window.model.index.dim == 8


def test_choosing_a_model_in_the_combo_changes_the_session(qtbot, indexed_window):
    window = indexed_window
    untrained = window.choice.model_combo.findData("shipped")
    assert untrained >= 0
    window.choice.model_combo.blockSignals(True)  # only check the combo -> session direction, no reload
    window.choice.model_combo.setCurrentIndex(untrained)
    window.choice.model_combo.blockSignals(False)
    window.choice.model_combo.currentIndexChanged.emit(untrained)
    assert window.session.model_spec == "shipped"
    window.cancel_indexing()
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=INDEX_TIMEOUT_MS * 3)


def test_device_shown_is_the_models_device(indexed_window):
    assert indexed_window.status.device_label.text() == "Device: cpu"
    assert indexed_window.choice.device_combo.currentData() == "cpu"


def test_layer_panel_and_map_follow_each_other(indexed_window):
    window = indexed_window
    panel, view = window.layer_panel, window.map_view
    raster_layer = next(n for n, s in view.layers.items() if s.kind == "raster")
    row = panel.row_for(raster_layer)

    row.setCheckState(Qt.CheckState.Unchecked)            # view -> map
    assert not view.layer_items(raster_layer)[0].isVisible()

    window.model.layers.set_visible(raster_layer, True)     # model -> panel
    assert panel.row_for(raster_layer).checkState() == Qt.CheckState.Checked

    panel.list.setCurrentItem(panel.row_for(raster_layer))
    panel.opacity.setValue(40)
    assert abs(view.layer_items(raster_layer)[0].opacity() - 0.4) < 1e-6
    window.model.layers.set_opacity(raster_layer, 0.75)
    assert panel.opacity.value() == 75


def test_tile_grid_layer_outlines_every_indexed_tile_once_shown(indexed_window):
    window = indexed_window
    view = window.map_view
    assert not view.layers["tiles"].visible and view.layer_items("tiles") == []  # built when shown
    window.model.layers.set_visible("tiles", True)
    grid = view.layer_items("tiles")
    assert len(grid) == 1 and grid[0].isVisible()
    # The 5 x 4 tiles form a full lattice: drawn as its 6 + 5 lines (a move and a line each),
    # not 20 rectangles; a million-tile raster is then a few thousand lines.
    path = grid[0].path()
    assert path.elementCount() == 2 * (6 + 5)
    ids, windows = window.model.tile_grid(window.model.indexed_rasters()[0])
    assert len(ids) == 20
    left, top = windows[:, 0].min(), windows[:, 1].min()
    right, bottom = (windows[:, 0] + windows[:, 2]).max(), (windows[:, 1] + windows[:, 3]).max()
    assert path.boundingRect().getCoords() == (left, top, right, bottom)


def test_a_tile_grid_that_is_not_a_full_lattice_outlines_each_tile():
    from ssjdn.desktop.qt_map import tile_outline
    windows = np.array([[0, 0, 64, 64], [64, 0, 64, 64], [0, 64, 64, 64]])   # one tile missing
    assert tile_outline(windows).elementCount() == 5 * 3
    full = np.array([[c, r, 64, 64] for r in (0, 48) for c in (0, 48, 96)])  # overlapping lattice
    path = tile_outline(full)
    assert path.elementCount() == 2 * (2 * 3 + 2 * 2)
    assert path.boundingRect().getCoords() == (0, 0, 160, 112)


def test_cursor_position_shows_lat_lon_and_raster_crs(indexed_window):
    window = indexed_window
    window.status.show_cursor(window.map_view.frame, 500_010.0, 5_699_990.0)   # inside the UTM 31N test raster
    text = window.status.cursor_label.text()
    assert "°N" in text and "°E" in text and "EPSG:32631" in text
    assert window.status.crs_label.text() == "CRS: EPSG:32631"


def test_zooming_in_reads_only_the_visible_window_at_screen_resolution(qtbot, make_window, tmp_path):
    from engine_fixtures import scene, write_raster
    window = make_window(auto_index=False)
    window.resize(1400, 900)
    window.show()
    qtbot.waitExposed(window)
    big = write_raster(tmp_path / "big.tif", scene(1500, 2600, seed=3))   # overview is 1024 px wide
    window.open_rasters([big])
    view = window.map_view
    item = view.rasters[big]
    assert item.overview.width() == 1024 and item.detail is None

    view.zoom_to_bounds(item.info.bounds, item.info.crs, context=0.05)     # far past the overview
    view.refresh_details()
    qtbot.waitUntil(lambda: item.detail is not None and view.details_settled(), timeout=10_000)
    rect, image = item.detail
    assert rect.width() < item.info.width / 5                              # only the visible part
    assert image.width() <= view.viewport().width() + 4                    # at most screen pixels
    assert image.height() <= view.viewport().height() + 4

    view.fit_all()
    view.refresh_details()
    assert item.detail is None                                             # the overview suffices


def test_a_raster_without_crs_is_shown_upright_in_pixel_coordinates(qtbot, make_window, tmp_path):
    from engine_fixtures import write_raster
    window = make_window(auto_index=False)
    data = np.zeros((3, 40, 60), dtype=np.uint8)
    data[:, :10, :] = 255                                   # a white band along the top rows
    path = write_raster(tmp_path / "plain.png.tif", data, crs=None)
    window.open_rasters([path])
    item = window.map_view.rasters[path]
    assert item.mapToScene(0, 0).y() < item.mapToScene(0, 40).y()   # row 0 on top, not flipped
    window.status.show_cursor(window.map_view.frame, 5.0, 7.0)
    assert "°" not in window.status.cursor_label.text() and "pixels (no CRS)" in window.status.cursor_label.text()


def test_a_large_raster_opens_at_once_and_its_overview_arrives_from_a_worker(qtbot, make_window, tmp_path,
                                                                             monkeypatch):
    from engine_fixtures import scene, write_raster

    import ssjdn.desktop.qt_map as qt_map
    # Stand in for a 20000 px raster: any raster above the threshold takes the background path.
    monkeypatch.setattr(qt_map, "SYNC_OVERVIEW_MAX_PX", 100 * 100)
    window = make_window(auto_index=False)
    path = write_raster(tmp_path / "large.tif", scene(300, 500, seed=5))
    window.open_rasters([path])
    view = window.map_view
    item = view.rasters[path]
    assert not item.overview_loaded                     # the GUI thread did not read it
    assert (item.overview.height(), item.overview.width()) == (614, 1024)   # stand-in, real size
    qtbot.waitUntil(lambda: item.overview_loaded and view.details_settled(), timeout=10_000)
    colours = {item.overview.pixelColor(x, y).name() for x in range(0, 1024, 97) for y in range(0, 614, 61)}
    assert len(colours) > 3                             # real pixels, not the grey stand-in


def test_the_opacity_slider_says_to_pick_a_layer_until_one_is_selected(indexed_window):
    panel = indexed_window.layer_panel
    panel.list.setCurrentItem(None)
    assert not panel.opacity.isEnabled()
    assert panel.opacity.value() == 100 and "select a layer" in panel.opacity_label.text()
    raster_layer = next(n for n, s in indexed_window.map_view.layers.items() if s.kind == "raster")
    indexed_window.model.layers.set_opacity(raster_layer, 0.3)
    panel.list.setCurrentItem(panel.row_for(raster_layer))
    assert panel.opacity.isEnabled() and panel.opacity.value() == 30
    assert panel.opacity_label.text() == "Opacity"


def test_the_salience_panel_never_offers_an_ssm_map_that_is_constant_by_construction(qtbot):
    from ssjdn.desktop.qt_salience import QtSaliencePanel
    panel = QtSaliencePanel()
    qtbot.addWidget(panel)
    panel.kind.setCurrentIndex(panel.kind.findData("ssm"))
    panel.direction.setCurrentIndex(panel.direction.findData("fine_to_coarse"))
    assert panel.selection()[2] != 0
    assert not panel.scale.model().item(panel.scale.findData(0)).isEnabled()
    panel.direction.setCurrentIndex(panel.direction.findData("coarse_to_fine"))
    assert panel.scale.model().item(panel.scale.findData(0)).isEnabled()
    assert not panel.scale.model().item(panel.scale.findData(2)).isEnabled()
    panel.kind.setCurrentIndex(panel.kind.findData("sem"))
    assert all(panel.scale.model().item(row).isEnabled() for row in range(panel.scale.count()))
