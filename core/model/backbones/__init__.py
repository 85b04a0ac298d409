"""Image backbones by name: each module of this package registers the backbones it builds.

A new backbone is one module here (a builder decorated with @register_backbone("name")) plus a
config in core/model/configs/ that names it (image.backbone); its pretrained weights, if a package
ships them, are one entry of core/model/pretrained.py. Every backbone returns three feature
scales (strides 8, 16, 32) through base.MultiScaleBackbone.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

from ssjdn.core.errors import UserError

# name -> builder(cfg, pretrained) -> MultiScaleBackbone
_BACKBONES: dict[str, Callable] = {}


def register_backbone(*names: str):
    def register(builder: Callable) -> Callable:
        for name in names:
            _BACKBONES[name] = builder
        return builder
    return register


def backbone_names() -> list[str]:
    _import_all()
    return sorted(_BACKBONES)


def build_backbone(cfg: dict, pretrained: bool):
    name = cfg["backbone"]
    _import_all()
    if name not in _BACKBONES:
        raise UserError(f"Unknown backbone {name!r}; choose {', '.join(sorted(_BACKBONES))}.")
    backbone = _BACKBONES[name](cfg, pretrained)
    if cfg.get("freeze_stages", 0):
        backbone.freeze_stages(int(cfg["freeze_stages"]))
    return backbone


def _import_all() -> None:
    """Import every module of this package once, so that each registers its backbones (their
    heavy imports, timm and torchvision, wait inside the builders)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
