"""genbench: train image generators of different families on identical data and
compare them under one measured protocol.

The plugin contract (:class:`Generator`, :class:`GeneratorConfig`, :class:`DataSpec`) and
the Python API (:mod:`genbench.api`) are importable from here, loaded on first use: importing
one part of genbench (``genbench.config``, say) imports neither torch nor the whole API.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from genbench._version import __version__

if TYPE_CHECKING:
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

_API = ("Project", "build_report", "init_project", "load_experiments", "load_results")
_HOME = {
    **dict.fromkeys((*_API, "plan", "run", "score", "show_config"), "genbench.api"),
    **dict.fromkeys(
        ("DataSpec", "Generator", "GeneratorConfig", "SampleBatch"), "genbench.contract"
    ),
}
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


def __getattr__(name: str) -> Any:  # PEP 562: a public name, imported when first used
    if name not in _HOME:
        raise AttributeError(f"module 'genbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value
