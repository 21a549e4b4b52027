"""The summary as text: display tables (one per protocol group), Markdown, LaTeX, rich
terminal tables, the separation matrix and the one-sentence headline. Every format
renders the same :class:`DisplayTable`s built from a :class:`~genbench.report.stats.Summary`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

import genbench.report.curves as curves
import genbench.report.verdict as verdict
from genbench.report.columns import COLUMN, COLUMNS, Column, is_pretrained, is_true, model_label
from genbench.report.stats import CI_NOTE, Group, Summary, flagged_mask, primary_metric


@dataclass
class Cell:
    text: str
    best: bool = False


@dataclass
class DisplayTable:
    title: str
    columns: list[Column]
    header: list[str]  # "model", "seeds", then the columns' labels
    rows: list[list[Cell]]
    kinds: list[str]  # "real", "mean" or "run" per row
    note: str = ""


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and not math.isfinite(v))


def fmt_value(v: Any, fmt: str = "g") -> str:
    if _missing(v):
        return ""
    if fmt == "str" or isinstance(v, str):
        return str(v)
    v = float(v)
    if fmt == "int" and v == int(v):
        return str(int(v))
    if fmt == "sci":
        return f"{v:.3g}" if 1e-3 <= abs(v) < 1e5 or v == 0 else f"{v:.2e}"
    return f"{v:.4g}"


def fmt_ci(half: Any, fmt: str = "g") -> str:
    h = float(half)
    if fmt == "sci":
        return fmt_value(h, "sci")
    if h >= 10:
        return f"{h:.0f}"  # "± 102", not "± 1e+02"
    return f"{h:#.2g}" if h >= 1e-3 else f"{h:.1e}"  # two digits: "5.0", "0.19"


#: Columns a pretrained run (weights trained elsewhere) has no value for under this protocol.
NOT_TRAINED_HERE = ("kimg", "train_s", "train_flops")


def _bracket(row: pd.Series, key: str) -> str:
    lo, hi = row.get(f"{key}_lo"), row.get(f"{key}_hi")
    if _missing(lo) or _missing(hi):
        return ""
    return f"[{fmt_value(lo)}, {fmt_value(hi)}]"


def cell_text(row: pd.Series, col: Column, *, with_ci: bool) -> str:
    """The value with its interval: ± the seed interval (mean rows of >= 2 seeds); with one
    seed (and on per-seed rows) the bootstrap interval "[lo, hi] sampling only" for FID
    and KID, the Wilson interval for the copy rate; "± n/a" where there is none."""
    if col.key in NOT_TRAINED_HERE and is_pretrained(row):
        return "n/a"
    v = row.get(col.key)
    text = fmt_value(v, col.fmt)
    if not text or not with_ci or col.fmt == "str":
        return text
    half = row.get(f"{col.key}_ci95")
    n = row.get("n_seeds")
    if not _missing(half) and half > 0:
        return f"{text} ± {fmt_ci(half, col.fmt)}"
    one_seed = row.get("row") == "run" or (not _missing(n) and int(n) < 2)
    if col.key in verdict.BOOT_METRICS and (b := _bracket(row, f"{col.key}_ci95_sampling")):
        return f"{text} {b} {verdict.SAMPLING_ONLY}" if one_seed else text
    if col.key == "copy_rate" and (b := _bracket(row, "copy_rate_ci95")):
        return f"{text} {b}" if one_seed else text
    if col.kind == "quality" and one_seed and row.get("row") != "run":
        return f"{text} ± n/a"
    return text


def _present(df: pd.DataFrame) -> list[Column]:
    out = []
    for c in COLUMNS:
        if c.key not in df:
            continue
        col = df[c.key]
        if c.fmt == "str":
            if col.map(lambda x: isinstance(x, str) and bool(x)).any():
                out.append(c)
        elif pd.to_numeric(col, errors="coerce").notna().any():
            out.append(c)
    return out


def display_table(summary: Summary, group: Group, *, per_seed: bool = False) -> DisplayTable:
    """The rows of one group: the real row, then per-model means (or the per-seed rows)."""
    real = summary.rows(group, "real")
    body = summary.rows(group, "run" if per_seed else "mean")
    df = pd.concat([p for p in (real, body) if not p.empty], ignore_index=True)
    cols = _present(df)
    if group.lead == "kid":  # small N: KID (unbiased) first, FID beside it
        cols.sort(key=lambda c: {"kid": 0, "fid": 1}.get(c.key, 2))
    header = ["model", "seed" if per_seed else "seeds", *(c.label for c in cols)]
    rows, kinds = [], []
    for _, r in df.iterrows():
        kind = str(r["row"])
        best = set(str(r.get("best") or "").split(";")) if kind == "mean" else set()
        if kind == "real":
            seeds = ""
        elif per_seed:
            seeds = fmt_value(r.get("seed"), "int")
        else:
            seeds = fmt_value(r.get("n_seeds"), "int")
        cells = [Cell(model_label(r)), Cell(seeds)]
        for c in cols:
            with_ci = kind == "mean" or (
                kind == "run" and c.key in (*verdict.BOOT_METRICS, "copy_rate")
            )
            cells.append(Cell(cell_text(r, c, with_ci=with_ci), best=c.key in best))
        rows.append(cells)
        kinds.append(kind)
    note = ""
    if not group.main and group.fingerprint:
        note = "NOT comparable with this experiment's main table: " + "; ".join(
            group.differences[:4]
        )
    title = group.title + (" (per seed)" if per_seed else "")
    return DisplayTable(title, cols, header, rows, kinds, note)


def arrow(col: Column | None, *, style: str = "unicode") -> str:
    if col is None or col.better is None:
        return ""
    if style == "latex":
        return r" $\downarrow$" if col.better == "lower" else r" $\uparrow$"
    return " ↓" if col.better == "lower" else " ↑"


def headline(summary: Summary, group: Group) -> str:
    """One sentence that answers "which is better, by how much, at what cost": the
    unflagged models ranked on the group's lead metric, the flagged ones named, and the
    claim the separation matrix supports about the top two."""
    agg = summary.rows(group, "mean")
    key = primary_metric(agg, lead=group.lead) if not agg.empty else None
    if key is None:
        return ""
    col = COLUMN[key]
    agg = agg[pd.to_numeric(agg[key], errors="coerce").notna()]
    flagged = agg[flagged_mask(agg)]
    agg = agg[~flagged_mask(agg)]
    parts = []
    shown = 3
    for _, r in agg.head(shown).iterrows():
        cost = []
        if pd.notna(r.get("train_s")):
            cost.append(f"{fmt_value(r['train_s'])} s training")
        if pd.notna(r.get("nfe")):
            cost.append(f"{fmt_value(r['nfe'], 'int')} NFE")
        beside = ""
        if key == "kid" and "fid" in r and not _missing(r.get("fid")):
            beside = f", FID {fmt_value(r['fid'])}"
        floor = f", {verdict.FLOOR_MARK}" if is_true(r.get("at_floor")) else ""
        parts.append(
            f"{model_label(r)} {cell_text(r, col, with_ci=True)}{beside}"
            + (f" ({', '.join(cost)})" if cost else "")
            + floor
        )
    more = f"; {len(agg) - shown} more in the table" if len(agg) > shown else ""
    lead = f"{col.label} ({col.better} is better"
    lead += ", unbiased at this small N; FID beside it)" if key == "kid" else ")"
    text = f"{lead}: " + ("; ".join(parts) or "no unflagged model") + more
    real = summary.rows(group, "real")
    if not real.empty and pd.notna(real.iloc[0].get(key)):
        text += f". Real-data floor: {fmt_value(real.iloc[0][key])}"
    if len(agg) >= 2:
        text += ". " + _top_two_claim(group, agg, key)
    if not flagged.empty:
        names = []
        for _, r in flagged.iterrows():
            rate = r.get("copy_rate")
            names.append(
                model_label(r) + (f" (copy rate {fmt_value(rate)})" if not _missing(rate) else "")
            )
        text += ". Flagged for copying training images, not ranked: " + ", ".join(names)
    if group.curves and (budgets := curves.sentence(group.curves)):
        text += f". Across budgets ({group.curves.metric_text()}): {budgets}"
    if group.derived:
        audits = [f"{model_label(r)}: {r['audit']}" for _, r in agg.iterrows() if r.get("audit")]
        text = f"Ranked apart: {verdict.DERIVED_NOTE}. {text}"
        text += (". " + "; ".join(audits)) if audits else ""
    return text + "."


def _top_two_claim(group: Group, agg: pd.DataFrame, key: str) -> str:
    a, b = model_label(agg.iloc[0]), model_label(agg.iloc[1])
    sep = group.separation.get(key)
    pair = None
    if sep:
        pair = next(
            (p for p in sep["pairs"] if {p["a"], p["b"]} == {a, b}),
            None,
        )
    if pair is None or pair["verdict"] == verdict.NOT_SEPARATED:
        return f"{a} and {b}: not separated"
    return str(pair["claim"])


def separation_markdown(group: Group) -> str:
    """The separation matrix on the group's lead metric: row vs column."""
    sep = group.separation.get(group.lead)
    if not sep or len(sep["models"]) < 2:
        return ""
    names = sep["models"]
    out = [
        f"Separation on {COLUMN[sep['metric']].label} (row vs column; 'beats' needs the "
        "training-seed interval and the paired bootstrap to agree):",
        "",
        "| | " + " | ".join(_md(n) for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for m in names:
        out.append(
            f"| {_md(m)} | " + " | ".join(_md(sep["matrix"][m][c] or "·") for c in names) + " |"
        )
    return "\n".join(out) + "\n"


def to_markdown(tables: list[DisplayTable]) -> str:
    out = []
    for t in tables:
        out.append(f"### {t.title}\n")
        if t.note:
            out.append(f"> {t.note}\n")
        cols: list[Column | None] = [None, None, *t.columns]
        head = [h + arrow(c) for h, c in zip(t.header, cols, strict=True)]
        out.append("| " + " | ".join(_md(h) for h in head) + " |")
        out.append("|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|")
        for cells in t.rows:
            out.append(
                "| "
                + " | ".join(
                    f"**{_md(c.text)}**" if c.best and c.text else _md(c.text) for c in cells
                )
                + " |"
            )
        out.append("")
    return "\n".join(out)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}


def tex_escape(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


def _tex_cell(text: str, best: bool) -> str:
    s = tex_escape(text).replace(" ± ", r" $\pm$ ").replace("±", r"$\pm$")
    return rf"\textbf{{{s}}}" if best and text else s


def to_latex(tables: list[DisplayTable]) -> str:
    out = [
        "% genbench report tables; needs \\usepackage{booktabs}.",
        "% " + CI_NOTE,
        "",
    ]
    for t in tables:
        cols: list[Column | None] = [None, None, *t.columns]
        out += [
            r"\begin{table}[t]",
            r"\centering",
            r"\small",
            rf"\caption{{{tex_escape(t.title)}{'. ' + tex_escape(t.note) if t.note else ''}}}",
            r"\begin{tabular}{l" + "r" * (len(cols) - 1) + "}",
            r"\toprule",
            " & ".join(
                tex_escape(h) + arrow(c, style="latex") for h, c in zip(t.header, cols, strict=True)
            )
            + r" \\",
            r"\midrule",
        ]
        for i, (cells, kind) in enumerate(zip(t.rows, t.kinds, strict=True)):
            out.append(" & ".join(_tex_cell(c.text, c.best) for c in cells) + r" \\")
            if kind == "real" and i + 1 < len(t.rows):
                out.append(r"\midrule")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)


def rich_tables(tables: list[DisplayTable], *, max_transposed: int = 6) -> list[Any]:
    """Terminal tables. Few models: one column per model (fits 80 columns); many:
    one row per model, quality and cost in two tables."""
    from rich.markup import escape
    from rich.table import Table

    def styled(c: Cell) -> str:
        return f"[bold green]{escape(c.text)}[/]" if c.best and c.text else escape(c.text)

    out = []
    for t in tables:
        caption = escape(t.note) if t.note else None
        if len(t.rows) <= max_transposed:
            table = Table(title=escape(t.title), caption=caption)
            table.add_column("model (seeds)", no_wrap=True)
            for cells, kind in zip(t.rows, t.kinds, strict=True):
                name = cells[0].text + (f" ({cells[1].text})" if cells[1].text else "")
                table.add_column(
                    escape(name), justify="right", style="dim" if kind == "real" else None
                )
            for j, col in enumerate(t.columns, start=2):
                table.add_row(escape(col.label + arrow(col)), *[styled(r[j]) for r in t.rows])
            out.append(table)
            continue
        for kind_name in ("quality", "cost"):
            idx = [
                j
                for j, c in enumerate(t.columns, start=2)
                if c.kind == kind_name or (kind_name == "cost" and c.kind == "info")
            ]
            if not idx:
                continue
            table = Table(title=escape(f"{t.title}: {kind_name}"), caption=caption)
            table.add_column("model", no_wrap=True)
            table.add_column("seeds")
            for j in idx:
                col = t.columns[j - 2]
                table.add_column(escape(col.label + arrow(col)), justify="right")
            for cells, kind in zip(t.rows, t.kinds, strict=True):
                table.add_row(
                    *[styled(cells[j]) for j in (0, 1, *idx)],
                    style="dim" if kind == "real" else None,
                )
            out.append(table)
    return out
