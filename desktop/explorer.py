"""The explorer's state and logic with no Qt (the napari rule): `ExplorerModel`.

It holds what the app has open: the model and the index, the open rasters and the map's CRS,
and the map's layers (`layers`, a LayerList that sessions save); and it owns the components
each panel binds to: `results` (the last search and its likelihood display, results.py),
`selection` (the selected tile and its salience maps, selection.py), `feedback` (marks,
refine, find-all, labelled sets, marks.py) and `table` (the attribute table's rows,
attributes.py). Qt views listen to their `events` and forward the user's actions to their
methods; tests drive them with no window. The app's policy (what follows what) is here too.

Slow work is not run here but handed out: a `*_job` method returns a plain function that the
caller runs off the GUI thread (the window in a QtJobQueue, a test directly) and whose
result goes back to the matching `apply_*` / `show` method on the caller's thread. A result
that arrives for a model, tile or tile size the user has since left is dropped there.

Events (keyword arguments):
  raster_opened(info, note)   raster_closed(path)   model_loading(spec)   model(loaded)   model_failed(spec)
  index(index)   tiles(paths)   load_requested()   index_requested(stale)   search_requested(query)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ssjdn.core.model.calibration import calibration_of
from ssjdn.desktop import models as model_choices
from ssjdn.desktop.attributes import AttributeTable
from ssjdn.desktop.geo import MapFrame
from ssjdn.desktop.layers import LayerList
from ssjdn.desktop.marks import RelevanceFeedback
from ssjdn.desktop.names import elide_middle
from ssjdn.desktop.results import SearchResults
from ssjdn.desktop.selection import TileSelection
from ssjdn.desktop.settings import index_dir_for
from ssjdn.desktop.state import Events, Session

COARSE_PIXEL_M = 2.0  # pixels coarser than this get a note about matching quality
CPU_CHUNK_PX = 128    # read-chunk side when indexing on a CPU: frequent progress, same speed
# A heatmap scores every tile of its raster, reading all its vectors (a million-tile raster:
# 1 GB, 1.5-6 s on 2 cores): past this many tiles in the open rasters, only the best hits'
# rasters get one, so a search of an archive waits for one such raster, not ten.
HEATMAP_TILE_BUDGET = 1_000_000


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
        self.pending_query: str | None = None   # a restored session's last query, run when indexed
        # The components the panels bind to.
        self.results = SearchResults(self)
        self.selection = TileSelection(self, self.results)
        self.feedback = RelevanceFeedback(self, self.results)
        self.table = AttributeTable(self, self.results, self.feedback)
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

    def load_failed(self, spec: str) -> None:
        """Loading `spec` failed (the window has said why): say so unless the user moved on."""
        if spec == self.session.model_spec and self.loaded is None:
            self.events.emit("model_failed", spec=spec)

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
        self.results.forget_raster(path)
        self.feedback.forget_raster(path)
        self.events.emit("raster_closed", path=path)
        self.events.emit("tiles", paths=self.indexed_rasters())
        self.feedback.refilter()   # its tiles leave the detections

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

        def work(progress=None, cancel=None):
            if index_store.folder_is_writable(index_dir) or not index_dir.is_dir():
                return indexing.build_index(index_dir, rasters, model, progress=progress,
                                            cancel=cancel, **settings, **chunking)
            return complete_read_only_index(index_dir, rasters, model, {**settings, **chunking})

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
        self.feedback.index_opened(index_dir)
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
        self.feedback.forget_scores()
        if had:
            self.events.emit("index", index=None)

    def indexed_rasters(self) -> list[str]:
        """The open rasters that the index holds, in the session's order."""
        return [path for path in self.session.rasters if path in self._indexed]

    def indexed_raster_ids(self) -> dict[str, int]:
        """{path: raster id} of the open rasters that the index holds, in the session's order."""
        return {path: self._indexed[path] for path in self.indexed_rasters()}

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

    def require_index(self) -> None:
        from ssjdn.core.errors import UserError
        if self.index is None:
            raise UserError("There is no index yet: open a raster and wait for indexing to end.")

    # == what searches ask of the index ========================================================
    def fetch_plan(self, k: int):
        """(how many to ask the index for, a filter keeping the first k hits on the map).

        The index may also hold rasters closed since (it is per model, not per raster set):
        ask for more, so k remain after keeping those on the map. The filter runs in the job."""
        open_rasters = set(self.session.rasters)
        others = sum(r.n_indexed for r in self.index.rasters() if r.path not in open_rasters)
        ask = k if others == 0 else k + min(others, 4 * k)
        return ask, lambda hits: [h for h in hits if h.raster_path in open_rasters][:k]

    def heatmap_rasters(self):
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

    @property
    def calibration(self):
        """The loaded model's calibration, None when it has none (no likelihood is shown)."""
        return calibration_of(self.loaded.model) if self.loaded is not None else None

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


def complete_read_only_index(index_dir: Path, rasters: list, model, settings: dict):
    """IndexStats of an index in a read-only folder (a shared or archived cache) that already
    holds every raster of `rasters` completely, from the files as they are now and tiled with
    `settings`: it is searched as it is, as the CLI does. What a build would (re)encode is
    refused: a raster missing, unfinished, changed on disk since, or tiled otherwise."""
    from ssjdn.core.errors import UserError
    from ssjdn.core.index.index_store import TileIndex
    from ssjdn.core.index.indexing import IndexStats, rasters_to_index
    with TileIndex.open(index_dir, model=model) as index:
        stale = rasters_to_index(index, rasters, model, **settings)
    if stale:
        names = ", ".join(elide_middle(Path(path).name) for path in stale[:3])
        more = f" and {len(stale) - 3} more" if len(stale) > 3 else ""
        raise UserError(f"The index folder {index_dir} is read-only and does not hold {names}{more} "
                        f"completely, or they changed since they were indexed, so they cannot be "
                        f"indexed. Make the folder writable, or set SSJDN_CACHE_DIR to a folder "
                        f"you can write to.")
    return IndexStats(rasters=len(rasters), rasters_skipped=len(rasters))
