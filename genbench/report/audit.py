"""The report's copy-audit table: for each audited run, the copied-fraction estimates
(per sample, and by membership in the descriptor's space and in pixels) with their 95%
intervals, the "closer to the training images than fresh images" AUC (a diagnostic),
the tolerance, and the flag under the report's family-wise control (Holm over its runs,
see :func:`genbench.report.collect.grid_copy_flags`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

from genbench.report.collect import RunRecord

HEADER = (
    "run",
    "copy rate",
    "copied: per sample",
    "copied: membership (descriptor)",
    "copied: membership (pixels)",
    "closer than fresh (AUC)",
    "p (Holm)",
    "flagged",
)
NOTE = (
    "Copied fraction: the share of samples tied to a training image, with its 95% interval. "
    "Per sample: the copy rate beyond the rate on fresh images. Membership: how often a "
    "sample's nearest real image is a training image, beyond the rate at which a fresh image's "
    "is. A run is flagged when a one-sided lower bound of any estimate exceeds the tolerance, "
    "with the family-wise error over the report's runs held at flag_p (Bonferroni over the "
    "three estimates, Holm over the runs). The AUC (0.5: like fresh images) is a diagnostic: "
    "typical samples sit close to the training images whether or not they copy."
)


def _f(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) and math.isfinite(v) else "–"


def _estimate(e: Any) -> str:
    if not isinstance(e, dict) or e.get("fraction") is None:
        return "–"
    lo, hi = (e.get("ci95") or [None, None])[:2]
    return f"{_f(e['fraction'])} [{_f(lo)}, {_f(hi)}]"


def _label(rec: RunRecord) -> str:
    return "real (held-out images)" if rec.is_real else f"{rec.model} s{rec.seed}"


def audit_rows(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One row per audited run with a copied-fraction verdict, as strings and numbers."""
    rows = []
    for rec in records:
        cp = rec.metrics.get("copies")
        if not (rec.done and isinstance(cp, dict) and isinstance(cp.get("copied_fraction"), dict)):
            continue
        cf = cp["copied_fraction"]
        mem = cf.get("membership") or {}
        closer = cp.get("closer_than_fresh") or {}
        grid = cp.get("grid") or {}
        auc_lo, auc_hi = (closer.get("auc_ci95") or [None, None])[:2]
        rate_lo, rate_hi = (cp.get("rate_ci95") or [None, None])[:2]
        rows.append(
            {
                "run": _label(rec),
                "run_id": rec.run_id,
                "copy rate": f"{_f(cp.get('rate'))} [{_f(rate_lo)}, {_f(rate_hi)}]",
                "copied: per sample": _estimate(cf.get("per_sample")),
                "copied: membership (descriptor)": _estimate(mem.get("descriptor")),
                "copied: membership (pixels)": _estimate(mem.get("pixels")),
                "closer than fresh (AUC)": f"{_f(closer.get('auc'))} [{_f(auc_lo)}, {_f(auc_hi)}]",
                "p (Holm)": _p(grid.get("p_holm", cp.get("p_value"))),
                "flagged": "yes" if grid.get("flagged", cp.get("flagged")) else "no",
                "tolerance": cp.get("tolerance"),
                "flagged_by": cp.get("flagged_by") or [],
            }
        )
    return rows


def _p(v: Any) -> str:
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        return "–"
    return f"{v:.2g}" if v < 0.01 else f"{v:.2f}"


def _tolerance(rows: list[dict[str, Any]]) -> str:
    tol = sorted({r["tolerance"] for r in rows if r["tolerance"] is not None})
    return ", ".join(f"{t:g}" for t in tol) or "–"


def audit_markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    lines = [
        f"Tolerance: {_tolerance(rows)}. {NOTE}",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    lines += ["| " + " | ".join(str(r[h]) for h in HEADER) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def audit_html(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{escape(h)}</th>" for h in HEADER)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(r[h]))}</td>" for h in HEADER) + "</tr>" for r in rows
    )
    return (
        '<h2 id="audit">Copy audit</h2>'
        f'<p class="small">Tolerance: {escape(_tolerance(rows))}. {escape(NOTE)}</p>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )
