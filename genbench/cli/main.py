"""The command table (in the order ``genbench --help`` lists the commands) and the
process entry point."""

from __future__ import annotations

import signal
import sys
from typing import Any

import genbench.cli.catalog as catalog
import genbench.cli.measure as measure
import genbench.cli.results as results
import genbench.cli.run as run
from genbench.cli.app import app

app.command()(run.run)
app.command("list")(catalog.list_)
app.add_typer(catalog.config_app, name="config")
app.command()(catalog.init)
app.command()(results.sample)
app.command()(results.report)
app.command()(measure.score)
app.command()(measure.doctor)
app.command()(measure.bench)


def _terminate(signum: int, frame: Any) -> None:
    # Schedulers stop jobs with SIGTERM: unwind like Ctrl-C so the run is marked interrupted.
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except BrokenPipeError:  # `genbench list | head`
        sys.exit(0)


if __name__ == "__main__":
    main()
