"""GIS basics of the map: reprojection of geographic rasters, a scale bar, the measure tool,
zoom-to-layer from the Layers panel, and a background map from an XYZ URL served by a tile
server that the test itself starts on 127.0.0.1."""
from __future__ import annotations

import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from desktop_fixtures import make_window, user_dirs  # noqa: F401
from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QPointF, Qt
from PySide6.QtGui import QColor, QImage
from pyproj import Geod

from engine_fixtures import UTM_ORIGIN, scene, write_raster
from ssjdn.desktop import basemap
from ssjdn.desktop.geo import geodesic_area, geodesic_length

GEOD = Geod(ellps="WGS84")


@pytest.fixture
def window(make_window):
    """A window with no model work: these tests are about the map only."""
    return make_window(auto_index=False)


def geographic_raster(tmp_path, name="geo.tif", lon=4.90, lat=52.37, cols=320, rows=256, deg=2e-5):
    return write_raster(tmp_path / name, scene(rows, cols, seed=2), crs="EPSG:4326", res=deg, origin=(lon, lat))


def ground_aspect(lon, lat, cols, rows, deg) -> float:
    """Width / height on the ellipsoid of a lon/lat raster, through its centre."""
    west, east, north = lon, lon + cols * deg, lat
    south = lat - rows * deg
    mid_lat, mid_lon = (north + south) / 2, (west + east) / 2
    width = GEOD.inv(west, mid_lat, east, mid_lat)[2]
    height = GEOD.inv(mid_lon, south, mid_lon, north)[2]
    return width / height


def drawn_aspect(window, path) -> float:
    item = window.map_view.rasters[path]
    corners = [item.mapToScene(QPointF(x, y)) for x, y in ((0, 0), (item.info.width, 0), (0, item.info.height))]
    width = math.dist((corners[0].x(), corners[0].y()), (corners[1].x(), corners[1].y()))
    height = math.dist((corners[0].x(), corners[0].y()), (corners[2].x(), corners[2].y()))
    return width / height


def test_a_geographic_raster_is_drawn_in_utm_keeping_its_aspect_on_the_ground(window, tmp_path):
    path = geographic_raster(tmp_path)
    window.open_rasters([path])
    assert window.map_view.frame.crs.to_epsg() == 32631 == window.model.frame.crs.to_epsg()
    assert window.status.crs_label.text() == "CRS: EPSG:32631"
    assert "EPSG:4326 are reprojected" in window.status.crs_label.toolTip()
    expected = ground_aspect(4.90, 52.37, 320, 256, 2e-5)
    # Drawn as plate carree it would be 1 / cos(52.4 deg) = 1.64 times too wide.
    assert drawn_aspect(window, path) == pytest.approx(expected, rel=0.02)


def test_a_geographic_raster_opened_beside_a_projected_one_keeps_its_aspect(window, tmp_path):
    utm = write_raster(tmp_path / "utm.tif", scene(256, 320, seed=1))
    geo = geographic_raster(tmp_path, lon=3.0, lat=51.45)
    window.open_rasters([utm, geo])
    assert window.map_view.frame.crs.to_epsg() == 32631
    assert drawn_aspect(window, geo) == pytest.approx(ground_aspect(3.0, 51.45, 320, 256, 2e-5), rel=0.02)
    assert drawn_aspect(window, utm) == pytest.approx(320 / 256, rel=1e-9)


def test_geodesic_length_matches_the_published_jfk_to_heathrow_geodesic():
    # GeographicLib's documented example: JFK (40.6 N, 73.8 W) to LHR (51.6 N, 0.5 W) on WGS84.
    assert geodesic_length([(-73.8, 40.6), (-0.5, 51.6)]) == pytest.approx(5_551_759.4003, rel=0.005)


def utm_window(window, tmp_path):
    path = write_raster(tmp_path / "utm.tif", scene(256, 320, seed=1))   # 96 x 76.8 m at 0.3 m
    window.open_rasters([path])
    window.resize(900, 700)
    window.show()
    window.map_view.fit_all()
    return path


def click_map(qtbot, view, x, y, double=False):
    """Click the map at map coordinates (x, y)."""
    pos = view.mapFromScene(QPointF(x, view.frame.y_sign * y))
    (qtbot.mouseDClick if double else qtbot.mouseClick)(view.viewport(), Qt.MouseButton.LeftButton, pos=pos)


def test_measure_tool_gives_length_and_area_on_the_ellipsoid(qtbot, window, tmp_path):
    utm_window(window, tmp_path)
    view = window.map_view
    window.measure_action.trigger()
    assert view.measuring
    x0, y0 = UTM_ORIGIN[0] + 10, UTM_ORIGIN[1] - 60      # a 60 x 40 m rectangle in the raster
    corners = [(x0, y0), (x0 + 60, y0), (x0 + 60, y0 + 40), (x0, y0 + 40)]
    for x, y in corners:
        click_map(qtbot, view, x, y)
    length, area, perimeter = view.measurement()
    # Clicks land on screen pixels: the points are the corners to within a pixel.
    metres_per_px = 1 / view.transform().m11()
    assert all(math.dist(p, c) <= 1.5 * metres_per_px for p, c in zip(view.measure_points, corners))
    # Reference: plane geometry of the clicked points in UTM near its central meridian, where the
    # grid's scale factor (0.9996) is within 0.05 % of the ellipsoid's.
    points = view.measure_points
    plane_length = sum(math.dist(a, b) for a, b in zip(points, points[1:]))
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    plane_area = abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(points)))) / 2
    assert length == pytest.approx(plane_length, rel=0.005)
    assert perimeter == pytest.approx(plane_length + math.dist(points[-1], points[0]), rel=0.005)
    assert area == pytest.approx(plane_area, rel=0.005)
    assert plane_area == pytest.approx(60 * 40, rel=0.05)
    assert "area" in window.statusBar().currentMessage() and "measure" in view.layers
    # Double-click ends the line; the next click starts a new one; Esc clears.
    click_map(qtbot, view, x0, y0, double=True)
    click_map(qtbot, view, x0 + 30, y0)
    assert len(view.measure_points) == 1
    qtbot.keyClick(view, Qt.Key.Key_Escape)
    assert view.measure_points == [] and "measure" not in view.layers
    window.measure_action.trigger()
    assert not view.measuring


def test_geodesic_area_of_a_utm_square_km(window, tmp_path):
    utm_window(window, tmp_path)
    frame = window.map_view.frame
    square = [frame.to_lonlat(UTM_ORIGIN[0] + dx, UTM_ORIGIN[1] + dy) for dx, dy in
              ((0, 0), (1000, 0), (1000, 1000), (0, 1000))]
    assert geodesic_area(square) == pytest.approx(1e6 / 0.9996 ** 2, rel=0.005)


def test_scale_bar_shows_a_round_ground_length_of_the_right_size(window, tmp_path):
    utm_window(window, tmp_path)
    view = window.map_view
    bar = view.scale_bar
    assert bar.isVisible() and bar.text.endswith(" m")
    metres = float(bar.text.split()[0])
    assert metres in {1, 2, 5, 10, 20, 50, 100}
    # Map units are UTM metres: screen pixels per metre is the view's scale (grid factor 0.9996).
    assert bar.px == pytest.approx(metres * view.transform().m11(), rel=0.01)
    view.scale(0.1, 0.1)                                   # zoomed out: a longer bar
    assert float(bar.text.split()[0]) * (1000 if bar.text.endswith("km") else 1) > metres


def test_zoom_to_layer_from_the_layers_panel(qtbot, window, tmp_path):
    near = write_raster(tmp_path / "near.tif", scene(256, 320, seed=1))
    far = write_raster(tmp_path / "far.tif", scene(256, 320, seed=3),
                       origin=(UTM_ORIGIN[0] + 5000, UTM_ORIGIN[1]))
    window.open_rasters([near, far])
    window.resize(900, 700)
    window.show()
    view, panel = window.map_view, window.layer_panel
    view.fit_all()
    row = panel.row_for(f"raster:{far}")
    where = panel.list.visualItemRect(row).center()
    qtbot.mouseClick(panel.list.viewport(), Qt.MouseButton.LeftButton, pos=where)   # a real double click presses first
    qtbot.mouseDClick(panel.list.viewport(), Qt.MouseButton.LeftButton, pos=where)
    visible = view.mapToScene(view.viewport().rect()).boundingRect()
    far_rect, near_rect = view.rasters[far].sceneBoundingRect(), view.rasters[near].sceneBoundingRect()
    assert visible.adjusted(-1, -1, 1, 1).contains(far_rect) and not visible.intersects(near_rect)
    assert visible.width() < 3 * far_rect.width()


class TileServer:
    """A tile server on 127.0.0.1 for one test: any path is a 256 px PNG; requests are
    recorded; it stops when the test ends, and on its own after a minute at most."""

    def __init__(self):
        image = QImage(256, 256, QImage.Format.Format_RGB32)
        image.fill(QColor(200, 30, 30))
        data = QByteArray()
        buffer = QBuffer(data)
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        image.save(buffer, "PNG")
        png, requests = bytes(data), []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(png)))
                self.end_headers()
                self.wfile.write(png)

            def log_message(self, *args):
                pass

        self.requests = requests
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self._deadline = threading.Timer(60, self.server.shutdown)
        self._deadline.daemon = True
        self._deadline.start()

    def stop(self):
        self._deadline.cancel()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tile_server():
    server = TileServer()
    yield server
    server.stop()


def test_background_map_tiles_come_only_from_the_url_the_user_sets(qtbot, window, make_window, tmp_path,
                                                                   tile_server):
    utm_window(window, tmp_path)
    view = window.map_view
    qtbot.wait(300)
    view.refresh_details()
    assert tile_server.requests == [] and "background" not in view.layers   # nothing without a URL

    window.dialogs.set_background(f"{tile_server.url}/{{z}}/{{x}}/{{y}}.png")
    qtbot.waitUntil(lambda: view.background_settled() and bool(view.layer_items("background")), timeout=20_000)
    # The tile under the raster's centre, at the zoom of the view's resolution, was fetched and
    # drawn there, under the raster.
    raster = next(iter(view.rasters.values()))
    centre = raster.sceneBoundingRect().center()
    lon, lat = view.frame.to_lonlat(centre.x(), view.frame.y_sign * centre.y())
    zoom = int(tile_server.requests[0].split("/")[1])
    n = 2 ** zoom
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    assert f"/{zoom}/{x}/{y}.png" in tile_server.requests
    assert len(tile_server.requests) <= basemap.MAX_TILES
    drawn = [item for item in view.layer_items("background") if item.sceneBoundingRect().contains(centre)]
    assert drawn and all(item.zValue() < raster.zValue() for item in drawn)

    # Remembered: the next start draws it once a georeferenced raster opens.
    again = make_window(auto_index=False)
    again.open_rasters([next(iter(view.rasters))])
    assert again.map_view.background_url == f"{tile_server.url}/{{z}}/{{x}}/{{y}}.png"
    qtbot.waitUntil(again.map_view.background_settled, timeout=20_000)
    again.map_view.set_background(None)                 # this window asks for no more tiles

    window.dialogs.set_background("")                            # removed: no layer, no more requests
    asked = len(tile_server.requests)
    view.scale(0.5, 0.5)
    view.refresh_details()
    qtbot.wait(300)
    assert "background" not in view.layers and len(tile_server.requests) == asked
    assert make_window(auto_index=False).prefs.background_url is None   # and forgotten


def test_a_tile_url_without_its_placeholders_is_refused_with_an_example():
    from ssjdn.core.errors import UserError
    with pytest.raises(UserError, match=r"lacks \{x\}, \{y\}"):
        basemap.parse_template("https://tiles.example/{z}.png")
    assert basemap.parse_template("https://x/wmts/{TileMatrix}/{TileRow}/{TileCol}.png") == \
        "https://x/wmts/{z}/{y}/{x}.png"


def test_a_background_tile_dropped_from_the_cache_is_fetched_again(qtbot, window, tmp_path, tile_server,
                                                                    monkeypatch):
    # Before: the key of a tile evicted from the in-memory cache stayed marked as fetched, so
    # its area stayed blank for the rest of the session.
    from ssjdn.desktop import qt_map
    monkeypatch.setattr(qt_map, "BACKGROUND_CACHE", 1)
    utm_window(window, tmp_path)
    view = window.map_view
    qtbot.wait(300)
    window.dialogs.set_background(f"{tile_server.url}/{{z}}/{{x}}/{{y}}.png")
    qtbot.waitUntil(lambda: view.background_settled() and bool(view.layer_items("background")), timeout=20_000)
    first = list(tile_server.requests)
    view.scale(0.25, 0.25)          # another zoom level: its tiles push the first ones out
    view.refresh_background()
    qtbot.waitUntil(lambda: view.background_settled() and len(tile_server.requests) > len(first), timeout=20_000)
    view.scale(4, 4)                # back where it started: the dropped tiles are asked for again
    view.refresh_background()
    qtbot.waitUntil(view.background_settled, timeout=20_000)
    assert tile_server.requests.count(first[0]) == 2
    assert len(view.layer_items("background")) == 1
