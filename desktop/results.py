"""The results of the last search, with no Qt: `SearchResults`, a component of ExplorerModel.

The hits, heatmaps and thumbnails of the last text search, similar-tiles search or refinement
(`show` takes a search job's result), and how they are displayed: the match likelihood
threshold and colour scale of a calibrated model's text searches. The Search panel, the map and
the attribute table follow its events.

Events (keyword arguments): results(query, hits, heatmaps, thumbnails)
likelihood(threshold, absolute)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ssjdn.core.model.calibration import GOOD_MATCH
from ssjdn.desktop.resources import THUMB_PX
from ssjdn.desktop.state import Events


class SearchResults:
    def __init__(self, model) -> None:
        self.model = model               # the ExplorerModel: its index, loaded model and rasters
        self.events = Events()
        self.hits: list = []
        self.last_query = ""             # what the result list is for, as shown
        self.words = ""                  # the words of the last text search ("" after 'similar')
        self.heatmaps: dict = {}         # raster path -> GeoRaster of the last query's scores
        self.thumbnails: list = []
        self.unread_note: str | None = None   # the words of the last search the model ignored
        # Match likelihood (a calibrated model's text searches): hits under the threshold are
        # not drawn, the heatmap is blank there, and colours may use the absolute 0..1 scale.
        self.likelihood_threshold = GOOD_MATCH
        self.absolute_scale = True

    def search_job(self, query: str, k: int = 20, with_heatmap: bool = True):
        """A text search (recorded in the session's history): hits, heatmaps, thumbnails."""
        from ssjdn.core.query.search import query_vector, search_vector, with_likelihoods
        self.model.require_index()
        query = query.strip()
        (index, model), (ask, keep) = (self.model.index, self.model.loaded.model), self.model.fetch_plan(k)
        records = {r.path: r for r in index.rasters()}
        heatmap_rasters = self.model.heatmap_rasters()
        self.model.session.add_query(query)

        def work():
            text = query_vector(model, query)   # encoded once, for the hits and every heatmap
            hits = keep(with_likelihoods(search_vector(index, text, ask), model))
            heat = hit_heatmaps(index, records, text, hits, heatmap_rasters) if with_heatmap else {}
            return query, query, hits, heat, read_thumbnails(hits)

        return work

    def similar_job(self, tile_id: int, k: int = 20):
        from ssjdn.core.query.search import search_similar
        self.model.require_index()
        (index, model), (ask, keep) = (self.model.index, self.model.loaded.model), self.model.fetch_plan(k)

        def work():
            hits = keep(search_similar(index, model, tile_id, k=ask))
            return f"tiles like tile {tile_id & 0xFFFFFFFF}", "", hits, {}, read_thumbnails(hits)

        return work

    def show(self, result) -> None:
        """Take a search job's result: (label, words, hits, heatmaps, thumbnails)."""
        from ssjdn.core.query.search import unread_words_note
        self.last_query, self.words, self.hits, self.heatmaps, self.thumbnails = result
        # Once per result (not per redraw of the line), with the model that searched.
        loaded = self.model.loaded
        self.unread_note = unread_words_note(loaded.model, self.words) if loaded else None
        self.events.emit("results", query=self.last_query, hits=self.hits, heatmaps=self.heatmaps,
                         thumbnails=self.thumbnails)

    # == match likelihood ======================================================================
    def results_calibrated(self) -> bool:
        """Whether the shown results carry likelihoods (a text search of a calibrated model;
        refined and image queries are not what the calibration was fitted on)."""
        return self.model.calibration is not None and any(h.likelihood is not None for h in self.hits)

    def set_likelihood_display(self, threshold: float | None = None, absolute: bool | None = None) -> None:
        if threshold is not None:
            self.likelihood_threshold = float(threshold)
        if absolute is not None:
            self.absolute_scale = bool(absolute)
        self.events.emit("likelihood", threshold=self.likelihood_threshold, absolute=self.absolute_scale)

    def map_hits(self) -> list:
        """The hits to draw on the map: those at or above the likelihood threshold when the
        results have likelihoods, else all of them."""
        if not self.results_calibrated():
            return list(self.hits)
        return [h for h in self.hits if h.likelihood is not None and h.likelihood >= self.likelihood_threshold]

    def display_heatmaps(self) -> tuple[dict, tuple[float, float] | None, str]:
        """({raster path: grid to draw}, colour range or None for the grids' own, legend title).

        With likelihoods the grids are likelihoods, blank (NaN) under the threshold so the
        imagery shows there; the range is 0..1 on the absolute scale, else what remains."""
        from ssjdn.core.geo.raster import GeoRaster
        if not self.results_calibrated():
            return dict(self.heatmaps), finite_range([h.array for h in self.heatmaps.values()]), "tile score"
        grids = {}
        for path, heat in self.heatmaps.items():
            likelihood = self.model.calibration.likelihood(heat.array)
            shown = np.where(likelihood >= self.likelihood_threshold, likelihood, np.nan).astype(np.float32)
            grids[path] = GeoRaster(shown, heat.transform, heat.crs, heat.nodata)
        value_range = (0.0, 1.0) if self.absolute_scale else finite_range([g.array for g in grids.values()])
        return grids, value_range, "match likelihood"

    def text(self, marks) -> str:
        """The line above the hit list: how many, whether any is a good match, and how many of
        them (tile ids in `marks`) are marked: a refinement lists them after the new ones."""
        flags = [int(h.tile_id) in marks for h in self.hits]
        marked, text = sum(flags), self._count_text()
        if marked and flags == sorted(flags):   # every marked hit after every new one
            text += f" ({len(flags) - marked} new first, then the {marked} marked, dimmed)"
        elif marked:
            text += f" ({marked} of them marked, dimmed)"
        return text

    def _count_text(self) -> str:
        text = self._hits_text()
        return f"{text.rstrip('.')}. {self.unread_note}" if self.unread_note else text

    def _hits_text(self) -> str:
        query, hits = self.last_query, self.hits
        if not hits:
            return f"No tiles for \u201c{query}\u201d"
        if not self.results_calibrated():
            return f"{len(hits)} tiles for \u201c{query}\u201d"
        passing = len(self.map_hits())
        best = max(h.likelihood for h in hits)
        if passing == 0:
            return (f"No good match in this area for \u201c{query}\u201d: the best tile's match "
                    f"likelihood is {best:.0%}, under the {self.likelihood_threshold:.0%} threshold.")
        return (f"{passing} of {len(hits)} tiles for \u201c{query}\u201d reach a "
                f"{self.likelihood_threshold:.0%} match likelihood")

    # == export ================================================================================
    def export_hits(self, path: str) -> None:
        from ssjdn.core.errors import UserError
        from ssjdn.core.geo.export import export_hits
        if not self.hits:
            raise UserError("There are no hits to export: run a search first.")
        export_hits(self.hits, path, query=self.last_query)

    def export_heatmap(self, path: str) -> None:
        """One GeoTIFF per raster: the path as given for the first, name-suffixed for the others."""
        from ssjdn.core.errors import UserError
        from ssjdn.core.geo.export import write_geotiff
        if not self.heatmaps:
            raise UserError("There is no heatmap: search with 'Score heatmap' checked.")
        target = Path(path)
        for i, heat in enumerate(self.heatmaps.values()):
            write_geotiff(heat, target if i == 0 else target.with_name(f"{target.stem}_{i + 1}{target.suffix}"))


    def forget_raster(self, path: str) -> None:
        """A raster closed: its hits and heatmap leave the results."""
        self.hits = [h for h in self.hits if h.raster_path != path]
        self.heatmaps.pop(path, None)


def finite_range(arrays) -> tuple[float, float] | None:
    """(min, max) over the finite values of some arrays, None when there are none."""
    finite = [a[np.isfinite(a)] for a in arrays]
    finite = [a for a in finite if a.size]
    if not finite:
        return None
    return float(min(a.min() for a in finite)), float(max(a.max() for a in finite))


def hit_heatmaps(index, records: dict, vector, hits, heatmap_rasters) -> dict:
    """Each chosen raster's heatmap of `vector`, the very vector that ranked `hits`:
    heatmap_rasters picks the rasters (ExplorerModel.heatmap_rasters), records maps path -> record."""
    from ssjdn.core.query.search import vector_heatmap
    return {path: vector_heatmap(index, records[path], vector)
            for path in heatmap_rasters([h.raster_path for h in hits])}


def read_thumbnails(hits) -> list:
    """Thumbnails of hits as (RGB uint8 [3, h, w], tile rect in it as x, y, w, h) or None.

    A tile smaller than the thumbnail is shown in up to 3x its size of surroundings, outlined:
    a 15 px tile of a 5 m scene blown up alone is a blur nobody recognises. Read in a worker;
    the view makes its images from them.
    """
    from rasterio.windows import Window
    from ssjdn.core.geo.raster import raster_info, read_window_rgb
    thumbs = []
    for hit in hits:
        try:
            info = raster_info(hit.raster_path)
            window = hit.window
            side = max(int(window.width), int(window.height))
            context = min(3.0, max(1.0, THUMB_PX / side))
            pad = int(round(side * (context - 1) / 2))
            col0, row0 = max(0, int(window.col_off) - pad), max(0, int(window.row_off) - pad)
            col1 = min(info.width, int(window.col_off + window.width) + pad)
            row1 = min(info.height, int(window.row_off + window.height) + pad)
            rgb = read_window_rgb(info, Window(col0, row0, col1 - col0, row1 - row0), out_size=THUMB_PX)
            scale = rgb.shape[2] / (col1 - col0)
            rect = ((window.col_off - col0) * scale, (window.row_off - row0) * scale,
                    window.width * scale, window.height * scale)
            thumbs.append((rgb, rect))
        except Exception:  # noqa: BLE001 - a missing thumbnail must not lose the results
            thumbs.append(None)
    return thumbs
