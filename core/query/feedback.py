"""Refine a search by example: relevance feedback (Rocchio) and find-all (a light classifier).

Both work in the model's joint space on the vectors already in the index, so nothing is encoded
again except the words. No Qt: the app and the CLI call the same functions.

- `refine_query` moves the text query towards the tiles marked relevant and away from those
  marked not relevant (Rocchio); words are optional when there are relevant tiles.
- `search_refined` runs that query over the index, best first.
- `classify_tiles` trains a logistic regression on the marked tiles' vectors (negatives sampled
  from the index when too few are marked) and gives every tile a probability.

The weights below were tuned on the UCM val split by bench/bench_feedback.py (docs/engine.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssjdn.core.errors import Cancelled, UserError, stop_check
from ssjdn.core.progress import Progress, Stage

# At least this many relevant tiles to train a classifier: fewer cannot say what they share.
MIN_POSITIVES = 3
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class RocchioWeights:
    """query = text * t + positive * mean(relevant) - negative * mean(not relevant), then
    normalised. Scores are cosines, so only the ratios between the weights matter.

    Tuned on the UCM val split (bench/bench_feedback.py --tune, docs/engine.md): residual AP after
    one round rose +0.45 over text only for every positive weight from 1 to 8 with a negative
    weight up to half of it; strong negative weights hurt (negative = positive = 1: +0.36; 1 vs 2:
    +0.16). 2 / 0.25 is in the middle of the flat optimum and still lets the words count."""
    text: float = 1.0
    positive: float = 2.0
    negative: float = 0.25


@dataclass(frozen=True)
class ClassifierSettings:
    """Logistic regression on unit vectors. Sampled negatives fill up to `min_negatives` when too
    few tiles are marked not relevant; they are random tiles (excluding the relevant ones), so a
    few true matches among them are noise the regularisation (C) absorbs.

    Tuned on the UCM val split with 10 marks per round: C = 1 ranked best (residual AP 0.607 vs
    0.568 at C = 0.1, 0.53 at 10, 0.40 at 100); balanced class weights and 20-100 sampled
    negatives changed it by < 0.02. With 5 marks per round C = 10 did better (0.82 vs 0.77)."""
    C: float = 1.0
    min_negatives: int = 50
    sampled_per_positive: int = 10
    balanced: bool = True
    seed: int = 0


DEFAULT_WEIGHTS = RocchioWeights()
DEFAULT_CLASSIFIER = ClassifierSettings()


def refine_query(index, model, text: str | None = None, positive_ids=(), negative_ids=(),
                 weights: RocchioWeights = DEFAULT_WEIGHTS) -> np.ndarray:
    """A unit query vector [D] built from words and marked tiles (Rocchio in the joint space).

    Words are optional when at least one tile is marked relevant. Tile ids unknown to the index,
    or one id marked both ways, raise UserError."""
    positive_ids, negative_ids = check_marks(index, positive_ids, negative_ids)
    words = _optional_text(text)
    if words is None and not positive_ids:
        raise UserError("Say what to find in words, or mark at least one tile relevant "
                        "(e.g. --positive TILE_ID).")
    query = np.zeros(index.dim, np.float64)
    if words is not None:
        from ssjdn.core.query.search import query_vector
        query += weights.text * query_vector(model, words)
    if positive_ids:
        query += weights.positive * index.vectors(positive_ids).mean(0)
    if negative_ids:
        query -= weights.negative * index.vectors(negative_ids).mean(0)
    norm = np.linalg.norm(query)
    if not np.isfinite(norm) or norm < 1e-8:
        raise UserError("The marks cancel the query out (relevant and not relevant tiles look the "
                        "same to the model); mark other tiles or add words.")
    return (query / norm).astype(np.float32)


def search_refined(index, model, text: str | None = None, positive_ids=(), negative_ids=(),
                   k: int = 20, weights: RocchioWeights = DEFAULT_WEIGHTS,
                   skip_marked: bool = False) -> list:
    """The k tiles that best match the refined query, best first (search.Hit, score = cosine).

    With `skip_marked` the marked tiles are left out, so the k hits are all new to the analyst."""
    from ssjdn.core.query.search import search_vector
    query = refine_query(index, model, text, positive_ids, negative_ids, weights)
    marked = set(map(int, positive_ids)) | set(map(int, negative_ids)) if skip_marked else set()
    return search_vector(index, query, k, exclude=marked)


def tile_probabilities(index, positive_ids, negative_ids=(),
                       settings: ClassifierSettings = DEFAULT_CLASSIFIER,
                       progress=None, cancel=None) -> tuple[np.ndarray, np.ndarray]:
    """(tile ids [N] ascending, probability of being relevant [N]) for every tile of the index,
    from a logistic regression trained on the marked tiles' vectors. Needs >= MIN_POSITIVES
    relevant tiles; negatives are sampled from the index when fewer than
    `settings.min_negatives` are marked. The marked tiles are scored too (a marked tile may
    still score low). progress(Progress) follows the scoring block by block (ten
    million tiles take minutes); a set `cancel` event (or a callable returning True) stops it
    with Cancelled."""
    positive_ids, negative_ids = check_marks(index, positive_ids, negative_ids)
    if len(positive_ids) < MIN_POSITIVES:
        raise UserError(f"Finding all matches needs at least {MIN_POSITIVES} tiles marked relevant; "
                        f"{len(positive_ids)} marked. Mark more (e.g. --positive ID,ID,ID).")
    ids = all_tile_ids(index)
    negatives = _negatives(ids, positive_ids, negative_ids, settings)
    if not negatives:
        raise UserError("Every tile of the index is marked relevant: there is nothing to tell "
                        "them apart from. Mark some tiles not relevant or index more imagery.")
    classifier = _fit(index.vectors(positive_ids), index.vectors(negatives), settings)
    stop = stop_check(cancel)
    # Raster by raster and block by block, in all_tile_ids' order: never every vector at once.
    probabilities, done = [], 0
    for record in index.rasters():
        for _, vectors in index.iter_raster_vectors(record.raster_id):
            if stop():
                raise Cancelled()
            probabilities.append(classifier.predict_proba(vectors)[:, 1])
            done += len(vectors)
            if progress is not None:
                progress(Progress(Stage.SCORING, done, len(ids), "Scoring every tile with the classifier"))
    return ids, np.concatenate(probabilities) if probabilities else np.zeros(0)


def classify_tiles(index, positive_ids, negative_ids=(), threshold: float = DEFAULT_THRESHOLD,
                   settings: ClassifierSettings = DEFAULT_CLASSIFIER) -> list[tuple[int, float]]:
    """(tile_id, probability) of every tile at or above `threshold`, most probable first."""
    if not 0.0 <= float(threshold) <= 1.0:
        raise UserError(f"The threshold is a probability between 0 and 1; got {threshold}.")
    ids, probabilities = tile_probabilities(index, positive_ids, negative_ids, settings)
    order = np.argsort(-probabilities, kind="stable")
    return [(int(ids[i]), float(probabilities[i])) for i in order if probabilities[i] >= threshold]


def probability_heatmap(index, raster_path, tile_ids, probabilities):
    """Probabilities (e.g. from tile_probabilities) as a GeoRaster grid over one raster of the
    index, one cell per tile step as search.score_heatmap; cells of unscored tiles are NaN."""
    from ssjdn.core.query.search import tile_grid
    record = index.raster(raster_path)
    if record is None:
        raise UserError(f"{raster_path} is not in the index {index.index_dir}.")
    # Sorted arrays, not a dict: an archive's find-all scores ten million tiles.
    tile_ids, probabilities = np.asarray(tile_ids, np.int64), np.asarray(probabilities, np.float64)
    order = np.argsort(tile_ids, kind="stable")
    tile_ids, probabilities = tile_ids[order], probabilities[order]
    ids, windows = index.raster_grid(record.raster_id)
    at = np.minimum(np.searchsorted(tile_ids, ids), max(len(tile_ids) - 1, 0))
    found = (tile_ids[at] == ids) if len(tile_ids) else np.zeros(len(ids), bool)
    return tile_grid(record, windows, np.where(found, probabilities[at] if len(tile_ids) else 0.0, np.nan))


def check_marks(index, positive_ids, negative_ids) -> tuple[list[int], list[int]]:
    """Marks as lists of unique ints (first-seen order); UserError for unknown or doubly marked ids."""
    positives, negatives = _unique_ints(positive_ids), _unique_ints(negative_ids)
    both = set(positives) & set(negatives)
    if both:
        raise UserError(f"Tile {min(both)} is marked both relevant and not relevant; keep one mark.")
    known = {record.tile_id for record in index.tiles(positives + negatives)}
    unknown = [i for i in positives + negatives if i not in known]
    if unknown:
        raise UserError(f"Tile {unknown[0]} is not in the index {index.index_dir}; tile ids are the "
                        f"numbers printed by `ssjdn search`.")
    return positives, negatives


def all_tile_ids(index) -> np.ndarray:
    """Every tile id of the index, raster by raster, each raster's in tile order. Ids only: the
    rasters' grids are loaded once, by tile_probabilities as it streams their vectors."""
    return index.tile_ids()


# ---------------------------------------------------------------------------------------------

def _negatives(ids: np.ndarray, positives: list[int], negatives: list[int],
               settings: ClassifierSettings) -> list[int]:
    """The marked negatives, topped up with random unmarked tiles (never a marked positive)."""
    wanted = max(settings.min_negatives, settings.sampled_per_positive * len(positives))
    if len(negatives) >= wanted:
        return negatives
    pool = ids[~np.isin(ids, np.array(positives + negatives, np.int64))]
    rng = np.random.default_rng(settings.seed)
    sampled = rng.choice(pool, size=min(len(pool), wanted - len(negatives)), replace=False)
    return negatives + sorted(int(i) for i in sampled)


def _fit(positive_vectors: np.ndarray, negative_vectors: np.ndarray, settings: ClassifierSettings):
    from sklearn.linear_model import LogisticRegression
    x = np.concatenate([positive_vectors, negative_vectors]).astype(np.float64)
    y = np.r_[np.ones(len(positive_vectors)), np.zeros(len(negative_vectors))]
    classifier = LogisticRegression(C=settings.C, class_weight="balanced" if settings.balanced else None,
                                    max_iter=1000)
    return classifier.fit(x, y)


def _optional_text(text) -> str | None:
    """The cleaned words, or None when there are none (blank is allowed here, unlike search_text)."""
    from ssjdn.core.query.search import clean_query
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    return clean_query(text)


def _unique_ints(values) -> list[int]:
    if values is None:
        return []
    if isinstance(values, (int, np.integer)):
        values = [values]
    result = {}   # a dict keeps the first-seen order
    for value in values:
        try:
            result.setdefault(int(value), None)
        except (TypeError, ValueError):
            raise UserError(f"'{value}' is not a tile id; tile ids are the whole numbers printed by "
                            f"`ssjdn search`.") from None
    return list(result)
