"""The measurement protocol stored with every score, and the fingerprint that
says which rows may be compared.

Two metrics.json files are comparable when their protocols agree on everything
that changes the numbers for the same images: extractor and weights, N
generated and N reference, the reference split and subset, resolution, channel
handling and metric parameters. The sampler and NFE are recorded too, but they
describe the generator, not the measurement, so they are not in the fingerprint.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from genbench.utils.naming import digest

#: Seed of the random subsets of real images (reference set, training subsets); recorded.
SUBSET_SEED = 0

#: Protocol keys that must match for two scores to be compared.
COMPARABLE_KEYS = (
    "torch_fidelity",
    "extractor",
    "weights_sha256",
    "feature_layer",
    "dtype",
    "n_generated",
    "n_reference",
    "reference",
    "resolution",
    "channels",
    "channel_handling",
    "settings",
    "feature_spaces",  # optional: present only where a second feature space was asked for
)
#: Keys left out of the fingerprint when absent, so that adding them changed no older one.
OPTIONAL_KEYS = ("feature_spaces",)


def fingerprint(protocol: dict[str, Any]) -> str:
    """A short hash of the comparable part of a protocol."""
    part = {k: protocol.get(k) for k in COMPARABLE_KEYS if k in protocol or k not in OPTIONAL_KEYS}
    return digest(part, 12)


def protocol_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Human-readable differences between two protocols' comparable parts ([] if comparable)."""
    out = []
    for k in COMPARABLE_KEYS:
        va, vb = a.get(k), b.get(k)
        if va == vb:
            continue
        if isinstance(va, dict) and isinstance(vb, dict):
            for sub in sorted(set(va) | set(vb)):
                if va.get(sub) != vb.get(sub):
                    out.append(f"{k}.{sub}: {va.get(sub)!r} != {vb.get(sub)!r}")
        else:
            out.append(f"{k}: {va!r} != {vb!r}")
    return out


def comparable_groups(metrics: Iterable[dict[str, Any]]) -> dict[str | None, list[int]]:
    """Indices of metrics.json dicts grouped by protocol fingerprint (None: no protocol)."""
    groups: dict[str | None, list[int]] = {}
    for i, m in enumerate(metrics):
        proto = m.get("protocol") if isinstance(m, dict) else None
        fp = (proto.get("fingerprint") or fingerprint(proto)) if isinstance(proto, dict) else None
        groups.setdefault(fp, []).append(i)
    return groups


def mark_comparable(
    metrics: list[dict[str, Any]], *, reference: dict[str, Any] | None = None
) -> list[tuple[bool, list[str]]]:
    """For each metrics.json dict: (comparable, reasons) against ``reference``'s protocol.

    Without a reference, the most common fingerprint among rows that have one
    is the reference (ties: the first such row). Rows without a protocol are
    never comparable. A report should refuse to rank, or visibly mark, rows
    whose first element is False.
    """
    protos = [m.get("protocol") if isinstance(m, dict) else None for m in metrics]
    if reference is None:
        groups = comparable_groups(metrics)
        groups.pop(None, None)
        if not groups:
            return [(False, ["no protocol recorded"]) for _ in metrics]
        best = max(groups.values(), key=lambda idx: (len(idx), -idx[0]))
        ref_proto = protos[best[0]]
    else:
        ref_proto = reference.get("protocol", reference)
    out = []
    for p in protos:
        if not isinstance(p, dict):
            out.append((False, ["no protocol recorded"]))
            continue
        diffs = protocol_differences(ref_proto, p)
        out.append((not diffs, diffs))
    return out


def split_description(data_cfg: Any, bundle: Any, part: str) -> dict[str, Any]:
    """Which images a part of the data is (``"holdout"`` or ``"train"``), for protocols and cache keys."""
    split = bundle.split
    return {
        "dataset": data_cfg.source,
        "split": split.get(f"{part}_from", part),
        "split_method": split.get("method"),
        "index_sha256": split.get(f"{part}_index_sha256"),
        "subset_seed": SUBSET_SEED,
    }
