"""MkDocs hook: the config reference, generated from the code at build time.

A page holding the marker ``<!-- genbench:config-reference -->`` on a line of its own gets, in
its place, one table per config section (walked from ``genbench.config.ExperimentConfig``'s
fields) and one per built-in generator (found through ``genbench.registry``), each key with its
type, default and description as the pydantic models declare them. Nothing is written by hand,
so the page cannot drift from the code. A built-in generator that cannot be imported is a
warning, which fails ``mkdocs build --strict``.
"""

from __future__ import annotations

import logging
import types
import typing
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

MARKER = "<!-- genbench:config-reference -->"
BUILTIN_DISTRIBUTION = "genbench"
log = logging.getLogger("mkdocs.plugins.genbench")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    lines = markdown.split("\n")
    if MARKER not in lines:
        return markdown
    return "\n".join(config_reference() if line == MARKER else line for line in lines)


def config_reference() -> str:
    from genbench.config import ExperimentConfig

    top = {n: f for n, f in ExperimentConfig.model_fields.items() if not _section(f.annotation)}
    sections = {n: f.annotation for n, f in ExperimentConfig.model_fields.items() if n not in top}
    out = ["## Top-level keys", "", _doc(ExperimentConfig), ""]
    out += _table([(name, f) for name, f in top.items()], prefix="")
    for name, cls in sections.items():
        out += [f"## `[{name}]`", "", _doc(cls), ""]
        out += _table(list(cls.model_fields.items()), prefix=f"{name}.")
    out += ["## Built-in generators", ""]
    out += [
        "Each key goes in an experiment's `[model.<name>]` table or on the command line as "
        "`--set <name>.<key>=<value>`.",
        "",
    ]
    for name, cls in builtin_generator_configs().items():
        out += [f"### `{name}`", "", f"`{cls.__module__}.{cls.__name__}`. {_doc(cls)}", ""]
        out += _table(list(cls.model_fields.items()), prefix=f"{name}.")
    return "\n".join(out)


def builtin_generator_configs() -> dict[str, type[BaseModel]]:
    """name -> Config class of every generator genbench itself registers."""
    from genbench import registry

    found = {}
    for name, entry in registry.discover().items():
        if entry.distribution != BUILTIN_DISTRIBUTION:
            continue  # a plugin installed in this environment is not part of genbench's docs
        try:
            found[name] = registry.load(name).Config
        except Exception as exc:  # one line in the build log; --strict turns it into a failure
            log.warning("config reference: built-in generator %r not documented: %s", name, exc)
    return found


def _section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _doc(cls: type) -> str:
    from genbench import GeneratorConfig

    doc = cls.__doc__ or ""
    if cls is not GeneratorConfig and doc == GeneratorConfig.__doc__:
        return ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def _table(fields: list[tuple[str, Any]], *, prefix: str) -> list[str]:
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, info in fields:
        default = info.get_default(call_default_factory=True)
        rows.append(
            f"| `{prefix}{name}` | {_cell(_type(info.annotation))} | `{_value(default)}` "
            f"| {_cell(info.description or '')} |"
        )
    return [*rows, ""]


def _type(ann: Any) -> str:
    origin = get_origin(ann)
    if origin is Literal:
        return " or ".join(_value(a) for a in get_args(ann))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type(a) for a in get_args(ann))
    if origin is not None:
        args = ", ".join(_type(a) for a in get_args(ann))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if ann is type(None):
        return "None"
    return getattr(ann, "__name__", str(ann).replace("typing.", ""))


def _value(v: Any) -> str:
    """A default as it would be written in TOML (``unset`` for None)."""
    if v is None:
        return "unset"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + "}"
    return str(v)


def _cell(text: str) -> str:
    return text.replace("\n", " ").replace("|", "\\|") or " "
