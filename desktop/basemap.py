"""A background map from a user-given XYZ or WMTS tile URL (no Qt): templates, tile math, fetch.

Nothing is fetched unless the user sets a URL. Tiles are the usual web-map pyramid: EPSG:3857
(Web Mercator), 256 px tiles, tile (0, 0) at the north-west corner. An XYZ template names them
{z}/{x}/{y}; a WMTS REST template in the GoogleMapsCompatible tile matrix set names the same
tiles {TileMatrix}/{TileCol}/{TileRow}. Other WMTS matrix sets (and GetCapabilities) are not
read: give their REST template in Web Mercator.
"""
from __future__ import annotations

import math
import urllib.request

from ssjdn.core.errors import UserError

WEB_MERCATOR = "EPSG:3857"
HALF_WORLD = 20037508.342789244   # metres from the centre of EPSG:3857 to its edge
TILE_PX = 256
MAX_ZOOM = 19
MAX_TILES = 64                    # per view: a zoomed-out view never asks for hundreds
FETCH_TIMEOUT_S = 10
WMTS_NAMES = {"{TileMatrix}": "{z}", "{TileCol}": "{x}", "{TileRow}": "{y}"}


def parse_template(url: str) -> str:
    """The URL as an XYZ template ({z}, {x}, {y}); a UserError saying what is missing."""
    url = (url or "").strip()
    for wmts, xyz in WMTS_NAMES.items():
        url = url.replace(wmts, xyz)
    if not url.lower().startswith(("http://", "https://", "file://")):
        raise UserError(f"'{url}' is not a tile URL: give an http(s) XYZ template such as "
                        "https://tile.openstreetmap.org/{z}/{x}/{y}.png, or a WMTS REST template "
                        "with {TileMatrix}, {TileRow} and {TileCol}.")
    missing = [name for name in ("{z}", "{x}", "{y}") if name not in url]
    if missing:
        raise UserError(f"The tile URL lacks {', '.join(missing)}: an XYZ template names the zoom "
                        "{z} and the tile column {x} and row {y}, e.g. "
                        "https://tile.openstreetmap.org/{z}/{x}/{y}.png.")
    return url


def zoom_for(units_per_px: float) -> int:
    """The zoom whose tiles have about the view's resolution (EPSG:3857 units per screen px)."""
    if units_per_px <= 0 or not math.isfinite(units_per_px):
        return 0
    zoom = math.ceil(math.log2(2 * HALF_WORLD / (TILE_PX * units_per_px)))
    return min(MAX_ZOOM, max(0, zoom))


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of a tile in EPSG:3857."""
    size = 2 * HALF_WORLD / 2 ** z
    left, top = -HALF_WORLD + x * size, HALF_WORLD - y * size
    return left, top - size, left + size, top


def tiles_covering(bounds, z: int, limit: int = MAX_TILES) -> list[tuple[int, int, int]]:
    """The tiles of zoom z over EPSG:3857 bounds, from the centre out, at most `limit`."""
    left, bottom, right, top = bounds
    n = 2 ** z
    size = 2 * HALF_WORLD / n
    clamp = lambda v: min(n - 1, max(0, int(math.floor(v))))  # noqa: E731
    x0, x1 = clamp((left + HALF_WORLD) / size), clamp((right + HALF_WORLD) / size)
    y0, y1 = clamp((HALF_WORLD - top) / size), clamp((HALF_WORLD - bottom) / size)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    tiles = [(z, x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)]
    tiles.sort(key=lambda t: (t[1] - cx) ** 2 + (t[2] - cy) ** 2)
    return tiles[:limit]


def tile_url(template: str, z: int, x: int, y: int) -> str:
    return template.replace("{z}", str(z)).replace("{x}", str(x)).replace("{y}", str(y))


def fetch_tile(url: str, timeout: float = FETCH_TIMEOUT_S) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "ssjdn-explorer"})
    with urllib.request.urlopen(request, timeout=timeout) as response:   # noqa: S310 - the user's URL
        return response.read()
