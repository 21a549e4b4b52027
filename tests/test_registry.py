from importlib.metadata import EntryPoint

import pytest

from genbench import registry
from genbench.utils.errors import PluginError


class FakeDist:
    def __init__(self, name):
        self.name, self.version = name, "1.0"


def fake_eps(monkeypatch, items):
    eps = []
    for name, value, dist in items:
        ep = EntryPoint(name, value, registry.GROUP)
        ep = ep._for(FakeDist(dist)) if hasattr(ep, "_for") else ep
        eps.append(ep)
    monkeypatch.setattr(
        registry, "entry_points", lambda group: [e for e in eps if e.group == group]
    )
    registry.discover.cache_clear()


@pytest.fixture(autouse=True)
def _clear_cache():
    registry.discover.cache_clear()
    yield
    registry.discover.cache_clear()


def test_builtins_register_through_entry_points():
    plugins = registry.discover()
    assert plugins["dcgan"].distribution == "genbench"
    assert plugins["dcgan"].value == "genbench_baselines.dcgan:DCGAN"


def test_name_clash_names_both_distributions(monkeypatch):
    fake_eps(monkeypatch, [("gan", "a:A", "pkg-one"), ("gan", "b:B", "pkg-two")])
    with pytest.raises(PluginError) as e:
        registry.discover()
    assert "pkg-one" in str(e.value) and "pkg-two" in str(e.value)


def test_unsafe_names_are_refused(monkeypatch):
    fake_eps(monkeypatch, [("../x", "a:A", "evil")])
    with pytest.raises(PluginError, match="path-safe"):
        registry.discover()


def test_broken_plugin_is_reported_and_others_still_load(monkeypatch):
    fake_eps(
        monkeypatch,
        [
            ("broken", "no_such_module_xyz:Gen", "bad"),
            ("dcgan", "genbench_baselines.dcgan:DCGAN", "genbench"),
        ],
    )
    status = registry.check_all()
    assert status["dcgan"] is None
    assert "no_such_module_xyz" in status["broken"] and "failed to import" in status["broken"]


def test_unknown_name_suggests(monkeypatch):
    with pytest.raises(PluginError, match="did you mean 'dcgan'"):
        registry.entry("dcgna")
