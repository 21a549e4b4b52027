import pytest
import torch

from genbench.contract import DataSpec
from genbench_baselines.dcgan import DCGAN, DCGANConfig


def build(res, ch=3):
    return DCGAN(
        spec=DataSpec(resolution=res, channels=ch), config=DCGANConfig(), device=torch.device("cpu")
    )


def test_seed_parameter_counts_at_64():
    counts = build(64).num_parameters()
    assert counts == {"G": 3_576_704, "D": 2_766_529}


@pytest.mark.parametrize("res", [8, 16, 28, 32])
def test_shapes_range_and_shorter_stack(res):
    torch.manual_seed(0)
    m = build(res, ch=1)
    x = m.sample(3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 1, res, res) and x.min() >= 0 and x.max() <= 1
    assert m.D(x * 2 - 1).shape == (3,)
    if res in (28, 32):  # one block shorter than 64: G's first layer has 256 channels
        assert m.G.net[0].out_channels == 256


def test_unsupported_resolution_is_a_clear_error():
    with pytest.raises(ValueError, match="DCGAN supports"):
        DCGAN.check_spec(DataSpec(resolution=24, channels=1), DCGANConfig())


def test_discriminator_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    m = build(16, ch=1)
    real = torch.rand(16, 1, 16, 16) * 2 - 1
    first = m.train_step(real, None)["loss_d"]
    for _ in range(15):
        last = m.train_step(real, None)["loss_d"]
    assert last < first * 0.8


def test_sampling_is_reproducible_from_the_seed():
    m = build(16, ch=1).eval()
    a = m.sample(4, generator=torch.Generator().manual_seed(5))
    b = m.sample(4, generator=torch.Generator().manual_seed(5))
    c = m.sample(4, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
