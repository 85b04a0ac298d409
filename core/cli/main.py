"""The `ssjdn` command line: one entry point; core's subcommands plus those other layers declare
as entry points (see plugins.py)."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssjdn",
        description="SSJDN Explorer command line: train and evaluate models, index georeferenced "
        "rasters, search them with words, match captions and export results.",
    )
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (it is always written to a log)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Imports stay inside build_parser so that `ssjdn --help` is fast. Other layers' commands
    # come through entry points (plugins.py): core never imports training or desktop.
    from ssjdn.core.cli import commands as core_commands
    from ssjdn.core.cli.plugins import register_plugins
    core_commands.register(sub)
    register_plugins(sub)
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
        return _report(exc, args, argv)


def _report(exc: Exception, args, argv) -> int:
    """One line for the user: a UserError's text (exit 2), or what failed and the log file that
    holds the traceback (exit 1). --debug also prints the traceback."""
    import traceback

    from ssjdn.core import errors
    if args.debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    command = " ".join(sys.argv[:1] + list(sys.argv[1:] if argv is None else argv))
    message, log = errors.message_for(exc, f"command: {command}")
    if log is None:
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(f"error: {message}. Run with --debug to see it here.", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
