"""The copy audit at a real training-set size: Fashion-MNIST 32x32, 60k training images.

Each edit family is applied to FAMILY_N training images (500, the quick default's N, for
the documentation's table; 200 in the suite) and the set is audited as a run's samples are: the learned descriptor at its default size,
the pixel and mix stages, membership, the verdict. Retrieval difficulty is that of the
real data (many near-duplicate garments), which the 1.4k-image digits set cannot show.
Families held out of the descriptor's training are measured beside the trained ones.
Honest sets (held-out images, tilted towards typical images) must not be flagged. The
measured rates are written to ``$GENBENCH_DETECTION_TABLE`` when set (the documentation's
table).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from genbench.config import DataConfig, MetricsConfig
from genbench.contract import Generator
from genbench.data import load_data
from genbench.metrics import scoring
from genbench.metrics.audit import (
    cells_for,
    copy_audit,
    copy_audits,
    edits,
    fresh_sets,
    fresh_stats,
    pool_of,
)
from genbench.metrics.audit.copies import PoolIndex, QueryStats, build_pool_index, query_stats
from genbench.metrics.audit.membership import Membership, distinct_reading
from genbench.metrics.audit.settings import VERSION, CopySettings
from genbench.metrics.audit.unit import membership
from genbench.metrics.audit.verdict import calibrate, concat_stats, verdict
from genbench.utils.errors import DataError

pytestmark = pytest.mark.slow
N = 500
#: Images per edit family. The documentation's table (``$GENBENCH_DETECTION_TABLE`` set) is
#: measured at the quick default's N; the suite audits 200 per family (every stage's
#: statistics are per image, so fewer images only widen the verdict's intervals: less power,
#: the stricter test), in 40% of the time. The real-data row, replay and 5% sets keep 500.
FAMILY_N = N if os.environ.get("GENBENCH_DETECTION_TABLE") else 200
CPU = torch.device("cpu")
SETTINGS = CopySettings()  # the defaults a run uses
RATES: dict[str, dict[str, object]] = {}
DESCRIBE = {"dataset": "fashion-mnist", "resolution": 32}


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    # The descriptor (about two minutes to train here) and the pool's index are cached by
    # content, so one cache serves every run of this file on a machine.
    cache = os.environ.get("GENBENCH_TEST_CACHE") or str(Path.home() / ".cache" / "genbench-tests")
    mp.setenv("GENBENCH_CACHE", cache)
    try:
        bundle = load_data(DataConfig(source="fashion-mnist", resolution=32))
    except DataError as exc:
        mp.undo()
        pytest.skip(f"Fashion-MNIST is not installed here ({exc})")

    class X:
        pass

    x = X()
    x.bundle = bundle
    x.parts, _ = scoring.scoring_parts(bundle, MetricsConfig(), n=N)  # a run's own cut
    pool = pool_of(x)
    fresh = fresh_sets(x, pool, want=SETTINGS.calibration)
    yield bundle, x, pool, fresh
    mp.undo()
    table = os.environ.get("GENBENCH_DETECTION_TABLE")
    if table:
        Path(table).write_text(json.dumps(RATES, indent=2))


def _u8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


def _sources(bundle, seed: int, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """N random training images and, for each, k partners of the same class (for blends
    and mosaics: the hardest kind, they look alike)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randperm(len(bundle.train), generator=g)[:FAMILY_N]
    labels = bundle.train.labels
    partners = []
    for _ in range(k):
        row = []
        for i in a.tolist():
            same = (labels == labels[i]).nonzero()[:, 0]
            row.append(int(same[torch.randint(len(same), (1,), generator=g)]))
        partners.append(row)
    return a, torch.tensor(partners)


#: name -> (family, strength); every one must be flagged.
FAMILIES = {
    "shift 3 px": ("shift", 3),
    "shift 5 px": ("shift", 5),
    "shift 8 px": ("shift", 8),
    "diagonal shift 4 px": ("diagonal", 4),
    "rotation 5 deg": ("rotate", 5),
    "rotation 10 deg": ("rotate", 10),
    "zoom 1.15": ("zoom", 1.15),
    "zoom 0.85": ("zoom", 0.85),
    "crop of 80% of the area, resized": ("crop", 0.8),
    "elastic warp 1.5 px": ("elastic", 1.5),
    "erase 6x6": ("erase", 6),
    "blend 50/50 (same class)": ("blend", 0.5),
    "blend of 3 (same class)": ("blend3", 0),
    "mosaic, half and half (same class)": ("mosaic", 0.5),
    "mosaic, 2x2 grid of 4 (same class)": ("grid", 2),
    "mosaic, 4 strips of 4 (same class)": ("strips", 4),
}
#: Recombinations the audit does not yet flag (docs/copy-audit.md, "What it cannot catch"):
#: measured, and expected to fail until it does (strict: a fix must move them up).
GAPS = {
    "blend of 4 (same class)": ("blend4", 0),
    "mosaic, irregular pieces of 3 (same class)": ("irregular", 0),
}
#: Families the descriptor never trains on (edits.HELD_OUT): measured beside the others.
HELD_OUT = {
    "swirl 45 deg (held out)": ("swirl", 45),
    "barrel/pincushion 0.2 (held out)": ("barrel", 0.2),
    "posterize to 4 levels (held out)": ("posterize", 4),
    "composition of mild edits (held out)": ("mild-composition", 1.0),
}


def _edited(bundle, name: str, family: str, strength: float) -> torch.Tensor:
    a, b = _sources(bundle, seed=len(name), k=3)
    g = torch.Generator().manual_seed(7)
    x = bundle.train.images[a].float() / 255
    others = torch.stack([bundle.train.images[row].float() / 255 for row in b])
    return _u8(edits.apply(x, family, strength, gen=g, others=others))


def _record(name: str, v: dict) -> None:
    cf = v["copied_fraction"]
    RATES[name] = {
        "copy_rate": v["rate"],
        "flagged": v["flagged"],
        "flagged_by": v["flagged_by"],
        "p_value": v["p_value"],
        "caught_by_stage": v["caught_by_stage"],
        "per_sample": cf["per_sample"],
        "membership": cf["membership"],
        "closer_auc": v["closer_than_fresh"]["auc"],
        "c_t": v["closer_than_fresh"]["c_t"].get("c_t"),
        "heldout_rate": v["heldout_rate"],
        "seconds": v["seconds"],
    }


def _audit(fashion, images: torch.Tensor, exclude: torch.Tensor | None = None) -> dict:
    _, _, pool, fresh = fashion
    return copy_audit(
        images,
        pool=pool,
        fresh=fresh,
        settings=SETTINGS,
        device=CPU,
        describe=DESCRIBE,
        exclude=exclude,
    )


REPLAY = "held-out replay (the FID reference)"
FIVE_PERCENT = "5% exact copies, 95% fresh images"
FRESH = "fresh held-out images (the real-data row)"


@pytest.fixture(scope="module")
def audited(fashion) -> dict[str, dict]:
    """Every set below audited as a run's samples are. One search of the pool serves them
    all (copy_audits: each set's verdict is the one it gets alone, which
    test_sets_audited_together_get_their_verdicts_alone checks)."""
    bundle, x, pool, fresh = fashion
    sets: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {
        name: (_edited(bundle, name, *spec), None)
        for name, spec in {**FAMILIES, **GAPS, **HELD_OUT}.items()
    }
    sets[REPLAY] = (x.parts.reference.images, None)  # the FID reference itself, replayed
    # Honest-looking samples (fresh held-out images, never seen) with 5% exact copies.
    honest = x.parts.real.images
    g = torch.Generator().manual_seed(5)
    k = N // 20
    copies = bundle.train.images[torch.randperm(len(bundle.train), generator=g)[:k]]
    own = torch.cat([x.parts.positions["real"][: N - k], torch.full((k,), -1)])
    exclude = torch.where(own >= 0, own + pool.offset("heldout"), own)
    sets[FIVE_PERCENT] = (torch.cat([honest[: N - k], copies]), exclude)
    sets[FRESH] = _fresh_set(x, pool)
    for name, (images, own) in _probes(fashion).items():  # see the next test but one
        sets[name] = (images, own)
    out = copy_audits(
        sets, pool=pool, fresh=fresh, settings=SETTINGS, device=CPU, describe=DESCRIBE
    )
    for name, v in out.items():
        if not name.startswith("probe:"):  # the consistency check's sets stay out of the table
            _record(name, v)
    return out


@pytest.mark.parametrize("name", list(FAMILIES))
def test_edit_family_is_flagged(audited, name):
    v = audited[name]
    assert v["flagged"], (name, v["rate"], v["copied_fraction"], v["caught_by_stage"])


@pytest.mark.xfail(strict=True, reason="a known gap of the audit (docs/copy-audit.md)")
@pytest.mark.parametrize("name", list(GAPS))
def test_known_gap_is_not_yet_flagged(audited, name):
    v = audited[name]
    assert v["flagged"], (name, v["rate"], v["copied_fraction"])


@pytest.mark.parametrize("name", list(HELD_OUT))
def test_held_out_family_is_measured(audited, name):
    """Edits the descriptor never saw: their rates go into the table beside the trained
    families'. Membership still reads them as tied to their sources."""
    v = audited[name]
    mem = v["copied_fraction"]["membership"]
    assert v["flagged"] and max(m["fraction"] for m in mem.values()) > 0.2, (name, mem)


def test_heldout_replay_is_flagged(audited):
    v = audited[REPLAY]
    assert v["flagged"] and v["rate"] > 0.9


def test_five_percent_exact_copies_among_fresh_images_are_flagged(audited):
    v = audited[FIVE_PERCENT]
    assert v["flagged"] and v["n_copies"] >= N // 20


def test_fresh_images_are_not_flagged_and_the_check_rate_is_nominal(audited):
    v = audited[FRESH]
    assert not v["flagged"], v
    # The check set's rate lies in the nominal alpha's 95% binomial interval.
    lo, hi = _binom_interval(SETTINGS.alpha, v["n_heldout_check"])
    assert lo <= v["heldout_rate"] <= hi, (v["heldout_rate"], lo, hi)


def test_sets_audited_together_get_their_verdicts_alone(fashion, audited):
    """copy_audits' shared search changes no set's result: two small sets audited with the
    others (one with its own pool positions excluded, one of edited copies) equal their
    audits alone."""
    for name, (images, own) in _probes(fashion).items():
        alone, together = _audit(fashion, images, exclude=own), audited[name]
        for key in ("flagged", "rate", "p_value", "copied_fraction", "n_copies", "caught_by_stage"):
            assert alone[key] == together[key], (name, key)


def _probes(fashion) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    bundle, x, pool, _ = fashion
    rotated = _edited(bundle, "rotation 10 deg", *FAMILIES["rotation 10 deg"])
    images, own = _fresh_set(x, pool)
    return {
        "probe: 100 rotated copies": (rotated[:100], None),
        "probe: 100 fresh images": (images[:100], own[:100]),
    }


def _fresh_set(x, pool) -> tuple[torch.Tensor, torch.Tensor]:
    return x.parts.real.images, x.parts.positions["real"] + pool.offset("heldout")


def _binom_interval(p: float, n: int) -> tuple[float, float]:
    from scipy.stats import binom

    return binom.ppf(0.025, n, p) / n, binom.ppf(0.975, n, p) / n


# -- honest sets: typical, never-trained images are never flagged ---------------------------
@dataclass
class Candidates:
    """Held-out images no part of the cut uses (not the reference, nor the audit's fresh
    sets), with their per-sample statistics (each excluding itself), their nearest training
    image's similarity and their 64 nearest non-training images in both membership spaces,
    and the tilt score z (standardised mean descriptor distance to the 10 nearest other
    held-out images: low z = typical, in a dense region)."""

    positions: torch.Tensor  # in the held-out split
    stats: QueryStats
    best_train: dict[str, torch.Tensor]
    train_pos: dict[str, torch.Tensor]  # the pool position of that nearest training image
    other_sim: dict[str, torch.Tensor]
    other_pos: dict[str, torch.Tensor]
    null: dict[str, tuple[int, int]]  # space -> (n_train, n_other)
    is_train: torch.Tensor  # pool positions that are training images
    z: torch.Tensor
    verdict_args: tuple  # (calibration, check stats, fresh union, k) as a run's audit has them
    index: PoolIndex


def _space_vectors(fashion, index, images: torch.Tensor) -> dict[str, torch.Tensor]:
    from genbench.metrics.audit.descriptor import embed
    from genbench.metrics.audit.membership import pixel_vectors
    from genbench.metrics.audit.mixes import full_vectors

    desc = embed(index.net, images, settings=SETTINGS.descriptor, device=CPU).half().float()
    pix = torch.cat(
        [
            pixel_vectors(full_vectors(images[s : s + 8192], CPU))
            for s in range(0, len(images), 8192)
        ]
    )
    return {"descriptor": desc, "pixels": pix}


@pytest.fixture(scope="module")
def candidates(fashion) -> Candidates:
    from genbench.metrics.audit.copies import QueryStats as QS
    from genbench.metrics.cache import cache_root, sha256_tensor
    from genbench.utils.files import load_torch, save_torch
    from genbench.utils.naming import digest

    bundle, x, pool, fresh = fashion
    k = cells_for(N, len(fresh.calibration) + len(fresh.check), SETTINGS.min_per_cell)
    index = build_pool_index(pool, SETTINGS, describe=DESCRIBE, device=CPU, k=k)
    off, nh = pool.offset("heldout"), len(bundle.holdout)
    used = torch.zeros(nh, dtype=torch.bool)
    for part in ("reference", "calibration", "check"):
        used[x.parts.positions[part]] = True
    cand = (~used).nonzero()[:, 0]
    key = digest({"net": index.net_sha, "pos": sha256_tensor(cand), "v": VERSION})
    path = cache_root() / "copies" / f"test-candidates-{key}.pt"
    if path.is_file():
        stats = QS.unpack(load_torch(path))
    else:  # about three minutes once; cached with the descriptor
        stats = query_stats(
            bundle.holdout.images[cand], pool, index, SETTINGS, device=CPU, exclude=cand + off
        )
        save_torch(path, stats.pack())
    is_train = torch.zeros(len(pool.images), dtype=torch.bool)
    is_train[pool.train_slice()] = True
    base = _space_vectors(fashion, index, pool.images)
    query = {s: v[cand + off] for s, v in base.items()}
    best_train, train_pos, other_sim, other_pos, null = {}, {}, {}, {}, {}
    other, train = (~is_train).nonzero()[:, 0], is_train.nonzero()[:, 0]
    for space, q in query.items():
        best_train[space], at = (q @ base[space][is_train].T).max(1)
        train_pos[space] = train[at]
        # Each candidate is among them (its own top match): a draw leaves itself out.
        other_sim[space], idx = (q @ base[space][other].T).topk(64, 1)
        other_pos[space] = other[idx]
        null[space] = (int(is_train.sum()), len(other))
    he = base["descriptor"][off : off + nh]
    dsim = query["descriptor"] @ he.T
    dsim[torch.arange(len(cand)), cand] = -2  # not itself
    z = (1 - dsim.topk(10, 1).values).mean(1)
    cal, chk, _ = fresh_stats(fresh, pool, index, SETTINGS, device=CPU)
    args = (calibrate(cal, SETTINGS.alpha), chk, concat_stats(cal, chk), k)
    z = (z - z.mean()) / z.std()
    return Candidates(
        cand, stats, best_train, train_pos, other_sim, other_pos, null, is_train, z, args, index
    )


def _draw_membership(c: Candidates, idx: torch.Tensor, off: int) -> list[Membership]:
    """Membership of a drawn set, each image without itself (its nearest non-training image
    is the first of its 64 nearest that is not itself)."""
    out = []
    own = (c.positions[idx] + off)[:, None]
    for space in ("descriptor", "pixels"):
        ok = c.other_pos[space][idx] != own
        first = ok.float().argmax(1, keepdim=True)
        so = c.other_sim[space][idx].gather(1, first)[:, 0]
        st = c.best_train[space][idx]
        hits = float(((st > so).double() + 0.5 * (st == so).double()).sum())
        nearest = torch.where(
            st >= so, c.train_pos[space][idx], c.other_pos[space][idx].gather(1, first)[:, 0]
        )
        n_train, n_other = c.null[space]
        dh, dn = distinct_reading(nearest, c.is_train)
        null = n_train / (n_train + n_other - 1)
        out.append(Membership(space, hits, len(idx), null, dh, dn))
    return out


def _subset(s: QueryStats, idx: torch.Tensor) -> QueryStats:
    return QueryStats(
        {k: v[idx] for k, v in s.stats.items()},
        s.desc_index[idx],
        s.ncc,
        s.mix,
        s.train_dist[idx],
        s.cell[idx],
    )


def _honest(fashion, c: Candidates, *, n: int, beta: float, draw: int) -> dict:
    """The verdict on n candidates drawn without replacement with weights exp(-beta z)."""
    _, _, pool, _ = fashion
    g = torch.Generator().manual_seed(10_000 * draw + round(100 * beta) + n)
    idx = torch.multinomial(torch.exp(-beta * c.z), n, replacement=False, generator=g)
    calib, chk, fr, k = c.verdict_args
    mem = _draw_membership(c, idx, pool.offset("heldout"))
    return verdict(_subset(c.stats, idx), calib, chk, fr, SETTINGS, k=k, membership=mem)


@pytest.mark.parametrize("n", [500, 5000])
def test_tilted_honest_sets_are_not_flagged(fashion, candidates, n):
    """Held-out images (never trained on) drawn with a tilt towards typical images: a
    mildly mode-seeking honest model is at least this typical. At least 19 of 20 draws
    unflagged for every tilt, at N = 500 and N = 5000."""
    for beta in (0.0, 0.25, 1.0):
        runs = [_honest(fashion, candidates, n=n, beta=beta, draw=d) for d in range(20)]
        flagged = sum(v["flagged"] for v in runs)
        RATES[f"honest, tilt {beta}, N = {n} (20 draws)"] = {
            "flagged": flagged,
            "mean_copy_rate": sum(v["rate"] for v in runs) / len(runs),
            "mean_auc": sum(v["closer_than_fresh"]["auc"] for v in runs) / len(runs),
            "min_p": min(v["p_value"] for v in runs),
        }
        assert flagged <= 1, (n, beta, [v["copied_fraction"] for v in runs if v["flagged"]])


def test_real_data_row_false_flag_rate_is_at_most_alpha(fashion, candidates):
    """40 real-data rows (untilted draws of 500 fresh images): the share flagged is at most
    flag_p (0 of 40). The production membership path agrees with the test's shortcut."""
    runs = [_honest(fashion, candidates, n=N, beta=0.0, draw=100 + d) for d in range(40)]
    flagged = sum(v["flagged"] for v in runs)
    RATES["real-data rows (40 draws of 500)"] = {"flagged": flagged, "rate": flagged / 40}
    assert flagged / 40 <= SETTINGS.flag_p
    bundle, _, pool, _ = fashion
    g = torch.Generator().manual_seed(3)
    idx = torch.randperm(len(candidates.positions), generator=g)[:200]
    off = pool.offset("heldout")
    images = bundle.holdout.images[candidates.positions[idx]]
    sub = _subset(candidates.stats, idx)
    sub.emb = _space_vectors(fashion, candidates.index, images)["descriptor"]
    direct = membership(
        images, sub, pool, candidates.index, own=candidates.positions[idx] + off, device=CPU
    )
    short = _draw_membership(candidates, idx, off)
    for a, b in zip(direct, short, strict=True):
        assert (a.space, a.hits, a.null) == (b.space, b.hits, pytest.approx(b.null))
        assert (a.distinct_hits, a.distinct) == (b.distinct_hits, b.distinct)


# -- an adaptive attacker: a plugin that uses genbench's own audit against it ---------------
LADDER = (
    ("shift", 3),
    ("diagonal", 4),
    ("shift", 5),
    ("rotate", 4),
    ("rotate", 6),
    ("rotate", 8),
    ("rotate", 10),
    ("zoom", 1.12),
    ("zoom", 0.88),
)


class AdaptiveCopier(Generator):
    """Returns training images, each with the mildest edit of :data:`LADDER` that passes
    genbench's per-sample test (white box: it is handed the audit's thresholds)."""

    def __init__(self, *, audit_context, **kw):
        super().__init__(**kw)
        self.net = nn.Linear(1, 1)
        self.ctx = audit_context  # (pool, index, settings, calibration)

    def modules(self):
        return {"net": self.net}

    def train_step(self, images, labels):
        return {"loss": 0.0}

    def sample(self, n, *, labels=None, generator=None):
        pool, index, settings, cal = self.ctx
        imgs = self.train_data.images
        src = imgs[torch.randint(0, len(imgs), (n,), generator=generator)].float() / 255
        out = None
        undecided = torch.ones(n, dtype=torch.bool)
        for family, strength in LADDER:
            g = torch.Generator().manual_seed(int(strength * 100))
            cand = _u8(edits.apply(src, family, strength, gen=g))
            out = cand if out is None else torch.where(undecided[:, None, None, None], cand, out)
            # Only the undecided are searched: a query's statistics are its own.
            todo = undecided.nonzero()[:, 0]
            stats = query_stats(cand[todo], pool, index, settings, device=CPU)
            undecided[todo[~cal.flags(stats)]] = False
            if not undecided.any():
                break
        return out.float() / 255


def test_adaptive_attacker_is_flagged(fashion):
    bundle, _, pool, fresh = fashion
    k = cells_for(N, len(fresh.calibration) + len(fresh.check), SETTINGS.min_per_cell)
    index = build_pool_index(
        pool, SETTINGS, describe={"dataset": "fashion-mnist", "resolution": 32}, device=CPU, k=k
    )
    cal_stats, _, _ = fresh_stats(fresh, pool, index, SETTINGS, device=CPU)
    cal = calibrate(cal_stats, SETTINGS.alpha)
    gen = AdaptiveCopier(
        spec=bundle.spec,
        config=Generator.Config(),
        device=CPU,
        train_data=bundle.train,
        audit_context=(pool, index, SETTINGS, cal),
    )
    images = _u8(gen.sample(FAMILY_N, generator=torch.Generator().manual_seed(11)))
    v = _audit(fashion, images)
    _record("adaptive attacker (mildest passing edit per sample)", v)
    # It dodges most per-sample thresholds; the distribution-level test still sees it.
    assert v["flagged"], v
