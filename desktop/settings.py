"""Per-user places and preferences (no Qt): index cache, recent files, registered checkpoints.

Indexes live in the user's cache folder, never in the repository or next to the rasters, so
a read-only install and a shared data folder both work. SSJDN_CACHE_DIR / SSJDN_CONFIG_DIR
override the folders (tests point them at a temporary folder).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ssjdn.core.places import APP_DIR_NAME, cache_dir, config_dir  # noqa: F401 - the app's places

MAX_RECENT = 10


def index_dir_for(fingerprint: str, tile_ground_m: float | None) -> Path:
    """One index per model and tiling: build_index adds new rasters to it incrementally."""
    tiling = "auto" if tile_ground_m is None else f"{float(tile_ground_m):g}m"
    key = hashlib.sha256(f"{fingerprint}|{tiling}".encode()).hexdigest()[:16]
    return cache_dir() / "indexes" / key


def training_runs_dir() -> Path:
    return cache_dir() / "training-runs"


class Preferences:
    """Recent rasters and checkpoints registered from training, kept in one JSON file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_dir() / "preferences.json"
        self.recent_files: list[str] = []
        self.checkpoints: list[dict] = []   # {"path": ..., "label": ...}
        self.first_launch_done = False
        self.background_url: str | None = None   # the user's background map; None: none
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return  # no or unreadable preferences: start fresh rather than refuse to start
        self.recent_files = [p for p in data.get("recent_files", []) if isinstance(p, str)]
        self.checkpoints = [c for c in data.get("checkpoints", []) if isinstance(c, dict) and "path" in c]
        self.first_launch_done = bool(data.get("first_launch_done", False))
        url = data.get("background_url")
        self.background_url = url if isinstance(url, str) and url else None

    def save(self) -> None:
        from ssjdn.core.files import atomic_path
        data = {"recent_files": self.recent_files, "checkpoints": self.checkpoints,
                "first_launch_done": self.first_launch_done, "background_url": self.background_url}
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(data, indent=2))

    def add_recent(self, path: str) -> None:
        path = str(path)
        if path in self.recent_files:
            self.recent_files.remove(path)
        self.recent_files.insert(0, path)
        del self.recent_files[MAX_RECENT:]
        self.save()

    def register_checkpoint(self, path: str, label: str | None = None) -> None:
        path = str(Path(path).resolve())
        self.checkpoints = [c for c in self.checkpoints if c["path"] != path]
        self.checkpoints.insert(0, {"path": path, "label": label or Path(path).name})
        self.save()
