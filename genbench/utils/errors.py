"""Errors that mean "the user asked for something wrong": the CLI prints them
as one line and exits 2, never with a traceback."""

from __future__ import annotations


class GenbenchError(Exception):
    """A user-facing error with a one-line message."""

    exit_code = 2


class ConfigError(GenbenchError):
    pass


class DataError(GenbenchError):
    pass


class PluginError(GenbenchError):
    pass


class CheckpointError(GenbenchError):
    pass


class TrainingDiverged(GenbenchError):
    """A loss became NaN or infinite; the run stops instead of writing garbage."""

    exit_code = 1


class MissingExtra(ConfigError):
    """An optional dependency (a ``genbench[extra]``) is not installed; the message names it."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message ("" when it has none)."""
    return (str(exc).strip().splitlines() or [""])[0]


def one_line(exc: BaseException) -> str:
    """An error for a one-line report: a GenbenchError's own message, anything
    else prefixed with its type (it is likely a bug, and the type says where)."""
    first = first_line(exc)
    if isinstance(exc, GenbenchError):
        return first or type(exc).__name__
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
