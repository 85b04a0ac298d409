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
    from ssjdn.core.api import default_model_path
    return default_model_path()


def available_choices(registered: list[dict]) -> list[ModelChoice]:
    """Shipped model (or its fallback), registered checkpoints, then every known config."""
    from ssjdn.core.api import list_configs
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
    """Load the model a spec names on `device` ("auto", "cpu", "cuda"). Slow: call off the GUI thread."""
    from ssjdn.core.api import create_model, load_model
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
                return LoadedModel(load_model(path, device=torch_device), spec, "SSJDN default")
            except UserError as exc:   # e.g. a checkpoint from another install: still start
                warning = f"The shipped model cannot be loaded ({exc}). {FALLBACK_CONSEQUENCE}"
        fallback = load_choice(UNTRAINED_DEFAULT, device)
        return LoadedModel(fallback.model, spec, "SSJDN default config (untrained fallback)", warning)
    kind, _, value = spec.partition(":")
    if kind == "file":
        if not Path(value).is_file():
            raise UserError(f"Checkpoint not found: {value}. It was moved or deleted; choose another model.")
        return LoadedModel(load_model(value, device=torch_device), spec, Path(value).name)
    if kind == "config":
        import torch
        # A fixed seed gives an untrained model the same weights, hence the same fingerprint,
        # on every start, so its index in the cache is found again instead of rebuilt.
        torch.manual_seed(0)
        return LoadedModel(create_model(value, device=torch_device), spec, f"{value} (untrained)",
                           f"'{value}' is a config with untrained retrieval heads: results are close to random.")
    raise UserError(f"Unknown model choice {spec!r}.")


def device_choices() -> list[str]:
    import torch
    return ["auto", "cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(1, torch.cuda.device_count())]
                              if torch.cuda.is_available() else [])
