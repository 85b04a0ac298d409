"""Which models the user can choose and how each is loaded (no Qt).

The shipped model (resources/ssjdn-default.safetensors) is the default. Until it exists, the
app falls back to the default config with pretrained encoders but untrained SSJDN heads, and
says so: search results from it are close to random, and the user must know.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ssjdn.core.model.spec import SHIPPED, ModelSpec
from ssjdn.desktop.state import ModelChoice

FALLBACK_CONSEQUENCE = ("The app uses the default config with untrained retrieval heads: results are "
                        "close to random. Train a model (Tools > Train model) or install the shipped "
                        "checkpoint.")


@dataclass
class LoadedModel:
    model: object
    spec: str
    label: str
    warning: str | None = None


def available_choices(registered: list[dict]) -> list[ModelChoice]:
    """Shipped model (or its fallback), registered checkpoints, then every known config."""
    from ssjdn.core.model.api import default_model_path, list_configs
    if default_model_path().is_file():
        choices = [ModelChoice(SHIPPED, "SSJDN default (shipped, trained)")]
    else:
        choices = [ModelChoice(SHIPPED, "SSJDN default (untrained fallback)")]
    for entry in registered:
        choices.append(ModelChoice(f"file:{entry['path']}", f"{entry.get('label') or Path(entry['path']).name} (checkpoint)"))
    for name in list_configs():
        choices.append(ModelChoice(f"config:{name}", f"{name} (config, untrained)"))
    return choices


def label_for(spec: str) -> str:
    parsed = ModelSpec.parse(spec)
    if parsed.kind == SHIPPED:
        return "SSJDN default"
    return Path(parsed.value).name if parsed.is_checkpoint else f"{parsed.value} (untrained)"


def load_choice(spec: str, device: str = "auto") -> LoadedModel:
    """Load the model a spec names on `device` ("auto", "cpu", "cuda"). Slow: call off the GUI thread.

    The spec goes to core's model_from_spec (the one way from a spec to a model), asking for the
    untrained fallback of the shipped model (the app must start); this adds the labels and
    warnings the app shows."""
    from ssjdn.core.model.api import model_from_spec
    from ssjdn.core.errors import UserError
    torch_device = None if device == "auto" else device
    if torch_device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise UserError("CUDA was chosen but no CUDA GPU is available here; choose CPU.")
    parsed = ModelSpec.parse(spec, strict=True)
    if parsed.kind == SHIPPED:
        resolved = model_from_spec(parsed, torch_device, untrained_fallback=True)
        if resolved.trained:
            return LoadedModel(resolved.model, spec, "SSJDN default")
        return LoadedModel(resolved.model, spec, "SSJDN default config (untrained fallback)",
                           f"{resolved.fallback_reason} {FALLBACK_CONSEQUENCE}")
    if parsed.kind == "file" and not Path(parsed.value).is_file():
        raise UserError(f"Checkpoint not found: {parsed.value}. It was moved or deleted; choose another model.")
    resolved = model_from_spec(parsed, torch_device)
    if resolved.trained:
        return LoadedModel(resolved.model, spec, Path(parsed.value).name)
    return LoadedModel(resolved.model, spec, f"{parsed.value} (untrained)",
                       f"'{parsed.value}' is a config with untrained retrieval heads: results are close to random.")


def device_choices() -> list[str]:
    import torch
    return ["auto", "cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(1, torch.cuda.device_count())]
                              if torch.cuda.is_available() else [])
