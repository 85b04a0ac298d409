"""Engine subcommands of the `ssjdn` CLI: index, search, match, export (filled in below)."""
from __future__ import annotations


def register(subparsers) -> None:
    """Add the engine subcommands to the `ssjdn` parser."""
    return None
