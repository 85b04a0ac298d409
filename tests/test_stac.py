"""STAC catalogs in: local and over a localhost HTTP server, filters, reruns, hits with item ids."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine_fixtures import scene
from stac_fixtures import COLLECTION, StacServer, write_catalog, write_cog


@pytest.fixture
def no_proxy(monkeypatch):
    """GDAL's curl and urllib must reach 127.0.0.1 directly, whatever proxy the machine has."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")


def test_reading_a_catalog_picks_the_visual_asset_and_keeps_the_items_record(tmp_path):
    from ssjdn.core.geo.stac import read_stac
    catalog = write_catalog(tmp_path / "stac", broken=False)
    assets, warnings = read_stac(catalog)
    assert warnings == []
    assert [a.item_id for a in assets] == ["flight-0", "flight-1", "flight-2"]
    assert all(a.collection == COLLECTION and a.path.endswith(f"{a.item_id}.tif") for a in assets)
    assert assets[1].datetime.startswith("2024-03-05")
    one, _ = read_stac(tmp_path / "stac" / COLLECTION / "flight-1" / "flight-1.json")
    assert [a.item_id for a in one] == ["flight-1"] and one[0].version == assets[1].version


def test_bbox_datetime_and_asset_filters(tmp_path):
    from ssjdn.core.errors import UserError
    from ssjdn.core.geo.stac import read_stac
    catalog = write_catalog(tmp_path / "stac", broken=False)
    first_half, _ = read_stac(catalog, datetime_range="2024-01-01/2024-03-31")
    assert [a.item_id for a in first_half] == ["flight-0", "flight-1"]
    assert [a.item_id for a in read_stac(catalog, datetime_range="2024-06-20")[0]] == ["flight-2"]
    assert [a.item_id for a in read_stac(catalog, datetime_range="2024-03-01/..")[0]] == ["flight-1", "flight-2"]
    west = read_stac(catalog)[0][0]
    with open(tmp_path / "stac" / COLLECTION / "flight-0" / "flight-0.json") as f:
        box = json.load(f)["bbox"]
    inside_first = f"{box[0]},{box[1]},{box[0] + 1e-4},{box[1] + 1e-4}"
    assert [a.item_id for a in read_stac(catalog, bbox=inside_first)[0]] == [west.item_id]
    with pytest.raises(UserError, match="no asset 'nir'"):
        read_stac(catalog, asset="nir")
    with pytest.raises(UserError, match="--bbox is west,south,east,north"):
        read_stac(catalog, bbox="1,2,3")
    with pytest.raises(UserError, match="ISO 8601"):
        read_stac(catalog, datetime_range="last spring")
    with pytest.raises(UserError, match="not JSON"):
        read_stac(_write(tmp_path / "notes.json", "hello"))


def _write(path, text):
    path.write_text(text)
    return path


def test_a_catalog_of_three_items_indexes_reruns_without_encoding_and_hits_carry_item_ids(
        tmp_path, capsys):
    from ssjdn.core.cli.main import main
    catalog = write_catalog(tmp_path / "stac")
    index = str(tmp_path / "idx")
    args = ["index", str(catalog), "--index", index, "--model", "tiny", "--tile-px", "64"]
    assert main(args) == 3                                   # the lost item's asset: skipped
    out = capsys.readouterr()
    assert "flight-lost" in out.err and "60 tiles encoded" in out.out
    assert main(args) == 3
    assert "0 tiles encoded" in capsys.readouterr().out      # nothing encoded again
    assert main(["search", "houses", "--index", index, "-k", "5"]) == 0
    assert "item flight-" in capsys.readouterr().out
    hits_file = tmp_path / "hits.geojson"
    assert main(["export", "--index", index, "--out", str(hits_file)]) == 0
    features = json.loads(hits_file.read_text())["features"]
    assert {f["properties"]["stac_collection"] for f in features} == {COLLECTION}
    assert all(f["properties"]["stac_item"].startswith("flight-") and
               f["properties"]["datetime"].startswith("2024-") for f in features)
    gpkg = tmp_path / "hits.gpkg"
    assert main(["export", "--index", index, "--out", str(gpkg)]) == 0


def test_a_changed_item_is_encoded_again_and_only_it(tmp_path, tiny_model):
    from ssjdn.core.index.indexing import build_index
    from ssjdn.core.geo.stac import read_stac
    catalog = write_catalog(tmp_path / "stac", broken=False)
    build_index(tmp_path / "idx", read_stac(catalog)[0], tiny_model, tile_px=64)
    item_file = tmp_path / "stac" / COLLECTION / "flight-2" / "flight-2.json"
    item = json.loads(item_file.read_text())
    item["properties"]["updated"] = "2024-08-01T00:00:00Z"   # republished
    item_file.write_text(json.dumps(item))
    again = build_index(tmp_path / "idx", read_stac(catalog)[0], tiny_model, tile_px=64)
    assert again.tiles_encoded == 20 and again.rasters_skipped == 2


def test_a_remote_catalog_is_read_through_vsicurl_windowed(tmp_path, tiny_model, no_proxy, capsys):
    from ssjdn.core.cli.main import main
    from ssjdn.core.index.index_store import TileIndex
    from ssjdn.core.geo.raster import raster_info
    from ssjdn.core.geo.stac import read_stac
    write_catalog(tmp_path / "stac")
    with StacServer(tmp_path / "stac") as server:
        url = f"{server.url}/catalog.json"
        assets, _ = read_stac(url)
        assert all(a.path.startswith(f"/vsicurl/{server.url}/") for a in assets)
        # Opening a large remote COG (and looking for a collar) reads its header and an
        # overview, not the file.
        big = write_cog(tmp_path / "stac" / "big.tif", scene(2048, 2048), (500_000.0, 5_700_000.0))
        raster_info(f"/vsicurl/{server.url}/big.tif")
        assert 0 < server.served["/big.tif"] < Path(big).stat().st_size / 4
        index = str(tmp_path / "idx")
        args = ["index", url, "--index", index, "--model", "tiny", "--tile-px", "64",
                "--datetime", "2024-01-01/2024-12-31"]
        assert main(args) == 3
        out = capsys.readouterr()
        assert "flight-lost" in out.err and "60 tiles encoded" in out.out
        assert main(args) == 3
        assert "0 tiles encoded" in capsys.readouterr().out
    with TileIndex.open(index) as built:
        assert {r.tiling["stac"]["item"] for r in built.rasters()} == {"flight-0", "flight-1", "flight-2"}
        assert built.count == 60


def test_stac_options_need_a_catalog(tmp_path, capsys):
    from ssjdn.core.cli.main import main
    from engine_fixtures import utm_scene
    raster = utm_scene(tmp_path)
    assert main(["index", raster, "--index", str(tmp_path / "idx"), "--model", "tiny",
                 "--bbox", "0,0,1,1"]) == 2
    assert "STAC catalog" in capsys.readouterr().err
