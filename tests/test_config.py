from pathlib import Path

import pytest

from genbench.config import (
    ExperimentConfig,
    RunConfig,
    check_model_tables,
    load_experiment,
    parse_value,
    read_run_config,
    resolve_model_config,
    run_config_toml,
)
from genbench.errors import ConfigError
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
