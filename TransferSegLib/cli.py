"""The ``transferseg`` command line.

Each subcommand lives in ``commands/<name>.py`` with ``add_parser(subparsers)``
and ``run(args) -> int``. Expected errors (``TransferSegError``) print their
message and exit non-zero; only unexpected ones show a traceback.
"""

import argparse
import importlib
import sys
from typing import List, Optional

from TransferSegLib import __version__
from TransferSegLib.errors import TransferSegError

# Subcommand modules in the order ``--help`` lists them; a module that is not
# present (an optional part) is skipped rather than breaking the whole CLI.
COMMAND_MODULES = (
    "models", "pretrain", "finetune", "predict", "evaluate", "experiment", "demo", "jobs",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transferseg",
        description="Fine-tune pretrained 3D segmentation models on a few annotated cases.",
    )
    parser.add_argument("--version", action="version", version=f"transferseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f".commands.{name}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(f"commands.{name}"):
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except TransferSegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
