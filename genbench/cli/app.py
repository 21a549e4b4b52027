"""The typer app every ``genbench`` command registers on, its consoles, and the error
handling and small parsers the commands share."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from genbench.utils.errors import GenbenchError

app = typer.Typer(
    name="genbench",
    help="Train image generators on identical data, sample, score and compare them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
# soft_wrap: an error stays one line however narrow the terminal, so paths in it stay whole
err_console = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(fn: F) -> F:
    """User mistakes become one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GenbenchError as exc:
            err_console.print(f"[red]error:[/] {esc(str(exc))}")
            raise typer.Exit(exc.exit_code) from None
        except ValidationError as exc:
            err_console.print(f"[red]error:[/] {esc(str(exc).splitlines()[0])}")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print(
                "[yellow]interrupted[/]; `genbench run --resume` continues from the last checkpoint"
            )
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def esc(s: str) -> str:
    from rich.markup import escape

    return escape(s)


def csv_items(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]
