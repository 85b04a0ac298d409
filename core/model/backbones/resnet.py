"""ResNet-18/50 (torchvision): no weights ship in a pip package, so a user's ImageNet .pth file
(image.weights) or random init."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ssjdn.core.errors import UserError
from ssjdn.core.files import file_sha256
from ssjdn.core.model.backbones import register_backbone
from ssjdn.core.model.backbones.base import MultiScaleBackbone
from ssjdn.core.model.pretrained import PretrainedSource


@register_backbone("resnet18", "resnet50")
def build(cfg: dict, pretrained: bool) -> MultiScaleBackbone:
    weights = cfg.get("weights") if pretrained else None
    return _resnet(int(cfg["backbone"][6:]), weights if weights not in (None, "", "none") else None)


def _resnet(depth: int, weights_path: str | None) -> MultiScaleBackbone:
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor

    net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    source = None
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise UserError(f"ResNet-{depth} weights file not found: {path}. Give the path of a "
                            "torchvision ImageNet .pth file, or leave it empty for random init.")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except Exception as exc:  # noqa: BLE001 - any failure means the file is unusable
            raise UserError(f"{path} is not a torchvision ResNet-{depth} state dict ({exc}).") from exc
        source = PretrainedSource("file", str(path), file_sha256(path))
    else:
        warnings.warn(f"ResNet-{depth} has no pretrained weights (none ship in a pip package); it "
                      "starts from random init. Set image.weights to a torchvision .pth file.",
                      stacklevel=4)
    body = create_feature_extractor(net, {"layer2": "s8", "layer3": "s16", "layer4": "s32"})
    channels = [128, 256, 512] if depth == 18 else [512, 1024, 2048]
    stages = [nn.ModuleList([net.conv1, net.bn1]), net.layer1, net.layer2, net.layer3, net.layer4]

    class _Body(nn.Module):
        def __init__(self):
            super().__init__()
            self.extractor = body

        def forward(self, x):
            return list(self.extractor(x).values())

    backbone = MultiScaleBackbone(_Body(), channels, stages)
    backbone.pretrained_source = source
    return backbone
