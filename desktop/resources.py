"""The app's resource paths and sample constants, in one place with no Qt.

Both the start-up code (app.py) and the window (qt_main.py) read them here, so neither has to
import the other.
"""
from __future__ import annotations

from pathlib import Path

from ssjdn.core.places import shipped_path

APP_TITLE = "SSJDN Explorer"
RESOURCES_DIR = shipped_path("resources")
# The sample scene has 5 m pixels: a tile of the training ground size (76.8 m) would be 15 px,
# an unrecognisable blur to the model and to the user. 200 m tiles (40 px) gave clearly better
# hits with a trained checkpoint (river bed, town, fields, woods) and index 6x faster.
SAMPLE_TILE_M = 200.0
THUMB_PX = 72          # side of a hit's thumbnail in the lists


def sample_scene_path() -> Path:
    return RESOURCES_DIR / "sample" / "haiti_rgbn_5m.tif"


def icon_path() -> Path:
    return RESOURCES_DIR / "icons" / "ssjdn-explorer.png"
