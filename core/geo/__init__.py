"""Geodata: raster reading, tiling and its geometry, STAC catalogs, GIS exports. No model."""
