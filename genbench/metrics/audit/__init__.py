"""The copy audit: does a generator return (edited) real images? Its stages, statistics,
verdict and metric unit live in this subpackage (see :mod:`genbench.metrics.audit.copies`
for the method)."""

from genbench.metrics.audit.unit import (
    FreshSets,
    cells_for,
    copies_unit,
    copy_audit,
    copy_audits,
    fresh_sets,
    fresh_stats,
    plan_text,
    pool_of,
)

__all__ = [
    "FreshSets",
    "cells_for",
    "copies_unit",
    "copy_audit",
    "copy_audits",
    "fresh_sets",
    "fresh_stats",
    "plan_text",
    "pool_of",
]
