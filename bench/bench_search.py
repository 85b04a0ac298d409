"""Search latency and recall: text query -> top-10 tiles at 10k, 100k, 1M vectors.

Per query the latency is the model's text encoding plus the faiss search, measured one query
at a time as a user would issue them (p50 / p95 over --queries queries). The index part uses
synthetic unit vectors of the model's dimension drawn around cluster centres (real image
embeddings are clustered by scene type; uniformly random vectors in 512 dims have no
neighbourhood structure and are a degenerate worst case for any approximate index). Recall@10
of the approximate (IVF) index is measured against exact search on held-out vectors.

    python bench/bench_search.py --model tiny --sizes 10000,100000
    python bench/bench_search.py --model ssjdn-lite0-minilm --sizes 10000,100000,1000000
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import load_bench_model, set_threads  # noqa: E402

QUERIES = ["many planes parked at an airport", "a river with boats", "storage tanks next to a road",
           "a parking lot full of cars", "dense residential area with houses", "a green golf course",
           "a baseball field", "an industrial area with warehouses", "trees along a canal",
           "a freeway crossing an overpass"]


def clustered_unit_vectors(n: int, dim: int, rng, clusters: int = 2000, spread: float = 0.8) -> np.ndarray:
    """n unit vectors around `clusters` random centres; `spread` is the noise norm relative to
    the centre (0.8 gives nearest-neighbour cosines of about 0.6-0.8, like image embeddings)."""
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    step = 100_000
    for start in range(0, n, step):
        m = min(step, n - start)
        noise = rng.standard_normal((m, dim)).astype(np.float32) * (spread / np.sqrt(dim))
        block = centres[rng.integers(0, clusters, m)] + noise
        out[start:start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="checkpoint path or config name (text encoder timed)")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="index sizes, comma separated")
    parser.add_argument("--dim", type=int, help="vector dimension (default: the model's)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    parser.add_argument("--threshold", type=int, help="exact below this size (default: the index's)")
    parser.add_argument("--spread", type=float, default=0.8,
                        help="noise around cluster centres (higher = less structure, harder for IVF)")
    args = parser.parse_args(argv)
    set_threads(args.threads)

    from ssjdn.core.index.ann import APPROX_THRESHOLD, build_ann, measure_recall, search
    model = load_bench_model(args.model)
    dim = args.dim or int(model.encode_texts(["probe"]).shape[1])
    threshold = args.threshold or APPROX_THRESHOLD
    texts = [QUERIES[i % len(QUERIES)] + ("" if i < len(QUERIES) else f" {i}") for i in range(args.queries)]
    for text in texts[:5]:
        model.encode_texts([text])  # warm-up
    text_ms = []
    for text in texts:
        start = time.perf_counter()
        model.encode_texts([text]).cpu()
        text_ms.append((time.perf_counter() - start) * 1e3)
    text_ms = np.array(text_ms)
    print(f"model {model.name} on {model.device}, dim {dim}, {args.threads} threads, "
          f"{args.queries} queries, spread {args.spread}, load average {os.getloadavg()[0]:.2f}")
    print(f"text encoding alone: p50 {np.percentile(text_ms, 50):.2f} ms, p95 {np.percentile(text_ms, 95):.2f} ms")
    print(f"{'vectors':>9} {'index':>6} {'build s':>8} {'search p50':>10} {'p95':>7} "
          f"{'total p50':>10} {'p95':>7} {'recall@10':>9} {'nprobe':>6}")
    rng = np.random.default_rng(0)
    for n in [int(s) for s in args.sizes.split(",")]:
        data = clustered_unit_vectors(n + args.queries, dim, rng, spread=args.spread)
        vectors, queries = data[:n], data[n:]   # held-out queries from the same distribution
        ids = np.arange(n, dtype=np.int64)
        def read(positions, vectors=vectors):
            return vectors[positions]

        exact, _ = build_ann(ids, read, dim, approx_threshold=n + 1)
        _, truth = exact.search(queries, 10)
        kinds = [("exact", n + 1)] + ([("ivf", 0)] if n >= min(threshold, 10_000) else [])
        for kind, kind_threshold in kinds:
            start = time.perf_counter()
            index, nprobe = (exact, None) if kind == "exact" else \
                build_ann(ids, read, dim, approx_threshold=kind_threshold)
            build_s = time.perf_counter() - start if kind != "exact" else float("nan")
            search_ms = []
            found = []
            for q in queries:
                start = time.perf_counter()
                _, got = search(index, q[None], 10, read)   # ids are positions here
                search_ms.append((time.perf_counter() - start) * 1e3)
                found.append(got[0])
            search_ms = np.array(search_ms)
            total = search_ms + text_ms[:len(search_ms)]
            recall = measure_recall(np.array(found), truth)
            used = "  <- used" if (kind == "exact") == (n < threshold) else ""
            print(f"{n:9d} {kind:>6} {build_s:8.1f} {np.percentile(search_ms, 50):8.2f}ms "
                  f"{np.percentile(search_ms, 95):5.2f}ms {np.percentile(total, 50):8.2f}ms "
                  f"{np.percentile(total, 95):5.2f}ms {recall:9.3f} {nprobe or '-':>6}{used}")
        del data, vectors, exact


if __name__ == "__main__":
    main()
