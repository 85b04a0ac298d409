"""Image loading and the lineage augmentation (resize 278, rotate 0-90, crop 256; 256 at test).

All randomness comes from a torch.Generator passed in, so a resumed run draws the same
augmentations as an uninterrupted one.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from ssjdn.core.errors import UserError


def read_image(path: Path) -> torch.Tensor:
    """RGB uint8 tensor [3, H, W]; any format Pillow reads (.tif/.jpg/.png/.webp)."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except OSError as exc:
        raise UserError(f"Cannot read image {path}: {exc}") from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """Square resize of a uint8 [3, H, W] image (the peers resize to size x size)."""
    if image.shape[-2:] == (size, size):
        return image
    resized = F.interpolate(image[None].float(), size=(size, size), mode="bilinear",
                            antialias=True, align_corners=False)[0]
    return resized.round().clamp(0, 255).to(torch.uint8)


def train_view(image: torch.Tensor, cfg: dict, generator: torch.Generator) -> torch.Tensor:
    """One random training view: resize, random rotation in [0, max], random crop."""
    image = resize(image, int(cfg["resize"]))
    max_angle = float(cfg.get("rotation", 0))
    if max_angle > 0:
        angle = float(torch.rand((), generator=generator)) * max_angle
        image = TF.rotate(image, angle, interpolation=TF.InterpolationMode.BILINEAR, fill=0)
    crop = int(cfg["crop"])
    top, left = (int(torch.randint(0, image.shape[-1] - crop + 1, (), generator=generator))
                 for _ in range(2))
    image = image[:, top:top + crop, left:left + crop]
    if cfg.get("hflip") and bool(torch.rand((), generator=generator) < 0.5):
        image = image.flip(-1)
    return image


def test_view(image: torch.Tensor, cfg: dict) -> torch.Tensor:
    return resize(image, int(cfg["test_size"]))


def load_images(paths: list[Path], progress=None) -> list[torch.Tensor]:
    """Decode every image once; the benchmarks fit in memory (UCM: ~0.4 GB). Decoders release
    the GIL, so a few threads decode in parallel (a GPU run would otherwise wait on this)."""
    from concurrent.futures import ThreadPoolExecutor

    images = []
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for index, image in enumerate(pool.map(read_image, paths)):
            images.append(image)
            if progress is not None:
                progress(index + 1, len(paths))
    return images
