"""Scoring plumbing, with the seeded stand-in extractor instead of Inception (fast)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch_fidelity
from pydantic import ValidationError
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

from genbench.config import DataConfig, ExperimentConfig, MetricsConfig, SampleConfig, TrainConfig
from genbench.data import load_data
from genbench.metrics import mark_comparable, protocol_differences, scoring
from genbench.metrics.fid import fid_low_rank
from genbench.metrics.fidelity import fidelity_from_features
from genbench.storage.images import image_files, read_images
from genbench.utils.files import save_png
from tests.conftest import FAST_AUDIT
from tests.standin import STANDIN_NAME, standin_choice

DATA = DataConfig(source="digits", resolution=16, split="random")
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "gbcache"))


@pytest.fixture(scope="module")
def bundle():
    return load_data(DATA)


def _cfg(**kw) -> MetricsConfig:
    base = dict(classifier=False, memorization=False, per_class=False, **FAST_AUDIT)
    return MetricsConfig(**{**base, **kw})


def _score(images, bundle, *, n_ref, **kw):
    cfg_kw = {k: kw.pop(k) for k in list(kw) if k in MetricsConfig.model_fields}
    setup = scoring.ScoringSetup(
        bundle=bundle,
        data_cfg=DATA,
        metrics_cfg=_cfg(**cfg_kw),
        n_ref=n_ref,
        choice=standin_choice(),
        device=CPU,
    )
    return scoring.score_images(images, setup, **kw)


def _write_folder(folder: Path, images: torch.Tensor) -> Path:
    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        save_png(img, folder / f"{i:06d}.png")
    return folder


@pytest.mark.parametrize("reference", ["test", "train"])
def test_scores_equal_a_direct_torch_fidelity_call(tmp_path, bundle, reference):
    # Generated: a shifted, noisier copy of training images, so the two sets differ.
    g = torch.Generator().manual_seed(1)
    gen = bundle.train.images[200:240].float() * 0.8 + torch.rand(40, 1, 16, 16, generator=g) * 50
    gen_dir = _write_folder(tmp_path / "gen", gen.round().clamp(0, 255).to(torch.uint8))
    # reference = "train" (the literature's protocol): the training split's seeded subset.
    split = bundle.train if reference == "train" else bundle.holdout
    ref = scoring.seeded_subset(split, 40)
    ref_dir = _write_folder(tmp_path / "ref", ref.images)

    images = read_images(image_files(gen_dir))
    assert images.shape == (40, 1, 16, 16)
    ours = _score(images, bundle, n_ref=40, reference=reference)
    part = "train" if reference == "train" else "holdout"
    assert ours["protocol"]["reference"]["index_sha256"] == bundle.split[f"{part}_index_sha256"]
    direct = torch_fidelity.calculate_metrics(
        input1=str(gen_dir),
        input2=str(ref_dir),
        feature_extractor=STANDIN_NAME,
        fid=True,
        kid=True,
        prc=True,
        isc=True,
        kid_subset_size=40,
        cuda=False,
        cache=False,
        verbose=False,
        save_cpu_ram=True,
        batch_size=32,
    )
    s = ours["scores"]
    assert s["fid"] > 0.1  # different sets: the comparison below is not 0 == 0
    assert s["fid"] == pytest.approx(direct["frechet_inception_distance"], rel=1e-5)
    assert s["kid"]["mean"] == pytest.approx(direct["kernel_inception_distance_mean"], rel=1e-4)
    assert s["kid"]["std"] == pytest.approx(direct["kernel_inception_distance_std"], rel=1e-3)
    assert s["precision"] == pytest.approx(direct["precision"])
    assert s["recall"] == pytest.approx(direct["recall"])
    assert s["isc"]["mean"] == pytest.approx(direct["inception_score_mean"], rel=1e-5)
    assert ours["protocol"]["settings"]["kid_subset_size"] == 40


def test_protocol_fingerprint_and_comparability(bundle):
    imgs = bundle.train.images
    a = _score(imgs[:30], bundle, n_ref=30, names=["fid"])
    b = _score(imgs[30:60], bundle, n_ref=30, names=["fid"], sampling={"sampler": "x", "nfe": 9})
    c = _score(imgs[:40], bundle, n_ref=30, names=["fid"])
    pa, pb, pc = a["protocol"], b["protocol"], c["protocol"]
    for key in ("torch_fidelity", "extractor", "weights_sha256", "n_generated", "n_reference"):
        assert key in pa
    assert pa["reference"]["dataset"] == "digits" and pa["channels"] == 1
    assert "replicated" in pa["channel_handling"]
    assert pb["sampling"] == {"sampler": "x", "nfe": 9}
    # The sampler describes the model, not the measurement: same fingerprint.
    assert pa["fingerprint"] == pb["fingerprint"] != pc["fingerprint"]
    assert protocol_differences(pa, pb) == []
    assert any(d.startswith("n_generated") for d in protocol_differences(pa, pc))
    marks = mark_comparable([a, b, c, {"scores": {}}])
    assert [m[0] for m in marks] == [True, True, False, False]


def test_small_n_is_guarded_not_crashed(bundle):
    one = _score(bundle.train.images[:1], bundle, n_ref=50)
    assert one["scores"]["fid"] is None and "at least 2" in one["scores_unavailable"]["fid"]
    assert one["scores"]["kid"] is None and one["scores"]["precision"] is None
    three = _score(bundle.train.images[:3], bundle, n_ref=50)
    assert np.isfinite(three["scores"]["fid"])  # rank-deficient but real, not complex
    assert three["protocol"]["settings"]["kid_subset_size"] == 3
    assert three["protocol"]["settings"]["fid_rank_deficient"] is True
    assert any("rank-deficient" in w for w in three["warnings"])
    assert three["scores"]["precision"] is None  # needs > prc_neighborhood (3) per side


def test_inception_score_is_null_without_a_classifier():
    feats = {"2048": torch.randn(20, 8)}
    r = fidelity_from_features(
        feats,
        {"2048": torch.randn(20, 8)},
        names=["isc", "fid"],
        feature_layer="2048",
        logits_layer=None,
    )
    assert r.scores["isc"] is None and "classifier" in r.unavailable["isc"]
    assert r.scores["fid"] is not None


def test_low_rank_fid_equals_torch_fidelity():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(30, 64, generator=g)
    b = torch.rand(45, 64, generator=g) * 1.2 + 0.1
    ref = fid_statistics_to_metric(
        fid_features_to_statistics(a), fid_features_to_statistics(b), False
    )
    assert fid_low_rank(a, b) == pytest.approx(ref["frechet_inception_distance"], rel=1e-6)


def test_reference_features_cached_generated_never(tmp_path, monkeypatch, bundle):
    monkeypatch.setenv("GENBENCH_CACHE", str(tmp_path / "c"))
    first = _score(bundle.train.images[:20], bundle, n_ref=25, names=["fid"])
    files = sorted((tmp_path / "c" / "features").iterdir())
    assert len(files) == 1 and "digits" in files[0].name and "-n25-" in files[0].name
    calls = []
    orig = scoring.extract_features
    monkeypatch.setattr(
        scoring, "extract_features", lambda *a, **k: calls.append(1) or orig(*a, **k)
    )
    again = _score(bundle.train.images[20:40], bundle, n_ref=25, names=["fid"])
    assert calls == [1]  # only the new samples were extracted
    assert sorted((tmp_path / "c" / "features").iterdir()) == files  # nothing cached for samples
    assert again["scores"]["fid"] != first["scores"]["fid"]


def test_per_class_and_class_consistency(bundle):
    imgs, labels = bundle.train.images[:200], bundle.train.labels[:200]
    r = _score(
        imgs, bundle, n_ref=200, labels=labels, per_class=True, classifier=True, classifier_steps=60
    )
    pc = r["per_class"]
    assert pc["classes_scored"] == 10 and set(pc["classes"]) == set(bundle.spec.class_names)
    assert all(c["n"] > 2 and c["fid"] > 0 for c in pc["classes"].values())
    assert r["scores"]["fid_class_mean"] == pytest.approx(
        np.mean([c["fid"] for c in pc["classes"].values()])
    )
    cc = r["class_consistency"]
    assert cc["classifier"]["heldout_accuracy"] > 0.5
    # Real images with their true labels: the classifier mostly agrees; shuffled labels: it does not.
    wrong = _score(
        imgs, bundle, n_ref=200, labels=labels.roll(1), classifier=True, classifier_steps=60
    )
    assert r["scores"]["class_consistency"] > 0.5 > wrong["scores"]["class_consistency"]
    assert wrong["class_consistency"]["classifier"]["cached"] is True


def test_classifier_scores_the_same_in_channels_last(bundle):
    """The class-consistency classifier predicts in channels_last on the CPU: same logits (to
    float rounding), so the same classes and the same class-consistency score."""
    from genbench.metrics.classifier import (
        ClassifierSettings,
        get_classifier,
        predict,
        predict_logits,
    )

    settings = ClassifierSettings(steps=30)
    model, _ = get_classifier(
        bundle.train, bundle.holdout, describe={"dataset": "digits"}, device=CPU, settings=settings
    )
    imgs = bundle.holdout.images[:64]
    cl, nchw = (
        predict_logits(model, imgs, settings=settings, device=CPU, channels_last=layout)
        for layout in (True, False)  # NCHW last: predict() must switch back
    )
    assert nchw.std() > 0.1  # a real, trained classifier
    assert torch.allclose(nchw, cl, rtol=1e-4, atol=1e-5)
    assert torch.equal(nchw.argmax(1), cl.argmax(1))
    assert torch.equal(predict(model, imgs, settings=settings, device=CPU), cl.argmax(1))
    conv = next(p for p in model.parameters() if p.ndim == 4 and p.shape[1] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last)  # the CPU default


def test_copy_audit_flags_a_copier_not_fresh_images(tmp_path, bundle):
    g = torch.Generator().manual_seed(0)
    copies = bundle.train.images[torch.randperm(len(bundle.train), generator=g)[:60]]
    kw = dict(n_ref=60, memorization=True)
    copier = _score(copies.flip(-1), bundle, out_dir=tmp_path, **kw)
    parts = scoring.heldout_parts(bundle.holdout, n_ref=60, n=60)
    # Held-out images are in the audit's pool: as the real-data row, they must not match
    # themselves (scored without their positions they are replays of held-out images).
    fresh = _score(parts.real.images, bundle, heldout_positions=parts.positions["real"], **kw)
    c = copier["copies"]
    assert c["flagged"] and c["rate"] > 0.9 and c["pool"]["train"] == len(bundle.train)
    assert copier["scores"]["copy_rate"] == c["rate"]
    f = fresh["copies"]
    # Not flagged, and flagged per sample like the disjoint fresh check set (60 calibration
    # images make the thresholds rough; the nominal rate is tested at N = 500 on Fashion-MNIST).
    assert not f["flagged"] and f["rate"] <= f["heldout_rate_ci95"][1], f
    assert c["pairs"][0]["copy"] and "mirror" in c["pairs"][0]["transform"]
    assert (tmp_path / "copies.png").stat().st_size > 0
    per_sample = json.loads((tmp_path / "copies.json").read_text())
    assert len(per_sample["pairs"]) == 60


def test_bootstrap_gives_sampling_intervals_around_the_fid(tmp_path, bundle):
    imgs = scoring.heldout_parts(bundle.holdout, n_ref=60, n=60).real.images
    out = _score(imgs, bundle, n_ref=60, bootstrap=50, out_dir=tmp_path)
    lo, hi = out["bootstrap"]["fid_ci95"]
    assert lo < hi and out["bootstrap"]["kind"].startswith("sampling only")
    reps = json.loads((tmp_path / "bootstrap.json").read_text())
    assert len(reps["fid"]) == 50 and len(reps["kid"]) == 50


def test_config_rejects_unknown_metric():
    with pytest.raises(ValidationError, match="unknown metric"):
        MetricsConfig(names=["fid", "fdd"])


def test_runner_writes_scores_protocol_and_real_row(tmp_path):
    from genbench.runs.grid import run_experiment
    from genbench.runs.real import real_data_row
    from genbench.utils.progress import Reporter

    exp = ExperimentConfig(
        name="tiny",
        models=["dcgan"],
        seeds=[0],
        data=DATA,
        train=TrainConfig(kimg=0.064, batch_size=16, log_every=2, eval_images=0),
        sample=SampleConfig(n=24, batch_size=12),
        metrics=MetricsConfig(classifier_steps=30, **FAST_AUDIT),
    )
    out = run_experiment(exp, results_dir=tmp_path, extractor=standin_choice())
    assert [o.status for o in out] == ["done"]
    m = json.loads((out[0].run_dir / "metrics.json").read_text())
    assert m["scores"]["fid"] > 0 and m["scores"]["kid"]["std"] >= 0
    assert m["protocol"]["extractor"] == STANDIN_NAME and m["protocol"]["n_generated"] == 24
    assert m["protocol"]["sampling"]["nfe"] == m["sampling"]["nfe"]
    assert "images_per_s" in m["protocol"]["sampling"]
    assert "copies" in m and (out[0].run_dir / "copies.png").exists()
    assert m["bootstrap"]["fid_ci95"][0] <= m["scores"]["fid"] * 1.5
    real = [p for p in tmp_path.iterdir() if p.name.startswith("tiny-real-n24-")]
    assert len(real) == 1
    rm = json.loads((real[0] / "metrics.json").read_text())
    assert rm["model"] == "real" and rm["protocol"]["fingerprint"] == m["protocol"]["fingerprint"]
    assert rm["scores"]["fid"] < m["scores"]["fid"]  # real data is the floor
    # The real-data row is held-out images: audited like a run, and not a copier.
    assert rm["copies"]["rate"] is not None and not rm["copies"]["flagged"]
    before = (real[0] / "metrics.json").stat().st_mtime_ns
    again = real_data_row(
        load_data(DATA), exp, tmp_path, Reporter(), device=CPU, choice=standin_choice()
    )
    assert again == real[0]
    assert (real[0] / "metrics.json").stat().st_mtime_ns == before  # done folders are skipped


def test_cli_score_and_doctor(tmp_path, monkeypatch, bundle):
    from typer.testing import CliRunner

    from genbench.cli import app

    monkeypatch.setattr(scoring, "extractor_for", lambda cfg, **kw: standin_choice())
    exp = tmp_path / "exp.toml"
    exp.write_text(
        'name = "t"\n[data]\nsource = "digits"\nresolution = 16\nsplit = "random"\n'
        "[sample]\nn = 20\n[metrics]\nclassifier_steps = 20\ncopy_descriptor_steps = 40\n"
    )
    folder = _write_folder(tmp_path / "imgs", bundle.holdout.images[:20])
    runner = CliRunner()
    res = runner.invoke(
        app, ["score", str(folder), "--ref", str(exp), "--out", str(tmp_path / "s.json")]
    )
    assert res.exit_code == 0, res.output
    assert "fid" in res.output and "protocol" in res.output
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["protocol"]["n_generated"] == 20 and saved["scores"]["fid"] is not None
    assert (tmp_path / "copies.png").exists()
    bad = runner.invoke(app, ["score", str(tmp_path / "nope"), "--ref", str(exp)])
    assert bad.exit_code == 2 and "is not a folder" in " ".join(bad.output.split())
    doc = runner.invoke(app, ["doctor", "--inception-weights", str(tmp_path / "missing.pt")])
    assert doc.exit_code == 1 and "does not exist" in " ".join(doc.output.split())


def test_conditional_labels_come_from_the_manifest(bundle):
    exp = ExperimentConfig(
        name="cond",
        models=["dcgan"],
        data=DATA,
        sample=SampleConfig(n=120),
        metrics=MetricsConfig(classifier_steps=60, memorization=False),
    )
    images, labels = bundle.train.images[:120], bundle.train.labels[:120]
    manifest = {
        "condition": "classes",
        "labels": labels.tolist(),
        "sampler": {"sampler": "s", "nfe": 3},
    }
    assert scoring.class_labels({**manifest, "condition": "none"}, 120) is None
    assert scoring.class_labels({**manifest, "labels": [0.5] * 120}, 120) is None  # mixtures
    setup = scoring.ScoringSetup(
        bundle=bundle,
        data_cfg=exp.data,
        metrics_cfg=exp.metrics,
        n_ref=exp.sample.n,
        choice=standin_choice(),
        device=CPU,
    )
    out = scoring.score_set(
        images,
        setup,
        labels=scoring.class_labels(manifest, len(images)),
        sampling=manifest["sampler"],
    ).record
    assert out["per_class"]["classes_scored"] == 10
    assert out["scores"]["class_consistency"] > 0.5
    assert out["protocol"]["sampling"] == {"sampler": "s", "nfe": 3}
    assert "copies" not in out and out["scores"]["isc"] is not None


class _Pending(Exception):
    pass


def test_split_features_gathers_every_rank_share_in_image_order(monkeypatch, bundle):
    from genbench.metrics.features import extract_features
    from genbench.utils.distributed import DistInfo

    images = bundle.train.images[:7]  # 7 images on 2 ranks: uneven shares
    choice = standin_choice()
    shares: dict[int, object] = {}

    def gather(info, obj):  # a 2-rank all_gather: rank 0 posts its share, rank 1 gets both
        shares[info.rank] = obj
        if len(shares) < 2:
            raise _Pending
        return [shares[0], shares[1]]

    monkeypatch.setattr(scoring, "all_gather_objects", gather)
    with pytest.raises(_Pending):
        scoring.split_features(
            images, _cfg(), choice=choice, device=CPU, dist_info=DistInfo(rank=0, world=2)
        )
    got = scoring.split_features(
        images, _cfg(), choice=choice, device=CPU, dist_info=DistInfo(rank=1, world=2)
    )
    assert [len(shares[r][0]) for r in (0, 1)] == [4, 3]
    want = extract_features(images, choice=standin_choice(), device=CPU)
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k])


def test_bootstrap_fid_of_the_full_set_equals_the_reported_fid(bundle):
    """The projection identity: with every sample once, the bootstrap's FID formula gives
    torch-fidelity's FID; the intervals are centred there (resampling bias removed)."""
    from genbench.metrics.bootstrap import bootstrap

    imgs = scoring.heldout_parts(bundle.holdout, n_ref=60, n=60).real.images
    out = _score(imgs, bundle, n_ref=60, bootstrap=0)
    feats = scoring.extract_features(imgs, choice=standin_choice(), device=CPU, batch_size=32)
    ref = scoring.heldout_parts(bundle.holdout, n_ref=60, n=60).reference.images
    ref_feats = scoring.extract_features(ref, choice=standin_choice(), device=CPU, batch_size=32)
    layer = standin_choice().feature_layer
    boot = bootstrap(feats[layer], ref_feats[layer], n_boot=40)
    fid = out["scores"]["fid"]
    # rel 5e-4: the two sides take the matrix square root by different routes, and with the
    # numpy/scipy a fresh setup installs today they agree to 2.3e-4 (also at 0c1c583).
    assert sum(boot["fid"]) / 40 == pytest.approx(fid, rel=5e-4)
    lo, hi = boot["fid_ci95"]
    assert lo < fid < hi and boot["resample_bias"]["fid"] > 0


def test_bf16_scoring_is_another_protocol_and_fp32_keeps_its_fingerprint(bundle):
    """metrics.precision: fp32 (the default) records float32 as before, so its fingerprint is
    the one scores had before the key existed; bf16 records bfloat16, a different protocol,
    and its reference features are cached apart from fp32's."""
    from genbench.metrics.features import cached_features

    imgs = bundle.train.images[:20]
    fp32 = _score(imgs, bundle, n_ref=20, names=["fid"])
    explicit = _score(imgs, bundle, n_ref=20, names=["fid"], precision="fp32")
    bf16 = _score(imgs, bundle, n_ref=20, names=["fid"], precision="bf16")
    assert fp32["protocol"]["dtype"] == "float32" and fp32["protocol"]["inference"][:4] == "fp32"
    assert fp32["protocol"]["fingerprint"] == explicit["protocol"]["fingerprint"]
    assert bf16["protocol"]["dtype"] == "bfloat16" and "bf16" in bf16["protocol"]["inference"]
    assert protocol_differences(fp32["protocol"], bf16["protocol"]) == [
        "dtype: 'float32' != 'bfloat16'"
    ]
    assert fp32["scores"]["fid"] == explicit["scores"]["fid"] != bf16["scores"]["fid"]
    describe = {"dataset": "digits", "split": "x"}
    ref = bundle.holdout.images[:12]
    kw = {"choice": standin_choice(), "device": CPU, "describe": describe}
    a, _ = cached_features(ref, **kw)
    b, hit_b = cached_features(ref, precision="bf16", **kw)
    c, hit_c = cached_features(ref, precision="bf16", **kw)
    assert not hit_b and hit_c  # bf16 features never come from fp32's cache file
    layer = standin_choice().feature_layer
    assert not torch.equal(a[layer], b[layer]) and torch.equal(b[layer], c[layer])
