"""What there is and how it is configured: ``genbench list``, ``genbench config show``,
and ``genbench init`` (a starter project)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from genbench.cli.app import console, esc, friendly_errors
from genbench.utils.errors import GenbenchError


# -- list ------------------------------------------------------------------------
def _metrics_table() -> Any:
    from rich.table import Table

    from genbench.metrics import units

    t = Table(title="metrics (genbench.metrics.units)")
    for c in ("name", "turned on by", "columns", "features", "what"):
        t.add_column(c, no_wrap=c in ("name", "turned on by"))
    for u in units.metric_units():
        cols = ", ".join(f"{c.key} ({c.better or 'info'})" for c in u.columns)
        on = f"metrics.{u.switch}" if u.switch else "metrics.names"
        t.add_row(u.name, on, cols or "-", u.space or "pixels", u.description)
    return t


@friendly_errors
def list_(
    check: Annotated[
        bool, typer.Option("--check", help="Import every generator and report failures.")
    ] = False,
) -> None:
    """Show registered generators (with their distributions), data sources, metric units and
    experiments."""
    from rich.table import Table

    from genbench import registry
    from genbench.config import find_experiments
    from genbench.data.sources import SOURCES

    status = registry.check_all() if check else {}
    t = Table(title="generators (entry-point group genbench.generators)")
    for c in ("name", "distribution", "object") + (("import",) if check else ()):
        t.add_column(c)
    for name, e in registry.discover().items():
        row = [name, f"{e.distribution} {e.version}", e.value]
        if check:
            row.append("ok" if status.get(name) is None else f"[red]{esc(status[name] or '')}[/]")
        t.add_row(*row)
    console.print(t)
    t = Table(title="data sources")
    t.add_column("name")
    t.add_column("description")
    t.add_column("from")
    for s in SOURCES.values():
        t.add_row(s.name, s.description, s.availability)
    console.print(t)
    console.print(_metrics_table())
    t = Table(title="experiments (./configs, then $GENBENCH_CONFIG_PATH, then packaged)")
    t.add_column("name")
    t.add_column("from")
    t.add_column("file")
    for e in find_experiments():
        note = "".join(f"\n[dim]hides {esc(str(s))}[/]" for s in e.shadows)
        t.add_row(e.name, e.origin, esc(str(e.path)) + note)
    console.print(t)
    if check and any(status.values()):
        raise typer.Exit(1)


# -- config ----------------------------------------------------------------------------
config_app = typer.Typer(
    help="Inspect configs: every key of a model or section, its value and what it means.",
    no_args_is_help=True,
)


@config_app.command("show")
@friendly_errors
def config_show(
    name: Annotated[
        str,
        typer.Argument(
            help="A generator (`genbench list`) or a section: data, train, sample, metrics."
        ),
    ],
    experiment: Annotated[
        str | None,
        typer.Option(
            "--experiment",
            "-e",
            help="Show the values this experiment resolves to (default: the defaults).",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a key as in `genbench run` (needs --experiment)."),
    ] = None,
) -> None:
    """Print a config as TOML: each key with its value (the defaults, or an experiment's
    resolved values) and its description; paste keys into an experiment to change them."""
    from genbench import api

    if set_ and experiment is None:
        raise GenbenchError("--set needs --experiment (defaults are what --set changes)")
    text = api.show_config(name, experiment=experiment, overrides=list(set_ or []))
    typer.echo(text, nl=False)  # unwrapped: the output is TOML to copy from


# -- init ------------------------------------------------------------------------------
@friendly_errors
def init(
    directory: Annotated[Path, typer.Argument(help="Folder for the project (created if missing).")],
    name: Annotated[
        str | None,
        typer.Option("--name", help="Project, experiment and plugin name (default: the folder's)."),
    ] = None,
) -> None:
    """Start a project: an experiment on the digits data and a generator plugin that installs and runs."""
    from genbench import api

    p = api.init_project(directory, name=name)
    for f in p.files:
        console.print(f"wrote {esc(str(f))}", highlight=False)
    console.print(
        f"next: cd {esc(str(p.root))} && pip install -e . && genbench run -e {p.name}",
        highlight=False,
    )
