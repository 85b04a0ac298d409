"""Progress of long work (building an index, bringing its search structure up to date, scoring
every tile) as a value: which stage the work is in, how far it is, and a line for people.

Listeners (the CLI's bar, the app's status line) branch on `stage`, never on the wording of
`message`, so a message can be reworded without breaking them.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Stage(Enum):
    STARTING = "starting"            # before the work proper: a cluster starting, models loading
    PLANNED = "planned"              # the tiles are counted: `total` holds from here on
    ENCODING = "encoding"            # tiles encoded (or found unchanged); message: the raster
    SEARCH_STRUCTURE = "search structure"   # every tile done; the search structure is brought up to date
    SCORING = "scoring"              # a classifier scores every tile
    DONE = "done"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Progress:
    """One report: `done` of `total` units (tiles, or vectors in the search-structure stage;
    0 of 0 when not counted) and `message`, the line a status bar shows."""

    stage: Stage
    done: int = 0
    total: int = 0
    message: str = ""
