"""Benchmark training: `train(config, data_root, out_dir)` from Python or `ssjdn train`.

One epoch visits every training image once, in a seeded random order, with one of its 5
captions drawn at random: a batch never holds the same image twice, and captions that are
word-for-word identical (UCM repeats many) are masked out as each other's negatives.

Files in out_dir:
- last.safetensors / best.safetensors: model checkpoints (ssjdn.core.model.api.save_checkpoint),
  best = highest validation mR so far.
- trainer_state.pt: optimizer, scheduler and RNG state for --resume (tensors and plain
  Python values only, loaded with torch.load(weights_only=True)).
- log.csv and tb/ (TensorBoard): one row / point per epoch.

With the whole backbone frozen and `feature_cache.views` > 0, the backbone's maps of a few
fixed random views per image are computed once (see feature_cache.py) and every step reads
them: on a 2-core CPU that is the difference between a few epochs and a few dozen.
Under torchrun (WORLD_SIZE > 1) the same command trains with DDP; rank 0 validates and saves.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import math
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Callable

import torch
import yaml

from ssjdn.core.errors import UserError
from ssjdn.core.files import atomic_path
from ssjdn.training.augment import load_images, train_view
from ssjdn.training.datasets import load_dataset
from ssjdn.training.evaluate import evaluate_model
from ssjdn.training.metrics import format_metrics

# Lineage defaults (AMFMN / GaLR / SWAN); a training config overrides any of them.
DEFAULTS: dict = {
    "dataset": None,              # ucm | sydney | rsicd | rsitmd (guessed from data_root if null)
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

STATE_FILE = "trainer_state.pt"
LAST_CHECKPOINT = "last.safetensors"
BEST_CHECKPOINT = "best.safetensors"
# The checkpoint that agreed with trainer_state.pt before the epoch being saved: a run killed
# between the new checkpoint and the new trainer state resumes from it.
PREVIOUS_CHECKPOINT = "previous.safetensors"

ProgressCallback = Callable[[dict], None]


def load_training_config(config: str | Path | dict) -> dict:
    """A YAML path or a dict, merged over DEFAULTS."""
    from ssjdn.core.model.api import deep_merge

    if isinstance(config, (str, Path)):
        path = Path(config)
        if not path.is_file():
            raise UserError(f"Training config {path} does not exist; see training/configs/.")
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


def _is_cancelled(cancel) -> bool:
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


class _Distributed:
    """torchrun's environment, or a single process."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            self.device = torch.device("cuda", local)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        self.opened = False
        if self.world > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend)
            self.opened = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        """Leave the process group this run opened (torchrun runs one train() per process)."""
        if self.opened and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


# ---------------------------------------------------------------------------- model

def _model_overrides(cfg: dict, categories: list[str]) -> dict:
    from ssjdn.core.model.api import deep_merge

    names = cfg["category_names"] or [c.replace("_", " ") for c in categories]
    if len(names) != len(categories):
        raise UserError(f"category_names lists {len(names)} names for {len(categories)} "
                        "categories of the dataset.")
    switches = {k: bool(cfg[k]) for k in ("bsd", "lsd", "stl")}
    return deep_merge(cfg["model_overrides"], {**switches, "categories": list(names)})


def _build_optimizer(model, cfg: dict):
    text, other = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (text if name.startswith("text_encoder.") else other).append(param)
    groups = [{"params": other, "lr": cfg["lr"]}]
    if text:
        groups.append({"params": text, "lr": cfg["lr"] * cfg["text_lr_scale"]})
    optimizer = torch.optim.Adam(groups, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg["lr_step_epochs"],
                                                gamma=cfg["lr_gamma"])
    return optimizer, scheduler


# ---------------------------------------------------------------------------- batches

def negative_mask_for(captions: list[str], device) -> torch.Tensor:
    """False where two captions are the same sentence: neither may be the other's negative."""
    keys = [" ".join(c.lower().replace(".", " ").split()) for c in captions]
    ids = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    codes = torch.tensor([ids[k] for k in keys], device=device)
    return codes[:, None] != codes[None, :]


def epoch_batches(n_images: int, batch_size: int, generator: torch.Generator,
                  rank: int = 0, world: int = 1) -> list[torch.Tensor]:
    """This rank's batches of image indices for one epoch (same order on every rank)."""
    order = torch.randperm(n_images, generator=generator)
    per_rank = batch_size // world
    if per_rank < 2:
        raise UserError(f"batch_size {batch_size} is too small for {world} processes.")
    batches = []
    for start in range(0, n_images, batch_size):
        chunk = order[start:start + batch_size]
        mine = chunk[rank * per_rank:(rank + 1) * per_rank]
        if len(chunk) < batch_size and world > 1:
            break  # DDP needs the same number of equal steps on every rank
        if len(mine) >= 2:  # a triplet loss needs at least one negative
            batches.append(mine)
    return batches


class _TrainingData:
    """Training images (or cached views), captions and labels, and how to draw a batch."""

    def __init__(self, cfg, dataset, model, out_dir: Path, dist: _Distributed, log):
        self.cfg, self.dataset = cfg, dataset
        self.labels = torch.tensor(dataset.labels, dtype=torch.long)
        self.images = load_images(dataset.image_paths)
        self.views = int(cfg["feature_cache"].get("views") or 0)
        self.cached = None
        if self.views > 0:
            from ssjdn.training.feature_cache import backbone_can_be_cached, cached_views

            if not backbone_can_be_cached(model):
                raise UserError("feature_cache.views needs frozen backbone stages: set "
                                "model_overrides.image.freeze_stages to 1-8 for EfficientNet-Lite0 "
                                "(8 = all; the cache holds the frozen stages' outputs), or to 5 "
                                "(all) for ResNets.")
            cache_dir = Path(cfg["feature_cache"].get("dir") or out_dir / "feature_cache")
            tag = f"{dataset.name}_{dataset.split}"
            if not dist.main:
                dist.barrier()  # rank 0 builds the cache first
            self.cached = cached_views(model, self.images, dataset.image_names, cfg["augment"],
                                       cache_dir, tag, self.views, _cache_seed(cfg), log)
            if dist.main:
                dist.barrier()
        self.on_device = None
        if cfg["gpu_data"] and self.cached is None:
            from ssjdn.training.gpu_data import DeviceImages

            self.on_device = DeviceImages(self.images, cfg["augment"], dist.device)

    def __len__(self) -> int:
        return len(self.dataset)

    def draw(self, indices: torch.Tensor, generator: torch.Generator, device):
        """(pixels or None, features or None, captions, labels) for one batch."""
        caption_pick = torch.randint(0, 5, (len(indices),), generator=generator)
        captions = [self.dataset.captions[i][c] for i, c in zip(indices.tolist(),
                                                                 caption_pick.tolist())]
        labels = self.labels[indices].to(device)
        if self.cached is not None:
            view = torch.randint(0, self.views, (len(indices),), generator=generator)
            features = []
            for scale in range(len(self.cached[0])):
                maps = torch.stack([self.cached[v][scale][i]
                                    for v, i in zip(view.tolist(), indices.tolist())])
                features.append(maps.to(device).float())
            return None, features, captions, labels
        if self.on_device is not None:
            return self.on_device.draw(indices, generator), None, captions, labels
        views = [train_view(self.images[i], self.cfg["augment"], generator)
                 for i in indices.tolist()]
        return torch.stack(views), None, captions, labels


# ---------------------------------------------------------------------------- state

def _rng_state(generator: torch.Generator) -> dict:
    state = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _restore_rng(state: dict, generator: torch.Generator) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _atomic_torch_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _atomic_copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _keep_as(src: Path, dst: Path) -> None:
    """dst becomes a copy of src (a hard link where the file system allows: no copying)."""
    try:
        with atomic_path(dst) as tmp:
            os.link(src, tmp)
    except (OSError, UserError):
        _atomic_copy(src, dst)


# What a run leaves once an epoch is done: a folder holding any of them is that run's.
RUN_FILES = (LAST_CHECKPOINT, BEST_CHECKPOINT, STATE_FILE, "log.csv")


def _check_out_dir(out_dir: Path, resume: bool) -> None:
    """Never start a new run over an earlier one: its best.safetensors and log.csv would be
    replaced and mixed. (A folder whose run saved no epoch holds nothing to keep.)"""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; give a folder for the run.")
    found = [name for name in RUN_FILES if (out_dir / name).exists()]
    if found and not resume:
        raise UserError(f"{out_dir} already holds a training run ({', '.join(found)}); it is "
                        "left as it is. To continue that run, add --resume; to start another "
                        "one, give a new --out folder.")


_START_AFRESH = ("Its checkpoints are still usable models; to train again, start a new run "
                 "with a new --out folder.")
STATE_KEYS = ("epoch", "optimizer", "scheduler", "rng", "best", "history")


def _read_trainer_state(path: Path) -> dict:
    """The trainer state, loaded with weights_only (nothing in it is ever executed)."""
    import pickle

    damaged = f"{path} is damaged, so this run cannot continue exactly: {{}}. {_START_AFRESH}"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(damaged.format("it holds Python objects other than tensors and plain "
                                       "values, and those are never loaded (they could run "
                                       "code)")) from None
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, EOFError, ...
        raise UserError(damaged.format(f"it is truncated or not a trainer state file "
                                       f"({type(exc).__name__})")) from None
    missing = [key for key in STATE_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise UserError(damaged.format(f"it lacks {', '.join(missing)}"))
    return state


def _restore_trainer_state(state: dict, optimizer, scheduler, generator, path: Path) -> None:
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _restore_rng(state["rng"], generator)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise UserError(f"{path} does not fit this run's model and settings ({exc}); was the "
                        f"training config changed? {_START_AFRESH}") from None


def _load_resume_state(out_dir: Path, device, log):
    from ssjdn.core.model.api import load_model, read_checkpoint_metadata

    state_path, last = out_dir / STATE_FILE, out_dir / LAST_CHECKPOINT
    if not state_path.is_file() or not last.is_file():
        raise UserError(f"Nothing to resume in {out_dir}: it needs {LAST_CHECKPOINT} and "
                        f"{STATE_FILE} from an earlier run. Drop --resume to start afresh.")
    state = _read_trainer_state(state_path)
    saved_epoch = read_checkpoint_metadata(last)["extra"].get("epoch")
    if saved_epoch != state["epoch"]:
        previous = out_dir / PREVIOUS_CHECKPOINT
        if not (previous.is_file()
                and read_checkpoint_metadata(previous)["extra"].get("epoch") == state["epoch"]):
            raise UserError(f"{last} (epoch {saved_epoch}) and {STATE_FILE} (epoch "
                            f"{state['epoch']}) disagree; the run was cut off while saving, so "
                            f"it cannot continue exactly. {_START_AFRESH}")
        # Cut off while saving the next epoch: that epoch is redone from the agreeing pair.
        log(f"epoch {saved_epoch} was being saved when the run stopped; it is trained again")
        _keep_as(previous, last)
    return load_model(last, device=device), state


# Settings a resumed run may change: how long it goes on and what it shows. Any other would
# be ignored (the model, the optimizer's restored learning rate) or mix two recipes in one run.
RESUME_MAY_CHANGE = ("epochs", "time_budget_min", "progress_bar", "tensorboard", "name")


def _resumed_record(cfg: dict, out_dir: Path) -> dict | None:
    """The run's settings as its last checkpoint recorded them, with what a resume may change
    taken from `cfg`; UserError if `cfg` changes anything else. None if there is no checkpoint
    (resuming then fails with its own message)."""
    from ssjdn.core.model.api import read_checkpoint_metadata

    last = out_dir / LAST_CHECKPOINT
    if not last.is_file():
        return None
    recorded = read_checkpoint_metadata(last)["extra"].get("train_config") or {}
    differ = [key for key in DEFAULTS if key not in RESUME_MAY_CHANGE
              and not (key == "dataset" and cfg[key] is None)
              and cfg[key] != recorded.get(key, DEFAULTS[key])]
    if differ:
        raise UserError(f"Cannot resume {out_dir}: {', '.join(differ)} differ from the settings "
                        f"the run started with (a resume may change only epochs and "
                        f"time_budget_min). Resume with the run's own "
                        f"{out_dir / 'train_config.yaml'}, or start a new run in a new --out folder.")
    return {**recorded, **{key: cfg[key] for key in RESUME_MAY_CHANGE if key in cfg}}


def _write_record(record: dict | None, out_dir: Path) -> None:
    """train_config.yaml: the settings the run uses (atomic: the run's record is never half)."""
    if record is None:
        return

    with atomic_path(out_dir / "train_config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(record, sort_keys=False))


def _check_split_sizes(train_set, val_set, cfg: dict, dist: _Distributed, data_root) -> None:
    """A split too small for one batch trained nothing and still "finished"; one validation
    image scores mR 100 whatever the model (its captions compete with no other image's)."""
    need_train = 2 if dist.world == 1 else int(cfg["batch_size"])
    checks = [(train_set, "train", need_train, "a training step needs")]
    if val_set is not None:
        checks.append((val_set, "val", 2, "validation ranks images against each other, so it "
                                          "needs"))
    for dataset, role, need, why in checks:
        count = len(dataset)
        if count < need:
            raise UserError(f"The {role} split '{dataset.split}' of {data_root} has {count} "
                            f"image{'s' if count != 1 else ''}; {why} at least {need}. Use a "
                            f"bigger split, or set {role}_split in the training config.")


# ---------------------------------------------------------------------------- logging

class _EpochLog:
    """log.csv (appended across resumes) and TensorBoard scalars, rank 0 only."""

    def __init__(self, out_dir: Path, tensorboard: bool):
        self.csv_path = out_dir / "log.csv"
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(out_dir / "tb"))
            except ImportError:
                self.writer = None

    def write(self, row: dict) -> None:
        header = self._header()
        with open(self.csv_path, "a", newline="") as handle:
            # A resumed run keeps the columns it started with (an older version may have
            # logged other metrics): values stay under their own names.
            writer = csv.DictWriter(handle, fieldnames=header or list(row), restval="",
                                    extrasaction="ignore")
            if not header:
                writer.writeheader()
            writer.writerow(row)
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key.replace("@", "_at_"), value, row["epoch"])
            self.writer.flush()

    def drop_after(self, epoch: int) -> None:
        """Forget rows of epochs after `epoch` (written, then cut off before the trainer state
        committed them: they are trained again)."""
        if not self.csv_path.exists():
            return
        with open(self.csv_path, newline="") as handle:
            rows = list(csv.reader(handle))
        column = rows[0].index("epoch") if rows and "epoch" in rows[0] else 0
        kept = rows[:1] + [row for row in rows[1:] if row and int(float(row[column])) <= epoch]
        if len(kept) == len(rows):
            return

        with atomic_path(self.csv_path) as tmp, open(tmp, "w", newline="") as handle:
            csv.writer(handle).writerows(kept)

    def _header(self) -> list[str] | None:
        if not self.csv_path.exists():
            return None
        with open(self.csv_path, newline="") as handle:
            return next(csv.reader(handle), None)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ---------------------------------------------------------------------------- training

def train(config: str | Path | dict, data_root: str | Path, out_dir: str | Path,
          resume: bool = False, progress: ProgressCallback | None = None,
          cancel=None) -> dict:
    """Train a model on a benchmark; returns a summary dict.

    progress(event) gets dicts with "event" in {"log", "step", "epoch", "done"}; cancel is a
    threading.Event or a callable returning True to stop at the next step (the last finished
    epoch stays saved, so the run can be resumed).
    """
    cfg = load_training_config(config)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, resume)
    record = _resumed_record(cfg, out_dir) if resume else cfg
    dist = _Distributed()
    emit = progress or (lambda event: None)

    def log(message: str) -> None:
        if dist.main:
            print(message, flush=True)
        emit({"event": "log", "message": message})

    torch.manual_seed(int(cfg["seed"]) + dist.rank)
    if dist.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_record(record, out_dir)

    train_set = load_dataset(data_root, cfg["train_split"], name=cfg["dataset"],
                             fmt=cfg["data_format"])
    val_set = load_dataset(data_root, cfg["val_split"], name=train_set.name,
                           fmt=cfg["data_format"]) if cfg["val_split"] else None
    cfg["dataset"] = train_set.name
    _check_split_sizes(train_set, val_set, cfg, dist, data_root)

    generator = torch.Generator()
    generator.manual_seed(int(cfg["seed"]))
    start_epoch, best, history = 1, {"score": float("-inf"), "epoch": 0}, []
    state = None
    if resume:
        model, state = _load_resume_state(out_dir, dist.device, log)
        start_epoch = int(state["epoch"]) + 1
        best, history = dict(state["best"]), list(state["history"])
        log(f"resuming after epoch {state['epoch']} (best mR {best['score']:.2f} at epoch "
            f"{best['epoch']})")
    else:
        from ssjdn.core.model.api import create_model

        overrides = _model_overrides(cfg, train_set.categories)
        model = create_model(cfg["model"], overrides=overrides, device=dist.device)
    optimizer, scheduler = _build_optimizer(model, cfg)
    if state is not None:
        _restore_trainer_state(state, optimizer, scheduler, generator, out_dir / STATE_FILE)
    averager = _weight_average(cfg, model, len(train_set), state)

    data = _TrainingData(cfg, train_set, model, out_dir, dist, log)
    val_images, val_features = _validation_inputs(cfg, val_set, model, out_dir, data, log)
    wrapped = model
    if dist.world > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)

    epoch_log = _EpochLog(out_dir, cfg["tensorboard"]) if dist.main else None
    if epoch_log is not None and state is not None:
        epoch_log.drop_after(int(state["epoch"]))   # rows of an epoch cut off while saving
    started = time.time()
    status = "finished"
    epoch = start_epoch - 1
    try:
        for epoch in range(start_epoch, int(cfg["epochs"]) + 1):
            epoch_started = time.time()
            result = _train_one_epoch(wrapped, model, data, optimizer, generator, cfg, dist,
                                      epoch, emit, cancel, averager)
            if result is None:
                status = "cancelled"
                log(f"cancelled during epoch {epoch}; epoch {epoch - 1} is saved")
                break
            scheduler.step()
            row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], **result,
                   "train_seconds": round(time.time() - epoch_started, 1)}
            if dist.main:
                metrics = None
                if val_set is not None and (epoch % int(cfg["eval_every"]) == 0
                                            or epoch == int(cfg["epochs"])):
                    val_started = time.time()
                    validate = lambda m: evaluate_model(  # noqa: E731
                        m, val_set, images=val_images, features=val_features,
                        test_size=cfg["augment"].get("test_size"))
                    metrics = validate(averager.model if averager else model)
                    if averager is not None:   # the weights themselves, for comparison
                        row["mR_raw"] = validate(model)["mR"]
                    row.update(metrics, val_seconds=round(time.time() - val_started, 1))
                    log(f"epoch {epoch} val: {format_metrics(metrics)}")
                improved = metrics is not None and metrics["mR"] > best["score"]
                if improved:
                    best = {"score": metrics["mR"], "epoch": epoch}
                with _interrupts_held():
                    history.append(row)
                    _save_epoch(model, optimizer, scheduler, generator, cfg, out_dir, epoch,
                                best, history, improved, metrics, epoch_log, averager)
                emit({"event": "epoch", "epoch": epoch, "epochs": int(cfg["epochs"]),
                      "row": row, "best": best})
            dist.barrier()
            budget = cfg["time_budget_min"]
            if budget and (time.time() - started) / 60 >= float(budget):
                log(f"time budget of {budget} min reached after epoch {epoch}")
                status = "budget"
                break
    finally:
        if epoch_log is not None:
            epoch_log.close()
        dist.close()
    saved = {name: str(out_dir / name) if (out_dir / name).is_file() else None
             for name in (BEST_CHECKPOINT, LAST_CHECKPOINT)}
    summary = {"status": status, "epochs_done": len(history), "best_epoch": best["epoch"],
               "best_mR": best["score"], "out_dir": str(out_dir),
               "best_checkpoint": saved[BEST_CHECKPOINT],
               "last_checkpoint": saved[LAST_CHECKPOINT], "history": history}
    emit({"event": "done", **summary})
    return summary


def _validation_inputs(cfg, val_set, model, out_dir, data: _TrainingData, log):
    if val_set is None:
        return None, None
    images = load_images(val_set.image_paths)
    if data.cached is None:
        return images, None
    from ssjdn.training.feature_cache import cached_views

    cache_dir = Path(cfg["feature_cache"].get("dir") or out_dir / "feature_cache")
    features = cached_views(model, images, val_set.image_names, cfg["augment"], cache_dir,
                            f"{val_set.name}_{val_set.split}", 0, _cache_seed(cfg), log)[0]
    return images, features


def _cache_seed(cfg: dict) -> int:
    seed = cfg["feature_cache"].get("seed")
    return int(cfg["seed"] if seed is None else seed)


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16,
                          enabled=enabled and device.type == "cuda")


def _weight_average(cfg: dict, model, n_images: int, state: dict | None):
    """The run's WeightAverage (None with ema_epochs 0), continued from a resumed state."""
    if not cfg["ema_epochs"]:
        return None
    from ssjdn.training.averaging import WeightAverage

    averager = WeightAverage(model, cfg["ema_epochs"],
                             math.ceil(n_images / int(cfg["batch_size"])))
    if state is not None and "weight_average" in state:
        averager.load_state_dict(state["weight_average"])
    return averager


def _train_one_epoch(wrapped, model, data: _TrainingData, optimizer, generator, cfg, dist,
                     epoch: int, emit, cancel, averager=None) -> dict | None:
    """One pass over the training images; None if cancelled."""
    from tqdm import tqdm

    model.train()
    batches = epoch_batches(len(data), int(cfg["batch_size"]), generator, dist.rank, dist.world)
    totals: dict[str, float] = {}
    bar = tqdm(batches, desc=f"epoch {epoch}/{cfg['epochs']}", unit="batch",
               disable=not (cfg["progress_bar"] and dist.main), mininterval=5, leave=False)
    for step, indices in enumerate(bar, 1):
        if _is_cancelled(cancel):
            bar.close()
            return None
        pixels, features, captions, labels = data.draw(indices, generator, dist.device)
        tokens = model.tokenize(captions)
        with _autocast(dist.device, cfg["amp"]):
            x = model.preprocess_images(pixels) if pixels is not None else None
            out = wrapped(x, tokens["input_ids"], tokens["attention_mask"], features=features)
        loss, parts = model.criterion(out, labels, negative_mask_for(captions, dist.device),
                                      captions=captions)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # Read after the step, where the parts are read anyway: reading the loss before
        # backward() would make a GPU wait for the forward pass before queueing the rest.
        # The diverged step's weights are never saved or averaged: the run stops here.
        values = {"loss": float(loss.detach())}
        if not math.isfinite(values["loss"]):
            bar.close()
            raise UserError(f"The training loss became NaN or infinite in epoch {epoch} (step "
                            f"{step}), so training stopped: the model diverged and nothing of "
                            f"this epoch was saved. Lower lr (now {cfg['lr']}) in the training "
                            f"config and start a new run in a new --out folder.")
        if averager is not None:
            averager.update(model)
        values.update({k: float(v.detach()) if torch.is_tensor(v) else float(v)
                       for k, v in parts.items()})
        for key, value in values.items():
            totals[key] = totals.get(key, 0.0) + value
        bar.set_postfix(loss=f"{values['loss']:.3f}")
        emit({"event": "step", "epoch": epoch, "epochs": int(cfg["epochs"]), "step": step,
              "steps": len(batches), "loss": values["loss"]})
    bar.close()
    return {key: value / max(len(batches), 1) for key, value in totals.items()}


@contextlib.contextmanager
def _interrupts_held():
    """Ctrl-C waits until an epoch's checkpoint, trainer state and log row are all written:
    cut between them, last.safetensors and trainer_state.pt would disagree and the run could
    not be resumed. The interrupt is raised right after. (Main thread only, where signals are
    delivered; elsewhere a no-op.)"""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is None):   # None: a handler set outside Python
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *received: caught.append(received))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        if callable(previous):
            previous(*caught[0])
        elif previous == signal.SIG_DFL:
            raise KeyboardInterrupt


def _save_epoch(model, optimizer, scheduler, generator, cfg, out_dir: Path, epoch: int,
                best: dict, history: list, improved: bool, metrics: dict | None,
                epoch_log: _EpochLog, averager=None) -> None:
    """The trainer state is written last: it commits the epoch. Until then the previous
    checkpoint is kept beside the new one, so a run killed at any point here resumes from the
    pair that agrees (see _load_resume_state) and loses at most this epoch."""
    from ssjdn.core.model.api import save_checkpoint

    last = out_dir / LAST_CHECKPOINT
    if last.is_file():
        _keep_as(last, out_dir / PREVIOUS_CHECKPOINT)
    extra = {"epoch": epoch, "val_metrics": metrics, "train_config": cfg}
    save_checkpoint(model, last, extra=extra)
    if improved and averager is not None:   # the validated model is the average
        save_checkpoint(averager.model, out_dir / BEST_CHECKPOINT,
                        extra={**extra, "weights": averager.describe()})
    elif improved:
        _atomic_copy(last, out_dir / BEST_CHECKPOINT)
    epoch_log.write(history[-1])
    state = {"epoch": epoch, "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": _rng_state(generator),
             "best": best, "history": history}
    if averager is not None:
        state["weight_average"] = averager.state_dict()
    _atomic_torch_save(state, out_dir / STATE_FILE)
