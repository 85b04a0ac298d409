"""The public model API: build from a named config, save and load checkpoints, pick a device.

Checkpoints are safetensors files: tensors plus a JSON config in the metadata, so loading never
unpickles anything. Frozen weights that a pip package already ships are left out of the file and
referenced by package and sha256, which keeps the shipped default model small.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from ssjdn.core.errors import CheckpointError, UserError
from ssjdn.core.files import atomic_path
from ssjdn.core.places import shipped_path
from ssjdn.core.model import spec as model_spec
from ssjdn.core.model.network import SSJDN

CONFIG_DIR = shipped_path("core", "model", "configs")
CHECKPOINT_FORMAT = "ssjdn-checkpoint"
CHECKPOINT_VERSION = "1"


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_model_path() -> Path:
    """The trained model that ships with the app."""
    return shipped_path("resources", "ssjdn-default.safetensors")


def list_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def deep_merge(base: dict, overrides: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_config(config: str | Path | dict, overrides: dict | None = None) -> dict:
    """A config name, a YAML path or a dict -> the full config dict."""
    if isinstance(config, dict):
        data = copy.deepcopy(config)
    else:
        path = Path(config)
        if not path.suffix:
            path = CONFIG_DIR / f"{config}.yaml"
        if not path.is_file():
            raise UserError(f"Unknown model config {config!r}. Known configs: {', '.join(list_configs())}; "
                            "or give the path of a YAML file.")
        data = yaml.safe_load(path.read_text())
        data.setdefault("name", path.stem)
    return deep_merge(data, overrides or {})


def _uses_channels_last(device: torch.device) -> bool:
    return device.type in ("cuda", "cpu")


def place_model(model: SSJDN, device: str | torch.device | None = None) -> SSJDN:
    """The model on `device` (default: default_device()) in eval mode, its weights channels_last
    on CUDA and on the CPU. On CUDA that is cuDNN's fast layout for bf16 convolutions without
    autotuning: on an H200 the whole model encoded 15.0k tiles/s so against 3.4k in the default
    layout (docs/gpu.md, 2026-12-04). On the CPU oneDNN's convolutions (depthwise ones above all)
    are faster that way too: the shipped model encoded 1.5-1.7x as many tiles/s, a cached training
    step of the heads ran 1.3x and a query map 1.1-1.2x (2 cores, 2026-12-05; bench/
    bench_model_cost.py --layouts). The layout does not change what the model computes."""
    device = torch.device(device or default_device())
    model = model.to(device)
    if _uses_channels_last(device):
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


def create_model(config: str | Path | dict, overrides: dict | None = None, pretrained: bool = True,
                 device: str | torch.device | None = None) -> SSJDN:
    return place_model(SSJDN(load_config(config, overrides), pretrained=pretrained), device)


def _external_sources(model: SSJDN) -> dict[str, object]:
    """Module prefix -> the pretrained source its frozen weights came from."""
    sources = {}
    if model.backbone.pretrained_source is not None:
        sources["backbone."] = model.backbone.pretrained_source
    if model.text_encoder.pretrained_source is not None:
        sources["text_encoder."] = model.text_encoder.pretrained_source
    return sources


def save_checkpoint(model: SSJDN, path: str | Path, extra: dict | None = None, half: bool = False) -> Path:
    """Write config + weights atomically. Frozen packaged weights are referenced, not copied."""
    from safetensors.torch import save_file

    path = Path(path)
    sources = _external_sources(model)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    external = {}
    tensors = {}
    for key, tensor in model.state_dict().items():
        prefix = next((p for p in sources if key.startswith(p)), None)
        if prefix and key in frozen:
            external.setdefault(prefix, []).append(key)
            continue
        tensor = tensor.detach().cpu().contiguous()
        tensors[key] = tensor.half() if half and tensor.is_floating_point() else tensor
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": json.dumps(model.config),
        "extra": json.dumps(extra or {}),
        "external": json.dumps({prefix: {"package": sources[prefix].package,
                                         "sha256": sources[prefix].sha256, "keys": keys}
                                for prefix, keys in external.items()}),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_checkpoint_metadata(path: str | Path) -> dict:
    """The checkpoint's metadata (config, extra, external refs); CheckpointError if invalid."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types
        raise CheckpointError(f"{path} is not a readable SSJDN checkpoint (it may be truncated or "
                              f"another kind of file): {exc}. Use a .safetensors file written by "
                              "`ssjdn train` or the app.") from exc
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not an SSJDN checkpoint "
                              "(no SSJDN config inside).")
    if metadata.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} has checkpoint version {metadata.get('version')}; this "
                              f"install reads version {CHECKPOINT_VERSION}. Update SSJDN Explorer.")
    meta = {key: _metadata_field(path, metadata, key) for key in ("config", "extra", "external")}
    _check_external_refs(path, meta["external"])
    return meta


_EDITED = "Use the checkpoint as `ssjdn train` or the app wrote it (was it edited?)."


def _metadata_field(path: Path, metadata: dict, key: str) -> dict:
    """One JSON object of the metadata; a file edited by hand gets a CheckpointError."""
    try:
        value = json.loads(metadata[key])
    except KeyError:
        raise CheckpointError(f"{path} is damaged: its metadata has no {key!r}. {_EDITED}") from None
    except ValueError as exc:
        raise CheckpointError(f"{path} is damaged: its metadata {key!r} is not valid JSON "
                              f"({exc}). {_EDITED}") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} is damaged: its metadata {key!r} is not a JSON object. "
                              f"{_EDITED}")
    return value


def _check_external_refs(path: Path, external: dict) -> None:
    for prefix, ref in external.items():
        if not (isinstance(ref, dict) and isinstance(ref.get("package"), str)
                and isinstance(ref.get("sha256"), str) and isinstance(ref.get("keys"), list)):
            raise CheckpointError(f"{path} is damaged: its metadata 'external' entry {prefix!r} "
                                  f"needs a package, a sha256 and a list of keys. {_EDITED}")


def _model_from_config(path: Path, config: dict, pretrained: bool) -> SSJDN:
    try:
        return SSJDN(config, pretrained=pretrained)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any fault of an edited config is the file's
        raise CheckpointError(f"{path} holds a model config this install cannot build "
                              f"({type(exc).__name__}: {exc}). {_EDITED}") from exc


def load_model(path: str | Path, device: str | torch.device | None = None) -> SSJDN:
    from safetensors.torch import load_file

    from ssjdn.core.model.calibration import load_for_checkpoint

    meta = read_checkpoint_metadata(path)
    external = meta["external"]
    model = _model_from_config(Path(path), meta["config"], pretrained=bool(external))
    sources = _external_sources(model)
    for prefix, ref in external.items():
        source = sources.get(prefix)
        if source is None or source.sha256 != ref["sha256"]:
            raise CheckpointError(f"{path} uses the pretrained weights of pip package {ref['package']} "
                                  f"(sha256 {ref['sha256'][:12]}…), which this install does not have. "
                                  "Install the versions pinned in pyproject.toml.")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path} is damaged and its weights cannot be read: {exc}") from exc
    try:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:   # a tensor of another shape: the config was edited
        first = str(exc).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{path} does not fit its own config: {first} {_EDITED}") from None
    referenced = {key for ref in external.values() for key in ref["keys"]}
    if unexpected or set(missing) - referenced:
        raise CheckpointError(f"{path} does not fit its own config (missing "
                              f"{sorted(set(missing) - referenced)[:3]}, unexpected {sorted(unexpected)[:3]}).")
    model.checkpoint_extra = meta["extra"]
    model.calibration = load_for_checkpoint(path)   # None: no match likelihood for this model
    return place_model(model, device)


@dataclass(frozen=True)
class ResolvedModel:
    """A model loaded from a spec, with what to record about where it came from."""
    model: SSJDN
    source: str      # a resolved checkpoint path or a config name: pass it back to model_from_spec
    trained: bool    # False for a config: untrained retrieval heads, results close to random
    fallback_reason: str | None = None   # why the shipped model was replaced by the untrained one


def model_from_spec(spec: str | Path | dict | model_spec.ModelSpec | None = None,
                    device: str | torch.device | None = None,
                    untrained_fallback: bool = False) -> ResolvedModel:
    """The one way to turn a model spec (spec.py) into a model, or a config dict.

    A config gets untrained heads, seeded so the same name gives the same weights and
    fingerprint in every run, which lets an index built with it be searched later.
    Raises UserError / CheckpointError with what to do when the spec names nothing usable;
    with `untrained_fallback` (the app, which must start) a missing or damaged shipped model
    gives spec.UNTRAINED_FALLBACK instead, with the reason to show.
    """
    if isinstance(spec, dict):
        torch.manual_seed(0)
        return ResolvedModel(create_model(spec, device=device), str(spec.get("name", "config")), False)
    parsed = model_spec.ModelSpec.parse(spec)
    if parsed.kind == model_spec.SHIPPED:
        return _shipped_model(device, untrained_fallback)
    if parsed.kind == "file":
        path = Path(parsed.value).expanduser()
        if not path.is_file():
            raise UserError(f"Model file not found: {path}.")
        return ResolvedModel(load_model(path, device=device), str(path.resolve()), True)
    torch.manual_seed(0)
    return ResolvedModel(create_model(parsed.value, device=device), parsed.value, False)


def _shipped_model(device, untrained_fallback: bool) -> ResolvedModel:
    path = default_model_path()
    if not path.is_file():
        if not untrained_fallback:
            raise UserError(f"No trained model found at {path}. Pass a checkpoint "
                            "(PATH.safetensors), or the config name 'tiny' to try the pipeline "
                            "with an untrained model.")
        reason = f"The shipped model ({path}) is not installed."
    else:
        try:
            return ResolvedModel(load_model(path, device=device), str(path), True)
        except UserError as exc:   # e.g. a checkpoint from another install
            if not untrained_fallback:
                raise
            reason = f"The shipped model cannot be loaded ({exc})."
    fallback = model_from_spec(model_spec.UNTRAINED_FALLBACK, device)
    return ResolvedModel(fallback.model, fallback.source, False, reason)
