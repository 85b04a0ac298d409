"""Launching: scripts/run.sh installs only when needed, and a Linux desktop without the system
libraries Qt's xcb plugin needs gets a message naming them instead of Qt's abort."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Stand-ins for python3 and the venv's programs: they record each call and do nothing else, so
# the script's logic runs in seconds with no network.
FAKE_PYTHON3 = """#!/usr/bin/env bash
echo "python3 $*" >> "$CALLS"
if [ "$1 $2" = "-m venv" ]; then
  mkdir -p "$3/bin"
  cat > "$3/bin/python" <<'INNER'
#!/usr/bin/env bash
echo "venv-python $*" >> "$CALLS"
bin="$(dirname "$0")"
printf '#!/usr/bin/env bash\\necho "explorer $*" >> "$CALLS"\\n' > "$bin/ssjdn-explorer"
chmod +x "$bin/ssjdn-explorer"
INNER
  chmod +x "$3/bin/python"
fi
"""


@pytest.fixture
def project(tmp_path):
    """A copy of the project's run script and pyproject.toml with fake python3 on PATH."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "run.sh", tmp_path / "scripts" / "run.sh")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(FAKE_PYTHON3)
    (bin_dir / "python3").chmod(0o755)
    calls = tmp_path / "calls.txt"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", CALLS=str(calls))

    def run(*args):
        calls.write_text("")
        subprocess.run(["bash", str(tmp_path / "scripts" / "run.sh"), *args], env=env, check=True,
                       timeout=60)
        return calls.read_text().splitlines()

    return tmp_path, run


def installs(calls) -> bool:
    return any("pip install" in line for line in calls)


def test_run_sh_installs_on_a_fresh_machine_then_only_after_a_dependency_change(project):
    root, run = project
    first = run("--help")
    assert any(line.startswith("python3 -m venv") for line in first) and installs(first)
    assert first[-1] == "explorer --help"

    again = run("--help")
    assert not installs(again) and again == ["explorer --help"]   # current: straight to the app

    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("[project]", "[project]\n# a new pin", 1))
    changed = run()
    assert installs(changed) and changed[-1] == "explorer "

    (root / ".venv" / "bin" / "ssjdn-explorer").unlink()   # a broken install is redone
    assert installs(run())


def test_a_missing_xcb_library_is_named_with_the_package_to_install():
    from ssjdn.desktop.app import qt_platform_problem

    def loader(path):
        raise OSError("libxcb-cursor.so.0: cannot open shared object file: No such file or directory")

    message = qt_platform_problem(env={"DISPLAY": ":0"}, platform="linux", load=loader)
    assert "libxcb-cursor.so.0" in message and "apt install libxcb-cursor0" in message

    assert qt_platform_problem(env={"DISPLAY": ":0"}, platform="linux", load=lambda path: None) is None
    # Another platform plugin chosen, or no X display: the xcb plugin is not loaded at all.
    assert qt_platform_problem(env={"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"},
                               platform="linux", load=loader) is None
    assert qt_platform_problem(env={"WAYLAND_DISPLAY": "w"}, platform="linux", load=loader) is None


@pytest.mark.parametrize("library, package", [
    ("libxcb-icccm.so.4", "libxcb-icccm4"), ("libxkbcommon-x11.so.0", "libxkbcommon-x11-0"),
    ("libEGL.so.1", "libegl1"), ("libdbus-1.so.3", "libdbus-1-3")])
def test_debian_package_names_follow_the_library_soname(library, package):
    from ssjdn.desktop.app import debian_package
    assert debian_package(library) == package


def test_the_app_says_what_to_install_instead_of_letting_qt_abort(monkeypatch, capsys):
    from ssjdn.desktop import app
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(app, "qt_platform_problem", lambda: "Qt needs libxcb-cursor.so.0: sudo apt install libxcb-cursor0")
    assert app.main([]) == 2
    assert "apt install libxcb-cursor0" in capsys.readouterr().err


def test_help_is_quick_once_installed():
    # The README's command, already installed, reaches the app's --help without loading Qt
    # or torch; 5 s on a busy 2-core machine (it takes about 0.1 s).
    import sys
    import time
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ssjdn.desktop.app", "--help"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0 and "usage: ssjdn-explorer" in done.stdout
    assert time.perf_counter() - start < 5.0
