"""The caption panel: captions an analyst can use by default (recent queries, then scene
captions of every common kind), a typed caption's rank, and a table tall enough to read."""
from __future__ import annotations

from desktop_fixtures import INDEX_TIMEOUT_MS, indexed_window, make_window, small_raster, user_dirs  # noqa: F401
from PySide6.QtCore import Qt

SIGNAL_MS = 30_000


def test_the_default_captions_are_recent_queries_then_scene_captions(qtbot, indexed_window):
    from ssjdn.desktop.captions import SCENE_CAPTIONS
    window = indexed_window
    panel = window.caption_panel
    assert panel.caption_list() == list(SCENE_CAPTIONS) and len(SCENE_CAPTIONS) >= 20
    with qtbot.waitSignal(window.searchFinished, timeout=SIGNAL_MS):
        window.search("storage tanks beside a river", 5)
    with qtbot.waitSignal(window.searchFinished, timeout=SIGNAL_MS):
        window.search("a parking lot", 5)
    assert panel.caption_list()[:2] == ["a parking lot", "storage tanks beside a river"]
    assert panel.caption_list()[2:] == list(SCENE_CAPTIONS)

    panel.captions.setPlainText("my own caption")          # the user's list is kept
    window.session.add_query("a harbour")
    assert panel.caption_list() == ["my own caption"]
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=SIGNAL_MS)


def test_a_typed_caption_shows_its_rank_among_the_others(qtbot, indexed_window):
    window = indexed_window
    panel = window.caption_panel
    with qtbot.waitSignal(window.salienceReady, timeout=SIGNAL_MS):
        window.select_tile(window.model.tile_at(500_001.0, 5_699_999.0))
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=SIGNAL_MS)   # its own ranking first
    panel.single.setText("a lonely tree in a field")
    with qtbot.waitSignal(window.captionsRanked, timeout=SIGNAL_MS) as ranked:
        qtbot.keyClick(panel.single, Qt.Key.Key_Return)
    order = [caption for caption, _ in ranked.args[0]]
    place = order.index("a lonely tree in a field") + 1
    suffix = "th" if 10 <= place % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(place % 10, "th")
    assert f"ranks {place}{suffix} of {len(order)}" in panel.rank_label.text()
    assert panel.table.currentRow() == place - 1              # scrolled to and selected
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=SIGNAL_MS)


def test_the_panel_names_caption_words_the_model_cannot_read(qtbot, indexed_window):
    """As `ssjdn match` does: a caption in another script scores as [UNK] tokens, so the
    analyst is told which words were ignored, and the line goes when all are read."""
    window = indexed_window
    panel = window.caption_panel
    with qtbot.waitSignal(window.salienceReady, timeout=SIGNAL_MS):
        window.select_tile(window.model.tile_at(500_001.0, 5_699_999.0))
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=SIGNAL_MS)
    panel.single.setText("a pool 🏊 beside houses")
    with qtbot.waitSignal(window.captionsRanked, timeout=SIGNAL_MS):
        qtbot.keyClick(panel.single, Qt.Key.Key_Return)
    assert not panel.unread_label.isHidden()
    assert "\u201c🏊\u201d" in panel.unread_label.text() and "ignored" in panel.unread_label.text()
    panel.single.setText("a pool beside houses")
    with qtbot.waitSignal(window.captionsRanked, timeout=SIGNAL_MS):
        qtbot.keyClick(panel.single, Qt.Key.Key_Return)
    assert panel.unread_label.isHidden()
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=SIGNAL_MS)


def test_the_results_table_shows_at_least_eight_rows(qtbot, indexed_window):
    window = indexed_window
    window.resize(1400, 860)
    window.show()
    qtbot.waitExposed(window)
    table = window.caption_panel.table
    table.setRowCount(30)
    qtbot.wait(50)
    assert table.viewport().height() >= 8 * table.verticalHeader().defaultSectionSize()
