"""A few-thousand-parameter backbone with the same three-scale contract, for tests and CI."""
from __future__ import annotations

from torch import nn

from ssjdn.core.model.backbones import register_backbone
from ssjdn.core.model.backbones.base import MultiScaleBackbone


class TinyBackbone(nn.Module):
    """A few-thousand-parameter CNN with the same three-scale contract, for tests."""

    def __init__(self, width: int = 8):
        super().__init__()

        def block(cin, cout, stride):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.stem = block(3, width, 4)
        self.s8 = block(width, width * 2, 2)
        self.s16 = block(width * 2, width * 4, 2)
        self.s32 = block(width * 4, width * 4, 2)
        self.channels = [width * 2, width * 4, width * 4]

    def forward(self, x):
        f8 = self.s8(self.stem(x))
        f16 = self.s16(f8)
        return [f8, f16, self.s32(f16)]


@register_backbone("tiny")
def build(cfg: dict, pretrained: bool) -> MultiScaleBackbone:
    tiny = TinyBackbone(cfg.get("tiny_width", 8))
    return MultiScaleBackbone(tiny, tiny.channels, [tiny.stem, tiny.s8, tiny.s16, tiny.s32],
                              emits=(1, 2, 3))
