"""Subcommands that other layers add to `ssjdn`, found through entry points so that core never
imports them: training declares `train`, `eval` and `calibrate` in pyproject.toml under
[project.entry-points."ssjdn.commands"]. Each entry point names a `register(subparsers)`."""
from __future__ import annotations

import sys
from importlib import metadata

COMMAND_GROUP = "ssjdn.commands"


def command_plugins() -> list[metadata.EntryPoint]:
    """The installed plugins, in name order so that `ssjdn --help` lists them the same way."""
    return sorted(metadata.entry_points(group=COMMAND_GROUP), key=lambda plugin: plugin.name)


def register_plugins(subparsers, plugins=None) -> list[str]:
    """Let each plugin add its subcommands. One that cannot be loaded is skipped with one line
    on stderr, so that the other commands keep working; returns those lines."""
    problems = []
    for plugin in command_plugins() if plugins is None else plugins:
        try:
            plugin.load()(subparsers)
        except Exception as exc:  # noqa: BLE001 - any failure of a plugin is reported the same way
            problems.append(plugin_problem(plugin, exc))
            print(f"warning: {problems[-1]}", file=sys.stderr)
    return problems


def plugin_problem(plugin: metadata.EntryPoint, exc: BaseException) -> str:
    return (f"the '{plugin.name}' commands ({plugin.value}) could not be loaded "
            f"({type(exc).__name__}: {exc}); reinstall SSJDN Explorer (pip install -e . in its "
            "folder) to get them back")
