"""Class- or attribute-conditional DDPM with classifier-free guidance (Ho & Salimans 2022).

Everything but the conditioning is :class:`genbench_baselines.ddpm.DDPM`. In training a
fraction ``label_dropout`` of the labels is replaced by the learned null
condition; in sampling the guided noise estimate is
``lerp(eps_uncond, eps_cond, guidance_scale)`` as in seed 001 (scale 1 is the
plain conditional model, 0 the unconditional one), with both passes batched
into one network call. Labels may be class indices, class-mixture weights
(N x classes, each row a mix of class embeddings) or attribute vectors (seed 002).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from genbench.contract import DataSpec, GeneratorConfig
from genbench_baselines.ddpm import DDPM, DDPMConfig


class GuidanceConfig(GeneratorConfig):
    """Classifier-free guidance: shared by cddpm and diffusers-unet."""

    guidance_scale: float = Field(3.0, description="1 = conditional, 0 = unconditional")
    label_dropout: float = Field(0.1, ge=0, le=1, description="share of labels replaced by null")


class CDDPMConfig(DDPMConfig, GuidanceConfig):
    """ddpm's settings (inherited from DDPMConfig, never restated) plus guidance."""


class CDDPM(DDPM):
    """Conditional DDPM with a learned null label and classifier-free guidance."""

    Config = CDDPMConfig
    conditional = True
    sampling_keys = DDPM.sampling_keys | {"guidance_scale"}
    config: CDDPMConfig

    @classmethod
    def check_spec(cls, spec: DataSpec, config: CDDPMConfig) -> None:
        if spec.condition == "none" or (spec.num_classes == 0 and spec.num_attributes == 0):
            raise ValueError(
                "cddpm needs class labels or attributes, but the data has none (data.condition = 'none')"
            )
        super().check_spec(spec, config)

    def _condition_dims(self) -> dict[str, int]:
        if self.spec.condition == "attributes":
            return {"num_attributes": self.spec.num_attributes}
        return {"num_classes": self.spec.num_classes}

    def _train_condition(
        self, labels: torch.Tensor | None, n: int
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if labels is None:
            return None, None
        drop = torch.rand(n, device=labels.device) < self.config.label_dropout
        return labels, drop

    def passes_per_step(self) -> int:
        return 2

    def predict_eps(
        self, net: nn.Module, x: torch.Tensor, t: int | float, labels: torch.Tensor | None
    ) -> torch.Tensor:
        if labels is None:  # nothing to guide towards: the unconditional model
            return self._forward(net, x, t, None)
        return self.guided_eps(net, x, t, labels, scale=self.config.guidance_scale)

    def guided_eps(
        self, net: nn.Module, x: torch.Tensor, t: int | float, labels: torch.Tensor, *, scale: float
    ) -> torch.Tensor:
        """lerp(eps(x, null), eps(x, labels), scale) from one batched call of 2N images."""
        n = len(x)
        drop = torch.arange(2 * n, device=x.device) >= n  # first half conditional, second null
        eps = self._forward(net, torch.cat([x, x]), t, torch.cat([labels, labels]), drop)
        cond, uncond = eps[:n], eps[n:]
        return torch.lerp(uncond, cond, scale)

    def sampling_protocol(self) -> dict[str, Any]:
        return {**super().sampling_protocol(), "guidance_scale": self.config.guidance_scale}
