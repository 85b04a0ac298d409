"""The training process the app starts: `python -m ssjdn.desktop.train_process ...`.

The same trainer as `ssjdn train`, SIGTERM handling included (Cancel stops at the next step and
keeps every finished epoch), plus what the app needs and a terminal user does not: one
machine-readable progress line per step ("@progress {json}") for a real progress bar.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

PROGRESS_PREFIX = "@progress "


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ssjdn.desktop.train_process",
                                     description="Train SSJDN for the desktop app (see `ssjdn train`).")
    parser.add_argument("--config", required=True, help="training config YAML")
    parser.add_argument("--data-root", required=True, help="the dataset folder")
    parser.add_argument("--out", required=True, help="output folder for checkpoints and logs")
    parser.add_argument("--epochs", type=int, help="override the config's epochs")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    from ssjdn.core.errors import UserError
    from ssjdn.training.commands import train_until_terminated
    from ssjdn.training.train import load_training_config

    def report(event: dict) -> None:
        if event.get("event") in ("step", "epoch", "done"):
            slim = {k: v for k, v in event.items() if k not in ("history", "row")}
            print(PROGRESS_PREFIX + json.dumps(slim, default=str), flush=True)

    try:
        config = load_training_config(args.config)
        if args.epochs:
            config["epochs"] = args.epochs
        summary = train_until_terminated(config, args.data_root, args.out, resume=args.resume,
                                         progress=report)
    except UserError as exc:
        print(f"error: {exc}", flush=True)
        return 2
    print(f"{summary['status']}: {summary['epochs_done']} epochs; last checkpoint {summary['last_checkpoint']}",
          flush=True)
    return 3 if summary["status"] == "cancelled" else 0


if __name__ == "__main__":
    sys.exit(main())
