"""Checks before any run of an experiment trains: everything scoring will need.

A run that cannot be scored should fail in seconds, not after its training time is
spent. Before the data loads: the Inception extractor's weights (``metrics.inception``,
``metrics.inception_weights``, ``metrics.download_weights``; offline without weights is
the one-line error scoring would raise) and room on disk for the sample sets. Once the
data is loaded (its held-out split is the reference, and a source that is missing fails
there): each model accepts the data spec and each pretrained source can work
(:func:`check_specs`).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from genbench.runs.plan import PlannedRun
from genbench.runs.pretrained import check_source
from genbench.utils.errors import ConfigError, GenbenchError, first_line

if TYPE_CHECKING:
    from genbench.config import ExperimentConfig, RunConfig
    from genbench.data import DataBundle
    from genbench.metrics.inception import ExtractorChoice

#: Bytes a PNG may add to an image's raw pixels (signature, chunks, deflate blocks), and a
#: sample set's manifest.json per image: generous, so a full disk is the only failure.
PNG_OVERHEAD = 1024


def resolve_extractor(experiment: ExperimentConfig) -> ExtractorChoice | None:
    """The Inception extractor the experiment's scoring will use (None: metrics off).
    Raises the one-line error scoring would raise when no weights are available."""
    if not experiment.metrics.enabled:
        return None
    from genbench.metrics import scoring

    return scoring.extractor_for(experiment.metrics)


def sample_bytes(config: RunConfig) -> int:
    """An upper bound of one run's sample set on disk (uint8 PNGs and their manifest)."""
    r, c = config.data.resolution, config.data.channels or 3
    return config.sample.n * (c * r * r + PNG_OVERHEAD)


def check_disk(results_dir: Path, configs: Sequence[RunConfig]) -> None:
    """Room in ``results_dir`` for every sample set these runs will write."""
    need = sum(sample_bytes(c) for c in configs)
    folder = results_dir
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the results folder may not exist yet: its nearest parent
    free = shutil.disk_usage(folder).free
    if free < need:
        raise GenbenchError(
            f"not enough disk space in {results_dir} for the sample sets: "
            f"{need / 1e6:.1f} MB needed, {free / 1e6:.1f} MB free"
        )


def preflight(
    experiment: ExperimentConfig,
    configs: Sequence[RunConfig],
    results_dir: Path,
    *,
    extractor: ExtractorChoice | None = None,
) -> ExtractorChoice | None:
    """What can be checked before the data loads (for the runs with these configs);
    returns the extractor scoring will use (``extractor``, when given and metrics are on)."""
    choice = None
    if experiment.metrics.enabled:
        choice = extractor or resolve_extractor(experiment)
    check_disk(results_dir, configs)
    return choice


def check_specs(runs: list[PlannedRun], bundle: DataBundle) -> None:
    """Once the data is loaded: raise ConfigError if a planned model rejects the data spec
    (``Generator.check_spec``) or its pretrained source cannot work."""
    spec = bundle.spec
    for r in runs:
        if r.generator_cls is None:
            continue
        if r.config.pretrained is not None:
            check_source(r.generator_cls, r.config)
        try:
            model_cfg = r.generator_cls.Config.model_validate(r.config.generator)
            r.generator_cls.check_spec(spec, model_cfg)
        except ValueError as exc:
            raise ConfigError(
                f"{r.config.model} cannot train on this data (data.resolution = "
                f"{spec.resolution}, {spec.channels} channel(s), condition '{spec.condition}'): "
                f"{first_line(exc)}"
            ) from None
        except Exception:  # a plugin's own bug fails only its own run, in execute_run
            continue
