"""Engine subcommands of the `ssjdn` CLI: index, search, classify, match, export.

Each command is a thin layer over ssjdn.core (indexing, search, export): parse, call, print.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path

from ssjdn.core.errors import UserError
from ssjdn.core.geo.formats import RASTER_FORMATS, VECTOR_FORMATS, suffix_choice

LAST_SEARCH = "last_search.json"
# Exit status of `ssjdn index` when it finished but skipped unreadable files found in folders.
EXIT_FILES_SKIPPED = 3
HITS_FILE, GRID_FILE = suffix_choice(VECTOR_FORMATS), suffix_choice(RASTER_FORMATS)

INDEX_HELP = """\
Cut rasters into tiles, encode every tile with the model and store the vectors in an index
folder that `ssjdn search` reads. Tiles cover the ground size the model was trained on
(e.g. 76.8 m for a UCM-trained model) unless you give --tile-m or --tile-px.

Indexing is resumable: press Ctrl-C (once) to stop cleanly, run the same command again to
continue. It is incremental: adding a raster to an existing index encodes only the new one.
A damaged file found in a folder is skipped with a warning and the others are indexed (exit
status 3). One `ssjdn index` per index folder at a time; searching works meanwhile.

A STAC Item, Collection or Catalog (a .json file or an http(s) URL) stands for the image
asset of each of its items (--asset, --bbox, --datetime choose); remote COGs are read through
GDAL's /vsicurl/, windowed. Hits carry the item id. An item whose asset cannot be read is
skipped with a warning (exit status 3); a rerun encodes only new or changed items.

With --cluster the tiles are encoded by Dask workers (local processes, one per GPU, or the
workers of a Dask scheduler on other machines) and this command writes the index; the workers
must read the rasters at the same paths (shared storage). See docs/cluster.md.
"""
INDEX_EPILOG = """\
examples:
  ssjdn index scene.tif --index my_index
  ssjdn index /data/orthophotos/ --index my_index            # every raster in a folder
  ssjdn index scene.tif --index my_index --tile-m 100 --overlap 0.25
  ssjdn index drone.tif --index my_index --tile-m 76.8,38.4 --overlap 0.5   # two scales
  ssjdn index landsat.tif --index my_index --bands 4,3,2      # choose R,G,B bands
  ssjdn index drone.tif --index my_index --nodata 0 --max-nodata 0.3   # black is nodata
  ssjdn index scan.png --index my_index --tile-px 256          # no CRS: tile in pixels
  ssjdn index /shared/orthophotos/ --index my_index --cluster tcp://scheduler:8786
  ssjdn index scene.tif --index my_index --cluster local:2     # 2 worker processes here
  ssjdn index https://example.org/stac/catalog.json --index my_index \
      --bbox 2.25,48.8,2.42,48.9 --datetime 2024-01-01/..      # a STAC catalog of COGs
"""
SEARCH_HELP = """\
Find the tiles that best match a description (or that look like a given tile or image)
and print them best first with their score (cosine similarity, higher is better) and
position. The results are also remembered, so `ssjdn export --index DIR --out hits.geojson`
writes them for a GIS.
"""
SEARCH_EPILOG = """\
examples:
  ssjdn search "storage tanks next to a river" --index my_index
  ssjdn search "many cars in a parking lot" --index my_index -k 50 --out cars.geojson
  ssjdn search --like 4294967301 --index my_index             # tiles like tile 4294967301
  ssjdn search --like-image example.png --index my_index      # tiles like an image

refine by example (relevance feedback; ids are those printed in the tile id column):
  ssjdn search "solar panels on a field" --index my_index --positive 4294967301,4294967307 \\
      --negative 4294967302 -k 30 --out solar.geojson
  ssjdn search --index my_index --positive 4294967301,4294967307   # words are optional
"""
CLASSIFY_HELP = """\
Find all: train a light classifier (logistic regression on the index's vectors) from tiles
marked relevant (at least 3) and not relevant, score every tile of the index with the
probability that it is relevant, and write those at or above --threshold, most probable
first, as polygons with `probability` and `tile_id` properties (.geojson or .gpkg).

When fewer than 50 tiles are marked not relevant, random unmarked tiles of the index fill
up the negatives (a rare target is almost never among them).

--labels reads marks drawn in a GIS: a GeoJSON or GeoPackage of points or polygons in any
CRS. A point marks the tiles that contain it; a polygon the tiles whose centre it covers (a
polygon smaller than a tile marks the tile under it). Its `label` property says which:
relevant, positive, yes, true or 1 = relevant; not relevant, irrelevant, negative, no,
false or 0 = not relevant; a file without a `label` property marks every feature relevant.
"""
CLASSIFY_EPILOG = """\
examples:
  ssjdn classify --index my_index --positive 4294967301,4294967307,4294967311 --out all.geojson
  ssjdn classify --index my_index --positive 4294967301,4294967307,4294967311 \\
      --negative 4294967302,4294967309 --threshold 0.8 --out all.gpkg
  ssjdn classify --index my_index --labels marks_from_qgis.gpkg --out all.geojson \\
      --save-labels "solar farms"                    # keep the marks in the index
  ssjdn classify --index my_index --label-set "solar farms" --out all.geojson
"""
MATCH_HELP = """\
Rank captions for one tile of the index or for any image: which description fits best?
(To go the other way, from a caption to tiles, use `ssjdn search`.)
"""
MATCH_EPILOG = """\
examples:
  ssjdn match --index my_index --tile 4294967301 "a river" "a parking lot" "houses"
  ssjdn match --image tile.png --captions-file captions.txt
"""
EXPORT_HELP = """\
Write results as files a GIS opens: search hits as GeoJSON (EPSG:4326, RFC 7946) or
GeoPackage polygons; a query's score heatmap over a raster, a tile's SEM/SSM salience
maps, or where a query matches inside a tile, as GeoTIFF. Without --query, the hits of the last `ssjdn search` are exported.
"""
EXPORT_EPILOG = """\
examples:
  ssjdn export --index my_index --out hits.geojson                  # last search's hits
  ssjdn export --index my_index --query "a river" -k 30 --out river.gpkg
  ssjdn export --index my_index --query "a river" --heatmap scene.tif --out river_heat.tif
  ssjdn export --index my_index --salience 4294967301 --out salience_dir/
  ssjdn export --index my_index --salience 4294967301 --query "an airplane" --out plane_map.tif
"""


def register(subparsers) -> None:
    """Add the engine subcommands to the `ssjdn` parser."""
    fmt = argparse.RawDescriptionHelpFormatter

    p = subparsers.add_parser("index", help="build or extend a tile index of rasters",
                              description=INDEX_HELP, epilog=INDEX_EPILOG, formatter_class=fmt)
    p.add_argument("rasters", nargs="+", metavar="RASTER",
                   help="raster files (GeoTIFF, COG, JPEG2000, any GDAL format), folders of them, or "
                        "STAC Items, Collections or Catalogs (a .json file or an http(s) URL)")
    _add_index_arg(p)
    _add_model_arg(p)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--tile-m", type=_list_of(_positive_float), metavar="METRES[,METRES]",
                      help="tile side on the ground in metres (default: the model's training ground "
                           "size); several sizes (76.8,38.4) index each raster at each, and a search "
                           "keeps the better of two hits on mostly the same ground")
    size.add_argument("--tile-px", type=_list_of(_tile_px), metavar="PIXELS[,PIXELS]",
                      help="tile side in pixels of the raster (needed for rasters without a CRS "
                           "if you want another size than the model input); several as for --tile-m")
    p.add_argument("--overlap", type=_overlap, default=0.0, metavar="FRACTION",
                   help="overlap between neighbouring tiles, 0 to 0.9 (default 0)")
    p.add_argument("--bands", metavar="R,G,B",
                   help="band numbers to use as red,green,blue (1-based), or one band for grey "
                        "(default: by colour interpretation or band names, else the first three)")
    p.add_argument("--nodata", metavar="VALUE", type=_nodata_setting, default=None,
                   help="pixels holding VALUE in all bands are nodata, besides what the file "
                        "declares; 'none': only what the file declares (default 'auto': a black "
                        "(0) or white (255) border reaching the edge of a raster that declares "
                        "no nodata is a collar, treated as nodata)")
    p.add_argument("--max-nodata", type=_max_nodata, default=None, metavar="FRACTION",
                   help="leave out tiles more than this share nodata, 0 to 1 (default 0.5)")
    stac = p.add_argument_group("STAC catalogs")
    stac.add_argument("--asset", metavar="KEY",
                      help="the asset of each item to index (default: 'visual', else the RGB image)")
    stac.add_argument("--bbox", metavar="W,S,E,N",
                      help="only items that intersect this box (degrees, WGS84)")
    stac.add_argument("--datetime", metavar="RANGE",
                      help="only items in this time: 2024-05-01, 2024-01-01/2024-06-30, 2024-01-01/..")
    p.add_argument("--batch-size", type=_positive_int,
                   help="tiles per model batch (default 512 on GPU, 32 on CPU)")
    p.add_argument("--workers", type=_positive_int, help="reader threads (default: CPU count, at most 8)")
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="encode on Dask workers: a scheduler address (tcp://host:8786), local:N "
                        "(N worker processes on this machine) or local-cuda[:N] (one worker per "
                        "GPU, needs dask-cuda); see docs/cluster.md")
    p.set_defaults(func=run_index)

    p = subparsers.add_parser("search", help="find tiles by a description or by example",
                              description=SEARCH_HELP, epilog=SEARCH_EPILOG, formatter_class=fmt)
    p.add_argument("query", nargs="?", help='what to find, in words, e.g. "a baseball field"')
    _add_index_arg(p)
    _add_model_arg(p)
    p.add_argument("-k", "--top", type=_positive_int, default=10, dest="k",
                   help="number of results (default 10)")
    like = p.add_mutually_exclusive_group()
    like.add_argument("--like", type=tile_id, metavar="TILE_ID", help="find tiles that look like this tile")
    like.add_argument("--like-image", metavar="IMAGE", help="find tiles that look like this image file")
    p.add_argument("--positive", type=tile_id_list, default=[], metavar="ID,ID,...",
                   help="refine the query towards these tiles (marked relevant); with it the "
                        "words are optional")
    p.add_argument("--negative", type=tile_id_list, default=[], metavar="ID,ID,...",
                   help="refine the query away from these tiles (marked not relevant)")
    p.add_argument("--new-only", action="store_true",
                   help="with --positive/--negative: leave the marked tiles out, so every hit "
                        "is one not judged yet")
    p.add_argument("--out", metavar="FILE", help=f"also write the hits to a {HITS_FILE} file")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output (default: refuse, so earlier work is kept)")
    p.set_defaults(func=run_search)

    p = subparsers.add_parser("classify", help="find all tiles like the marked examples",
                              description=CLASSIFY_HELP, epilog=CLASSIFY_EPILOG, formatter_class=fmt)
    _add_index_arg(p)
    p.add_argument("--positive", type=tile_id_list, default=[], metavar="ID,ID,...",
                   help="tiles marked relevant (at least 3 in all, with --labels)")
    p.add_argument("--negative", type=tile_id_list, default=[], metavar="ID,ID,...",
                   help="tiles marked not relevant")
    p.add_argument("--labels", metavar="FILE",
                   help=f"a {HITS_FILE} of points or polygons whose `label` marks the tiles they cover")
    p.add_argument("--label-set", metavar="NAME", help="also use the marks of a labelled set stored in the index")
    p.add_argument("--save-labels", metavar="NAME",
                   help="store the marks used as a labelled set in the index (the app can reload it)")
    p.add_argument("--threshold", type=float, default=0.5, metavar="P",
                   help="write tiles whose probability is at least P, 0 to 1 (default 0.5)")
    p.add_argument("--out", required=True, metavar="FILE", help=f"a {HITS_FILE} file to write")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out file or --save-labels set (default: refuse, so "
                        "earlier work is kept; a set read with --label-set may be saved back)")
    p.set_defaults(func=run_classify)

    p = subparsers.add_parser("match", help="rank captions for a tile or an image",
                              description=MATCH_HELP, epilog=MATCH_EPILOG, formatter_class=fmt)
    p.add_argument("captions", nargs="*", metavar="CAPTION", help="captions to rank")
    p.add_argument("--captions-file", metavar="FILE", help="a text file with one caption per line")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--tile", type=tile_id, metavar="TILE_ID", help="a tile id printed by `ssjdn search`")
    target.add_argument("--image", metavar="IMAGE", help="any image file (PNG, JPEG, GeoTIFF, ...)")
    p.add_argument("--index", metavar="DIR", help="the index the tile belongs to (needed with --tile)")
    _add_model_arg(p)
    p.set_defaults(func=run_match)

    p = subparsers.add_parser("export", help="write hits, heatmaps or salience maps for a GIS",
                              description=EXPORT_HELP, epilog=EXPORT_EPILOG, formatter_class=fmt)
    _add_index_arg(p)
    _add_model_arg(p)
    p.add_argument("--out", required=True, metavar="PATH",
                   help=f"output: {HITS_FILE} for hits, {GRID_FILE} for a heatmap, a folder for salience")
    p.add_argument("--query", help="run this search instead of exporting the last one")
    p.add_argument("-k", "--top", type=_positive_int, default=None, dest="k",
                   help="number of hits with --query (default 10); of the last search's hits without")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--heatmap", metavar="RASTER", help="write the query's score for every tile of RASTER")
    what.add_argument("--salience", type=tile_id, metavar="TILE_ID", help="write the SEM/SSM maps of a tile")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output (default: refuse, so earlier work is kept)")
    p.set_defaults(func=run_export)


# -- commands ---------------------------------------------------------------------------------

def run_index(args) -> int:
    from ssjdn.core.index.index_store import check_index_dir
    from ssjdn.core.index.lock import IndexLock
    from ssjdn.core.index.indexing import find_rasters
    from ssjdn.core.geo.stac import expand_inputs
    # What can be refused is refused before the model loads (seconds).
    IndexLock(check_index_dir(args.index, for_writing=True)).raise_if_held()
    rasters, stac_warnings = expand_inputs(args.rasters, args.asset, args.bbox, args.datetime)
    find_rasters(rasters)
    if args.cluster is not None:
        _check_cluster_args(args)
    # The folder is opened once: an existing index, which names the model that built it, is
    # built into as it is; a new one is made by the build (after a cluster is reached).
    index = _finished_index(args.index)
    try:
        # With --cluster the workers encode: the model here only plans tiles, so it stays on the CPU.
        model, source = load_model_arg(args.model or (index.model_source if index else None),
                                       *(["cpu"] if args.cluster else []))
        stats = _build(index or args.index, rasters, model, source, args)
    finally:
        if index is not None:
            index.close()
    for warning in stac_warnings + stats.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{stats.tiles_encoded} tiles encoded in {stats.seconds:.1f} s "
          f"({stats.tiles_per_second:.0f} tiles/s); {stats.tiles_resumed} already indexed, "
          f"{stats.tiles_nodata} mostly nodata skipped"
          + (f", {stats.tiles_unchanged} re-read unchanged" if stats.tiles_unchanged else "")
          + f"; the index holds {stats.tiles_in_index} tiles.")
    if stats.cancelled:
        print("Stopped early. Run the same command again to continue where it stopped.")
        return 130
    if stats.skipped_files:
        print(f"Skipped {len(stats.skipped_files)} unreadable file(s) (see the warnings above); "
              f"the others are indexed. Fix or remove them and run the same command again.")
        return EXIT_FILES_SKIPPED
    print(f'Next: ssjdn search "what to find" --index {args.index}')
    return 0


def _build(index, rasters, model, source, args):
    """Build `rasters` into `index` (an open TileIndex or a folder) here or on --cluster, with
    a progress bar and a first Ctrl-C that stops cleanly; returns the IndexStats."""
    from tqdm import tqdm

    from ssjdn.core.index.indexing import build_index
    from ssjdn.core.progress import Progress, Stage
    cancel = threading.Event()
    bars = []   # made at the first update, so an error before any work has no empty bar before it

    def progress(update: Progress) -> None:
        if not bars:
            bars.append(tqdm(total=0, unit="tile", dynamic_ncols=True, desc="indexing"))
        bar = bars[0]
        if update.stage is Stage.PLANNED:
            bar.reset(update.total)   # the rate counts from here, not from loading the model or a cluster
        bar.total = update.total
        bar.n = update.done
        bar.set_postfix_str(update.message, refresh=False)
        bar.refresh()

    common = dict(tile_ground_m=args.tile_m, tile_px=args.tile_px, overlap=args.overlap,
                  bands=args.bands, progress=progress, cancel=cancel, model_source=source,
                  nodata=args.nodata)
    if args.max_nodata is not None:
        common["max_nodata"] = args.max_nodata
    try:
        with _first_ctrl_c_sets(cancel):
            if args.cluster is not None:
                from ssjdn.core.index.cluster import build_index_on_cluster
                stats = build_index_on_cluster(index, rasters, model, args.cluster, **common)
            else:
                stats = build_index(index, rasters, model, batch_size=args.batch_size,
                                    workers=args.workers, **common)
    finally:
        for bar in bars:
            bar.close()
    return stats


def _prepare_search(index) -> None:
    """Load the search structure before searching, showing its steps when it must be brought
    up to date first (minutes at 10M tiles, e.g. after its file was lost)."""
    with _StatusLine() as status:
        index.prepare_search(progress=lambda update: status.show(update.message))
    if index.search_file_note:
        print(f"note: {index.search_file_note}", file=sys.stderr)


class _StatusLine:
    """One line of stderr rewritten in place (a long step's progress), ended when done."""

    def __init__(self):
        self._width = 0

    def show(self, message: str) -> None:
        print("\r" + message.ljust(self._width), end="", file=sys.stderr, flush=True)
        self._width = max(self._width, len(message))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self._width:
            print(file=sys.stderr)


def _check_cluster_args(args) -> None:
    """--cluster's address form, and options that only apply to a build in this process."""
    from ssjdn.core.index.cluster import parse_address
    parse_address(args.cluster)
    for option, value in (("--workers", args.workers), ("--batch-size", args.batch_size)):
        if value is not None:
            raise UserError(f"{option} sets how this process reads and encodes; with --cluster the "
                            f"workers do that. Leave out {option}, and size the cluster instead "
                            f"(local:N, or `dask worker --nthreads N` on each machine).")


def run_search(args) -> int:
    from ssjdn.core.query import search
    marks = bool(args.positive or args.negative)
    if marks and (args.like is not None or args.like_image is not None):
        raise UserError("--positive/--negative refine a search in words or by marked tiles; "
                        "use them without --like/--like-image.")
    if args.new_only and not marks:
        raise UserError("--new-only leaves the marked tiles out of a refined search; mark some "
                        "with --positive ID,... or --negative ID,...")
    if args.query is None and not args.positive and args.like is None and args.like_image is None:
        raise UserError('Say what to find: ssjdn search "a river with boats" --index DIR '
                        '(or --positive TILE_ID,..., --like TILE_ID, or --like-image IMAGE).')
    if args.query is not None and not args.positive:
        search.clean_query(args.query)  # an empty query fails before the model loads
    if args.out:
        from ssjdn.core.geo.export import check_hits_path
        check_hits_path(args.out)
        _refuse_to_replace(args.out, args.overwrite)
    index, model = _open_index(args)
    with index:
        _prepare_search(index)
        if marks:
            from ssjdn.core.query.feedback import search_refined
            hits = search_refined(index, model, args.query, args.positive, args.negative, k=args.k,
                                  skip_marked=args.new_only)
            label = _refined_label(args.query, args.positive, args.negative)
        elif args.like is not None:
            hits = search.search_similar(index, model, args.like, k=args.k)
            label = f"like tile {args.like}"
        elif args.like_image is not None:
            hits = search.search_similar(index, model, args.like_image, k=args.k)
            label = f"like image {args.like_image}"
        else:
            hits = search.search_text(index, model, args.query, k=args.k)
            label = args.query
        _print_hits(hits, label)
        _say_if_short(index, args.k, hits)
        _say_if_rasters_changed(index, hits, args.index)
        if note := search.unread_words_note(model, args.query):
            print(f"note: {note}", file=sys.stderr)
        if not marks and args.like is None and args.like_image is None:
            _say_likelihood(model, hits)
        _remember(index, label, hits)
    if args.out:
        from ssjdn.core.geo.export import export_hits
        print(f"wrote {export_hits(hits, args.out, query=label)}")
    elif hits:
        print(f"To open these in a GIS: ssjdn export --index {args.index} --out hits.geojson")
    return 0


def run_classify(args) -> int:
    from ssjdn.core.geo.export import check_hits_path, export_hits
    from ssjdn.core.query.feedback import classify_tiles
    from ssjdn.core.index.index_store import TileIndex
    from ssjdn.core.query.search import hits_for_ids
    if not 0.0 <= args.threshold <= 1.0:
        raise UserError(f"--threshold is a probability between 0 and 1; got {args.threshold}.")
    # Outputs are checked before every tile is scored (minutes on an archive).
    check_hits_path(args.out)
    _refuse_to_replace(args.out, args.overwrite)
    if args.save_labels is not None and not args.save_labels.strip():
        raise UserError("--save-labels needs a name for the labelled set, e.g. --save-labels "
                        "'solar farms'; leave the option out to store nothing.")
    with TileIndex.open(args.index) as index:
        _refuse_to_replace_label_set(index, args)
        positives, negatives = _classify_marks(index, args)
        if not positives:
            raise UserError("Mark the tiles to find: --positive ID,ID,ID (at least 3), --labels FILE "
                            "or --label-set NAME.")
        scored = classify_tiles(index, positives, negatives, threshold=args.threshold)
        if args.save_labels is not None:
            marks = {**dict.fromkeys(negatives, False), **dict.fromkeys(positives, True)}
            index.save_label_set(args.save_labels, marks, overwrite=True)   # checked before scoring
            print(f"stored {len(set(positives) | set(negatives))} marks as labelled set '{args.save_labels}'")
        hits = hits_for_ids(index, [t for t, _ in scored], [p for _, p in scored])
        label = f"classifier ({len(set(positives))} relevant, {len(set(negatives))} not relevant marked)"
        print(f"{len(hits)} of {index.count} tiles have probability >= {args.threshold:g}")
        if hits:
            _print_hits(hits[:20], label, score_name="prob.")
            _say_if_rasters_changed(index, hits, args.index)
        else:
            print(f"No tile reaches probability {args.threshold:g}: lower --threshold (e.g. 0.5) "
                  f"or mark more relevant tiles.")
        path = export_hits(hits, args.out, query=label,
                           extra=[{"probability": round(h.score, 6)} for h in hits])
    print(f"wrote {path} ({len(hits)} tiles, most probable first)")
    return 0


def _refuse_to_replace(path, overwrite: bool) -> None:
    """An output that exists is an earlier export an analyst may still need: replaced only when
    asked (checked before the work, so a refusal costs nothing)."""
    path = Path(path).expanduser()
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists. Give another --out name, or add --overwrite to "
                        f"replace it.")


def _refuse_to_replace_label_set(index, args) -> None:
    """--save-labels NAME replaces a stored set only when this run read it (--label-set NAME: its
    marks are among those saved) or --overwrite says so."""
    if args.save_labels is None or args.overwrite:
        return
    name = args.save_labels.strip()
    if name in {stored for stored, _, _ in index.label_sets()} and name != (args.label_set or "").strip():
        raise UserError(f"A labelled set named '{name}' already exists in {args.index}. Choose another "
                        f"--save-labels name, add --label-set '{name}' to add these marks to it, or "
                        f"--overwrite to replace it.")


def _classify_marks(index, args) -> tuple[list[int], list[int]]:
    """Marks from --positive/--negative, --label-set and --labels, in that order."""
    positives, negatives = list(args.positive), list(args.negative)
    sources = []
    if args.label_set:
        sources.append((f"labelled set '{args.label_set}'", index.load_label_set(args.label_set)))
    if args.labels:
        from ssjdn.core.query.labels import import_labels
        sources.append((args.labels, import_labels(index, args.labels)))
    for name, marks in sources:
        positives += [t for t, relevant in marks.items() if relevant]
        negatives += [t for t, relevant in marks.items() if not relevant]
        print(f"{name}: {sum(marks.values())} relevant, {len(marks) - sum(marks.values())} not relevant tiles")
    return positives, negatives


def run_match(args) -> int:
    from ssjdn.core.index.index_store import TileIndex
    from ssjdn.core.query.search import rank_captions
    captions = list(args.captions)
    if args.captions_file:
        captions += _read_captions(Path(args.captions_file).expanduser())
    if args.tile is not None:
        if not args.index:
            raise UserError("--tile needs the index it comes from: add --index DIR.")
        index, model = _open_index(args)
        with index:
            ranked = rank_captions(model, index.tile(args.tile), captions, index=index)
            _say_if_tile_raster_changed(index, args.tile, args.index, "scores")
    else:
        model, _ = load_model_arg(args.model)
        ranked = rank_captions(model, args.image, captions)
    width = max(len(c) for c, _ in ranked)
    for rank, (caption, score) in enumerate(ranked, start=1):
        print(f"{rank:3d}  {score:+.4f}  {caption:<{width}}")
    from ssjdn.core.query.search import unread_words_note
    for caption in captions:
        if note := unread_words_note(model, caption):
            print(f"note: {note}", file=sys.stderr)
    return 0


def run_export(args) -> int:
    from ssjdn.core.geo import export
    from ssjdn.core.query import search
    out = Path(args.out)
    if args.salience is not None and args.query:
        export.check_geotiff_path(out)   # before the model loads
        _refuse_to_replace(out, args.overwrite)
        index, model = _open_index(args)
        with index:
            grid = search.tile_query_map(index, model, args.salience, args.query)
            _say_if_tile_raster_changed(index, args.salience, args.index, "maps")
        print(f"wrote {export.write_geotiff(grid, out)} (where '{args.query}' matches in tile "
              f"{args.salience}, {grid.array.shape[1]} x {grid.array.shape[0]} cells)")
        return 0
    if args.salience is not None:
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is an existing file; salience maps go into a folder (one "
                            f"GeoTIFF per map). Give a folder name, e.g. --out salience_{args.salience}/.")
        earlier = sorted(out.glob(f"tile{args.salience}_*.tif")) if out.is_dir() else []
        if earlier:
            _refuse_to_replace(earlier[0], args.overwrite)
        index, model = _open_index(args)
        with index:
            maps = search.tile_salience(index, model, args.salience)
            _say_if_tile_raster_changed(index, args.salience, args.index, "maps")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            from ssjdn.core.errors import os_error_as_user_error
            raise os_error_as_user_error(exc, out, doing="create the folder") or exc
        for (kind, direction, scale), grid in sorted(maps.items()):
            export.write_geotiff(grid, out / f"tile{args.salience}_{kind}_{direction}_scale{scale}.tif")
        print(f"wrote {len(maps)} salience maps to {out}/")
        return 0
    if args.heatmap is not None:
        if not args.query:
            raise UserError('A heatmap shows one query\'s scores: add --query "what to find".')
        export.check_geotiff_path(out)   # before the model loads
        _refuse_to_replace(out, args.overwrite)
        index, model = _open_index(args)
        with index:
            heat = search.score_heatmap(index, model, args.query, args.heatmap)
        print(f"wrote {export.write_geotiff(heat, out)} ({heat.array.shape[1]} x {heat.array.shape[0]} cells)")
        return 0
    export.check_hits_path(out)   # before the search runs
    _refuse_to_replace(out, args.overwrite)
    if args.query:
        index, model = _open_index(args)
        with index:
            _prepare_search(index)
            hits = search.search_text(index, model, args.query, k=args.k or 10)
            _say_if_short(index, args.k or 10, hits)
        label = args.query
    else:
        hits, label = _recall_last(args.index, args.k)
    print(f"wrote {export.export_hits(hits, out, query=label)} ({len(hits)} hits for '{label}')")
    return 0


# -- helpers ----------------------------------------------------------------------------------

def load_model_arg(spec: str | None, device=None):
    """(model, source) from --model: a checkpoint path, a config name, or the shipped default."""
    from ssjdn.core.model.api import model_from_spec
    resolved = model_from_spec(spec, device=device)
    if not resolved.trained:
        print(f"note: '{spec}' is a model config, not a trained checkpoint; results are only "
              f"meaningful with a trained model.", file=sys.stderr)
    return resolved.model, resolved.source


def tile_id_list(text: str) -> list[int]:
    """ "ID,ID,..." -> [int, ...] (argparse type for --positive / --negative)."""
    return [tile_id(part) for part in text.replace(" ", ",").split(",") if part]


def tile_id(text: str) -> int:
    """One tile id (argparse type): a whole number from 0 to 2**63 - 1, as the index stores
    them (raster_id << 32 | tile index); anything else is refused before the model loads."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 1 << 63:
        raise argparse.ArgumentTypeError(f"'{text}' is not a tile id; give the numbers printed by "
                                         "`ssjdn search` in the tile id column (comma-separated "
                                         "for several).")
    return value


def _refined_label(query, positives, negatives) -> str:
    marks = f"+{len(positives)} relevant, -{len(negatives)} not relevant"
    return f"{query} ({marks})" if query and query.strip() else f"tiles like the marked ones ({marks})"


def _open_index(args):
    """Open --index and load the model: --model if given, else the one that built the index."""
    from ssjdn.core.index.index_store import TileIndex
    index = TileIndex.open(args.index)
    if not index.has_tiles:
        index.close()
        raise UserError(f"The index in {args.index} holds no tiles (its first build stopped before "
                        f"any): build it again with ssjdn index RASTER --index {args.index}")
    spec = args.model or index.model_source
    try:
        model, _ = load_model_arg(spec)
        index.check_model(model)
    except BaseException:
        index.close()
        raise
    return index, model


def _finished_index(index_dir):
    """The folder's index, open (it names the model it was built with, so adding rasters needs
    no --model), or None where there is none yet or it is empty or unfinished."""
    from ssjdn.core.index.database import DB_NAME
    from ssjdn.core.index.index_store import TileIndex
    if not (Path(index_dir) / DB_NAME).exists():
        return None
    try:
        return TileIndex.open(index_dir)
    except UserError:
        return None   # empty or unfinished: building it again is what the user is doing


def _add_index_arg(parser) -> None:
    parser.add_argument("--index", required=True, metavar="DIR",
                        help="index folder (created by `ssjdn index`)")


def _add_model_arg(parser) -> None:
    parser.add_argument("--model", metavar="CHECKPOINT",
                        help="model checkpoint (.safetensors) or config name; default: the model that "
                             "built the index, else the shipped default model "
                             "(resources/ssjdn-default.safetensors)")


def _say_if_short(index, asked: int, hits) -> None:
    note = index.short_result_note(asked, len(hits))
    if note is not None:
        print(f"note: {note}", file=sys.stderr)


def _say_if_rasters_changed(index, hits, index_arg) -> None:
    """A hit of a raster modified or removed since it was indexed was ranked by pixels that are
    no longer there: say so, with the command that brings its tiles up to date."""
    for path, state in sorted(index.changed_rasters({h.raster_path for h in hits}).items()):
        if state == "changed":
            print(f"note: {Path(path).name} changed on disk since it was indexed: its hits were "
                  f"ranked by its old pixels. {_reindex_hint(path, index_arg)}", file=sys.stderr)
        else:
            print(f"note: {Path(path).name} is no longer at {path}: its hits are ranked as indexed, "
                  f"but their pixels cannot be read (move it back, or index it where it is now).",
                  file=sys.stderr)


def _say_if_tile_raster_changed(index, tile_id: int, index_arg, what: str) -> None:
    """`what` (scores, maps) was computed from the tile's pixels as they are now: when its raster
    changed since it was indexed, they are not the pixels its search hit was ranked by."""
    path = index.tile(tile_id).raster_path
    if index.changed_rasters([path]).get(path) == "changed":
        print(f"note: {Path(path).name} changed on disk since it was indexed: these {what} are of "
              f"the tile's current pixels, not of those it was found by. "
              f"{_reindex_hint(path, index_arg)}", file=sys.stderr)


def _reindex_hint(path, index_arg) -> str:
    return f"To encode it again: ssjdn index {path} --index {index_arg}"


def _print_hits(hits, label: str, score_name: str = "score") -> None:
    if not hits:   # never an empty index: _open_index refuses those
        print(f"No tiles found for: {label}.")
        return
    likely = any(h.likelihood is not None for h in hits)
    several_tilings = len({h.tiling for h in hits}) > 1   # then each line names its tile size
    print(f"top {len(hits)} for: {label}")
    print(f"{'rank':>4}  {score_name:>7}  {'match' if likely else '':>5}  {'tile id':>12}  {'lon':>11} {'lat':>10}  "
          f"raster [col, row, w, h]")
    for rank, hit in enumerate(hits, start=1):
        if hit.bounds_wgs84 is not None:
            west, south, east, north = hit.bounds_wgs84
            lon = ((west + east) / 2 + 180.0) % 360.0 - 180.0   # a tile across 180 E may pass it
            where = f"{lon:11.6f} {(south + north) / 2:10.6f}"
        else:
            where = f"{'(no CRS)':>22}"
        w = hit.window
        match = f"{hit.likelihood:5.0%}" if hit.likelihood is not None else ""
        tiling = f"  ({hit.tiling})" if several_tilings and hit.tiling else ""
        tiling += f"  item {hit.stac['item']}" if hit.stac else ""
        print(f"{rank:4d}  {hit.score:+.4f}  {match:>5}  {hit.tile_id:12d}  {where}  {Path(hit.raster_path).name} "
              f"[{int(w.col_off)}, {int(w.row_off)}, {int(w.width)}, {int(w.height)}]{tiling}")


def _say_likelihood(model, hits) -> None:
    """What 'match' means, or once that this model has none (no calibration fitted for it)."""
    from ssjdn.core.model.calibration import GOOD_MATCH, calibration_of
    calibration = calibration_of(model)
    if calibration is None:
        print("(no match likelihood: this model has no calibration; `ssjdn calibrate` fits one)")
    elif hits and all(h.likelihood < GOOD_MATCH for h in hits):
        print(f"No good match: no tile reaches a {GOOD_MATCH:.0%} match likelihood.")
    else:
        print(f"match: how often tiles scoring this matched captions of this kind "
              f"({calibration.fitted_on}).")


def _read_captions(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"Captions file not found: {path}. Give a text file with one caption "
                        f"per line.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"Cannot read the captions file {path} ({exc}); give a UTF-8 text file "
                        f"with one caption per line.") from None


def _remember(index, label: str, hits) -> None:
    """Save the hits for `ssjdn export`, each with a fingerprint of its tile (raster, window,
    vector) so that an export after the tiles changed is refused instead of exporting others."""
    from ssjdn.core.files import atomic_path
    # A search's hits carry their stored vectors (search.search_vector): nothing is read again.
    record = {"query": label,
              "hits": [[h.tile_id, h.score, _tile_fingerprint(h, h.vector)] for h in hits],
              "likelihoods": [h.likelihood for h in hits]}
    try:
        with atomic_path(Path(index.index_dir) / LAST_SEARCH) as tmp:
            tmp.write_text(json.dumps(record), encoding="utf-8")
    except (UserError, OSError) as exc:
        print(f"note: these hits were not remembered for `ssjdn export`: the index folder is "
              f"read-only or full ({exc}). To save them, add --out hits.geojson to the search, or "
              f"run `ssjdn export --query ...` with --out in a writable place.", file=sys.stderr)


def _recall_last(index_dir, k):
    from ssjdn.core.index.index_store import TileIndex
    from ssjdn.core.query.search import hits_for_ids
    path = Path(index_dir) / LAST_SEARCH
    if not path.is_file():
        raise UserError(f'No search to export yet in {index_dir}: run `ssjdn search "..." --index '
                        f'{index_dir}` first, or give --query.')
    query, saved, likelihoods = _read_last_search(path)
    saved = saved[:k] if k else saved
    with TileIndex.open(index_dir) as index:
        hits = hits_for_ids(index, [h[0] for h in saved], [h[1] for h in saved])
        current = index.vectors([h.tile_id for h in hits]) if hits else []
        fingerprints = [_tile_fingerprint(h, v) for h, v in zip(hits, current)]
    if fingerprints != [h[2] for h in saved]:
        raise UserError(f"The last search in {index_dir} ('{query}') names tiles that `ssjdn index` "
                        f"has re-tiled, re-encoded or removed since, so its hits would be wrong. "
                        f"Search again (ssjdn search ... --index {index_dir}), then export.")
    return [replace(h, likelihood=p) for h, p in zip(hits, likelihoods)], query


def _read_last_search(path: Path) -> tuple[str, list, list]:
    """(query, [[tile_id, score, fingerprint], ...], likelihoods) from last_search.json, or a
    UserError (a file from before likelihoods has none: None each)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        query, saved = record["query"], record["hits"]
        likelihoods = record.get("likelihoods") or [None] * len(saved)
        if not isinstance(query, str) or not all(
                isinstance(h, list) and len(h) == 3 and isinstance(h[0], int)
                and isinstance(h[1], (int, float)) and isinstance(h[2], str) for h in saved):
            raise ValueError("unexpected content")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is damaged or from an older version ({exc}), so the last search "
                        f"cannot be exported. Search again (ssjdn search ... --index "
                        f"{path.parent}), then export.") from None
    return query, saved, likelihoods


def _tile_fingerprint(hit, vector) -> str:
    """Short hash of what a hit refers to: its raster file, its window and its stored vector."""
    w = hit.window
    key = f"{hit.raster_path}|{int(w.col_off)},{int(w.row_off)},{int(w.width)},{int(w.height)}|"
    return hashlib.sha1(key.encode() + vector.tobytes()).hexdigest()[:16]


# -- argument types: bad numbers are refused by the parser, before anything loads ---------------

def _positive_int(text: str) -> int:
    value = _number(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text}: give a whole number of 1 or more")
    return value


def _tile_px(text: str) -> int:
    value = _number(text, int, "a whole number of pixels")
    if value < 8:
        raise argparse.ArgumentTypeError(f"invalid tile size {text}: give at least 8 pixels (typically 256)")
    return value


def _list_of(parse):
    """An argparse type: one value, or several separated by commas (a list either way)."""
    def parse_list(text: str) -> list:
        return [parse(part) for part in text.split(",") if part.strip()] or [parse(text)]
    return parse_list


def _positive_float(text: str) -> float:
    value = _number(text, float, "a number")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"invalid value {text}: give a positive number of metres")
    return value


def _overlap(text: str) -> float:
    value = _number(text, float, "a fraction")
    if not 0.0 <= value <= 0.9:
        raise argparse.ArgumentTypeError(f"invalid overlap {text}: give a fraction from 0 to 0.9 "
                                         f"(e.g. 0.25)")
    return value


def _max_nodata(text: str) -> float:
    from ssjdn.core.index.indexing import check_max_nodata
    try:
        return check_max_nodata(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _nodata_setting(text: str):
    from ssjdn.core.geo.raster import normalize_nodata
    try:
        return normalize_nodata(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _number(text: str, kind, what: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: give {what}") from None


class _first_ctrl_c_sets:
    """The first Ctrl-C asks the indexer to stop cleanly (saving its work); a second one aborts."""

    def __init__(self, event: threading.Event):
        self.event = event
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.event.is_set():
            raise KeyboardInterrupt
        print("\nStopping after the tiles in progress (Ctrl-C again to abort)...", file=sys.stderr)
        self.event.set()

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
