"""The file formats results are written in, as data: the exporters (export.py), the CLI's checks
and help, the app's file dialogs and the labelled-set reader all take names and suffixes from
here. Light on purpose (no GDAL): `ssjdn --help` reads it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FileFormat:
    name: str                    # as a file dialog shows it
    suffixes: tuple[str, ...]    # lower case; the first is the one to suggest


GEOJSON = FileFormat("GeoJSON", (".geojson", ".json"))
GEOPACKAGE = FileFormat("GeoPackage", (".gpkg",))
GEOTIFF = FileFormat("GeoTIFF", (".tif", ".tiff"))
VECTOR_FORMATS = (GEOJSON, GEOPACKAGE)   # hits and labelled sets (export_hits, labels.py)
RASTER_FORMATS = (GEOTIFF,)              # grids (write_geotiff)


def suffix_choice(formats) -> str:
    """'.geojson or .gpkg': the suffixes to suggest, for messages and help."""
    return " or ".join(f.suffixes[0] for f in formats)


def dialog_filter(formats, first: FileFormat | None = None) -> str:
    """'GeoJSON (*.geojson *.json);;GeoPackage (*.gpkg)': a file dialog's filter (plain text),
    `first` first (the one the dialog starts with)."""
    ordered = sorted(formats, key=lambda f: f is not first)
    return ";;".join(f"{f.name} ({' '.join('*' + s for s in f.suffixes)})" for f in ordered)


def format_of(path, formats) -> FileFormat | None:
    suffix = Path(path).suffix.lower()
    return next((f for f in formats if suffix in f.suffixes), None)
