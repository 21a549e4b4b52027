"""The Generator plugin contract.

Every model genbench benchmarks, built-in or third-party, is a subclass of
:class:`Generator`. The framework owns data order, budget, seeds, timing,
checkpoints, sampling of the fixed sample set and scoring; a generator owns
only its networks, its objective and its sampler.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

ConditionKind = Literal["none", "classes", "attributes"]


class GeneratorConfig(BaseModel):
    """Base class of every generator's config model.

    Subclass it with typed fields and defaults; unknown keys are rejected, so a
    typo in an experiment's ``[model.<name>]`` table or ``--set`` is an error, not a
    silently ignored setting.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@dataclass(frozen=True)
class DataSpec:
    """What a generator is told about the data it will be trained on.

    Attributes:
        resolution: image side in pixels (images are square).
        channels: 1 (grayscale) or 3 (RGB) as used for training.
        condition: ``"none"``, ``"classes"`` (integer labels) or
            ``"attributes"`` (a float vector per image, e.g. CelebA's 40).
        class_names: names of the classes when ``condition == "classes"``.
        attribute_names: names of the attributes when ``condition == "attributes"``.
        num_train: number of images in the training split.
    """

    resolution: int
    channels: int
    condition: ConditionKind = "none"
    class_names: tuple[str, ...] = ()
    attribute_names: tuple[str, ...] = ()
    num_train: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_attributes(self) -> int:
        return len(self.attribute_names)


@dataclass
class SampleBatch:
    """Images from :meth:`Generator.sample_with_info` plus per-image records.

    ``images`` are float in [0, 1], NCHW. ``info`` maps a field name to one
    JSON-serialisable value per image (e.g. the training indices a blend was
    made from); the framework stores it beside the saved samples.
    """

    images: torch.Tensor
    info: dict[str, list[Any]] = field(default_factory=dict)


class Generator(ABC):
    """Abstract base class of a benchmarked image generator.

    A subclass sets ``Config`` to its :class:`GeneratorConfig` subclass and
    implements :meth:`train_step` and :meth:`sample`. It registers under the
    ``genbench.generators`` entry-point group (``name = "pkg.module:Class"``).

    Construction: ``Generator(spec=..., config=..., device=..., train_data=...)``
    where ``train_data`` is the training split as a :class:`genbench.data.ImageSet`
    (uint8 images and labels). Most models ignore it; a model that needs real
    images at sampling time (the blended-input denoiser) may keep it.

    Conditioning: ``labels`` passed to :meth:`train_step` and :meth:`sample` is
    ``None`` for unconditional data, an int64 tensor of class indices (shape N),
    or a float tensor (N x C) that holds class-mixture weights (rows sum to 1)
    or an attribute vector. Models with ``conditional = False`` ignore it.

    Randomness: draw noise from the ``generator`` argument of :meth:`sample`
    (a CPU ``torch.Generator``; create on CPU, then move to ``self.device``), so
    a sample set is reproducible from its seed on any device. Training may use
    torch's global RNG, which the framework seeds and checkpoints.
    """

    #: The model's config class; its defaults are the model's defaults.
    Config: ClassVar[type[GeneratorConfig]] = GeneratorConfig
    #: Whether ``labels`` changes what the model does.
    conditional: ClassVar[bool] = False
    #: Config keys that only change sampling (e.g. a guidance scale, DDIM steps). Runs that
    #: differ only in these share one training: a sweep over them trains once, re-samples.
    sampling_keys: ClassVar[frozenset[str]] = frozenset()
    #: True when the model makes its samples *from training images at sampling time*
    #: (e.g. by blending and denoising them). The copy audit runs as for any model; its
    #: result is reported as "derived from training images (by design)" and the model is
    #: ranked in its own group, apart from models that sample from noise. An undeclared
    #: model whose samples are edits or blends of training images is flagged as copying.
    derived_from_training: ClassVar[bool] = False

    def __init__(
        self,
        *,
        spec: DataSpec,
        config: GeneratorConfig,
        device: torch.device,
        train_data: Any = None,
    ) -> None:
        self.spec = spec
        self.config = config
        self.device = torch.device(device)
        self.train_data = train_data

    # -- required -------------------------------------------------------
    @abstractmethod
    def train_step(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        """Run one optimisation step on a batch and return scalar logs.

        ``images`` are float in [-1, 1], NCHW, already on ``self.device``.
        Return plain floats (e.g. ``{"loss": 0.12}``); non-finite values stop
        the run as diverged.
        """

    @abstractmethod
    def sample(
        self,
        n: int,
        *,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Generate ``n`` images as float in [0, 1], NCHW, on any device."""

    @abstractmethod
    def modules(self) -> dict[str, nn.Module]:
        """The networks, by name: counted, checkpointed and moved by the framework."""

    # -- optional -------------------------------------------------------
    @classmethod
    def check_spec(cls, spec: DataSpec, config: GeneratorConfig) -> None:
        """Raise ``ValueError`` with a one-line reason if the model cannot train on ``spec``."""

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers by name, checkpointed with the networks."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Anything else to checkpoint (tensors, numbers, strings, lists, dicts)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        """Scalar logs on a batch of validation images (no training), e.g. a test loss.

        Called by the loop in eval mode under ``torch.no_grad()`` once per
        ``train.eval_every_kimg`` on up to ``train.eval_images`` images of the validation
        slice (``data.validation_size`` training-pool images never trained on; never the
        held-out split that scoring uses); the batch means land in the training log like
        any other scalar.
        """
        return {}

    def sample_with_info(
        self,
        n: int,
        *,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> SampleBatch:
        """Like :meth:`sample`, plus per-image records stored beside the samples."""
        return SampleBatch(self.sample(n, labels=labels, generator=generator))

    @classmethod
    def sampler_variants(cls, config: GeneratorConfig) -> list[tuple[str, dict[str, Any]]]:
        """(label, config overrides) pairs that ``genbench bench`` times sampling with,
        e.g. a diffusion model's full chain next to its few-step sampler. The overrides
        must be valid keys of ``config``; the default times the configured sampler only."""
        return [("default", {})]

    def sampling_protocol(self) -> dict[str, Any]:
        """How samples are made: at least ``sampler`` (a name) and ``nfe``
        (network evaluations per image). Stored with every sample set."""
        return {"sampler": "direct", "nfe": 1}

    @classmethod
    def from_pretrained(
        cls,
        source: str,
        *,
        spec: DataSpec,
        config: GeneratorConfig,
        device: torch.device,
        train_data: Any = None,
    ) -> Generator:
        """Optional: the model with weights trained elsewhere, ready to sample.

        ``source`` is what the user passed to ``genbench run --pretrained MODEL=SOURCE``
        (a folder, a file, a hub id: the generator decides). ``config`` is the
        resolved config (its sampling settings apply). Raise ``ValueError`` with a
        one-line reason when ``source`` cannot be used. A genbench run folder of the
        same model needs no hook: the framework restores its checkpoint. A loader may
        set ``pretrained_info`` (a JSON-serialisable dict: format, betas, ...) on the
        model; it is stored with the run. The default says the model has no loader.
        """
        raise NotImplementedError(f"{cls.__name__} has no pretrained loader (from_pretrained)")

    def train(self, mode: bool = True) -> Generator:
        for module in self.modules().values():
            module.train(mode)
        return self

    def eval(self) -> Generator:
        return self.train(False)

    # -- framework-side helpers ------------------------------------------
    def num_parameters(self) -> dict[str, int]:
        return {name: sum(p.numel() for p in m.parameters()) for name, m in self.modules().items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "modules": {k: m.state_dict() for k, m in self.modules().items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers().items()},
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        modules, optimizers = self.modules(), self.optimizers()
        missing = (set(modules) - set(state["modules"])) | (
            set(optimizers) - set(state["optimizers"])
        )
        if missing:
            raise KeyError(f"checkpoint lacks {sorted(missing)}")
        for k, m in modules.items():
            m.load_state_dict(state["modules"][k])
        for k, o in optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        self.load_extra_state(state.get("extra", {}))
