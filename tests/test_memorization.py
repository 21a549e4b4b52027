"""Training subsets (data.train_subset) and Gu et al.'s nearest-neighbour criterion, the
memorization experiment's two instruments, on digits."""

from __future__ import annotations

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
    with pytest.raises(DataError, match=f"train_subset = {n + 1} but the training split holds {n}"):
        _subset(n + 1)


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
    (out,) = genbench.run(exp, results=tmp_path / "results")
    m = json.loads((out.run_dir / "metrics.json").read_text())
    c = m["copies"]
    assert c["pool"]["train"] == 8 and c["pool"]["unseen"] > 1000
    assert m["protocol"]["train_subset"]["train_subset"] == 8
    assert c["flagged"], c["copied_fraction"]
    mem = c["copied_fraction"]["membership"]
    assert all(v["nearest_is_training"] > 20 * v["null_rate"] for v in mem.values()), mem
    gu = c["nn_ratio"]
    assert gu["ci95"][0] > gu["fresh_ci95"][1], gu  # memorized beyond never-seen images


def test_the_memorization_experiment_plans_its_sizes_and_the_command_line_replaces_them():
    import genbench

    planned = genbench.plan("memorization")
    sizes = [(p.config.model, p.config.data.train_subset) for p in planned]
    assert sizes == [(m, n) for n in (64, 1024, 16384) for m in ("ddpm", "cddpm")]
    assert len({p.run_id for p in planned}) == 6
    again = genbench.plan("memorization", sweep={"data.train_subset": [32]}, models=["ddpm"])
    assert [p.config.data.train_subset for p in again] == [32]
