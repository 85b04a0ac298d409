"""The app's state as plain Python (no Qt): what is open, which model, which queries.

Views observe it through `Events`, so a test can change the state and check that a widget
followed, and a session file is just `Session.to_dict()` written as JSON.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ssjdn.core.model.spec import SHIPPED, ModelSpec

SESSION_VERSION = 1


class Events:
    """A minimal observer list per event name; callbacks get keyword arguments."""

    def __init__(self) -> None:
        self._callbacks: dict[str, list[Callable]] = {}

    def connect(self, name: str, callback: Callable) -> None:
        self._callbacks.setdefault(name, []).append(callback)

    def disconnect(self, name: str, callback: Callable) -> None:
        if callback in self._callbacks.get(name, []):
            self._callbacks[name].remove(callback)

    def emit(self, name: str, **kwargs) -> None:
        for callback in list(self._callbacks.get(name, [])):
            callback(**kwargs)


@dataclass
class ModelChoice:
    """A model the user can pick: a checkpoint file or a config name (untrained)."""

    spec: str          # "shipped", "config:<name>" or "file:<path>"
    label: str

    @property
    def is_checkpoint(self) -> bool:
        return ModelSpec.parse(self.spec).is_checkpoint


@dataclass
class IndexingSettings:
    """How rasters are cut and what is left out, as build_index takes it: the overlap of
    neighbouring tiles, a second (finer) tile size in metres, the share of a tile that may be
    nodata (None: the engine's default), and per raster a nodata setting ("none" or a pixel
    value; rasters not named are "auto")."""

    max_nodata: float | None = None
    nodata: dict[str, object] = field(default_factory=dict)   # {raster path: setting}
    overlap: float = 0.0
    second_tile_m: float | None = None

    @classmethod
    def from_dict(cls, data: dict) -> "IndexingSettings":
        """Settings from a session's dict; UserError for values build_index would refuse."""
        from ssjdn.core.errors import UserError
        from ssjdn.core.index.indexing import check_max_nodata
        from ssjdn.core.geo.raster import NODATA_AUTO, normalize_nodata
        from ssjdn.core.geo.tiling import check_overlap
        nodata = {str(path): normalize_nodata(value) for path, value in (data.get("nodata") or {}).items()}
        max_nodata, second = data.get("max_nodata"), data.get("second_tile_m")
        overlap = check_overlap(data.get("overlap", 0.0))
        if second is not None and not float(second) > 0:
            raise UserError(f"A second tile size is a positive number of metres; got {second}.")
        return cls(max_nodata=None if max_nodata is None else check_max_nodata(max_nodata),
                   nodata={path: value for path, value in nodata.items() if value != NODATA_AUTO},
                   overlap=overlap, second_tile_m=None if second is None else float(second))

    def to_dict(self) -> dict:
        """Only what differs from the defaults, so a default session stays {} (and older
        session files compare equal)."""
        data = {"max_nodata": self.max_nodata, "nodata": dict(self.nodata),
                "overlap": self.overlap or None, "second_tile_m": self.second_tile_m}
        return {key: value for key, value in data.items() if value not in (None, {})}

    def build_kwargs(self, tile_ground_m: float | None) -> dict:
        """build_index's keyword arguments for these settings and the session's tile size."""
        kwargs = {"nodata": dict(self.nodata), "overlap": self.overlap,
                  "tile_ground_m": tile_ground_m if self.second_tile_m is None
                  else [tile_ground_m, self.second_tile_m]}
        if self.max_nodata is not None:
            kwargs["max_nodata"] = self.max_nodata
        return kwargs


@dataclass
class Session:
    """Everything the user opened and asked; saved and restored as JSON."""

    rasters: list[str] = field(default_factory=list)
    model_spec: str = SHIPPED
    device: str = "auto"
    tile_ground_m: float | None = None
    # How the open rasters are indexed besides the tile size (IndexingSettings.to_dict()).
    indexing: dict = field(default_factory=dict)
    # Rasters opened from a STAC catalog: {path: StacAsset.source}, kept with their tiles.
    stac_items: dict[str, dict] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)
    layers: dict[str, dict] = field(default_factory=dict)
    view_bounds: list[float] | None = None
    # Where the index was (informational: it is found again from the model and tile size,
    # and rebuilt if the cache was cleared).
    index_dir: str | None = None
    events: Events = field(default_factory=Events, repr=False, compare=False)

    # -- changes that views follow -----------------------------------------------------------
    def set_model(self, spec: str) -> None:
        if spec != self.model_spec:
            self.model_spec = spec
            self.events.emit("model", spec=spec)

    def set_device(self, device: str) -> None:
        if device != self.device:
            self.device = device
            self.events.emit("device", device=device)

    def set_tile_ground_m(self, tile_ground_m: float | None) -> None:
        """Ground size of a tile in metres; None (or 0): the model's training ground size."""
        tile_ground_m = float(tile_ground_m) if tile_ground_m else None
        if tile_ground_m != self.tile_ground_m:
            self.tile_ground_m = tile_ground_m
            self.events.emit("tile_size", tile_ground_m=tile_ground_m)

    def add_stac_assets(self, assets) -> list[str]:
        """Remember where STAC assets (stac.StacAsset) came from; their paths, to open."""
        for asset in assets:
            self.stac_items[asset.path] = asset.source
        return [asset.path for asset in assets]

    def index_inputs(self) -> list:
        """The open rasters as build_index takes them: a STAC asset with its item's record."""
        from ssjdn.core.geo.stac import StacAsset
        return [StacAsset.from_source(path, self.stac_items[path]) if path in self.stac_items else path
                for path in self.rasters]

    def set_indexing(self, indexing: dict) -> None:
        """Nodata threshold and per-raster nodata settings (see IndexingSettings)."""
        indexing = IndexingSettings.from_dict(indexing).to_dict()
        if indexing != self.indexing:
            self.indexing = indexing
            self.events.emit("indexing", indexing=dict(indexing))

    @property
    def indexing_settings(self) -> "IndexingSettings":
        return IndexingSettings.from_dict(self.indexing)

    def add_raster(self, path: str) -> bool:
        from ssjdn.core.geo.raster import raster_path
        path = raster_path(path)   # a GDAL virtual path (/vsicurl/...) stays as given
        if path in self.rasters:
            return False
        self.rasters.append(path)
        self.events.emit("rasters", rasters=list(self.rasters))
        return True

    def remove_raster(self, path: str) -> None:
        if path in self.rasters:
            self.rasters.remove(path)
            self.events.emit("rasters", rasters=list(self.rasters))

    def add_query(self, query: str) -> None:
        if query in self.queries:
            self.queries.remove(query)
        self.queries.append(query)
        self.events.emit("queries", queries=list(self.queries))

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"version": SESSION_VERSION, "rasters": self.rasters, "model": self.model_spec,
                "device": self.device, "tile_ground_m": self.tile_ground_m,
                "indexing": self.indexing, "stac_items": self.stac_items, "queries": self.queries, "layers": self.layers, "view_bounds": self.view_bounds,
                "index": self.index_dir}

    @classmethod
    def from_dict(cls, data: dict) -> "Session":
        """A session from its JSON; every field is checked here, so a hand-edited or damaged
        file is one message naming the field rather than a failure later, at every start."""
        from ssjdn.core.errors import UserError
        if not isinstance(data, dict) or data.get("version") != SESSION_VERSION:
            raise UserError("This is not an SSJDN Explorer session file (or one from another "
                            "version); open a .json file saved with File > Save session.")
        try:
            return cls(rasters=_strings(data, "rasters"), model_spec=_model_spec(data),
                       device=_device(data), tile_ground_m=_tile_ground_m(data),
                       indexing=_indexing(data), stac_items=_stac_items(data),
                       queries=_strings(data, "queries"), layers=_layers(data),
                       view_bounds=_view_bounds(data), index_dir=_text(data, "index", None))
        except _BadField as exc:
            raise UserError(f"This session file is damaged: {exc}. Save the session again "
                            f"(File > Save session), or remove the file.") from None

    def save(self, path: str | os.PathLike) -> None:
        from ssjdn.core.files import atomic_path
        with atomic_path(path) as tmp:   # a crash never leaves half a session file
            tmp.write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Session":
        from ssjdn.core.errors import UserError
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"Cannot read session {path}: {exc}") from exc
        return cls.from_dict(data)


# -- checks of a session file's fields ---------------------------------------------------------
class _BadField(ValueError):
    """One field of a session file that has the wrong type or value."""


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _text(data: dict, key: str, default):
    value = data.get(key, default)
    if value is not default and not isinstance(value, str):
        raise _BadField(f'"{key}" must be text, not {value!r}')
    return value


def _strings(data: dict, key: str) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _BadField(f'"{key}" must be a list of texts, not {value!r}')
    return list(value)


def _model_spec(data: dict) -> str:
    from ssjdn.core.errors import UserError
    spec = _text(data, "model", SHIPPED)
    try:
        ModelSpec.parse(spec, strict=True)
    except UserError as exc:
        raise _BadField(f'"model": {exc}') from None
    return spec


def _device(data: dict) -> str:
    device = _text(data, "device", "auto")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise _BadField(f'"device" must be "auto", "cpu" or "cuda", not {device!r}')
    return device


def _tile_ground_m(data: dict) -> float | None:
    value = data.get("tile_ground_m")
    if value is None:
        return None
    if not _is_number(value) or value <= 0:
        raise _BadField(f'"tile_ground_m" must be a positive number of metres or null, not {value!r}')
    return float(value)


def _indexing(data: dict) -> dict:
    from ssjdn.core.errors import UserError
    value = data.get("indexing") or {}
    if not isinstance(value, dict) or not isinstance(value.get("nodata", {}), dict):
        raise _BadField(f'"indexing" must be a mapping of indexing settings, not {value!r}')
    try:
        return IndexingSettings.from_dict(value).to_dict()
    except (UserError, ValueError, TypeError) as exc:   # float("abc") in a hand-edited file
        raise _BadField(f'"indexing": {exc}') from None


def _stac_items(data: dict) -> dict[str, dict]:
    value = data.get("stac_items") or {}
    if not isinstance(value, dict) or not all(isinstance(v, dict) and "item" in v for v in value.values()):
        raise _BadField(f'"stac_items" must map raster paths to STAC item records, not {value!r}')
    return dict(value)


def _layers(data: dict) -> dict[str, dict]:
    layers = data.get("layers", {})
    if not isinstance(layers, dict):
        raise _BadField(f'"layers" must be a mapping of layer names, not {layers!r}')
    for name, layer in layers.items():
        if not isinstance(layer, dict):
            raise _BadField(f'"layers" entry {name!r} must be a mapping, not {layer!r}')
        if not isinstance(layer.get("visible", True), bool):
            raise _BadField(f'"layers" entry {name!r}: "visible" must be true or false')
        opacity = layer.get("opacity", 1.0)
        if not _is_number(opacity) or not 0 <= opacity <= 1:
            raise _BadField(f'"layers" entry {name!r}: "opacity" must be a number from 0 to 1')
    return dict(layers)


def _view_bounds(data: dict) -> list[float] | None:
    bounds = data.get("view_bounds")
    if bounds is None:
        return None
    if not isinstance(bounds, list) or len(bounds) != 4 or not all(_is_number(v) for v in bounds):
        raise _BadField(f'"view_bounds" must be 4 numbers (left, bottom, right, top) or null, not {bounds!r}')
    return [float(v) for v in bounds]
