"""Typed experiment and run configs, loaded from TOML and ``--set`` overrides.

Layers, later ones winning: a generator's ``Config`` defaults (the one source of
defaults), then the experiment's ``[model.<name>]`` table (after the tables it
``extends``), then ``--set``. Unknown or mistyped keys are errors that name the
key and where it came from. Experiments are found by name on a search path
(``./configs``, ``$GENBENCH_CONFIG_PATH``, the packaged ones) or given as a file.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import tomllib
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from genbench.contract import GeneratorConfig
from genbench.errors import ConfigError
from genbench.naming import check_safe_name, digest

SECTIONS = ("data", "train", "sample", "metrics")
RESULT_NEUTRAL = "result_neutral"  # a Field marker: the key cannot change any result


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

    source: str = Field("fashion-mnist", description="dataset name (`genbench list` shows them)")
    root: str | None = Field(
        None, description="folder for folder/utkface, or where to look for downloadable data"
    )
    resolution: int = Field(32, ge=4, le=1024, description="image side after resize + crop")
    channels: Literal[1, 3] | None = Field(None, description="None keeps the source's channels")
    condition: Literal["auto", "none", "classes", "attributes"] = Field(
        "auto", description="labels given to models; auto = whatever the source has"
    )
    label: str = Field("race", description="utkface: which file-name field is the class")
    split: Literal["official", "random"] = Field(
        "official",
        description="held-out split: the dataset's own test split, or a seeded random one",
    )
    holdout_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="held-out share for a random split"
    )
    split_seed: int = Field(0, description="seed of a random split")
    max_train: int | None = Field(None, ge=1, description="use only the first N training images")
    max_holdout: int | None = Field(None, ge=1, description="use only the first N held-out images")
    validation_size: int = Field(
        512,
        ge=0,
        description=(
            "training images set aside, never trained on: evaluate()'s batches, and the copy "
            "audit's fresh images where the held-out split is too short (at most a tenth of "
            "the training split)"
        ),
    )
    max_bad_fraction: float = Field(
        0.01, ge=0.0, le=1.0, description="unreadable files tolerated (skipped) before stopping"
    )


class TrainConfig(_Strict):
    """The training budget and loop settings, identical for every model."""

    kimg: float = Field(10.0, gt=0, description="budget in thousands of training images seen")
    batch_size: int = Field(64, ge=1, description="global batch, identical for every model")
    max_minutes: float | None = Field(None, gt=0, description="optional wall-clock budget")
    checkpoint_kimg: float | None = Field(None, gt=0, description="default: a tenth of the budget")
    log_every: int = Field(20, ge=1, description="steps between log lines")
    eval_every_kimg: float | None = Field(
        None, gt=0, description="validation evaluation interval; default one epoch"
    )
    eval_images: int = Field(
        512, ge=0, description="validation-slice images per evaluation (0 = off)"
    )
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:N or mps")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto = bf16 autocast on CUDA, fp32 elsewhere"
    )
    channels_last: bool = Field(True, description="channels_last networks and inputs (CUDA)")
    compile: bool = Field(False, description="torch.compile each network in place (CUDA only)")
    deterministic: bool = Field(False, description="ask PyTorch for deterministic kernels")
    # Where copies of the numbers go and how weights are stored do not change any result,
    # so these keys stay out of the run id (RESULT_NEUTRAL): turning TensorBoard on does not
    # re-train a finished run, and run ids from before the keys existed stay valid.
    loggers: list[Literal["jsonl", "tensorboard", "wandb"]] = Field(
        default_factory=lambda: ["jsonl"],
        description="trackers; the run folder's JSONL files are always written",
        json_schema_extra={RESULT_NEUTRAL: True},
    )
    checkpoint_format: Literal["torch", "safetensors"] = Field(
        "torch",
        description="network weights as a weights_only torch file or .safetensors",
        json_schema_extra={RESULT_NEUTRAL: True},
    )

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v != "auto" and not (v == "cpu" or v == "cuda" or v.startswith("cuda:") or v == "mps"):
            raise ValueError("must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        return v

    @field_validator("loggers")
    @classmethod
    def _loggers(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a logger is listed twice")
        # JSONL is the source of truth the report reads: always on, listed or not.
        return v if "jsonl" in v else ["jsonl", *v]


class SampleConfig(_Strict):
    """The fixed sample set every model generates after training."""

    n: int = Field(1000, ge=1, description="number of images generated and scored")
    batch_size: int = Field(100, ge=1, description="images per sampling call")
    seed_offset: int = Field(10_000, description="sampling seed = run seed + offset")


#: Keys of the old subset-based memorization audit; accepted (ignored) with a warning.
DEPRECATED_METRICS_KEYS = (
    "memorization_max_train",
    "memorization_max_train_pixels",
    "memorization_quantile",
)


class MetricsConfig(_Strict):
    """Which scores to compute on the sample set, and how (see ``genbench doctor``)."""

    names: list[str] = Field(
        default_factory=lambda: ["fid", "kid", "prc", "isc"],
        description="metric units to compute (`genbench list` shows them): fid, kid, prc "
        "(precision/recall), isc (Inception Score), fd_dinov2 and kid_dinov2 (DINOv2 ViT-L/14)",
    )
    enabled: bool = Field(True, description="score the sample set (false: train and sample only)")
    inception: Literal["auto", "official", "fidhelper"] = Field(
        "auto", description="official torch-fidelity weights, the offline fid-helper copy, or auto"
    )
    inception_weights: str | None = Field(
        None, description="a weights file (else $GENBENCH_INCEPTION_WEIGHTS)"
    )
    download_weights: bool = Field(True, description="let auto/official download the weights")
    batch_size: int = Field(32, ge=1, description="images per feature-extractor batch on CUDA")
    cpu_batch_size: int = Field(
        12,
        ge=1,
        description="at most this many per batch on the CPU, where small batches stay in cache "
        "(Inception on 2 cores: 12 run 1.25x faster than 32)",
        json_schema_extra={RESULT_NEUTRAL: True},  # batching changes no score
    )
    n_ref: int | None = Field(
        None, ge=2, description="held-out reference images (default: sample.n)"
    )
    kid_subsets: int = Field(100, ge=1, description="KID subsets averaged")
    kid_subset_size: int = Field(1000, ge=2, description="upper bound; min(this, N, N_ref) is used")
    isc_splits: int = Field(10, ge=1, description="Inception Score splits")
    prc_neighborhood: int = Field(3, ge=1, description="k of precision/recall's k-NN balls")
    per_class: bool = Field(True, description="per-class FID/KID for class-conditional runs")
    classifier: bool = Field(True, description="class consistency via a small cached classifier")
    classifier_steps: int = Field(1000, ge=1, description="training steps of that classifier")
    memorization: bool = Field(
        True,
        description=(
            "copy audit: every sample against the training, validation and held-out images, "
            "and the C_T data-copying test"
        ),
    )
    copy_max_shift: int = Field(
        3, ge=0, description="translations (px) the copy audit's pixel stage undoes exactly"
    )
    copy_alpha: float = Field(
        0.01, gt=0.0, lt=0.5, description="copy audit's per-image false-positive rate"
    )
    copy_flag_p: float = Field(
        0.01,
        gt=0.0,
        lt=1.0,
        description=(
            "a run is flagged when its copy rate exceeds fresh images' (Fisher) or its "
            "samples sit closer to the training split than fresh images (C_T) at this p"
        ),
    )
    copy_fresh: int = Field(
        1000,
        ge=2,
        description="copy audit: at most this many fresh images each for calibration and check",
    )
    copy_descriptor_steps: int = Field(
        3000, ge=1, description="training steps of the learned copy descriptor (cached)"
    )
    bootstrap: int = Field(
        200, ge=0, description="resamples of the samples for FID/KID sampling intervals (0: off)"
    )
    snapshot_kimg: list[float] = Field(
        default_factory=list, description="also score a smaller sample set at these kimg points"
    )
    snapshot_n: int = Field(256, ge=2, description="images per snapshot (and reference images)")
    snapshot_names: list[str] = Field(
        default_factory=lambda: ["fid", "kid"], description="metrics scored at snapshots"
    )

    def extractor_batch(self, device: Any) -> int:
        """Images per feature-extractor batch on ``device`` (a torch.device or its name)."""
        on_cuda = str(getattr(device, "type", device)).startswith("cuda")
        return self.batch_size if on_cuda else min(self.batch_size, self.cpu_batch_size)

    @model_validator(mode="before")
    @classmethod
    def _deprecated(cls, data: Any) -> Any:
        if isinstance(data, dict):
            old = [k for k in DEPRECATED_METRICS_KEYS if k in data]
            if old:
                warnings.warn(
                    f"metrics.{old[0]} is no longer used: the copy audit searches the whole "
                    "training split (remove the key)",
                    DeprecationWarning,
                    stacklevel=2,
                )
                data = {k: v for k, v in data.items() if k not in DEPRECATED_METRICS_KEYS}
        return data

    @field_validator("snapshot_kimg")
    @classmethod
    def _snapshots(cls, v: list[float]) -> list[float]:
        if any(k <= 0 for k in v):
            raise ValueError("snapshot points must be positive kimg values")
        return sorted(set(v))

    @field_validator("names", "snapshot_names")
    @classmethod
    def _names(cls, v: list[str], info: ValidationInfo) -> list[str]:
        # Imported here: the metrics package imports this module.
        from genbench.metrics import units

        snap = info.field_name == "snapshot_names"
        known = units.snapshot_nameable() if snap else units.nameable()
        bad = [n for n in v if n not in known]
        if bad:
            switched = {u.name: u.switch for u in units.metric_units() if u.switch}
            if bad[0] in switched:
                raise ValueError(
                    f"{bad[0]!r} is turned on by metrics.{switched[bad[0]]}, not listed here"
                )
            what = "metric for snapshots" if snap else "metric"
            raise ValueError(f"unknown {what} {bad[0]!r} (known: {', '.join(known)})")
        if len(set(v)) != len(v):
            raise ValueError("a metric is listed twice")
        return v


class ExperimentConfig(_Strict):
    """One experiment: data, budget, models, seeds, samples and metrics."""

    name: str = Field("default", description="experiment name (part of every run id)")
    description: str = Field("", description="a line saying what the experiment is for")
    models: list[str] = Field(
        default_factory=lambda: ["dcgan"], description="generators to train (`--models`)"
    )
    seeds: list[int] = Field(
        default_factory=lambda: [0], description="training seeds, one run each (`--seeds`)"
    )
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    model: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per-model tables `[model.<name>]`: keys of that generator's config",
    )
    pretrained: dict[str, str] = Field(
        default_factory=dict,
        description="model -> weights to score without training (a genbench run folder, "
        "or what the generator's from_pretrained reads: a diffusers folder, a hub id)",
    )

    @field_validator("pretrained")
    @classmethod
    def _pretrained(cls, v: dict[str, str]) -> dict[str, str]:
        for m, src in v.items():
            check_safe_name(m, what="model name")
            if not src.strip():
                raise ValueError(f"pretrained source of {m!r} is empty")
        return v

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
    pretrained: str | None = Field(
        None, description="score these weights without training (see ExperimentConfig)"
    )

    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        if d["pretrained"] is None:
            del d["pretrained"]  # trained runs keep the config (and id) they always had
        return d

    def identity(self) -> dict[str, Any]:
        """The config that determines the run's results: :meth:`to_dict` without the keys
        marked result-neutral (trackers, checkpoint file format). Run ids and training
        keys hash this."""
        d = self.to_dict()
        for section in SECTIONS:
            for k, f in type(getattr(self, section)).model_fields.items():
                extra = f.json_schema_extra
                if isinstance(extra, dict) and extra.get(RESULT_NEUTRAL):
                    d[section].pop(k, None)
        return d

    def digest(self) -> str:
        return digest(self.identity(), 10)

    @property
    def run_id(self) -> str:
        return f"{self.experiment}-{self.model}-s{self.seed}-{self.digest()}"


# -- locating and reading files ------------------------------------------
ENV_CONFIG_PATH = "GENBENCH_CONFIG_PATH"
#: The experiments that ship inside the package (package data, so they exist in any install).
PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"


@dataclass(frozen=True)
class ConfigDir:
    """A folder searched for ``experiments/<name>.toml``, and where it came from."""

    path: Path
    origin: Literal["project", "env", "packaged"]

    @property
    def label(self) -> str:
        return {
            "project": "project (./configs)",
            "env": f"${ENV_CONFIG_PATH}",
            "packaged": "packaged",
        }[self.origin]


@dataclass(frozen=True)
class ExperimentFile:
    """An experiment found on the search path (``shadows``: same-named files it hides)."""

    name: str
    path: Path
    origin: str
    shadows: tuple[Path, ...] = ()


def config_search_path() -> list[ConfigDir]:
    """Where experiments are looked up, first match winning: ``./configs`` (a user's own
    project), then each folder of ``$GENBENCH_CONFIG_PATH`` (``os.pathsep``-separated), then
    the experiments packaged with genbench. Missing folders and repeats are left out."""
    dirs = [ConfigDir(Path.cwd() / "configs", "project")]
    env = [p for p in os.environ.get(ENV_CONFIG_PATH, "").split(os.pathsep) if p]
    if legacy := os.environ.get("GENBENCH_CONFIG_DIR"):
        warnings.warn(
            f"GENBENCH_CONFIG_DIR is deprecated; use {ENV_CONFIG_PATH}",
            DeprecationWarning,
            stacklevel=2,
        )
        env.append(legacy)
    dirs += [ConfigDir(Path(p), "env") for p in env]
    dirs.append(ConfigDir(PACKAGED_CONFIGS, "packaged"))
    out: list[ConfigDir] = []
    seen: set[Path] = set()
    for d in dirs:
        if d.path.is_dir() and d.path.resolve() not in seen:
            seen.add(d.path.resolve())
            out.append(d)
    return out


def config_dirs() -> list[Path]:
    return [d.path for d in config_search_path()]


def is_path_like(name_or_path: str) -> bool:
    """An explicit file (``x.toml``, ``dir/x``) rather than a name looked up on the search path."""
    return name_or_path.endswith(".toml") or "/" in name_or_path or os.sep in name_or_path


def find_experiment(name_or_path: str) -> Path:
    """The file of an experiment: an explicit path, else the first match on the search path."""
    if is_path_like(name_or_path):
        p = Path(name_or_path)
        if not p.is_file():
            raise ConfigError(f"experiment file {name_or_path} does not exist")
        return p
    for d in config_search_path():
        cand = d.path / "experiments" / f"{name_or_path}.toml"
        if cand.is_file():
            return cand
    known = sorted(e.name for e in find_experiments())
    raise ConfigError(f"unknown experiment {name_or_path!r} (known: {', '.join(known) or 'none'})")


def find_experiments() -> list[ExperimentFile]:
    """Every experiment on the search path, sorted by name, with where it came from."""
    found: dict[str, ExperimentFile] = {}
    for d in config_search_path():
        for f in sorted((d.path / "experiments").glob("*.toml")):
            prior = found.get(f.stem)
            if prior is None:
                found[f.stem] = ExperimentFile(f.stem, f, d.label)
            else:
                found[f.stem] = replace(prior, shadows=(*prior.shadows, f))
    return [found[k] for k in sorted(found)]


def list_experiments() -> dict[str, Path]:
    return {e.name: e.path for e in find_experiments()}


def check_no_model_files(model: str) -> None:
    """Per-model TOML defaults (``configs/models/<model>.toml``) are no longer read: defaults
    live in the generator's Config class. A leftover file would otherwise be silently ignored."""
    for d in config_search_path():
        f = d.path / "models" / f"{model}.toml"
        if f.is_file():
            raise ConfigError(
                f"{f}: per-model TOML defaults are no longer read (defaults live in the "
                f"generator's Config; `genbench config show {model}` lists them); move the keys "
                f"that differ into the experiment's [model.{model}] table and delete the file"
            )


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


# -- describing configs ------------------------------------------------------
def toml_value(value: Any) -> str:
    """One value in TOML's inline syntax (the inverse of :func:`parse_value`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # 1e-05, inf and nan are TOML too
    if isinstance(value, (str, Path)):
        return json.dumps(str(value), ensure_ascii=False)  # JSON's escapes are TOML's
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = (f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    raise ConfigError(f"{value!r} has no TOML form (leave a key out to keep its default)")


@dataclass(frozen=True)
class ConfigField:
    """One key of a config model: its value, default, description and declaring class."""

    name: str
    value: Any
    default: Any
    description: str
    declared_by: str
    choices: tuple[Any, ...] = ()

    @property
    def changed(self) -> bool:
        return self.value != self.default


def config_fields(cls: type[BaseModel], values: BaseModel | None = None) -> list[ConfigField]:
    """The fields of ``cls`` (inherited ones first), with ``values``' values or the defaults."""
    out = []
    for name, info in cls.model_fields.items():
        default = info.get_default(call_default_factory=True)
        declared_by = next(
            (
                base.__name__
                for base in reversed(cls.__mro__)
                if name in getattr(base, "__annotations__", {})
            ),
            cls.__name__,
        )
        ann = info.annotation
        choices = get_args(ann) if get_origin(ann) is Literal else ()
        out.append(
            ConfigField(
                name=name,
                value=getattr(values, name) if values is not None else default,
                default=default,
                description=info.description or "",
                declared_by=declared_by,
                choices=choices,
            )
        )
    return out


def render_config_fields(fields: list[ConfigField], *, header: list[str] = ()) -> str:
    """Fields as TOML with each description as a comment (unset keys commented out), grouped
    by the class that declares them; a value that differs from its default says the default."""
    lines = [f"# {h}" for h in header]
    assigns = [
        f"{f.name} = {toml_value(f.value)}" if f.value is not None else f"# {f.name} (unset)"
        for f in fields
    ]
    width = min(40, max((len(a) for a in assigns), default=0))
    owner = None
    for f, assign in zip(fields, assigns, strict=True):
        if f.declared_by != owner and len({g.declared_by for g in fields}) > 1:
            lines += ["", f"# -- {f.declared_by}"]
        owner = f.declared_by
        notes = [f.description] if f.description else []
        if f.choices:
            notes.append("one of " + ", ".join(str(c) for c in f.choices))
        if f.changed:
            notes.append("default " + (toml_value(f.default) if f.default is not None else "unset"))
        lines.append(f"{assign:<{width}}  # {'; '.join(notes)}" if notes else assign)
    return "\n".join(lines).strip("\n") + "\n"


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


#: The key of a ``[model.<name>]`` table that takes another table's keys as its base.
EXTENDS = "extends"


def model_table_layers(
    experiment: ExperimentConfig, model: str, *, experiment_file: str = "experiment"
) -> list[tuple[str, dict[str, Any]]]:
    """The experiment's tables that configure ``model``, base first.

    ``[model.cddpm] extends = "ddpm"`` makes ``[model.ddpm]`` the base of cddpm's table,
    so an experiment states the keys the two share once (chains are followed; a cycle or a
    missing table is an error). ``extends`` itself never reaches the generator's config.
    """
    layers: list[tuple[str, dict[str, Any]]] = []
    chain: list[str] = []
    name: str | None = model
    while name is not None:
        if name in chain:
            raise ConfigError(
                f"{experiment_file}: [model.{model}] extends in a cycle: {' -> '.join([*chain, name])}"
            )
        table = dict(experiment.model.get(name, {}))
        if chain and name not in experiment.model:
            raise ConfigError(
                f"{experiment_file}: [model.{chain[-1]}] extends {name!r}, but there is no "
                f"[model.{name}] table"
            )
        parent = table.pop(EXTENDS, None)
        if parent is not None and not isinstance(parent, str):
            raise ConfigError(
                f"{experiment_file}: [model.{name}] {EXTENDS} must be a model name, got {parent!r}"
            )
        where = f"{experiment_file} [model.{name}]"
        if chain:
            where += f" (extended by [model.{chain[-1]}])"
        layers.insert(0, (where, table))
        chain.append(name)
        name = parent
    return [(w, t) for w, t in layers if t]


def resolve_model_config(
    model: str,
    config_cls: type[GeneratorConfig],
    experiment: ExperimentConfig,
    *,
    experiment_file: str = "experiment",
) -> GeneratorConfig:
    """The generator's Config defaults updated with the experiment's table for ``model``
    (and the tables it extends), validating each layer so an error names its table."""
    check_no_model_files(model)
    merged: dict[str, Any] = {}
    for where, layer in model_table_layers(experiment, model, experiment_file=experiment_file):
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
    unused = sorted(set(experiment.pretrained) - set(experiment.models))
    if unused:
        raise ConfigError(
            f"pretrained weights for {unused[0]!r}, which is not in models = {experiment.models} "
            f"(add --models {unused[0]})"
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
        pretrained=experiment.pretrained.get(model),
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
