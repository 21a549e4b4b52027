"""The blended-input denoiser (seed 000): network, objective, blend sampler, end to end."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from genbench.config import (
    DataConfig,
    ExperimentConfig,
    MetricsConfig,
    SampleConfig,
    TrainConfig,
)
from genbench.contract import DataSpec
from genbench.data import ImageSet
from genbench_baselines.denoiser import Denoiser, DenoiserConfig, draw_distinct

TINY = {"widths": [4, 8, 16]}
NUM_CLASSES = 4


def image_set(n: int, res: int, *, offset: int, seed: int) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, res, res), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % NUM_CLASSES
    # Source indices unlike positions, so mixing the two up is caught.
    source_index = offset + 3 * torch.arange(n)
    return ImageSet(images, labels, source_index, tuple("abcd"))


def make(res: int = 8, *, condition: str = "classes", **cfg) -> tuple[Denoiser, ImageSet]:
    train = image_set(24, res, offset=1000, seed=1)
    if condition != "classes":
        train.labels = None
    spec = DataSpec(
        resolution=res,
        channels=1,
        condition=condition,
        class_names=tuple("abcd") if condition == "classes" else (),
        num_train=len(train),
    )
    torch.manual_seed(0)
    model = Denoiser(
        spec=spec, config=DenoiserConfig(**{**TINY, **cfg}), device="cpu", train_data=train
    )
    return model.eval(), train


def sources_of_class(train: ImageSet, c: int) -> set[int]:
    return set(train.source_index[train.labels == c].tolist())


def test_default_network_is_the_seeds_simple_unet():
    model = Denoiser(spec=DataSpec(64, 3), config=DenoiserConfig(), device="cpu")
    # SimpleUNet of seed 000 at 3 channels, counted layer by layer.
    assert model.num_parameters() == {"unet": 1_862_979}
    assert model.sampling_protocol() == {"sampler": "blend-denoise", "nfe": 1, "k": 2}


@pytest.mark.parametrize("res", [8, 16, 28, 32, 64])
def test_supported_sides_keep_shape(res):
    Denoiser.check_spec(DataSpec(res, 1), DenoiserConfig())
    net = Denoiser(spec=DataSpec(res, 1), config=DenoiserConfig(**TINY), device="cpu").net
    assert net(torch.zeros(2, 1, res, res)).shape == (2, 1, res, res)


@pytest.mark.parametrize("res", [6, 10, 30])
def test_sides_two_pools_cannot_handle_are_rejected(res):
    with pytest.raises(ValueError, match=f"multiple of 4.*got {res}") as info:
        Denoiser.check_spec(DataSpec(res, 3), DenoiserConfig())
    assert "\n" not in str(info.value)


def test_config_rejects_inverted_sigma_range():
    with pytest.raises(ValueError, match="sigma_max"):
        DenoiserConfig(sigma_min=0.3, sigma_max=0.1)


@pytest.mark.parametrize("res", [8, 16])
def test_samples_have_shape_and_unit_range(res):
    model, _ = make(res)
    labels = torch.tensor([0, 1, 2, 3, 0])
    x = model.sample(5, labels=labels, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, 1, res, res)
    assert x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1


def test_blend_is_the_weighted_mean_of_the_recorded_sources():
    model, train = make()
    model.net = nn.Identity()  # output = (blend + 1) / 2 exposes the blend itself
    weights = torch.tensor([[0.5, 0.25, 0.25, 0.0], [0.0, 0.0, 0.0, 1.0]])
    batch = model.sample_with_info(2, labels=weights, generator=torch.Generator().manual_seed(3))
    pos_of = {int(s): i for i, s in enumerate(train.source_index)}
    for img, src, w in zip(
        batch.images, batch.info["blend_sources"], batch.info["blend_weights"], strict=True
    ):
        real = train.images[[pos_of[s] for s in src]].float() / 127.5 - 1
        blend = (torch.tensor(w).view(-1, 1, 1, 1) * real).sum(0)
        torch.testing.assert_close(img, ((blend + 1) / 2).clamp(0, 1))


def test_blends_use_training_images_only():
    model, train = make()
    holdout = image_set(8, 8, offset=5000, seed=2)
    g = torch.Generator().manual_seed(0)
    mix = torch.tensor([[0.5, 0.5, 0, 0], [1 / 3, 1 / 3, 1 / 3, 0]] * 3)
    batches = [
        model.sample_with_info(6, labels=None, generator=g),
        model.sample_with_info(6, labels=torch.tensor([0, 1, 2, 3, 1, 2]), generator=g),
        model.sample_with_info(6, labels=mix, generator=g),
    ]
    train_src, hold_src = set(train.source_index.tolist()), set(holdout.source_index.tolist())
    for b in batches:
        srcs = {s for row in b.info["blend_sources"] for s in row}
        assert srcs <= train_src and not srcs & hold_src
        assert len(b.info["blend_sources"]) == 6
        for row, w in zip(b.info["blend_sources"], b.info["blend_weights"], strict=True):
            assert len(row) == len(w) and sum(w) == pytest.approx(1.0)


def test_class_label_blends_k_distinct_images_of_that_class():
    model, train = make(k=3)
    labels = torch.tensor([2] * 10)
    b = model.sample_with_info(10, labels=labels, generator=torch.Generator().manual_seed(0))
    for row, w in zip(b.info["blend_sources"], b.info["blend_weights"], strict=True):
        assert len(set(row)) == 3 and set(row) <= sources_of_class(train, 2)
        assert w == pytest.approx([1 / 3] * 3)


def test_mixture_blends_one_image_per_weighted_class():
    model, train = make()
    mix = torch.tensor([[0.0, 0.5, 0.0, 0.5], [0.2, 0.3, 0.5, 0.0]])
    b = model.sample_with_info(2, labels=mix, generator=torch.Generator().manual_seed(0))
    (s0, s1), (t0, t1, t2) = b.info["blend_sources"]
    assert s0 in sources_of_class(train, 1) and s1 in sources_of_class(train, 3)
    assert all(t in sources_of_class(train, c) for c, t in enumerate((t0, t1, t2)))
    assert b.info["blend_weights"] == [pytest.approx([0.5, 0.5]), pytest.approx([0.2, 0.3, 0.5])]


def test_one_hot_mixture_matches_class_sampling():
    model, train = make(k=1)
    classes = torch.tensor([3, 0, 1, 3, 2, 2, 0, 1])
    one_hot = nn.functional.one_hot(classes, NUM_CLASSES).float()
    by_class = model.sample_with_info(8, labels=classes, generator=torch.Generator().manual_seed(5))
    by_mix = model.sample_with_info(8, labels=one_hot, generator=torch.Generator().manual_seed(5))
    assert by_mix.info == by_class.info
    torch.testing.assert_close(by_mix.images, by_class.images)
    for c, row in zip(classes.tolist(), by_mix.info["blend_sources"], strict=True):
        assert set(row) <= sources_of_class(train, c)


def test_same_seed_same_samples_and_sources():
    model, _ = make()
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    a = model.sample_with_info(6, labels=labels, generator=torch.Generator().manual_seed(11))
    b = model.sample_with_info(6, labels=labels, generator=torch.Generator().manual_seed(11))
    c = model.sample_with_info(6, labels=labels, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a.images, b.images) and a.info == b.info
    assert c.info["blend_sources"] != a.info["blend_sources"]


def test_conditional_only_on_class_data():
    assert Denoiser.conditional
    model, train = make(condition="none")
    assert not model.conditional
    b = model.sample_with_info(
        4, labels=torch.tensor([0, 0, 0, 0]), generator=torch.Generator().manual_seed(0)
    )
    # Labels are ignored: k random training images, whatever the class.
    assert all(len(row) == 2 for row in b.info["blend_sources"])
    assert {s for row in b.info["blend_sources"] for s in row} <= set(train.source_index.tolist())


def test_bad_labels_are_rejected():
    model, _ = make()
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="class labels"):
        model.sample(2, labels=torch.tensor([0, 4]), generator=g)
    with pytest.raises(ValueError, match="positive weight"):
        model.sample(1, labels=torch.zeros(1, NUM_CLASSES), generator=g)
    with pytest.raises(ValueError, match="shape"):
        model.sample(1, labels=torch.ones(1, 3) / 3, generator=g)


def test_draw_distinct_avoids_repeats_when_it_can():
    g = torch.Generator().manual_seed(0)
    pool = torch.tensor([7, 8, 9])
    assert all(sorted(draw_distinct(pool, 3, g).tolist()) == [7, 8, 9] for _ in range(20))
    assert len(draw_distinct(pool[:1], 2, g)) == 2  # too few images: repeats allowed


def test_test_loss_is_fixed_noise_and_leaves_global_rng_alone():
    model, train = make()
    x, y = train.batch(torch.arange(8))
    state = torch.get_rng_state()
    with torch.no_grad():
        first, second = model.evaluate(x, y), model.evaluate(x, y)
    assert torch.equal(torch.get_rng_state(), state)
    assert first == second and first["test_loss"] > 0


def test_loss_falls_on_a_fixed_batch():
    model, train = make(lr=2e-3)
    x, y = train.batch(torch.arange(16))
    with torch.no_grad():
        before = model.evaluate(x, y)["test_loss"]
    model.train()
    for _ in range(30):
        model.train_step(x, y)
    with torch.no_grad():
        after = model.evaluate(x, y)["test_loss"]
    assert after < 0.75 * before


def test_end_to_end_run_records_blend_sources_and_test_loss(tmp_path):
    from sklearn.datasets import load_digits

    from genbench.data import load_data
    from genbench.runs.grid import run_experiment

    exp = ExperimentConfig(
        name="denoiser-e2e",
        models=["denoiser"],
        data=DataConfig(source="digits", resolution=8),
        train=TrainConfig(kimg=0.064, batch_size=16, eval_images=32, device="cpu"),
        sample=SampleConfig(n=12, batch_size=8),
        metrics=MetricsConfig(enabled=False),
        model={"denoiser": TINY},
    )
    (outcome,) = run_experiment(exp, results_dir=tmp_path)
    assert outcome.status == "done", outcome.error
    manifest = json.loads((outcome.run_dir / "samples" / "manifest.json").read_text())
    split = json.loads((outcome.run_dir / "split.json").read_text())
    assert manifest["sampler"] == {"sampler": "blend-denoise", "nfe": 1, "k": 2}
    sources, labels = manifest["info"]["blend_sources"], manifest["labels"]
    assert len(sources) == len(labels) == 12 and manifest["condition"] == "classes"
    # digits uses a random split of one pool, so source indices index sklearn's digits.
    target = load_digits().target
    for lab, row in zip(labels, sources, strict=True):
        assert len(row) == 2 and all(target[s] == lab for s in row)
    bundle = load_data(exp.data)
    used = {s for row in sources for s in row}
    assert used <= set(bundle.train.source_index.tolist())
    assert not used & set(bundle.holdout.source_index.tolist())
    assert split["n_holdout"] == len(bundle.holdout) > 0

    log = [json.loads(line) for line in (outcome.run_dir / "train_log.jsonl").open()]
    assert log[-1]["step"] == 4 and log[-1]["test_loss"] > 0
