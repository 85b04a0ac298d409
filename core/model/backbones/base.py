"""The contract every backbone keeps: three feature scales (strides 8, 16, 32), stages in input
order that can be frozen, and where frozen pretrained weights came from."""
from __future__ import annotations

import torch
from torch import nn

from ssjdn.core.errors import UserError
from ssjdn.core.model.pretrained import PretrainedSource


class MultiScaleBackbone(nn.Module):
    """Wraps a feature extractor; forward returns [stride-8, stride-16, stride-32] maps."""

    def __init__(self, body: nn.Module, channels: list[int], stages: list[nn.Module],
                 emits: tuple[int, ...] | None = None):
        super().__init__()
        self.body = body
        self.channels = channels
        # Stages in input order, so the first `n` can be frozen for cheap CPU training.
        self._stages = stages
        # Indices of the stages whose outputs are the three scales, when running `stages` one
        # after the other is the whole network (EfficientNet, tiny); None where it is not
        # (the ResNets' stage list leaves out the stem's ReLU and max-pool).
        self._emits = tuple(emits) if emits is not None else None
        self.frozen_count = 0
        self.pretrained_source: PretrainedSource | None = None

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))

    def freeze_stages(self, count: int) -> None:
        """Freeze the first `count` stages (stem counts as stage 0); they run in eval mode."""
        for stage in self._stages[:count]:
            for param in stage.parameters():
                param.requires_grad_(False)
        self._frozen = self._stages[:count]
        self.frozen_count = count

    @property
    def can_split(self) -> bool:
        """Whether the frozen prefix's outputs can be cached and the rest run from them."""
        fully = self.frozen_count == len(self._stages)
        return fully or (self._emits is not None and self.frozen_count > 0)

    def _prefix_scales(self) -> int:
        return sum(1 for e in self._emits if e < self.frozen_count)

    def frozen_prefix(self, x: torch.Tensor) -> list[torch.Tensor]:
        """What the trainable stages need from the frozen ones: the scale maps the frozen
        stages emit, then the last frozen stage's output unless it is already the last map."""
        if not self.can_split:
            raise UserError("This backbone cannot be split at its frozen stages: freeze at "
                            "least the stem of an EfficientNet-Lite (or the tiny test) backbone.")
        if self.frozen_count == len(self._stages):
            return self(x)
        maps = []
        for index, stage in enumerate(self._stages[:self.frozen_count]):
            x = stage(x)
            if index in self._emits:
                maps.append(x)
        return maps if (self.frozen_count - 1) in self._emits else maps + [x]

    def resume(self, prefix: list[torch.Tensor]) -> list[torch.Tensor]:
        """The three scale maps from `frozen_prefix`'s output: runs only the trainable stages."""
        if self._emits is None or self.frozen_count == len(self._stages):
            return list(prefix)  # nothing left to run: the cache holds the maps themselves
        done = self._prefix_scales()
        maps, x = list(prefix[:done]), prefix[-1]
        for index in range(self.frozen_count, len(self._stages)):
            x = self._stages[index](x)
            if index in self._emits:
                maps.append(x)
        return maps

    def train(self, mode: bool = True):
        super().train(mode)
        # Frozen stages keep their ImageNet BatchNorm statistics.
        for stage in getattr(self, "_frozen", []):
            stage.eval()
        return self
