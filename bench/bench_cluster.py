"""Indexing on a Dask cluster: tiles/s with 1 and with 2 local workers, and their ratio.

Each build indexes the same raster into a fresh index with `ssjdn index --cluster local:N`'s
code path (workers are CPU processes of one thread each here); the single-process build_index
is timed beside them for reference. The rate is tiles encoded / the build's seconds (planning,
encoding, committing, the search file), after the workers have loaded the model; the start of
the cluster and the model loads are printed apart.

    python bench/bench_cluster.py                           # shipped model, 4096 x 4096 synthetic
    python bench/bench_cluster.py --model tiny --size 8192
    python bench/bench_cluster.py --raster scene.tif --workers 1,2,4
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import set_threads, write_synthetic_geotiff  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint path or config name (default: the "
                                                      "shipped model)")
    parser.add_argument("--size", type=int, default=4096, help="side of the synthetic raster in pixels")
    parser.add_argument("--raster", help="index this existing raster instead of a synthetic one")
    parser.add_argument("--workers", default="1,2", help="local worker counts to time (default 1,2)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)),
                        help="torch threads of the single-process reference build")
    args = parser.parse_args(argv)
    set_threads(args.threads)

    from ssjdn.core.model.api import model_from_spec, save_checkpoint
    from ssjdn.core.index.cluster import build_index_on_cluster, connect
    from ssjdn.core.index.indexing import build_index

    resolved = model_from_spec(args.model, device="cpu")
    model, source = resolved.model, resolved.source
    with tempfile.TemporaryDirectory(prefix="ssjdn-bench-cluster-") as tmp:
        if not resolved.trained:
            # A config's untrained weights differ in the last bit between thread counts, so the
            # workers get a checkpoint of this very model.
            source = str(save_checkpoint(model, Path(tmp) / f"{model.name}.safetensors"))
        raster = args.raster or write_synthetic_geotiff(Path(tmp) / "scene.tif", args.size)
        print(f"model {model.name} ({resolved.source}), raster {raster}, {os.cpu_count()} CPU cores")
        stats = build_index(Path(tmp) / "single", raster, model, model_source=source)
        print(f"single process ({args.threads} torch threads): {stats.tiles_encoded} tiles in "
              f"{stats.seconds:.1f} s = {stats.tiles_per_second:.2f} tiles/s")
        rates = {}
        for n in [int(w) for w in args.workers.split(",")]:
            start = time.perf_counter()
            with connect(f"local:{n}") as client:
                started = time.perf_counter() - start
                stats = build_index_on_cluster(Path(tmp) / f"cluster{n}", raster, model, client,
                                               model_source=source)
            rates[n] = stats.tiles_per_second
            print(f"{n} local worker(s), 1 thread each: {stats.tiles_encoded} tiles in "
                  f"{stats.seconds:.1f} s = {rates[n]:.2f} tiles/s (cluster start {started:.1f} s, "
                  f"model loads and build {time.perf_counter() - start - started:.1f} s)")
    first = min(rates)
    for n, rate in sorted(rates.items()):
        if n != first:
            print(f"ratio {n} workers / {first} worker(s): {rate / rates[first]:.2f}")


if __name__ == "__main__":
    main()
