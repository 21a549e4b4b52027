"""Generator discovery through the ``genbench.generators`` entry-point group.

Built-ins and third-party plugins go through the same path. Names are checked
to be path-safe and unique before anything is imported; models are imported
only when asked for, so one broken plugin cannot break the others.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points

from genbench.contract import Generator
from genbench.utils.errors import MissingExtra, PluginError
from genbench.utils.naming import SAFE_NAME

GROUP = "genbench.generators"


@dataclass(frozen=True)
class PluginEntry:
    name: str
    value: str  # "module:Class"
    distribution: str  # installed distribution that declared it
    version: str
    entry_point: EntryPoint


@cache
def discover() -> dict[str, PluginEntry]:
    """All registered generator names, without importing them."""
    found: dict[str, PluginEntry] = {}
    for ep in entry_points(group=GROUP):
        dist = ep.dist.name if ep.dist is not None else "<unknown>"
        version = ep.dist.version if ep.dist is not None else "?"
        if not SAFE_NAME.fullmatch(ep.name):
            raise PluginError(
                f"generator name {ep.name!r} from distribution {dist!r} is not path-safe "
                "(names must match [a-z0-9][a-z0-9_-]*)"
            )
        entry = PluginEntry(ep.name, ep.value, dist, version, ep)
        prior = found.get(ep.name)
        if prior is not None:
            # The same distribution seen twice on sys.path is not a clash.
            if (prior.distribution, prior.value) == (dist, ep.value):
                continue
            raise PluginError(
                f"generator name {ep.name!r} is registered twice: by {prior.distribution!r} "
                f"({prior.value}) and by {dist!r} ({ep.value})"
            )
        found[ep.name] = entry
    return dict(sorted(found.items()))


def names() -> list[str]:
    return list(discover())


def entry(name: str) -> PluginEntry:
    plugins = discover()
    if name not in plugins:
        hint = difflib.get_close_matches(name, plugins, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        raise PluginError(
            f"unknown generator {name!r}{suggestion} (registered: {', '.join(plugins) or 'none'})"
        )
    return plugins[name]


def load(name: str) -> type[Generator]:
    """Import and return the generator class registered as ``name``."""
    e = entry(name)
    try:
        obj = e.entry_point.load()
    except MissingExtra:  # an optional extra not installed: its own one-line message
        raise
    except Exception as exc:  # any import failure of a plugin is reported, not raised through
        raise PluginError(
            f"generator {name!r} ({e.value}, from {e.distribution}) failed to import: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not (isinstance(obj, type) and issubclass(obj, Generator)):
        raise PluginError(f"generator {name!r} ({e.value}) is not a genbench.Generator subclass")
    return obj


def check_all() -> dict[str, str | None]:
    """Import every plugin; map name to None (ok) or the error message."""
    status: dict[str, str | None] = {}
    for name in discover():
        try:
            load(name)
            status[name] = None
        except (PluginError, MissingExtra) as exc:
            status[name] = str(exc)
    return status
