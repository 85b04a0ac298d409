"""A moving average of a run's weights, the model a run validates and keeps when it is on.

On UCM val one run's mR moves by about +-0.7 from epoch to epoch, and picking the best of ~40
such epochs on the same 210 images is worth about half a point of optimism (docs/training.md).
An exponential moving average of the weights over the last few epochs is a smoother model to
validate and keep: its curve is less noisy, so the best epoch is less of a lucky draw.
"""
from __future__ import annotations

import copy
import math

import torch


class WeightAverage:
    """Exponential moving average of `model`'s floating-point state, updated after each step.

    `epochs` is the time constant in epochs: each step keeps `decay` of the average, with
    decay = exp(-1 / (epochs * steps_per_epoch)). During the first steps the weight of the
    average is capped at (1 + n) / (10 + n), so the random initial heads fade out quickly.
    """

    def __init__(self, model: torch.nn.Module, epochs: float, steps_per_epoch: int):
        self.epochs = float(epochs)
        self.decay = math.exp(-1.0 / (self.epochs * max(int(steps_per_epoch), 1)))
        # The copy keeps the model's requires_grad flags: save_checkpoint reads them to tell
        # frozen pretrained weights (written as references to their package) from trained ones.
        # Marking the copy frozen made every trained encoder weight a reference, so the kept
        # model loaded back with its untrained backbone and text encoder. No gradient is ever
        # taken through the copy: updates run under no_grad and validation does not backprop.
        self.model = copy.deepcopy(model).eval()
        self.updates = 0
        # Only what training can change is averaged and saved: trained parameters and the
        # buffers (BatchNorm statistics; a frozen stage's never move). Frozen weights stay.
        changing = {name for name, p in model.named_parameters() if p.requires_grad}
        changing |= {name for name, _ in model.named_buffers()}
        self._keys = [name for name in model.state_dict() if name in changing]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        keep = min(self.decay, (1 + self.updates) / (10 + self.updates))
        current, averaged = model.state_dict(), self.model.state_dict()
        for name in self._keys:
            target, value = averaged[name], current[name].detach()
            if target.dtype.is_floating_point:
                target.mul_(keep).add_(value.to(target.dtype), alpha=1 - keep)
            else:
                target.copy_(value)

    def describe(self) -> str:
        return describe_average(self.epochs)

    def state_dict(self) -> dict:
        averaged = self.model.state_dict()
        return {"updates": self.updates,
                "weights": {name: averaged[name].detach().cpu().clone() for name in self._keys}}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        averaged = self.model.state_dict()
        for name, value in state["weights"].items():
            averaged[name].copy_(value.to(averaged[name].device))


def describe_average(epochs: float) -> str:
    """How a checkpoint's weights were made, as its metadata says it."""
    return f"moving average ({float(epochs):g} epoch{'s' if float(epochs) != 1 else ''})"
