"""Where things live: what ships with ssjdn (shipped_path), and the per-user folders for caches
and settings (SSJDN_CACHE_DIR / SSJDN_CONFIG_DIR override them; tests point them at a temporary
folder). No Qt: the engine caches files there too (exported text encoders), the app its
indexes and preferences."""
from __future__ import annotations

import os
import sys
from pathlib import Path

APP_DIR_NAME = "ssjdn-explorer"
# The ssjdn folder, where core/, training/, desktop/ and resources/ sit side by side: the
# checkout itself (an editable install maps the packages there) or site-packages/ssjdn.
_SSJDN_ROOT = Path(__file__).resolve().parents[1]


def shipped_path(*parts: str) -> Path:
    """A file or folder that ships with ssjdn, e.g. shipped_path("resources", "sample") or
    shipped_path("training", "configs"): the one way to reach them."""
    return _SSJDN_ROOT.joinpath(*parts)


def _user_dir(env_override: str, xdg_var: str, fallback: str, windows_var: str) -> Path:
    if os.environ.get(env_override):
        return Path(os.environ[env_override])
    if sys.platform == "win32":
        return Path(os.environ.get(windows_var, Path.home())) / APP_DIR_NAME
    if sys.platform == "darwin":
        return Path.home() / "Library" / ("Caches" if "CACHE" in xdg_var else "Application Support") / APP_DIR_NAME
    return Path(os.environ.get(xdg_var) or Path.home() / fallback) / APP_DIR_NAME


def cache_dir() -> Path:
    return _user_dir("SSJDN_CACHE_DIR", "XDG_CACHE_HOME", ".cache", "LOCALAPPDATA")


def config_dir() -> Path:
    return _user_dir("SSJDN_CONFIG_DIR", "XDG_CONFIG_HOME", ".config", "APPDATA")
