"""The one exception type that means "the user asked for something we cannot do".

Everything else is a bug and may show a traceback; a `UserError` is printed as one line
and ends the process with exit status 2 (see `cli.py`).
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in the command line, a config file or the data, with the fix in the message."""


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) stopped the run; the message says where, what was kept and how to
    resume. The CLI prints it as one line and exits with `status`: 130 after SIGINT, 143 after
    SIGTERM, as a shell reports a process those signals ended."""

    def __init__(self, message: str, status: int = 130):
        super().__init__(message)
        self.status = status


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch scheduler, `docker stop`, `kill`) outside the training steps: stops the
    run as Ctrl-C does there."""

    status = 143


def closest(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    return difflib.get_close_matches(str(word), [str(c) for c in choices], n=n, cutoff=0.6)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close match exists, else ''."""
    matches = closest(word, choices)
    if not matches:
        return ""
    return " (did you mean " + " or ".join(f"'{m}'" for m in matches) + "?)"


def unknown_choice(what: str, value: str, choices: Iterable[str], key: str | None = None, hint: str = "") -> UserError:
    """ "unknown WHAT 'value' [in key 'KEY'] (did you mean ...?); choose one of: ...[HINT]"."""
    choices = sorted(str(c) for c in choices)
    where = f" in key '{key}'" if key else ""
    return UserError(
        f"unknown {what} '{value}'{where}{did_you_mean(str(value), choices)}; "
        f"choose one of: {', '.join(choices) or '(none found)'}{hint}"
    )


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message (its type's name if it has none):
    library errors often run on for paragraphs, and a UserError is one line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


class CommandParser(argparse.ArgumentParser):
    """argparse for the subcommands, with a usage mistake reported like any other: one line, exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see {self.prog} --help)")
