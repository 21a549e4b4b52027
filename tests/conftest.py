from __future__ import annotations

import os

# rich sizes its consoles from COLUMNS when they are made (on import of genbench.cli);
# pin it so CLI output in tests does not depend on the terminal that started pytest
os.environ["COLUMNS"] = "80"

import pytest
import torch

from genbench.config import (
    DataConfig,
    ExperimentConfig,
    MetricsConfig,
    SampleConfig,
    TrainConfig,
)

#: The copy audit's learned descriptor at test size: a few steps (the audit's plumbing,
#: not its detection power, which the slow Fashion-MNIST tests measure at full size).
FAST_AUDIT = {"copy_descriptor_steps": 40}


@pytest.fixture(autouse=True)
def _small_threads():
    torch.set_num_threads(2)


def tiny_experiment(
    models: list[str], *, resolution: int = 16, kimg: float = 0.128, n: int = 16, **data
) -> ExperimentConfig:
    return ExperimentConfig(
        name="tiny",
        models=models,
        seeds=[0],
        data=DataConfig(source="digits", resolution=resolution, **data),
        train=TrainConfig(kimg=kimg, batch_size=16, log_every=2, eval_images=64),
        sample=SampleConfig(n=n, batch_size=8),
        metrics=MetricsConfig(enabled=False),
    )
