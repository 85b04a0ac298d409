"""A run's model settings, optimizer, learning-rate schedule and weight average, from its config."""
from __future__ import annotations

import math

import torch

from ssjdn.core.errors import UserError


def model_overrides(cfg: dict, categories: list[str]) -> dict:
    """The config's model_overrides plus the run's switches (bsd, lsd, stl) and its category
    names (LSD's classes start from their words)."""
    from ssjdn.core.model.api import deep_merge

    names = cfg["category_names"] or [c.replace("_", " ") for c in categories]
    if len(names) != len(categories):
        raise UserError(f"category_names lists {len(names)} names for {len(categories)} "
                        "categories of the dataset.")
    switches = {k: bool(cfg[k]) for k in ("bsd", "lsd", "stl")}
    return deep_merge(cfg["model_overrides"], {**switches, "categories": list(names)})


def build_optimizer(model, cfg: dict):
    text, other = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (text if name.startswith("text_encoder.") else other).append(param)
    groups = [{"params": other, "lr": cfg["lr"]}]
    if text:
        groups.append({"params": text, "lr": cfg["lr"] * cfg["text_lr_scale"]})
    optimizer = torch.optim.Adam(groups, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg["lr_step_epochs"],
                                                gamma=cfg["lr_gamma"])
    return optimizer, scheduler


def weight_average(cfg: dict, model, n_images: int, state: dict | None):
    """The run's WeightAverage (None with ema_epochs 0), continued from a resumed state."""
    if not cfg["ema_epochs"]:
        return None
    from ssjdn.training.averaging import WeightAverage

    averager = WeightAverage(model, cfg["ema_epochs"],
                             math.ceil(n_images / int(cfg["batch_size"])))
    if state is not None and "weight_average" in state:
        averager.load_state_dict(state["weight_average"])
    return averager
