"""The registry of metrics and audits (units): name, columns, feature space and the
function that computes them.

A unit is one function over what a scoring call computes once (its inputs:
:class:`genbench.metrics.units.UnitInputs`). It is registered by name with the table
columns it fills and their direction. Config validation (``metrics.names``), the
report's tables and its plots read this registry, so a new metric is one
:func:`register_metric` call, not edits in five files.

This module imports no torch code and nothing of genbench but the naming rules: config
validation and the report read it cheaply, and the config can import it without an
import cycle (hence a unit's function is typed on ``Any``, not on the inputs class,
whose fields are config types). The built-ins' functions are named as
``"module:function"`` and imported when run.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from genbench.utils.naming import check_safe_name

#: Feature spaces a unit may read. Inception is the protocol's; DINOv2 ViT-L/14 is the
#: second space Stein et al. (2023) found closer to human judgement.
SPACES = ("inception", "dinov2")


@dataclass(frozen=True)
class Column:
    """One score a unit writes into metrics.json's ``scores`` and the report's tables.

    ``better`` is "lower", "higher" or None (not ranked). ``table`` False: averaged over
    seeds and kept in results.csv but not shown as a column. ``guidance``: plotted
    against the classifier-free guidance scale.
    """

    key: str
    label: str
    better: str | None
    fmt: str = "g"
    table: bool = True
    guidance: bool = False


@dataclass
class UnitResult:
    """A unit's output: scores (None with a reason in ``unavailable`` when it cannot
    be computed), warnings, settings as applied (they join the protocol),
    metrics.json blocks of its own (``copies``, ``bootstrap``, ...) and files for
    whoever keeps them (``copies.json``, ``bootstrap.json``: a dict written as JSON;
    ``copies.png``: a uint8 C x H x W image written as PNG). A unit writes nothing."""

    scores: dict[str, Any] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    used: dict[str, Any] = field(default_factory=dict)
    blocks: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)

    def merge(self, other: UnitResult) -> None:
        self.scores.update(other.scores)
        self.unavailable.update(other.unavailable)
        self.warnings.extend(other.warnings)
        self.used.update(other.used)
        self.blocks.update(other.blocks)
        self.files.update(other.files)


@dataclass(frozen=True)
class MetricUnit:
    """A metric or audit: ``fn(UnitInputs) -> UnitResult``, registered by ``name``.

    ``space``: the feature space it reads (None: pixels or labels only); its columns are
    unavailable, with the space's reason, where that space is. ``switch``: the
    ``metrics`` config field that turns it on (a bool, or a count where 0 is off)
    instead of being listed in ``metrics.names``. ``snapshot``: cheap enough to score
    during training (``metrics.snapshot_names``). ``progress``: a phase label shown while
    it runs (slow units). Units run, and their columns appear
    in the tables, in registration order.
    """

    name: str
    fn: Callable[[Any], UnitResult] | str  # Any: a UnitInputs (see the module docstring)
    columns: tuple[Column, ...] = ()
    space: str | None = None
    switch: str | None = None
    snapshot: bool = False
    description: str = ""
    progress: str = ""  # shown as a progress phase while it runs (the slow ones)

    def function(self) -> Callable[[Any], UnitResult]:
        """The unit's function (a ``"module:function"`` name imported now)."""
        fn = self.fn
        if isinstance(fn, str):
            module, _, attr = fn.partition(":")
            fn = getattr(importlib.import_module(module), attr)
        return fn

    def run(self, inputs: Any) -> UnitResult:
        return self.function()(inputs)


_UNITS: dict[str, MetricUnit] = {}


def register_metric(unit: MetricUnit) -> MetricUnit:
    """Add a unit. Names are path-safe and unique, and so are the columns of all units:
    a clash is an error naming both owners."""
    check_safe_name(unit.name, what="metric name")
    if unit.name in _UNITS:
        raise ValueError(f"metric {unit.name!r} is registered twice")
    if unit.space is not None and unit.space not in SPACES:
        raise ValueError(f"metric {unit.name!r}: unknown feature space {unit.space!r}")
    owners = {c.key: u.name for u in _UNITS.values() for c in u.columns}
    for c in unit.columns:
        if c.key in owners:
            raise ValueError(
                f"metric {unit.name!r}: column {c.key!r} is already written by {owners[c.key]!r}"
            )
        if c.better not in ("lower", "higher", None):
            raise ValueError(f"metric {unit.name!r}: column {c.key!r} better = {c.better!r}")
    _UNITS[unit.name] = unit
    return unit


def metric_units() -> tuple[MetricUnit, ...]:
    """Every registered unit, in registration order."""
    return tuple(_UNITS.values())


def unit(name: str) -> MetricUnit:
    return _UNITS[name]


def nameable() -> tuple[str, ...]:
    """Units chosen by ``metrics.names`` (the others have a switch of their own)."""
    return tuple(u.name for u in _UNITS.values() if u.switch is None)


def snapshot_nameable() -> tuple[str, ...]:
    return tuple(u.name for u in _UNITS.values() if u.switch is None and u.snapshot)


class MetricChoice(Protocol):
    """What :func:`selected` reads of a metrics config (a :class:`MetricsConfig`)."""

    names: list[str]


def selected(cfg: MetricChoice) -> tuple[MetricUnit, ...]:
    """The units a metrics config turns on, in registration order."""
    names = set(cfg.names)
    return tuple(
        u
        for u in _UNITS.values()
        if (u.name in names if u.switch is None else bool(getattr(cfg, u.switch)))
    )


def columns() -> tuple[Column, ...]:
    """Every unit's columns, in registration order."""
    return tuple(c for u in _UNITS.values() for c in u.columns)


# -- the built-ins ----------------------------------------------------------------------
for _u in (
    MetricUnit(
        "fid",
        "genbench.metrics.fid:fid_unit",
        (Column("fid", "FID", "lower", guidance=True),),
        space="inception",
        snapshot=True,
        description="Fréchet Inception distance to the reference (torch-fidelity)",
    ),
    MetricUnit(
        "kid",
        "genbench.metrics.kid:kid_unit",
        (Column("kid", "KID", "lower", guidance=True),),
        space="inception",
        snapshot=True,
        description="kernel Inception distance, unbiased at any N (torch-fidelity)",
    ),
    MetricUnit(
        "isc",
        "genbench.metrics.isc:isc_unit",
        (Column("isc", "IS", "higher"),),
        space="inception",
        snapshot=True,
        description="Inception Score (needs the classifier layer of the official weights)",
    ),
    MetricUnit(
        "prc",
        "genbench.metrics.prc:prc_unit",
        (
            Column("precision", "precision", "higher"),
            Column("recall", "recall", "higher"),
            Column("f_score", "F-score", "higher", table=False),
        ),
        space="inception",
        snapshot=True,
        description="precision and recall of k-NN manifolds in Inception space",
    ),
    MetricUnit(
        "fd_dinov2",
        "genbench.metrics.fid:fd_dinov2_unit",
        (Column("fd_dinov2", "FD (DINOv2)", "lower"),),
        space="dinov2",
        snapshot=True,
        description="Fréchet distance on DINOv2 ViT-L/14 features (downloads its weights)",
    ),
    MetricUnit(
        "kid_dinov2",
        "genbench.metrics.kid:kid_dinov2_unit",
        (Column("kid_dinov2", "KID (DINOv2)", "lower"),),
        space="dinov2",
        snapshot=True,
        description="KID on DINOv2 ViT-L/14 features (downloads its weights)",
    ),
    MetricUnit(
        "per_class",
        "genbench.metrics.perclass:per_class_unit",
        (
            Column("fid_class_mean", "per-class FID", "lower", guidance=True),
            Column("kid_class_mean", "per-class KID", "lower", table=False),
        ),
        space="inception",
        switch="per_class",
        description="FID and KID of each class's samples against that class's references",
    ),
    MetricUnit(
        "class_consistency",
        "genbench.metrics.classifier:consistency_unit",
        (Column("class_consistency", "class consistency", "higher", guidance=True),),
        switch="classifier",
        description="share of samples a held-out-trained classifier puts in their intended class",
        progress="class consistency",
    ),
    MetricUnit(
        "copies",
        "genbench.metrics.audit.unit:copies_unit",
        (Column("copy_rate", "copy rate", "lower"),),
        switch="memorization",
        description=(
            "copy audit: every sample against the training, validation and held-out images "
            "(learned descriptor, pixel NCC, mosaics, blends) and the C_T data-copying test"
        ),
        progress="copy audit (training, validation and held-out images)",
    ),
    MetricUnit(
        "bootstrap",
        "genbench.metrics.bootstrap:bootstrap_unit",
        space="inception",
        switch="bootstrap",
        description="sampling intervals of FID and KID over resamples of the samples",
    ),
):
    register_metric(_u)
