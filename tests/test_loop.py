from types import SimpleNamespace

import pytest
import torch

from genbench import registry
from genbench.config import DataConfig, TrainConfig
from genbench.data import load_data
from genbench.storage.checkpoints import checkpoint_paths
from genbench.train.loop import BatchOrder, train
from genbench.utils.device import seed_everything
from genbench.utils.errors import TrainingDiverged
from genbench.utils.files import read_jsonl


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig(source="digits", resolution=8))


def make(digits, seed=0):
    seed_everything(seed)
    cls = registry.load("dcgan")
    return cls(
        spec=digits.spec, config=cls.Config(), device=torch.device("cpu"), train_data=digits.train
    )


def weights(model):
    return {
        f"{k}.{n}": t.clone() for k, m in model.modules().items() for n, t in m.state_dict().items()
    }


def test_batch_order_covers_every_image_once_per_epoch():
    order = BatchOrder(10, 4, seed=1)
    seen = torch.cat([order.indices(s) for s in range(5)])  # 20 = two epochs
    assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(seen[10:].tolist()) == list(
        range(10)
    )
    assert torch.equal(BatchOrder(10, 4, seed=1).indices(3), order.indices(3))


def test_budget_in_kimg_and_logs(digits, tmp_path):
    cfg = TrainConfig(kimg=0.16, batch_size=16, log_every=3, eval_images=0)
    res = train(make(digits), digits.train, cfg, seed=0, run_dir=tmp_path)
    assert (
        res.steps == 10 and res.images_seen == 160 and res.flops_per_step and res.flops_per_step > 0
    )
    log = read_jsonl(tmp_path / "train_log.jsonl")
    assert [r["step"] for r in log] == [3, 6, 9, 10] and "loss_d" in log[-1]


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(digits, tmp_path):
    cfg = TrainConfig(
        kimg=0.192,
        batch_size=16,
        checkpoint_kimg=0.064,
        log_every=2,
        eval_images=32,
        eval_every_kimg=0.064,
    )
    full = make(digits)
    train(full, digits.train, cfg, seed=0, run_dir=tmp_path / "a", holdout=digits.holdout)

    class Killed(Exception):
        pass

    def kill_after_6(step, total, logs):
        if step >= 6:
            raise Killed  # as if the process died here: no final checkpoint

    with pytest.raises(Killed):
        train(
            make(digits),
            digits.train,
            cfg,
            seed=0,
            run_dir=tmp_path / "b",
            holdout=digits.holdout,
            on_step=kill_after_6,
        )
    assert [p.name for p in checkpoint_paths(tmp_path / "b")][-1] == "step-000000004.pt"
    torch.manual_seed(1234)  # a fresh process would have a different RNG state
    resumed = make(digits, seed=99)
    res = train(
        resumed,
        digits.train,
        cfg,
        seed=0,
        run_dir=tmp_path / "b",
        holdout=digits.holdout,
        resume=True,
    )
    assert res.steps == 12
    wa, wb = weights(full), weights(resumed)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    steps = [r["step"] for r in read_jsonl(tmp_path / "b" / "train_log.jsonl")]
    assert steps == sorted(set(steps))  # nothing logged twice after the resume


def test_non_finite_loss_stops_the_run(digits, tmp_path):
    model = make(digits)
    model.train_step = lambda x, y: {"loss": float("nan")}
    with pytest.raises(TrainingDiverged, match="loss 'loss' became nan at step 1"):
        train(
            model,
            digits.train,
            TrainConfig(kimg=0.032, batch_size=16, eval_images=0),
            seed=0,
            run_dir=tmp_path,
        )


def test_checkpoint_that_does_not_load_names_the_file(digits, tmp_path):
    from genbench.utils.errors import CheckpointError

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "step-000000001.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="step-000000001.pt"):
        train(
            make(digits),
            digits.train,
            TrainConfig(kimg=0.032, batch_size=16),
            seed=0,
            run_dir=tmp_path,
            resume=True,
        )


def test_wall_clock_budget_stops_early(digits, tmp_path):
    cfg = TrainConfig(kimg=50, batch_size=16, max_minutes=0.02, eval_images=0)
    res = train(make(digits), digits.train, cfg, seed=0, run_dir=tmp_path)
    assert res.stopped_by == "wall-clock" and 0 < res.steps < 50_000 // 16
    assert checkpoint_paths(tmp_path)  # the last state is saved for sampling and resume


def test_cuda_only_settings_are_not_applied_on_cpu(digits, tmp_path, monkeypatch):
    model = make(digits)
    compiled = []
    for m in model.modules().values():
        monkeypatch.setattr(m, "compile", lambda *a, **k: compiled.append(1))
    cfg = TrainConfig(
        kimg=0.032, batch_size=16, eval_images=0, compile=True, channels_last=True, precision="bf16"
    )
    train(model, digits.train, cfg, seed=0, run_dir=tmp_path)
    assert not compiled
    assert all(p.is_contiguous() for m in model.modules().values() for p in m.parameters())
    assert all(p.dtype == torch.float32 for m in model.modules().values() for p in m.parameters())


def test_an_extra_duty_sees_every_logged_record(digits, tmp_path):
    seen = []

    class Collect:
        def after_step(self, state):
            if state.logged is not None:
                seen.append(dict(state.logged))

    cfg = TrainConfig(kimg=0.16, batch_size=16, log_every=4, eval_images=0)
    train(make(digits), digits.train, cfg, seed=0, run_dir=tmp_path, duties=[Collect()])
    assert [r["step"] for r in seen] == [4, 8, 10]
    assert seen == read_jsonl(tmp_path / "train_log.jsonl")


def test_budget_in_flops_buys_the_steps_it_pays_for(digits, tmp_path):
    per_step = train(
        make(digits), digits.train, TrainConfig(kimg=0.016, batch_size=16, eval_images=0),
        seed=0, run_dir=tmp_path / "count",
    ).flops_per_step  # fmt: skip
    cfg = TrainConfig(budget="tflop", tflop=6.5 * per_step / 1e12, batch_size=16, eval_images=0)
    res = train(make(digits), digits.train, cfg, seed=0, run_dir=tmp_path / "flops")
    assert res.steps == 7 and res.images_seen == 7 * 16  # ceil(6.5): the budget is reached
    assert res.flops_total >= cfg.tflop * 1e12 > res.flops_total - per_step
    # Snapshots at fractions of a FLOP budget fall on the steps those FLOPs buy.
    taken: list[int] = []
    train(
        make(digits), digits.train, cfg, seed=0, run_dir=tmp_path / "snap",
        snapshot_fractions=[0.25, 0.5], on_snapshot=lambda s, n, t: taken.append(s),
    )  # fmt: skip
    assert taken == [2, 4]  # round(7 / 4), round(7 / 2)


def test_budget_in_seconds_stops_on_the_time_inside_train_steps(digits, tmp_path, monkeypatch):
    # A clock that advances 0.05 s per reading: every train step "takes" 0.05 s, whatever
    # the machine's load, so the stopping step is exact.
    import genbench.train.loop as loop

    ticks = iter(range(10**6))
    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=lambda: next(ticks) * 0.05))
    cfg = TrainConfig(budget="seconds", seconds=0.6, batch_size=16, eval_images=0, log_every=1)
    taken: list[int] = []
    res = train(
        make(digits), digits.train, cfg, seed=0, run_dir=tmp_path,
        snapshot_fractions=[0.25, 0.5], on_snapshot=lambda s, n, t: taken.append(s),
    )  # fmt: skip
    assert res.stopped_by == "budget" and res.steps == 12 and res.train_seconds == 0.6
    assert read_jsonl(tmp_path / "train_log.jsonl")[-1]["step"] == 12
    assert taken == [3, 6]  # each snapshot once, at the first step past 0.15 s and 0.3 s


def test_checkpoints_fall_at_tenths_of_a_flop_or_seconds_budget(digits, tmp_path, monkeypatch):
    import genbench.train.duties as duties
    import genbench.train.loop as loop

    saved: list[int] = []
    monkeypatch.setattr(duties, "save_checkpoint", lambda *a, step, **k: saved.append(step))
    per_step = train(
        make(digits), digits.train, TrainConfig(kimg=0.016, batch_size=16, eval_images=0),
        seed=0, run_dir=tmp_path / "count",
    ).flops_per_step  # fmt: skip
    # 40 steps bought by FLOPs: every 4th step, not a tenth of the unused kimg budget.
    cfg = TrainConfig(budget="tflop", tflop=39.5 * per_step / 1e12, batch_size=16, eval_images=0)
    saved.clear()
    train(make(digits), digits.train, cfg, seed=0, run_dir=tmp_path / "flops")
    assert saved == list(range(4, 40, 4))  # the final one is the loop's own
    # A seconds budget checkpoints by the clock: 0.05 s per step, a save every 0.06 s.
    ticks = iter(range(10**6))
    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=lambda: next(ticks) * 0.05))
    cfg = TrainConfig(budget="seconds", seconds=0.6, batch_size=16, eval_images=0)
    saved.clear()
    train(make(digits), digits.train, cfg, seed=0, run_dir=tmp_path / "seconds")
    assert saved[0] == 2 and saved == sorted(set(saved)) and 8 <= len(saved) <= 10
    assert saved[-1] < 12


def test_a_flop_or_seconds_budget_needs_its_value():
    with pytest.raises(ValueError, match="train.tflop"):
        TrainConfig(budget="tflop")
    with pytest.raises(ValueError, match="train.seconds"):
        TrainConfig(budget="seconds")
