"""The training set resident on the training device, augmented there in whole batches.

With `gpu_data: true` in a training config, every decoded training image sits in one uint8
tensor on the device, and a batch's views (the lineage augmentation: resize, rotation in
[0, max], crop; optional horizontal flip) are drawn by one `grid_sample` over the batch. The
view of augment.train_view is resize -> rotate -> crop (two resamplings); here the three are
one affine map sampled once, so views match in distribution, not pixel for pixel. The random
numbers still come from the run's CPU generator, so a resumed run draws the same views.
Works on the CPU too (the tests and the dry run use it there).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ssjdn.training.augment import resize


class DeviceImages:
    """Training images as one [N, 3, S, S] uint8 tensor on `device`, S = their common size."""

    def __init__(self, images: list[torch.Tensor], augment: dict, device):
        # The lineage's images are square and nearly all one size; resizing the odd ones to
        # the most common side keeps one tensor (the view is a resize of it anyway).
        sides = [max(image.shape[-2:]) for image in images]
        side = max(set(sides), key=sides.count)
        self.pixels = torch.stack([resize(image, side) for image in images]).to(device)
        self.augment = augment
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.pixels)

    def draw(self, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Float views in [0, 1], [B, 3, crop, crop], on the device."""
        cfg = self.augment
        count, side = len(indices), self.pixels.shape[-1]
        resized, crop = float(cfg["resize"]), int(cfg["crop"])
        angle = torch.rand(count, generator=generator) * float(cfg.get("rotation", 0))
        offset = torch.randint(0, int(resized) - crop + 1, (count, 2), generator=generator)
        flip = (torch.rand(count, generator=generator) < 0.5) if cfg.get("hflip") \
            else torch.zeros(count, dtype=torch.bool)
        theta = _view_affine(angle, offset, flip, resized, crop)
        grid = F.affine_grid(theta.to(self.device), [count, 3, crop, crop], align_corners=False)
        source = self.pixels[indices.to(self.device)].float().div_(255.0)
        views = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros",
                              align_corners=False)
        if self.device.type == "cuda":  # the model is channels_last there (core.model.api.place_model)
            views = views.contiguous(memory_format=torch.channels_last)
        return views


def _view_affine(angle_deg: torch.Tensor, offset: torch.Tensor, flip: torch.Tensor,
                 resized: float, crop: int) -> torch.Tensor:
    """[B, 2, 3] maps from crop coordinates to source coordinates, both normalised to [-1, 1].

    A crop pixel at p (pixels of the resized image, centre c = resized / 2) shows the resized
    image at c + R(-angle) (p - c): TF.rotate turns the picture counter-clockwise by `angle`.
    The resized image is the source scaled, so in normalised source units q = (.) / c - 1.
    """
    centre = resized / 2.0
    rad = angle_deg * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    # Crop normalised x_n in [-1, 1] -> resized-image pixel: p = offset + (x_n + 1) * crop / 2.
    half = crop / 2.0
    sign = torch.where(flip, -1.0, 1.0)
    px = offset[:, 1].float() + half - centre  # crop centre relative to the image centre
    py = offset[:, 0].float() + half - centre
    # d = p - c = (px + half * sign * x_n, py + half * y_n); rotate d by -angle (image y down).
    theta = torch.zeros(len(angle_deg), 2, 3)
    theta[:, 0, 0] = cos * half * sign / centre
    theta[:, 0, 1] = -sin * half / centre
    theta[:, 0, 2] = (cos * px - sin * py) / centre
    theta[:, 1, 0] = sin * half * sign / centre
    theta[:, 1, 1] = cos * half / centre
    theta[:, 1, 2] = (sin * px + cos * py) / centre
    return theta
