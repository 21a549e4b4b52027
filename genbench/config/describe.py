"""Describing configs (``genbench config show``): every key of a config model with its
value, default and description, rendered as commented TOML."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
)

from genbench.utils.errors import ConfigError


# -- describing configs ------------------------------------------------------
def toml_value(value: Any) -> str:
    """One value in TOML's inline syntax (the inverse of :func:`parse_value`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # 1e-05, inf and nan are TOML too
    if isinstance(value, (str, Path)):
        return json.dumps(str(value), ensure_ascii=False)  # JSON's escapes are TOML's
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = (f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    raise ConfigError(f"{value!r} has no TOML form (leave a key out to keep its default)")


@dataclass(frozen=True)
class ConfigField:
    """One key of a config model: its value, default, description and declaring class."""

    name: str
    value: Any
    default: Any
    description: str
    declared_by: str
    choices: tuple[Any, ...] = ()

    @property
    def changed(self) -> bool:
        return self.value != self.default


def config_fields(cls: type[BaseModel], values: BaseModel | None = None) -> list[ConfigField]:
    """The fields of ``cls`` (inherited ones first), with ``values``' values or the defaults."""
    out = []
    for name, info in cls.model_fields.items():
        default = info.get_default(call_default_factory=True)
        declared_by = next(
            (
                base.__name__
                for base in reversed(cls.__mro__)
                if name in getattr(base, "__annotations__", {})
            ),
            cls.__name__,
        )
        ann = info.annotation
        choices = get_args(ann) if get_origin(ann) is Literal else ()
        out.append(
            ConfigField(
                name=name,
                value=getattr(values, name) if values is not None else default,
                default=default,
                description=info.description or "",
                declared_by=declared_by,
                choices=choices,
            )
        )
    return out


def render_config_fields(fields: list[ConfigField], *, header: list[str] = ()) -> str:
    """Fields as TOML with each description as a comment (unset keys commented out), grouped
    by the class that declares them; a value that differs from its default says the default."""
    lines = [f"# {h}" for h in header]
    assigns = [
        f"{f.name} = {toml_value(f.value)}" if f.value is not None else f"# {f.name} (unset)"
        for f in fields
    ]
    width = min(40, max((len(a) for a in assigns), default=0))
    owner = None
    for f, assign in zip(fields, assigns, strict=True):
        if f.declared_by != owner and len({g.declared_by for g in fields}) > 1:
            lines += ["", f"# -- {f.declared_by}"]
        owner = f.declared_by
        notes = [f.description] if f.description else []
        if f.choices:
            notes.append("one of " + ", ".join(str(c) for c in f.choices))
        if f.changed:
            notes.append("default " + (toml_value(f.default) if f.default is not None else "unset"))
        lines.append(f"{assign:<{width}}  # {'; '.join(notes)}" if notes else assign)
    return "\n".join(lines).strip("\n") + "\n"
