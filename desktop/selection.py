"""The selected tile, with no Qt: `TileSelection`, a component of ExplorerModel.

The tile the user selected (a hit, a row of the table, a click on the map), its SEM/SSM
salience maps and, while words are searched for, the map of where they match in it; and the
job ranking captions against it. The salience and caption panels and the map follow its events.

Events (keyword arguments): selection(record)   salience(tile_id, maps)
"""
from __future__ import annotations

from ssjdn.desktop.state import Events

# The selected tile's query map in `salience`, beside the (kind, direction, scale) SEM/SSM keys.
QUERY_MAP_KEY = ("query", "", 0)


class TileSelection:
    def __init__(self, model, results) -> None:
        self.model = model               # the ExplorerModel: its index and loaded model
        self.results = results           # the words of the last search, for the query map
        self.events = Events()
        self.selected_tile = None        # TileRecord
        self.salience: dict = {}

    def select(self, tile_id: int):
        """Select a tile; returns the job computing its SEM/SSM maps, and while words are being
        searched for, the map of where they match (QUERY_MAP_KEY). None without an index."""
        from ssjdn.core.query.search import tile_query_map, tile_salience
        if self.model.index is None:
            return None
        self.selected_tile = self.model.index.tile(tile_id)
        self.events.emit("selection", record=self.selected_tile)
        index, model, words = self.model.index, self.model.loaded.model, self.results.words

        def work():
            maps = tile_salience(index, model, tile_id)
            if words:
                maps[QUERY_MAP_KEY] = tile_query_map(index, model, tile_id, words)
            return tile_id, maps

        return work

    def apply_salience(self, result) -> bool:
        tile_id, maps = result
        if self.selected_tile is None or self.selected_tile.tile_id != tile_id:
            return False
        self.salience = maps
        self.events.emit("salience", tile_id=tile_id, maps=maps)
        return True

    def captions_job(self, captions: list[str]):
        """The job ranking `captions` against the selected tile; it returns (ranking, a line
        naming the words the model cannot read, or None), as `ssjdn match` prints them."""
        from ssjdn.core.query.search import rank_captions, unread_words_note
        if self.selected_tile is None or self.model.index is None or not captions:
            return None
        index, model, tile_id = self.model.index, self.model.loaded.model, self.selected_tile.tile_id
        return lambda: (rank_captions(model, tile_id, captions, index=index),
                        unread_words_note(model, " ".join(captions)))
