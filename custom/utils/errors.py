"""Errors a user can fix (a bad file, option or checkpoint), and reporting them as one line.

MONAI's ``run`` evaluates ``"$@evaluator.run()"`` as a config expression and wraps whatever it
raises in "Failed to evaluate ConfigExpression" with the whole traceback, so the cause ends up
hundreds of log lines above the end. ``run_or_exit`` runs an engine and ends the process with the
message of a ``UserInputError`` as the last line (exit code 2), also when MONAI wrapped it (a
transform's "applying transform ..." ``RuntimeError``); any other exception keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


class UserInputError(ValueError):
    """A bad input, option or checkpoint that the user can fix; the message says what and how."""


def _user_message(err: Exception) -> str:
    """The error's message; for one re-raised from a DataLoader worker ("Caught ... Original Traceback"), its last line."""
    text = str(err)
    if "Original Traceback" not in text:
        return text
    last = text.strip().splitlines()[-1]
    return last.split(": ", 1)[1] if ": " in last else last


def user_error_cause(err: BaseException) -> UserInputError | None:
    """The ``UserInputError`` that ``err`` is or was raised from (``__cause__``/``__context__`` chain), if any."""
    seen: set[int] = set()
    node: BaseException | None = err
    while node is not None and id(node) not in seen:
        if isinstance(node, UserInputError):
            return node
        seen.add(id(node))
        node = node.__cause__ or node.__context__
    return None


def exit_with(message: str) -> None:
    """End the process with ``error: <message>`` as the last line on stderr and exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def run_or_exit(run: Callable[[], Any]) -> Any:
    """``run()``; a ``UserInputError`` (or an error raised from one) ends the process with ``error: <message>``
    on stderr and exit code 2."""
    try:
        return run()
    except Exception as err:
        cause = user_error_cause(err)
        if cause is None:
            raise
        exit_with(_user_message(cause))
