"""The CLI reference: `moderate --help`, and each subcommand's, as the parser prints it."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager

from moderation_client.cli import build_parser

__all__ = ["reference"]

# argparse wraps to the terminal's width: fixed, so the page does not depend on who generated it.
_COLUMNS = "100"


@contextmanager
def _columns() -> Iterator[None]:
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = _COLUMNS
    try:
        yield
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:  # argparse keeps subcommands nowhere public
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from _parsers(sub)


def reference() -> str:
    sections = []
    with _columns():
        for parser in _parsers(build_parser()):
            sections.append(f"### `{parser.prog}`\n\n```text\n{parser.format_help().rstrip()}\n```")
    return "\n\n".join(sections)
