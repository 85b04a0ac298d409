"""Peak memory (RSS) while indexing a large GeoTIFF: it must stay bounded, not grow with the raster.

Writes synthetic GeoTIFFs (strip by strip, so writing needs little memory either), then indexes
each in a fresh child process and reports the child's peak RSS (getrusage ru_maxrss), beside
the RSS right after the model loaded, so the indexing part stands out.

    python bench/bench_memory.py --sizes 5000,20000 --model tiny
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import load_bench_model, set_threads, write_synthetic_geotiff  # noqa: E402


def child(raster: str, model_spec: str, index_dir: str, tile_px, threads: int) -> None:
    """Index one raster and print JSON figures (runs in its own process)."""
    set_threads(threads)
    from ssjdn.core.index.indexing import build_index
    model = load_bench_model(model_spec)
    model_rss_mb = _rss_now_mb()
    stats = build_index(index_dir, raster, model, tile_px=tile_px)
    print(json.dumps({"tiles": stats.tiles_encoded, "seconds": stats.seconds, "model_rss_mb": model_rss_mb,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="5000,20000", help="raster sides in pixels, comma separated")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--tile-px", type=int, default=256,
                        help="tile size (default 256 px; the model resizes to its input)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    parser.add_argument("--workdir", help="where to write the rasters (default: a temp folder)")
    parser.add_argument("--child", nargs=2, metavar=("RASTER", "INDEX_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], args.model, args.child[1], args.tile_px, args.threads)
        return
    with tempfile.TemporaryDirectory(prefix="ssjdn-mem-", dir=args.workdir) as tmp:
        print(f"{'raster':>13} {'file MB':>8} {'tiles':>7} {'index s':>8} {'RSS after model':>16} "
              f"{'peak RSS':>9}")
        for size in [int(s) for s in args.sizes.split(",")]:
            raster = Path(tmp) / f"scene_{size}.tif"
            start = time.perf_counter()
            write_synthetic_geotiff(raster, size)
            written_s = time.perf_counter() - start
            out = subprocess.run([sys.executable, __file__, "--model", args.model, "--tile-px", str(args.tile_px),
                                  "--threads", str(args.threads), "--child", str(raster), str(Path(tmp) / f"idx{size}")],
                                 check=True, capture_output=True, text=True)
            figures = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{size:>6} x {size:<6} {raster.stat().st_size / 1e6:8.0f} {figures['tiles']:7d} "
                  f"{figures['seconds']:8.1f} {figures['model_rss_mb']:13.0f} MB {figures['peak_rss_mb']:6.0f} MB"
                  f"   (raster written in {written_s:.0f} s, {size * size * 3 / 1e9:.2f} GB of pixels)")
            raster.unlink()


def _rss_now_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


if __name__ == "__main__":
    main()
