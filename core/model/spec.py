"""A model spec: the one way a model is named, by the CLI's --model, the app's model choice and
session file, and the spec a Dask worker receives.

    shipped        the checkpoint that ships with the app (also: default, an empty spec, None)
    config:NAME    a config (name or YAML path): pretrained encoders, untrained retrieval heads
    file:PATH      a checkpoint file
    PATH           a checkpoint if a file is there (or it ends in .safetensors), else a config

`str(spec)` is the canonical text ("shipped", "config:NAME", "file:PATH"): what the app saves
and what workers get. Loading is api.model_from_spec.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ssjdn.core.errors import UserError

SHIPPED = "shipped"
_SHIPPED_NAMES = ("", SHIPPED, "default")
_CONFIG_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class ModelSpec:
    kind: str        # "shipped", "config" or "file"
    value: str = ""  # the config name / YAML path, or the checkpoint path; "" when shipped

    @classmethod
    def parse(cls, spec: str | Path | ModelSpec | None, strict: bool = False) -> ModelSpec:
        """`strict` accepts only the canonical text (a saved choice); otherwise the forms the
        module docstring lists. A bare PATH is told apart by looking at the file system."""
        if isinstance(spec, ModelSpec):
            return spec
        text = "" if spec is None else str(spec)
        kind, sep, value = text.partition(":")
        if sep and kind in ("file", "config"):
            return cls("file", value) if kind == "file" else cls("config", value)
        if strict and text != SHIPPED:
            raise UserError(f'A model must be "{SHIPPED}", "config:NAME" or "file:PATH", not {text!r}.')
        if text in _SHIPPED_NAMES:
            return cls(SHIPPED)
        path = Path(text).expanduser()
        suffix = path.suffix.lower()
        if suffix == ".safetensors" or (suffix not in _CONFIG_SUFFIXES and path.is_file()):
            return cls("file", text)
        return cls("config", text)

    @property
    def is_checkpoint(self) -> bool:
        """Trained retrieval heads (a config's are untrained: results close to random)."""
        return self.kind != "config"

    def resolved(self) -> ModelSpec:
        """A checkpoint by its full path (it then means the same from any folder)."""
        if self.kind != "file":
            return self
        return ModelSpec("file", str(Path(self.value).expanduser().resolve()))

    def __str__(self) -> str:
        return SHIPPED if self.kind == SHIPPED else f"{self.kind}:{self.value}"


# What the app loads when the shipped checkpoint is missing or damaged (model_from_spec's
# untrained_fallback): results close to random, and the caller must say so.
UNTRAINED_FALLBACK = ModelSpec("config", "ssjdn-lite0-minilm")
