"""`ssjdn train` and `ssjdn eval`: the training layer's subcommands of the ssjdn CLI."""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

from ssjdn.training.benchmarks import benchmark, benchmark_names
from ssjdn.training.datasets import CAPTION_FORMATS


def register(subparsers) -> None:
    train = subparsers.add_parser(
        "train", help="train a model on a benchmark dataset",
        description=f"Train SSJDN on {_benchmark_titles()}. Checkpoints every epoch into "
        "--out; run the same command with --resume to continue. Under torchrun the same command trains on several GPUs.")
    train.add_argument("--config", required=True,
                       help="training config: a YAML file, or the name of one in training/configs "
                            "(e.g. ucm, ucm_default_cpu, tiny)")
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
    evaluate.add_argument("--dataset", default=None, choices=benchmark_names(),
                          help="which benchmark (default: from the checkpoint or the folder)")
    evaluate.add_argument("--format", default="auto", choices=["auto", *CAPTION_FORMATS],
                          help="caption file format to read (default: auto)")
    evaluate.add_argument("--folds", type=int, default=None,
                          help="average over k equal folds of the split (default: the "
                          "dataset's usual protocol)")
    evaluate.add_argument("--report", default=None, help="JSON report path")
    evaluate.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ...")
    evaluate.set_defaults(func=_run_eval)

    calibrate = subparsers.add_parser(
        "calibrate", help="fit a checkpoint's match likelihood (scores -> how often they match)",
        description="Score every (image, caption) pair of a labelled split the checkpoint did not "
        "train on, fit how often a pair at each score is of the same kind (Platt scaling), report "
        "the expected calibration error on held-out pairs, and write "
        "CHECKPOINT_STEM.calibration.json beside the checkpoint; the app and `ssjdn search` then "
        "show a match likelihood beside each score. Rerun it whenever the checkpoint or the way "
        "tiles are scored changes.",
        epilog="example: ssjdn calibrate --checkpoint resources/ssjdn-default.safetensors "
        "--data-root DATA/ucm_captions --split val --check-split test")
    calibrate.add_argument("--checkpoint", required=True, help="a .safetensors checkpoint")
    calibrate.add_argument("--data-root", required=True, help="the dataset folder")
    calibrate.add_argument("--split", default="val", help="split to fit on (default: val)")
    calibrate.add_argument("--check-split", default=None,
                           help="also measure the fit's calibration error on this split (e.g. test)")
    calibrate.add_argument("--dataset", default=None, choices=benchmark_names(),
                           help="which benchmark (default: from the checkpoint or the folder)")
    calibrate.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ...")
    calibrate.set_defaults(func=_run_calibrate)


def _benchmark_titles() -> str:
    """"UCM-Captions, Sydney-Captions, RSICD or RSITMD": the registered benchmarks."""
    titles = [benchmark(name).title for name in benchmark_names()]
    return ", ".join(titles[:-1]) + " or " + titles[-1] if len(titles) > 1 else titles[0]


def train_until_terminated(config, data_root, out, resume=False, progress=None) -> dict:
    """train() where SIGTERM (a scheduler's, or the app's Cancel) stops at the next step like
    a cancel: finished epochs stay on disk and --resume continues. Main thread only.
    (Ctrl-C stops at once with a KeyboardInterrupt, never between an epoch's files; the
    current epoch is redone on --resume.)"""
    from ssjdn.training.train import train

    cancel = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    try:
        return train(config, data_root, out, resume=resume, progress=progress, cancel=cancel)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_train(args: argparse.Namespace) -> int:
    from ssjdn.training.config import load_training_config

    config = load_training_config(args.config)
    if args.epochs is not None:
        config["epochs"] = args.epochs
    if args.time_budget_min is not None:
        config["time_budget_min"] = args.time_budget_min
    out = Path(args.out) if args.out else Path("runs") / config.get("name", "train")
    main_rank = os.environ.get("RANK", "0") == "0"   # under torchrun only rank 0 reports
    try:
        summary = train_until_terminated(config, args.data_root, out, resume=args.resume)
    except KeyboardInterrupt:
        # Ctrl-C: the finished epochs are on disk; say exactly how to go on (the generic
        # "run the same command again" would start over without --resume).
        if main_rank:
            print(_interrupted_message(args, out), file=sys.stderr)
        return 130
    if not main_rank:
        return 0
    print(summary_line(summary))
    if summary["status"] == "cancelled":
        print(f"Stopped on request. Continue with: {_train_command(args, out, resume=True)}")
        return 1
    return 0


def _train_command(args: argparse.Namespace, out: Path, resume: bool) -> str:
    """The `ssjdn train` command line that repeats this run's settings."""
    parts = ["ssjdn", "train", "--config", str(args.config), "--data-root", str(args.data_root),
             "--out", str(out)]
    if args.epochs is not None:
        parts += ["--epochs", str(args.epochs)]
    if args.time_budget_min is not None:
        parts += ["--time-budget-min", str(args.time_budget_min)]
    return shlex.join(parts + (["--resume"] if resume else []))


def _interrupted_message(args: argparse.Namespace, out: Path) -> str:
    from ssjdn.training.checkpoints import LAST_CHECKPOINT, STATE_FILE

    if (out / LAST_CHECKPOINT).is_file() and (out / STATE_FILE).is_file():
        return (f"Interrupted. The finished epochs are saved in {out}; continue with:\n"
                f"{_train_command(args, out, resume=True)}")
    return (f"Interrupted before the first epoch finished: no epoch was saved in {out}. "
            f"Start again with:\n{_train_command(args, out, resume=False)}")


def summary_line(summary: dict) -> str:
    """A run's result in one line (`ssjdn train` and the app's training process)."""
    head = f"{summary['status']}: {summary['epochs_done']} epochs in this folder"
    if summary["best_checkpoint"]:
        return (f"{head}; best val mR {summary['best_mR']:.2f} at epoch {summary['best_epoch']} "
                f"-> {summary['best_checkpoint']}")
    if summary["last_checkpoint"]:
        return f"{head}; no validation split, so no best epoch -> {summary['last_checkpoint']}"
    return f"{head}; no checkpoint written"


def _run_calibrate(args: argparse.Namespace) -> int:
    from ssjdn.training.calibrate import calibrate_checkpoint

    calibrate_checkpoint(args.checkpoint, args.data_root, split=args.split,
                         check_split=args.check_split, dataset_name=args.dataset, device=args.device)
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    from ssjdn.training.evaluate import evaluate_checkpoint

    try:
        evaluate_checkpoint(args.checkpoint, args.data_root, args.split,
                            dataset_name=args.dataset, fmt=args.format, folds=args.folds,
                            report=args.report, device=args.device)
    except KeyboardInterrupt:
        print("Interrupted; no report written.", file=sys.stderr)
        return 130
    return 0
