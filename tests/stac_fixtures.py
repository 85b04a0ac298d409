"""A small STAC catalog of COGs written by the tests, and a localhost HTTP server for it.

The server answers HEAD and GET with byte ranges (what GDAL's /vsicurl/ asks), only on
127.0.0.1, counts the bytes it sends per path, and shuts itself down after `lifetime_s`
should a test forget to.
"""
from __future__ import annotations

import threading
from datetime import datetime, timezone
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from engine_fixtures import UTM31N, scene

ITEM_DATES = ("2024-01-10", "2024-03-05", "2024-06-20")
COLLECTION = "drone-demo"


def write_cog(path: Path, data: np.ndarray, origin, res=0.3) -> str:
    with rasterio.open(path, "w", driver="COG", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype="uint8", crs=UTM31N, blocksize=256,
                       transform=from_origin(origin[0], origin[1], res, res)) as dst:
        dst.write(data)
    return str(path)


def write_catalog(root: Path, broken: bool = True) -> Path:
    """catalog.json -> collection -> 3 items with a COG 'visual' asset each (and 'thumbnail');
    with `broken`, a 4th item whose asset file does not exist. Returns catalog.json's path."""
    import pystac
    from rasterio.warp import transform_bounds
    root.mkdir(parents=True, exist_ok=True)
    catalog = pystac.Catalog("demo", "Test catalog of COGs")
    collection = pystac.Collection(COLLECTION, "Three drone flights",
                                   pystac.Extent(pystac.SpatialExtent([[-180, -90, 180, 90]]),
                                                 pystac.TemporalExtent([[None, None]])))
    catalog.add_child(collection)
    items = [(f"flight-{i}", date, (500_000.0 + 200 * i, 5_700_000.0)) for i, date in enumerate(ITEM_DATES)]
    if broken:
        items.append(("flight-lost", "2024-07-01", (500_000.0, 5_700_200.0)))
    for n, (item_id, date, origin) in enumerate(items):
        cog = root / f"{item_id}.tif"
        data = scene(256, 320, seed=n)
        if item_id != "flight-lost":
            write_cog(cog, data, origin)
        bounds = (origin[0], origin[1] - 256 * 0.3, origin[0] + 320 * 0.3, origin[1])
        west, south, east, north = transform_bounds(UTM31N, "EPSG:4326", *bounds)
        item = pystac.Item(item_id, {"type": "Polygon", "coordinates": [[[west, south], [east, south],
                           [east, north], [west, north], [west, south]]]}, [west, south, east, north],
                           datetime.fromisoformat(date).replace(tzinfo=timezone.utc), {})
        item.add_asset("visual", pystac.Asset(str(cog), media_type=pystac.MediaType.COG, roles=["visual"]))
        item.add_asset("thumbnail", pystac.Asset(str(root / "thumb.png"), media_type=pystac.MediaType.PNG,
                                                 roles=["thumbnail"]))
        collection.add_item(item)
    catalog.normalize_hrefs(str(root))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"


class _RangeHandler(SimpleHTTPRequestHandler):
    """Static files with single byte ranges (RFC 7233), as GDAL's /vsicurl/ reads them."""

    def __init__(self, *args, served=None, **kwargs):
        self.served = served
        super().__init__(*args, **kwargs)

    def log_message(self, *args):   # quiet: pytest shows stderr of failing tests
        pass

    def send_head(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404, "not found")
            return None
        size = path.stat().st_size
        start, end = 0, size - 1
        ranged = self.headers.get("Range", "").startswith("bytes=")
        if ranged:
            first, _, last = self.headers["Range"][len("bytes="):].partition("-")
            start = int(first) if first else max(0, size - int(last))
            end = min(int(last), size - 1) if first and last else size - 1
        self.send_response(206 if ranged else 200)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        handle = open(path, "rb")
        handle.seek(start)
        self._remaining = end - start + 1
        return handle

    def copyfile(self, source, outputfile):
        data = source.read(self._remaining)
        self.served[self.path] = self.served.get(self.path, 0) + len(data)
        outputfile.write(data)


class StacServer:
    """Serve `folder` on http://127.0.0.1:PORT/ until stop() or `lifetime_s` seconds."""

    def __init__(self, folder: Path, lifetime_s: float = 120.0):
        self.served: dict[str, int] = {}   # bytes sent per URL path
        handler = partial(_RangeHandler, directory=str(folder), served=self.served)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._timer = threading.Timer(lifetime_s, self.stop)
        self._timer.daemon = True

    def __enter__(self) -> "StacServer":
        self._thread.start()
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._timer.cancel()
        self._server.shutdown()
        self._server.server_close()
