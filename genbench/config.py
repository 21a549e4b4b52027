"""Typed experiment and run configs, loaded from TOML and ``--set`` overrides.

Layers, later ones winning: a generator's ``Config`` defaults, then
``configs/models/<name>.toml``, then the experiment's ``[model.<name>]`` table,
then ``--set``. Unknown or mistyped keys are errors that name the key and where
it came from.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from genbench.contract import GeneratorConfig
from genbench.errors import ConfigError
from genbench.naming import check_safe_name, digest

SECTIONS = ("data", "train", "sample", "metrics")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """The data every model of an experiment trains on.

    ``source`` is a dataset name (``genbench list`` shows them); ``root`` a
    folder for ``folder``/``utkface`` or a place to look for downloadable data.
    The held-out split (the reference set for scoring) is the dataset's official
    test split when ``split = "official"`` and it has one, else a seeded random
    ``holdout_fraction`` of the images.
    """

    source: str = "fashion-mnist"
    root: str | None = None
    resolution: int = Field(32, ge=4, le=1024)
    channels: Literal[1, 3] | None = Field(None, description="None keeps the source's channels")
    condition: Literal["auto", "none", "classes", "attributes"] = "auto"
    label: str = Field("race", description="utkface: which file-name field is the class")
    split: Literal["official", "random"] = "official"
    holdout_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    split_seed: int = 0
    max_train: int | None = Field(None, ge=1, description="use only the first N training images")
    max_holdout: int | None = Field(None, ge=1)
    max_bad_fraction: float = Field(0.01, ge=0.0, le=1.0)


class TrainConfig(_Strict):
    """The training budget and loop settings, identical for every model."""

    kimg: float = Field(10.0, gt=0, description="budget in thousands of training images seen")
    batch_size: int = Field(64, ge=1)
    max_minutes: float | None = Field(None, gt=0, description="optional wall-clock budget")
    checkpoint_kimg: float | None = Field(None, gt=0, description="default: a tenth of the budget")
    log_every: int = Field(20, ge=1, description="steps between log lines")
    eval_every_kimg: float | None = Field(
        None, gt=0, description="held-out evaluation interval; default one epoch"
    )
    eval_images: int = Field(512, ge=0, description="held-out images per evaluation (0 = off)")
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    channels_last: bool = True
    compile: bool = Field(False, description="torch.compile each network in place (CUDA only)")
    deterministic: bool = False

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v != "auto" and not (v == "cpu" or v == "cuda" or v.startswith("cuda:") or v == "mps"):
            raise ValueError("must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        return v


class SampleConfig(_Strict):
    """The fixed sample set every model generates after training."""

    n: int = Field(1000, ge=1, description="number of images generated and scored")
    batch_size: int = Field(100, ge=1)
    seed_offset: int = Field(10_000, description="sampling seed = run seed + offset")


class MetricsConfig(_Strict):
    """Which scores to compute on the sample set, and how (see ``genbench doctor``)."""

    names: list[str] = Field(default_factory=lambda: ["fid", "kid", "prc", "isc"])
    enabled: bool = True
    inception: Literal["auto", "official", "fidhelper"] = Field(
        "auto", description="official torch-fidelity weights, the offline fid-helper copy, or auto"
    )
    inception_weights: str | None = Field(
        None, description="a weights file (else $GENBENCH_INCEPTION_WEIGHTS)"
    )
    download_weights: bool = Field(True, description="let auto/official download the weights")
    batch_size: int = Field(32, ge=1, description="images per Inception batch")
    n_ref: int | None = Field(
        None, ge=2, description="held-out reference images (default: sample.n)"
    )
    kid_subsets: int = Field(100, ge=1)
    kid_subset_size: int = Field(1000, ge=2, description="upper bound; min(this, N, N_ref) is used")
    isc_splits: int = Field(10, ge=1)
    prc_neighborhood: int = Field(3, ge=1)
    per_class: bool = Field(True, description="per-class FID/KID for class-conditional runs")
    classifier: bool = Field(True, description="class consistency via a small cached classifier")
    classifier_steps: int = Field(1000, ge=1, description="training steps of that classifier")
    memorization: bool = Field(True, description="nearest-training-image audit")
    memorization_max_train: int = Field(
        1000, ge=1, description="training images searched in Inception-feature space"
    )
    memorization_max_train_pixels: int | None = Field(
        None, ge=1, description="training images searched in pixel space (None: all)"
    )
    memorization_quantile: float = Field(0.05, gt=0.0, lt=1.0)
    snapshot_kimg: list[float] = Field(
        default_factory=list, description="also score a smaller sample set at these kimg points"
    )
    snapshot_n: int = Field(256, ge=2, description="images per snapshot (and reference images)")
    snapshot_names: list[str] = Field(default_factory=lambda: ["fid", "kid"])

    @field_validator("snapshot_kimg")
    @classmethod
    def _snapshots(cls, v: list[float]) -> list[float]:
        if any(k <= 0 for k in v):
            raise ValueError("snapshot points must be positive kimg values")
        return sorted(set(v))

    @field_validator("names", "snapshot_names")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        known = ("fid", "kid", "prc", "isc")
        bad = [n for n in v if n not in known]
        if bad:
            raise ValueError(f"unknown metric {bad[0]!r} (known: {', '.join(known)})")
        return v


class ExperimentConfig(_Strict):
    """One experiment: data, budget, models, seeds, samples and metrics."""

    name: str = "default"
    description: str = ""
    models: list[str] = Field(default_factory=lambda: ["dcgan"])
    seeds: list[int] = Field(default_factory=lambda: [0])
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    model: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_safe_name(v, what="experiment name")

    @field_validator("models")
    @classmethod
    def _models(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one model is needed")
        for m in v:
            check_safe_name(m, what="model name")
        if len(set(v)) != len(v):
            raise ValueError("models are listed twice")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("at least one seed is needed")
        if any(s < 0 for s in v) or len(set(v)) != len(v):
            raise ValueError("seeds must be distinct non-negative integers")
        return v


class RunConfig(_Strict):
    """The fully resolved config of one (experiment, model, seed) run."""

    experiment: str
    model: str
    seed: int
    data: DataConfig
    train: TrainConfig
    sample: SampleConfig
    metrics: MetricsConfig
    generator: dict[str, Any] = Field(default_factory=dict, description="the model's own config")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def digest(self) -> str:
        return digest(self.to_dict(), 10)

    @property
    def run_id(self) -> str:
        return f"{self.experiment}-{self.model}-s{self.seed}-{self.digest()}"


# -- locating and reading files ------------------------------------------
def config_dirs() -> list[Path]:
    dirs = []
    if env := os.environ.get("GENBENCH_CONFIG_DIR"):
        dirs.append(Path(env))
    dirs.append(Path.cwd() / "configs")
    dirs.append(Path(__file__).resolve().parent.parent / "configs")  # a source checkout
    seen: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [s.resolve() for s in seen]:
            seen.append(d)
    return seen


def find_experiment(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or os.sep in name_or_path:
        if not p.is_file():
            raise ConfigError(f"experiment file {name_or_path} does not exist")
        return p
    for d in config_dirs():
        cand = d / "experiments" / f"{name_or_path}.toml"
        if cand.is_file():
            return cand
    known = sorted({f.stem for d in config_dirs() for f in (d / "experiments").glob("*.toml")})
    raise ConfigError(f"unknown experiment {name_or_path!r} (known: {', '.join(known) or 'none'})")


def list_experiments() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in config_dirs():
        for f in sorted((d / "experiments").glob("*.toml")):
            found.setdefault(f.stem, f)
    return found


def model_defaults_file(model: str) -> Path | None:
    for d in config_dirs():
        cand = d / "models" / f"{model}.toml"
        if cand.is_file():
            return cand
    return None


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc


def format_validation_error(exc: ValidationError, *, where: str, prefix: str = "") -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(x) for x in (prefix, *err["loc"]) if x != "")
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}'")
        else:
            parts.append(f"'{key}': {err['msg']}")
    return f"{where}: " + "; ".join(parts)


# -- --set overrides --------------------------------------------------------
def parse_value(text: str) -> Any:
    """TOML value syntax (numbers, booleans, arrays, quoted strings); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(items: list[str]) -> list[tuple[list[str], Any]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        path = [p for p in key.strip().split(".") if p]
        if not sep or not path:
            raise ConfigError(
                f"--set {item!r}: expected KEY=VALUE, e.g. train.kimg=5 or dcgan.lr=2e-4"
            )
        out.append((path, parse_value(value.strip())))
    return out


def apply_overrides(
    raw: dict[str, Any], overrides: list[tuple[list[str], Any]], *, model_names: set[str]
) -> dict[str, Any]:
    """Apply ``--set`` to an experiment dict. ``<model>.key`` means ``model.<model>.key``."""
    raw = copy.deepcopy(raw)
    for path, value in overrides:
        if path[0] in model_names and path[0] not in SECTIONS and len(path) > 1:
            path = ["model", *path]
        node = raw
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {'.'.join(path)}: '{part}' is not a table")
            node = nxt
        node[path[-1]] = value
    return raw


def load_experiment(
    name_or_path: str = "default",
    *,
    overrides: list[str] | None = None,
    model_names: set[str] | None = None,
) -> ExperimentConfig:
    path = find_experiment(name_or_path)
    raw = read_toml(path)
    try:
        ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where=str(path))) from None
    if overrides:
        parsed = parse_overrides(overrides)
        known = set(model_names or ()) | set(raw.get("models", []))
        raw = apply_overrides(raw, parsed, model_names=known)
        try:
            return ExperimentConfig.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, where="--set")) from None
    return ExperimentConfig.model_validate(raw)


def resolve_model_config(
    model: str,
    config_cls: type[GeneratorConfig],
    experiment: ExperimentConfig,
    *,
    experiment_file: str = "experiment",
) -> GeneratorConfig:
    """Merge defaults, configs/models/<model>.toml and the experiment's table, validating each layer."""
    merged: dict[str, Any] = {}
    layers: list[tuple[str, dict[str, Any]]] = []
    if (f := model_defaults_file(model)) is not None:
        layers.append((str(f), read_toml(f)))
    if model in experiment.model:
        layers.append((f"{experiment_file} [model.{model}]", experiment.model[model]))
    for where, layer in layers:
        merged.update(layer)
        try:
            config_cls.model_validate(merged)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, where=where, prefix=model)) from None
    return config_cls.model_validate(merged)


def check_model_tables(experiment: ExperimentConfig, *, registered: set[str]) -> None:
    """A [model.X] table must name a model of the run or a registered generator: a typo is an
    error, while a table for a model that --models left out is simply unused."""
    stray = set(experiment.model) - set(experiment.models) - registered
    if stray:
        raise ConfigError(
            f"[model.{sorted(stray)[0]}] configures a model that is neither in models = "
            f"{experiment.models} nor a registered generator"
        )


def build_run_config(
    experiment: ExperimentConfig, model: str, seed: int, model_config: GeneratorConfig
) -> RunConfig:
    return RunConfig(
        experiment=experiment.name,
        model=model,
        seed=seed,
        data=experiment.data,
        train=experiment.train,
        sample=experiment.sample,
        metrics=experiment.metrics,
        generator=model_config.model_dump(mode="json"),
    )


def run_config_toml(cfg: RunConfig) -> str:
    import tomli_w

    return tomli_w.dumps(_drop_none(cfg.to_dict()))


def _drop_none(d: Any) -> Any:
    # TOML has no null: a missing key means "default" (None) on reading back.
    if isinstance(d, dict):
        return {k: _drop_none(v) for k, v in d.items() if v is not None}
    if isinstance(d, list):
        return [_drop_none(v) for v in d]
    return d


def read_run_config(path: Path) -> RunConfig:
    raw = read_toml(path)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where=str(path))) from None
