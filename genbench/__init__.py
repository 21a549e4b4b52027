"""genbench: train image generators of different families on identical data and
compare them under one measured protocol."""

from genbench.contract import DataSpec, Generator, GeneratorConfig, SampleBatch

__version__ = "0.1.0"

__all__ = ["DataSpec", "Generator", "GeneratorConfig", "SampleBatch", "__version__"]
