"""Benchmark training: `train(config, data_root, out_dir)` from Python or `ssjdn train`.

This module is the loop: epochs of steps, validation, and when to stop. Its parts, by job:
config.py (settings, defaults, checks), batches.py (the torch Sampler and Dataset of a run's
batches), recipe.py (model settings, optimizer, schedule, weight average), checkpoints.py (the
run folder: what an epoch saves, and --resume), epoch_log.py (log.csv and TensorBoard),
distributed.py (torchrun's processes).

With the whole backbone frozen and `feature_cache.views` > 0, the backbone's maps of a few
fixed random views per image are computed once (see feature_cache.py) and every step reads
them: on a 2-core CPU that is the difference between a few epochs and a few dozen.
Under torchrun (WORLD_SIZE > 1) the same command trains with DDP; rank 0 validates and saves.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import torch

from ssjdn.core.errors import UserError, stop_check
from ssjdn.training.batches import (EpochBatchSampler, TrainingPairs, negative_mask_for,
                                    validation_inputs)
from ssjdn.training.checkpoints import (BEST_CHECKPOINT, LAST_CHECKPOINT, STATE_FILE,
                                        check_out_dir, interrupts_held, load_resume_state,
                                        restore_trainer_state, resumed_record, save_epoch,
                                        write_record)
from ssjdn.training.config import load_training_config
from ssjdn.training.datasets import load_dataset
from ssjdn.training.distributed import Distributed
from ssjdn.training.epoch_log import EpochLog
from ssjdn.training.evaluate import evaluate_model
from ssjdn.training.metrics import format_metrics
from ssjdn.training.recipe import build_optimizer, model_overrides, weight_average

ProgressCallback = Callable[[dict], None]


def _check_split_sizes(train_set, val_set, cfg: dict, dist: Distributed, data_root) -> None:
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
    check_out_dir(out_dir, resume)
    record = resumed_record(cfg, out_dir) if resume else cfg
    dist = Distributed()
    emit = progress or (lambda event: None)

    def log(message: str) -> None:
        if dist.main:
            print(message, flush=True)
        emit({"event": "log", "message": message})

    torch.manual_seed(int(cfg["seed"]) + dist.rank)
    if dist.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_record(record, out_dir)

    train_set = load_dataset(data_root, cfg["train_split"], name=cfg["dataset"],
                             fmt=cfg["data_format"])
    val_set = load_dataset(data_root, cfg["val_split"], name=train_set.name,
                           fmt=cfg["data_format"]) if cfg["val_split"] else None
    cfg["dataset"] = train_set.name
    _check_split_sizes(train_set, val_set, cfg, dist, data_root)

    generator = torch.Generator()
    generator.manual_seed(int(cfg["seed"]))
    model, state = _model_and_state(cfg, train_set, out_dir, resume, dist, log)
    start_epoch = int(state["epoch"]) + 1 if state is not None else 1
    best = dict(state["best"]) if state is not None else {"score": float("-inf"), "epoch": 0}
    history = list(state["history"]) if state is not None else []
    optimizer, scheduler = build_optimizer(model, cfg)
    if state is not None:
        restore_trainer_state(state, optimizer, scheduler, generator, out_dir / STATE_FILE)
    averager = weight_average(cfg, model, len(train_set), state)

    pairs = TrainingPairs(cfg, train_set, model, out_dir, dist, log, generator)
    sampler = EpochBatchSampler(len(pairs), int(cfg["batch_size"]), generator, dist.rank,
                                dist.world)
    val_images, val_features = validation_inputs(cfg, val_set, model, out_dir, pairs, log)
    wrapped = model
    if dist.world > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)

    epoch_log = EpochLog(out_dir, cfg["tensorboard"]) if dist.main else None
    if epoch_log is not None and state is not None:
        epoch_log.drop_after(int(state["epoch"]))   # rows of an epoch cut off while saving
    started = time.time()
    status = "finished"
    epoch = start_epoch - 1
    try:
        for epoch in range(start_epoch, int(cfg["epochs"]) + 1):
            epoch_started = time.time()
            result = _train_one_epoch(wrapped, model, pairs, sampler, optimizer, cfg, dist,
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
                    metrics = _validate(model, averager, val_set, val_images, val_features,
                                        cfg, row)
                    log(f"epoch {epoch} val: {format_metrics(metrics)}")
                improved = metrics is not None and metrics["mR"] > best["score"]
                if improved:
                    best = {"score": metrics["mR"], "epoch": epoch}
                with interrupts_held():
                    history.append(row)
                    save_epoch(model, optimizer, scheduler, generator, cfg, out_dir, epoch,
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
    summary = _summary(status, history, best, out_dir)
    emit({"event": "done", **summary})
    return summary


def _model_and_state(cfg: dict, train_set, out_dir: Path, resume: bool, dist: Distributed,
                     log):
    """(model, trainer state): a new model, or the resumed run's with its state (None new)."""
    if resume:
        model, state = load_resume_state(out_dir, dist.device, log)
        log(f"resuming after epoch {state['epoch']} (best mR {state['best']['score']:.2f} at "
            f"epoch {state['best']['epoch']})")
        return model, state
    from ssjdn.core.model.api import create_model

    overrides = model_overrides(cfg, train_set.categories)
    return create_model(cfg["model"], overrides=overrides, device=dist.device), None


def _validate(model, averager, val_set, images, features, cfg: dict, row: dict) -> dict:
    """The validated model's metrics (the weight average's, if any), also written into row."""
    started = time.time()

    def validate(weights):
        return evaluate_model(weights, val_set, images=images, features=features,
                              test_size=cfg["augment"].get("test_size"))

    metrics = validate(averager.model if averager else model)
    if averager is not None:   # the weights themselves, for comparison
        row["mR_raw"] = validate(model)["mR"]
    row.update(metrics, val_seconds=round(time.time() - started, 1))
    return metrics


def _summary(status: str, history: list, best: dict, out_dir: Path) -> dict:
    saved = {name: str(out_dir / name) if (out_dir / name).is_file() else None
             for name in (BEST_CHECKPOINT, LAST_CHECKPOINT)}
    return {"status": status, "epochs_done": len(history), "best_epoch": best["epoch"],
            "best_mR": best["score"], "out_dir": str(out_dir),
            "best_checkpoint": saved[BEST_CHECKPOINT],
            "last_checkpoint": saved[LAST_CHECKPOINT], "history": history}


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16,
                          enabled=enabled and device.type == "cuda")


def _train_one_epoch(wrapped, model, pairs: TrainingPairs, sampler: EpochBatchSampler,
                     optimizer, cfg, dist, epoch: int, emit, cancel,
                     averager=None) -> dict | None:
    """One pass of the sampler over the training images; None if cancelled."""
    from tqdm import tqdm

    model.train()
    should_stop = stop_check(cancel)
    steps = len(sampler)
    totals: dict[str, float] = {}
    bar = tqdm(sampler, total=steps, desc=f"epoch {epoch}/{cfg['epochs']}", unit="batch",
               disable=not (cfg["progress_bar"] and dist.main), mininterval=5, leave=False)
    for step, indices in enumerate(bar, 1):
        if should_stop():
            bar.close()
            return None
        pixels, features, captions, labels = pairs[indices]
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
              "steps": steps, "loss": values["loss"]})
    bar.close()
    return {key: value / max(steps, 1) for key, value in totals.items()}
