"""``genbench report``: from run folders alone, a summary that answers "which
generator is better on my data, by how much, and at what cost".

Writes into ``RESULTS/report/``: summary.csv / .json / .md / .tex (per-seed
rows, per-model mean ± 95% CI rows, the real-data floor on top, best values
marked, protocol groups kept apart), plots/ (PNG + SVG), grids/ and a
self-contained report.html.
"""

from genbench.report.collect import RunRecord, collect_runs, load_runs
from genbench.report.columns import COLUMNS
from genbench.report.stats import Summary, summarize, t_ci95
from genbench.report.write import Report, rich_table, write_report

__all__ = [
    "COLUMNS",
    "Report",
    "RunRecord",
    "Summary",
    "collect_runs",
    "load_runs",
    "rich_table",
    "summarize",
    "t_ci95",
    "write_report",
]
