"""The training config: its settings and their defaults, read from YAML and checked before
anything loads (one line naming the setting, never a failure deep in a run)."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import yaml

from ssjdn.core.errors import UserError

# Lineage defaults (AMFMN / GaLR / SWAN); a training config overrides any of them.
DEFAULTS: dict = {
    "dataset": None,              # a name in benchmarks.py (guessed from data_root if null)
    "data_format": "auto",        # auto | json | csv | precomp
    "train_split": "train",
    "val_split": "val",
    "model": "ssjdn-lite0-minilm",  # a core/model/configs name or a YAML path
    "model_overrides": {},        # deep-merged into the model config (freezing, widths, loss)
    "bsd": True,
    "lsd": True,
    "stl": True,
    "category_names": None,       # readable class names for LSD's init (default: dataset's)
    "epochs": 60,
    "batch_size": 100,
    "lr": 2.0e-4,
    "text_lr_scale": 1.0,         # pretrained text layers often want a smaller step
    "weight_decay": 0.0,
    "lr_step_epochs": 20,
    "lr_gamma": 0.7,
    "augment": {"resize": 278, "rotation": 90, "crop": 256, "test_size": 256},
    # seed: the views' seed (default: `seed`), so runs of several seeds can share one cache
    "feature_cache": {"views": 0, "dir": None, "seed": None},
    "eval_every": 1,
    "time_budget_min": None,      # stop after the epoch that passes this many minutes
    "seed": 0,
    "amp": True,                  # bf16 autocast on CUDA; ignored on CPU
    "gpu_data": False,            # training images resident on the device, augmented there
    # > 0: a moving average of the weights with this time constant (in epochs) is what is
    # validated and kept as best.safetensors (training/averaging.py); 0: the weights themselves
    "ema_epochs": 0,
    "tensorboard": True,
    "progress_bar": True,
}


def config_path(config: str | Path) -> Path:
    """A YAML path, or the name of a shipped config (training/configs/NAME.yaml), as the model
    configs are named; a UserError listing the shipped names if it is neither."""
    from ssjdn.core.places import shipped_path
    path = Path(config)
    if path.is_file():
        return path
    shipped = shipped_path("training", "configs")
    if path.suffix == "" and len(path.parts) == 1 and (shipped / f"{path}.yaml").is_file():
        return shipped / f"{path}.yaml"
    names = ", ".join(sorted(p.stem for p in shipped.glob("*.yaml")))
    raise UserError(f"Training config {path} does not exist: give a YAML file or one of the shipped "
                    f"configs ({names}).")


def load_training_config(config: str | Path | dict) -> dict:
    """A YAML path, a shipped config's name or a dict, merged over DEFAULTS."""
    from ssjdn.core.model.api import deep_merge

    if isinstance(config, (str, Path)):
        path = config_path(config)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            at = f" (line {where.line + 1})" if where is not None else ""
            raise UserError(f"Training config {path} is not valid YAML{at}; fix it, or start "
                            f"from a file in training/configs/.") from None
        if not isinstance(data, dict):
            raise UserError(f"Training config {path} must be a mapping of settings (key: value "
                            f"lines), not a {type(data).__name__}; see training/configs/.")
        data.setdefault("name", path.stem)
    else:
        data = copy.deepcopy(config)
    unknown = set(data) - set(DEFAULTS) - {"name"}
    if unknown:
        raise UserError(f"Unknown training config keys: {', '.join(sorted(unknown))}.")
    merged = deep_merge(DEFAULTS, data)
    _check_settings(merged)
    return merged


# Numeric settings: (whole number?, lower bound, bound allowed?); None: no bound. Checked
# before anything loads: `--epochs 0` used to "finish" at once and name a best.safetensors it
# never wrote, and `lr: .inf` to save NaN weights as the best model.
_SETTING_RULES = {
    "epochs": (True, 1, True), "batch_size": (True, 2, True), "lr": (False, 0, False),
    "text_lr_scale": (False, 0, True), "weight_decay": (False, 0, True),
    "lr_step_epochs": (True, 1, True), "lr_gamma": (False, 0, False),
    "eval_every": (True, 1, True), "time_budget_min": (False, 0, False),
    "ema_epochs": (False, 0, True),
    "seed": (True, None, True), "augment.resize": (False, 0, False),
    "augment.rotation": (False, 0, True), "augment.crop": (True, 1, True),
    "augment.test_size": (True, 1, True), "feature_cache.views": (True, 0, True),
    "feature_cache.seed": (True, None, True),
}
_SETTING_FLAGS = {"epochs": "--epochs", "time_budget_min": "--time-budget-min"}
_OPTIONAL = {"time_budget_min", "feature_cache.seed", "augment.rotation", "feature_cache.views"}
_SWITCHES = ("bsd", "lsd", "stl", "amp", "gpu_data", "tensorboard", "progress_bar",
             "augment.hflip")
# Settings of a given type: (type, what it must be, may be null?).
_TYPED = {"name": (str, "text", True), "dataset": (str, "text", True),
          "data_format": (str, "text", False), "train_split": (str, "text", False),
          "val_split": (str, "text", True), "model": (str, "a model name or a YAML path", False),
          "model_overrides": (dict, "a mapping", False), "augment": (dict, "a mapping", False),
          "feature_cache": (dict, "a mapping", False), "feature_cache.dir": (str, "a folder", True)}


def _setting(cfg: dict, key: str):
    """A setting by dotted name (`augment.crop`); None where it is not set."""
    value = cfg
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _refuse(key: str, must: str, value) -> None:
    flag = f" or with {_SETTING_FLAGS[key]}" if key in _SETTING_FLAGS else ""
    raise UserError(f"{key} must be {must}, not {value!r}; set it in the training config{flag}.")


def _check_settings(cfg: dict) -> None:
    for key, (kind, what, nullable) in _TYPED.items():
        value = _setting(cfg, key)
        if not isinstance(value, kind) and not (nullable and value is None):
            _refuse(key, what + (" or null" if nullable else ""), value)
    for key in _SWITCHES:
        value = _setting(cfg, key)
        if not isinstance(value, bool) and not (key == "augment.hflip" and value is None):
            _refuse(key, "true or false", value)   # YAML reads 'no' in quotes as text, truthy
    names = cfg["category_names"]
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        _refuse("category_names", "a list of texts or null", names)
    for key, (whole, bound, inclusive) in _SETTING_RULES.items():
        value = _setting(cfg, key)
        if key in _OPTIONAL and value is None:
            continue
        number = (isinstance(value, (int, float)) and not isinstance(value, bool)
                  and math.isfinite(value))
        fits = number and (not whole or isinstance(value, int)) and (
            bound is None or (value >= bound if inclusive else value > bound))
        if not fits:
            what = "a whole number" if whole else "a finite number"
            limit = "" if bound is None else \
                f" of at least {bound}" if inclusive else f" above {bound}"
            _refuse(key, what + limit, value)
