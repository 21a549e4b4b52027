"""The typed configs: an experiment (:class:`ExperimentConfig`), its sections, and the
fully resolved config of one run (:class:`RunConfig`, whose digest is the run id's)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from genbench.utils.naming import RUN_ID_DIGITS, check_safe_name, digest, run_id

SECTIONS = ("data", "train", "sample", "metrics")
RESULT_NEUTRAL = "result_neutral"  # a Field marker: the key cannot change any result
# A Field marker for keys added after run ids existed: at its default the key stays out of
# the run id, so every run folder made before the key existed is still recognised.
ID_AT_DEFAULT_OMITTED = "id_at_default_omitted"
_NEW_KEY = {ID_AT_DEFAULT_OMITTED: True}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def id_dump(self, *, neutral: bool = True) -> dict[str, Any]:
        """The section as run ids hash it: keys added later are left out at their default,
        and with ``neutral=False`` result-neutral keys are left out too."""
        d = self.model_dump(mode="json")
        for k, f in type(self).model_fields.items():
            extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
            if (extra.get(RESULT_NEUTRAL) and not neutral) or (
                extra.get(ID_AT_DEFAULT_OMITTED)
                and getattr(self, k) == f.get_default(call_default_factory=True)
            ):
                d.pop(k, None)
        return d


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
    train_subset: int | None = Field(
        None,
        ge=1,
        description=(
            "train on the first N images of a fixed seeded permutation of the training split "
            "(nested: a smaller N's images are in every larger N's); the held-out split, the "
            "validation slice and the copy audit's pool stay as without it, and the audit "
            "counts only these N as trained on"
        ),
        json_schema_extra=_NEW_KEY,
    )
    train_subset_part: int = Field(
        0,
        ge=0,
        description=(
            "with train_subset = N: train on block k of N images of the same permutation "
            "(images k*N to (k+1)*N - 1). 0 is the first N, which nest across sizes; 1 is the "
            "next N, disjoint from them, for the two-model check (Kadkhodaie et al. 2024)"
        ),
        json_schema_extra=_NEW_KEY,
    )
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

    budget: Literal["kimg", "tflop", "seconds"] = Field(
        "kimg",
        description="what the budget counts, the same for every model: images seen (`kimg`), "
        "training FLOPs (`tflop`: each model sees the images its FLOPs buy) or seconds inside "
        "training steps (`seconds`: machine-dependent, so not reproducible elsewhere)",
        json_schema_extra=_NEW_KEY,
    )
    kimg: float = Field(10.0, gt=0, description="budget in thousands of training images seen")
    tflop: float | None = Field(
        None,
        gt=0,
        description="training budget in TFLOP, when budget = 'tflop'",
        json_schema_extra=_NEW_KEY,
    )
    seconds: float | None = Field(
        None,
        gt=0,
        description="training budget in seconds inside train steps, when budget = 'seconds'",
        json_schema_extra=_NEW_KEY,
    )
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
        "auto",
        description="auto = bf16 autocast on CUDA and on CPUs with native bf16, fp32 elsewhere",
    )
    channels_last: bool = Field(
        True,
        description="channels_last networks and inputs on CUDA (on the CPU each network decides)",
    )
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

    @model_validator(mode="after")
    def _budget(self) -> TrainConfig:
        if self.budget == "tflop" and self.tflop is None:
            raise ValueError("budget = 'tflop' needs train.tflop (the FLOP budget in TFLOP)")
        if self.budget == "seconds" and self.seconds is None:
            raise ValueError("budget = 'seconds' needs train.seconds")
        return self

    def budget_text(self) -> str:
        """The budget as the report states it, e.g. '20 kimg' or '30 TFLOP'."""
        if self.budget == "tflop":
            return f"{self.tflop:g} TFLOP"
        if self.budget == "seconds":
            return f"{self.seconds:g} s of training"
        return f"{self.kimg:g} kimg"

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
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "fp32",
        description="Inception's precision: fp32 (scores equal a direct torch-fidelity call), "
        "bf16 autocast, or auto = bf16 on CUDA and on CPUs with native bf16 (as training); "
        "bf16 features are a different protocol (fingerprint) with a documented deviation",
        json_schema_extra=_NEW_KEY,
    )
    batch_size: int = Field(32, ge=1, description="images per feature-extractor batch on CUDA")
    cpu_batch_size: int = Field(
        12,
        ge=1,
        description="at most this many per batch on the CPU, where small batches stay in cache "
        "(Inception on 2 cores: 12 run 1.25x faster than 32)",
        json_schema_extra={RESULT_NEUTRAL: True},  # batching changes no score
    )
    reference: Literal["test", "train"] = Field(
        "test",
        description="FID/KID reference: `test` = N_ref held-out images (genbench's default), "
        "`train` = N_ref training images (the DDPM/EDM/StudioGAN literature protocol)",
        json_schema_extra=_NEW_KEY,
    )
    n_ref: int | None = Field(None, ge=2, description="reference images (default: sample.n)")
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
            "family-wise error of a copy flag: a run is flagged when 'copied fraction <= "
            "copy_tolerance' is rejected at this level (Bonferroni over the audit's three "
            "estimates; the report adjusts over its runs by Holm)"
        ),
    )
    copy_tolerance: float = Field(
        0.01,
        ge=0.0,
        lt=1.0,
        description="copied fraction tolerated: a run is flagged only when a lower "
        "confidence bound of its copied fraction (per sample or by membership) exceeds it",
        json_schema_extra=_NEW_KEY,
    )
    copy_descriptor_seed: int | None = Field(
        None,
        ge=0,
        description="seed of the copy descriptor's training; None: drawn once per results "
        "folder (kept in RESULTS/.audit-seed.json), so a plugin cannot rebuild the network",
        json_schema_extra=_NEW_KEY,
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
    snapshot_fractions: list[float] = Field(
        default_factory=list,
        description="also score a smaller sample set at these fractions of the training budget "
        "(in the budget's unit: kimg, TFLOP or seconds)",
        json_schema_extra=_NEW_KEY,
    )
    snapshot_n: int = Field(256, ge=2, description="images per snapshot (and reference images)")
    snapshot_names: list[str] = Field(
        default_factory=lambda: ["fid", "kid"], description="metrics scored at snapshots"
    )

    def extractor_batch(self, device: Any) -> int:
        """Images per feature-extractor batch on ``device`` (a torch.device or its name)."""
        on_cuda = str(getattr(device, "type", device)).startswith("cuda")
        return self.batch_size if on_cuda else min(self.batch_size, self.cpu_batch_size)

    @field_validator("snapshot_kimg")
    @classmethod
    def _snapshots(cls, v: list[float]) -> list[float]:
        if any(k <= 0 for k in v):
            raise ValueError("snapshot points must be positive kimg values")
        return sorted(set(v))

    @field_validator("snapshot_fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if any(not 0 < f < 1 for f in v):
            raise ValueError("snapshot fractions must lie strictly between 0 and 1")
        return sorted(set(v))

    @field_validator("names", "snapshot_names")
    @classmethod
    def _names(cls, v: list[str], info: ValidationInfo) -> list[str]:
        # Imported here: importing the metrics package runs its __init__ (scoring).
        import genbench.metric_registry as registry

        snap = info.field_name == "snapshot_names"
        known = registry.snapshot_nameable() if snap else registry.nameable()
        bad = [n for n in v if n not in known]
        if bad:
            switched = {u.name: u.switch for u in registry.metric_units() if u.switch}
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
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="keys with several values, as `--sweep`: each point of their grid is a "
        "config of its own (`--sweep` on the command line replaces a key's values)",
        json_schema_extra=_NEW_KEY,
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
            d[section] = getattr(self, section).id_dump(neutral=False)
        return d

    def digest(self) -> str:
        return digest(self.identity(), RUN_ID_DIGITS)

    @property
    def run_id(self) -> str:
        return run_id(
            experiment=self.experiment, label=f"{self.model}-s{self.seed}", key=self.identity()
        )
