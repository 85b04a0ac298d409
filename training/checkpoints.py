"""What a run keeps in its --out folder, and how it continues from there (--resume).

- last.safetensors / best.safetensors: model checkpoints (ssjdn.core.model.api.save_checkpoint),
  best = highest validation mR so far.
- trainer_state.pt: optimizer, scheduler and RNG state for --resume (tensors and plain
  Python values only, loaded with torch.load(weights_only=True)).
- train_config.yaml: the settings the run uses.
An epoch is committed by its trainer state, written last (see save_epoch).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
from pathlib import Path

import torch
import yaml

from ssjdn.core.errors import UserError
from ssjdn.core.files import atomic_path
from ssjdn.training.averaging import describe_average
from ssjdn.training.config import DEFAULTS
from ssjdn.training.epoch_log import LOG_FILE, EpochLog

STATE_FILE = "trainer_state.pt"
LAST_CHECKPOINT = "last.safetensors"
BEST_CHECKPOINT = "best.safetensors"
# The checkpoint that agreed with trainer_state.pt before the epoch being saved: a run killed
# between the new checkpoint and the new trainer state resumes from it.
PREVIOUS_CHECKPOINT = "previous.safetensors"
RECORD_FILE = "train_config.yaml"


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
RUN_FILES = (LAST_CHECKPOINT, BEST_CHECKPOINT, STATE_FILE, LOG_FILE)


def check_out_dir(out_dir: Path, resume: bool) -> None:
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


def load_final_average(out_dir: str | Path, device=None):
    """The run's model with the moving-average weights of its last committed epoch: what that
    epoch's validation scored (best.safetensors holds the best epoch's instead)."""
    from ssjdn.core.model.api import load_model

    out_dir = Path(out_dir)
    if not (out_dir / STATE_FILE).is_file():
        raise UserError(f"{out_dir} holds no {STATE_FILE}: give the --out folder of a training "
                        "run (one epoch done at least).")
    state = _read_trainer_state(out_dir / STATE_FILE)
    if "weight_average" not in state:
        raise UserError(f"{out_dir} holds no moving average (its config had ema_epochs 0): "
                        f"its last weights are {out_dir / LAST_CHECKPOINT}.")
    model = load_model(out_dir / LAST_CHECKPOINT, device=device)
    weights = model.state_dict()
    for name, value in state["weight_average"]["weights"].items():
        weights[name].copy_(value.to(weights[name].device))
    extra = model.checkpoint_extra or {}
    ema_epochs = (extra.get("train_config") or {}).get("ema_epochs", 0)
    model.checkpoint_extra = {**extra, "epoch": state["epoch"],
                              "weights": f"{describe_average(ema_epochs)}, epoch {state['epoch']}"}
    return model


def save_final_average(out_dir: str | Path, path: str | Path, half: bool = True) -> Path:
    """Write the run's final moving average (load_final_average) as a checkpoint file, fp16 by
    default as a shipped model is; it never replaces an existing file."""
    from ssjdn.core.model.api import save_checkpoint

    path = Path(path)
    if path.exists():
        raise UserError(f"{path} already exists: give a new file name (it is not overwritten).")
    model = load_final_average(out_dir, device="cpu")
    return save_checkpoint(model, path, extra=model.checkpoint_extra, half=half)


def restore_trainer_state(state: dict, optimizer, scheduler, generator, path: Path) -> None:
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _restore_rng(state["rng"], generator)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise UserError(f"{path} does not fit this run's model and settings ({exc}); was the "
                        f"training config changed? {_START_AFRESH}") from None


def load_resume_state(out_dir: Path, device, log):
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


def resumed_record(cfg: dict, out_dir: Path) -> dict | None:
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
                        f"{out_dir / RECORD_FILE}, or start a new run in a new --out folder.")
    return {**recorded, **{key: cfg[key] for key in RESUME_MAY_CHANGE if key in cfg}}


def write_record(record: dict | None, out_dir: Path) -> None:
    """train_config.yaml: the settings the run uses (atomic: the run's record is never half)."""
    if record is None:
        return
    with atomic_path(out_dir / RECORD_FILE) as tmp:
        tmp.write_text(yaml.safe_dump(record, sort_keys=False))


@contextlib.contextmanager
def interrupts_held():
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


def save_epoch(model, optimizer, scheduler, generator, cfg, out_dir: Path, epoch: int,
               best: dict, history: list, improved: bool, metrics: dict | None,
               epoch_log: EpochLog, averager=None) -> None:
    """The trainer state is written last: it commits the epoch. Until then the previous
    checkpoint is kept beside the new one, so a run killed at any point here resumes from the
    pair that agrees (see load_resume_state) and loses at most this epoch."""
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
