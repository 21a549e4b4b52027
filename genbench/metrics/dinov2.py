"""The second feature space: DINOv2 ViT-L/14 (torch-fidelity's ``dinov2-vit-l-14``).

Stein et al. (2023) found Fréchet distances on DINOv2 features closer to human
judgement than on Inception's. torch-fidelity loads the network through torch hub
(the facebookresearch/dinov2 repository and its weights file), so it is available
where the hub cache holds both or where they can be downloaded; offline without them
the DINOv2 scores are unavailable, with this reason, as the Inception Score is without
the classifier layer.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from genbench.metrics.cache import sha256_file
from genbench.metrics.inception import ENV_OFFLINE, ExtractorChoice
from genbench.utils.errors import GenbenchError

NAME = "dinov2-vit-l-14"
HUB_REPO = "facebookresearch/dinov2"
HUB_FOLDER = "facebookresearch_dinov2_main"  # torch hub's folder for the repo's main branch
WEIGHTS_FILE = "dinov2_vitl14_pretrain.pth"
_FAILED: dict[str, str] = {}  # one failed download per process, not one per run


def hub_files() -> tuple[Path, Path]:
    """(the hub repository folder, the weights file) where torch hub keeps them ($TORCH_HOME)."""
    hub = Path(torch.hub.get_dir())
    return hub / HUB_FOLDER, hub / "checkpoints" / WEIGHTS_FILE


def _download(timeout: float = 20.0) -> None:
    """Build the extractor once, which makes torch hub fetch the repository and weights."""
    if NAME in _FAILED:
        raise OSError(_FAILED[NAME])
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        FEATURE_EXTRACTORS_REGISTRY[NAME](NAME, ["dinov2"])
    except Exception as exc:  # any network, hub or hash failure means "cannot get it here"
        _FAILED[NAME] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise OSError(_FAILED[NAME]) from None
    finally:
        socket.setdefaulttimeout(old)


def choose(*, download: bool = True) -> ExtractorChoice:
    """The DINOv2 ViT-L/14 extractor, or a GenbenchError saying why it is unavailable."""
    repo, weights = hub_files()
    how = (
        f"put the {HUB_REPO} hub repository at {repo} and {WEIGHTS_FILE} at {weights} "
        "(or point $TORCH_HOME at a cache that has them)"
    )
    if not (repo.is_dir() and weights.is_file()):
        if not download or os.environ.get(ENV_OFFLINE):
            raise GenbenchError(
                "DINOv2 ViT-L/14 is unavailable: its weights are not in the torch hub cache and "
                f"downloads are off (metrics.download_weights = false or ${ENV_OFFLINE}); {how}"
            )
        try:
            _download()
        except OSError as exc:
            raise GenbenchError(
                f"DINOv2 ViT-L/14 is unavailable: download failed ({exc}); {how}"
            ) from None
    return ExtractorChoice(
        name=NAME,
        weights_path=None,  # torch-fidelity reads it from the hub cache
        weights_sha256=sha256_file(weights),
        has_classifier=False,
        source=f"torch hub {HUB_REPO} ({weights})",
        reason="DINOv2 ViT-L/14 weights in the torch hub cache",
    )
