"""Relevance feedback, with no Qt: `RelevanceFeedback`, a component of ExplorerModel.

Tiles marked relevant / not relevant, the refined search they make, find-all (a classifier
trained on the marks scores every tile: probabilities, probability maps, the threshold and the
detections above it), the labelled sets stored in the index, and their exports. The Find-all
panel, the Search panel's mark buttons, the map and the attribute table follow its events.

Tile ids are ids of one index (model and tiling): marks are dropped when another index opens.

Events (keyword arguments): marks(marks)   probabilities(maps)   detections(detections, threshold)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssjdn.desktop.results import hit_heatmaps, read_thumbnails
from ssjdn.desktop.state import Events

RELEVANT, NOT_RELEVANT = True, False


@dataclass(frozen=True)
class TileScores:
    """Find-all's probabilities as two arrays (ten million tiles as a dict would take a GB)."""
    tile_ids: np.ndarray     # int64 [N], ascending
    values: np.ndarray       # float [N]

    @classmethod
    def none(cls) -> "TileScores":
        return cls(np.zeros(0, np.int64), np.zeros(0))

    def __len__(self) -> int:
        return len(self.tile_ids)

    def as_dict(self) -> dict[int, float]:
        return dict(zip(self.tile_ids.tolist(), self.values.tolist()))


class RelevanceFeedback:
    def __init__(self, model, results) -> None:
        self.model = model               # the ExplorerModel: its index, loaded model and rasters
        self.results = results           # the words of the last search, to refine
        self.events = Events()
        self.marks: dict[int, bool] = {}          # tile id -> RELEVANT / NOT_RELEVANT
        self.marks_index_dir: Path | None = None   # tile ids are ids of this index
        self.probabilities = TileScores.none()   # find-all's P(relevant) of every tile
        self.probability_maps: dict = {}           # raster path -> GeoRaster of probabilities
        self.threshold = 0.5
        self.detections: list[tuple[int, float]] = []

    def index_opened(self, index_dir: Path) -> None:
        """Tile ids are per index (model and tiling): marks of another index would name other
        tiles. Saved labelled sets stay in the index they were made in."""
        if index_dir != self.marks_index_dir:
            self.marks_index_dir = index_dir
            if self.marks:
                self.set_marks({})

    def forget_scores(self) -> None:
        """The index closed: find-all's probabilities were of its tiles."""
        self.probabilities, self.probability_maps, self.detections = TileScores.none(), {}, []

    def forget_raster(self, path: str) -> None:
        """A raster closed: its probability map goes (refilter then drops its detections)."""
        self.probability_maps.pop(path, None)

    def refilter(self) -> None:
        """Keep the detections of the rasters open now."""
        if self.probabilities:
            self.set_threshold(self.threshold)

    def mark(self, tile_id: int, label: bool | None) -> None:
        """Mark a tile relevant (True), not relevant (False), or clear its mark (None)."""
        tile_id = int(tile_id)
        if label is None:
            self.marks.pop(tile_id, None)
        else:
            self.marks[tile_id] = bool(label)
        self.events.emit("marks", marks=dict(self.marks))

    def set_marks(self, marks: dict) -> None:
        self.marks = {int(t): bool(v) for t, v in marks.items()}
        self.events.emit("marks", marks=dict(self.marks))

    def marked(self, label: bool) -> list[int]:
        return [t for t, v in self.marks.items() if v is label]

    def mark_footprints(self) -> list[tuple]:
        """(bounds, crs, relevant) of the marked tiles on the open rasters, for the map."""
        if self.model.index is None or not self.marks:
            return []
        return [(r.bounds, r.crs, self.marks[r.tile_id]) for r in self.model.index.tiles(list(self.marks))
                if r.raster_path in self.model.rasters]

    def can_refine(self) -> bool:
        """A refined query needs a relevant tile, or words to move away from the others."""
        return bool(self.marked(RELEVANT)) or bool(self.marks and self.results.words)

    def can_find_all(self) -> bool:
        from ssjdn.core.query.feedback import MIN_POSITIVES
        return self.model.index is not None and len(self.marked(RELEVANT)) >= MIN_POSITIVES

    def find_all_job(self):
        """Train a classifier on the marks and score every tile; the job, given progress and a
        cancel event, returns (TileScores, {raster path: probability grid}), or None when
        cancelled. Past HEATMAP_TILE_BUDGET, grids go to the rasters of the best detections."""
        from ssjdn.core.errors import Cancelled
        from ssjdn.core.query.feedback import probability_heatmap, tile_probabilities
        from ssjdn.core.index.index_store import raster_id_of
        self.model.require_index()
        index, positives, negatives = self.model.index, self.marked(RELEVANT), self.marked(NOT_RELEVANT)
        heatmap_rasters, path_of = self.model.heatmap_rasters(), {v: k for k, v in self.model.indexed_raster_ids().items()}

        def work(progress=None, cancel=None):
            try:
                ids, probabilities = tile_probabilities(index, positives, negatives,
                                                        progress=progress, cancel=cancel)
            except Cancelled:
                return None
            best = ids[np.argsort(-probabilities, kind="stable")[:1000]]
            rasters = heatmap_rasters([path_of[r] for r in raster_id_of(best).tolist() if r in path_of])
            maps = {p: probability_heatmap(index, p, ids, probabilities) for p in rasters}
            return TileScores(ids, probabilities), maps

        return work

    def apply_find_all(self, result) -> None:
        if result is None:   # cancelled: what was shown stays
            return
        self.probabilities, self.probability_maps = result
        self.events.emit("probabilities", maps=self.probability_maps)
        self.set_threshold(self.threshold)

    def set_threshold(self, threshold: float) -> None:
        """Keep the tiles of the open rasters at or above `threshold`, most probable first."""
        from ssjdn.core.index.index_store import raster_id_of
        self.threshold = float(threshold)
        ids, probabilities = self.probabilities.tile_ids, self.probabilities.values
        on_map = list(self.model.indexed_raster_ids().values())
        keep = (probabilities >= self.threshold) & np.isin(raster_id_of(ids), on_map)
        ids, probabilities = ids[keep], probabilities[keep]
        order = np.lexsort((ids, -probabilities))      # most probable first, then by id
        self.detections = list(zip(ids[order].tolist(), probabilities[order].tolist()))
        self.events.emit("detections", detections=self.detections, threshold=self.threshold)

    def thresholded_maps(self) -> dict:
        """The probability grids with cells under the threshold blanked (NaN), for display."""
        from ssjdn.core.geo.raster import GeoRaster
        result = {}
        for path, grid in self.probability_maps.items():
            array = np.where(grid.array >= self.threshold, grid.array, np.nan).astype(np.float32)
            result[path] = GeoRaster(array, grid.transform, grid.crs, grid.nodata)
        return result

    def detection_hits(self, limit: int | None = None) -> list:
        """The detections as search hits whose score is the probability."""
        from ssjdn.core.query.search import hits_for_ids
        chosen = self.detections[:limit] if limit else self.detections
        if self.model.index is None or not chosen:
            return []
        return hits_for_ids(self.model.index, [t for t, _ in chosen], [p for _, p in chosen])

    def refine_job(self, k: int = 20, with_heatmap: bool = True):
        """Search again with the last words moved towards the relevant tiles and away from the
        not relevant ones (Rocchio in the joint space); the marks stay as they are.

        The hits show what is new: k unmarked candidates first, then the marked tiles the
        refined query also found (the refined query sits near them, so they would otherwise
        take the top places and push the new candidates down)."""
        from ssjdn.core.errors import UserError
        from ssjdn.core.query.feedback import refine_query
        from ssjdn.core.query.search import search_vector
        self.model.require_index()
        positives, negatives = self.marked(RELEVANT), self.marked(NOT_RELEVANT)
        if not self.can_refine():
            raise UserError("Mark at least one tile relevant (+) to refine the search.")
        index, model, words = self.model.index, self.model.loaded.model, self.results.words or None
        marked = set(self.marks)
        ask, keep = self.model.fetch_plan(k + len(marked))
        shown_words = self.results.words
        records = {r.path: r for r in index.rasters()}
        heatmap_rasters = self.model.heatmap_rasters()
        label = f"{self.results.words or 'examples'} + {len(positives)} relevant, {len(negatives)} not relevant"

        def work():
            query = refine_query(index, model, words, positives, negatives)   # once, for both
            found = keep(search_vector(index, query, ask))
            hits = ([h for h in found if h.tile_id not in marked][:k] +
                    [h for h in found if h.tile_id in marked])
            heat = hit_heatmaps(index, records, query, hits, heatmap_rasters) if with_heatmap else {}
            return label, shown_words, hits, heat, read_thumbnails(hits)

        return work

    # == labelled sets =========================================================================
    def label_sets(self) -> list[tuple[str, int, int]]:
        """(name, relevant, not relevant) of the sets stored in the index."""
        return self.model.index.label_sets() if self.model.index is not None else []

    def save_label_set(self, name: str, overwrite: bool = False) -> None:
        from ssjdn.core.errors import UserError
        self.model.require_index()
        if not self.marks:
            raise UserError("There are no marks to save: mark tiles relevant (+) or not relevant (-) first.")
        self.model.index.save_label_set(name, self.marks, overwrite=overwrite)

    def load_label_set(self, name: str) -> None:
        self.model.require_index()
        self.set_marks(self.model.index.load_label_set(name))

    def export_marks(self, path: str, name: str | None = None) -> None:
        """The marks as GeoJSON / GeoPackage polygons with their label."""
        from ssjdn.core.errors import UserError
        from ssjdn.core.query.labels import export_labels
        self.model.require_index()
        if not self.marks:
            raise UserError("There are no marks to export: mark tiles relevant (+) or not relevant (-) first.")
        export_labels(self.model.index, self.marks, path, name=name)

    def import_marks(self, path: str) -> int:
        """Mark the tiles a GIS file's points / polygons cover (its labels win over existing
        marks); returns how many tiles it marked."""
        from ssjdn.core.query.labels import import_labels
        self.model.require_index()
        imported = import_labels(self.model.index, path)
        self.set_marks({**self.marks, **imported})
        return len(imported)

    def export_detections(self, path: str) -> int:
        """Write the detections (tiles at or above the threshold) with their probability."""
        from ssjdn.core.errors import UserError
        from ssjdn.core.geo.export import export_hits
        hits = self.detection_hits()
        if not hits:
            raise UserError("There are no detections to export: run Find all, or lower the threshold.")
        export_hits(hits, path, query=self.results.words or None,
                    extra=[{"probability": round(float(h.score), 6)} for h in hits])
        return len(hits)
