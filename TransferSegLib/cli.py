"""The ``transferseg`` command line.

Each subcommand lives in ``commands/<name>.py`` with ``add_parser(subparsers)``
and ``run(args) -> int``; its parser carries help text for every option and an
example in its epilog (``Testing/test_cli_help.py`` walks them all). Expected
errors (``TransferSegError``) print their message and exit non-zero; only
unexpected ones show a traceback. Python warnings and log records reach the
terminal as one ``warning: ...`` line each.
"""

import argparse
import importlib
import logging
import sys
import warnings
from typing import Iterator, List, Optional, Tuple

from TransferSegLib import __version__
from TransferSegLib.errors import TransferSegError

# Subcommand modules in the order ``--help`` lists them; a module that is not
# present (an optional part) is skipped rather than breaking the whole CLI.
COMMAND_MODULES = (
    "models", "pretrain", "finetune", "predict", "evaluate", "experiment", "demo", "jobs", "cache",
)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's example lines as written and shows each option's default.

    Like ``ArgumentDefaultsHelpFormatter``, but a default that says nothing (None,
    False, an empty list or string) is left out instead of printed as "None": those
    options say in their help what happens without them.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        quiet = action.default is None or action.default is False or action.default in ("", [])
        if quiet or isinstance(action, argparse._StoreConstAction):
            return text
        return f"{text} (default: %(default)s)"


def iter_parsers(parser: argparse.ArgumentParser, path: Tuple[str, ...] = ()
                 ) -> Iterator[Tuple[Tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser under ``parser`` with the words that reach it (``("models", "show")``), itself first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen = set()
            for name, child in action.choices.items():
                if id(child) not in seen:
                    seen.add(id(child))
                    yield from iter_parsers(child, path + (name,))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transferseg",
        description="Fine-tune pretrained 3D segmentation models on a few annotated cases.",
        epilog="example:\n  transferseg demo\n\n'transferseg COMMAND --help' shows a command's options and an example.",
    )
    parser.add_argument("--version", action="version", version=f"transferseg {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f".commands.{name}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(f"commands.{name}"):
                continue
            raise
        module.add_parser(sub)
    for _path, each in iter_parsers(parser):
        each.formatter_class = HelpFormatter
        for action in each._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:  # a subcommand's --help opens with its one-line help
                    child = action.choices[choice.dest]
                    if choice.help and not child.description:
                        child.description = choice.help[:1].upper() + choice.help[1:] + "."
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warning: <message>`` on stderr: no source path, no code line, no category name."""
    text = " ".join(str(message).split())
    print(f"warning: {text}", file=file or sys.stderr, flush=True)


class _LevelPrefix(logging.Formatter):
    """'warning: <message>' (the level in lower case, as the CLI's own lines read)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {' '.join(record.getMessage().split())}"


def _terminal_logging() -> Optional[logging.Handler]:
    """Log records of WARNING and above on stderr in the CLI's one-line form, unless logging is configured."""
    root = logging.getLogger()
    if root.handlers:
        return None
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(_LevelPrefix())
    root.addHandler(handler)
    return handler


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    previous = warnings.showwarning
    warnings.showwarning = _one_line_warning
    handler = _terminal_logging()
    try:
        return int(args.func(args) or 0)
    except TransferSegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = previous
        if handler is not None:
            logging.getLogger().removeHandler(handler)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
