"""A run's training batches: a torch Sampler of image indices and a torch Dataset that turns a
batch of indices into what a step trains on.

One epoch is one pass of the sampler: every training image once, in a seeded random order,
each with one of its 5 captions drawn at random. A batch never holds the same image twice, and
captions that are word-for-word identical (UCM repeats many) are masked out as each other's
negatives (negative_mask_for).

Both draw from the run's one CPU generator, in a fixed order (the epoch's permutation, then per
batch the captions, then the views), and the trainer state saves that generator, so a resumed
run draws what the uninterrupted one would have. That is why the loop indexes the Dataset with
the sampler's batches itself instead of through a DataLoader: a DataLoader draws a seed from
torch's global generator on every pass, and its workers could not share the run's generator.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from ssjdn.core.errors import UserError
from ssjdn.training.augment import load_images, train_view
from ssjdn.training.datasets import CAPTIONS_PER_IMAGE, CaptionDataset
from ssjdn.training.distributed import Distributed


def negative_mask_for(captions: list[str], device) -> torch.Tensor:
    """False where two captions are the same sentence: neither may be the other's negative."""
    keys = [" ".join(c.lower().replace(".", " ").split()) for c in captions]
    ids = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    codes = torch.tensor([ids[k] for k in keys], device=device)
    return codes[:, None] != codes[None, :]


class EpochBatchSampler(torch.utils.data.Sampler):
    """This rank's batches of image indices; each pass is one epoch in a new seeded order
    (the same order on every rank, each rank taking its share of every batch)."""

    def __init__(self, n_images: int, batch_size: int, generator: torch.Generator,
                 rank: int = 0, world: int = 1):
        self.per_rank = batch_size // world
        if self.per_rank < 2:
            raise UserError(f"batch_size {batch_size} is too small for {world} processes.")
        self.n_images, self.batch_size, self.generator = n_images, batch_size, generator
        self.rank, self.world = rank, world

    def _shares(self, order: torch.Tensor):
        """(whole batch, this rank's share) of each batch the order makes."""
        for start in range(0, self.n_images, self.batch_size):
            chunk = order[start:start + self.batch_size]
            if len(chunk) < self.batch_size and self.world > 1:
                return  # DDP needs the same number of equal steps on every rank
            share = chunk[self.rank * self.per_rank:(self.rank + 1) * self.per_rank]
            if len(share) >= 2:  # a triplet loss needs at least one negative
                yield share

    def __iter__(self):
        yield from self._shares(torch.randperm(self.n_images, generator=self.generator))

    def __len__(self) -> int:
        """Batches per pass; known without drawing (any order gives the same sizes)."""
        return sum(1 for _ in self._shares(torch.arange(self.n_images)))


class Batch(NamedTuple):
    pixels: torch.Tensor | None           # augmented views, or None with cached features
    features: list[torch.Tensor] | None   # cached backbone maps per scale, or None
    captions: list[str]                   # one per image
    labels: torch.Tensor                  # category index per image, -1 = none


class TrainingPairs(torch.utils.data.Dataset):
    """The training split as (image, caption, label) pairs, indexed by a batch of image
    indices (an EpochBatchSampler item): the images are decoded once (or their backbone maps
    cached, or kept on the training device), and each batch draws its captions and views."""

    def __init__(self, cfg: dict, dataset: CaptionDataset, model, out_dir: Path,
                 dist: Distributed, log, generator: torch.Generator):
        self.cfg, self.dataset, self.generator = cfg, dataset, generator
        self.device = dist.device
        self.labels = torch.tensor(dataset.labels, dtype=torch.long)
        self.images = load_images(dataset.image_paths)
        self.views = int(cfg["feature_cache"].get("views") or 0)
        self.cached = None
        if self.views > 0:
            from ssjdn.training.feature_cache import backbone_can_be_cached, cached_views

            if not backbone_can_be_cached(model):
                raise UserError("feature_cache.views needs frozen backbone stages: set "
                                "model_overrides.image.freeze_stages to 1-8 for EfficientNet-Lite0 "
                                "(8 = all; the cache holds the frozen stages' outputs), or to 5 "
                                "(all) for ResNets.")
            tag = f"{dataset.name}_{dataset.split}"
            if not dist.main:
                dist.barrier()  # rank 0 builds the cache first
            self.cached = cached_views(model, self.images, dataset.image_names, cfg["augment"],
                                       _cache_dir(cfg, out_dir), tag, self.views,
                                       _cache_seed(cfg), log)
            if dist.main:
                dist.barrier()
        self.on_device = None
        if cfg["gpu_data"] and self.cached is None:
            from ssjdn.training.gpu_data import DeviceImages

            self.on_device = DeviceImages(self.images, cfg["augment"], dist.device)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: torch.Tensor) -> Batch:
        generator, device = self.generator, self.device
        caption_pick = torch.randint(0, CAPTIONS_PER_IMAGE, (len(indices),), generator=generator)
        captions = [self.dataset.captions[i][c] for i, c in zip(indices.tolist(),
                                                                 caption_pick.tolist())]
        labels = self.labels[indices].to(device)
        if self.cached is not None:
            view = torch.randint(0, self.views, (len(indices),), generator=generator)
            features = []
            for scale in range(len(self.cached[0])):
                maps = torch.stack([self.cached[v][scale][i]
                                    for v, i in zip(view.tolist(), indices.tolist())])
                features.append(maps.to(device).float())
            return Batch(None, features, captions, labels)
        if self.on_device is not None:
            return Batch(self.on_device.draw(indices, generator), None, captions, labels)
        views = [train_view(self.images[i], self.cfg["augment"], generator)
                 for i in indices.tolist()]
        return Batch(torch.stack(views), None, captions, labels)


def validation_inputs(cfg: dict, val_set: CaptionDataset | None, model, out_dir: Path,
                      pairs: TrainingPairs, log):
    """(images, cached features or None) of the validation split; (None, None) without one."""
    if val_set is None:
        return None, None
    images = load_images(val_set.image_paths)
    if pairs.cached is None:
        return images, None
    from ssjdn.training.feature_cache import cached_views

    features = cached_views(model, images, val_set.image_names, cfg["augment"],
                            _cache_dir(cfg, out_dir), f"{val_set.name}_{val_set.split}", 0,
                            _cache_seed(cfg), log)[0]
    return images, features


def _cache_dir(cfg: dict, out_dir: Path) -> Path:
    return Path(cfg["feature_cache"].get("dir") or out_dir / "feature_cache")


def _cache_seed(cfg: dict) -> int:
    seed = cfg["feature_cache"].get("seed")
    return int(cfg["seed"] if seed is None else seed)
