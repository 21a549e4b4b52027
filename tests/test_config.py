import os
from pathlib import Path

import pytest

from genbench.config import (
    ExperimentConfig,
    RunConfig,
    load_experiment,
    read_run_config,
    resolve_model_config,
)
from genbench.config.files import PACKAGED_CONFIGS, run_config_toml
from genbench.config.overrides import check_model_tables, parse_value
from genbench.utils.errors import ConfigError
from tests.conftest import tiny_experiment


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.toml"
    p.write_text(text)
    return p


def test_unknown_key_names_key_and_file(tmp_path):
    p = write(tmp_path, 'name = "x"\n[train]\nkimgs = 3\n')
    with pytest.raises(ConfigError) as e:
        load_experiment(str(p))
    assert "train.kimgs" in str(e.value) and str(p) in str(e.value)


def test_wrong_type_and_nonpositive_budget(tmp_path):
    p = write(tmp_path, 'name = "x"\n[train]\nkimg = "lots"\n')
    with pytest.raises(ConfigError, match="train.kimg"):
        load_experiment(str(p))
    p = write(tmp_path, 'name = "x"\n[train]\nkimg = 0\n')
    with pytest.raises(ConfigError, match="greater than 0"):
        load_experiment(str(p))


def test_set_overrides_and_model_tables(tmp_path):
    p = write(tmp_path, 'name = "x"\nmodels = ["dcgan"]\n')
    exp = load_experiment(
        str(p),
        overrides=["train.kimg=2.5", "dcgan.lr=0.0003", "data.source=digits"],
        model_names={"dcgan"},
    )
    assert (
        exp.train.kimg == 2.5 and exp.model["dcgan"]["lr"] == 3e-4 and exp.data.source == "digits"
    )
    with pytest.raises(ConfigError, match="--set.*unknown key 'train.nope'"):
        load_experiment(str(p), overrides=["train.nope=1"])


def test_model_config_layers_reject_unknown_keys():
    from genbench_baselines.dcgan import DCGANConfig

    exp = tiny_experiment(["dcgan"]).model_copy(update={"model": {"dcgan": {"lr": 2e-4}}})
    assert resolve_model_config("dcgan", DCGANConfig, exp).lr == 2e-4
    bad = exp.model_copy(update={"model": {"dcgan": {"learning_rate": 2e-4}}})
    with pytest.raises(ConfigError, match="unknown key 'dcgan.learning_rate'"):
        resolve_model_config("dcgan", DCGANConfig, bad)


def test_parse_value_uses_toml_types():
    assert parse_value("3") == 3 and parse_value("1e-4") == 1e-4 and parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2] and parse_value("linear") == "linear"


def test_run_config_round_trip_and_hash(tmp_path):
    exp = tiny_experiment(["dcgan"])
    rc = RunConfig(
        experiment="tiny",
        model="dcgan",
        seed=0,
        data=exp.data,
        train=exp.train,
        sample=exp.sample,
        metrics=exp.metrics,
        generator={"lr": 1e-4},
    )
    p = tmp_path / "config.toml"
    p.write_text(run_config_toml(rc))
    back = read_run_config(p)
    assert back == rc and back.run_id == rc.run_id
    other = rc.model_copy(update={"seed": 1})
    assert other.digest() != rc.digest()


def test_bad_experiment_names_are_rejected(tmp_path):
    p = write(tmp_path, 'name = "../evil"\n')
    with pytest.raises(ConfigError, match="path-safe"):
        load_experiment(str(p))


def test_model_tables_must_name_a_model_but_may_be_left_out_by_models():
    exp = ExperimentConfig(models=["dcgan"], model={"ddpm": {"lr": 1e-3}})
    check_model_tables(exp, registered={"dcgan", "ddpm"})  # `--models dcgan` on a 2-model file
    typo = ExperimentConfig(models=["dcgan"], model={"dcgn": {"lr": 1e-3}})
    with pytest.raises(ConfigError, match=r"\[model.dcgn\]"):
        check_model_tables(typo, registered={"dcgan", "ddpm"})


# -- where experiments come from -------------------------------------------------------
def _experiment_file(folder: Path, name: str, description: str) -> Path:
    p = folder / "experiments" / f"{name}.toml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(f'name = "{name}"\ndescription = "{description}"\n')
    return p


def test_lookup_order_project_then_env_path_then_packaged(tmp_path, monkeypatch):
    from genbench.config import find_experiment, find_experiments

    project, env_a, env_b = tmp_path / "proj", tmp_path / "a", tmp_path / "b"
    mine = _experiment_file(project / "configs", "smoke", "the project's smoke")
    env_smoke = _experiment_file(env_a, "smoke", "env smoke")
    lab = _experiment_file(env_a, "lab", "env a lab")
    _experiment_file(env_b, "lab", "env b lab")
    only_b = _experiment_file(env_b, "only-b", "env b")
    monkeypatch.chdir(project)
    monkeypatch.setenv("GENBENCH_CONFIG_PATH", f"{env_a}{os.pathsep}{env_b}")

    assert find_experiment("smoke") == Path("configs/experiments/smoke.toml").absolute() == mine
    assert load_experiment("smoke").description == "the project's smoke"
    assert find_experiment("lab") == lab and find_experiment("only-b") == only_b
    assert find_experiment("default") == PACKAGED_CONFIGS / "experiments" / "default.toml"
    explicit = _experiment_file(tmp_path / "x", "smoke", "explicit")
    assert find_experiment(str(explicit)) == explicit  # an explicit path wins over any name

    found = {e.name: e for e in find_experiments()}
    assert found["smoke"].origin == "project (./configs)"
    assert found["smoke"].shadows == (env_smoke, PACKAGED_CONFIGS / "experiments" / "smoke.toml")
    assert found["lab"].origin == "$GENBENCH_CONFIG_PATH" and found["default"].origin == "packaged"
    with pytest.raises(ConfigError, match=r"unknown experiment 'nope' \(known: .*only-b"):
        find_experiment("nope")


def test_packaged_experiments_are_found_from_any_folder(tmp_path, monkeypatch):
    from genbench.config import find_experiments

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GENBENCH_CONFIG_PATH", raising=False)
    names = {e.name: e.origin for e in find_experiments()}
    shipped = sorted(
        p.stem for p in (Path(__file__).parents[1] / "configs/experiments").glob("*.toml")
    )
    assert names == dict.fromkeys(shipped, "packaged") and "default" in names
    assert load_experiment("smoke").data.source == "digits"


def test_a_leftover_model_defaults_file_is_an_error(tmp_path, monkeypatch):
    from genbench_baselines.dcgan import DCGANConfig

    (tmp_path / "configs" / "models").mkdir(parents=True)
    (tmp_path / "configs" / "models" / "dcgan.toml").write_text("lr = 3e-4\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"no longer read.*\[model.dcgan\]"):
        resolve_model_config("dcgan", DCGANConfig, tiny_experiment(["dcgan"]))


# -- one source of defaults; extends ------------------------------------------------------
def test_cddpm_extends_the_experiments_ddpm_table():
    from genbench_baselines.cddpm import CDDPMConfig
    from genbench_baselines.ddpm import DDPMConfig

    full = load_experiment("full")
    assert full.model["cddpm"] == {"extends": "ddpm"}  # nothing restated
    ddpm = resolve_model_config("ddpm", DDPMConfig, full)
    cddpm = resolve_model_config("cddpm", CDDPMConfig, full)
    assert ddpm.base_channels == 128 and ddpm.lr == 2e-4 and ddpm.sample_steps == 100
    shared = cddpm.model_dump(exclude={"guidance_scale", "label_dropout"})
    assert shared == ddpm.model_dump()
    # cddpm's own keys win over the table it extends; --set on ddpm reaches cddpm too
    exp = load_experiment("full", overrides=["cddpm.lr=1e-3", "ddpm.dropout=0.2"])
    cddpm = resolve_model_config("cddpm", CDDPMConfig, exp)
    assert cddpm.lr == 1e-3 and cddpm.dropout == 0.2 and cddpm.base_channels == 128


def test_extends_errors_name_the_table():
    from genbench_baselines.cddpm import CDDPMConfig

    def exp(tables):
        return tiny_experiment(["cddpm"]).model_copy(update={"model": tables})

    with pytest.raises(ConfigError, match=r"\[model.cddpm\] extends 'dppm', but there is no"):
        resolve_model_config("cddpm", CDDPMConfig, exp({"cddpm": {"extends": "dppm"}}))
    cycle = {"cddpm": {"extends": "ddpm"}, "ddpm": {"extends": "cddpm"}}
    with pytest.raises(ConfigError, match="cycle: cddpm -> ddpm -> cddpm"):
        resolve_model_config("cddpm", CDDPMConfig, exp(cycle))
    bad = {"cddpm": {"extends": "dcgan"}, "dcgan": {"latent_dim": 64}}
    with pytest.raises(
        ConfigError, match=r"\[model.dcgan\] \(extended by \[model.cddpm\]\).*latent_dim"
    ):
        resolve_model_config("cddpm", CDDPMConfig, exp(bad))


def test_packaged_experiments_restate_no_model_default():
    from genbench import registry
    from genbench.config import find_experiments

    for e in find_experiments():
        exp = load_experiment(str(e.path))
        for model, table in exp.model.items():
            defaults = registry.load(model).Config().model_dump(mode="json")
            repeated = {k for k, v in table.items() if k != "extends" and defaults.get(k) == v}
            assert not repeated, f"{e.name} [model.{model}] repeats defaults: {repeated}"


def test_config_show_lists_every_key_with_its_description():
    import tomllib

    from genbench.api import show_config
    from genbench_baselines.cddpm import CDDPMConfig

    text = show_config("cddpm")
    values = tomllib.loads(text)  # valid TOML to copy keys from; unset keys are comments
    assert values == {k: v for k, v in CDDPMConfig().model_dump().items() if v is not None}
    # what is inherited: the diffusion block, the shared UNet's keys, the guidance block
    assert all(f"# -- {c}" in text for c in ("DiffusionConfig", "UNetConfig", "GuidanceConfig"))
    line = next(x for x in text.splitlines() if x.startswith("guidance_scale"))
    assert line.endswith("# 1 = conditional, 0 = unconditional")
    resolved = show_config("cddpm", experiment="full", overrides={"cddpm.guidance_scale": 2.0})
    assert tomllib.loads(resolved)["base_channels"] == 128
    line = next(x for x in resolved.splitlines() if x.startswith("guidance_scale"))
    assert line.startswith("guidance_scale = 2.0") and line.endswith("default 3.0")
    assert tomllib.loads(show_config("train", experiment="smoke"))["kimg"] == 0.256


def test_an_experiment_extends_another_table_by_table(tmp_path):
    base = tmp_path / "base.toml"
    base.write_text('name = "base"\nmodels = ["dcgan"]\n[train]\nkimg = 3\nbatch_size = 8\n')
    child = write(tmp_path, f'extends = "{base}"\nname = "child"\n[train]\nkimg = 5\n')
    exp = load_experiment(str(child))
    assert (exp.name, exp.models, exp.train.kimg, exp.train.batch_size) == (
        "child", ["dcgan"], 5, 8,
    )  # fmt: skip
    lit = load_experiment("full-literature")
    assert lit.metrics.reference == "train" and lit.sample.n == load_experiment("full").sample.n
    base.write_text(f'extends = "{child}"\nname = "base"\n')
    with pytest.raises(ConfigError, match="cycle"):
        load_experiment(str(child))
