"""report.html: one self-contained file (images as data URIs, inline CSS, no
scripts) with the tables, plots, grids, protocols and failed runs. Every string
that comes from a config, a plugin or a data set is escaped."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from genbench.report.audit import audit_html, audit_rows
from genbench.report.curves import Curves, fmt_x
from genbench.report.grids import Grid
from genbench.report.plots import Figure
from genbench.report.render import DisplayTable, arrow, display_table, headline
from genbench.report.stats import CI_NOTE, Group, Summary

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1400px;
 padding:0 16px;color:#1d1d1f;line-height:1.4}
h1{margin-bottom:4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
.lead{color:#555;margin-top:0}
nav a{margin-right:14px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #d0d0d0;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#f2f2f4}td:first-child,th:first-child,td:nth-child(2),th:nth-child(2){text-align:left}
tr.real td{background:#f6f6f6;color:#555;font-style:italic}
td.best{background:#e3f4e1;font-weight:700}
.note{background:#fff4e0;border-left:4px solid #f0a020;padding:6px 10px}
.headline{font-size:15px;background:#eef4ff;border-left:4px solid #4c72b0;padding:6px 10px}
.small{font-size:12px;color:#555}
figure{display:inline-block;vertical-align:top;margin:8px 16px 16px 0;max-width:100%}
figure img{max-width:100%;border:1px solid #ddd;image-rendering:pixelated}
figcaption{font-size:12px;color:#444;max-width:640px}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:13px}
dt{font-weight:600}dd{margin:0;font-family:ui-monospace,monospace;word-break:break-all}
.failed td{color:#a00000}
.scroll{overflow-x:auto}
"""


def data_uri(path: Path) -> str:
    mime = "image/svg+xml" if path.suffix == ".svg" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _e(x: Any) -> str:
    return escape("" if x is None else str(x), quote=True)


def table_html(t: DisplayTable) -> str:
    cols = [None, None, *t.columns]
    head = "".join(f"<th>{_e(h + arrow(c))}</th>" for h, c in zip(t.header, cols, strict=True))
    body = []
    for cells, kind in zip(t.rows, t.kinds, strict=True):
        tds = "".join(
            f'<td class="best">{_e(c.text)}</td>' if c.best and c.text else f"<td>{_e(c.text)}</td>"
            for c in cells
        )
        body.append(f'<tr class="{_e(kind)}">{tds}</tr>')
    return (
        f'<div class="scroll"><table class="summary"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def separation_html(g: Group) -> str:
    """The group's separation matrix on its lead metric (row vs column)."""
    sep = g.separation.get(g.lead)
    if not sep or len(sep["models"]) < 2:
        return ""
    names = sep["models"]
    head = "".join(f"<th>{_e(n)}</th>" for n in names)
    body = "".join(
        f"<tr><td>{_e(m)}</td>"
        + "".join(f"<td>{_e(sep['matrix'][m][c] or '·')}</td>" for c in names)
        + "</tr>"
        for m in names
    )
    label = sep["metric"].upper()
    return (
        f'<details open><summary>separation on {_e(label)} (row vs column): "beats" only where '
        "the training-seed interval and the paired bootstrap over samples agree</summary>"
        f'<table class="separation"><tr><th></th>{head}</tr>{body}</table></details>'
    )


def curves_html(c: Curves) -> str:
    """Who leads at each budget, the crossovers and the unconverged curves."""
    models = list(c.models)
    head = "".join(f"<th>{_e(m)}</th>" for m in models)
    rows = "".join(
        f"<tr><td>{_e(fmt_x(b.x[c.budget_axis], c.budget_axis)) if c.budget_axis in b.x else '?'}"
        "</td>"
        + "".join(f"<td>{b.values[m]:.4f}</td>" for m in models)
        + f"<td>{_e(b.leader or b.claim)}</td></tr>"
        for b in c.budgets
    )
    notes = [
        *c.crossovers,
        *(f"mean curves cross: {x}" for x in c.crossings),
        *(f"{m}: not converged ({w})" for m, w in c.not_converged.items()),
    ]
    return (
        f"<details open><summary>who leads at each budget ({_e(c.metric_text())})</summary>"
        f"<table><tr><th>budget</th>{head}<th>leader</th></tr>{rows}</table>"
        + "".join(f'<p class="small">{_e(n)}</p>' for n in notes)
        + "</details>"
    )


def _protocol_html(g: Group) -> str:
    p = g.protocol
    if not p:
        return '<p class="small">No scores were computed for these runs (metrics disabled).</p>'
    ref = p.get("reference") or {}
    items = [
        ("fingerprint", g.fingerprint),
        ("extractor", p.get("extractor")),
        ("weights sha256", str(p.get("weights_sha256") or "")[:16]),
        ("features computed in", p.get("dtype")),
        ("N generated / N reference", f"{p.get('n_generated')} / {p.get('n_reference')}"),
        (
            "reference",
            f"{ref.get('dataset')} split {ref.get('split')} ({ref.get('split_method')}), "
            f"subset {ref.get('subset_sha256')}",
        ),
        ("resolution, channels", f"{p.get('resolution')} px, {p.get('channels')}"),
        ("channel handling", p.get("channel_handling")),
        ("torch-fidelity", p.get("torch_fidelity")),
        ("settings", json.dumps(p.get("settings"), sort_keys=True)),
    ]
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items)
    return f"<details><summary>protocol {_e(g.fingerprint)}</summary><dl>{dl}</dl></details>"


def _figure(img_path: Path, title: str, caption: str, *, alt: str) -> str:
    return (
        f'<figure><img src="{data_uri(img_path)}" alt="{_e(alt)}">'
        f"<figcaption><b>{_e(title)}</b>. {_e(caption)}</figcaption></figure>"
    )


# 78 lines: the page's sections in the order they appear, so the HTML reads like the page.
def render(
    summary: Summary,
    out_dir: Path,
    *,
    figures: list[Figure],
    grids: list[Grid],
    notes: list[str],
    title: str = "genbench report",
    sections: Sequence[str] = (),
) -> str:
    """report.html; ``sections``: more HTML sections after the copy audit (memorization)."""
    parts = _head(title)
    for g in summary.groups:
        parts += _group_html(summary, g)
    if not summary.groups:
        parts.append("<p>No finished runs yet.</p>")
    parts.append(audit_html(audit_rows(summary.records)))
    parts += sections

    parts.append('<h2 id="plots">Plots</h2>')
    parts += [_figure(out_dir / f.png, f.title, f.caption, alt=f.title) for f in figures] or [
        "<p>No plots: no finished runs with scores or training logs.</p>"
    ]
    parts += _images_html(grids, out_dir)
    parts += _failed_html(summary)
    parts.append('<h2 id="notes">Notes</h2>')
    parts.append(
        "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>" if notes else "<p>None.</p>"
    )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _head(title: str) -> list[str]:
    return [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        '<p class="lead">Which generator is better on this data, by how much, and at what cost: '
        "every model trained on the same data and budget, sampled and scored under one recorded protocol.</p>",
        '<nav><a href="#summary">summary</a><a href="#plots">plots</a><a href="#grids">images</a>'
        '<a href="#audit">copy audit</a><a href="#failed">failed runs</a><a href="#notes">notes</a></nav>',
        '<h2 id="summary">Summary</h2>',
        f'<p class="small">{_e(CI_NOTE)}</p>',
    ]


def _group_html(summary: Summary, g: Group) -> list[str]:
    """One protocol group: its table, headline, separation, curves, per-seed values,
    protocol and warnings."""
    t = display_table(summary, g)
    parts = [f"<h3>{_e(t.title)}</h3>"]
    if t.note:
        parts.append(f'<p class="note">{_e(t.note)}</p>')
    if line := headline(summary, g):
        parts.append(f'<p class="headline">{_e(line)}</p>')
    parts.append(table_html(t))
    parts.append(separation_html(g))
    if g.curves:
        parts.append(curves_html(g.curves))
    per_seed = display_table(summary, g, per_seed=True)
    parts.append(
        f"<details><summary>per-seed values ({len(per_seed.rows)} rows)</summary>"
        f"{table_html(per_seed)}</details>"
    )
    parts.append(_protocol_html(g))
    if g.warnings:
        parts.append(
            '<details><summary>scoring warnings</summary><ul class="small">'
            + "".join(f"<li>{_e(w)}</li>" for w in g.warnings)
            + "</ul></details>"
        )
    return parts


def _images_html(grids: list[Grid], out_dir: Path) -> list[str]:
    parts = ['<h2 id="grids">Images</h2>']
    for grid in grids:
        caption = grid.caption
        if grid.row_labels:
            caption += " Rows, top to bottom: " + ", ".join(grid.row_labels) + "."
        parts.append(_figure(out_dir / grid.path, grid.title, caption, alt=grid.title))
    if not grids:
        parts.append("<p>No images.</p>")
    return parts


def _failed_html(summary: Summary) -> list[str]:
    parts = ['<h2 id="failed">Failed and unfinished runs</h2>']
    if not summary.failed:
        return [*parts, "<p>None: every run finished.</p>"]
    rows = "".join(
        f'<tr class="failed"><td>{_e(f["run_id"])}</td><td>{_e(f["status"])}</td>'
        f'<td style="text-align:left;white-space:normal">{_e(f["error"])}</td></tr>'
        for f in summary.failed
    )
    parts.append(
        f"<table><thead><tr><th>run</th><th>status</th><th>error</th></tr></thead><tbody>{rows}</tbody></table>"
    )
    return parts
