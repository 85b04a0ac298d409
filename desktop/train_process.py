"""The training process the app starts: `python -m ssjdn.desktop.train_process ...`.

The same trainer as `ssjdn train`, SIGTERM handling included (Cancel stops at the next step and
keeps every finished epoch), plus what the app needs and a terminal user does not: one
machine-readable progress line per step ("@progress {json}") for a real progress bar.
Any failure reaches the app as one "error: ..." line: a user-fixable one (UserError) with
what to do (exit 2), anything else with the name of the file that keeps its trace (exit 1;
train_error.log in the run folder, through core's one error-log writer).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PROGRESS_PREFIX = "@progress "
TRACE_FILE = "train_error.log"


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
    from ssjdn.core.offline import use_offline_hub
    use_offline_hub()
    args = build_parser().parse_args(argv)
    from ssjdn.core.errors import message_for
    from ssjdn.training.commands import summary_line, train_until_terminated
    from ssjdn.training.config import load_training_config

    def report(event: dict) -> None:
        if event.get("event") in ("step", "epoch", "done"):
            slim = {k: v for k, v in event.items() if k not in ("history", "row")}
            if event.get("event") == "epoch":   # the epoch's mean loss and val mR, for the chart
                row = event.get("row") or {}
                slim.update(loss=row.get("loss"), val_mR=row.get("mR"))
            print(PROGRESS_PREFIX + json.dumps(slim, default=str), flush=True)

    try:
        config = load_training_config(args.config)
        if args.epochs is not None:
            config["epochs"] = args.epochs
        summary = train_until_terminated(config, args.data_root, args.out, resume=args.resume,
                                         progress=report)
    except Exception as exc:  # noqa: BLE001 - the app shows one line; a trace goes to a file
        # The run's own folder keeps the trace, so it travels with the run it belongs to.
        message, log = message_for(exc, f"training process: {sys.argv}", Path(args.out), TRACE_FILE)
        print(f"error: {_one_line(message)}", flush=True)
        return 2 if log is None else 1
    print(summary_line(summary), flush=True)
    return 3 if summary["status"] == "cancelled" else 0


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
