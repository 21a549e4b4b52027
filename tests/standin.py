"""A small stand-in feature extractor for tests of the scoring plumbing.

Real Inception runs at a few images per second on a small CPU; tests of the
plumbing use this seeded, Kaiming-initialised CNN instead (torch's default init
would collapse the features towards zero and hide bugs). Its numbers mean
nothing about image quality; they only have to be a deterministic function of
the pixels that separates different images.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from genbench.metrics.inception import ExtractorChoice

STANDIN_NAME = "genbench-standin"
STANDIN_B_NAME = "genbench-standin-b"  # another seed: a second, different feature space


class StandInExtractor(FeatureExtractorBase):
    """uint8 B x 3 x H x W -> 128-d ``feat`` (2x2-pooled conv features) and 10-d ``logits``."""

    SEED = 0

    def __init__(self, name: str, features_list: list[str], **kwargs: Any) -> None:
        super().__init__(name, features_list)
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.head = nn.Linear(32 * 2 * 2, 10)
        g = torch.Generator().manual_seed(self.SEED)
        for m in (self.conv1, self.conv2, self.head):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=g)
            nn.init.zeros_(m.bias)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected uint8 B x 3 x H x W, got {x.dtype} {tuple(x.shape)}")
        h = x.float() / 127.5 - 1.0
        h = F.interpolate(h, size=(32, 32), mode="bilinear", align_corners=False)
        h = F.relu(self.conv2(F.relu(self.conv1(h))))
        feat = F.adaptive_avg_pool2d(h, 2).flatten(1)
        out = {"feat": feat, "logits": self.head(feat)}
        return tuple(out[k] for k in self.features_list)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return "feat", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return "logits" if metric == "isc" else "feat"

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)


class StandInExtractorB(StandInExtractor):
    SEED = 1


def register_standin() -> None:
    if STANDIN_NAME not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(STANDIN_NAME, StandInExtractor)
    if STANDIN_B_NAME not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(STANDIN_B_NAME, StandInExtractorB)


def standin_choice(name: str = STANDIN_NAME) -> ExtractorChoice:
    """An :class:`ExtractorChoice` selecting a stand-in (registers them first)."""
    register_standin()
    seed = {STANDIN_NAME: 0, STANDIN_B_NAME: 1}[name]
    return ExtractorChoice(
        name=name,
        weights_path=None,
        weights_sha256=f"standin-kaiming-seed{seed}-v1",
        has_classifier=True,
        source="genbench test stand-in (seeded Kaiming CNN, not Inception)",
        reason="chosen by a test",
    )
