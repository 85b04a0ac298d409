"""`ssjdn-explorer`: start the desktop app.

With no arguments it reopens the last session, or on the very first launch the sample scene
shipped in resources/sample with the shipped model, indexing it with a progress bar so a new
user can type a query at once. `--screenshot PATH` renders the window once start-up work
(indexing, and an optional --query) has finished, saves it and exits.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from ssjdn.desktop.resources import APP_TITLE, SAMPLE_TILE_M, icon_path, sample_scene_path

SCREENSHOT_SETTLE_MS = 400    # let the map read its detail images before grabbing


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssjdn-explorer", description="Search remote-sensing imagery "
                                     "with words: open georeferenced rasters, index them with an SSJDN "
                                     "model and search them in plain language.")
    parser.add_argument("rasters", nargs="*", help="rasters to open (GeoTIFF or any GDAL raster)")
    parser.add_argument("--session", help="open a session file saved with File > Save session")
    parser.add_argument("--sample", action="store_true", help="open the shipped sample scene")
    parser.add_argument("--model", help="model: 'shipped', 'config:<name>' or a .safetensors path")
    parser.add_argument("--device", help="auto, cpu or cuda")
    parser.add_argument("--tile-m", type=float, help="tile ground size in metres (default: the model's)")
    parser.add_argument("--screenshot", metavar="PATH", help="save a PNG of the window after start-up, then exit")
    parser.add_argument("--query", help="run this search after start-up (useful with --screenshot)")
    parser.add_argument("--select-hit", type=int, default=0, metavar="N",
                        help="with --query: select hit N (1 = best) to show where the words match in it "
                        "and caption scores (the view stays on the whole scene)")
    parser.add_argument("--relevant", type=_ranks, default=[], metavar="N,N,...",
                        help="with --query: mark these hits (1 = best) relevant")
    parser.add_argument("--not-relevant", type=_ranks, default=[], metavar="N,N,...",
                        help="with --query: mark these hits not relevant")
    parser.add_argument("--refine", action="store_true", help="with marks: refine the search once")
    parser.add_argument("--find-all", action="store_true",
                        help="with 3 or more relevant marks: find all, shown at --threshold")
    parser.add_argument("--threshold", type=float, default=0.5, help="find-all threshold (default 0.5)")
    parser.add_argument("--match-threshold", type=float, metavar="P",
                        help="with --query: draw the hits whose match likelihood is at least P "
                        "(0-1; default the Search panel's)")
    parser.add_argument("--dock", help="raise this dock before the screenshot (e.g. findall)")
    parser.add_argument("--size", default="1400x860", help="window size WxH (default 1400x860)")
    parser.add_argument("--timeout", type=float, default=900, help="--screenshot gives up after this many seconds")
    return parser


def _ranks(text: str) -> list[int]:
    try:
        ranks = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected hit ranks like 1,2,5; got {text!r}") from None
    if any(r < 1 for r in ranks):
        raise argparse.ArgumentTypeError("hit ranks start at 1 (the best hit)")
    return ranks


def last_session_path() -> Path:
    from ssjdn.desktop.settings import config_dir
    return config_dir() / "last-session.json"


def initial_session(args):
    """The session to start with and the rasters to open in it."""
    from ssjdn.core.errors import message_for
    from ssjdn.core.geo.raster import is_virtual
    from ssjdn.core.model.spec import ModelSpec
    from ssjdn.desktop.state import Session
    session, rasters = Session(), []
    source = Path(args.session) if args.session else last_session_path()
    if args.session or (not args.rasters and not args.sample and source.is_file()):
        try:
            restored = Session.load(source)
        except Exception as exc:  # noqa: BLE001 - a bad last session must not stop the app starting, ever
            if args.session:
                raise
            message, _log = message_for(exc, "reading the last session")
            print(f"ssjdn-explorer: the last session {source} was ignored: {message}", file=sys.stderr)
        else:
            session = Session(model_spec=restored.model_spec, device=restored.device,
                              tile_ground_m=restored.tile_ground_m, indexing=restored.indexing,
                              stac_items=restored.stac_items,
                              queries=restored.queries,
                              layers=restored.layers)
            rasters = [p for p in restored.rasters if is_virtual(p) or Path(p).exists()]
    rasters += args.rasters
    if args.sample or not rasters:
        rasters.insert(0, str(sample_scene_path()))
        if session.tile_ground_m is None and not args.tile_m:
            session.tile_ground_m = SAMPLE_TILE_M
    if args.model:
        session.model_spec = str(ModelSpec.parse(args.model).resolved())   # as the CLI reads --model
    if args.device:
        session.device = args.device
    if args.tile_m:
        session.tile_ground_m = args.tile_m
    return session, rasters


def install_excepthook(window_getter) -> None:
    """Unexpected exceptions in slots become message boxes (with the traceback under Details)."""
    from ssjdn.desktop.qt_workers import describe_error

    def hook(exc_type, exc, tb):
        exc.__traceback__ = tb
        message, details = describe_error(exc)
        window = window_getter()
        if window is not None:
            window.show_error("Error", message, details)
        else:
            sys.__excepthook__(exc_type, exc, tb)

    sys.excepthook = hook


def main(argv: list[str] | None = None) -> int:
    from ssjdn.core.offline import use_offline_hub
    use_offline_hub()
    args = build_parser().parse_args(argv)
    problem = qt_platform_problem() if _has_display() else None
    if problem and not args.screenshot:
        print(f"ssjdn-explorer: {problem}", file=sys.stderr)
        return 2
    if problem or not _has_display():
        if not args.screenshot:
            print("ssjdn-explorer: no display found (DISPLAY / WAYLAND_DISPLAY unset). Run it in a "
                  "desktop session, under xvfb-run, or with --screenshot PATH to render headless.",
                  file=sys.stderr)
            return 2
        os.environ["QT_QPA_PLATFORM"] = "offscreen"   # a screenshot needs no screen
    from PySide6.QtWidgets import QApplication, QMessageBox
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName(APP_TITLE)
    app.setOrganizationName("ssjdn")
    from PySide6.QtGui import QIcon
    app.setWindowIcon(QIcon(str(icon_path())))
    try:
        from ssjdn.desktop.qt_main import QtMainWindow
        session, rasters = initial_session(args)
        window = QtMainWindow(session)
    except Exception as exc:  # noqa: BLE001 - even start-up failures are a message, not a traceback
        from ssjdn.desktop.qt_workers import describe_error
        message, _details = describe_error(exc)   # the details are in the log it names
        print(f"ssjdn-explorer: {message}", file=sys.stderr)
        if not args.screenshot:
            QMessageBox.critical(None, "SSJDN Explorer cannot start", message)
        return 1
    install_excepthook(lambda: window)
    width, height = (int(v) for v in args.size.lower().split("x"))
    window.resize(width, height)
    window.show()
    # The screenshot listens before the rasters open: a raster that fails must end it at once.
    director = ScreenshotDirector(window, args, app) if args.screenshot else None
    if director is not None:
        director.arm()   # kept in a local: PySide drops slots of garbage-collected objects
    window.open_rasters(rasters)
    window.load_model()
    if args.query:
        window.search_panel.query.setText(args.query)
    elif session.queries and not args.screenshot:
        window.search_panel.query.setText(session.queries[-1])
        window.model.pending_query = session.queries[-1]     # the last session's results come back
    window.search_panel.set_history(session.queries)
    code = app.exec()
    _save_last_session(window)
    return code


def _has_display() -> bool:
    """Whether Qt can open a window (without one, Qt aborts the process instead of raising)."""
    if os.environ.get("QT_QPA_PLATFORM") or sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


# Qt 6's xcb plugin needs these beside the X libraries every desktop has (Qt's own list).
XCB_PACKAGES = ("libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 "
                "libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0")


def qt_platform_problem(env=None, platform: str = sys.platform, load=None) -> str | None:
    """On Linux with an X display, what keeps Qt's xcb plugin from loading, as a message naming
    the missing system library and its package; None when it loads (or is not the one used).

    Qt itself would abort the process with "could not load the Qt platform plugin" and a hint
    about QT_DEBUG_PLUGINS; loading the plugin here first (dlopen resolves its dependencies the
    same way) turns that into a sentence saying what to install."""
    env = os.environ if env is None else env
    chosen = env.get("QT_QPA_PLATFORM", "")
    if platform != "linux" or not env.get("DISPLAY") or (chosen and not chosen.startswith("xcb")) \
            or (env.get("WAYLAND_DISPLAY") and not chosen):   # Qt takes its wayland plugin then

        return None
    if load is None:
        import ctypes
        load = ctypes.CDLL
    plugin = _qt_plugin_path("platforms/libqxcb.so")
    if plugin is None:
        return None
    try:
        load(str(plugin))
    except OSError as exc:
        library = str(exc).split(":", 1)[0].strip()
        return (f"Qt cannot start on this X display: the system library {library} is missing. "
                f"Install it (Debian/Ubuntu: sudo apt install {debian_package(library)}; Qt's xcb "
                f"plugin also needs {XCB_PACKAGES}), or run with --screenshot PATH to render "
                f"without a display.")
    return None


def _qt_plugin_path(name: str):
    """The path of a plugin shipped in PySide6 (found without importing Qt)."""
    import importlib.util
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "Qt" / "plugins" / name
    return path if path.is_file() else None


def debian_package(library: str) -> str:
    """The Debian package of a shared library by its soname (Debian policy 8.1: lowercased
    name + version, with a hyphen when the name ends in a digit): libxcb-cursor.so.0 ->
    libxcb-cursor0."""
    name, _, version = library.partition(".so.")
    name = name.lower()
    return f"{name}-{version}" if name[-1:].isdigit() else f"{name}{version}"


def _save_last_session(window) -> None:
    from ssjdn.core.errors import UserError
    try:
        window.session.save(last_session_path())
    except (OSError, UserError):
        pass  # a read-only home only loses the "reopen last session" convenience


class ScreenshotDirector:
    """Drives start-up to a state worth showing, grabs the window, and quits."""

    def __init__(self, window, args, app) -> None:
        self.window, self.args, self.app = window, args, app
        self.exit_code = 0
        self.done = False
        self.step = None

    def arm(self) -> None:
        from PySide6.QtCore import QTimer
        if self.args.match_threshold is not None:
            self.window.search_panel.threshold.setValue(round(self.args.match_threshold * 100))
        self.window.indexReady.connect(self._on_index_ready)
        self.window.errorShown.connect(self._on_error)
        QTimer.singleShot(int(self.args.timeout * 1000), self._on_timeout)

    def _on_index_ready(self, _stats) -> None:
        if self.step is not None:
            return   # a second build (e.g. resumed) must not start the script again
        self.step = "search"
        if self.args.query:
            self.window.searchFinished.connect(self._on_search)
            self.window.search(self.args.query, self.window.search_panel.k.value())
        else:
            self._grab_soon()

    def _on_search(self, hits) -> None:
        """The script after the search: marks, a refinement, find-all, a selected hit."""
        args, window = self.args, self.window
        if self.step == "search":
            marks = [(n, True) for n in args.relevant] + [(n, False) for n in args.not_relevant]
            for n, label in marks:
                if n <= len(hits):
                    window.model.feedback.mark(hits[n - 1].tile_id, label)
            self.step = "refine"
            if args.refine and marks:
                window.refine()
                return
        if self.step == "refine":
            self.step = "find all"
            if args.find_all:
                window.findAllFinished.connect(lambda _n: self._on_search(window.model.results.hits))
                window.find_all()
                return
        if self.step == "find all":
            self.step = "select"
            window.feedback_panel.threshold.setValue(round(args.threshold * 100))
            if args.dock in window.docks:
                window.docks[args.dock].show()
                window.docks[args.dock].raise_()
            self._select_hit(hits)

    def _select_hit(self, hits) -> None:
        n = self.args.select_hit
        if n and len(hits) >= n:
            # Grab when idle: after the salience maps and the caption ranking that follow.
            self.window.idle.connect(self._grab_soon)
            self.window.select_tile(hits[n - 1].tile_id)   # no zoom: the shot shows all hits
        else:
            self._grab_soon()

    def _on_error(self, message: str) -> None:
        print(f"ssjdn-explorer: {message}", file=sys.stderr)
        self.exit_code = 1
        self._grab_soon()

    def _on_timeout(self) -> None:
        print("ssjdn-explorer: start-up did not finish before --timeout; saving the window as it is",
              file=sys.stderr)
        self.exit_code = 1
        self._grab_soon()

    def _grab_soon(self) -> None:
        from PySide6.QtCore import QTimer
        self.window.map_view.refresh_details()
        QTimer.singleShot(SCREENSHOT_SETTLE_MS, self._grab_when_settled)

    def _grab_when_settled(self, tries: int = 50) -> None:
        """Grab once the map's detail reads have landed (or after about 5 s more)."""
        from PySide6.QtCore import QTimer
        if self.window.map_view.details_settled() or tries <= 0:
            self._grab()
        else:
            QTimer.singleShot(100, lambda: self._grab_when_settled(tries - 1))

    def _grab(self) -> None:
        if self.done:
            return
        self.done = True
        path = Path(self.args.screenshot)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.window.grab().save(str(path)):
            print(f"ssjdn-explorer: could not write {path}", file=sys.stderr)
            self.exit_code = 1
        self.window.close()
        self.app.exit(self.exit_code)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        sys.exit(1)
