"""The `edgeport` command: one entry point, a table of subcommands, one-line errors.

Each subcommand lives in its stage's ``cli`` module as a pair ``<name>_arguments(parser)`` /
``<name>_main(args) -> int``; those modules are light (TensorFlow is imported only when a command runs), so
``edgeport --help`` is instant.
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
import traceback
from typing import List, Optional

from edgeport_runtime.errors import EdgeportError

from . import __version__
from .core import tfenv

# name -> (module, one-line help). Only commands that work are registered.
COMMANDS = {
    "train": ("edgeport.train.cli", "train a zoo model on a dataset (CPU), write model.keras + train.json"),
    "models": ("edgeport.train.cli", "list the model zoo: input shape, parameters, MACs"),
    "datasets": ("edgeport.train.cli", "list the built-in datasets"),
    "convert": ("edgeport.convert.cli", "quantize/prune/export a Keras model to a TFLite/ONNX bundle"),
    "inspect": ("edgeport.check.quality_cli", "show ops, dtypes, parameters and size of a .tflite or .onnx file"),
    "parity": ("edgeport.check.quality_cli", "check every artifact against the Keras model (exit 1 on failure)"),
    "bench": ("edgeport.check.quality_cli", "measure size, cold start, latency, throughput, RSS per artifact"),
    "report": ("edgeport.check.quality_cli", "write report.md/json/png: one row per artifact"),
    "devices": ("edgeport.devices.cli", "list device profiles and what each can run"),
    "bundle": ("edgeport.devices.cli", "write an offline device archive: models, manifest, runtime, wheels"),
    "deploy": ("edgeport.devices.cli", "install a bundle on a device over SSH, check it, switch atomically"),
    "rollback": ("edgeport.devices.cli", "switch a device back to its previous release"),
    "fleet": ("edgeport.devices.cli", "deploy to many devices with Ansible: canary, rolling batches, rollback"),
}

EXIT_OK, EXIT_GATE, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_SIGINT, EXIT_SIGTERM = 130, 143  # 128 + signal number, as a shell reports a process killed by it


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every ``finally`` and staged directory cleans up on the way out."""


def _on_sigterm(signum, frame):
    raise Terminated()


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with a one-line message (its default prints usage too)."""

    def error(self, message):  # noqa: D401 - argparse API
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every registered subcommand."""
    parser = _Parser(prog="edgeport", description="edgeport: from CPU training to int8 TFLite/ONNX on "
                     "Raspberry Pi-class CPUs. Exit codes: 0 ok, 1 a quality gate failed, 2 bad usage or input, "
                     "3 internal error (a bug: re-run with --debug and report it), 130/143 interrupted by "
                     "Ctrl-C/SIGTERM.")
    parser.add_argument("--version", action="version", version=f"edgeport {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's own log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        getattr(importlib.import_module(module), f"{name}_arguments")(p)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the CLI with ``argv`` (default: sys.argv[1:]) and return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    tfenv.set_verbose(args.verbose)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        old_term = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # main() called from a thread other than the main one: signals stay as they are
        old_term = None
    try:
        return int(getattr(module, f"{args.command}_main")(args) or 0)
    except EdgeportError as e:
        if args.debug:
            traceback.print_exc()
        print(f"edgeport {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        what = "SIGTERM" if isinstance(e, Terminated) else "interrupted"
        print(f"edgeport {args.command}: {what}; nothing half-written was left behind.", file=sys.stderr)
        return EXIT_SIGTERM if isinstance(e, Terminated) else EXIT_SIGINT
    except Exception as e:  # an edgeport bug or an unexpected library failure: still one line by default
        if args.debug:
            traceback.print_exc()
        print(f"edgeport {args.command}: internal error: {type(e).__name__}: {e} "
              "(re-run with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL  # never 1 (a failed gate) nor 2 (the user's input was wrong)
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


if __name__ == "__main__":
    sys.exit(main())
