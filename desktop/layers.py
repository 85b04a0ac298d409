"""The map's layers in the app model (no Qt): what the Layers panel lists and a session saves.

The map view adds a layer here when it draws one and follows each layer's state; the Layers
panel, the window and a restored session change that state here, never on the map itself.
A session's states for layers not made yet (the tile grid and heatmaps appear once the index is
ready, rasters once they open) wait here and apply when each layer appears.

Events (keyword arguments): layers() a layer was added, redrawn or removed;
layer(layer) the named layer's visibility or opacity changed.
"""
from __future__ import annotations

from dataclasses import dataclass

from ssjdn.desktop.state import Events


@dataclass
class LayerState:
    """One entry of the layer panel. `kind` is raster, tiles, hits, heatmap, probability,
    salience, marks, selection, measure or background."""

    name: str
    kind: str
    visible: bool = True
    opacity: float = 1.0


class LayerList:
    """The layers by name (read like a dict of LayerState), with their saved states to come."""

    def __init__(self, saved: dict[str, dict] | None = None) -> None:
        self.events = Events()
        self._layers: dict[str, LayerState] = {}
        self._saved: dict[str, dict] = dict(saved or {})

    def __getitem__(self, name: str) -> LayerState:
        return self._layers[name]

    def __contains__(self, name) -> bool:
        return name in self._layers

    def __iter__(self):
        return iter(list(self._layers))

    def __len__(self) -> int:
        return len(self._layers)

    def items(self):
        return list(self._layers.items())

    def get(self, name: str, default=None):
        return self._layers.get(name, default)

    def add(self, name: str, label: str, kind: str, visible: bool = True, opacity: float = 1.0) -> LayerState:
        """A layer drawn (again): one already listed keeps its visibility and opacity; a new one
        takes the state a session saved for it, else `visible` and `opacity`."""
        state = self._layers.get(name)
        if state is None:
            saved = self._saved.pop(name, {})
            state = LayerState(label, kind, bool(saved.get("visible", visible)),
                               float(saved.get("opacity", opacity)))
            self._layers[name] = state
        state.name, state.kind = label, kind
        self.events.emit("layers")
        return state

    def remove(self, name: str) -> None:
        if self._layers.pop(name, None) is not None:
            self.events.emit("layers")

    def set_visible(self, name: str, visible: bool) -> None:
        self._layers[name].visible = bool(visible)
        self.events.emit("layer", layer=name)

    def set_opacity(self, name: str, opacity: float) -> None:
        self._layers[name].opacity = float(opacity)
        self.events.emit("layer", layer=name)

    # -- sessions ------------------------------------------------------------------------------
    def states(self) -> dict[str, dict]:
        """{name: {"visible": .., "opacity": ..}} of the layers now listed, as a session saves them."""
        return {name: {"visible": s.visible, "opacity": s.opacity} for name, s in self._layers.items()}

    def restore(self, saved: dict[str, dict]) -> None:
        """A session's layer states: applied now to the layers listed, kept for the others until
        they appear (replacing what an earlier session left waiting)."""
        for name, layer in saved.items():
            if name in self._layers:
                self.set_visible(name, layer.get("visible", True))
                self.set_opacity(name, layer.get("opacity", 1.0))
        self._saved = {name: layer for name, layer in saved.items() if name not in self._layers}
