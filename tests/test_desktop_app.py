"""The `ssjdn-explorer` entry point: start-up, --screenshot, last session."""
from __future__ import annotations

import json

from desktop_fixtures import make_window, small_raster, user_dirs  # noqa: F401
from PySide6.QtGui import QImage


def test_screenshot_renders_the_window_after_indexing_a_query_marks_and_find_all_then_exits(user_dirs, small_raster):
    # A separate process: QApplication.exec() may run once per process, and this is the real
    # console entry point a user starts.
    import os
    import subprocess
    import sys
    from ssjdn.desktop.app import last_session_path
    shot = user_dirs / "shot.png"
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from ssjdn.desktop.app import main; sys.exit(main())",
         small_raster, "--model", "config:tiny", "--device", "cpu", "--screenshot", str(shot),
         "--query", "a red roof", "--select-hit", "1", "--relevant", "1,2,3", "--not-relevant", "4",
         "--refine", "--find-all", "--dock", "findall", "--size", "1200x800", "--timeout", "120"],
        env=dict(os.environ, QT_QPA_PLATFORM="offscreen"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr      # any error shown on the way exits with 1
    assert "Traceback" not in done.stderr
    image = QImage(str(shot))
    assert (image.width(), image.height()) == (1200, 800)
    session = json.loads(last_session_path().read_text())
    assert session["rasters"] == [small_raster] and session["queries"] == ["a red roof"]
    assert session["model"] == "config:tiny"


def test_without_rasters_the_first_launch_opens_the_sample_scene(user_dirs):
    from argparse import Namespace
    from ssjdn.desktop.app import initial_session
    from ssjdn.desktop.resources import sample_scene_path
    args = Namespace(session=None, rasters=[], sample=False, model=None, device=None, tile_m=None)
    session, rasters = initial_session(args)
    assert rasters == [str(sample_scene_path())] and sample_scene_path().is_file()
    assert session.model_spec == "shipped"
    assert session.tile_ground_m == 200.0      # 40 px tiles on its 5 m pixels, not 15 px


def test_a_session_opened_at_start_up_keeps_its_layer_states(user_dirs, small_raster, tmp_path):
    # They were dropped: a saved tile grid or heatmap opacity did not come back with --session.
    from argparse import Namespace
    from ssjdn.desktop.app import initial_session
    from ssjdn.desktop.state import Session
    layers = {"tiles": {"visible": True, "opacity": 0.5}}
    Session(rasters=[small_raster], layers=layers).save(tmp_path / "saved.json")
    args = Namespace(session=str(tmp_path / "saved.json"), rasters=[], sample=False, model=None,
                     device=None, tile_m=None)
    session, rasters = initial_session(args)
    assert rasters == [small_raster] and session.layers == layers


def test_the_sample_opened_from_the_menu_in_an_empty_window_gets_its_tile_size(qtbot, make_window):
    window = make_window(auto_index=False)
    window.dialogs.open_sample()
    assert window.session.tile_ground_m == 200.0 and window.choice.tile_size.value() == 200.0
    assert len(window.map_view.rasters) == 1


def test_screenshot_hit_ranks_are_checked_when_parsed():
    import pytest
    from ssjdn.desktop.app import build_parser
    assert build_parser().parse_args(["--relevant", "1,3"]).relevant == [1, 3]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--relevant", "0"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--not-relevant", "one"])


def test_a_last_session_with_wrong_types_is_ignored_with_a_message_and_the_app_starts(user_dirs, capsys):
    # "tile_ground_m": "abc" in last-session.json made every launch end in "cannot start".
    from argparse import Namespace
    from ssjdn.desktop.app import initial_session, last_session_path
    from ssjdn.desktop.resources import sample_scene_path
    last_session_path().parent.mkdir(parents=True, exist_ok=True)
    last_session_path().write_text(json.dumps({"version": 1, "rasters": [], "model": 5,
                                               "tile_ground_m": "abc"}))
    args = Namespace(session=None, rasters=[], sample=False, model=None, device=None, tile_m=None)
    session, rasters = initial_session(args)
    assert rasters == [str(sample_scene_path())] and session.model_spec == "shipped"
    message = capsys.readouterr().err
    assert str(last_session_path()) in message and "ignored" in message


def test_a_start_up_failure_is_one_line_on_the_terminal_without_a_traceback(user_dirs):
    import os
    import subprocess
    import sys
    bad = user_dirs / "bad-session.json"
    bad.write_text(json.dumps({"version": 1, "tile_ground_m": "abc"}))
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from ssjdn.desktop.app import main; sys.exit(main())",
         "--session", str(bad), "--screenshot", str(user_dirs / "shot.png"), "--timeout", "60"],
        env=dict(os.environ, QT_QPA_PLATFORM="offscreen"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and '"tile_ground_m"' in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_screenshot_ends_at_once_when_a_command_line_raster_cannot_be_opened(user_dirs):
    # It waited its whole --timeout: the error was shown before the screenshot listened.
    import os
    import subprocess
    import sys
    import time
    bad = user_dirs / "notes.tif"
    bad.write_text("this is not an image")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from ssjdn.desktop.app import main; sys.exit(main())",
         str(bad), "--model", "config:tiny", "--device", "cpu", "--screenshot",
         str(user_dirs / "shot.png"), "--timeout", "100"],
        env=dict(os.environ, QT_QPA_PLATFORM="offscreen"), capture_output=True, text=True, timeout=200)
    assert time.monotonic() - started < 60
    assert done.returncode == 1 and "notes.tif" in done.stderr
    assert "Traceback" not in done.stderr and "--timeout" not in done.stderr
