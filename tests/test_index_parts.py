"""TileIndex is a facade over parts that share one database object (docs/engine.md): the
parts never import the facade, and what they write is seen through it at once."""
import ast
from pathlib import Path

from engine_fixtures import index_small_scene

PARTS = ("database", "lock", "vector_rows", "formats", "search_file", "label_sets")
INDEX_ROOM = Path(__file__).resolve().parents[1] / "core" / "index"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_part_imports_the_facade_or_a_part_that_needs_it():
    order = {name: i for i, name in enumerate(PARTS)}
    for part in PARTS:
        imported = _imports(INDEX_ROOM / f"{part}.py")
        assert "ssjdn.core.index.index_store" not in imported, part
        # Parts import only parts listed before them: the arrows form a ladder, never a circle.
        for other in PARTS:
            if f"ssjdn.core.index.{other}" in imported:
                assert order[other] < order[part], f"{part} imports {other}"


def test_the_parts_of_an_open_index_share_its_one_database(tmp_path, tiny_model):
    index, _ = index_small_scene(tmp_path, tiny_model)
    with index:
        assert index.vector_rows.db is index.db
        assert index.search_file.db is index.db and index.search_file.vectors is index.vector_rows
        assert index.labelled_sets.db is index.db


def test_a_write_is_seen_by_the_next_read_of_the_rasters(tmp_path, tiny_model):
    """The rasters' records are cached (a second on a ten-million-tile index) until a write."""
    index, _ = index_small_scene(tmp_path, tiny_model)
    with index:
        raster_id = index.rasters()[0].raster_id
        with index.db.connection:   # as an interrupted build leaves it
            index.db.execute("UPDATE rasters SET complete = 0 WHERE id = ?", (raster_id,))
        index.refresh()
        assert not index.rasters()[0].complete
        index.mark_complete(raster_id)
        assert index.rasters()[0].complete
        index.save_label_set("lake", {index.tile_ids()[0]: True})   # a part's write counts too
        assert index.label_sets() == [("lake", 1, 0)] and index.rasters()[0].complete
