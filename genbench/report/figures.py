"""What every report figure shares: the palette, the Figure record, a matplotlib figure
on an Agg canvas (no pyplot state, no display), saving PNG + SVG reproducibly."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PALETTE = (
    "#4C72B0",
    "#DD8452",
    "#55A868",
    "#C44E52",
    "#8172B3",
    "#937860",
    "#DA8BC3",
    "#8C8C8C",
    "#CCB974",
    "#64B5CD",
)


@dataclass
class Figure:
    """A written figure: files relative to the report folder, and what it shows."""

    name: str
    title: str
    png: str
    svg: str
    caption: str = ""
    section: str = "plots"


def new_figure(ncols: int = 1, nrows: int = 1, *, w: float = 4.2, h: float = 3.3):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(w * ncols, h * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def save_figure(fig: Any, out_dir: Path, name: str) -> tuple[str, str]:
    import matplotlib

    out_dir.mkdir(parents=True, exist_ok=True)
    # Fixed ids and no dates: the same data renders to the same files.
    with matplotlib.rc_context({"svg.hashsalt": "genbench", "svg.fonttype": "path"}):
        fig.savefig(out_dir / f"{name}.png", dpi=110, metadata={"Software": None})
        fig.savefig(out_dir / f"{name}.svg", metadata={"Date": None, "Creator": None})
    return f"plots/{name}.png", f"plots/{name}.svg"


def colors_for(labels: list[str]) -> dict[str, str]:
    return {lab: PALETTE[i % len(PALETTE)] for i, lab in enumerate(labels)}


def num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f if math.isfinite(f) else math.nan


def log_x(ax: Any) -> None:
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on short ranges
