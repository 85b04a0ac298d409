"""Errors reach the user as message boxes with a readable text, never as tracebacks."""
from __future__ import annotations

import sys
from pathlib import Path

from desktop_fixtures import indexed_window, make_window, small_raster, user_dirs  # noqa: F401
from PySide6.QtWidgets import QMessageBox

SIGNAL_MS = 30_000


def message_boxes(window) -> list[QMessageBox]:
    return [w for w in window.findChildren(QMessageBox) if w.isVisible()]


def test_opening_a_file_that_is_not_a_raster_shows_a_message(qtbot, make_window, tmp_path):
    window = make_window(auto_index=False)
    window.show()
    bad = tmp_path / "notes.tif"
    bad.write_text("this is not an image")
    with qtbot.waitSignal(window.errorShown) as shown:
        opened = window.open_rasters([str(bad)])
    assert not opened
    assert "notes.tif" in shown.args[0]
    boxes = message_boxes(window)
    assert len(boxes) == 1 and "notes.tif" in boxes[0].text()
    assert "Traceback" not in boxes[0].text()
    assert window.session.rasters == []


def test_an_empty_query_is_a_message_from_the_worker(qtbot, indexed_window):
    window = indexed_window
    window.show()
    with qtbot.waitSignal(window.errorShown, timeout=SIGNAL_MS) as shown:
        window.search("   ")
    assert "query is empty" in shown.args[0]
    assert any("query is empty" in box.text() for box in message_boxes(window))


def test_a_missing_checkpoint_is_a_message(qtbot, make_window, tmp_path):
    window = make_window(spec=f"file:{tmp_path / 'gone.safetensors'}")
    window.show()
    with qtbot.waitSignal(window.errorShown, timeout=SIGNAL_MS) as shown:
        window.load_model()
    assert "not found" in shown.args[0]
    assert window.model.loaded is None
    qtbot.waitUntil(lambda: "failed to load" in window.status.model_label.text())
    assert not window.search_panel.search_button.isEnabled()


def test_a_damaged_session_file_is_a_message(qtbot, make_window, tmp_path):
    window = make_window(auto_index=False)
    window.show()
    bad = tmp_path / "session.json"
    bad.write_text("{not json")
    with qtbot.waitSignal(window.errorShown) as shown:
        window.dialogs.restore_session(str(bad))
    assert "session" in shown.args[0].lower()


def test_an_unexpected_exception_in_a_slot_becomes_a_message(qtbot, make_window, monkeypatch):
    from PySide6.QtWidgets import QPushButton
    from ssjdn.desktop.app import install_excepthook
    window = make_window(auto_index=False)
    window.show()
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)   # restored after the test
    install_excepthook(lambda: window)
    button = QPushButton("boom", window)

    def broken_slot():
        raise ZeroDivisionError("boom")

    button.clicked.connect(broken_slot)
    with qtbot.waitSignal(window.errorShown) as shown:
        button.click()                                       # PySide routes the error to excepthook
    assert shown.args[0].startswith("Unexpected error: ZeroDivisionError: boom (the full report is in ")
    box = message_boxes(window)[0]
    assert "Traceback" in box.detailedText() and "Traceback" not in box.text()


def test_an_unexpected_worker_error_is_one_line_naming_a_log_that_holds_the_trace(tmp_path, monkeypatch):
    from ssjdn.desktop.qt_workers import describe_error
    monkeypatch.setenv("SSJDN_LOG_DIR", str(tmp_path))
    try:
        {}["missing"]
    except KeyError as exc:
        message, details = describe_error(exc)
    assert "\n" not in message and "KeyError" in message
    logs = list(tmp_path.glob("*.log"))
    assert len(logs) == 1 and str(logs[0]) in message
    assert "Traceback" in logs[0].read_text() and "Traceback" in details


def test_a_user_error_in_a_worker_is_shown_as_is_and_logs_nothing(tmp_path, monkeypatch):
    from ssjdn.core.errors import UserError
    from ssjdn.desktop.qt_workers import describe_error
    monkeypatch.setenv("SSJDN_LOG_DIR", str(tmp_path))
    message, _ = describe_error(UserError("Pick a GeoTIFF."))
    assert message == "Pick a GeoTIFF." and not list(tmp_path.glob("*.log"))


def _make_read_only(folder, monkeypatch) -> list:
    """chmod a folder read-only; as root (who writes anyway) also make it report read-only and
    make a build in it fail as it does for everyone else."""
    import os
    from ssjdn.core.index import index_store, indexing
    from ssjdn.core.errors import os_error_as_user_error
    made = [folder, *folder.iterdir()]
    for path in made:
        os.chmod(path, 0o555 if path.is_dir() else 0o444)
    if os.geteuid() == 0:
        real = index_store.folder_is_writable
        monkeypatch.setattr(index_store, "folder_is_writable",
                            lambda p: False if os.path.samefile(p, folder) else real(p))

        def build_refused(index_dir, *args, **kwargs):
            raise os_error_as_user_error(PermissionError(13, "Permission denied", str(index_dir)))
        monkeypatch.setattr(indexing, "build_index", build_refused)
    return made


def test_a_complete_index_in_a_read_only_folder_is_searched(qtbot, indexed_window, make_window, small_raster,
                                                            monkeypatch):
    # The app could not search it (it always built first); the CLI could.
    import os
    index_dir = indexed_window.model.current_index_dir()
    made = _make_read_only(index_dir, monkeypatch)
    try:
        window = make_window()
        window.open_rasters([small_raster])
        with qtbot.waitSignal(window.indexReady, timeout=SIGNAL_MS):
            window.load_model()
        qtbot.waitUntil(lambda: not window.is_busy(), timeout=SIGNAL_MS)
        assert window.model.index is not None and window.model.index.read_only
        with qtbot.waitSignal(window.searchFinished, timeout=SIGNAL_MS) as found:
            window.search("a red roof", 5)
        assert len(found.args[0]) == 5
    finally:
        for path in made:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)


def test_a_read_only_index_that_lacks_a_raster_says_it_cannot_be_built(qtbot, indexed_window, make_window,
                                                                      small_raster, tmp_path, monkeypatch):
    import os
    from engine_fixtures import scene, write_raster
    other = write_raster(tmp_path / "other.tif", scene(256, 320, seed=5))
    made = _make_read_only(indexed_window.model.current_index_dir(), monkeypatch)
    try:
        window = make_window()
        window.show()
        window.open_rasters([small_raster, other])
        with qtbot.waitSignal(window.errorShown, timeout=SIGNAL_MS) as shown:
            window.load_model()
        assert "read-only" in shown.args[0] and "other.tif" in shown.args[0]
    finally:
        for path in made:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)


def test_a_read_only_index_whose_raster_changed_since_says_so_instead_of_searching_stale_tiles(
        qtbot, indexed_window, make_window, small_raster, monkeypatch):
    # Before: the app trusted the raster's `complete` flag, so the changed file was searched
    # with the tiles of its old pixels.
    import os
    made = _make_read_only(indexed_window.model.current_index_dir(), monkeypatch)
    stat = os.stat(small_raster)
    os.utime(small_raster, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    try:
        window = make_window()
        window.show()
        window.open_rasters([small_raster])
        with qtbot.waitSignal(window.errorShown, timeout=SIGNAL_MS) as shown:
            window.load_model()
        assert "read-only" in shown.args[0] and Path(small_raster).name in shown.args[0]
    finally:
        for path in made:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
