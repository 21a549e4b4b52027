"""Class- or attribute-conditional DDPM with classifier-free guidance (Ho & Salimans 2022).

Everything is :class:`genbench_baselines.ddpm.DDPM`, with conditioning turned on (the
label dropout and guidance every UNet generator shares, in
:class:`genbench.diffusion.model.UNetGenerator`). In training a
fraction ``label_dropout`` of the labels is replaced by the learned null
condition; in sampling the guided noise estimate is
``lerp(eps_uncond, eps_cond, guidance_scale)`` as in seed 001 (scale 1 is the
plain conditional model, 0 the unconditional one), with both passes batched
into one network call. Labels may be class indices, class-mixture weights
(N x classes, each row a mix of class embeddings) or attribute vectors (seed 002).
"""

from __future__ import annotations

from typing import Any

from genbench.contract import DataSpec
from genbench.diffusion.model import GuidanceConfig, require_condition
from genbench_baselines.ddpm import DDPM, DDPMConfig


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
        require_condition(spec, what="cddpm")
        super().check_spec(spec, config)

    def sampling_protocol(self) -> dict[str, Any]:
        return {**super().sampling_protocol(), "guidance_scale": self.config.guidance_scale}
