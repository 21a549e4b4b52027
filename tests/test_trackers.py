"""Experiment trackers: TensorBoard event files and W&B offline runs, read back after writing."""

from __future__ import annotations

import json
import struct
import sys
import time
from pathlib import Path

import pytest
import torch

from genbench.storage.folder import TENSORBOARD, WANDB_ID
from genbench.train.trackers import (
    Tracker,
    Trackers,
    loggable_scores,
    open_trackers,
    sample_grid,
)

PROTOCOL = {"fingerprint": "fp0123456789", "n_generated": 16, "extractor": "standin"}
SCORES = {"fid": 12.5, "kid": {"mean": 0.01, "std": 0.002}, "isc": None, "precision": 0.75}


def images(n: int = 16, c: int = 1, side: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, c, side, side), generator=g, dtype=torch.uint8)


def log_a_run(trackers: Trackers, steps: range = range(2, 11, 2)) -> None:
    for s in steps:
        trackers.training({"step": s, "kimg": s * 0.016, "loss_g": 1.0 / s, "loss_d": 0.5})
    trackers.snapshot(step=4, scores={"fid": 40.0, "kid": {"mean": 0.2, "std": 0.01}})
    trackers.final(step=10, scores=SCORES, protocol=PROTOCOL, images=images())


def warnings_into(out: list[str]):
    return out.append


# -- helpers ------------------------------------------------------------------
def test_flatten_scores_keeps_finite_numbers_and_names_sub_values():
    got = loggable_scores({**SCORES, "bad": float("nan"), "flag": True, "text": "x"})
    assert got == {"fid": 12.5, "kid": 0.01, "kid_std": 0.002, "precision": 0.75}


def test_sample_grid_tiles_the_first_64_images():
    grid = sample_grid(images(100, c=3, side=8))
    # 8 x 8 tiles of 8 px with 2 px padding: 2 + 8 * 10 = 82
    assert grid.dtype == torch.uint8 and grid.shape == (3, 82, 82)
    assert torch.equal(grid[:, 2:10, 2:10], images(100, c=3, side=8)[0])
    assert sample_grid(images(4, c=1)).shape == (1, 22, 22)


# -- TensorBoard ----------------------------------------------------------------
def tb_events(run_dir: Path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / TENSORBOARD), size_guidance={"scalars": 0})
    acc.Reload()
    return acc


def test_tensorboard_event_files_hold_scalars_snapshots_scores_protocol_and_grid(tmp_path):
    pytest.importorskip("tensorboard")
    warned: list[str] = []
    trackers = open_trackers(
        ["jsonl", "tensorboard"], run_dir=tmp_path, run_id="r", group="g", warn=warned.append
    )
    assert trackers.names == ["tensorboard"] and not warned
    log_a_run(trackers)
    trackers.close()

    acc = tb_events(tmp_path)
    tags = acc.Tags()
    loss = acc.Scalars("train/loss_g")
    assert [e.step for e in loss] == [2, 4, 6, 8, 10]
    assert loss[-1].value == pytest.approx(0.1)
    assert [(e.step, e.value) for e in acc.Scalars("snapshot/fid")] == [(4, 40.0)]
    assert acc.Scalars("final/fid")[0].value == 12.5 and acc.Scalars("final/fid")[0].step == 10
    assert acc.Scalars("final/kid_std")[0].value == pytest.approx(0.002)
    assert "final/isc" not in tags["scalars"]  # a null score is not logged as a number
    (img,) = acc.Images("samples")
    assert (img.step, img.width, img.height) == (10, 42, 42)  # 4 x 4 tiles of 8 px
    text = acc.Tensors("final/protocol/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "fp0123456789" in text and '"n_generated": 16' in text


def test_tensorboard_resume_drops_what_a_killed_process_logged_after_the_checkpoint(tmp_path):
    pytest.importorskip("tensorboard")
    first = open_trackers(["tensorboard"], run_dir=tmp_path, run_id="r", group="g", warn=print)
    for s in range(1, 9):
        first.training({"step": s, "loss": 1.0})
    first.close()
    second = open_trackers(
        ["tensorboard"], run_dir=tmp_path, run_id="r", group="g", resume_step=5, warn=print
    )
    for s in range(6, 11):
        second.training({"step": s, "loss": 2.0})
    second.close()
    pts = [(e.step, e.value) for e in tb_events(tmp_path).Scalars("train/loss")]
    assert pts == [(s, 1.0) for s in range(1, 6)] + [(s, 2.0) for s in range(6, 11)]


# -- Weights & Biases (offline) --------------------------------------------------
def wandb_records(run_dir: Path, *, timeout: float = 60.0) -> list:
    """Every record of the offline run's .wandb file, once W&B's service has written the
    run's exit record (it flushes the file asynchronously after ``finish`` returns)."""
    deadline = time.monotonic() + timeout
    while True:
        recs = _read_wandb_file(run_dir)
        if any(r.WhichOneof("record_type") == "exit" for r in recs):
            return recs
        assert time.monotonic() < deadline, "W&B never finished writing its offline run"
        time.sleep(0.2)


def _read_wandb_file(run_dir: Path) -> list:
    """The records of a .wandb file: W&B's LevelDB-style log of protobuf ``Record``s."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    data, block, pos, buf, out = path.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is zero padding
            pos += left
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and n == 0:
            pos += left
            continue
        buf, pos = buf + data[pos + 7 : pos + 7 + n], pos + 7 + n
        if kind in (1, 4):  # a FULL record, or the LAST piece of one
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


def wandb_history(records: list) -> list[dict]:
    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            rows.append(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            )
    return rows


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    monkeypatch.setenv("WANDB_PROJECT", "genbench-test")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def test_wandb_offline_run_holds_scalars_snapshots_scores_fingerprint_and_grid(
    tmp_path, wandb_offline
):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    warned: list[str] = []
    trackers = open_trackers(
        ["jsonl", "wandb"],
        run_dir=run_dir,
        run_id="tiny-dcgan-s0-abc",
        group="tiny",
        tags=["dcgan"],
        config={"train": {"kimg": 0.1}},
        warn=warned.append,
    )
    assert trackers.names == ["wandb"], warned
    log_a_run(trackers)
    trackers.close()

    saved = json.loads((run_dir / WANDB_ID).read_text())
    assert saved["id"].startswith("tiny-dcgan-s0-abc-") and saved["project"] == "genbench-test"
    recs = wandb_records(run_dir)
    (run,) = [r.run for r in recs if r.WhichOneof("record_type") == "run"]
    assert (run.run_id, run.display_name, run.run_group, run.project) == (
        saved["id"],
        "tiny-dcgan-s0-abc",
        "tiny",
        "genbench-test",
    )
    config = {
        u.key: json.loads(u.value_json)
        for r in recs
        if r.WhichOneof("record_type") in ("run", "config")
        for u in (r.run.config.update if r.WhichOneof("record_type") == "run" else r.config.update)
    }
    assert config["train"] == {"kimg": 0.1} and config["protocol"]["fingerprint"] == "fp0123456789"

    rows = wandb_history(recs)
    losses = [(r["step"], r["train/loss_g"]) for r in rows if "train/loss_g" in r]
    assert losses == [(s, pytest.approx(1.0 / s)) for s in range(2, 11, 2)]
    assert [(r["step"], r["snapshot/fid"]) for r in rows if "snapshot/fid" in r] == [(4, 40.0)]
    final = next(r for r in rows if "final/fid" in r)
    assert final["step"] == 10 and final["final/kid_std"] == pytest.approx(0.002)
    assert not any("final/isc" in r for r in rows)
    image = next(r for r in rows if "samples/path" in r)
    assert (image["step"], image["samples/width"], image["samples/height"]) == (10, 42, 42)
    media = next((run_dir / "wandb").glob("offline-run-*/files")) / image["samples/path"]
    assert media.is_file()
    summary = {
        u.key or "/".join(u.nested_key): json.loads(u.value_json)
        for r in recs
        if r.WhichOneof("record_type") == "summary"
        for u in r.summary.update
    }
    assert summary["final/fingerprint"] == "fp0123456789"


# -- failures are warnings ---------------------------------------------------------
def test_a_tracker_that_cannot_start_is_one_warning(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    warned: list[str] = []
    trackers = open_trackers(
        ["jsonl", "wandb", "tensorboard"],
        run_dir=not_a_dir,  # TensorBoard cannot make its folder under a file
        run_id="r",
        group="g",
        warn=warned.append,
    )
    assert not trackers and trackers.names == []
    assert len(warned) == 2
    assert "wandb logging is off" in warned[0] and "genbench[wandb]" in warned[0]
    assert "tensorboard logging is off" in warned[1]
    log_a_run(trackers)  # nothing to log to, nothing raised


class Broken(Tracker):
    name = "broken"

    def __init__(self) -> None:
        self.closed = False
        self.calls = 0

    def log_scalars(self, values, *, step):
        self.calls += 1
        raise OSError("disk full")

    def close(self, *, failed=False):
        self.closed = failed


class Recorder(Tracker):
    name = "recorder"

    def __init__(self) -> None:
        self.scalars: list[tuple[int, dict]] = []
        self.images: list[tuple[str, int, tuple]] = []
        self.protocols: list[dict] = []
        self.closed = None

    def log_scalars(self, values, *, step):
        self.scalars.append((step, dict(values)))

    def log_image(self, tag, image, *, step):
        self.images.append((tag, step, tuple(image.shape)))

    def log_protocol(self, protocol, *, step):
        self.protocols.append(dict(protocol))

    def close(self, *, failed=False):
        self.closed = failed


def test_a_tracker_failing_mid_run_is_warned_about_once_and_dropped():
    broken, rec, warned = Broken(), Recorder(), []
    trackers = Trackers([broken, rec], warn=warned.append)
    log_a_run(trackers)
    trackers.close()
    assert broken.calls == 1 and broken.closed is True
    assert warned == [
        "broken logging stopped: OSError: disk full (the run goes on; its JSONL files have every "
        "number)"
    ]
    assert [s for s, _ in rec.scalars] == [2, 4, 6, 8, 10, 4, 10]
    assert rec.scalars[0][1] == {"train/kimg": 0.032, "train/loss_g": 0.5, "train/loss_d": 0.5}
    assert rec.images == [("samples", 10, (1, 42, 42))]
    assert rec.protocols == [PROTOCOL] and rec.closed is False


# -- the config key ---------------------------------------------------------------
def run_config(**train):
    from genbench.config import DataConfig, MetricsConfig, RunConfig, SampleConfig, TrainConfig

    return RunConfig(
        experiment="tiny",
        model="dcgan",
        seed=0,
        data=DataConfig(source="digits", resolution=16),
        train=TrainConfig(kimg=0.1, **train),
        sample=SampleConfig(n=16),
        metrics=MetricsConfig(enabled=False),
        generator={"lr": 1e-4},
    )


def test_loggers_default_to_jsonl_which_is_always_kept():
    from genbench.config import TrainConfig

    assert TrainConfig().loggers == ["jsonl"]
    assert TrainConfig(loggers=["tensorboard"]).loggers == ["jsonl", "tensorboard"]
    assert TrainConfig(loggers=["wandb", "jsonl"]).loggers == ["wandb", "jsonl"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('["mlflow"]', r"'train.loggers.0': Input should be 'jsonl', 'tensorboard' or 'wandb'"),
        ('["wandb","wandb"]', r"'train.loggers': Value error, a logger is listed twice"),
        ('"safetensors"', r"'train.loggers': Input should be a valid list"),
    ],
)
def test_bad_loggers_are_one_line_config_errors(value, message):
    from genbench.config import load_experiment
    from genbench.utils.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_experiment("smoke", overrides=[f"train.loggers={value}"])


def test_trackers_checkpoint_format_and_cpu_batching_stay_out_of_the_run_id_and_training_key():
    import hashlib

    from genbench.storage.folder import train_key
    from genbench_baselines.dcgan import DCGAN

    plain = run_config()
    tracked = run_config(loggers=["jsonl", "tensorboard", "wandb"], checkpoint_format="safetensors")
    assert tracked.run_id == plain.run_id
    assert train_key(tracked, DCGAN) == train_key(plain, DCGAN)
    # The hash is the one genbench computed before these keys existed.
    old = plain.to_dict()
    del old["train"]["loggers"], old["train"]["checkpoint_format"]
    del old["metrics"]["cpu_batch_size"]
    # Keys added later (budget units, reference, snapshot fractions) at their defaults too.
    for section, key in (
        ("train", "budget"),
        ("train", "tflop"),
        ("train", "seconds"),
        ("metrics", "reference"),
        ("metrics", "snapshot_fractions"),
        ("metrics", "copy_tolerance"),
        ("metrics", "copy_descriptor_seed"),
        ("metrics", "precision"),
        ("data", "train_subset"),
        ("data", "train_subset_part"),
    ):
        del old[section][key]
    blob = json.dumps(old, sort_keys=True, separators=(",", ":"))
    assert plain.digest() == hashlib.sha256(blob.encode()).hexdigest()[:10]
    # Only those keys: anything that changes results still changes the id.
    assert run_config(batch_size=32).run_id != plain.run_id
    assert run_config(deterministic=True).run_id != plain.run_id


# -- a whole run ------------------------------------------------------------------------
def test_runs_log_to_tensorboard_and_wandb_and_a_shared_training_is_replayed(
    tmp_path, wandb_offline, monkeypatch
):
    pytest.importorskip("tensorboard")
    from typer.testing import CliRunner

    from genbench.cli import app
    from genbench.metrics import scoring
    from genbench.utils.files import read_jsonl
    from tests.standin import standin_choice

    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(scoring, "extractor_for", lambda cfg, **kw: standin_choice())
    sets = [
        "data.resolution=8",
        "train.kimg=0.128",
        "train.eval_images=0",
        'train.loggers=["tensorboard","wandb"]',
        'train.checkpoint_format="safetensors"',
        "sample.n=16",
        "ddpm.base_channels=8",
        "ddpm.attn_resolutions=[]",
        "metrics.enabled=true",
        'metrics.names=["fid","kid"]',
        "metrics.classifier=false",
        "metrics.memorization=false",
        "metrics.snapshot_kimg=[0.064]",
        "metrics.snapshot_n=16",
    ]
    args = ["run", "-e", "smoke", "--models", "ddpm", "--results", str(tmp_path / "r")]
    args += [a for s in sets for a in ("--set", s)] + ["--sweep", "ddpm.sample_steps=1,2"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "logging is off" not in res.output and "logging stopped" not in res.output

    runs = sorted((tmp_path / "r").glob("smoke-ddpm-*"))
    metrics = {rd: json.loads((rd / "metrics.json").read_text()) for rd in runs}
    (trained,) = [rd for rd, m in metrics.items() if m["train"]["reused_from"] is None]
    (shared,) = [rd for rd in runs if rd != trained]
    assert sorted(p.suffix for p in (shared / "checkpoints").iterdir()) == [".pt", ".safetensors"]

    for rd in (trained, shared):
        m, acc = metrics[rd], tb_events(rd)
        logged = read_jsonl(rd / "train_log.jsonl")
        assert [e.step for e in acc.Scalars("train/loss")] == [r["step"] for r in logged]
        assert acc.Scalars("train/loss")[-1].value == pytest.approx(logged[-1]["loss"])
        (final,) = acc.Scalars("final/fid")
        assert final.step == 4 and final.value == pytest.approx(m["scores"]["fid"])
        assert acc.Images("samples")[0].step == 4
        text = acc.Tensors("final/protocol/text_summary")[0].tensor_proto.string_val[0].decode()
        assert m["protocol"]["fingerprint"] in text

        rows = wandb_history(wandb_records(rd))
        assert [r["step"] for r in rows if "train/loss" in r] == [r["step"] for r in logged]
        assert next(r for r in rows if "final/fid" in r)["final/fid"] == pytest.approx(
            m["scores"]["fid"]
        )
    snaps = read_jsonl(trained / "snapshots.jsonl")
    got = [(e.step, e.value) for e in tb_events(trained).Scalars("snapshot/fid")]
    assert got == [(2, pytest.approx(snaps[0]["scores"]["fid"]))]
    # genbench sample rebuilds the model from the safetensors checkpoint the sweep copied.
    res = CliRunner().invoke(app, ["sample", str(shared), "--n", "4"])
    assert res.exit_code == 0, res.output
    assert list((shared / "grids").glob("*.png"))


def test_wandb_resume_continues_the_same_run_and_a_fresh_start_begins_a_new_one(
    tmp_path, wandb_offline
):
    from genbench.storage.folder import RunFolder

    def attempt(resume_step):
        t = open_trackers(
            ["wandb"], run_dir=tmp_path, run_id="r", group="g", resume_step=resume_step, warn=print
        )
        t.training({"step": 1, "loss": 1.0})
        t.close()
        return json.loads((tmp_path / WANDB_ID).read_text())["id"]

    first = attempt(None)
    assert attempt(5) == first
    RunFolder(tmp_path).clear_outputs()  # what a fresh start (no --resume) does
    assert attempt(None) != first
