"""The map's coordinate frame (no Qt): one projected CRS for the whole map, and measures on it.

The map CRS is the first raster's, or, when that raster is in geographic coordinates
(EPSG:4326: degrees, which drawn as they are stretch a scene east-west by 1/cos(latitude)),
the UTM zone of its centre: rasters are reprojected on the fly into it. Scene coordinates of
the map view are map-CRS coordinates with y flipped (Qt's y grows down, northings grow up). A
raster in another CRS is placed by an affine fit through its corners, which is exact for
rasters in the same CRS and close enough for display at scene sizes (a few km).

Distances and areas are measured on the WGS84 ellipsoid (pyproj.Geod), not in the map's
plane, so they are right whatever the projection.
"""
from __future__ import annotations

import math

import numpy as np
from pyproj import Geod
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_bounds

WGS84 = "EPSG:4326"
GEOD = Geod(ellps="WGS84")


def map_crs_for(crs, bounds):
    """The CRS to draw a raster in: its own when projected (or None, pixels), else the UTM
    zone of its centre (polar stereographic past 84 degrees, where UTM stops)."""
    if crs is None or not crs.is_geographic:
        return crs
    west, south, east, north = transform_bounds(crs, WGS84, *bounds)
    lon, lat = (west + east) / 2, (south + north) / 2
    if abs(lat) > 84:
        return CRS.from_epsg(32661 if lat > 0 else 32761)
    zone = min(60, max(1, int((lon + 180) // 6) + 1))
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


class MapFrame:
    @classmethod
    def for_raster(cls, info) -> "MapFrame":
        """The frame a map whose first raster is `info` gets (see map_crs_for)."""
        return cls(map_crs_for(info.crs, info.bounds))

    def __init__(self, crs=None) -> None:
        self.crs = crs
        # Georeferenced y (northing) grows up and is flipped for Qt; a raster without a CRS has
        # rasterio's identity transform, whose y already grows down like Qt's.
        self.y_sign = -1.0 if crs is not None else 1.0

    def describe(self) -> str:
        if self.crs is None:
            return "pixels (no CRS)"
        epsg = self.crs.to_epsg()
        return f"EPSG:{epsg}" if epsg else self.crs.to_string()[:40]

    def _same(self, crs) -> bool:
        return crs is None or self.crs is None or crs == self.crs

    def pixel_to_scene(self, transform, crs, width: int, height: int) -> tuple[float, ...]:
        """Coefficients (m11, m12, m21, m22, dx, dy) of a QTransform from raster pixels to scene."""
        if self._same(crs):
            a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
            sy = self.y_sign
            return a, sy * d, b, sy * e, c, sy * f
        corners_px = np.array([[0, 0], [width, 0], [0, height]], dtype=np.float64)
        xs = [transform * tuple(p) for p in corners_px]
        mx, my = warp_transform(crs, self.crs, [p[0] for p in xs], [p[1] for p in xs])
        (x0, y0), (x1, y1), (x2, y2) = zip(mx, [self.y_sign * y for y in my])
        return (x1 - x0) / width, (y1 - y0) / width, (x2 - x0) / height, (y2 - y0) / height, x0, y0

    def bounds_to_scene(self, bounds, crs) -> tuple[float, float, float, float]:
        """(x, y, w, h) of a scene rectangle for (left, bottom, right, top) bounds in `crs`."""
        left, bottom, right, top = bounds
        if not self._same(crs):
            left, bottom, right, top = transform_bounds(crs, self.crs, left, bottom, right, top)
        y0, y1 = sorted((self.y_sign * top, self.y_sign * bottom))
        return left, y0, right - left, y1 - y0

    def scene_to_bounds(self, x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) as rasterio gives them (bottom > top without a CRS)."""
        return x, self.y_sign * (y + h), x + w, self.y_sign * y

    def scene_to_map(self, x: float, y: float) -> tuple[float, float]:
        return x, self.y_sign * y

    def to_lonlat(self, x: float, y: float) -> tuple[float, float] | None:
        """Map coordinates (not scene: y not flipped) -> (lon, lat), None without a CRS."""
        if self.crs is None:
            return None
        if self.crs.is_geographic:
            return x, y
        lon, lat = warp_transform(self.crs, WGS84, [x], [y])
        return float(lon[0]), float(lat[0])

    def from_crs(self, x: float, y: float, crs) -> tuple[float, float]:
        if self._same(crs):
            return x, y
        mx, my = warp_transform(crs, self.crs, [x], [y])
        return float(mx[0]), float(my[0])

    def to_crs(self, x: float, y: float, crs) -> tuple[float, float]:
        if self._same(crs):
            return x, y
        rx, ry = warp_transform(self.crs, crs, [x], [y])
        return float(rx[0]), float(ry[0])


def geodesic_length(lonlats) -> float:
    """Metres along a line of (lon, lat) points on the WGS84 ellipsoid."""
    points = np.asarray(lonlats, np.float64).reshape(-1, 2)
    if len(points) < 2:
        return 0.0
    return float(GEOD.line_length(points[:, 0], points[:, 1]))


def geodesic_area(lonlats) -> float:
    """Square metres inside a ring of (lon, lat) points on the WGS84 ellipsoid (either winding)."""
    points = np.asarray(lonlats, np.float64).reshape(-1, 2)
    if len(points) < 3:
        return 0.0
    area, _ = GEOD.polygon_area_perimeter(points[:, 0], points[:, 1])
    return abs(float(area))


def format_length(metres: float) -> str:
    if metres >= 10_000:
        return f"{metres / 1000:.1f} km"
    if metres >= 1000:
        return f"{metres / 1000:.2f} km"
    return f"{metres:.1f} m" if metres < 100 else f"{metres:.0f} m"


def format_area(square_metres: float) -> str:
    if square_metres >= 1e6:
        return f"{square_metres / 1e6:.3f} km²"
    if square_metres >= 1e4:
        return f"{square_metres / 1e4:.2f} ha"
    return f"{square_metres:.0f} m²"


def nice_length(longest: float) -> float:
    """The longest 1, 2 or 5 x 10^n that fits in `longest` (a scale bar's length)."""
    if longest <= 0 or not math.isfinite(longest):
        return 0.0
    power = 10 ** math.floor(math.log10(longest))
    return max(step * power for step in (1, 2, 5) if step * power <= longest)


def format_lonlat(lon: float, lat: float) -> str:
    return f"{abs(lat):.5f}°{'N' if lat >= 0 else 'S'} {abs(lon):.5f}°{'E' if lon >= 0 else 'W'}"
