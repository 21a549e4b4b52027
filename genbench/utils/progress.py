"""Progress bars and messages. The library reports through a Reporter; the CLI
gives it a rich console, tests give it nothing and it stays quiet."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Tick:
    """Advances one progress bar: ``tick(completed, total, logs)`` or ``tick(advance=n)``."""

    def __init__(self, progress: Progress | None, task: Any) -> None:
        self.progress, self.task = progress, task

    def __call__(
        self,
        completed: int | None = None,
        total: int | None = None,
        logs: dict[str, float] | None = None,
        *,
        advance: int | None = None,
    ) -> None:
        if self.progress is None:
            return
        extra = "  ".join(f"{k}={v:.4g}" for k, v in list((logs or {}).items())[:3])
        kw: dict[str, Any] = {"info": extra} if logs else {}
        if total is not None:
            kw["total"] = total
        if advance is not None:
            self.progress.update(self.task, advance=advance, **kw)
        else:
            self.progress.update(self.task, completed=completed, **kw)


class Reporter:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console

    @contextlib.contextmanager
    def phase(self, description: str, *, total: int | None) -> Iterator[Tick]:
        if self.console is None:
            yield Tick(None, None)
            return
        columns = [
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("[cyan]{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        ]
        with Progress(*columns, console=self.console, transient=False) as progress:
            task = progress.add_task(description, total=total, rate="", info="")
            tick = _RateTick(progress, task)
            yield tick

    def info(self, msg: str) -> None:
        if self.console is not None:
            self.console.print(msg, markup=False, highlight=False)

    def warn(self, msg: str) -> None:
        if self.console is not None:
            self.console.print(f"[yellow]warning:[/] {_escape(msg)}")

    def error(self, msg: str) -> None:
        if self.console is not None:
            self.console.print(f"[red]error:[/] {_escape(msg)}")


class _RateTick(Tick):
    def __call__(self, completed=None, total=None, logs=None, *, advance=None) -> None:  # type: ignore[override]
        super().__call__(completed, total, logs, advance=advance)
        task = self.progress.tasks[0] if self.progress and self.progress.tasks else None
        if task is not None and task.speed:
            self.progress.update(self.task, rate=f"{task.speed:.1f} it/s")


#: The bar of the phase now running, for loops deep inside it (a network trained on first use).
_CURRENT: ContextVar[Tick | None] = ContextVar("genbench_progress", default=None)


@contextlib.contextmanager
def progress_to(tick: Tick | None) -> Iterator[None]:
    """Within the block, :func:`step_done` advances ``tick`` (None: nothing shows)."""
    token = _CURRENT.set(tick)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def step_done(completed: int, total: int) -> None:
    """A long loop's step ``completed`` of ``total`` is done: the running phase's bar shows it
    (the copy descriptor's and the classifier's training, which a unit runs on first use)."""
    if (tick := _CURRENT.get()) is not None:
        tick(completed, total)


def _escape(s: str) -> str:
    from rich.markup import escape

    return escape(s)
