"""Real scenes judged by eye (issue 16, item 4): contact sheets of the top hits of a model
with and without class evidence, from the same weights.

    .venv/bin/python bench/bench_real_scenes.py [--model shipped] [--out runs/real_scenes]
        [--scenes ../shared/scenes] [--overlap 0.5] [--top 5]

Each raster of --scenes is indexed at the model's tile size, once per variant (the model as
given, and the same weights with class_evidence_weight 0), and searched for the queries
below; each (raster, query) gets one PNG: a row of the top hits' tiles per variant, scores
printed. There is no ground truth here: a person looks at the sheets and counts the hits that
show the thing asked for (docs/model.md says what we saw).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from bench_common import load_bench_model, set_threads

# What an analyst would ask of a river port, an industrial plant, a car park and suburbs.
QUERIES = ("a bridge over a river", "buses parked in a parking lot", "many cars in a parking lot",
           "storage tanks", "boats on a river", "a large factory building", "houses with trees",
           "a dirt road between houses", "a sports ground", "houses with red roofs")
THUMB = 160


def without_class_evidence(model):
    """The same weights comparing plain embeddings (a second model object, not a copy of the
    weights' memory: only the attribute and its config key differ)."""
    import copy
    plain = copy.copy(model)
    plain.config = {**model.config, "class_evidence_weight": 0}
    plain.class_evidence_weight = 0
    return plain


def contact_row(index, hits, title: str):
    from PIL import Image, ImageDraw

    from ssjdn.core.geo.raster import read_window_rgb
    from ssjdn.core.query.search import _encoded_info
    row = Image.new("RGB", (len(hits) * (THUMB + 4), THUMB + 32), "white")
    draw = ImageDraw.Draw(row)
    draw.text((2, 2), title, fill="black")
    for n, hit in enumerate(hits):
        array = read_window_rgb(_encoded_info(index.tile(hit.tile_id)), hit.window, out_size=THUMB)
        row.paste(Image.fromarray(array.transpose(1, 2, 0)), (n * (THUMB + 4), 16))
        draw.text((n * (THUMB + 4) + 2, THUMB + 18), f"{n + 1}: {hit.score:.3f}", fill="black")
    return row


def stacked(rows):
    from PIL import Image
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
    top = 0
    for row in rows:
        sheet.paste(row, (0, top))
        top += row.height
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shipped")
    parser.add_argument("--scenes", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "scenes")
    parser.add_argument("--out", type=Path, default=Path("runs/real_scenes"))
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    set_threads(args.threads)

    from ssjdn.core.index.index_store import TileIndex
    from ssjdn.core.index.indexing import build_index, find_rasters
    from ssjdn.core.query.search import search_text

    model = load_bench_model(args.model)
    variants = {"as given": model, "no class evidence": without_class_evidence(model)}
    rasters = [path for path, _ in find_rasters([str(args.scenes)])]
    args.out.mkdir(parents=True, exist_ok=True)
    for raster in rasters:
        rows = {query: [] for query in QUERIES}
        for name, variant in variants.items():
            folder = args.out / f"index_{Path(raster).stem}_{variant.vector_dim}"
            build_index(folder, [raster], variant, overlap=args.overlap)
            with TileIndex.open(folder, model=variant) as index:
                for query in QUERIES:
                    hits = search_text(index, variant, query, k=args.top)
                    print(f"{Path(raster).stem[:24]:24s} {name:18s} {query:32s} "
                          + " ".join(f"{h.tile_id & 0xFFFFFFFF}:{h.score:.3f}" for h in hits), flush=True)
                    rows[query].append(contact_row(index, hits, f"{name} ({index.count} tiles): {query}"))
        for query, query_rows in rows.items():
            stacked(query_rows).save(args.out / f"{Path(raster).stem[:24]}_{query.replace(' ', '_')}.png")
    print(f"contact sheets in {args.out}")


if __name__ == "__main__":
    main()
