"""One model spec parser (core/model/spec.py) for the CLI, the app and Dask workers."""
from __future__ import annotations

import argparse

import pytest

from ssjdn.core.errors import UserError
from ssjdn.core.model.spec import SHIPPED, UNTRAINED_FALLBACK, ModelSpec


def test_every_spelling_parses_to_one_canonical_spec(tmp_path):
    checkpoint = tmp_path / "m.bin"
    checkpoint.write_bytes(b"x")
    cases = {
        None: "shipped", "": "shipped", "shipped": "shipped", "default": "shipped",
        "config:tiny": "config:tiny", "tiny": "config:tiny", "my.yaml": "config:my.yaml",
        "file:/a/b.safetensors": "file:/a/b.safetensors",
        "gone.safetensors": "file:gone.safetensors",        # missing: loading says so
        str(checkpoint): f"file:{checkpoint}",               # a file there, any suffix
    }
    assert {spec: str(ModelSpec.parse(spec)) for spec in cases} == cases
    assert ModelSpec.parse(ModelSpec.parse("tiny")) == ModelSpec("config", "tiny")
    assert not ModelSpec.parse("tiny").is_checkpoint and ModelSpec.parse(SHIPPED).is_checkpoint


def test_a_saved_choice_must_be_canonical():
    assert ModelSpec.parse("config:tiny", strict=True) == ModelSpec("config", "tiny")
    for text in ("tiny", "default", "", "C:/m.safetensors"):
        with pytest.raises(UserError, match='"shipped", "config:NAME" or "file:PATH"'):
            ModelSpec.parse(text, strict=True)


def test_the_app_reads_its_model_option_as_the_cli_does(tmp_path, monkeypatch):
    from ssjdn.desktop.app import initial_session
    monkeypatch.setenv("SSJDN_CONFIG_DIR", str(tmp_path))
    checkpoint = tmp_path / "m.safetensors"
    checkpoint.write_bytes(b"x")
    for given, expected in (("tiny", "config:tiny"), ("default", "shipped"), ("shipped", "shipped"),
                            (str(checkpoint), f"file:{checkpoint}"), ("config:tiny", "config:tiny")):
        args = argparse.Namespace(session=None, rasters=["a.tif"], sample=False, model=given,
                                  device=None, tile_m=None)
        assert initial_session(args)[0].model_spec == expected


def test_without_the_shipped_checkpoint_the_untrained_fallback_is_asked_for(monkeypatch, tmp_path):
    from ssjdn.core.model import api, spec
    monkeypatch.setattr(api, "default_model_path", lambda: tmp_path / "missing.safetensors")
    with pytest.raises(UserError, match="No trained model found"):
        api.model_from_spec(SHIPPED)                     # the CLI: say so, never guess
    monkeypatch.setattr(spec, "UNTRAINED_FALLBACK", ModelSpec("config", "tiny"))
    resolved = api.model_from_spec(SHIPPED, device="cpu", untrained_fallback=True)
    assert not resolved.trained and resolved.model.name == "tiny"
    assert resolved.fallback_reason.startswith("The shipped model") and "not installed" in resolved.fallback_reason
    assert UNTRAINED_FALLBACK == ModelSpec("config", "ssjdn-lite0-minilm")


def test_workers_get_the_canonical_spec(tmp_path, monkeypatch):
    from ssjdn.core.index import cluster
    from ssjdn.core.model import api
    shipped = tmp_path / "ssjdn-default.safetensors"
    shipped.write_bytes(b"x")
    monkeypatch.setattr(api, "default_model_path", lambda: shipped)
    assert cluster.worker_spec(None) == cluster.worker_spec("default") == cluster.worker_spec(str(shipped)) == "shipped"
    assert cluster.worker_spec("tiny") == "config:tiny"
    assert cluster.worker_spec("/x/m.safetensors") == "file:/x/m.safetensors"
