"""Which models the user can choose and how each is loaded (no Qt).

The shipped model (resources/ssjdn-default.safetensors) is the default. Until it exists, the
app falls back to the default config with pretrained encoders but untrained SSJDN heads, and
says so: search results from it are close to random, and the user must know.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ssjdn.desktop.state import SHIPPED_DEFAULT, UNTRAINED_DEFAULT, ModelChoice

FALLBACK_CONSEQUENCE = ("The app uses the default config with untrained retrieval heads: results are "
                        "close to random. Train a model (Tools > Train model) or install the shipped "
                        "checkpoint.")
FALLBACK_WARNING = ("The shipped model (resources/ssjdn-default.safetensors) is not installed. "
                    + FALLBACK_CONSEQUENCE)


@dataclass
class LoadedModel:
    model: object
    spec: str
    label: str
    warning: str | None = None


def shipped_model_path() -> Path:
    from ssjdn.core.model.api import default_model_path
    return default_model_path()


def available_choices(registered: list[dict]) -> list[ModelChoice]:
    """Shipped model (or its fallback), registered checkpoints, then every known config."""
    from ssjdn.core.model.api import list_configs
    if shipped_model_path().is_file():
        choices = [ModelChoice(SHIPPED_DEFAULT, "SSJDN default (shipped, trained)")]
    else:
        choices = [ModelChoice(SHIPPED_DEFAULT, "SSJDN default (untrained fallback)")]
    for entry in registered:
        choices.append(ModelChoice(f"file:{entry['path']}", f"{entry.get('label') or Path(entry['path']).name} (checkpoint)"))
    for name in list_configs():
        choices.append(ModelChoice(f"config:{name}", f"{name} (config, untrained)"))
    return choices


def label_for(spec: str) -> str:
    if spec == SHIPPED_DEFAULT:
        return "SSJDN default"
    kind, _, value = spec.partition(":")
    return Path(value).name if kind == "file" else f"{value} (untrained)"


def load_choice(spec: str, device: str = "auto") -> LoadedModel:
    """Load the model a spec names on `device` ("auto", "cpu", "cuda"). Slow: call off the GUI thread.

    The spec goes to core's model_from_spec (the one way from a spec to a model); this adds the
    shipped model's untrained fallback and the labels and warnings the app shows."""
    from ssjdn.core.model.api import model_from_spec
    from ssjdn.core.errors import UserError
    torch_device = None if device == "auto" else device
    if torch_device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise UserError("CUDA was chosen but no CUDA GPU is available here; choose CPU.")
    if spec == SHIPPED_DEFAULT:
        path = shipped_model_path()
        warning = FALLBACK_WARNING
        if path.is_file():
            try:
                return LoadedModel(model_from_spec(f"file:{path}", torch_device).model, spec, "SSJDN default")
            except UserError as exc:   # e.g. a checkpoint from another install: still start
                warning = f"The shipped model cannot be loaded ({exc}). {FALLBACK_CONSEQUENCE}"
        fallback = load_choice(UNTRAINED_DEFAULT, device)
        return LoadedModel(fallback.model, spec, "SSJDN default config (untrained fallback)", warning)
    kind, _, value = spec.partition(":")
    if kind not in ("file", "config"):
        raise UserError(f"Unknown model choice {spec!r}.")
    if kind == "file" and not Path(value).is_file():
        raise UserError(f"Checkpoint not found: {value}. It was moved or deleted; choose another model.")
    resolved = model_from_spec(spec, torch_device)
    if resolved.trained:
        return LoadedModel(resolved.model, spec, Path(value).name)
    return LoadedModel(resolved.model, spec, f"{value} (untrained)",
                       f"'{value}' is a config with untrained retrieval heads: results are close to random.")


def device_choices() -> list[str]:
    import torch
    return ["auto", "cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(1, torch.cuda.device_count())]
                              if torch.cuda.is_available() else [])
