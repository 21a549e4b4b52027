"""Typed experiment and run configs, loaded from TOML and ``--set`` overrides.

Layers, later ones winning: a generator's ``Config`` defaults (the one source of
defaults), then the experiment's ``[model.<name>]`` table (after the tables it
``extends``), then ``--set``. Unknown or mistyped keys are errors that name the
key and where it came from. Experiments are found by name on a search path
(``./configs``, ``$GENBENCH_CONFIG_PATH``, the packaged ones) or given as a file.

Here: the config models and the functions that load them. The rest lives in
:mod:`~genbench.config.files` (search path, TOML), :mod:`~genbench.config.overrides`
(``--set``, ``extends``) and :mod:`~genbench.config.describe` (``genbench config show``).
"""

from genbench.config.files import find_experiment, find_experiments, read_run_config
from genbench.config.overrides import build_run_config, load_experiment, resolve_model_config
from genbench.config.schema import (
    DataConfig,
    ExperimentConfig,
    MetricsConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
)

__all__ = [
    "DataConfig",
    "ExperimentConfig",
    "MetricsConfig",
    "RunConfig",
    "SampleConfig",
    "TrainConfig",
    "build_run_config",
    "find_experiment",
    "find_experiments",
    "load_experiment",
    "read_run_config",
    "resolve_model_config",
]
