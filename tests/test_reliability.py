"""Bad input, bad configs, diverging or crashing models, concurrent runs and
untrusted files: each gets a clear outcome and loses nothing else."""

import io
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from genbench import registry
from genbench.cli import app
from genbench.config import DataConfig
from genbench.data import load_data
from genbench.data.sources import decode_image
from genbench.runs.grid import run_experiment
from genbench.runs.plan import plan
from genbench.storage.checkpoints import load_checkpoint
from genbench.storage.folder import try_lock_run
from genbench.utils.errors import CheckpointError, DataError, PluginError
from tests.conftest import tiny_experiment

ROOT = Path(__file__).resolve().parent.parent
cli = CliRunner()


GENBENCH_RUN = (sys.executable, "-m", "genbench", "run", "-e", "smoke")


def _flat(text: str) -> str:
    # rich wraps long lines at the test terminal's width
    return " ".join(text.split())


# -- a corpus of awkward image files, generated here ----------------------------
def _png_bytes(mode="RGB", size=(20, 20), color=(9, 9, 9), fmt="PNG") -> bytes:
    b = io.BytesIO()
    Image.new(mode, size, color).save(b, fmt)
    return b.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _save(path: Path, im: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


BAD = {
    # name -> bytes that no decoder can turn into a whole image
    "corrupt.jpg": lambda: (j := _png_bytes(fmt="JPEG"))[:20] + b"\x00" * 60 + j[80:],
    "truncated.png": lambda: (p := _png_bytes())[: len(p) // 2],
    "truncated.jpg": lambda: (j := _png_bytes(fmt="JPEG"))[: len(j) // 2],
    "empty.png": lambda: b"",
    "notes.jpg": lambda: b"this is a text file with an image extension\n",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_unreadable_files_decode_to_none(name, tmp_path):
    assert decode_image(_write(tmp_path / name, BAD[name]())) is None


GOOD = {
    # name -> (image, expected channels, expected first pixel)
    "rgba.png": (Image.new("RGBA", (10, 10), (255, 0, 0, 128)), 3, (255, 127, 127)),
    "palette.png": (Image.new("RGB", (10, 10), (0, 200, 0)).convert("P"), 3, (0, 200, 0)),
    "palette-gray.gif": (Image.new("L", (10, 10), 90).convert("P"), 1, (90,)),
    "deep16.png": (Image.fromarray(np.full((10, 10), 65535, np.uint16)), 1, (255,)),
    "cmyk.jpg": (Image.new("CMYK", (10, 10), (0, 255, 255, 0)), 3, (255, 0, 0)),
    "gray.png": (Image.new("L", (10, 10), 77), 1, (77,)),
    "one-pixel.png": (Image.new("RGB", (1, 1), (1, 2, 3)), 3, (1, 2, 3)),
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_convertible_images_are_converted_to_uint8_gray_or_rgb(name, tmp_path):
    im, channels, first = GOOD[name]
    t = decode_image(_save(tmp_path / name, im))
    assert t is not None and t.dtype == torch.uint8 and t.shape[0] == channels
    # JPEG is lossy: allow a few levels; 127 vs 128 from compositing alpha.
    assert np.allclose(t[:, 0, 0].tolist(), first, atol=4), t[:, 0, 0].tolist()


def test_large_image_loads_and_a_decompression_bomb_is_refused(tmp_path, monkeypatch):
    big = decode_image(_save(tmp_path / "big.jpg", Image.new("RGB", (1500, 1000), (5, 6, 7))))
    assert big is not None and big.shape == (3, 1000, 1500)
    # Past PIL's bomb limit (here lowered, as a real one would take gigabytes) it is skipped.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    assert decode_image(tmp_path / "big.jpg") is None


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    for name, (im, _, _) in GOOD.items():
        _save(root / "a" / name, im)
    _save(root / "a" / "big.jpg", Image.new("RGB", (1200, 900), (5, 6, 7)))
    _save(root / "a" / "nested" / "deeper" / "x.png", Image.new("RGB", (12, 12)))
    _save(root / "a" / ".hidden.png", Image.new("RGB", (12, 12)))  # hidden: never read
    _save(root / "a" / ".cache" / "y.png", Image.new("RGB", (12, 12)))  # inside a hidden folder
    _save(root / ".git" / "z.png", Image.new("RGB", (12, 12)))  # a hidden class folder
    for i in range(6):
        _save(root / "b" / f"{i}.png", Image.new("L", (16, 16), 40 * i))
    for name, make in BAD.items():
        _write(root / "b" / name, make())
    _write(root / "empty" / "README.txt", b"no images here")
    return root


def test_folder_corpus_converts_skips_counts_and_records(corpus):
    cfg = DataConfig(
        source="folder", root=str(corpus), resolution=16, split="random", max_bad_fraction=0.5
    )
    d = load_data(cfg)
    n_good = len(GOOD) + 2 + 6  # + big.jpg + nested, + six in b/
    assert len(d.train) + len(d.validation) + len(d.holdout) == n_good
    assert d.train.images.shape[1:] == (3, 16, 16) and d.train.images.dtype == torch.uint8
    # The empty class folder is dropped (and says so), hidden folders are not classes.
    assert d.spec.condition == "classes" and d.spec.class_names == ("a", "b")
    assert any("'empty'" in note and "dropped" in note for note in d.split["notes"])
    assert d.split["skipped_files"] == len(BAD)
    assert all(Path(p).name in BAD for p in d.split["skipped_examples"])
    labels = torch.cat([d.train.labels, d.validation.labels, d.holdout.labels])
    assert torch.bincount(labels).tolist() == [len(GOOD) + 2, 6]

    with pytest.raises(DataError) as err:
        load_data(cfg.model_copy(update={"max_bad_fraction": 0.1}))
    msg = str(err.value)
    assert f"{len(BAD)} of {n_good + len(BAD)} files" in msg and "max_bad_fraction" in msg
    assert any(name in msg for name in BAD)


def test_class_folder_with_only_unreadable_files_is_dropped(tmp_path):
    for i in range(4):
        _save(tmp_path / "ok" / f"{i}.png", Image.new("RGB", (8, 8), (i, i, i)))
        _save(tmp_path / "ok2" / f"{i}.png", Image.new("RGB", (8, 8), (i, 0, i)))
    _write(tmp_path / "broken" / "x.png", b"")
    d = load_data(
        DataConfig(
            source="folder", root=str(tmp_path), resolution=8, split="random", max_bad_fraction=0.5
        )
    )
    assert d.spec.class_names == ("ok", "ok2") and d.split["skipped_files"] == 1
    assert int(torch.cat([d.train.labels, d.holdout.labels]).max()) == 1
    assert any("'broken'" in note for note in d.split["notes"])


def test_empty_datasets_are_clear_errors(tmp_path):
    (tmp_path / "only-empty-class").mkdir()
    with pytest.raises(DataError, match="no readable images"):
        load_data(DataConfig(source="folder", root=str(tmp_path), resolution=8))
    _write(tmp_path / "x.png", b"")  # one file, unreadable: all bad
    with pytest.raises(DataError, match="no readable images"):
        load_data(DataConfig(source="folder", root=str(tmp_path), resolution=8))


@pytest.fixture
def one_class(tmp_path):
    root = tmp_path / "one-class"
    for i in range(10):
        _save(root / "cats" / f"{i}.png", Image.new("RGB", (8, 8), (20 * i, 0, 0)))
    return root


def test_single_class_folder_is_unconditional_unless_asked(one_class):
    cfg = DataConfig(source="folder", root=str(one_class), resolution=8, split="random")
    assert load_data(cfg).spec.condition == "none"
    asked = load_data(cfg.model_copy(update={"condition": "classes"}))
    assert asked.spec.condition == "classes" and asked.spec.class_names == ("cats",)


def test_conditional_model_on_single_class_data_is_a_config_error(one_class, tmp_path):
    res = cli.invoke(
        app,
        [
            "run",
            "-e",
            "smoke",
            "--models",
            "cddpm",
            "--set",
            f'data.root="{one_class}"',
            "--set",
            "data.source=folder",
            "--set",
            "data.split=random",
            "--set",
            "data.resolution=8",
            "--results",
            str(tmp_path / "r"),
        ],
    )
    assert res.exit_code == 2, res.output
    text = _flat(res.output)
    assert "cddpm cannot train on this data" in text and "condition 'none'" in text
    assert "Traceback" not in res.output
    assert not [p for p in (tmp_path / "r").iterdir()]  # nothing started


def test_too_many_bad_files_stop_the_command_naming_examples(corpus, tmp_path):
    res = cli.invoke(
        app,
        [
            "run",
            "-e",
            "smoke",
            "--set",
            f'data.root="{corpus}"',
            "--set",
            "data.source=folder",
            "--set",
            "data.split=random",
            "--results",
            str(tmp_path / "r"),
        ],
    )
    assert res.exit_code == 2 and "Traceback" not in res.output
    # one line, unwrapped even at the test terminal's 80 columns, so file paths stay whole
    (line,) = [ln for ln in res.output.splitlines() if "max_bad_fraction" in ln]
    assert line.startswith("error:") and len(line) > 80
    assert any(f"{corpus / 'b' / name}" in line for name in BAD)


# -- config errors: one line, exit 2, before any training ------------------------------------
@pytest.mark.parametrize(
    "sets, message",
    [
        (["data.source=digts"], "did you mean 'digits'"),
        (["data.resolution=24"], "dcgan cannot train on this data"),
        (["train.kimg=0"], "'train.kimg'"),
        (["train.kimg=lots"], "'train.kimg'"),
        (["train.batch_size=0"], "'train.batch_size'"),
        (["train.max_minutes=-5"], "'train.max_minutes'"),
        (["sample.n=0"], "'sample.n'"),
        (["data.max_bad_fraction=1.5"], "'data.max_bad_fraction'"),
        (["data.resolution=big"], "'data.resolution'"),
        (["seeds=[-1]"], "seeds"),
        (["colour=1"], "unknown key 'colour'"),
        (["dcgan.lr=-1"], "dcgan.lr"),
        (["dcgan.width=3"], "unknown key 'dcgan.width'"),
        (['models=["ddpm", "gan"]'], "unknown generator 'gan'"),
        (['models=["../x"]'], "not path-safe"),
    ],
)
def test_config_errors_are_one_line_exit_2_and_train_nothing(sets, message, tmp_path):
    args = ["run", "-e", "smoke", "--results", str(tmp_path / "r")]
    for s in sets:
        args += ["--set", s]
    res = cli.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert message in _flat(res.output) and "Traceback" not in res.output
    assert res.output.count("error:") == 1
    runs = list((tmp_path / "r").glob("*/")) if (tmp_path / "r").exists() else []
    assert runs == []


def test_experiment_name_that_escapes_the_results_folder_is_refused(tmp_path):
    exp = tmp_path / "evil.toml"
    exp.write_text('name = "../x"\nmodels = ["dcgan"]\n')
    res = cli.invoke(app, ["run", "-e", str(exp), "--dry-run", "--results", str(tmp_path / "r")])
    assert res.exit_code == 2 and "not path-safe" in _flat(res.output)


# -- fake plugins, registered through entry-point metadata ----------------------------------
FAULTY = """
import torch
from torch import nn
from genbench.contract import Generator


class _Base(Generator):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.net = nn.Linear(1, 1)

    def modules(self):
        return {"net": self.net}

    def train_step(self, images, labels):
        return {"loss": 0.5}

    def sample(self, n, *, labels=None, generator=None):
        r = self.spec.resolution
        return torch.rand(n, self.spec.channels, r, r, generator=generator)


class NaNLoss(_Base):
    def train_step(self, images, labels):
        return {"loss": float("nan")}


class BoomTrain(_Base):
    def train_step(self, images, labels):
        raise RuntimeError("boom in train_step")


class BoomSample(_Base):
    def sample(self, n, *, labels=None, generator=None):
        raise RuntimeError("boom in sample")
"""


def _site(root: Path, dist: str, module_src: str | None, entry_points: dict[str, str]) -> Path:
    """A minimal installed distribution: a module and a .dist-info with entry points."""
    root.mkdir(parents=True, exist_ok=True)
    mod = dist.replace("-", "_")
    if module_src is not None:
        (root / f"{mod}.py").write_text(module_src)
    info = root / f"{mod}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    eps = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[genbench.generators]\n{eps}")
    return root


@pytest.fixture(scope="module")
def faulty_site(tmp_path_factory):
    return _site(
        tmp_path_factory.mktemp("faulty-site"),
        "genbench-faulty",
        FAULTY,
        {
            "nan-loss": "genbench_faulty:NaNLoss",
            "boom-train": "genbench_faulty:BoomTrain",
            "boom-sample": "genbench_faulty:BoomSample",
        },
    )


@pytest.fixture
def with_site(monkeypatch):
    """Put a site folder on sys.path for this test, with a fresh plugin registry."""

    def add(site: Path) -> None:
        monkeypatch.syspath_prepend(str(site))
        registry.discover.cache_clear()

    yield add
    registry.discover.cache_clear()  # the next discovery no longer sees the site


def test_nan_loss_fails_the_run_without_samples_and_report_lists_it(
    faulty_site, with_site, tmp_path
):
    with_site(faulty_site)
    (out,) = run_experiment(tiny_experiment(["nan-loss"]), results_dir=tmp_path, device="cpu")
    assert out.status == "failed" and "became nan" in (out.error or "")
    status = json.loads((out.run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "loss 'loss' became nan at step 1" in status["error"]
    assert not (out.run_dir / "samples").exists() and not (out.run_dir / "metrics.json").exists()
    res = cli.invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert re.search(r"failed .*nan-loss.*became nan", _flat(res.output))


def test_crashing_plugins_fail_only_their_own_runs(faulty_site, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(faulty_site), str(ROOT)])}
    res = subprocess.run(
        [*GENBENCH_RUN, "--results", str(tmp_path), "--models", "boom-train,boom-sample,dcgan"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 1, res.stdout + res.stderr  # some runs failed: exit 1, not a crash
    assert "Traceback" not in res.stdout + res.stderr

    def status(model):
        (d,) = tmp_path.glob(f"smoke-{model}-s0-*")
        return json.loads((d / "status.json").read_text())

    assert status("dcgan")["status"] == "done"
    assert (
        status("boom-train").items()
        >= {
            "status": "failed",
            "error": "RuntimeError: boom in train_step",
        }.items()
    )
    assert status("boom-sample")["error"] == "RuntimeError: boom in sample"
    assert "RuntimeError: boom in sample" in status("boom-sample")["traceback"]
    rep = cli.invoke(app, ["report", str(tmp_path)])
    text = _flat(rep.output)
    assert "boom in train_step" in text and "boom in sample" in text


def test_plugin_name_that_is_not_path_safe_is_refused(with_site, tmp_path):
    with_site(_site(tmp_path / "site", "genbench-evil", None, {"../evil": "os:system"}))
    with pytest.raises(PluginError, match="not path-safe"):
        registry.discover()
    res = cli.invoke(app, ["list"])
    assert res.exit_code == 2 and "not path-safe" in _flat(res.output)


# -- concurrent processes ---------------------------------------------------------------------
def test_a_locked_run_is_skipped_and_runs_once_released(tmp_path):
    exp = tiny_experiment(["dcgan"], resolution=8, kimg=0.032)
    (planned,) = plan(exp)
    lock = try_lock_run(tmp_path / planned.run_id)  # as another process would hold it
    assert lock is not None and try_lock_run(tmp_path / planned.run_id) is None
    try:
        (out,) = run_experiment(exp, results_dir=tmp_path)
        assert out.status == "skipped" and "locked by another genbench process" in (out.error or "")
        assert not (tmp_path / planned.run_id / "status.json").exists()
    finally:
        lock.release()
    (out,) = run_experiment(exp, results_dir=tmp_path)
    assert out.status == "done"
    (again,) = run_experiment(exp, results_dir=tmp_path)
    assert again.status == "skipped" and again.error is None  # done runs are never re-trained


# -- untrusted files --------------------------------------------------------------------------
class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_with_a_pickled_object_is_refused_naming_the_file(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "step-000000001.pt"
    torch.save({"format": 1, "model": {}, "payload": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        load_checkpoint(path)
    assert not marker.exists()
    # Plain pickles are refused too, not just torch.save archives.
    path.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        load_checkpoint(path)
    assert not marker.exists()


def test_every_torch_load_uses_weights_only():
    calls = []
    for folder in ("genbench", "baselines"):
        for f in (ROOT / folder).rglob("*.py"):
            for m in re.finditer(r"torch\.load\((.*?)\)\s*$", f.read_text(), re.M | re.S):
                calls.append((f.name, m.group(1)))
    assert calls, "expected at least genbench/utils/files.py"
    assert all("weights_only=True" in args for _, args in calls), calls
