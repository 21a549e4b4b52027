"""Names and ids: path-safe names, slugs for file names, short digests of configs."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

SAFE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


def check_safe_name(name: str, *, what: str) -> str:
    """Names that become paths: lowercase letters, digits, '_' and '-' only."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
        raise ValueError(
            f"{what} {name!r} is not path-safe (use [a-z0-9_-], starting with a letter or digit)"
        )
    return name


def slug(text: str, *, limit: int = 60) -> str:
    """Free text -> a short file-name part: lowercase, runs of other characters -> '-'."""
    s = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")
    return s[:limit].strip("-") or "x"


def digest(obj: Any, length: int = 20) -> str:
    """The first ``length`` hex digits of sha256 over ``obj`` as compact sorted JSON
    (20 by default: the length of the metrics cache's keys).

    Run ids, training keys, cache keys and protocol fingerprints all hash this
    way, so one config always gives one id.
    """
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


#: Hex digits of the config digest that ends a run id.
RUN_ID_DIGITS = 10


def run_id(*, experiment: str, label: str, key: Any) -> str:
    """A run folder's name: ``<experiment>-<label>-<digest of key>``. The label says what
    ran (``dcgan-s0``, ``real-n1000``); the digest, what exactly (the config that
    determines the results), so one config always gives one folder."""
    return f"{experiment}-{label}-{digest(key, RUN_ID_DIGITS)}"
