"""genbench: train image generators of different families on identical data and
compare them under one measured protocol.

The plugin contract (:class:`Generator`, :class:`GeneratorConfig`, :class:`DataSpec`)
and the Python API (:mod:`genbench.api`: :func:`run`, :func:`load_results`,
:func:`score`, :func:`build_report`, ...) are importable from here.
"""

from genbench._version import __version__
from genbench.api import (
    Project,
    build_report,
    init_project,
    load_experiments,
    load_results,
    plan,
    run,
    score,
    show_config,
)
from genbench.contract import DataSpec, Generator, GeneratorConfig, SampleBatch

__all__ = [
    "DataSpec",
    "Generator",
    "GeneratorConfig",
    "Project",
    "SampleBatch",
    "__version__",
    "build_report",
    "init_project",
    "load_experiments",
    "load_results",
    "plan",
    "run",
    "score",
    "show_config",
]
