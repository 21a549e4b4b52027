"""Every registered generator honours the contract (timm's test_models pattern)."""

import pytest
import torch

from genbench import registry
from genbench.config import DataConfig
from genbench.contract import DataSpec, Generator
from genbench.data import load_data
from genbench.utils.errors import MissingExtra

NAMES = registry.names()


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig(source="digits", resolution=16))


def build(name, data, *, condition="classes") -> Generator:
    try:
        cls = registry.load(name)
    except MissingExtra as exc:  # an optional extra (genbench[diffusers]) not installed
        pytest.skip(str(exc))
    spec = (
        data.spec
        if condition == "classes"
        else DataSpec(resolution=16, channels=1, num_train=len(data.train))
    )
    cls.check_spec(spec, cls.Config())
    torch.manual_seed(0)
    return cls(spec=spec, config=cls.Config(), device=torch.device("cpu"), train_data=data.train)


@pytest.mark.parametrize("name", NAMES)
def test_contract(name, digits):
    model = build(name, digits)
    x, y = digits.train.batch(torch.arange(8))
    logs = model.train_step(x, y)
    assert logs and all(isinstance(v, float) and v == v for v in logs.values())
    model.eval()
    labels = y if model.conditional else None
    out = model.sample(
        4,
        labels=labels[:4] if labels is not None else None,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.shape == (4, 1, 16, 16) and out.min() >= 0 and out.max() <= 1
    proto = model.sampling_protocol()
    assert isinstance(proto["sampler"], str) and proto["nfe"] >= 1

    # Checkpoint round trip: a fresh instance restored from the state samples the same images.
    twin = build(name, digits)
    twin.load_state_dict(model.state_dict())
    twin.eval()
    l4 = labels[:4] if labels is not None else None
    a = model.sample(4, labels=l4, generator=torch.Generator().manual_seed(1))
    b = twin.sample(4, labels=l4, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_registered_names_are_path_safe(name):
    assert registry.SAFE_NAME.fullmatch(name)
