"""Indexing from the app: progress, cancel, resume."""
from __future__ import annotations

from desktop_fixtures import INDEX_TIMEOUT_MS, make_window, small_raster, user_dirs, wide_raster  # noqa: F401
from PySide6.QtCore import Qt


def test_cancel_stops_indexing_and_leaves_a_resumable_index(qtbot, make_window, wide_raster):
    window = make_window()
    with qtbot.waitSignal(window.modelReady, timeout=INDEX_TIMEOUT_MS):
        window.load_model()
    progress_seen = []

    def cancel_after_first_tiles(update):
        # Runs in the worker thread (direct connection), so the cancel lands between two
        # read chunks deterministically, not whenever the GUI thread gets to it.
        progress_seen.append((update.done, update.total))
        if update.done > 0:
            window.index_jobs.worker.cancel()

    with qtbot.waitSignal(window.indexingStarted, timeout=INDEX_TIMEOUT_MS):
        window.open_rasters([wide_raster])
    window.index_jobs.worker.progressed.connect(cancel_after_first_tiles, Qt.ConnectionType.DirectConnection)
    with qtbot.waitSignal(window.indexReady, timeout=INDEX_TIMEOUT_MS) as stopped:
        pass
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=INDEX_TIMEOUT_MS)

    partial = stopped.args[0]
    assert partial.cancelled
    assert 0 < window.model.index.count < partial.tiles_planned     # some work kept, not all done
    assert "cancelled" in window.search_panel.status.text()
    assert window.search_panel.search_button.isEnabled()       # a partial index is searchable
    assert window.status.progress.isHidden() and window.index_action.isEnabled()
    kept = window.model.index.count

    with qtbot.waitSignal(window.indexReady, timeout=INDEX_TIMEOUT_MS) as resumed:
        qtbot.mouseClick(window.status.cancel_button, Qt.MouseButton.LeftButton)  # hidden: does nothing
        window.index_action.trigger()
    finished = resumed.args[0]
    assert not finished.cancelled
    assert finished.tiles_resumed == kept                      # nothing encoded twice
    assert finished.tiles_encoded == finished.tiles_planned - kept
    assert window.model.index.count == finished.tiles_planned


def test_progress_bar_and_cancel_button_show_while_indexing(qtbot, make_window, wide_raster):
    window = make_window()
    window.show()
    with qtbot.waitSignal(window.modelReady, timeout=INDEX_TIMEOUT_MS):
        window.load_model()
    with qtbot.waitSignal(window.indexingStarted, timeout=INDEX_TIMEOUT_MS):
        window.open_rasters([wide_raster])
    assert window.status.progress.isVisible() and window.status.cancel_button.isVisible()
    assert not window.search_panel.search_button.isEnabled()
    with qtbot.waitSignal(window.indexReady, timeout=INDEX_TIMEOUT_MS):
        qtbot.mouseClick(window.status.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=INDEX_TIMEOUT_MS)
    assert window.status.progress.isHidden()


def test_changing_the_model_during_indexing_indexes_with_the_new_one(qtbot, make_window, wide_raster, tmp_path):
    import yaml
    window = make_window()
    with qtbot.waitSignal(window.modelReady, timeout=INDEX_TIMEOUT_MS):
        window.load_model()
    with qtbot.waitSignal(window.indexingStarted, timeout=INDEX_TIMEOUT_MS):
        window.open_rasters([wide_raster])
    other = tmp_path / "tiny-other.yaml"
    other.write_text(yaml.safe_dump(dict(window.model.loaded.model.config, name="tiny-other", embed_dim=8)))
    with qtbot.waitSignal(window.indexReady, timeout=INDEX_TIMEOUT_MS) as ready:
        window.session.set_model(f"config:{other}")
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=INDEX_TIMEOUT_MS)
    assert not ready.args[0].cancelled
    assert window.model.loaded.model.name == "tiny-other"
    assert window.model.index.dim == 8 and window.model.index.count == ready.args[0].tiles_planned


def test_the_progress_bar_names_the_search_structure_step(make_window):
    """After the last tile the engine builds the search structure (minutes at 10M tiles): the
    bar says so instead of sitting at a full tile count."""
    from ssjdn.core.progress import Progress, Stage
    window = make_window()
    window.status.show_index_progress(Progress(Stage.ENCODING, 40, 160, "chunk 3"))
    assert window.status.progress.format() == "Indexing %v / %m tiles"
    window.status.show_index_progress(Progress(Stage.SEARCH_STRUCTURE, 160, 160,
                                               "search structure: 100,000 / 160,000 vectors added"))
    assert window.status.progress.format() == "Building the search structure…"
    assert "100,000 / 160,000" in window.status.progress.toolTip()
    assert window.statusBar().currentMessage() == "Search structure: 100,000 / 160,000 vectors added"
    window.status.show_index_progress(Progress(Stage.DONE, 160, 160, "done"))
    assert window.statusBar().currentMessage() == ""


def test_the_indexing_settings_set_the_nodata_threshold_and_a_rasters_nodata(qtbot, make_window, tmp_path):
    """A collared raster: by default its mostly black tiles are left out; the dialog's per-raster
    'none' brings them back, and only the tiles whose pixels changed are encoded again."""
    from engine_fixtures import collared, write_raster
    raster = write_raster(tmp_path / "collar.tif", collared(256, 320), res=0.3)
    window = make_window()
    window.open_rasters([raster])
    with qtbot.waitSignal(window.indexReady, timeout=INDEX_TIMEOUT_MS) as first:
        window.load_model()
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=INDEX_TIMEOUT_MS)
    stats = first.args[0]
    assert stats.tiles_nodata > 0 and any("treated as nodata" in w for w in stats.warnings)
    dialog = window.dialogs.open_indexing_dialog()
    box = dialog.nodata_boxes[window.session.rasters[0]]
    box.setCurrentIndex(box.findData("none"))
    dialog.max_nodata.setValue(80)
    with qtbot.waitSignal(window.indexReady, timeout=INDEX_TIMEOUT_MS) as second:
        dialog.accept()
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=INDEX_TIMEOUT_MS)
    again = second.args[0]
    assert window.session.indexing == {"max_nodata": 0.8, "nodata": {window.session.rasters[0]: "none"}}
    assert again.tiles_nodata == 0 and again.tiles_encoded == stats.tiles_nodata
    assert again.tiles_unchanged == stats.tiles_encoded
    assert window.model.index.count == stats.tiles_planned


def test_a_bad_nodata_value_is_one_message_and_the_dialog_stays(qtbot, make_window, small_raster):
    window = make_window(auto_index=False)
    window.open_rasters([small_raster])
    dialog = window.dialogs.open_indexing_dialog()
    dialog.nodata_boxes[window.session.rasters[0]].setEditText("black")
    with qtbot.waitSignal(window.errorShown) as shown:
        dialog.accept()
    assert "pixel value" in shown.args[0] and dialog.isVisible() and window.session.indexing == {}


def test_overlap_and_a_second_tile_size_from_the_settings(qtbot, make_window, small_raster):
    """The tiny model's tiles are 19.2 m (64 px here): 20 tiles, which the app warns are few;
    50 % overlap and a second size of 9.6 m add both grids to the index."""
    window = make_window()
    window.open_rasters([small_raster])
    with qtbot.waitSignal(window.indexReady, timeout=INDEX_TIMEOUT_MS) as first:
        window.load_model()
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=INDEX_TIMEOUT_MS)
    assert any("only 20 tile(s)" in w and "Overlap" in w for w in first.args[0].warnings)
    dialog = window.dialogs.open_indexing_dialog()
    dialog.overlap.setValue(50)
    dialog.second_tile.setValue(9.6)
    with qtbot.waitSignal(window.indexReady, timeout=INDEX_TIMEOUT_MS) as second:
        dialog.accept()
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=INDEX_TIMEOUT_MS)
    stats = second.args[0]
    assert window.session.indexing == {"max_nodata": 0.5, "overlap": 0.5, "second_tile_m": 9.6}
    assert stats.tiles_planned == 9 * 7 + 19 * 15 and not stats.warnings
    assert window.model.index.count == stats.tiles_planned


def test_file_opens_a_stac_catalog_and_its_hits_carry_the_item(qtbot, make_window, tmp_path):
    from stac_fixtures import write_catalog
    catalog = write_catalog(tmp_path / "stac", broken=False)
    window = make_window()
    with qtbot.waitSignal(window.modelReady, timeout=INDEX_TIMEOUT_MS):
        window.load_model()
    with qtbot.waitSignal(window.indexReady, timeout=INDEX_TIMEOUT_MS) as ready:
        window.dialogs.open_stac(str(catalog))
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=INDEX_TIMEOUT_MS)
    assert len(window.session.rasters) == 3 and ready.args[0].tiles_planned == 60
    assert {r["item"] for r in window.session.stac_items.values()} == {"flight-0", "flight-1", "flight-2"}
    with qtbot.waitSignal(window.searchFinished, timeout=INDEX_TIMEOUT_MS) as found:
        window.search("houses", 5)
    assert all(hit.stac["item"].startswith("flight-") for hit in found.args[0])
