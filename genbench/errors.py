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
