"""The `ssjdn` command line: one entry point, subcommands contributed by each layer."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssjdn",
        description="SSJDN Explorer command line: train and evaluate models, index georeferenced "
        "rasters, search them with words, match captions and export results.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Each layer adds its own subcommands; imports stay inside register() so `ssjdn --help`
    # is fast and a missing optional layer does not break the others.
    from ssjdn.core import commands as core_commands
    core_commands.register(sub)
    try:
        from ssjdn.training import commands as training_commands
    except ImportError:
        training_commands = None
    if training_commands is not None:
        training_commands.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ssjdn.core.offline import use_offline_hub
    use_offline_hub()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("Interrupted. Work done so far is saved; run the same command again to resume.",
              file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI turns errors into one readable line
        from ssjdn.core.errors import UserError
        if isinstance(exc, UserError):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
