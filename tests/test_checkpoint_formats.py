"""Checkpoints with network weights in safetensors next to weights_only torch files."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genbench.storage.weights import load_weights, merge_tensors, save_weights, split_tensors
from genbench.utils.errors import CheckpointError


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight  # shared storage: safetensors needs its own copy
        self.norm = nn.BatchNorm2d(3)

    def get_extra_state(self):
        return {"note": "not a tensor"}

    def set_extra_state(self, state):
        self.note = state["note"]


def test_weights_round_trip_with_bf16_tied_and_non_tensor_state(tmp_path):
    torch.manual_seed(0)
    modules = {"net": Tied(), "ema.v2": nn.Conv2d(3, 2, 3).to(torch.bfloat16)}
    modules["net"].norm.running_mean.add_(1.5)
    state = {k: m.state_dict() for k, m in modules.items()}
    tensors, rest = split_tensors(state)
    assert rest == {"net": {"_extra_state": {"note": "not a tensor"}}}
    path = save_weights(tmp_path / "w.safetensors", tensors, metadata={"step": "7"})

    back, meta = load_weights(path)
    assert meta["step"] == "7"
    merged = merge_tensors(back, rest)
    assert sorted(merged["net"]) == sorted(state["net"])
    for name, sd in state.items():
        for k, v in sd.items():
            got = merged[name][k]
            if isinstance(v, torch.Tensor):
                assert got.dtype == v.dtype and torch.equal(got, v), (name, k)
            else:
                assert got == v
    fresh = {"net": Tied(), "ema.v2": nn.Conv2d(3, 2, 3).to(torch.bfloat16)}
    for k, m in fresh.items():
        m.load_state_dict(merged[k])
    assert fresh["net"].note == "not a tensor"
    assert torch.equal(fresh["net"].norm.running_mean, modules["net"].norm.running_mean)

    # Plain safetensors users get each network by its prefix.
    from safetensors.torch import load_file

    flat = load_file(str(path))
    assert torch.equal(flat["ema.v2.weight"], modules["ema.v2"].weight)


def test_a_foreign_or_corrupt_weights_file_is_a_checkpoint_error(tmp_path):
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a genbench weights file"):
        load_weights(foreign)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        load_weights(bad)


# -- checkpoints in the training loop ----------------------------------------------
@pytest.fixture(scope="module")
def digits():
    from genbench.config import DataConfig
    from genbench.data import load_data

    return load_data(DataConfig(source="digits", resolution=8))


def make(digits, seed=0):
    from genbench import registry
    from genbench.utils.device import seed_everything

    seed_everything(seed)
    cls = registry.load("dcgan")
    return cls(
        spec=digits.spec, config=cls.Config(), device=torch.device("cpu"), train_data=digits.train
    )


def weights(model):
    return {f"{k}.{n}": t for k, m in model.modules().items() for n, t in m.state_dict().items()}


def train_cfg(fmt: str):
    from genbench.config import TrainConfig

    return TrainConfig(
        kimg=0.192, batch_size=16, checkpoint_kimg=0.032, eval_images=0, checkpoint_format=fmt
    )


@pytest.fixture(scope="module")
def uninterrupted(digits, tmp_path_factory):
    from genbench.train.loop import train

    model = make(digits)
    train(model, digits.train, train_cfg("torch"), seed=0, run_dir=tmp_path_factory.mktemp("a"))
    return weights(model)


@pytest.mark.parametrize(
    ("first", "then"),
    [("safetensors", "safetensors"), ("torch", "safetensors"), ("safetensors", "torch")],
)
def test_resume_from_either_format_gives_the_uninterrupted_weights(
    digits, tmp_path, uninterrupted, first, then
):
    from genbench.storage.checkpoints import checkpoint_paths, restore
    from genbench.train.loop import train
    from genbench.utils.files import load_torch

    class Killed(Exception):
        pass

    def kill_after_6(step, total, logs):
        if step >= 6:
            raise Killed  # as if the process died here: no final checkpoint

    with pytest.raises(Killed):
        cfg = train_cfg(first)
        train(make(digits), digits.train, cfg, seed=0, run_dir=tmp_path, on_step=kill_after_6)
    ckpts = tmp_path / "checkpoints"
    if first == "safetensors":
        assert sorted(p.name for p in ckpts.iterdir()) == [
            "step-000000002.pt",
            "step-000000002.safetensors",
            "step-000000004.pt",
            "step-000000004.safetensors",
        ]
        light = load_torch(ckpts / "step-000000004.pt")
        # The torch file keeps what is not network weights: optimizer and RNG state.
        assert light["model"]["modules"] == {}
        assert set(light["model"]["optimizers"]) == {"G", "D"}
        assert light["weights"]["file"] == "step-000000004.safetensors"

    torch.manual_seed(1234)  # a fresh process would have a different RNG state
    resumed = make(digits, seed=99)
    res = train(resumed, digits.train, train_cfg(then), seed=0, run_dir=tmp_path, resume=True)
    assert res.steps == 12
    got = weights(resumed)
    assert all(torch.equal(uninterrupted[k], got[k]) for k in uninterrupted)
    # Two checkpoints kept, each complete; no weights file without its torch file.
    last = checkpoint_paths(tmp_path)
    assert [p.name for p in last] == ["step-000000010.pt", "step-000000012.pt"]
    want = {p.name for p in last} | (
        {p.with_suffix(".safetensors").name for p in last} if then == "safetensors" else set()
    )
    assert {p.name for p in ckpts.iterdir()} == want
    reloaded = make(digits, seed=5)
    restore(reloaded, last[-1])
    assert all(torch.equal(got[k], v) for k, v in weights(reloaded).items())


def test_a_checkpoint_with_missing_stale_or_escaping_weights_is_refused(digits, tmp_path):
    from genbench.storage.checkpoints import restore, save_checkpoint
    from genbench.utils.files import load_torch, save_torch

    model = make(digits)
    kw = dict(images_seen=16, elapsed=1.0, train_seconds=1.0, fmt="safetensors")
    first = save_checkpoint(tmp_path, model, step=1, **kw)
    second = save_checkpoint(tmp_path, model, step=2, **kw)
    # Another checkpoint's weights under this one's name: refused, not silently loaded.
    first.with_suffix(".safetensors").replace(second.with_suffix(".safetensors"))
    with pytest.raises(CheckpointError, match="belongs to another checkpoint"):
        restore(make(digits), second)
    second.with_suffix(".safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"needs its weights file .*step-000000002"):
        restore(make(digits), second)
    state = load_torch(second)
    state["weights"]["file"] = "../../evil.safetensors"
    save_torch(second, state)
    with pytest.raises(CheckpointError, match="invalid weights file"):
        restore(make(digits), second)
