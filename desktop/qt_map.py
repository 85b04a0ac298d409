"""The map: a QGraphicsView whose scene coordinates are map-CRS coordinates (y flipped).

Rasters are drawn from a decimated overview (one small read) plus, when zoomed in past the
overview's resolution, a detail image of just the visible window read at screen resolution,
so pan and zoom stay smooth on rasters of any size: nothing is ever read at full size.
QGraphicsView rather than OpenGL, because QOpenGLWidget fails on offscreen/Xvfb displays.
"""
from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QObject, QPoint, QPointF, QRectF, Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import (QBrush, QColor, QFont, QImage, QPainter, QPainterPath, QPen, QPixmap,
                           QTransform)
from PySide6.QtWidgets import (QGraphicsItem, QGraphicsPathItem, QGraphicsPixmapItem,
                               QGraphicsRectItem, QGraphicsScene, QGraphicsSimpleTextItem,
                               QGraphicsView, QWidget)

from ssjdn.desktop import basemap
from ssjdn.desktop.colormaps import colorize
from ssjdn.desktop.geo import (MapFrame, format_area, format_length, geodesic_area, geodesic_length,
                               nice_length)
from ssjdn.desktop.layers import LayerList

OVERVIEW_PX = 1024        # longest side of the always-loaded overview of each raster
# Above this many pixels a decimated read of a file without internal overviews decodes the
# whole raster (seconds at 20000 x 20000): such overviews are read on a pool thread instead.
SYNC_OVERVIEW_MAX_PX = 4096 * 4096
OVERVIEW_GENERATION = -1  # marks an overview read among the detail reads
DETAIL_DELAY_MS = 80      # wait for the user to stop panning before reading a detail window
Z_ORDER = {"background": -10, "raster": 0, "heatmap": 10, "probability": 11, "salience": 12,
           "tiles": 20, "hits": 30, "marks": 35, "selection": 40, "measure": 50}
SCALE_BAR_PX = 120        # longest scale bar on screen
MEASURE_COLOR = QColor(255, 120, 0)
BACKGROUND_CACHE = 512    # background tiles kept in memory
# Zooming to a tile shows it a third of the view wide (its surroundings around it), up to this
# many screen pixels per raster pixel: a 19 px tile of a coarse scene is then 300 px, blocky but
# readable with its SEM overlay; only tiles under ~15 px stay smaller.
MAX_ZOOM_SCREEN_PX = 16.0
HIT_COLOR = QColor(0, 229, 255)
SELECTION_COLOR = QColor(255, 214, 0)
# Relevance marks: green relevant, magenta not relevant (told apart from the cyan hits, the
# yellow selection, and by red-green colour-blind users by their +/- sign too).
MARK_COLORS = {True: QColor(40, 230, 80), False: QColor(255, 40, 160)}
MARK_SIGNS = {True: "+", False: "−"}


def rgb_to_qimage(rgb: np.ndarray) -> QImage:
    """uint8 [3, h, w] -> a QImage that owns its pixels."""
    hwc = np.ascontiguousarray(np.moveaxis(rgb, 0, -1))
    h, w, _ = hwc.shape
    return QImage(hwc.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def rgba_to_qimage(rgba: np.ndarray) -> QImage:
    rgba = np.ascontiguousarray(rgba)
    h, w, _ = rgba.shape
    return QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()


def qtransform(coefficients) -> QTransform:
    m11, m12, m21, m22, dx, dy = coefficients
    return QTransform(m11, m12, m21, m22, dx, dy)


class QtRasterItem(QGraphicsItem):
    """One raster in pixel coordinates; its transform places it on the map."""

    def __init__(self, info, frame: MapFrame) -> None:
        super().__init__()
        from ssjdn.core.geo.raster import full_window, read_window_rgb
        self.info = info
        self._read = read_window_rgb
        self.setTransform(qtransform(frame.pixel_to_scene(info.transform, info.crs, info.width, info.height)))
        self.overview_loaded = info.width * info.height <= SYNC_OVERVIEW_MAX_PX
        if self.overview_loaded:
            self.overview = rgb_to_qimage(read_window_rgb(info, full_window(info), out_size=OVERVIEW_PX))
        else:  # a grey stand-in of the overview's size until load_overview() delivers it
            height, width = _overview_shape(info)
            self.overview = QImage(width, height, QImage.Format.Format_RGB888)
            self.overview.fill(QColor(90, 92, 96))
        self.detail: tuple[QRectF, QImage] | None = None
        self.generation = 0
        self.setZValue(Z_ORDER["raster"])

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt API
        return QRectF(0, 0, self.info.width, self.info.height)

    def paint(self, painter: QPainter, option, widget=None) -> None:
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform,
                              painter.worldTransform().m11() < 1.0)  # blocky pixels when zoomed in, like a GIS
        painter.drawImage(self.boundingRect(), self.overview)
        if self.detail is not None:
            rect, image = self.detail
            painter.drawImage(rect, image)

    def overview_px_per_raster_px(self) -> float:
        return self.overview.width() / self.info.width

    def refresh_detail(self, view: "QtMapView") -> None:
        """Read the visible window at screen resolution when the overview is too coarse for it.

        The read runs on a pool thread (a decimated read of a large window without overviews
        can take a while); a newer request supersedes an older one through `generation`.
        """
        from rasterio.windows import Window
        self.generation += 1
        visible = self.mapFromScene(view.mapToScene(view.viewport().rect())).boundingRect()
        visible = visible.intersected(self.boundingRect())
        screen_px_per_raster_px = min(_scale_of(QTransform(self.transform()) * view.transform()))
        if visible.isEmpty() or screen_px_per_raster_px <= self.overview_px_per_raster_px() * 1.05:
            self.detail = None
            self.update()
            return
        col, row = math.floor(visible.left()), math.floor(visible.top())
        width = min(math.ceil(visible.right()), self.info.width) - col
        height = min(math.ceil(visible.bottom()), self.info.height) - row
        scale = min(1.0, screen_px_per_raster_px)      # never read more pixels than the file has
        out = (max(1, round(height * scale)), max(1, round(width * scale)))
        rect, generation, info, read = QRectF(col, row, width, height), self.generation, self.info, self._read

        def job():
            try:
                rgb = read(info, Window(col, row, width, height), out_size=out)
            except Exception:  # noqa: BLE001 - a failed detail read leaves the overview showing
                rgb = None
            view.detail_reads.finished.emit(info.path, generation, rect, rgb)

        view.detail_reads.pending += 1
        QThreadPool.globalInstance().start(job)

    def load_overview(self, view: "QtMapView") -> None:
        """Read a large raster's overview off the GUI thread (see SYNC_OVERVIEW_MAX_PX)."""
        if self.overview_loaded:
            return
        from ssjdn.core.geo.raster import full_window
        info, read = self.info, self._read

        def job():
            try:
                rgb = read(info, full_window(info), out_size=OVERVIEW_PX)
            except Exception:  # noqa: BLE001 - the grey stand-in stays; detail reads still work
                rgb = None
            view.detail_reads.finished.emit(info.path, OVERVIEW_GENERATION, QRectF(), rgb)

        view.detail_reads.pending += 1
        QThreadPool.globalInstance().start(job)

    def apply_detail(self, generation: int, rect: QRectF, rgb) -> None:
        if generation == OVERVIEW_GENERATION:
            if rgb is not None:
                self.overview, self.overview_loaded = rgb_to_qimage(rgb), True
                self.update()
            return
        if generation == self.generation and rgb is not None:
            self.detail = (rect, rgb_to_qimage(rgb))
            self.update()


class QtDetailReads(QObject):
    """Carries finished detail reads from pool threads back to the GUI thread."""

    finished = Signal(str, int, object, object)   # raster path, generation, rect, rgb or None

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.pending = 0


def _overview_shape(info) -> tuple[int, int]:
    scale = OVERVIEW_PX / max(info.width, info.height)
    return max(1, round(info.height * scale)), max(1, round(info.width * scale))


def _scale_of(t: QTransform) -> tuple[float, float]:
    return math.hypot(t.m11(), t.m12()), math.hypot(t.m21(), t.m22())


class QtGeoRasterItem(QGraphicsPixmapItem):
    """A float grid (heatmap, salience) coloured with a colormap and placed by its transform."""

    def __init__(self, georaster, frame: MapFrame, colormap: str = "inferno",
                 value_range: tuple[float, float] | None = None) -> None:
        super().__init__()
        self.georaster = georaster
        self.colormap = colormap
        self.value_range = value_range      # None: the grid's own finite min..max
        self.vmin = self.vmax = 0.0
        rows, cols = georaster.array.shape
        self.setTransform(qtransform(frame.pixel_to_scene(georaster.transform, georaster.crs, cols, rows)))
        self.setTransformationMode(Qt.TransformationMode.FastTransformation)
        self.recolor(colormap)

    def recolor(self, colormap: str) -> None:
        from PySide6.QtGui import QPixmap
        self.colormap = colormap
        vmin, vmax = self.value_range or (None, None)
        rgba, self.vmin, self.vmax = colorize(np.asarray(self.georaster.array, dtype=np.float32), colormap,
                                              vmin, vmax)
        self.setPixmap(QPixmap.fromImage(rgba_to_qimage(rgba)))


class QtMapView(QGraphicsView):
    """The map canvas. Emits map coordinates (not scene coordinates) in its signals."""

    cursorMoved = Signal(float, float)                 # map x, y (map CRS)
    tileMenuRequested = Signal(float, float, object)   # map x, y, global QPoint
    mapClicked = Signal(float, float)
    filesDropped = Signal(list)
    measured = Signal(str)                             # the measure tool's result, as text
    backgroundStatus = Signal(str)                     # a background map problem, as text

    def __init__(self, layers: LayerList | None = None, parent=None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.frame = MapFrame()
        self.rasters: dict[str, QtRasterItem] = {}
        # The app model's layer list: the map lists what it draws there and follows each
        # layer's visibility and opacity (set by the Layers panel, a session, the window).
        self.layers = layers if layers is not None else LayerList()
        self.layers.events.connect("layer", lambda layer: self._on_layer_changed(layer))
        self._items: dict[str, list[QGraphicsItem]] = {}
        self._pending_grid = None   # (paths, windows_of) of a tile grid not yet drawn
        self.hit_items: list[QGraphicsRectItem] = []   # outlines, each with its rank label
        self.setBackgroundBrush(QColor(40, 42, 46))
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self._framed: QRectF | None = None   # the scene rect to keep framed on resize
        self.hover_xy: tuple[float, float] | None = None   # map point under the cursor, if over the map
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.SmartViewportUpdate)
        self.setMouseTracking(True)
        self.setAcceptDrops(True)
        # A map pans by dragging; scroll bars only take room (they still drive the detail reads).
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.detail_reads = QtDetailReads(self)
        self.detail_reads.finished.connect(self._on_detail_read)
        self.scale_bar = QtScaleBar(self.viewport())
        self.measuring = False
        self.measure_points: list[tuple[float, float]] = []   # map coordinates
        self._measure_done = False
        self.background_url: str | None = None    # an XYZ template; None: nothing is fetched
        self._background_tiles: dict[tuple, QImage | None] = {}   # fetched (None: failed / pending)
        self._background_failed = False   # a failure is said once per URL
        self.background_reads = QtDetailReads(self)
        self.background_reads.finished.connect(self._on_background_tile)
        self._detail_timer = QTimer(self, singleShot=True, interval=DETAIL_DELAY_MS)
        self._detail_timer.timeout.connect(self.refresh_details)
        # valueChanged carries an int that start() would take as its interval: drop it.
        self.horizontalScrollBar().valueChanged.connect(lambda _value: self._view_changed())
        self.verticalScrollBar().valueChanged.connect(lambda _value: self._view_changed())

    # -- rasters --------------------------------------------------------------------------------
    def add_raster(self, info) -> QtRasterItem:
        if not self.rasters:
            self.frame = MapFrame.for_raster(info)
        item = QtRasterItem(info, self.frame)
        item.load_overview(self)
        self.scene().addItem(item)
        self.rasters[info.path] = item
        self._register(f"raster:{info.path}", "raster", [item], label=_short(info.path))
        self._grow_scene()
        return item

    def remove_raster(self, path: str) -> None:
        if path in self.rasters:
            self.rasters.pop(path)
            self.remove_layer(f"raster:{path}")
            if not self.rasters:
                self.frame = MapFrame()

    def _grow_scene(self) -> None:
        rect = self.scene().itemsBoundingRect()
        margin = max(rect.width(), rect.height()) * 0.5
        self.setSceneRect(rect.adjusted(-margin, -margin, margin, margin))

    def frame_rect(self, rect: QRectF) -> None:
        """Show a scene rectangle whole; it stays framed when the view is resized (a dock
        opens, closes or changes width) until the user pans or zooms."""
        if rect.isEmpty():
            return
        self._framed = QRectF(rect)
        self.fitInView(rect, Qt.AspectRatioMode.KeepAspectRatio)
        self._view_changed()

    def fit_all(self) -> None:
        self.frame_rect(self._rasters_rect())

    def zoom_to_bounds(self, bounds, crs, context: float = 3.0) -> None:
        """Centre on bounds, showing `context` times their size around them, but never closer
        than MAX_ZOOM_SCREEN_PX screen pixels per raster pixel (a tiny tile would fill the
        screen with a few blurry squares and hide where it is)."""
        x, y, w, h = self.frame.bounds_to_scene(bounds, crs)
        cx, cy = x + w / 2, y + h / 2
        side_w, side_h = w * context, h * context
        pixel = self._finest_pixel_size()
        if pixel:
            viewport = self.viewport().rect()
            side_w = max(side_w, viewport.width() / MAX_ZOOM_SCREEN_PX * pixel)
            side_h = max(side_h, viewport.height() / MAX_ZOOM_SCREEN_PX * pixel)
        self.frame_rect(_keep_inside(QRectF(cx - side_w / 2, cy - side_h / 2, side_w, side_h),
                                     self._rasters_rect()))

    def pan_to_bounds(self, bounds, crs) -> None:
        """Centre on bounds at the present scale (the table's rows: stepping through them keeps
        the scale the user chose); zoom out to them when they do not fit."""
        x, y, w, h = self.frame.bounds_to_scene(bounds, crs)
        tile, visible = QRectF(x, y, w, h), self.mapToScene(self.viewport().rect()).boundingRect()
        if tile.width() > visible.width() or tile.height() > visible.height():
            self.zoom_to_bounds(bounds, crs)
        else:
            self.frame_rect(visible.translated(tile.center() - visible.center()))

    def _rasters_rect(self) -> QRectF:
        rect = QRectF()
        for item in self.rasters.values():
            rect = rect.united(item.sceneBoundingRect())
        return rect

    def _finest_pixel_size(self) -> float | None:
        """Scene units per pixel of the finest open raster."""
        sizes = [min(_scale_of(item.transform())) for item in self.rasters.values()]
        return min(sizes) if sizes else None

    def refresh_details(self) -> None:
        for item in self.rasters.values():
            item.refresh_detail(self)
        self.refresh_background()

    def _view_changed(self) -> None:
        """The view moved or zoomed: read details (and background tiles) once it is still."""
        self._detail_timer.start()
        self.update_scale_bar()
        self._place_hit_labels()

    def zoom_to_layer(self, name: str) -> bool:
        """Fit the view to what a layer draws; False when it draws nothing yet."""
        rect = QRectF()
        for item in self._items.get(name, []):
            rect = rect.united(item.sceneBoundingRect())
        if rect.isEmpty():
            return False
        self.frame_rect(rect)
        return True

    # -- scale bar ------------------------------------------------------------------------------
    def metres_per_pixel(self) -> float | None:
        """Ground metres per screen pixel across the view's centre, on the ellipsoid; None
        without a CRS (the map is in pixels) or without a raster."""
        if self.frame.crs is None or not self.rasters:
            return None
        centre, half = self.viewport().rect().center(), SCALE_BAR_PX // 2
        ends = [self._map_xy(QPoint(centre.x() - half, centre.y())),
                self._map_xy(QPoint(centre.x() + half, centre.y()))]
        return geodesic_length([self.frame.to_lonlat(*end) for end in ends]) / (2 * half)

    def update_scale_bar(self) -> None:
        metres = self.metres_per_pixel()
        if not metres:
            self.scale_bar.set_scale(0, "")
            return
        length = nice_length(metres * SCALE_BAR_PX)
        label = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
        self.scale_bar.set_scale(round(length / metres), label)

    # -- measure tool ---------------------------------------------------------------------------
    def set_measuring(self, on: bool) -> None:
        """Measure mode: each click adds a point, a double click ends the line, Esc clears."""
        self.measuring = bool(on)
        self.clear_measure()
        self.viewport().setCursor(Qt.CursorShape.CrossCursor if on else Qt.CursorShape.OpenHandCursor)

    def clear_measure(self) -> None:
        self.measure_points, self._measure_done = [], False
        if "measure" in self.layers:
            self.remove_layer("measure")

    def add_measure_point(self, x: float, y: float) -> None:
        """Add a map point to the measured line (a finished line starts again)."""
        if self._measure_done:
            self.measure_points, self._measure_done = [], False
        self.measure_points.append((float(x), float(y)))
        text = self.measure_text()   # geodesics of every point: measured once per click
        self._draw_measure(text)
        self.measured.emit(text)

    def finish_measure(self) -> None:
        self._measure_done = True

    def measurement(self) -> tuple[float, float, float] | None:
        """(length of the line, area and perimeter of the polygon it closes) in metres and
        square metres on the WGS84 ellipsoid; None without a CRS."""
        if self.frame.crs is None:
            return None
        lonlats = [self.frame.to_lonlat(x, y) for x, y in self.measure_points]
        length = geodesic_length(lonlats)
        if len(lonlats) < 3:
            return length, 0.0, 0.0
        return length, geodesic_area(lonlats), geodesic_length(lonlats + lonlats[:1])

    def measure_text(self) -> str:
        result = self.measurement()
        if result is None:
            return "This map has no CRS (pixels), so nothing can be measured in metres."
        length, area, perimeter = result
        text = f"Length {format_length(length)}"
        if len(self.measure_points) >= 3:
            text += f" · area {format_area(area)} (perimeter {format_length(perimeter)})"
        return text

    def _draw_measure(self, result: str) -> None:
        points = [QPointF(x, self.frame.y_sign * y) for x, y in self.measure_points]
        path = QPainterPath(points[0])
        for point in points[1:]:
            path.lineTo(point)
        line = QGraphicsPathItem(path)
        line.setPen(_cosmetic_pen(MEASURE_COLOR, 2))
        items = [line]
        if len(points) >= 3:
            area = QPainterPath(path)
            area.closeSubpath()
            fill = QGraphicsPathItem(area)
            fill.setPen(QPen(Qt.PenStyle.NoPen))
            fill.setBrush(QColor(MEASURE_COLOR.red(), MEASURE_COLOR.green(), MEASURE_COLOR.blue(), 50))
            items.append(fill)
        # The result beside the last point, on a dark plate so it reads over any imagery.
        text = QGraphicsSimpleTextItem(result)
        text.setBrush(QBrush(QColor(255, 255, 255)))
        text.setFont(QFont("Sans", 10, QFont.Weight.Bold))
        plate = QGraphicsRectItem(text.boundingRect().adjusted(-4, -2, 4, 2), line)
        plate.setBrush(QColor(0, 0, 0, 170))
        plate.setPen(QPen(MEASURE_COLOR, 1))
        plate.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)
        plate.setPos(points[-1])
        plate.setTransform(QTransform.fromTranslate(10, 6))
        text.setParentItem(plate)
        self._replace_layer("measure", "measure", items, label="Measurement")

    # -- background map -------------------------------------------------------------------------
    def set_background(self, url: str | None) -> None:
        """Draw an XYZ / WMTS template's tiles under the rasters (None or "" removes them).
        A UserError for a URL that is no template or a map without a CRS."""
        from ssjdn.core.errors import UserError
        if not url:
            self.background_url, self._background_tiles = None, {}
            if "background" in self.layers:
                self.remove_layer("background")
            return
        template = basemap.parse_template(url)
        if self.frame.crs is None:
            raise UserError("A background map needs a georeferenced raster on the map: open one "
                            "with a CRS first (a raster without one is drawn in pixels).")
        self.background_url, self._background_tiles, self._background_failed = template, {}, False
        self._replace_layer("background", "background", [], label="Background map")
        self.refresh_background()

    def refresh_background(self) -> None:
        """Fetch the background tiles of the visible area at the view's resolution (pool threads)."""
        from rasterio.warp import transform_bounds
        state = self.layers.get("background")
        if not self.background_url or state is None or not state.visible or self.frame.crs is None:
            return
        rect = self.mapToScene(self.viewport().rect()).boundingRect()
        bounds = self.frame.scene_to_bounds(rect.x(), rect.y(), rect.width(), rect.height())
        try:
            merc = transform_bounds(self.frame.crs, basemap.WEB_MERCATOR, *bounds)
        except Exception:  # noqa: BLE001 - a view past the projection's domain draws no tiles
            return
        zoom = basemap.zoom_for((merc[2] - merc[0]) / max(1, self.viewport().width()))
        template = self.background_url
        for key in basemap.tiles_covering(merc, zoom):
            if key in self._background_tiles:
                continue
            self._background_tiles[key] = None   # pending
            url = basemap.tile_url(template, *key)

            def job(url=url, key=key):
                try:
                    data = basemap.fetch_tile(url)
                except Exception as exc:  # noqa: BLE001 - reported once on the GUI thread
                    data = exc
                self.background_reads.finished.emit(template, 0, key, data)

            self.background_reads.pending += 1
            QThreadPool.globalInstance().start(job)

    def _on_background_tile(self, template: str, _generation: int, key, data) -> None:
        from affine import Affine
        self.background_reads.pending -= 1
        if template != self.background_url or "background" not in self.layers:
            return   # a tile of a URL the user has since changed
        image = QImage.fromData(data) if isinstance(data, bytes) else QImage()
        if image.isNull():
            self._background_tiles.pop(key, None)
            if not self._background_failed:
                self._background_failed = True
                why = data if isinstance(data, Exception) else "not an image"
                self.backgroundStatus.emit(f"Background tiles from {template} could not be fetched ({why}).")
            return
        left, bottom, right, top = basemap.tile_bounds(*key)
        transform = Affine((right - left) / image.width(), 0, left, 0, -(top - bottom) / image.height(), top)
        item = QGraphicsPixmapItem(QPixmap.fromImage(image))
        item.setTransform(qtransform(self.frame.pixel_to_scene(transform, basemap.WEB_MERCATOR,
                                                               image.width(), image.height())))
        item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        item.setZValue(Z_ORDER["background"] + key[0] / 100)   # finer zooms over coarser ones
        item.setData(0, key)
        self.scene().addItem(item)
        items = self._items.setdefault("background", [])
        items.append(item)
        for old in items[:-BACKGROUND_CACHE]:
            self.scene().removeItem(old)
            # Forgotten too, so the area is fetched again when it is shown again (it stayed
            # blank for the rest of the session before).
            self._background_tiles.pop(old.data(0), None)
        del items[:-BACKGROUND_CACHE]
        self._apply("background")

    def background_settled(self) -> bool:
        return self.background_reads.pending == 0

    def _on_detail_read(self, path: str, generation: int, rect, rgb) -> None:
        self.detail_reads.pending -= 1
        item = self.rasters.get(path)
        if item is not None:
            item.apply_detail(generation, rect, rgb)

    def details_settled(self) -> bool:
        return self.detail_reads.pending == 0

    # -- vector overlays ----------------------------------------------------------------------
    def set_tile_grid(self, paths: list[str], windows_of) -> None:
        """Outline every tile of the rasters `paths`; windows_of(path) gives their int windows
        [N, 4] (col, row, width, height). Built when the layer is first shown: loading a
        million-tile raster's grid takes seconds, and the layer starts hidden."""
        self._pending_grid = (list(paths), windows_of)
        self._replace_layer("tiles", "tiles", [], label="Tile grid", visible=False)
        if self.layers["tiles"].visible:
            self._build_tile_grid()

    def _build_tile_grid(self) -> None:
        paths, windows_of = self._pending_grid
        self._pending_grid = None
        items = []
        for path in paths:
            raster = self.rasters.get(path)
            windows = windows_of(path) if raster is not None else []
            if len(windows) == 0:
                continue
            item = QGraphicsPathItem(tile_outline(windows))
            item.setTransform(raster.transform())
            item.setPen(_cosmetic_pen(QColor(255, 255, 255, 110), 1))
            items.append(item)
        self._register("tiles", "tiles", items, label="Tile grid")

    def set_hits(self, hits) -> None:
        """Outline search hits with their rank; the best hit is drawn thickest."""
        items = []
        for rank, hit in enumerate(hits, start=1):
            x, y, w, h = self.frame.bounds_to_scene(hit.bounds, hit.crs)
            rect = QGraphicsRectItem(QRectF(x, y, w, h))
            rect.setPen(_cosmetic_pen(HIT_COLOR, 3 if rank == 1 else 2))
            rect.setToolTip(f"#{rank}  score {hit.score:.3f}")
            rect.setData(0, hit)
            label = QGraphicsSimpleTextItem(str(rank), rect)
            label.setBrush(QBrush(HIT_COLOR))
            label.setFont(QFont("Sans", 9, QFont.Weight.Bold))
            label.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)
            items.append(rect)
        self.hit_items = items
        self._replace_layer("hits", "hits", items, label="Search hits")
        self._place_hit_labels()

    def _place_hit_labels(self) -> None:
        """Put each hit's rank inside a corner of its outline where it overlaps no better
        hit's rank on screen (edge tiles shifted inwards overlap their neighbours, so their
        top-left corners nearly coincide), or hide it (the rank stays in the tooltip and the
        table). Runs after every zoom: on-screen overlaps depend on the scale."""
        taken: dict[tuple[int, int], list[QRectF]] = {}   # placed boxes by 32 px screen cell
        for outline in self.hit_items:
            label = outline.childItems()[0]
            rect, size = outline.rect(), label.boundingRect()
            w, h = size.width(), size.height()
            corners = ((rect.topLeft(), 3, 1), (rect.bottomLeft(), 3, -h - 1),
                       (rect.bottomRight(), -w - 3, -h - 1), (rect.topRight(), -w - 3, 1))
            label.setVisible(False)
            for corner, dx, dy in corners:
                point = self.mapFromScene(corner)
                box = QRectF(point.x() + dx, point.y() + dy, w, h)
                cells = [(cx, cy) for cx in range(int(box.left()) // 32, int(box.right()) // 32 + 1)
                         for cy in range(int(box.top()) // 32, int(box.bottom()) // 32 + 1)]
                if any(box.intersects(other) for cell in cells for other in taken.get(cell, ())):
                    continue
                label.setPos(corner)
                label.setTransform(QTransform.fromTranslate(dx, dy))
                label.setVisible(True)
                for cell in cells:
                    taken.setdefault(cell, []).append(box)
                break

    def set_marks(self, marks) -> None:
        """Outline marked tiles: [(bounds, crs, relevant)], green + or magenta −."""
        items = []
        for bounds, crs, relevant in marks:
            x, y, w, h = self.frame.bounds_to_scene(bounds, crs)
            rect = QGraphicsRectItem(QRectF(x, y, w, h))
            rect.setPen(_cosmetic_pen(MARK_COLORS[relevant], 4))
            rect.setToolTip("marked relevant" if relevant else "marked not relevant")
            sign = QGraphicsSimpleTextItem(MARK_SIGNS[relevant], rect)
            sign.setBrush(QBrush(MARK_COLORS[relevant]))
            sign.setFont(QFont("Sans", 13, QFont.Weight.Bold))
            sign.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)
            # Inside the top-right corner (the hit's rank sits top-left): anchored at the corner,
            # shifted left by its own width in screen pixels, which zooming does not change.
            sign.setPos(x + w, y)
            sign.setTransform(QTransform.fromTranslate(-sign.boundingRect().width() - 4, 0))
            items.append(rect)
        self._replace_layer("marks", "marks", items, label="Relevance marks")

    def select_tile(self, bounds, crs) -> None:
        x, y, w, h = self.frame.bounds_to_scene(bounds, crs)
        item = QGraphicsRectItem(QRectF(x, y, w, h))
        item.setPen(_cosmetic_pen(SELECTION_COLOR, 3))
        self._replace_layer("selection", "selection", [item], label="Selected tile")

    # -- raster overlays ----------------------------------------------------------------------
    def set_georaster(self, name: str, kind: str, georaster, colormap: str, label: str,
                      opacity: float = 0.6, value_range=None) -> QtGeoRasterItem:
        item = QtGeoRasterItem(georaster, self.frame, colormap, value_range)
        self._replace_layer(name, kind, [item], label=label, opacity=opacity)
        return item

    def overlay_item(self, name: str) -> QtGeoRasterItem | None:
        items = self._items.get(name) or []
        return items[0] if items and isinstance(items[0], QtGeoRasterItem) else None

    # -- layer bookkeeping -------------------------------------------------------------------
    def _register(self, name, kind, items, label, visible=True, opacity=1.0) -> None:
        """Draw a layer's items and list it (a new layer starts `visible` at `opacity`, or as
        a restored session saved it; a redrawn one keeps its state)."""
        z = Z_ORDER[kind]
        for item in items:
            if item.scene() is None:
                self.scene().addItem(item)
            if kind != "raster":
                item.setZValue(z)
        self._items[name] = items
        self.layers.add(name, label, kind, visible, opacity)
        self._apply(name)

    def _replace_layer(self, name, kind, items, label, visible=True, opacity=1.0) -> None:
        for old in self._items.pop(name, []):
            self.scene().removeItem(old)
        self._register(name, kind, items, label, visible, opacity)

    def remove_layer(self, name) -> None:
        for old in self._items.pop(name, []):
            self.scene().removeItem(old)
        self.layers.remove(name)

    def _apply(self, name) -> None:
        state = self.layers[name]
        for item in self._items.get(name, []):
            item.setVisible(state.visible)
            item.setOpacity(state.opacity)

    def _on_layer_changed(self, name: str) -> None:
        if name == "tiles" and self.layers[name].visible and self._pending_grid is not None:
            self._build_tile_grid()
        self._apply(name)

    def layer_items(self, name: str) -> list[QGraphicsItem]:
        return list(self._items.get(name, []))

    def visible_bounds(self) -> tuple[float, float, float, float]:
        rect = self.mapToScene(self.viewport().rect()).boundingRect()
        return self.frame.scene_to_bounds(rect.x(), rect.y(), rect.width(), rect.height())

    def show_bounds(self, bounds) -> None:
        x, y, w, h = self.frame.bounds_to_scene(bounds, None)
        self.frame_rect(QRectF(x, y, w, h))

    # -- interaction --------------------------------------------------------------------------
    def _map_xy(self, pos) -> tuple[float, float]:
        scene = self.mapToScene(pos)
        return self.frame.scene_to_map(scene.x(), scene.y())

    def wheelEvent(self, event) -> None:  # noqa: N802 - Qt API
        factor = 1.25 ** (event.angleDelta().y() / 120.0)
        self._framed = None   # the user's own view from now on: a resize keeps its centre
        self.scale(factor, factor)
        self._view_changed()

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        self.hover_xy = self._map_xy(event.position().toPoint())
        self.cursorMoved.emit(*self.hover_xy)
        super().mouseMoveEvent(event)

    def leaveEvent(self, event) -> None:  # noqa: N802
        self.hover_xy = None
        super().leaveEvent(event)

    def mousePressEvent(self, event) -> None:  # noqa: N802
        self._press_pos = event.position().toPoint()
        super().mousePressEvent(event)

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        super().mouseReleaseEvent(event)
        pos = event.position().toPoint()
        pressed = getattr(self, "_press_pos", None)
        # A click that did not move is a selection; anything else was a pan.
        if event.button() == Qt.MouseButton.LeftButton and pressed is not None:
            if (pos - pressed).manhattanLength() >= 4:
                self._framed = None   # panned by hand
            elif self.measuring:
                self.add_measure_point(*self._map_xy(pos))
            else:
                self.mapClicked.emit(*self._map_xy(pos))

    def mouseDoubleClickEvent(self, event) -> None:  # noqa: N802
        if self.measuring:
            self.finish_measure()
        else:
            super().mouseDoubleClickEvent(event)

    def keyPressEvent(self, event) -> None:  # noqa: N802
        if self.measuring and event.key() == Qt.Key.Key_Escape:
            self.clear_measure()
            self.measured.emit("")
        else:
            super().keyPressEvent(event)

    def contextMenuEvent(self, event) -> None:  # noqa: N802
        x, y = self._map_xy(event.pos())
        self.tileMenuRequested.emit(x, y, event.globalPos())

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        if self._framed is not None:   # what was framed stays framed when the docks change
            self.fitInView(self._framed, Qt.AspectRatioMode.KeepAspectRatio)
        self._view_changed()

    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dragMoveEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        paths = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.filesDropped.emit(paths)


class QtScaleBar(QWidget):
    """A scale bar in the map's lower-left corner (a child of the viewport, so panning never
    smears it): a bar of `px` screen pixels and its ground length."""

    def __init__(self, parent) -> None:
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.px, self.text = 0, ""
        self.hide()

    def set_scale(self, px: int, text: str) -> None:
        self.px, self.text = int(px), text
        self.setVisible(self.px > 0)
        parent = self.parentWidget()
        self.setGeometry(10, parent.height() - 36, self.px + 80, 30)
        self.update()

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(QRectF(0, 0, self.px + 12, 30), QColor(255, 255, 255, 170))
        painter.fillRect(QRectF(6, 20, self.px, 5), QColor(20, 20, 20))
        for x in (6, 6 + self.px):
            painter.fillRect(QRectF(x - 1, 14, 2, 11), QColor(20, 20, 20))
        painter.setPen(QColor(20, 20, 20))
        painter.setFont(QFont("Sans", 9))
        painter.drawText(QRectF(6, 1, self.px + 70, 16), Qt.AlignmentFlag.AlignLeft, self.text)


def _keep_inside(rect: QRectF, area: QRectF) -> QRectF:
    """Shift `rect` so it shows as much of `area` as it can (no empty margin beside an edge hit)."""
    if area.isEmpty():
        return rect
    dx = dy = 0.0
    if rect.width() < area.width():
        dx = max(area.left() - rect.left(), 0.0) + min(area.right() - rect.right(), 0.0)
    if rect.height() < area.height():
        dy = max(area.top() - rect.top(), 0.0) + min(area.bottom() - rect.bottom(), 0.0)
    return rect.translated(dx, dy)


def tile_outline(windows) -> QPainterPath:
    """The outlines of tiles [N, 4] (col, row, width, height) in pixels. A full lattice (every
    column offset with every row offset, one tile size: how rasters are tiled) is drawn as its
    grid lines, a few thousand for a million tiles; anything else as one rectangle a tile."""
    windows = np.asarray(windows, np.int64).reshape(-1, 4)
    cols, rows = np.unique(windows[:, 0]), np.unique(windows[:, 1])
    width, height = (int(v) for v in windows[0, 2:])
    path = QPainterPath()
    if (len(cols) * len(rows) == len(windows) and (windows[:, 2:] == (width, height)).all()
            and len(np.unique(windows[:, 0] * (int(rows.max()) + 1) + windows[:, 1])) == len(windows)):
        left, right = float(cols.min()), float(cols.max() + width)
        top, bottom = float(rows.min()), float(rows.max() + height)
        for x in np.union1d(cols, cols + width).tolist():
            path.moveTo(x, top)
            path.lineTo(x, bottom)
        for y in np.union1d(rows, rows + height).tolist():
            path.moveTo(left, y)
            path.lineTo(right, y)
        return path
    for col, row, w, h in windows.tolist():
        path.addRect(QRectF(col, row, w, h))
    return path


def _cosmetic_pen(color: QColor, width: int) -> QPen:
    pen = QPen(color, width)
    pen.setCosmetic(True)   # constant screen width whatever the zoom
    return pen


def _short(path: str) -> str:
    from pathlib import Path
    return Path(path).name
