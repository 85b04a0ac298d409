"""The explorer's state and logic with no Qt (the napari rule): `ExplorerModel`.

It holds what the app has loaded and found: the model and the index, the open rasters, the hits
and heatmaps of the last search, the selected tile and its salience maps, and the relevance
feedback (tiles marked relevant / not relevant, the find-all probabilities and threshold).
Qt views listen to its `events` and forward the user's actions to its methods; tests drive it
with no window.

Slow work is not run here but handed out: a `*_job` method returns a plain function that the
caller runs off the GUI thread (the window in a QtFunctionWorker, a test directly) and whose
result goes back to the matching `apply_*` / `show_*` method on the caller's thread. A result
that arrives for a model, tile or tile size the user has since left is dropped there.

Events (keyword arguments):
  raster_opened(info, note)   raster_closed(path)   model_loading(spec)   model(loaded)
  index(index)   tiles(windows_by_raster)   results(query, hits, heatmaps, thumbnails)
  selection(record)   salience(tile_id, maps)   marks(marks)   probabilities(maps)
  detections(detections, threshold)   likelihood(threshold, absolute)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssjdn.core.model.calibration import GOOD_MATCH, calibration_of
from ssjdn.desktop import models as model_choices
from ssjdn.desktop.geo import MapFrame, format_lonlat
from ssjdn.desktop.layers import LayerList
from ssjdn.desktop.resources import THUMB_PX
from ssjdn.desktop.settings import index_dir_for
from ssjdn.desktop.state import Events, Session

# The selected tile's query map in `salience`, beside the (kind, direction, scale) SEM/SSM keys.
QUERY_MAP_KEY = ("query", "", 0)
COARSE_PIXEL_M = 2.0  # pixels coarser than this get a note about matching quality
CPU_CHUNK_PX = 128    # read-chunk side when indexing on a CPU: frequent progress, same speed
RELEVANT, NOT_RELEVANT = True, False
# A heatmap scores every tile of its raster, reading all its vectors (a million-tile raster:
# 1 GB, 1.5-6 s on 2 cores): past this many tiles in the open rasters, only the best hits'
# rasters get one, so a search of an archive waits for one such raster, not ten.
HEATMAP_TILE_BUDGET = 1_000_000


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


class ExplorerModel:
    def __init__(self, session: Session | None = None, auto_index: bool = True) -> None:
        self.session = session or Session()
        # Index the open rasters by itself once a model is loaded or a raster opens (a script or
        # a test may want to start the build itself).
        self.auto_index = auto_index
        self.events = Events()
        self.layers = LayerList(self.session.layers)   # the map's layers, as sessions save them
        self.loaded = None               # models.LoadedModel
        self.index = None                # ssjdn.core.index.index_store.TileIndex
        self.index_stats = None
        self.rasters: dict = {}          # raster path -> RasterInfo of the open rasters
        self.frame = MapFrame()          # the map's CRS: the first open raster's
        # Open rasters the index holds: path -> raster id. Their tile grids load on demand
        # (index.raster_grid): an archive raster's grid is a million tiles.
        self._indexed: dict[str, int] = {}
        self.coarse_notes: dict[str, str] = {}
        self.hits: list = []
        self.last_query = ""             # what the result list is for, as shown
        self.words = ""                  # the words of the last text search ("" after 'similar')
        self.heatmaps: dict = {}         # raster path -> GeoRaster of the last query's scores
        self.thumbnails: list = []
        self.selected_tile = None        # TileRecord
        self.salience: dict = {}
        self.pending_query: str | None = None   # a restored session's last query, run when indexed
        # Relevance feedback.
        self.marks: dict[int, bool] = {}          # tile id -> RELEVANT / NOT_RELEVANT
        self.marks_index_dir: Path | None = None   # tile ids are ids of this index
        self.probabilities = TileScores.none()   # find-all's P(relevant) of every tile
        self.probability_maps: dict = {}           # raster path -> GeoRaster of probabilities
        self.threshold = 0.5
        self.detections: list[tuple[int, float]] = []
        # Match likelihood (a calibrated model's text searches): hits under the threshold are
        # not drawn, the heatmap is blank there, and colours may use the absolute 0..1 scale.
        self.likelihood_threshold = GOOD_MATCH
        self.absolute_scale = True
        self._react_to_the_session()

    # == app policy: what follows what ========================================================
    # The model decides when to load, index or search; the window runs what it asks for (its
    # events load_requested, index_requested, search_requested) off the GUI thread.
    def _react_to_the_session(self) -> None:
        self.session.events.connect("model", lambda spec: self.events.emit("load_requested"))
        self.session.events.connect("device", lambda device: self.events.emit("load_requested"))
        self.session.events.connect("tile_size", lambda tile_ground_m: self._index_again())
        self.session.events.connect("indexing", lambda indexing: self._index_again())

    def _index_again(self) -> None:
        """The tiling or the indexing settings changed: the index is another one now. A build
        running for the old one is stale; the open rasters are indexed again (only what changed
        is encoded again)."""
        self.drop_index()
        self.events.emit("index_requested", stale=True)

    def _index_if_auto(self) -> None:
        if self.auto_index and self.loaded is not None and self.session.rasters:
            self.events.emit("index_requested", stale=False)

    def choose_model(self, spec: str, device: str) -> None:
        """Use this model on this device: a change loads it (and then indexes the open rasters
        with it); the same model indexes what is open now."""
        self.session.set_device(device)
        if spec != self.session.model_spec:
            self.session.set_model(spec)
        elif self.loaded is not None:
            self.events.emit("index_requested", stale=False)

    def indexing_ended(self) -> None:
        """No build runs or waits any more: a restored session's last query runs again."""
        if self.pending_query and self.index is not None:
            query, self.pending_query = self.pending_query, None
            self.events.emit("search_requested", query=query)

    # == model =================================================================================
    def load_job(self):
        """Forget the index and the model (a build or search still running for them is stale)
        and return the job that loads the session's model and device."""
        spec, device = self.session.model_spec, self.session.device
        self.drop_index()
        self.loaded = None
        self.events.emit("model_loading", spec=spec)

        def work():
            from ssjdn.core.model.fast_text import query_encoder
            loaded = model_choices.load_choice(spec, device)
            query_encoder(loaded.model)   # made here, so the first search waits for no export
            return loaded, spec, device

        return work

    def apply_loaded(self, result) -> bool:
        """Take a loaded model if the session still asks for it; False if it is stale."""
        loaded, spec, device = result
        if (spec, device) != (self.session.model_spec, self.session.device):
            return False
        self.loaded = loaded
        self.events.emit("model", loaded=loaded)
        self._index_if_auto()
        return True

    # == rasters ===============================================================================
    def open_rasters(self, paths: list[str]) -> tuple[list, list]:
        """Open rasters and index them: (RasterInfo of each opened, the exception of each that
        failed); a bad file does not stop the others."""
        opened, failed = [], []
        for path in paths:
            try:
                opened.append(self.open_raster(path))
            except Exception as exc:  # noqa: BLE001 - the caller names each failure
                failed.append(exc)
        if opened:
            self._index_if_auto()
        return opened, failed

    def open_raster(self, path: str):
        """Open one raster (UserError for a bad file); returns its RasterInfo."""
        from ssjdn.core.geo.raster import raster_info
        info = raster_info(path)
        if info.path not in self.rasters:
            if not self.rasters:
                self.frame = MapFrame.for_raster(info)
            self.rasters[info.path] = info
            self.events.emit("raster_opened", info=info, note=self._coarse_note(info))
        self.session.add_raster(info.path)
        return info

    def _coarse_note(self, info) -> str | None:
        """Say when a raster is much coarser than the imagery models are trained on (0.3 m)."""
        pixel = info.pixel_size_m
        if pixel is None or min(pixel) <= COARSE_PIXEL_M:
            return None
        self.coarse_notes[info.path] = (
            f"{elide_middle(Path(info.path).name)} has {min(pixel):.1f} m pixels; models are trained on 0.3 m "
            f"imagery, so expect land cover rather than objects.")
        return self.coarse_notes[info.path]

    def close_raster(self, path: str) -> None:
        """Take a raster away; its tiles stay in the cached index for when it returns."""
        self.rasters.pop(path, None)
        if not self.rasters:
            self.frame = MapFrame()
        self.session.remove_raster(path)
        self._indexed.pop(path, None)
        self.hits = [h for h in self.hits if h.raster_path != path]
        self.heatmaps.pop(path, None)
        self.probability_maps.pop(path, None)
        self.events.emit("raster_closed", path=path)
        self.events.emit("tiles", paths=self.indexed_rasters())
        if self.probabilities:
            self.set_threshold(self.threshold)   # its tiles leave the detections

    # == index =================================================================================
    def current_index_dir(self) -> Path:
        return index_dir_for(self.loaded.model.fingerprint, self.session.tile_ground_m)

    def can_index(self) -> bool:
        return self.loaded is not None and bool(self.session.rasters)

    def index_job(self):
        """(work(progress, cancel), token) building or resuming the open rasters' index; pass the
        token back to apply_index with the IndexStats."""
        from ssjdn.core.index import index_store, indexing
        index_dir, rasters, model = self.current_index_dir(), self.session.index_inputs(), self.loaded.model
        settings = self.session.indexing_settings.build_kwargs(self.session.tile_ground_m)
        # The engine reports progress once per encoded read chunk. On a CPU a default chunk
        # (1024 px) can hold the whole sample scene, so the bar would sit at 0 % for minutes;
        # small chunks cost nothing there (encoding dominates), and on a GPU the default stays.
        chunking = {} if model.device.type == "cuda" else {"chunk_px": CPU_CHUNK_PX}

        paths = list(self.session.rasters)

        def work(progress=None, cancel=None):
            if index_store.folder_is_writable(index_dir) or not index_dir.is_dir():
                return indexing.build_index(index_dir, rasters, model, progress=progress,
                                            cancel=cancel, **settings, **chunking)
            return complete_read_only_index(index_dir, paths, model)

        self.drop_index()
        return work, (index_dir, model)

    def apply_index(self, stats, token) -> bool:
        """Open the built index unless the user has since left its model or tile size."""
        from ssjdn.core.index.index_store import TileIndex
        index_dir, model = token
        if self.loaded is None or model is not self.loaded.model or index_dir != self.current_index_dir():
            return False
        self.index_stats = stats
        self.index = TileIndex.open(index_dir, model=model)
        if index_dir != self.marks_index_dir:
            # Tile ids are per index (model and tiling): marks of another index would name other
            # tiles. Saved labelled sets stay in the index they were made in.
            self.marks_index_dir = index_dir
            if self.marks:
                self.set_marks({})
        self._indexed = {r.path: r.raster_id for r in self.index.rasters() if r.path in self.rasters}
        self.events.emit("index", index=self.index)
        self.events.emit("tiles", paths=self.indexed_rasters())
        return True

    def drop_index(self) -> None:
        # Not index.close(): a search or salience job may still hold it; its connection closes
        # when the last reference goes.
        had = self.index is not None
        self.index = None
        self._indexed = {}
        self.probabilities, self.probability_maps, self.detections = TileScores.none(), {}, []
        if had:
            self.events.emit("index", index=None)

    def indexed_rasters(self) -> list[str]:
        """The open rasters that the index holds, in the session's order."""
        return [path for path in self.session.rasters if path in self._indexed]

    def tile_grid(self, path: str):
        """(tile ids [N], windows [N, 4] as col, row, width, height) of an indexed open raster."""
        return self.index.raster_grid(self._indexed[path])

    def ready_text(self) -> tuple[bool, str]:
        """Whether search can run, and the line the search panel shows about it."""
        if self.index is None:
            return False, ("Open a raster and build its index to search." if self.loaded
                           else "Loading the model…")
        # The cached index also holds rasters closed since: count only what is on the map.
        tiles = sum(r.n_indexed for r in self.index.rasters() if r.path in self._indexed)
        text = f"{tiles} tiles indexed with {self.loaded.label}."
        if self.calibration is None:   # said here once; the hits then show raw scores only
            text += " This model has no calibration, so no match likelihood is shown."
        if self.index_stats is not None and getattr(self.index_stats, "cancelled", False):
            text += " Indexing was cancelled: Index > Build / resume index finishes it."
        notes = [self.coarse_notes[p] for p in self.session.rasters if p in self.coarse_notes]
        return True, " ".join([text] + notes)

    def tile_at(self, x: float, y: float) -> int | None:
        """Id of the indexed tile under a map point (the one whose centre is nearest)."""
        for path in self.indexed_rasters():
            info = self.rasters[path]
            rx, ry = self.frame.to_crs(x, y, info.crs)
            col, row = ~info.transform @ (rx, ry)
            if not (0 <= col < info.width and 0 <= row < info.height):
                continue   # off this raster: leave its grid unloaded
            ids, windows = self.tile_grid(path)
            inside = ((windows[:, 0] <= col) & (col < windows[:, 0] + windows[:, 2]) &
                      (windows[:, 1] <= row) & (row < windows[:, 1] + windows[:, 3]))
            if inside.any():
                candidates = np.flatnonzero(inside)
                centres = windows[candidates, :2] + windows[candidates, 2:] / 2
                best = candidates[np.argmin(((centres - (col, row)) ** 2).sum(axis=1))]
                return int(ids[best])
        return None

    def _require_index(self) -> None:
        from ssjdn.core.errors import UserError
        if self.index is None:
            raise UserError("There is no index yet: open a raster and wait for indexing to end.")

    # == search ================================================================================
    def _fetch(self, k: int):
        """(how many to ask the index for, a filter keeping the first k hits on the map).

        The index may also hold rasters closed since (it is per model, not per raster set):
        ask for more, so k remain after keeping those on the map. The filter runs in the job."""
        open_rasters = set(self.session.rasters)
        others = sum(r.n_indexed for r in self.index.rasters() if r.path not in open_rasters)
        ask = k if others == 0 else k + min(others, 4 * k)
        return ask, lambda hits: [h for h in hits if h.raster_path in open_rasters][:k]

    def search_job(self, query: str, k: int = 20, with_heatmap: bool = True):
        """A text search (recorded in the session's history): hits, heatmaps, thumbnails."""
        from ssjdn.core.model.fast_text import encode_query
        from ssjdn.core.query.search import clean_query, search_text, vector_heatmap
        self._require_index()
        query = query.strip()
        (index, model), (ask, keep) = (self.index, self.loaded.model), self._fetch(k)
        records = {r.path: r for r in index.rasters()}
        heatmap_rasters = self._heatmap_rasters()
        self.session.add_query(query)

        def work():
            hits = keep(search_text(index, model, query, k=ask))
            heat = {}
            if with_heatmap:   # the query encoded once for every raster's heatmap
                text = encode_query(model, clean_query(query))[0]
                heat = {p: vector_heatmap(index, records[p], text)
                        for p in heatmap_rasters([h.raster_path for h in hits])}
            return query, query, hits, heat, read_thumbnails(hits)

        return work

    def _heatmap_rasters(self):
        """A function of the raster paths of a search's hits (best first) giving the rasters to
        draw its heatmap on: every open raster while they hold HEATMAP_TILE_BUDGET tiles or
        fewer, else those of the best hits, best first, within the budget (always the first's)."""
        paths = self.indexed_rasters()
        tiles = {r.path: r.n_indexed for r in self.index.rasters() if r.path in paths}

        def choose(ranked_paths) -> list[str]:
            if sum(tiles.values()) <= HEATMAP_TILE_BUDGET:
                return paths
            chosen, total = [], 0
            for path in dict.fromkeys(ranked_paths):
                if path in tiles and (not chosen or total + tiles[path] <= HEATMAP_TILE_BUDGET):
                    chosen.append(path)
                    total += tiles[path]
            return chosen

        return choose

    def similar_job(self, tile_id: int, k: int = 20):
        from ssjdn.core.query.search import search_similar
        self._require_index()
        (index, model), (ask, keep) = (self.index, self.loaded.model), self._fetch(k)

        def work():
            hits = keep(search_similar(index, model, tile_id, k=ask))
            return f"tiles like tile {tile_id & 0xFFFFFFFF}", "", hits, {}, read_thumbnails(hits)

        return work

    def refine_job(self, k: int = 20, with_heatmap: bool = True):
        """Search again with the last words moved towards the relevant tiles and away from the
        not relevant ones (Rocchio in the joint space); the marks stay as they are.

        The hits show what is new: k unmarked candidates first, then the marked tiles the
        refined query also found (the refined query sits near them, so they would otherwise
        take the top places and push the new candidates down)."""
        from ssjdn.core.errors import UserError
        from ssjdn.core.query.feedback import refine_query, search_refined
        from ssjdn.core.query.search import vector_heatmap
        self._require_index()
        positives, negatives = self.marked(RELEVANT), self.marked(NOT_RELEVANT)
        if not self.can_refine():
            raise UserError("Mark at least one tile relevant (+) to refine the search.")
        index, model, words = self.index, self.loaded.model, self.words or None
        marked = set(self.marks)
        ask, keep = self._fetch(k + len(marked))
        shown_words = self.words
        records = {r.path: r for r in index.rasters()}
        heatmap_rasters = self._heatmap_rasters()
        label = f"{self.words or 'examples'} + {len(positives)} relevant, {len(negatives)} not relevant"

        def work():
            found = keep(search_refined(index, model, words, positives, negatives, k=ask))
            hits = ([h for h in found if h.tile_id not in marked][:k] +
                    [h for h in found if h.tile_id in marked])
            heat = {}
            if with_heatmap:
                query = refine_query(index, model, words, positives, negatives)
                heat = {p: vector_heatmap(index, records[p], query)
                        for p in heatmap_rasters([h.raster_path for h in hits])}
            return label, shown_words, hits, heat, read_thumbnails(hits)

        return work

    def show_results(self, result) -> None:
        """Take a search job's result: (label, words, hits, heatmaps, thumbnails)."""
        self.last_query, self.words, self.hits, self.heatmaps, self.thumbnails = result
        self.events.emit("results", query=self.last_query, hits=self.hits, heatmaps=self.heatmaps,
                         thumbnails=self.thumbnails)

    # == match likelihood ======================================================================
    @property
    def calibration(self):
        """The loaded model's calibration, None when it has none (no likelihood is shown)."""
        return calibration_of(self.loaded.model) if self.loaded is not None else None

    def results_calibrated(self) -> bool:
        """Whether the shown results carry likelihoods (a text search of a calibrated model;
        refined and image queries are not what the calibration was fitted on)."""
        return self.calibration is not None and any(h.likelihood is not None for h in self.hits)

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
            likelihood = self.calibration.likelihood(heat.array)
            shown = np.where(likelihood >= self.likelihood_threshold, likelihood, np.nan).astype(np.float32)
            grids[path] = GeoRaster(shown, heat.transform, heat.crs, heat.nodata)
        value_range = (0.0, 1.0) if self.absolute_scale else finite_range([g.array for g in grids.values()])
        return grids, value_range, "match likelihood"

    def results_text(self) -> str:
        """The line above the hit list: how many, whether any is a good match, and how many of
        them are new (a refinement lists the marked tiles after the new ones)."""
        flags = [int(h.tile_id) in self.marks for h in self.hits]
        marked, text = sum(flags), self._count_text()
        if marked and flags == sorted(flags):   # every marked hit after every new one
            text += f" ({len(flags) - marked} new first, then the {marked} marked, dimmed)"
        elif marked:
            text += f" ({marked} of them marked, dimmed)"
        return text

    def _count_text(self) -> str:
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

    # == the selected tile =====================================================================
    def select_tile(self, tile_id: int):
        """Select a tile; returns the job computing its SEM/SSM maps, and while words are being
        searched for, the map of where they match (QUERY_MAP_KEY). None without an index."""
        from ssjdn.core.query.search import tile_query_map, tile_salience
        if self.index is None:
            return None
        self.selected_tile = self.index.tile(tile_id)
        self.events.emit("selection", record=self.selected_tile)
        index, model, words = self.index, self.loaded.model, self.words

        def work():
            maps = tile_salience(index, model, tile_id)
            if words:
                maps[QUERY_MAP_KEY] = tile_query_map(index, model, tile_id, words)
            return tile_id, maps

        return work

    def apply_salience(self, result) -> bool:
        tile_id, maps = result
        if self.selected_tile is None or self.selected_tile.tile_id != tile_id:
            return False
        self.salience = maps
        self.events.emit("salience", tile_id=tile_id, maps=maps)
        return True

    def captions_job(self, captions: list[str]):
        from ssjdn.core.query.search import rank_captions
        if self.selected_tile is None or self.index is None or not captions:
            return None
        index, model, tile_id = self.index, self.loaded.model, self.selected_tile.tile_id
        return lambda: rank_captions(model, tile_id, captions, index=index)

    # == relevance feedback ====================================================================
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
        if self.index is None or not self.marks:
            return []
        return [(r.bounds, r.crs, self.marks[r.tile_id]) for r in self.index.tiles(list(self.marks))
                if r.raster_path in self.rasters]

    def can_refine(self) -> bool:
        """A refined query needs a relevant tile, or words to move away from the others."""
        return bool(self.marked(RELEVANT)) or bool(self.marks and self.words)

    def can_find_all(self) -> bool:
        from ssjdn.core.query.feedback import MIN_POSITIVES
        return self.index is not None and len(self.marked(RELEVANT)) >= MIN_POSITIVES

    def find_all_job(self):
        """Train a classifier on the marks and score every tile; the job, given progress and a
        cancel event, returns (TileScores, {raster path: probability grid}), or None when
        cancelled. Past HEATMAP_TILE_BUDGET, grids go to the rasters of the best detections."""
        from ssjdn.core.errors import Cancelled
        from ssjdn.core.query.feedback import probability_heatmap, tile_probabilities
        from ssjdn.core.index.index_store import raster_id_of
        self._require_index()
        index, positives, negatives = self.index, self.marked(RELEVANT), self.marked(NOT_RELEVANT)
        heatmap_rasters, path_of = self._heatmap_rasters(), {v: k for k, v in self._indexed.items()}

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
        on_map = [self._indexed[path] for path in self.indexed_rasters()]   # raster ids
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
        if self.index is None or not chosen:
            return []
        return hits_for_ids(self.index, [t for t, _ in chosen], [p for _, p in chosen])

    # == attribute table =======================================================================
    def attribute_rows(self) -> list[AttributeRow]:
        """The hits, the first TABLE_DETECTIONS detections and the marked tiles of the open
        rasters, with each tile's centre and mark: what the attribute table lists."""
        from ssjdn.core.query.search import hits_for_ids
        from ssjdn.core.geo.tiling import tile_centres_wgs84
        groups = [("hit", self.hits), ("detection", self.detection_hits(TABLE_DETECTIONS))]
        if self.index is not None and self.marks:
            marked = list(self.marks)
            groups.append(("mark", [h for h in hits_for_ids(self.index, marked, [np.nan] * len(marked))
                                    if h.raster_path in self.rasters]))
        entries = [(kind, rank, hit) for kind, hits in groups for rank, hit in enumerate(hits, start=1)]
        centres = tile_centres_wgs84([hit for _, _, hit in entries])
        rows = []
        for (kind, rank, hit), (lon, lat) in zip(entries, centres):
            mark = self.marks.get(int(hit.tile_id))
            rows.append(AttributeRow(kind, None if kind == "mark" else rank,
                                     None if kind == "mark" else float(hit.score),
                                     getattr(hit, "likelihood", None), int(hit.tile_id), hit.raster_path,
                                     float(lon), float(lat), KIND_LABELS.get(mark, ""), hit))
        return rows

    def export_rows(self, rows: list[AttributeRow], path: str) -> int:
        """Write chosen rows of the attribute table as GeoJSON / GeoPackage polygons with their
        kind and label (and lat / lon, score, likelihood as every export); returns how many."""
        from ssjdn.core.errors import UserError
        from ssjdn.core.geo.export import export_hits
        if not rows:
            raise UserError("No rows are selected: select rows of the table to export them.")
        export_hits([r.hit for r in rows], path, query=self.words or None,
                    extra=[{"kind": r.kind, "label": r.label} for r in rows])
        return len(rows)

    # == labelled sets =========================================================================
    def label_sets(self) -> list[tuple[str, int, int]]:
        """(name, relevant, not relevant) of the sets stored in the index."""
        return self.index.label_sets() if self.index is not None else []

    def save_label_set(self, name: str, overwrite: bool = False) -> None:
        from ssjdn.core.errors import UserError
        self._require_index()
        if not self.marks:
            raise UserError("There are no marks to save: mark tiles relevant (+) or not relevant (-) first.")
        self.index.save_label_set(name, self.marks, overwrite=overwrite)

    def load_label_set(self, name: str) -> None:
        self._require_index()
        self.set_marks(self.index.load_label_set(name))

    def export_marks(self, path: str, name: str | None = None) -> None:
        """The marks as GeoJSON / GeoPackage polygons with their label."""
        from ssjdn.core.errors import UserError
        from ssjdn.core.query.labels import export_labels
        self._require_index()
        if not self.marks:
            raise UserError("There are no marks to export: mark tiles relevant (+) or not relevant (-) first.")
        export_labels(self.index, self.marks, path, name=name)

    def import_marks(self, path: str) -> int:
        """Mark the tiles a GIS file's points / polygons cover (its labels win over existing
        marks); returns how many tiles it marked."""
        from ssjdn.core.query.labels import import_labels
        self._require_index()
        imported = import_labels(self.index, path)
        self.set_marks({**self.marks, **imported})
        return len(imported)

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

    def export_detections(self, path: str) -> int:
        """Write the detections (tiles at or above the threshold) with their probability."""
        from ssjdn.core.errors import UserError
        from ssjdn.core.geo.export import export_hits
        hits = self.detection_hits()
        if not hits:
            raise UserError("There are no detections to export: run Find all, or lower the threshold.")
        export_hits(hits, path, query=self.words or None,
                    extra=[{"probability": round(float(h.score), 6)} for h in hits])
        return len(hits)

    # == sessions ==============================================================================
    def save_session(self, path: str, view_bounds: list[float] | None = None) -> None:
        """Save the session with the layers as they are and the map's view bounds."""
        self.session.view_bounds = view_bounds
        self.session.index_dir = str(self.current_index_dir()) if self.loaded is not None else None
        self.session.layers = self.layers.states()
        self.session.save(path)

    def restore_session(self, path: str) -> Session:
        """Make the session look like a saved one, its layers' states included; returns it (the
        view opens its rasters and shows its view bounds). The last query runs again once the
        index is ready."""
        restored = Session.load(path)
        for raster in list(self.session.rasters):
            self.close_raster(raster)
        self.layers.restore(restored.layers)
        self.session.set_tile_ground_m(restored.tile_ground_m)
        self.session.set_indexing(restored.indexing)
        self.session.stac_items.update(restored.stac_items)
        self.session.queries = restored.queries
        self.pending_query = restored.queries[-1] if restored.queries else None
        return restored


def finite_range(arrays) -> tuple[float, float] | None:
    """(min, max) over the finite values of some arrays, None when there are none."""
    finite = [a[np.isfinite(a)] for a in arrays]
    finite = [a for a in finite if a.size]
    if not finite:
        return None
    return float(min(a.min() for a in finite)), float(max(a.max() for a in finite))


def complete_read_only_index(index_dir: Path, paths: list[str], model):
    """IndexStats of an index in a read-only folder (a shared or archived cache) that already
    holds every raster of `paths` completely: it is searched as it is, as the CLI does. Only
    what would need building is refused."""
    from ssjdn.core.errors import UserError
    from ssjdn.core.index.index_store import TileIndex
    from ssjdn.core.index.indexing import IndexStats
    with TileIndex.open(index_dir, model=model) as index:
        complete = {record.path for record in index.rasters() if record.complete}
    missing = [path for path in paths if path not in complete]
    if missing:
        names = ", ".join(elide_middle(Path(path).name) for path in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise UserError(f"The index folder {index_dir} is read-only and does not hold {names}{more} "
                        f"completely, so they cannot be indexed. Make the folder writable, or "
                        f"set SSJDN_CACHE_DIR to a folder you can write to.")
    return IndexStats(rasters=len(paths), rasters_skipped=len(paths))


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


NAME_CHARS = 30   # a raster's name in a list or a panel, elided in the middle past this


def elide_middle(text: str, chars: int = NAME_CHARS) -> str:
    """'manila_ph_010m…fab355_4310': both ends of a long name kept (they tell scenes apart);
    a panel showing a 100-character file name whole would widen its dock over the map."""
    if len(text) <= chars:
        return text
    head = (chars - 1) // 2
    return f"{text[:head]}…{text[len(text) - (chars - 1 - head):]}"


def place_names(records, chars: int = NAME_CHARS, sep: str = "  ") -> list[str]:
    """Short names of tiles that say where they are: 'stem…elided  14.59312°N 120.98422°E'
    (the tile's centre; 'tile 12' for a raster with no CRS); `chars` for the stem, `sep`
    between it and the place (a newline in a list of tall rows)."""
    from ssjdn.core.geo.tiling import tile_centres_wgs84
    records = list(records)
    names = []
    for record, (lon, lat) in zip(records, tile_centres_wgs84(records)):
        where = format_lonlat(lon, lat) if np.isfinite(lat) else f"tile {record.tile_id & 0xFFFFFFFF}"
        names.append(f"{elide_middle(Path(record.raster_path).stem, chars)}{sep}{where}")
    return names


def describe_tile(record) -> str:
    """'stem…elided, tile 12 at 14.59312°N 120.98422°E' (ids pack the raster id in their high
    bits; the place is the tile's centre, pixel offsets without a CRS)."""
    from ssjdn.core.geo.tiling import tile_centres_wgs84
    lon, lat = tile_centres_wgs84([record])[0]
    col, row = int(record.window.col_off), int(record.window.row_off)
    where = format_lonlat(lon, lat) if np.isfinite(lat) else f"px {col},{row}"
    return f"{elide_middle(Path(record.raster_path).stem)}, tile {record.tile_id & 0xFFFFFFFF} at {where}"
