"""Training subsets (data.train_subset) and Gu et al.'s nearest-neighbour criterion, the
memorization experiment's two instruments, on digits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genbench.config import DataConfig, MetricsConfig
from genbench.data import load_data
from genbench.metrics import scoring
from genbench.metrics.audit import fresh_sets, pool_of
from genbench.metrics.audit.nn_ratio import THRESHOLD, nn_ratio_block, nn_ratios
from genbench.utils.errors import DataError

CPU = torch.device("cpu")
DATA = DataConfig(source="digits", resolution=8, split="random")


class _Inputs:
    """What pool_of and fresh_sets read from a scoring call."""

    def __init__(self, bundle, n: int = 100) -> None:
        self.bundle = bundle
        self.parts, _ = scoring.scoring_parts(bundle, MetricsConfig(copy_fresh=100), n=n)


def _subset(n: int | None):
    return load_data(DATA.model_copy(update={"train_subset": n}))


def test_train_subsets_nest_and_leave_every_measured_image_unchanged():
    whole, small, big = _subset(None), _subset(16), _subset(200)
    assert len(small.train) == 16 and len(big.train) == 200
    # Nested: a smaller subset's images are the first of every larger one's.
    assert torch.equal(big.train.source_index[:16], small.train.source_index)
    assert torch.equal(big.train.images[:16], small.train.images)
    # The subset and the rest are the training split, and nothing else.
    for b in (small, big):
        assert sorted(b.full_train().source_index.tolist()) == whole.train.source_index.tolist()
        assert b.split["train_index_sha256"] == whole.split["train_index_sha256"]
        assert b.split["train_subset"] == len(b.train)
    # Held-out split, validation slice, FID reference, real-data row and the audit's fresh
    # images are the same at every size, and the audit's pool is the same tensor.
    parts = [_Inputs(b) for b in (whole, small, big)]
    for b, x in zip((small, big), parts[1:], strict=True):
        assert torch.equal(b.holdout.images, whole.holdout.images)
        assert torch.equal(b.validation.images, whole.validation.images)
        for name in ("reference", "real", "calibration", "check"):
            assert torch.equal(getattr(x.parts, name).images, getattr(parts[0].parts, name).images)
        fw = fresh_sets(parts[0], pool_of(parts[0]), want=100)
        fs = fresh_sets(x, pool_of(x), want=100)
        assert torch.equal(fs.calibration, fw.calibration) and torch.equal(fs.check, fw.check)
    pools = [pool_of(x) for x in parts[1:]]
    assert torch.equal(pools[0].images, pools[1].images)
    assert pools[0].train_slice() == slice(0, 16) and pools[1].train_slice() == slice(0, 200)
    assert pools[0].offset("unseen") == 16


def test_a_train_subset_larger_than_the_split_is_a_one_line_error():
    n = len(_subset(None).train)
    with pytest.raises(DataError, match=f"needs {n + 1} images but the training split holds {n}"):
        _subset(n + 1)
    half = n // 2 + 1
    with pytest.raises(DataError, match=f"needs {2 * half} images"):
        load_data(DATA.model_copy(update={"train_subset": half, "train_subset_part": 1}))
    with pytest.raises(DataError, match="train_subset_part needs data.train_subset"):
        load_data(DATA.model_copy(update={"train_subset_part": 1}))


def test_the_second_block_is_disjoint_from_the_first_and_measures_the_same():
    first = _subset(16)
    second = load_data(DATA.model_copy(update={"train_subset": 16, "train_subset_part": 1}))
    assert len(second.train) == 16
    assert not set(first.train.source_index.tolist()) & set(second.train.source_index.tolist())
    # block 1 is the next 16 of the same permutation: the first 32 of a subset of 32
    assert torch.equal(_subset(32).train.source_index[16:], second.train.source_index)
    whole = sorted(_subset(None).train.source_index.tolist())
    assert sorted(second.full_train().source_index.tolist()) == whole
    assert torch.equal(second.holdout.images, first.holdout.images)
    assert second.split["train_subset_part"] == 1 and "train_subset_part" not in first.split


def test_the_two_model_check_tells_generalizing_twins_from_memorizing_ones():
    from genbench.report.twins import two_model_check

    g = torch.Generator().manual_seed(0)
    train_a = torch.randint(0, 256, (32, 1, 8, 8), generator=g, dtype=torch.uint8)
    train_b = torch.randint(0, 256, (32, 1, 8, 8), generator=g, dtype=torch.uint8)
    # Memorizing: each model returns its own training images, whatever the noise.
    mem = two_model_check(train_a[:20], train_b[:20], train_a, train_b)
    assert mem["closer_to_twin"] == 0.0 and max(mem["own_train_median"].values()) < 1e-6
    # Generalizing: both draw (nearly) the same new image from the same noise.
    new = torch.randint(0, 256, (20, 1, 8, 8), generator=g, dtype=torch.uint8)
    near = (new.int() + torch.randint(-3, 4, new.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    gen = two_model_check(new, near, train_a, train_b)
    assert gen["closer_to_twin"] == 1.0
    assert gen["between_median"] < 0.02 < min(gen["own_train_median"].values())
    with pytest.raises(ValueError, match="sample sets differ"):
        two_model_check(new, near[:5], train_a, train_b)


def test_nn_ratio_matches_brute_force_and_calls_copies_memorized():
    b = _subset(None)
    train = b.train.images[:300]
    queries = torch.cat([train[:20], b.holdout.images[:80]])
    r = nn_ratios(queries, train, device=CPU, chunk=64)  # several blocks
    d = torch.cdist(queries.flatten(1).double() / 255, train.flatten(1).double() / 255)
    two = d.topk(2, 1, largest=False).values
    assert torch.allclose(r.double(), two[:, 0] / two[:, 1], atol=1e-6)
    assert (r[:20] == 0).all()  # exact copies: distance 0 to their source
    block = nn_ratio_block(r, nn_ratios(b.holdout.images[80:280], train, device=CPU))
    assert block["n_memorized"] >= 20 and block["threshold"] == THRESHOLD
    assert block["fresh_fraction"] < 0.05  # never-seen digits are rarely that close to one
    assert block["ci95"][0] <= block["fraction"] <= block["ci95"][1]


MINIATURE = """name = "memo"
models = ["ddpm"]
[data]
source = "digits"
resolution = 8
split = "random"
train_subset = 8
[train]
kimg = 3.2
batch_size = 16
log_every = 50
eval_images = 0
[sample]
n = 100
batch_size = 50
[metrics]
enabled = true
names = ["fid"]
n_ref = 100
classifier = false
bootstrap = 0
copy_descriptor_steps = 40
[model.ddpm]
base_channels = 16
"""


@pytest.mark.slow
def test_a_ddpm_trained_on_eight_digits_is_flagged_by_the_audit_and_by_gu_et_al(
    tmp_path, monkeypatch
):
    """The memorization experiment in miniature: 200 steps on 8 images (400 passes). The
    audit flags the run against the 8 it saw (the other 1287 training images count as
    never seen), and Gu et al.'s criterion calls far more samples memorized than fresh
    held-out images."""
    import json

    import genbench
    from tests.standin import standin_choice

    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(scoring, "extractor_for", lambda cfg, **kw: standin_choice())
    exp = tmp_path / "memo.toml"
    exp.write_text(MINIATURE)
    # Two runs on disjoint blocks of 8 (train_subset_part 0 and 1), for the two-model check.
    out, twin = genbench.run(
        exp, results=tmp_path / "results", sweep={"data.train_subset_part": [0, 1]}
    )
    m = json.loads((out.run_dir / "metrics.json").read_text())
    c = m["copies"]
    assert c["pool"]["train"] == 8 and c["pool"]["unseen"] > 1000
    assert m["protocol"]["train_subset"]["train_subset"] == 8
    assert c["flagged"], c["copied_fraction"]
    mem = c["copied_fraction"]["membership"]
    assert all(v["nearest_is_training"] > 20 * v["null_rate"] for v in mem.values()), mem
    gu = c["nn_ratio"]
    assert gu["ci95"][0] > gu["fresh_ci95"][1], gu  # memorized beyond never-seen images
    # The report's memorization view reads the same runs: both detectors flag the first.
    report = genbench.build_report(tmp_path / "results", figures=False)
    memo = json.loads((report.out_dir / "summary.json").read_text())["memorization"]
    row = next(r for r in memo["runs"] if r["run_id"] == out.run_dir.name)
    assert (row["n_train"], row["epochs"]) == (8, 400.0)
    assert row["audit_flagged"] and row["gu_flagged"]
    assert row["gu"]["fraction"] == gu["fraction"]
    # Two memorizing twins from the same noise: each draws its own training images, so a
    # sample's twin is farther away than its own nearest training image.
    (pair,) = memo["two_model"]
    assert pair["runs"] == [out.run_dir.name, twin.run_dir.name] and pair["n"] == 100
    assert pair["closer_to_twin"] < 0.5, pair
    assert pair["between_median"] > max(pair["own_train_median"].values()), pair
    text = (report.out_dir / "summary.md").read_text()
    assert "## Memorization" in text and "two-model check" in text


def test_the_memorization_experiment_plans_its_sizes_and_the_command_line_replaces_them():
    import genbench

    planned = genbench.plan("memorization")
    sizes = [(p.config.model, p.config.data.train_subset) for p in planned]
    assert sizes == [(m, n) for n in (64, 16384) for m in ("ddpm", "cddpm")]
    assert len({p.run_id for p in planned}) == 4
    again = genbench.plan("memorization", sweep={"data.train_subset": [32]}, models=["ddpm"])
    assert [p.config.data.train_subset for p in again] == [32]


def _record(model: str, n_train: int, kimg: float, *, audit: float, gu: float, fresh: float):
    from genbench.report.collect import RunRecord

    def est(f: float) -> dict:
        return {"fraction": f, "ci95": [f - 0.05, f + 0.05]}

    copies = {
        "flagged": audit > 0.1,
        "copied_fraction": {"per_sample": est(audit), "membership": {"pixels": est(audit)}},
        "nn_ratio": {**est(gu), "fresh_fraction": fresh, "fresh_ci95": [0.0, fresh + 0.01]},
    }
    metrics = {
        "data": {"n_train": n_train, "train_subset": n_train},
        "copies": copies,
        "scores": {"fid": 50.0, "kid": {"mean": 0.01}},
        "train": {"images_seen": int(kimg * 1000)},
    }
    run_id = f"memo-{model}-{n_train}-{kimg:g}"
    return RunRecord(
        run_id, Path(run_id), "done", experiment="memo", model=model, seed=0, metrics=metrics
    )


def test_the_memorization_view_has_a_row_per_run_and_draws_size_and_time(tmp_path):
    from genbench.report import memorization

    records = [
        _record("ddpm", 64, 24, audit=0.0, gu=0.0, fresh=0.001),
        _record("ddpm", 64, 200, audit=0.4, gu=0.72, fresh=0.001),
        _record("ddpm", 16384, 200, audit=0.0, gu=0.02, fresh=0.02),
        _record("cddpm", 64, 200, audit=0.5, gu=0.8, fresh=0.001),
    ]
    rows = memorization.memorization_rows(records)
    assert [(r["model"], r["n_train"], r["epochs"]) for r in rows] == [
        ("cddpm", 64, 3125.0),
        ("ddpm", 64, 375.0),
        ("ddpm", 64, 3125.0),
        ("ddpm", 16384, 12.2),
    ]
    # Gu et al. flag only where their share's interval clears the fresh images' own.
    assert [r["gu_flagged"] for r in rows] == [True, False, True, False]
    assert [r["audit_flagged"] for r in rows] == [True, False, True, False]
    md = memorization.memorization_markdown(rows)
    assert md.count("\n| ddpm s0 |") == 3 and "0.720 [0.670, 0.770] (fresh 0.001)" in md
    fig = memorization.memorization_figure(rows, tmp_path)
    assert fig is not None and (tmp_path / "memorization.png").is_file()
    # A run on the second block is a row of its own, labelled, and off the size curve.
    twin = _record("ddpm", 64, 200, audit=0.5, gu=0.8, fresh=0.001)
    twin.metrics["data"]["train_subset_part"] = 1
    with_twin = memorization.memorization_rows([*records, twin])
    assert len(
        with_twin
    ) == 5 and "| ddpm s0, block 1 | 64 |" in memorization.memorization_markdown(with_twin)
    # One size and one budget per model: nothing to draw.
    assert memorization.memorization_figure(rows[:1], tmp_path / "none") is None
    # Runs of an experiment without subsets are not this view's.
    plain = _record("ddpm", 60000, 200, audit=0.0, gu=0.0, fresh=0.0)
    plain.metrics["data"].pop("train_subset")
    assert memorization.memorization_rows([plain]) == []
