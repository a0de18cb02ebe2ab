"""What every `factgpt` command line is made of: a parser that takes no abbreviated flags and
suggests the flag meant, one spelling of flags, and the Command that the study (factgpt.cli) and the
instruments (factgpt.lab.commands) each declare."""

from __future__ import annotations

import argparse
import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass


class Parser(argparse.ArgumentParser):
    """argparse with no abbreviated flags (`--dropout` must not stand for `--dropout_start_epoch`)
    and a suggestion for a mistyped flag (argparse suggests by itself only from Python 3.14)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        m = re.search(r"unrecognized arguments: (.*)", message)
        if m:
            flags = [o for o in self._option_string_actions if o.startswith("--")]
            for word in m.group(1).split():
                close = difflib.get_close_matches(word.split("=")[0], flags, n=1)
                if word.startswith("-") and close:
                    message += f" (did you mean {close[0]}?)"
                    break
        super().error(message)


def spelling(argv: list[str]) -> list[str]:
    """Flags in the one spelling the parsers know: `--data-dir` becomes `--data_dir`; values, and
    everything after a bare `--`, are left as they are."""
    out = []
    for i, word in enumerate(argv):
        if word == "--":
            return out + argv[i:]
        if word.startswith("--"):
            name, eq, value = word.partition("=")
            word = name.replace("-", "_").replace("__", "--", 1) + eq + value
        out.append(word)
    return out


@dataclass(frozen=True)
class Command:
    """One `factgpt` command: its help line, what its parser takes, and what it runs."""
    name: str
    help: str
    build: Callable[[argparse.ArgumentParser], None]  # adds the command's arguments to its parser
    run: Callable[[argparse.Namespace], int]  # returns the exit code
