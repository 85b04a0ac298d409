"""The attribute table's rows, with no Qt: `AttributeTable`, a component of ExplorerModel.

One row per hit, per detection (the first TABLE_DETECTIONS) and per marked tile, with the tile's
centre and mark, as a GIS attribute table lists features; and the export of chosen rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssjdn.desktop.marks import NOT_RELEVANT, RELEVANT

TABLE_DETECTIONS = 1000    # detections listed in the attribute table (all are exported)
KIND_LABELS = {RELEVANT: "relevant", NOT_RELEVANT: "not relevant"}


@dataclass(frozen=True)
class AttributeRow:
    """One row of the attribute table: a hit, a detection or a marked tile."""
    kind: str                  # "hit", "detection" or "mark"
    rank: int | None           # place in its own list (hits by score, detections by probability)
    score: float | None        # cosine score of a hit, probability of a detection, None for a mark
    likelihood: float | None   # a hit's calibrated match likelihood, when the model has one
    tile_id: int
    raster_path: str
    lon: float                 # the tile's centre (NaN for a raster with no CRS)
    lat: float
    label: str                 # "relevant", "not relevant" or ""
    hit: object                # the Hit (score NaN for a mark), for zooming and export


class AttributeTable:
    def __init__(self, model, results, feedback) -> None:
        self.model = model               # the ExplorerModel: its index and open rasters
        self.results = results
        self.feedback = feedback

    def rows(self) -> list[AttributeRow]:
        """The hits, the first TABLE_DETECTIONS detections and the marked tiles of the open
        rasters, with each tile's centre and mark: what the attribute table lists."""
        from ssjdn.core.query.search import hits_for_ids
        from ssjdn.core.geo.tiling import tile_centres_wgs84
        groups = [("hit", self.results.hits), ("detection", self.feedback.detection_hits(TABLE_DETECTIONS))]
        if self.model.index is not None and self.feedback.marks:
            marked = list(self.feedback.marks)
            groups.append(("mark", [h for h in hits_for_ids(self.model.index, marked, [np.nan] * len(marked))
                                    if h.raster_path in self.model.rasters]))
        entries = [(kind, rank, hit) for kind, hits in groups for rank, hit in enumerate(hits, start=1)]
        centres = tile_centres_wgs84([hit for _, _, hit in entries])
        rows = []
        for (kind, rank, hit), (lon, lat) in zip(entries, centres):
            mark = self.feedback.marks.get(int(hit.tile_id))
            rows.append(AttributeRow(kind, None if kind == "mark" else rank,
                                     None if kind == "mark" else float(hit.score),
                                     getattr(hit, "likelihood", None), int(hit.tile_id), hit.raster_path,
                                     float(lon), float(lat), KIND_LABELS.get(mark, ""), hit))
        return rows

    def export(self, rows: list[AttributeRow], path: str) -> int:
        """Write chosen rows of the attribute table as GeoJSON / GeoPackage polygons with their
        kind and label (and lat / lon, score, likelihood as every export); returns how many."""
        from ssjdn.core.errors import UserError
        from ssjdn.core.geo.export import export_hits
        if not rows:
            raise UserError("No rows are selected: select rows of the table to export them.")
        export_hits([r.hit for r in rows], path, query=self.results.words or None,
                    extra=[{"kind": r.kind, "label": r.label} for r in rows])
        return len(rows)
