"""genbench: train image generators of different families on identical data and
compare them under one measured protocol.

The plugin contract (:class:`Generator`, :class:`GeneratorConfig`, :class:`DataSpec`)
and the Python API (:mod:`genbench.api`) are importable from here.
"""

from genbench.api import show_config
from genbench.contract import DataSpec, Generator, GeneratorConfig, SampleBatch

__version__ = "0.1.0"

__all__ = [
    "DataSpec",
    "Generator",
    "GeneratorConfig",
    "SampleBatch",
    "__version__",
    "show_config",
]
