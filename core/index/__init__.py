"""The index engine: the tile index on disk, its vectors and search structure, and the indexing
pipelines (one machine or a Dask cluster) that fill it."""
