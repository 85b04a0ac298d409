"""The search structure over an index's vectors: exact when small, compressed codes when large.

Below APPROX_THRESHOLD vectors search is exact (faiss IndexFlatIP): ~6 ms at 50k x 512 on one
core. Above it an IVF index with RaBitQ codes (1 bit per dimension, fast-scan; ~70 bytes per
vector in memory) proposes RERANK_DEPTH candidates and their exact scores, computed from the
float16 vectors on disk, pick the top k. Measured at 1M look-alike vectors with real caption
queries (docs/engine.md): IVF4096,RaBitQfs re-ranking 200 reaches recall@10 0.98 in 89 MB;
product quantisation of the same size stays below 0.5, because a text query sits far from
every image vector and coarse codes cannot order what is near it.

Vectors reach the builder through `read(positions)`, so a ten-million-tile index is trained on
a sample and filled block by block, never held in memory whole.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ssjdn.core.progress import Progress, Stage

# Below this many vectors exact search is fast enough: ~6 ms at 50k x 512 on one core, while
# at 100k it is 12-19 ms, most of the 20 ms budget that text encoding also needs (bench_search).
APPROX_THRESHOLD = 50_000
# nprobe is raised until recall@10 of the re-ranked search against exact search reaches this,
# or until doubling it adds less than NPROBE_SATURATION: then the re-ranking depth, not the
# lists probed, limits recall (at 10M, recall on caption queries is flat from nprobe 32 to 256).
TARGET_RECALL = 0.97
NPROBE_SATURATION = 0.005
# Never probe fewer lists than this: the calibration sample is small and real queries (text)
# sit farther from the data than it.
MIN_NPROBE = 16
# Candidates re-scored exactly per query (float16 rows read from the shards). At 10M
# look-alike vectors and 200 real caption queries, recall@10 at nprobe 32 is 0.91 re-ranking
# 200, 0.975 re-ranking 500, 0.988 re-ranking 1000; 500 costs ~4 ms a query (docs/engine.md).
RERANK_DEPTH = 500
# Inverted lists: ~4 sqrt(n), capped where k-means training stops paying off on a workstation
# (4096 lists of a 10M index hold ~2.4k vectors each; nprobe 64 scans 1.6 % of the codes).
MAX_NLIST = 4096
# Calibration queries are database vectors pushed this far away (noise norm relative to the
# unit vector; cosine to their source ~0.55), like caption queries, whose nearest image sits at
# cosine ~0.5: queries close to the data would make a small nprobe look good enough.
CALIBRATION_NOISE = 1.5
BLOCK = 100_000

Reader = Callable[[np.ndarray], np.ndarray]   # positions -> float32 vectors [n, dim]


def is_exact(index) -> bool:
    return not hasattr(index, "nprobe")


def build_ann(ids: np.ndarray, read: Reader, dim: int, approx_threshold: int = APPROX_THRESHOLD,
              target_recall: float = TARGET_RECALL, seed: int = 0, progress=None):
    """A faiss index over the vectors `read(positions)` returns for `ids` (one id per position):
    exact below `approx_threshold`, else IVF-RaBitQ with an nprobe measured to reach
    `target_recall` after re-ranking. Returns (index, nprobe or None). `progress(Progress)` hears
    each step (minutes at 10M vectors), in the SEARCH_STRUCTURE stage."""
    import faiss
    ids = np.asarray(ids, np.int64)
    n = len(ids)
    if n < approx_threshold:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        add_blocks(index, ids, read, progress)
        return index, None
    nlist = int(min(MAX_NLIST, max(64, 4 * math.sqrt(n))))
    index = faiss.index_factory(dim, f"IVF{nlist},RaBitQfs", faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.niter = 10   # k-means converges enough for routing; more iterations cost minutes at 10M
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, 40 * nlist), replace=False))
    _say(progress, f"grouping {len(sample):,} sample vectors into {nlist} lists")
    index.train(np.ascontiguousarray(read(sample), np.float32))
    add_blocks(index, ids, read, progress)
    _say(progress, "measuring recall to choose how many lists a search probes")
    nprobe = calibrate_nprobe(index, ids, read, target_recall, rng)
    return index, nprobe


def add_blocks(index, ids: np.ndarray, read: Reader, progress=None) -> None:
    for start in range(0, len(ids), BLOCK):
        positions = np.arange(start, min(start + BLOCK, len(ids)))
        index.add_with_ids(np.ascontiguousarray(read(positions), np.float32), ids[positions])
        _say(progress, f"{positions[-1] + 1:,} / {len(ids):,} vectors added", positions[-1] + 1, len(ids))


def _say(progress, message: str, done: int = 0, total: int = 0) -> None:
    if progress is not None:
        stage = Stage.SEARCH_STRUCTURE
        progress(Progress(stage, int(done), int(total), f"{stage.value}: {message}"))


def search(index, queries: np.ndarray, k: int, fetch: Callable[[np.ndarray], np.ndarray],
           depth: int = RERANK_DEPTH):
    """(scores [Q, k], ids [Q, k]); a compressed index's `depth` best candidates are re-scored
    exactly with `fetch(ids)` (float32 vectors of those ids). Ids of -1 pad missing results."""
    k = min(int(k), index.ntotal)
    if is_exact(index):
        return index.search(queries, k)
    _, candidates = index.search(queries, max(k, depth))
    scores = np.full((len(queries), k), -np.inf, np.float32)
    found = np.full((len(queries), k), -1, np.int64)
    for q, (query, row) in enumerate(zip(queries, candidates)):
        row = row[row >= 0]
        exact = fetch(row) @ query
        best = np.argsort(-exact, kind="stable")[:k]
        scores[q, :len(best)], found[q, :len(best)] = exact[best], row[best]
    return scores, found


def calibrate_nprobe(index, ids: np.ndarray, read: Reader, target_recall: float, rng,
                     n_queries: int = 200, k: int = 10) -> int:
    """Smallest power-of-two nprobe (>= MIN_NPROBE) whose re-ranked recall@k against exact
    search reaches the target on text-like probe queries (see CALIBRATION_NOISE), or whose
    doubling would add less than NPROBE_SATURATION."""
    queries = probe_queries(read(np.sort(rng.choice(len(ids), min(n_queries, len(ids)),
                                                    replace=False))), rng)
    truth = exact_top_k(ids, read, queries, k)
    order = np.argsort(ids)
    sorted_ids = ids[order]

    def fetch(wanted):
        return read(order[np.searchsorted(sorted_ids, wanted)])

    ivf = _ivf(index)

    def recall_at(nprobe):
        ivf.nprobe = nprobe
        return measure_recall(search(index, queries, k, fetch)[1], truth)

    nprobe, recall = MIN_NPROBE, recall_at(MIN_NPROBE)
    while recall < target_recall and nprobe < ivf.nlist:
        doubled = recall_at(min(2 * nprobe, ivf.nlist))
        if doubled - recall < NPROBE_SATURATION:
            break
        nprobe, recall = min(2 * nprobe, ivf.nlist), doubled
    ivf.nprobe = nprobe
    return nprobe


def probe_queries(sources: np.ndarray, rng) -> np.ndarray:
    noise = rng.normal(0, 1, sources.shape).astype(np.float32)
    noise *= CALIBRATION_NOISE / np.linalg.norm(noise, axis=1, keepdims=True)
    queries = sources / np.linalg.norm(sources, axis=1, keepdims=True) + noise
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


def exact_top_k(ids: np.ndarray, read: Reader, queries: np.ndarray, k: int) -> np.ndarray:
    """True top-k ids by inner product, streaming the vectors block by block."""
    best_scores = np.full((len(queries), 0), -np.inf, np.float32)
    best_ids = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(ids), BLOCK):
        positions = np.arange(start, min(start + BLOCK, len(ids)))
        scores = np.concatenate([best_scores, queries @ read(positions).T], 1)
        all_ids = np.concatenate([best_ids, np.broadcast_to(ids[positions], (len(queries), len(positions)))], 1)
        keep = np.argpartition(-scores, min(k, scores.shape[1]) - 1, axis=1)[:, :k]
        keep = np.take_along_axis(keep, np.argsort(-np.take_along_axis(scores, keep, 1), 1), 1)
        best_scores = np.take_along_axis(scores, keep, 1)
        best_ids = np.take_along_axis(all_ids, keep, 1)
    return best_ids


def measure_recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true top-k ids found in the returned top-k."""
    hits = sum(len(set(f[f >= 0]) & set(t[t >= 0])) for f, t in zip(found, truth))
    return hits / max(1, truth.size)


def probed_lists(index) -> tuple[int, int]:
    """(lists a search probes, lists) of a compressed index."""
    ivf = _ivf(index)
    return int(ivf.nprobe), int(ivf.nlist)


def apply_nprobe(index, nprobe) -> None:
    if nprobe is not None and not is_exact(index):
        _ivf(index).nprobe = int(nprobe)


def _ivf(index):
    import faiss
    return faiss.extract_index_ivf(index)
