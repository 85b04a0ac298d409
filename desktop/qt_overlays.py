"""What the app model draws on the map: the open rasters, the tile grid, the hits and score
heatmaps of the last search, the relevance marks, find-all's probability maps, the selected
tile and its salience map.

`QtMapOverlays` binds the model's components to the map view (napari style: it follows their
events and draws; the map lists each layer in the model's LayerList, whose states the Layers
panel and sessions set). The window only adds what is not the map's: the panels' text.
"""
from __future__ import annotations

from pathlib import Path

from ssjdn.desktop.qt_feedback import PROBABILITY_COLORMAP
from ssjdn.desktop.qt_map import QtMapView


class QtMapOverlays:
    def __init__(self, model, map_view: QtMapView) -> None:
        self.model, self.map_view = model, map_view
        # The score heatmaps' colour range (None: none drawn) and legend title, for the legend.
        self.heat_range: tuple[float, float] | None = None
        self.heat_title = ""
        model.events.connect("raster_opened", lambda info, note: map_view.add_raster(info))
        model.events.connect("raster_closed", self._raster_closed)
        model.events.connect("tiles", lambda paths: map_view.set_tile_grid(
            paths, lambda path: model.tile_grid(path)[1]))
        model.results.events.connect("results", lambda **_: self.draw_results())
        model.results.events.connect("likelihood", lambda **_: self.draw_results())
        model.selection.events.connect("selection", lambda record: map_view.select_tile(record.bounds, record.crs))
        model.feedback.events.connect("marks", lambda marks: self.draw_marks())
        model.feedback.events.connect("probabilities", self._probabilities)
        model.feedback.events.connect("detections", self._detections)

    def draw_results(self) -> None:
        """Hits and heatmaps of the last results as the likelihood threshold and scale say."""
        self.map_view.set_hits(self.model.results.map_hits())
        for name in [n for n in self.model.layers if n.startswith("heatmap:")]:
            self.map_view.remove_layer(name)
        # One colour scale for all rasters, so the same colour means the same score everywhere.
        grids, self.heat_range, self.heat_title = self.model.results.display_heatmaps()
        for path, grid in grids.items():
            self.map_view.set_georaster(f"heatmap:{path}", "heatmap", grid, "viridis",
                                        f"Score heatmap ({Path(path).name})", opacity=0.35,
                                        value_range=self.heat_range)

    def draw_marks(self) -> None:
        self.map_view.set_marks(self.model.feedback.mark_footprints())

    def draw_salience(self, key, colormap: str, label: str, opacity: float):
        """The selected tile's salience map `key` (None when there is none); returns its item,
        whose vmin / vmax the panel's legend shows."""
        georaster = self.model.selection.salience.get(key)
        if georaster is None:
            return None
        item = self.map_view.set_georaster("salience", "salience", georaster, colormap, f"Salience: {label}")
        self.model.layers.set_opacity("salience", opacity)
        return item

    def _raster_closed(self, path: str) -> None:
        self.map_view.remove_raster(path)
        self.map_view.set_hits(self.model.results.map_hits())
        for name in (f"heatmap:{path}", f"probability:{path}"):
            if name in self.model.layers:
                self.map_view.remove_layer(name)
        self.draw_marks()   # its marks leave the map (they stay in the model)

    def _probabilities(self, maps) -> None:
        for name in [n for n in self.model.layers if n.startswith("probability:")]:
            self.map_view.remove_layer(name)
        # Two heatmaps over each other read as mud: the score heatmap steps back (Layers panel
        # brings it back).
        for name, state in self.model.layers.items():
            if state.kind == "heatmap" and maps:
                self.model.layers.set_visible(name, False)

    def _detections(self, detections, threshold) -> None:
        """The threshold or the probabilities changed: redraw the map above the threshold."""
        for path, grid in self.model.feedback.thresholded_maps().items():
            self.map_view.set_georaster(f"probability:{path}", "probability", grid, PROBABILITY_COLORMAP,
                                        f"Find all: probability \u2265 {threshold:.2f} ({Path(path).name})",
                                        opacity=0.6, value_range=(0.0, 1.0))
