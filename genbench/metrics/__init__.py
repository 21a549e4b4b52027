"""Scoring of sample sets with torch-fidelity: FID, KID, precision/recall and the
Inception Score on uint8 images against the held-out split, plus per-class scores,
class consistency and a copy audit, each with the protocol it was measured under (see
:mod:`genbench.metrics.protocol`).

Public entry points: :func:`score_set` and :func:`score_images` (images in memory: a
run's samples, a snapshot; the real-data row in :mod:`genbench.runs.real` too),
:func:`score_folder` (``genbench score``) and :func:`doctor` (``genbench doctor``).
Scoring takes its extractor as an argument and writes no run folder. Each metric or
audit is a registered unit (:mod:`genbench.metrics.units`); :func:`register_metric`
adds one.
"""

from genbench.metrics.doctor import doctor
from genbench.metrics.folder import score_folder
from genbench.metrics.protocol import mark_comparable, protocol_differences
from genbench.metrics.scoring import (
    ScoredSet,
    ScoringSetup,
    score_images,
    score_set,
    split_features,
)
from genbench.metrics.units import Column, MetricUnit, UnitInputs, UnitResult, register_metric

__all__ = [
    "Column",
    "MetricUnit",
    "ScoredSet",
    "ScoringSetup",
    "UnitInputs",
    "UnitResult",
    "doctor",
    "mark_comparable",
    "protocol_differences",
    "register_metric",
    "score_folder",
    "score_images",
    "score_set",
    "split_features",
]
