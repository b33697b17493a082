"""The ``roidetect`` command.

One module per subcommand in this package; each defines ``register(subparsers)`` that adds
its parser and sets ``handler``. Command modules import heavy libraries (torch, MONAI) only
inside their handler so that ``roidetect --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from roidetect import __version__
from roidetect.errors import UserError

COMMANDS = ("demo", "info", "synth", "dataset", "train", "calibrate", "ensemble", "predict", "suggest", "evaluate",
            "report")


def _usage_error(prog: str, message: str) -> str:
    """The one line a usage mistake prints, pointing at the command's ``--help``."""
    return f"{prog}: error: {message} (see '{prog} --help')\n"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, _usage_error(self.prog, message))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="roidetect",
        description="Find cracks, pores and delamination in 3D scans of battery electrodes "
                    "and plan where to mill them.",
    )
    parser.add_argument("--version", action="version", version=f"roidetect {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        module = importlib.import_module(f"roidetect.cli.{name}")
        module.register(subparsers)
    return parser


def _unrecognized(args: argparse.Namespace, extras: Sequence[str]) -> str:
    """The error for arguments no parser took, with a hint where ``--set`` was given to a command
    that takes its settings as plain ``KEY=VALUE`` (only ``synth`` has ``--set``)."""
    message = f"unrecognized arguments: {' '.join(extras)}"
    if "--set" in extras and hasattr(args, "overrides"):
        message += f"; 'roidetect {args.command}' takes settings as KEY=VALUE, without --set"
    return message


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 out of memory, 2 user error,
    130 interrupted, 141 when the reader of the output went away, as ``roidetect evaluate ... | head``)."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        command = f"roidetect {args.command}" if hasattr(args, "command") else "roidetect"
        sys.stderr.write(_usage_error(command, _unrecognized(args, extras)))
        return 2
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(message)s")
    try:
        return int(args.handler(args) or 0)
    except UserError as exc:
        print(f"roidetect {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError as exc:
        print(f"roidetect {args.command}: error: out of memory ({str(exc).strip() or 'MemoryError'}); the output was "
              "not written. Give it a smaller input or smaller blocks (see the command's --help), or run it where "
              "more memory is free", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Zarr's writes run on an asyncio loop in another thread; the tasks Ctrl-C cut short would
        # log tracebacks ("Task exception was never retrieved") as the interpreter exits.
        logging.getLogger("asyncio").disabled = True
        print(f"roidetect {args.command}: interrupted; the output was not written", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader closed the pipe: stop quietly, and keep Python's exit-time flush of
        # stdout from raising again (https://docs.python.org/3/library/signal.html#note-on-sigpipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
