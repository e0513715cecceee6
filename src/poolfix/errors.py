"""Errors shown to users: one line, no traceback, each with its exit code.

Anything else that escapes is a bug in poolfix: the CLI reports it as an internal error (exit 1)
and ``--debug`` shows its traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_VERIFY_FAILED = 3
EXIT_STRICT = 4


class PoolfixError(Exception):
    """A user-facing error: the message is one line that says what is wrong and what to do."""

    exit_code = EXIT_BAD_INPUT


class InternalError(PoolfixError):
    """A poolfix bug caught by one of its own checks (a rewrite the checker refuses, a rule that
    claimed a node still in use): exit 1, and the message asks for a report."""

    exit_code = EXIT_INTERNAL


class InputError(PoolfixError):
    """Bad input or usage: a file that is not a model, a bad option value, an unwritable path."""

    exit_code = EXIT_BAD_INPUT


class VerificationError(PoolfixError):
    """The rewritten model does not match the original; nothing was written."""

    exit_code = EXIT_VERIFY_FAILED

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


class StrictError(PoolfixError):
    """--strict, and a pattern was left; nothing was written."""

    exit_code = EXIT_STRICT


EXIT_ENGINE = 5


class EngineError(PoolfixError):
    """--check-on-engine: the engine refused the rewritten model (and built the original), computed it
    worse than the original, or did not answer within the timeout; nothing was written."""

    exit_code = EXIT_ENGINE

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report
