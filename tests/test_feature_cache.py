"""The CPU route: cache the frozen lower backbone stages, train the top stages from the cache."""
import csv

import pytest
import torch
import yaml
from safetensors.torch import load_file

from caption_fixtures import write_ucm_json
from ssjdn.core.api import create_model, load_model
from ssjdn.core.backbones import build_backbone
from ssjdn.core.errors import UserError
from ssjdn.training.train import train
from test_training import TINY_CONFIG


@pytest.fixture(scope="module")
def ucm_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ucm_cache")
    write_ucm_json(root, {"train": 10, "val": 4, "test": 4})
    return root


def _tiny_config(**changes):
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config.update(changes)
    return config


@pytest.mark.parametrize("frozen", [1, 2, 3, 4])
def test_tiny_backbone_resumed_from_its_frozen_prefix_gives_the_same_maps(frozen):
    torch.manual_seed(0)
    backbone = build_backbone({"backbone": "tiny", "freeze_stages": frozen}, pretrained=False).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        direct, resumed = backbone(x), backbone.resume(backbone.frozen_prefix(x))
    assert len(resumed) == 3
    for a, b in zip(direct, resumed):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("frozen, cached_shapes", [
    (6, [(40, 32, 32), (112, 16, 16)]),                 # stride-8 and stride-16 maps
    (5, [(40, 32, 32), (80, 16, 16)]),                  # stride-8 map + blocks[3]'s output
    (8, [(40, 32, 32), (112, 16, 16), (320, 8, 8)]),    # whole backbone: the three maps
])
def test_lite0_frozen_prefix_holds_what_the_top_stages_need(frozen, cached_shapes):
    torch.manual_seed(0)
    backbone = build_backbone({"backbone": "efficientnet_lite0", "freeze_stages": frozen},
                              pretrained=False).eval()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        prefix = backbone.frozen_prefix(x)
        direct, resumed = backbone(x), backbone.resume(prefix)
    assert [tuple(p.shape[1:]) for p in prefix] == cached_shapes
    for a, b in zip(direct, resumed):
        torch.testing.assert_close(a, b)


def test_a_backbone_with_nothing_frozen_cannot_be_split():
    backbone = build_backbone({"backbone": "tiny"}, pretrained=False)
    with pytest.raises(UserError, match="cannot be split"):
        backbone.frozen_prefix(torch.randn(1, 3, 64, 64))


def test_training_from_a_partly_frozen_cache_updates_only_the_top_stages(ucm_root, tmp_path):
    config = _tiny_config(feature_cache={"views": 2}, model_overrides={"image": {"freeze_stages": 2}})
    torch.manual_seed(0)
    before = create_model("tiny", {"image": {"freeze_stages": 2}}, device="cpu").backbone.state_dict()
    summary = train(config, ucm_root, tmp_path)
    assert summary["status"] == "finished"
    # The cache holds the frozen prefix: the stride-8 map only (stage 1 emits it).
    cached = load_file(str(tmp_path / "feature_cache" / "ucm_train_view0.safetensors"))
    assert sorted(cached) == ["scale0"]
    after = load_model(tmp_path / "last.safetensors", device="cpu").backbone.state_dict()
    frozen_keys = [k for k in before if k.startswith(("body.stem.", "body.s8."))]
    top_keys = [k for k in before if k.startswith(("body.s16.", "body.s32.")) and "weight" in k]
    assert frozen_keys and top_keys
    assert all(torch.equal(before[k], after[k]) for k in frozen_keys)
    assert any(not torch.equal(before[k], after[k]) for k in top_keys)
    # Validation from the cached prefix equals a fresh evaluation from pixels.
    from ssjdn.training.evaluate import evaluate_checkpoint
    report = evaluate_checkpoint(tmp_path / "last.safetensors", ucm_root, "val",
                                 report=tmp_path / "eval.json", device="cpu", log=lambda m: None)
    logged = list(csv.DictReader(open(tmp_path / "log.csv")))[-1]
    assert report["metrics"]["mR"] == pytest.approx(float(logged["mR"]), abs=1e-6)
