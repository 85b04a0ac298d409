"""Queries over a tile index: text -> tiles, image -> tiles, tile -> captions, heatmaps, salience.

Scores are cosine similarities between unit vectors (higher is more alike), the same numbers
the model was trained with, so they compare across queries of the same model.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from affine import Affine
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from ssjdn.core.errors import UserError
from ssjdn.core.model.fast_text import encode_query
from ssjdn.core.model.network import salience_keys
from ssjdn.core.geo.raster import GeoRaster, full_window, raster_info, read_window_rgb
from ssjdn.core.geo.tiling import windows_to_wgs84

# Two hits sharing more than this share of the smaller footprint show mostly the same ground.
SAME_GROUND = 0.5
# Candidates fetched per wanted hit where overlapping tiles may be suppressed.
_CANDIDATES_PER_HIT = 4
# Images given to search_similar / rank_captions are read at most this large: the model
# resizes to its input anyway, and a whole orthophoto passed by mistake must not fill memory.
_MAX_IMAGE_SIDE = 2048


@dataclass(frozen=True)
class Hit:
    tile_id: int
    score: float
    raster_path: str
    window: Window
    bounds: tuple[float, float, float, float]    # raster CRS
    crs: object                                   # rasterio CRS or None
    bounds_wgs84: tuple[float, float, float, float] | None
    transform: Affine                             # the raster's transform
    footprint_wgs84: np.ndarray | None = None     # closed lon/lat ring [P, 2], counter-clockwise
    likelihood: float | None = None               # calibrated match likelihood (text searches)
    tiling: str = ""                              # which tiling of its raster, e.g. "38.4 m, overlap 0.5"
    stac: dict | None = None                      # its STAC item: {"item", "collection", "datetime"}
    # From a search (search_vector): where its vector sits in the index's vector store, and
    # that stored vector (float32 [D]), so no caller reads it again. None for looked-up hits.
    position: int | None = None
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)


def search_text(index, model, query: str, k: int = 20) -> list[Hit]:
    """The k tiles that best match a description, best first."""
    return with_likelihoods(search_vector(index, query_vector(model, query), k), model)


def query_vector(model, query: str) -> np.ndarray:
    """A description as the model's unit query vector [D] (an empty one, or one the model cannot
    read a word of, is a UserError)."""
    text = clean_query(query)
    if _unread(model, text) == text.split():
        raise UserError(f"The model reads English, and it knows none of the words of \u201c{text}\u201d "
                        f"(another script, or symbols). Describe what to find in English, e.g. "
                        f"'a bridge over a river'.")
    return encode_query(model, text)[0]


def unread_words_note(model, query: str | None) -> str | None:
    """One line naming the words of `query` the model cannot read (they are ignored), or None
    (also for no words at all: marks alone may refine a search)."""
    unread = list(dict.fromkeys(_unread(model, _visible_words(query))))   # each word once
    if not unread:
        return None
    named = ", ".join(f"\u201c{word}\u201d" for word in unread)
    return f"The model has no word for {named} (it reads English): ignored."


def _unread(model, text: str) -> list[str]:
    from ssjdn.core.model.text import unread_words
    tokenizer = getattr(model, "tokenizer", None)
    return unread_words(tokenizer, text) if tokenizer is not None else []


def search_vector(index, vector: np.ndarray, k: int, exclude=()) -> list[Hit]:
    """The k best hits for a query vector [1, D] or [D], leaving out tile ids in `exclude`,
    each with its vector-store position and stored vector: every search ranks here.
    Where the index holds tiles that overlap much (several tilings of a raster, or overlap
    above SAME_GROUND), more candidates are fetched and of two hits on mostly the same ground
    only the better is kept."""
    exclude = {int(i) for i in exclude}
    overlapping = index.has_overlapping_tiles()
    fetch = int(k) * (_CANDIDATES_PER_HIT if overlapping else 1) + len(exclude)
    scores, ids, positions = index.search_positions(np.atleast_2d(vector), fetch)
    kept = [n for n, i in enumerate(ids[0]) if int(i) not in exclude]
    hits = hits_for_ids(index, ids[0][kept], scores[0][kept], positions[0][kept])
    hits = (suppress_same_ground(hits) if overlapping else hits)[:int(k)]
    # Only the hits kept are read, by position: a few rows, no database lookup.
    vectors = index.vectors_at([h.position for h in hits])
    return [replace(h, vector=v) for h, v in zip(hits, vectors)]


def suppress_same_ground(hits: list[Hit]) -> list[Hit]:
    """Non-maximum suppression on footprints: going down the ranking, a hit is dropped when
    more than SAME_GROUND of its footprint or of a better kept hit's lies in the other (the
    intersection over the smaller one, so a small tile inside a large one counts as the same
    ground). Hits of different rasters never suppress each other: two dates of a place are
    two findings."""
    kept: list[Hit] = []
    for hit in hits:
        if not any(k.raster_path == hit.raster_path and _shared_share(k.window, hit.window) > SAME_GROUND
                   for k in kept):
            kept.append(hit)
    return kept


def _shared_share(a: Window, b: Window) -> float:
    """Area of the intersection of two pixel windows over the smaller window's area."""
    width = min(a.col_off + a.width, b.col_off + b.width) - max(a.col_off, b.col_off)
    height = min(a.row_off + a.height, b.row_off + b.height) - max(a.row_off, b.row_off)
    if width <= 0 or height <= 0:
        return 0.0
    return width * height / min(a.width * a.height, b.width * b.height)


def with_likelihoods(hits: list[Hit], model) -> list[Hit]:
    """Text-search hits with their match likelihood when the model has a calibration (it was
    fitted on text-to-image scores, so it says nothing about refined or image queries)."""
    from ssjdn.core.model.calibration import calibration_of
    calibration = calibration_of(model)
    if calibration is None or not hits:
        return hits
    values = calibration.likelihood(np.array([h.score for h in hits]))
    return [replace(h, likelihood=float(v)) for h, v in zip(hits, values)]


def search_similar(index, model, tile_or_image, k: int = 20) -> list[Hit]:
    """Tiles that look like a tile of the index (its id or record) or like any image
    (an image file, an HxWx3 / 3xHxW uint8 array, a PIL image). The tile itself is left out."""
    own_id = _tile_id_of(tile_or_image)
    if own_id is not None:
        vector = index.vectors([own_id])
    else:
        vector = model.encode_images(_pixels(tile_or_image, index)).float().cpu().numpy()
    return search_vector(index, vector, k, exclude=() if own_id is None else (own_id,))


def rank_captions(model, image_or_tile, captions, index=None) -> list[tuple[str, float]]:
    """Rank given captions for one image or tile, best first (a tile id needs `index`)."""
    captions = [c.strip() for c in captions if c and c.strip()]
    if not captions:
        raise UserError("Give at least one caption to rank, e.g. 'many cars in a parking lot'.")
    image = model.encode_images(_pixels(image_or_tile, index))
    scores = model.similarity(image, model.encode_texts(captions))[0].float().cpu().numpy()
    order = np.argsort(-scores, kind="stable")
    return [(captions[i], float(scores[i])) for i in order]


def score_heatmap(index, model, query: str, raster_path) -> GeoRaster:
    """Every indexed tile's score for `query` as a grid over the raster whose cells line up with
    the tiles (`tile_grid`; cells without a tile, e.g. nodata, are NaN)."""
    record = index.raster(raster_path)
    if record is None:
        raise UserError(f"{raster_path} is not in the index {index.index_dir}; index it first "
                        f"(ssjdn index {raster_path} --index {index.index_dir}).")
    return vector_heatmap(index, record, query_vector(model, query))


def vector_heatmap(index, record, query: np.ndarray) -> GeoRaster:
    """Every tile's score for a query vector (a text's, or a refined one) as a grid over its
    raster; the raster's vectors are streamed, never all in memory."""
    _, windows = index.raster_grid(record.raster_id)
    scores = [vectors @ query for _, vectors in index.iter_raster_vectors(record.raster_id)]
    return tile_grid(record, windows, np.concatenate(scores).astype(np.float64) if scores
                     else np.zeros(0))


# A heatmap grid is fine enough for every cell edge to be a tile edge (so its cells line up with
# the tile outlines, also where edge tiles are shifted inwards) up to this many cells a side;
# past it (a raster of tens of thousands of pixels whose tile edges share no large divisor),
# one cell per tile step, which may not line up exactly with the shifted edge tiles.
HEATMAP_MAX_SIDE = 2048


def tile_grid(record, windows: np.ndarray, values: np.ndarray) -> GeoRaster:
    """Per-tile values (one per row of `windows`, a raster's tiles) as a grid over the raster
    whose cell edges are the tiles' edges; each cell holds the value of the tile whose centre
    is nearest (the tile a click there selects); cells without a tile are NaN."""
    windows = np.asarray(windows, np.int64).reshape(-1, 4)
    edges = np.concatenate([windows[:, 0], windows[:, 1], windows[:, 0] + windows[:, 2],
                            windows[:, 1] + windows[:, 3], [record.width, record.height]])
    cell = int(np.gcd.reduce(edges)) if len(windows) else 0
    one_size = len(windows) and (windows[:, 2:] == windows[0, 2:]).all()   # one tiling
    if not one_size or cell == 0 or max(record.width, record.height) / cell > HEATMAP_MAX_SIDE:
        return _step_grid(record, windows, values)
    n_cols, n_rows = record.width // cell, record.height // cell
    col_of = _nearest_tile(windows[:, 0], windows[:, 2], (np.arange(n_cols) + 0.5) * cell)
    row_of = _nearest_tile(windows[:, 1], windows[:, 3], (np.arange(n_rows) + 0.5) * cell)
    columns, rows = np.unique(windows[:, 0]), np.unique(windows[:, 1])
    lattice = np.full((len(rows) + 1, len(columns) + 1), np.nan)   # last row / column: no tile
    lattice[np.searchsorted(rows, windows[:, 1]), np.searchsorted(columns, windows[:, 0])] = values
    heat = lattice[np.ix_(row_of, col_of)].astype(np.float32)
    return GeoRaster(heat, record.transform @ Affine.scale(cell, cell), record.crs, float("nan"))


def _nearest_tile(offsets, sizes, points) -> np.ndarray:
    """For points along one axis, the index (among the distinct tile offsets, ascending) of
    the tile covering each point whose centre is nearest; len(distinct offsets) where none does."""
    starts, first = np.unique(offsets, return_index=True)
    ends = starts + sizes[first]
    centres = (starts + ends) / 2
    nearest = np.searchsorted((centres[1:] + centres[:-1]) / 2, points)   # between two centres
    covered = (starts[nearest] <= points) & (points < ends[nearest])
    return np.where(covered, nearest, len(starts))


def _step_grid(record, windows: np.ndarray, values: np.ndarray) -> GeoRaster:
    """One cell per tile step (overlapping tiles are averaged; cells without a tile are NaN)."""
    from ssjdn.core.index.index_store import tiling_slots
    # The finest step of the raster's tilings: coarser tiles span several cells.
    steps = [(max(1, round(s["tile_px"][0] * (1 - s["overlap"]))), max(1, round(s["tile_px"][1] * (1 - s["overlap"]))))
             for s in tiling_slots(record.tiling)]
    n_cols = max(1, round(record.width / min(w for w, _ in steps)))
    n_rows = max(1, round(record.height / min(h for _, h in steps)))
    cell_w, cell_h = record.width / n_cols, record.height / n_rows
    total = np.zeros((n_rows, n_cols), np.float64)
    count = np.zeros((n_rows, n_cols), np.int64)
    c0, c1 = _covered(windows[:, 0], windows[:, 2], cell_w, n_cols)
    r0, r1 = _covered(windows[:, 1], windows[:, 3], cell_h, n_rows)
    for dr in range(int((r1 - r0).max(initial=0))):
        for dc in range(int((c1 - c0).max(initial=0))):
            inside = (r0 + dr < r1) & (c0 + dc < c1)
            np.add.at(total, (r0[inside] + dr, c0[inside] + dc), values[inside])
            np.add.at(count, (r0[inside] + dr, c0[inside] + dc), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        heat = np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)
    return GeoRaster(heat, record.transform @ Affine.scale(cell_w, cell_h), record.crs, float("nan"))


def tile_salience(index, model, tile_id) -> dict[tuple[str, str, int], GeoRaster]:
    """The model's SEM and SSM maps for one tile, each placed on the tile's ground footprint.
    Keys are (kind, direction, scale): kind "sem" or "ssm", scale 0 = finest; the SSM maps
    that are constant by construction (model.salience_keys) are left out."""
    record = index.tile(int(tile_id))
    _, maps = model.encode_images(_pixels(record, index), with_maps=True)
    return {(kind, direction, scale): tile_georaster(record, getattr(maps, kind)[direction][scale][0])
            for kind, direction, scale in salience_keys()}


def tile_query_map(index, model, tile_id, query: str) -> GeoRaster:
    """Where inside one tile the words match (model.query_maps, stride 8), on the tile's ground
    footprint: higher = a better match; NaN (nodata) where the tile has no data."""
    record = index.tile(int(tile_id))
    pixels, valid = read_window_rgb(_encoded_info(record), record.window, with_mask=True)
    text = torch.from_numpy(query_vector(model, query))
    grid = model.query_maps(_as_batch(torch.from_numpy(pixels)), text)[0].cpu()
    georaster = tile_georaster(record, grid, nodata=float("nan"))
    covered = torch.nn.functional.adaptive_max_pool2d(torch.from_numpy(~valid).float()[None, None],
                                                      grid.shape)[0, 0].numpy() > 0
    georaster.array[covered] = np.nan   # any nodata pixel in a cell: the cell is no data
    return georaster


def tile_georaster(record, grid: torch.Tensor, nodata: float | None = None) -> GeoRaster:
    """A map over a tile ([h, w], any resolution) placed on the tile's ground footprint."""
    array = grid.float().cpu().numpy()
    origin = window_transform(record.window, record.transform)
    cell = Affine.scale(record.window.width / array.shape[1], record.window.height / array.shape[0])
    return GeoRaster(array, origin @ cell, record.crs, nodata)


# ---------------------------------------------------------------------------------------------

def clean_query(query) -> str:
    text = _visible_words(query)
    if not text:
        raise UserError("The query is empty. Describe what to find, e.g. "
                        "'storage tanks next to a river' or 'many cars in a parking lot'.")
    return text


def _visible_words(query) -> str:
    """`query` without control and format characters, stripped; "" when nothing is left."""
    if query is not None and not isinstance(query, str):
        raise UserError(f"A query is a sentence of text; got {type(query).__name__}.")
    # Control and format characters (zero-width spaces, BOMs, direction marks) are invisible:
    # a query made only of them is empty, and inside words they would only confuse the tokenizer.
    return "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in (query or "")
                   if unicodedata.category(ch) != "Cf").strip()


def hits_for_ids(index, ids, scores, positions=None) -> list[Hit]:
    """Hits for tile ids and their scores (and vector-store positions, from a search), in the
    given order (ids < 0 and unknown ids dropped)."""
    # Pair before filtering: dropping an id must not shift the scores after it.
    positions = [None] * len(ids) if positions is None else [int(p) for p in positions]
    rows = [(int(i), float(score), at) for i, score, at in zip(ids, scores, positions) if int(i) >= 0]
    records = {r.tile_id: r for r in index.tiles([i for i, _, _ in rows])}
    footprints = _footprints(list(records.values()))
    return [Hit(r.tile_id, score, r.raster_path, r.window, r.bounds, r.crs, r.bounds_wgs84,
                r.transform, footprints.get(r.tile_id), tiling=r.tiling, stac=r.stac, position=at)
            for i, score, at in rows if (r := records.get(i)) is not None]


def _footprints(records) -> dict[int, np.ndarray]:
    """Lon/lat rings of tiles, one projection call per CRS (tiling owns the geography): an
    archive's top hits come from many rasters, and each call costs about a millisecond."""
    by_raster: dict[str, list] = {}
    for r in records:
        if r.crs is not None:
            by_raster.setdefault(r.raster_path, []).append(r)
    by_crs: dict[object, list] = {}
    for group in by_raster.values():   # CRS equality costs ~20 us: once per raster, not per tile
        by_crs.setdefault(group[0].crs, []).extend(group)
    rings = {}
    for crs, group in by_crs.items():
        _, group_rings = windows_to_wgs84(crs, [r.transform for r in group], [r.window for r in group])
        rings.update({r.tile_id: ring for r, ring in zip(group, group_rings)})
    return rings


def _covered(offsets, sizes, cell: float, n: int):
    """First and past-last cell whose centre lies inside each [offset, offset + size)."""
    first = np.clip(np.ceil(offsets / cell - 0.5), 0, n).astype(np.int64)
    last = np.clip(np.ceil((offsets + sizes) / cell - 0.5), 0, n).astype(np.int64)
    return first, np.maximum(last, np.minimum(first + 1, n))


def _tile_id_of(obj):
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, bool):
        return int(obj)
    tile_id = getattr(obj, "tile_id", None)
    return int(tile_id) if tile_id is not None else None


def _encoded_info(record):
    """The raster of a tile record as it was encoded: its bands and nodata setting, so the
    model sees what it saw then."""
    bands = getattr(record, "bands", ()) or None
    return raster_info(record.raster_path, bands=bands, nodata=getattr(record, "nodata", None))


def _pixels(obj, index) -> torch.Tensor:
    """Any image-like input as a uint8 tensor [1, 3, H, W]."""
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, bool):
        if index is None:
            raise UserError("A tile id needs the index it belongs to.")
        obj = index.tile(int(obj))
    if hasattr(obj, "raster_path") and hasattr(obj, "window"):
        array = read_window_rgb(_encoded_info(obj), obj.window)
    elif isinstance(obj, (str, Path)):
        info = raster_info(obj)
        side = max(info.width, info.height)
        array = read_window_rgb(info, full_window(info), out_size=min(side, _MAX_IMAGE_SIDE))
    elif isinstance(obj, torch.Tensor):
        return _as_batch(obj)
    else:
        array = np.asarray(obj)  # numpy arrays and PIL images
        if array.ndim == 2:
            array = np.repeat(array[None], 3, axis=0)
        elif array.ndim == 3 and array.shape[-1] in (3, 4) and array.shape[0] not in (3, 4):
            array = np.moveaxis(array[..., :3], -1, 0)
        array = array[:3]
    return _as_batch(torch.from_numpy(np.ascontiguousarray(array)))


def _as_batch(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.ndim == 3:
        tensor = tensor[None]
    if tensor.ndim != 4 or tensor.shape[1] != 3:
        raise UserError(f"Expected an RGB image; got an array of shape {tuple(tensor.shape)}.")
    return tensor


