"""Fixtures for the desktop tests: per-test user folders, small GeoTIFFs, a ready main window.

Imported by tests/test_desktop_*.py (pytest finds fixtures a test module imports).
"""
from __future__ import annotations

import numpy as np
import pytest

from engine_fixtures import scene, write_raster

# The tiny model's tiles are 19.2 m; at 0.3 m a tile is 64 px, so a 256 x 320 raster has 20.
INDEX_TIMEOUT_MS = 60_000


@pytest.fixture
def user_dirs(tmp_path, monkeypatch):
    """Index cache and preferences in a temporary folder, never the real user's."""
    monkeypatch.setenv("SSJDN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SSJDN_CONFIG_DIR", str(tmp_path / "config"))
    return tmp_path


@pytest.fixture
def small_raster(tmp_path):
    return write_raster(tmp_path / "small.tif", scene(256, 320, seed=1))


@pytest.fixture
def wide_raster(tmp_path):
    """Wider than two 2048 px read chunks, so indexing can be cancelled between chunks."""
    data = np.concatenate([scene(128, 1500, seed=s) for s in range(3)], axis=2)
    return write_raster(tmp_path / "wide.tif", data)


@pytest.fixture
def make_window(qtbot, user_dirs):
    """A main window on the tiny model (loaded through the app's own model choice)."""
    from ssjdn.desktop.qt_main import QtMainWindow
    from ssjdn.desktop.state import Session

    def make(spec: str = "config:tiny", auto_index: bool = True) -> QtMainWindow:
        window = QtMainWindow(Session(model_spec=spec, device="cpu"), auto_index=auto_index)
        qtbot.addWidget(window)
        return window

    return make


@pytest.fixture
def indexed_window(qtbot, make_window, small_raster):
    """A window with the small raster open and indexed with the tiny model."""
    window = make_window()
    window.open_rasters([small_raster])
    with qtbot.waitSignal(window.indexReady, timeout=INDEX_TIMEOUT_MS):
        window.load_model()
    qtbot.waitUntil(lambda: not window.is_busy(), timeout=INDEX_TIMEOUT_MS)
    return window
