"""Archive-scale search: which compressed index keeps 10M tiles under 2 GB and fast enough.

For each faiss factory string it trains on a sample, adds every vector of a float16 .npy (from
bench/synthetic_vectors.py, streamed in blocks), then answers real text queries (caption
embeddings from bench/real_embeddings.py): the index returns `--rerank` candidates, whose
exact scores come from the float16 vectors through a memory map, and the top 10 are kept.
Printed per configuration and nprobe: recall@10 against exact search over all vectors, p50 /
p95 latency of the ANN search plus re-ranking (one query at a time, as a user types them),
the index's size in memory, and build time. Text encoding is timed separately with the model
(`--model`), since it does not depend on the index.

    python bench/bench_archive.py --vectors vectors_1m.npy --real emb.npz \
        --configs IVF4096,PQ64x4fs IVF4096,RaBitQfs --nprobes 16,32,64 --rerank 100
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import set_threads  # noqa: E402

BLOCK = 200_000


def build(factory: str, vectors: np.ndarray, train_size: int, seed: int = 0):
    import faiss
    index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(vectors), min(train_size, len(vectors)), replace=False))
    t0 = time.perf_counter()
    index.train(np.asarray(vectors[sample], np.float32))
    t_train = time.perf_counter() - t0
    for start in range(0, len(vectors), BLOCK):
        index.add(np.asarray(vectors[start:start + BLOCK], np.float32))
    return index, t_train, time.perf_counter() - t0


def rerank(vectors: np.ndarray, query: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    candidates = np.sort(candidates[candidates >= 0])   # sorted ids read the memmap in order
    scores = np.asarray(vectors[candidates], np.float32) @ query
    return candidates[np.argsort(-scores)[:k]]


def set_nprobe(index, nprobe: int) -> None:
    import faiss
    faiss.extract_index_ivf(index).nprobe = nprobe


def evaluate(index, vectors, queries, truth, nprobe: int, depth: int, k: int = 10) -> dict:
    set_nprobe(index, nprobe)
    times, found = [], []
    for query in queries:
        t0 = time.perf_counter()
        _, ids = index.search(query[None], depth)
        found.append(rerank(vectors, query, ids[0], k) if depth > k else ids[0][:k])
        times.append(time.perf_counter() - t0)
    recall = np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth)])
    return {"recall": float(recall), "p50_ms": 1e3 * float(np.median(times)),
            "p95_ms": 1e3 * float(np.percentile(times, 95))}


def index_bytes(index) -> int:
    import faiss
    return int(faiss.serialize_index(index).nbytes)


def text_encoding_ms(model_spec: str, threads: int) -> float:
    from bench_common import load_bench_model
    model = load_bench_model(model_spec)
    texts = ["many planes parked at an airport", "a river with boats", "storage tanks next to a road",
             "a parking lot full of cars", "dense residential area with houses"] * 8
    model.encode_texts(texts[:2])
    times = []
    for text in texts:
        t0 = time.perf_counter()
        model.encode_texts([text])
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=Path, required=True, help="float16 .npy of unit vectors")
    parser.add_argument("--real", type=Path, required=True, help=".npz with `texts` (queries)")
    parser.add_argument("--configs", nargs="+", default=["IVF4096,PQ64x4fs"])
    parser.add_argument("--nprobes", default="16,32,64")
    parser.add_argument("--rerank", default="100", help="candidate depths to re-rank, comma separated")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--train-size", type=int, default=300_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", help="also time text encoding with this model (path or 'shipped')")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    vectors = np.load(args.vectors, mmap_mode="r")
    texts = np.load(args.real)["texts"].astype(np.float32)
    queries = texts[np.random.default_rng(1).permutation(len(texts))[:args.queries]]
    t0 = time.perf_counter()
    from ssjdn.core.index.ann import exact_top_k
    truth = exact_top_k(np.arange(len(vectors)), lambda rows: np.asarray(vectors[rows], np.float32),
                        queries, 10)
    print(f"{len(vectors):,} x {vectors.shape[1]} vectors; exact ground truth for {len(queries)} "
          f"real text queries in {time.perf_counter() - t0:.1f} s")
    if args.model:
        print(f"text encoding p50: {text_encoding_ms(args.model, args.threads):.1f} ms (add to the latencies below)")
    for factory in args.configs:
        index, t_train, t_build = build(factory, vectors, args.train_size)
        size_mb = index_bytes(index) / 2**20
        print(f"\n{factory}: built in {t_build:.0f} s (train {t_train:.0f} s), {size_mb:.0f} MB in memory, "
              f"peak RSS so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
        for nprobe in map(int, args.nprobes.split(",")):
            for depth in map(int, args.rerank.split(",")):
                r = evaluate(index, vectors, queries, truth, nprobe, depth)
                print(f"  nprobe {nprobe:4d} rerank {depth:4d}: recall@10 {r['recall']:.3f}  "
                      f"p50 {r['p50_ms']:.2f} ms  p95 {r['p95_ms']:.2f} ms")
        del index


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
