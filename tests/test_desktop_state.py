"""The app's models have no Qt: sessions, preferences, model choices, map frame, colormaps."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from desktop_fixtures import user_dirs  # noqa: F401


def test_model_modules_import_without_any_qt_binding():
    code = ("import sys\n"
            "for name in ('PySide6', 'PyQt5', 'PyQt6', 'PySide2'): sys.modules[name] = None\n"
            "import ssjdn.desktop.state, ssjdn.desktop.settings, ssjdn.desktop.models, "
            "ssjdn.desktop.geo, ssjdn.desktop.colormaps, ssjdn.desktop.train_process, "
            "ssjdn.desktop.explorer, ssjdn.desktop.resources, ssjdn.desktop.layers, ssjdn.desktop.results, "
            "ssjdn.desktop.selection, ssjdn.desktop.marks, ssjdn.desktop.attributes, ssjdn.desktop.names\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_session_round_trips_through_json_and_tells_views_what_changed(tmp_path):
    from ssjdn.desktop.state import Session
    session, seen = Session(), []
    session.events.connect("model", lambda spec: seen.append(("model", spec)))
    session.events.connect("rasters", lambda rasters: seen.append(("rasters", rasters)))
    session.set_model("config:tiny")
    session.set_model("config:tiny")                       # no change, no event
    session.add_raster(str(tmp_path / "a.tif"))
    session.add_query("a river")
    session.tile_ground_m = 120.0
    assert seen == [("model", "config:tiny"), ("rasters", [str(tmp_path / "a.tif")])]
    session.save(tmp_path / "s.json")
    restored = Session.load(tmp_path / "s.json")
    assert restored.to_dict() == session.to_dict()


def test_the_layer_list_keeps_a_sessions_states_until_each_layer_appears():
    from ssjdn.desktop.layers import LayerList
    layers, seen = LayerList({"tiles": {"visible": True, "opacity": 0.5}}), []
    layers.events.connect("layers", lambda: seen.append("layers"))
    layers.events.connect("layer", lambda layer: seen.append(layer))
    assert "tiles" not in layers
    layers.add("tiles", "Tile grid", "tiles", visible=False)         # appears once indexed
    assert (layers["tiles"].visible, layers["tiles"].opacity) == (True, 0.5)
    layers.set_visible("tiles", False)
    layers.add("tiles", "Tile grid", "tiles", visible=True)          # drawn again: keeps its state
    assert not layers["tiles"].visible and seen == ["layers", "tiles", "layers"]
    layers.add("hits", "Search hits", "hits")
    layers.restore({"hits": {"visible": False, "opacity": 0.2}, "heatmap:a.tif": {"opacity": 0.1}})
    assert not layers["hits"].visible and layers["hits"].opacity == 0.2     # applied now
    layers.add("heatmap:a.tif", "Score heatmap", "heatmap", opacity=0.35)    # and when it appears
    assert layers.states() == {"tiles": {"visible": False, "opacity": 0.5},
                               "hits": {"visible": False, "opacity": 0.2},
                               "heatmap:a.tif": {"visible": True, "opacity": 0.1}}
    layers.remove("hits")
    assert list(layers) == ["tiles", "heatmap:a.tif"]


def test_a_saved_session_takes_its_layers_from_the_app_model(tmp_path):
    from ssjdn.desktop.explorer import ExplorerModel
    from ssjdn.desktop.state import Session
    model = ExplorerModel(Session(model_spec="config:tiny"))
    model.layers.add("hits", "Search hits", "hits")
    model.layers.set_opacity("hits", 0.25)
    model.save_session(str(tmp_path / "s.json"), view_bounds=[0.0, 0.0, 10.0, 10.0])
    saved = Session.load(tmp_path / "s.json")
    assert saved.layers == {"hits": {"visible": True, "opacity": 0.25}} and saved.view_bounds == [0, 0, 10, 10]


def test_a_file_that_is_not_a_session_is_a_user_error(tmp_path):
    from ssjdn.core.errors import UserError
    from ssjdn.desktop.state import Session
    (tmp_path / "other.json").write_text('{"type": "FeatureCollection"}')
    with pytest.raises(UserError, match="not an SSJDN Explorer session"):
        Session.load(tmp_path / "other.json")


def test_recent_files_keep_the_newest_first_without_duplicates(user_dirs):
    from ssjdn.desktop.settings import MAX_RECENT, Preferences
    prefs = Preferences()
    for i in range(MAX_RECENT + 3):
        prefs.add_recent(f"/data/{i}.tif")
    prefs.add_recent("/data/5.tif")
    reloaded = Preferences()
    assert reloaded.recent_files[0] == "/data/5.tif"
    assert len(reloaded.recent_files) == MAX_RECENT and len(set(reloaded.recent_files)) == MAX_RECENT


def test_indexes_live_in_the_user_cache_one_per_model_and_tile_size(user_dirs):
    from ssjdn.desktop.settings import index_dir_for
    a = index_dir_for("f" * 64, None)
    assert a.is_relative_to(user_dirs / "cache")
    assert a == index_dir_for("f" * 64, None)
    assert a != index_dir_for("f" * 64, 100.0) and a != index_dir_for("e" * 64, None)


def test_the_untrained_fallback_is_reproducible_and_says_so(monkeypatch, tmp_path):
    from ssjdn.core.model import api, spec
    from ssjdn.desktop import models
    monkeypatch.setattr(api, "default_model_path", lambda: tmp_path / "missing.safetensors")
    monkeypatch.setattr(spec, "UNTRAINED_FALLBACK", spec.ModelSpec("config", "tiny"))
    first, second = models.load_choice("shipped", "cpu"), models.load_choice("shipped", "cpu")
    assert first.warning == (f"The shipped model ({tmp_path / 'missing.safetensors'}) is not installed. "
                             + models.FALLBACK_CONSEQUENCE)
    assert first.model.fingerprint == second.model.fingerprint   # its cached index is found again
    labels = [c.label for c in models.available_choices([])]
    assert labels[0] == "SSJDN default (untrained fallback)" and "tiny (config, untrained)" in labels


def test_colorize_spans_the_finite_range_and_hides_nan():
    from ssjdn.desktop.colormaps import NAMES, colorize, lookup_table
    values = np.array([[0.2, 0.3], [np.nan, 0.4]], dtype=np.float32)
    rgba, vmin, vmax = colorize(values, "viridis", alpha=0.5)
    assert (vmin, vmax) == pytest.approx((0.2, 0.4))
    assert rgba[1, 0, 3] == 0 and rgba[0, 0, 3] == 128
    assert tuple(rgba[0, 0, :3]) == tuple(lookup_table("viridis")[0])
    assert tuple(rgba[1, 1, :3]) == tuple(lookup_table("viridis")[255])
    assert all(lookup_table(name).shape == (256, 3) for name in NAMES)


def test_map_frame_converts_between_map_coordinates_and_lon_lat():
    from rasterio.crs import CRS
    from ssjdn.desktop.geo import MapFrame, format_lonlat
    frame = MapFrame(CRS.from_epsg(32631))
    lon, lat = frame.to_lonlat(500_000.0, 0.0)
    assert (lon, lat) == pytest.approx((3.0, 0.0), abs=1e-6)     # zone 31's central meridian
    assert format_lonlat(-72.2, 18.5) == "18.50000°N 72.20000°W"
    x, y, w, h = frame.bounds_to_scene((10.0, 20.0, 30.0, 60.0), CRS.from_epsg(32631))
    assert (x, y, w, h) == (10.0, -60.0, 20.0, 40.0)              # y flipped for Qt
    assert MapFrame(None).to_lonlat(1.0, 2.0) is None


def test_a_damaged_shipped_model_falls_back_with_the_reason(monkeypatch, tmp_path):
    from ssjdn.core.model import api, spec
    from ssjdn.desktop import models
    damaged = tmp_path / "ssjdn-default.safetensors"
    damaged.write_bytes(b"not a checkpoint")
    monkeypatch.setattr(api, "default_model_path", lambda: damaged)
    monkeypatch.setattr(spec, "UNTRAINED_FALLBACK", spec.ModelSpec("config", "tiny"))
    loaded = models.load_choice("shipped", "cpu")
    assert loaded.warning.startswith("The shipped model cannot be loaded")
    assert "untrained retrieval heads" in loaded.warning and loaded.model.name == "tiny"


@pytest.mark.parametrize("field, value", [
    ("tile_ground_m", "abc"), ("tile_ground_m", -5), ("tile_ground_m", True), ("model", 5),
    ("model", "nonsense"), ("device", ["cpu"]), ("device", "gpu"), ("rasters", "a.tif"), ("rasters", [3]),
    ("queries", [None]), ("layers", []), ("layers", {"tiles": {"opacity": "half"}}),
    ("layers", {"tiles": {"visible": "yes"}}), ("view_bounds", [0, 1]), ("view_bounds", "all"),
    ("index", 7), ("indexing", {"overlap": "abc"}), ("indexing", {"second_tile_m": [1]}),
    ("indexing", {"max_nodata": "most"})])
def test_a_session_with_a_wrongly_typed_field_is_a_user_error_naming_the_field(tmp_path, field, value):
    # Valid JSON with a wrong type was accepted and broke the app later, at every start.
    import json
    from ssjdn.core.errors import UserError
    from ssjdn.desktop.state import Session
    data = Session(rasters=[str(tmp_path / "a.tif")], tile_ground_m=120.0).to_dict()
    data[field] = value
    (tmp_path / "s.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match=f'"{field}"'):
        Session.load(tmp_path / "s.json")
