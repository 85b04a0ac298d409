"""The import rules of docs/ARCHITECTURE.md, read from the source with ast (nothing is imported).

Layers: core never imports training or desktop, and no Qt; training never imports desktop.
Rooms of core: the top-level modules (`base`: errors, files, places, ...) import no room; `model`
and `geo` only base; `index` adds model and geo; `query` adds index; `cli` may use them all.
Imports inside functions count too: a lazy import is still an arrow.
"""
from __future__ import annotations

import argparse
import ast
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("core", "training", "desktop")
QT_MODULES = ("PySide6", "PyQt5", "PyQt6", "shiboken6", "qtpy")

# Which rooms of core each room may import (itself always included).
ROOM_MAY_IMPORT = {
    "base": {"base"},
    "model": {"base", "model"},
    "geo": {"base", "geo"},
    "index": {"base", "model", "geo", "index"},
    "query": {"base", "model", "geo", "index", "query"},
    "cli": {"base", "model", "geo", "index", "query", "cli"},
}
LAYER_MAY_IMPORT = {
    "core": {"core"},
    "training": {"core", "training"},
    "desktop": {"core", "training", "desktop"},
}


def source_files(layer: str) -> list[Path]:
    return sorted((REPO / layer).rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (function bodies included), as dotted names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:   # the project uses absolute imports only; say so if that changes
                pytest.fail(f"{path.relative_to(REPO)}: relative import; write ssjdn.… in full")
            # `from ssjdn.core import errors` imports the module ssjdn.core.errors
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "ssjdn" and parts[1] in LAYERS else None


def room_of_module(module: str) -> str | None:
    """The room of an ssjdn.core module: its sub-package, or base for a top-level module."""
    parts = module.split(".")
    if parts[:2] != ["ssjdn", "core"] or len(parts) < 3:
        return None
    return parts[2] if parts[2] in ROOM_MAY_IMPORT else "base"


def room_of_file(path: Path) -> str:
    relative = path.relative_to(REPO / "core").parts
    return relative[0] if len(relative) > 1 else "base"


def room_arrows() -> dict[tuple[str, str], list[str]]:
    """(from room, to room) -> the files that make that arrow, over all of core."""
    arrows: dict[tuple[str, str], list[str]] = {}
    for path in source_files("core"):
        source = room_of_file(path)
        for module in imported_modules(path):
            target = room_of_module(module)
            # `from ssjdn.core import files` names ssjdn.core itself too: that is no arrow
            if target is not None and module != "ssjdn.core":
                arrows.setdefault((source, target), []).append(str(path.relative_to(REPO)))
    return arrows


def test_every_core_room_is_a_known_room():
    rooms = {room_of_file(path) for path in source_files("core")}
    assert rooms <= set(ROOM_MAY_IMPORT), f"rooms missing from the rules: {rooms - set(ROOM_MAY_IMPORT)}"


@pytest.mark.parametrize("layer", LAYERS)
def test_no_layer_imports_a_layer_above_it(layer):
    wrong = [f"{path.relative_to(REPO)} imports {module}"
             for path in source_files(layer) for module in sorted(imported_modules(path))
             if layer_of(module) not in (None, *LAYER_MAY_IMPORT[layer])]
    assert wrong == []


@pytest.mark.parametrize("layer", ["core", "training"])
def test_no_qt_below_the_desktop(layer):
    wrong = [f"{path.relative_to(REPO)} imports {module}"
             for path in source_files(layer) for module in sorted(imported_modules(path))
             if module.split(".")[0] in QT_MODULES]
    assert wrong == []


def test_core_names_no_upper_layer_even_by_string():
    """importlib.import_module("ssjdn.training...") would dodge the import check."""
    wrong = []
    for path in source_files("core"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and node.value.startswith(("ssjdn.training", "ssjdn.desktop"))):
                wrong.append(f"{path.relative_to(REPO)}: {node.value!r}")
    assert wrong == []


def test_core_rooms_import_only_the_rooms_below_them():
    wrong = [f"{source} -> {target}: {', '.join(sorted(set(files)))}"
             for (source, target), files in sorted(room_arrows().items())
             if target not in ROOM_MAY_IMPORT[source]]
    assert wrong == []


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A list of nodes that go round, or None (depth-first search with a path stack)."""
    done: set[str] = set()

    def visit(node, path):
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        for target in sorted(graph.get(node, ())):
            cycle = visit(target, path + [node])
            if cycle:
                return cycle
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_no_import_cycle_between_core_rooms():
    graph: dict[str, set[str]] = {}
    for source, target in room_arrows():
        if source != target:
            graph.setdefault(source, set()).add(target)
    assert find_cycle(graph) is None
    # The rules themselves leave no room for one.
    rules = {room: allowed - {room} for room, allowed in ROOM_MAY_IMPORT.items()}
    assert find_cycle(rules) is None


# --- `ssjdn` finds other layers' commands through entry points, never by importing them ----------

def declared_command_plugins() -> list[metadata.EntryPoint]:
    from ssjdn.core.cli.plugins import COMMAND_GROUP
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = project.get("entry-points", {}).get(COMMAND_GROUP, {})
    return [metadata.EntryPoint(name, value, COMMAND_GROUP) for name, value in declared.items()]


def subcommands(parser: argparse.ArgumentParser) -> set[str]:
    return {name for action in parser._subparsers._group_actions for name in action.choices}


def test_training_declares_its_commands_and_they_load():
    from ssjdn.core.cli.plugins import register_plugins
    plugins = declared_command_plugins()
    assert [plugin.value for plugin in plugins] == ["ssjdn.training.commands:register"]
    parser = argparse.ArgumentParser()
    assert register_plugins(parser.add_subparsers(), plugins) == []
    assert {"train", "eval", "calibrate"} <= subcommands(parser)


def test_the_cli_registers_what_the_installed_entry_points_declare(monkeypatch):
    from ssjdn.core.cli import main as cli_main, plugins
    monkeypatch.setattr(plugins, "command_plugins", declared_command_plugins)
    assert {"index", "search", "train", "eval", "calibrate"} <= subcommands(cli_main.build_parser())


def test_a_broken_plugin_is_one_clear_line_and_the_other_commands_still_work(capsys):
    from ssjdn.core.cli.main import main
    from ssjdn.core.cli import plugins
    broken = metadata.EntryPoint("extra", "ssjdn.no_such_layer.commands:register", plugins.COMMAND_GROUP)
    parser = argparse.ArgumentParser()
    problems = plugins.register_plugins(parser.add_subparsers(), [broken, *declared_command_plugins()])
    assert len(problems) == 1 and "'extra' commands" in problems[0]
    assert "No module named 'ssjdn.no_such_layer'" in problems[0] and "reinstall" in problems[0]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "train" in subcommands(parser)
    with pytest.raises(SystemExit) as exit_:   # core's commands still parse
        main(["search", "--help"])
    assert exit_.value.code == 0


# --- one way to write a file: core/files.py ------------------------------------------------------

RENAMING_CALLS = {("os", "replace"), ("os", "rename"), ("tempfile", "mkstemp")}


def test_every_writer_goes_through_atomic_path():
    """os.replace / os.rename / mkstemp belong to core/files.py (atomic_path) alone, and so does
    Path.replace of a temporary file: one place gets temporary names, clean-up and the
    full-disk and permission messages right."""
    wrong = []
    for layer in LAYERS:
        for path in source_files(layer):
            if path == REPO / "core" / "files.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                owner = node.func.value
                name = owner.id if isinstance(owner, ast.Name) else None
                if (name, node.func.attr) in RENAMING_CALLS or (
                        node.func.attr == "replace" and name in ("tmp", "temporary")):
                    wrong.append(f"{path.relative_to(REPO)}:{node.lineno} {name}.{node.func.attr}")
    assert wrong == []


# --- what ships with ssjdn is reached through one helper -----------------------------------------

def test_shipped_files_are_reached_through_shipped_path():
    from ssjdn.core.places import shipped_path
    assert (shipped_path("resources", "sample", "haiti_rgbn_5m.tif")).is_file()
    assert (shipped_path("training", "configs", "tiny.yaml")).is_file()
    assert (shipped_path("core", "model", "configs", "tiny.yaml")).is_file()
    wrong = [f"{path.relative_to(REPO)}" for layer in LAYERS for path in source_files(layer)
             if path != REPO / "core" / "places.py" and "Path(__file__)" in path.read_text()]
    assert wrong == []


def test_every_package_is_in_the_wheel():
    """pyproject.toml lists packages by hand (the user's layout maps core/ to ssjdn.core): a
    sub-package missing there works in a checkout and is absent from an installed wheel."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {f"ssjdn.{'.'.join(init.parent.relative_to(REPO).parts)}"
               for layer in LAYERS for init in (REPO / layer).rglob("__init__.py")}
    assert folders - set(setuptools["packages"]) == set()


def test_raster_reading_imports_nothing_else_of_geo():
    """raster.py is the bottom of the geo room: tiling, export and stac build on it, never the
    other way round (it used to call up into tiling for a raster's pixel size)."""
    wrong = sorted(m for m in imported_modules(REPO / "core" / "geo" / "raster.py")
                   if m.startswith("ssjdn.core.geo.") and m != "ssjdn.core.geo.raster")
    assert wrong == []
