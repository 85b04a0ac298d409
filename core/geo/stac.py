"""STAC catalogs in: the image assets of a STAC Item, Collection or Catalog as rasters to index.

Open imagery is published as STAC catalogs of Cloud-Optimized GeoTIFFs. `read_stac` walks one
(a local JSON file or an http(s) URL, read with pystac), keeps the items that pass the bbox and
datetime filters, and names one image asset of each (`--asset KEY`, default the visual / RGB
one) as a GDAL path: a local file as is, a remote one through /vsicurl/ (or /vsis3/ ...), read
windowed like any object in storage, never downloaded whole. Each asset carries its item's id,
collection and datetime, which the index keeps with the raster and hits and exports carry; and
a version of the item, so a rerun encodes again only items that changed.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ssjdn.core.errors import UserError

# Asset keys and roles taken, in this order, when no --asset is given: the true-colour image.
DEFAULT_ASSET_KEYS = ("visual", "rgb", "image", "ortho", "data")
_IMAGE_TYPES = ("image/tiff", "image/vnd.stac.geotiff", "image/jp2", "image/png", "image/jpeg")
_REMOTE = {"http://": "/vsicurl/", "https://": "/vsicurl/", "s3://": "/vsis3/", "gs://": "/vsigs/"}


@dataclass(frozen=True)
class StacAsset:
    """One image asset to index: its GDAL path and where it came from."""

    path: str
    item_id: str
    collection: str | None
    datetime: str | None
    version: str        # changes when the item or its asset does

    @classmethod
    def from_source(cls, path: str, source: dict) -> "StacAsset":
        return cls(path, source["item"], source.get("collection"), source.get("datetime"),
                   source.get("version", ""))

    @property
    def source(self) -> dict:
        """What the index keeps with the raster (and compares: a new version re-encodes)."""
        return {"item": self.item_id, "collection": self.collection, "datetime": self.datetime,
                "version": self.version}


def is_stac_source(text) -> bool:
    """An http(s) URL, or a local .json file: given to `ssjdn index`, it is read as STAC (a
    remote raster is given as a GDAL path, /vsicurl/URL)."""
    text = str(text)
    return text.startswith(("http://", "https://")) or text.lower().endswith(".json")


def expand_inputs(inputs, asset: str | None = None, bbox=None, datetime_range: str | None = None
                  ) -> tuple[list, list[str]]:
    """`ssjdn index`'s inputs with each STAC source (is_stac_source) replaced by its assets;
    (inputs, warnings). The STAC options without a STAC source are a UserError."""
    expanded, warnings = [], []
    for entry in inputs:
        if is_stac_source(entry):
            assets, more = read_stac(entry, asset, bbox, datetime_range)
            expanded += assets
            warnings += more
        else:
            expanded.append(entry)
    if len(expanded) == len(inputs) and not any(isinstance(e, StacAsset) for e in expanded) and \
            (asset or bbox or datetime_range):
        raise UserError("--asset, --bbox and --datetime choose among the items of a STAC catalog; "
                        "give one (a STAC JSON file or an http(s) URL).")
    return expanded, warnings


def read_stac(source, asset: str | None = None, bbox=None, datetime_range: str | None = None
              ) -> tuple[list[StacAsset], list[str]]:
    """(assets to index, warnings) of a STAC Item, Collection or Catalog at `source`; items
    outside `bbox` (west, south, east, north in degrees) or `datetime_range` are left out, and
    an item without the asset is left out with a warning. UserError if the source cannot be
    read or is not STAC, or if nothing is left."""
    import pystac
    bbox = parse_bbox(bbox) if bbox is not None else None
    start, end = parse_datetime_range(datetime_range) if datetime_range else (None, None)
    root = _read(source)
    if isinstance(root, pystac.Item):
        items = [root]
    else:
        items = list(root.get_items(recursive=True))
    assets, warnings = [], []
    kept = [i for i in items if _in_bbox(i, bbox) and _in_time(i, start, end)]
    for item in kept:
        chosen = choose_asset(item, asset)
        if chosen is None:
            have = ", ".join(item.assets) or "none"
            warnings.append(f"skipped STAC item {item.id}: it has no "
                            f"{'asset ' + repr(asset) if asset else 'visual (RGB) image asset'} "
                            f"(its assets: {have}); choose one with --asset KEY.")
            continue
        key, entry = chosen
        assets.append(StacAsset(gdal_path(entry.get_absolute_href()), item.id, item.collection_id,
                                _item_time(item), _version(item, key)))
    if not assets:
        raise UserError(f"No image to index in {source}: {len(items)} item(s), {len(kept)} within "
                        f"the filters, none with a usable asset. " + (warnings[0] if warnings else
                        "Widen --bbox / --datetime."))
    return assets, warnings


def choose_asset(item, key: str | None):
    """(key, asset) to index of `item`: `key` if given, else the visual / RGB image."""
    if key is not None:
        return (key, item.assets[key]) if key in item.assets else None
    for name in DEFAULT_ASSET_KEYS:
        if name in item.assets and _is_image(item.assets[name]):
            return name, item.assets[name]
    for name, entry in item.assets.items():
        if "visual" in (entry.roles or []) and _is_image(entry):
            return name, entry
    images = [(n, a) for n, a in item.assets.items() if _is_image(a) and "data" in (a.roles or ["data"])]
    return images[0] if len(images) == 1 else None


def gdal_path(href: str) -> str:
    """The path GDAL reads an asset's href by: remote ones through its virtual file systems."""
    for scheme, prefix in _REMOTE.items():
        if href.startswith(scheme):
            return prefix + (href if prefix == "/vsicurl/" else href[len(scheme):])
    if href.startswith("file://"):
        href = href[len("file://"):]
    return str(Path(href).resolve())


def parse_bbox(value) -> tuple[float, float, float, float]:
    """west,south,east,north in degrees, from text or a sequence; UserError otherwise."""
    try:
        parts = [float(v) for v in (value.split(",") if isinstance(value, str) else value)]
    except (TypeError, ValueError):
        parts = []
    if len(parts) != 4 or not (-180 <= parts[0] <= 180 and -90 <= parts[1] < parts[3] <= 90):
        raise UserError(f"--bbox is west,south,east,north in degrees, e.g. 2.25,48.8,2.42,48.9; "
                        f"got {value!r}.")
    return tuple(parts)


def parse_datetime_range(text: str):
    """(start, end) aware datetimes (None: open) of "2024-01-01/2024-06-30", "2024-05-01", or
    with ".." for an open end; UserError otherwise."""
    parts = str(text).split("/")
    if len(parts) > 2:
        raise UserError(f"--datetime is a date or a range START/END (.. for an open end); got {text!r}.")
    bounds = [None if p in ("", "..") else _parse_time(p, text) for p in parts]
    start, end = bounds[0], bounds[-1]
    if len(parts) == 1 and len(parts[0]) <= 10:   # a whole day
        end = start.replace(hour=23, minute=59, second=59, microsecond=999999)
    return start, end


# ---------------------------------------------------------------------------------------------

def _read(source):
    import pystac
    try:
        return pystac.read_file(str(source))
    except FileNotFoundError:
        raise UserError(f"STAC file not found: {source}.") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{source} is not JSON, so not a STAC Item, Collection or Catalog. A remote "
                        f"raster is given as a GDAL path: /vsicurl/{source}") from None
    except pystac.STACError as exc:
        raise UserError(f"{source} is not a STAC Item, Collection or Catalog ({exc}).") from None
    except OSError as exc:   # urllib: connection refused, 404, timeouts
        raise UserError(f"Could not read the STAC catalog {source}: {exc}. Check the URL and the "
                        f"network.") from None


def _parse_time(part: str, whole: str) -> datetime:
    try:
        value = datetime.fromisoformat(part.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"--datetime is a date or a range START/END in ISO 8601 (2024-05-01, "
                        f"2024-01-01/2024-06-30, 2024-01-01/..); got {whole!r}.") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _item_span(item):
    props = item.properties
    if item.datetime is not None:
        return item.datetime, item.datetime
    start, end = props.get("start_datetime"), props.get("end_datetime")
    return (_parse_time(start, start) if start else None, _parse_time(end, end) if end else None)


def _item_time(item) -> str | None:
    start, _ = _item_span(item)
    return start.isoformat() if start else None


def _in_time(item, start, end) -> bool:
    if start is None and end is None:
        return True
    first, last = _item_span(item)
    if first is None:
        return False
    first = first if first.tzinfo else first.replace(tzinfo=timezone.utc)
    last = (last or first) if (last or first).tzinfo else (last or first).replace(tzinfo=timezone.utc)
    return (start is None or last >= start) and (end is None or first <= end)


def _in_bbox(item, bbox) -> bool:
    if bbox is None:
        return True
    if not item.bbox:
        return False
    box = item.bbox
    west, south, east, north = (box[0], box[1], box[3], box[4]) if len(box) == 6 else box
    return west <= bbox[2] and east >= bbox[0] and south <= bbox[3] and north >= bbox[1]


def _is_image(entry) -> bool:
    media = (entry.media_type or "").lower()
    return any(media.startswith(t) for t in _IMAGE_TYPES) or (
        not media and entry.href.lower().endswith((".tif", ".tiff", ".jp2")))


def _version(item, key: str) -> str:
    """A digest of the item's properties and the chosen asset: a republished item (a new
    asset, a new `updated` time, a new checksum) gets a new version."""
    record = {"properties": item.properties, "asset": item.assets[key].to_dict()}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]
