"""Every command-line option explains itself: help text, its default, and an example per subcommand."""

import argparse

import pytest

from TransferSegLib.cli import HelpFormatter, build_parser, iter_parsers, main

PARSERS = list(iter_parsers(build_parser()))


def _name(item):
    return " ".join(item[0]) or "transferseg"


@pytest.mark.parametrize("path, parser", PARSERS, ids=[_name(p) for p in PARSERS])
def test_every_option_has_help_and_shows_its_default(path, parser):
    formatter = HelpFormatter(prog=parser.prog)
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        where = f"'transferseg {' '.join(path)}' {'/'.join(action.option_strings) or action.dest}"
        assert action.help and action.help is not argparse.SUPPRESS and len(action.help) > 8, f"{where} has no help"
        quiet = action.default is None or action.default is False or action.default in ("", []) \
            or action.default is argparse.SUPPRESS
        if action.option_strings and not quiet:
            assert "%(default)" in formatter._get_help_string(action), f"{where} hides its default"


@pytest.mark.parametrize("path, parser", PARSERS[1:], ids=[_name(p) for p in PARSERS[1:]])
def test_every_subcommand_has_an_example_in_its_epilog(path, parser):
    epilog = parser.epilog or ""
    assert "example" in epilog, f"'transferseg {' '.join(path)}' has no example"
    assert f"transferseg {' '.join(path)}" in epilog, f"the example of '{' '.join(path)}' does not run it"
    assert parser.formatter_class is HelpFormatter


def test_help_shows_defaults_and_keeps_the_example_lines(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    assert "(default: 2.0)" in text and "\n  transferseg evaluate " in text
