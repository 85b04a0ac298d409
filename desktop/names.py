"""Short names of rasters and tiles for lists and panels (no Qt): both ends of a long file
name, and where a tile is (its centre in latitude / longitude)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ssjdn.desktop.geo import format_lonlat

NAME_CHARS = 30   # a raster's name in a list or a panel, elided in the middle past this


def elide_middle(text: str, chars: int = NAME_CHARS) -> str:
    """'manila_ph_010m…fab355_4310': both ends of a long name kept (they tell scenes apart);
    a panel showing a 100-character file name whole would widen its dock over the map."""
    if len(text) <= chars:
        return text
    head = (chars - 1) // 2
    return f"{text[:head]}…{text[len(text) - (chars - 1 - head):]}"


def place_names(records, chars: int = NAME_CHARS, sep: str = "  ") -> list[str]:
    """Short names of tiles that say where they are: 'stem…elided  14.59312°N 120.98422°E'
    (the tile's centre; 'tile 12' for a raster with no CRS); `chars` for the stem, `sep`
    between it and the place (a newline in a list of tall rows)."""
    from ssjdn.core.geo.tiling import tile_centres_wgs84
    records = list(records)
    names = []
    for record, (lon, lat) in zip(records, tile_centres_wgs84(records)):
        where = format_lonlat(lon, lat) if np.isfinite(lat) else f"tile {record.tile_id & 0xFFFFFFFF}"
        names.append(f"{elide_middle(Path(record.raster_path).stem, chars)}{sep}{where}")
    return names


def describe_tile(record) -> str:
    """'stem…elided, tile 12 at 14.59312°N 120.98422°E' (ids pack the raster id in their high
    bits; the place is the tile's centre, pixel offsets without a CRS)."""
    from ssjdn.core.geo.tiling import tile_centres_wgs84
    lon, lat = tile_centres_wgs84([record])[0]
    col, row = int(record.window.col_off), int(record.window.row_off)
    where = format_lonlat(lon, lat) if np.isfinite(lat) else f"px {col},{row}"
    return f"{elide_middle(Path(record.raster_path).stem)}, tile {record.tile_id & 0xFFFFFFFF} at {where}"
