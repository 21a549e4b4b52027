"""Typed experiment and run configs, loaded from TOML and ``--set`` overrides.

Layers, later ones winning: a generator's ``Config`` defaults (the one source of
defaults), then the experiment's ``[model.<name>]`` table (after the tables it
``extends``), then ``--set``. Unknown or mistyped keys are errors that name the
key and where it came from. Experiments are found by name on a search path
(``./configs``, ``$GENBENCH_CONFIG_PATH``, the packaged ones) or given as a file.

The modules: :mod:`~genbench.config.schema` (the pydantic models),
:mod:`~genbench.config.files` (search path, TOML reading), :mod:`~genbench.config.overrides`
(``--set``, ``extends``, the resolved run config) and :mod:`~genbench.config.describe`
(``genbench config show``). The names used outside the package are importable from here.
"""

from genbench.config.describe import config_fields, render_config_fields, toml_value
from genbench.config.files import (
    PACKAGED_CONFIGS,
    find_experiment,
    find_experiments,
    read_run_config,
    read_toml,
    run_config_toml,
)
from genbench.config.overrides import (
    build_run_config,
    check_model_tables,
    load_experiment,
    parse_value,
    resolve_model_config,
)
from genbench.config.schema import (
    SECTIONS,
    DataConfig,
    ExperimentConfig,
    MetricsConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
)

__all__ = [
    "PACKAGED_CONFIGS",
    "SECTIONS",
    "DataConfig",
    "ExperimentConfig",
    "MetricsConfig",
    "RunConfig",
    "SampleConfig",
    "TrainConfig",
    "build_run_config",
    "check_model_tables",
    "config_fields",
    "find_experiment",
    "find_experiments",
    "load_experiment",
    "parse_value",
    "read_run_config",
    "read_toml",
    "render_config_fields",
    "resolve_model_config",
    "run_config_toml",
    "toml_value",
]
