"""Checks before any run of an experiment trains: everything scoring will need.

A run that cannot be scored should fail in seconds, not after its training time is
spent. Before the data loads: the Inception extractor's weights (``metrics.inception``,
``metrics.inception_weights``, ``metrics.download_weights``; offline without weights is
the one-line error scoring would raise) and room on disk for the sample sets. Once the
data is loaded (its held-out split is the reference, and a source that is missing fails
there): each model accepts the data spec and each pretrained source can work
(``runner.check_specs``).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from genbench.utils.errors import GenbenchError

if TYPE_CHECKING:
    from genbench.config import ExperimentConfig, RunConfig
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
