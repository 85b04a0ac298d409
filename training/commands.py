"""`ssjdn train` and `ssjdn eval`: the training layer's subcommands of the ssjdn CLI."""
from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path


def register(subparsers) -> None:
    train = subparsers.add_parser(
        "train", help="train a model on a benchmark dataset",
        description="Train SSJDN on UCM-Captions, Sydney-Captions, RSICD or RSITMD. "
        "Checkpoints every epoch into --out; run the same command with --resume to continue. "
        "Under torchrun the same command trains on several GPUs.")
    train.add_argument("--config", required=True,
                       help="training config YAML, e.g. training/configs/ucm.yaml")
    train.add_argument("--data-root", required=True, help="the dataset folder")
    train.add_argument("--out", default=None,
                       help="output folder (default: runs/<config name>)")
    train.add_argument("--resume", action="store_true",
                       help="continue from --out's last checkpoint and trainer state")
    train.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    train.add_argument("--time-budget-min", type=float, default=None,
                       help="stop after the epoch that passes this many minutes")
    train.set_defaults(func=_run_train)

    evaluate = subparsers.add_parser(
        "eval", help="retrieval R@1/5/10 and mR of a checkpoint on a dataset split",
        description="Evaluate a checkpoint with the peers' protocol (5 captions per image, "
        "image-to-text counts the best of an image's captions) and write a JSON report.")
    evaluate.add_argument("--checkpoint", required=True, help="a .safetensors checkpoint")
    evaluate.add_argument("--data-root", required=True, help="the dataset folder")
    evaluate.add_argument("--split", default="test", help="val, test, ... (default: test)")
    evaluate.add_argument("--dataset", default=None, choices=["ucm", "sydney", "rsicd", "rsitmd"],
                          help="which benchmark (default: from the checkpoint or the folder)")
    evaluate.add_argument("--format", default="auto", choices=["auto", "json", "csv", "precomp"],
                          help="caption file format to read (default: auto)")
    evaluate.add_argument("--folds", type=int, default=None,
                          help="average over k equal folds of the split (default: the "
                          "dataset's usual protocol)")
    evaluate.add_argument("--report", default=None, help="JSON report path")
    evaluate.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ...")
    evaluate.set_defaults(func=_run_eval)


def train_until_terminated(config, data_root, out, resume=False, progress=None) -> dict:
    """train() where SIGTERM (a scheduler's, or the app's Cancel) stops at the next step like
    a cancel: finished epochs stay on disk and --resume continues. Main thread only.
    (Ctrl-C also stops; the current epoch is redone.)"""
    from ssjdn.training.train import train

    cancel = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    try:
        return train(config, data_root, out, resume=resume, progress=progress, cancel=cancel)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_train(args: argparse.Namespace) -> int:
    from ssjdn.training.train import load_training_config

    config = load_training_config(args.config)
    if args.epochs is not None:
        config["epochs"] = args.epochs
    if args.time_budget_min is not None:
        config["time_budget_min"] = args.time_budget_min
    out = Path(args.out) if args.out else Path("runs") / config.get("name", "train")
    summary = train_until_terminated(config, args.data_root, out, resume=args.resume)
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun only rank 0 validates, saves and reports
    print(f"{summary['status']}: {summary['epochs_done']} epochs in this folder; best val mR "
          f"{summary['best_mR']:.2f} at epoch {summary['best_epoch']} -> "
          f"{summary['best_checkpoint']}")
    if summary["status"] == "cancelled":
        print(f"Stopped on request. Continue with: ssjdn train --config {args.config} "
              f"--data-root {args.data_root} --out {out} --resume")
        return 1
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    from ssjdn.training.evaluate import evaluate_checkpoint

    evaluate_checkpoint(args.checkpoint, args.data_root, args.split, dataset_name=args.dataset,
                        fmt=args.format, folds=args.folds, report=args.report,
                        device=args.device)
    return 0
