"""The run folder's names, where genbench/train/ and report/plots.py still import them
from (issue 21 is changing those files). The run folder lives in
:mod:`genbench.runs.folder`; new code imports it from there."""

from genbench.runs.folder import (
    LOG_BOOKKEEPING,
    SNAPSHOTS,
    TRAIN_LOG,
    last_logged,
    put_snapshot,
    truncate_log,
)

__all__ = [
    "LOG_BOOKKEEPING",
    "SNAPSHOTS",
    "TRAIN_LOG",
    "last_logged",
    "put_snapshot",
    "truncate_log",
]
