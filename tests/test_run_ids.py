"""Run ids are pinned: a results folder written before a refactoring must still be found
(its name is its id). The structural redesign kept the ids of commit 6b1f529; the copy
audit's validation slice (`data.validation_size`: training images set aside for
evaluate()) changed what every model trains on, and with it every id, once. DCGAN's
defaults changed once more (Adam 2e-4, the tuning sweep's update_batch and d_every keys), and
with them its ids; other models' ids did not move (keys added later stay out of an id at
their default: the real-data row's id below is unchanged), and the quick default became
compute-matched with curves (their snapshot size, part of the id, then went from 64 to 32
to keep the curves within 15% of the run's time). The expected ids below are those of these
changes."""

from __future__ import annotations

from genbench import registry
from genbench.config import build_run_config, load_experiment, resolve_model_config
from genbench.metrics.inception import ExtractorChoice
from genbench.runs.real import real_data_run_id
from genbench.utils.naming import run_id


def _run_id(experiment: str, model: str, seed: int, overrides: list[str]) -> str:
    exp = load_experiment(experiment, overrides=overrides)
    cfg = resolve_model_config(model, registry.load(model).Config, exp)
    return build_run_config(exp, model, seed, cfg).run_id


def test_trained_run_ids_are_pinned():
    assert _run_id("smoke", "dcgan", 0, []) == "smoke-dcgan-s0-b4a90960e4"
    assert _run_id("smoke", "dcgan", 0, ["metrics.enabled=true"]) == "smoke-dcgan-s0-ca5e948e7c"
    assert _run_id("default", "ddpm", 1, []) == "default-ddpm-s1-d2641007e6"
    assert _run_id("default", "denoiser", 1, []) == "default-denoiser-s1-4969b2838a"
    # metrics.precision came later: at its default (fp32) it stays out of the id.
    fp32 = ["metrics.precision=fp32"]
    assert _run_id("default", "ddpm", 1, fp32) == "default-ddpm-s1-d2641007e6"
    assert _run_id("default", "ddpm", 1, ["metrics.precision=bf16"]) != _run_id(
        "default", "ddpm", 1, []
    )
    # So did data.train_subset, which trains on part of the data: another run when set.
    sub = _run_id("smoke", "dcgan", 0, ["data.train_subset=64"])
    assert sub != _run_id("smoke", "dcgan", 0, []) and sub.startswith("smoke-dcgan-s0-")


def test_real_data_run_id_is_pinned():
    choice = ExtractorChoice(
        name="fidhelper",
        weights_path=None,
        weights_sha256="0" * 64,
        has_classifier=False,
        source="x",
        reason="y",
    )
    assert real_data_run_id(load_experiment("smoke"), choice) == "smoke-real-n32-a96fb81b79"
    # Snapshot settings belong to trained models: the real row keeps its folder under them.
    snaps = load_experiment("smoke", overrides=["metrics.snapshot_fractions=[0.5]"])
    assert real_data_run_id(snaps, choice) == "smoke-real-n32-a96fb81b79"
    fp32 = load_experiment("smoke", overrides=["metrics.precision=fp32"])
    assert real_data_run_id(fp32, choice) == "smoke-real-n32-a96fb81b79"
    bf16 = load_experiment("smoke", overrides=["metrics.precision=bf16"])
    assert real_data_run_id(bf16, choice) != "smoke-real-n32-a96fb81b79"  # other features


def test_run_id_shape():
    assert run_id(experiment="e", label="m-s0", key={"a": 1}) == "e-m-s0-015abd7f5c"
