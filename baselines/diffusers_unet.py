"""diffusers-unet: a diffusers ``UNet2DModel`` trained and sampled under genbench's protocol.

Needs the optional extra ``genbench[diffusers]``. Everything but the network is
:class:`genbench_baselines.cddpm.CDDPM`'s: the noise schedule, the DDPM objective, EMA, LR
schedule, label dropout to a null class, classifier-free guidance
(``lerp(eps_null, eps_cond, guidance_scale)``, both passes batched) and every
sampler, genbench's ``ddpm``/``ddim`` or any diffusers scheduler (``dpmpp``,
``unipc``, ``euler``, ``heun``, ...). The network is diffusers' own: class labels
enter through ``num_class_embeds`` (the data's classes plus one null class, the
last index; ``class_embed_type`` None, diffusers' embedding table), so a model
trained here is a standard diffusers checkpoint, and a ``save_pretrained`` folder
(or a Hub id, online) can be scored without training
(``genbench run --pretrained diffusers-unet=PATH``). Unconditional data gives an
unconditional UNet (no class embedding, one pass per step).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from genbench.contract import DataSpec
from genbench.diffusion import NoiseSchedule, check_resolution
from genbench.diffusion.model import GuidanceConfig
from genbench.diffusion.schedulers import require_diffusers
from genbench.utils.errors import one_line
from genbench_baselines.cddpm import CDDPM
from genbench_baselines.ddpm import DiffusionConfig

require_diffusers("generator 'diffusers-unet'")  # listed without it; using it names the extra


class DiffusersUNetConfig(DiffusionConfig, GuidanceConfig):
    # network: a diffusers UNet2DModel (one down/up block per entry of block_out_channels)
    block_out_channels: list[int] = Field(
        default_factory=lambda: [32, 64, 64], min_length=1, description="width per level"
    )
    layers_per_block: int = Field(1, ge=1, description="resnet layers per down block")
    attn_resolutions: list[int] = Field(
        default_factory=lambda: [8], description="sides whose blocks get self-attention"
    )
    mid_attention: bool = Field(True, description="self-attention in the middle block")
    attention_head_dim: int = Field(8, ge=1, description="channels per attention head")
    norm_num_groups: int = Field(8, ge=1, description="GroupNorm groups (divides every width)")
    act_fn: Literal["silu", "gelu", "mish"] = Field("silu", description="activation")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout in the resnet blocks")
    resnet_time_scale_shift: Literal["default", "scale_shift"] = Field(
        "default", description="time embedding added (default) or as scale and shift"
    )
    downsample_type: Literal["conv", "resnet"] = Field(
        "conv", description="downsampling by strided conv or by a resnet block"
    )
    upsample_type: Literal["conv", "resnet"] = Field(
        "conv", description="upsampling by interpolation + conv or by a resnet block"
    )
    grad_checkpoint: bool = Field(False, description="gradient checkpointing (less memory)")


class DiffusersUNet(CDDPM):
    """A diffusers UNet2DModel as a genbench generator, conditional when the data has classes."""

    Config = DiffusersUNetConfig
    config: DiffusersUNetConfig  # type: ignore[assignment]

    # -- network ---------------------------------------------------------------
    @classmethod
    def check_spec(cls, spec: DataSpec, config: DiffusersUNetConfig) -> None:  # type: ignore[override]
        if spec.condition == "attributes":
            raise ValueError(
                "diffusers-unet conditions on class labels; for attribute vectors use cddpm"
            )
        check_resolution(spec.resolution, len(config.block_out_channels))
        for width in config.block_out_channels:
            if width % config.norm_num_groups:
                raise ValueError(f"width {width} is not divisible by norm_num_groups")

    def build_network(self) -> nn.Module:
        from diffusers import UNet2DModel

        c, s = self.config, self.spec
        attn = [
            s.resolution // 2**i in c.attn_resolutions for i in range(len(c.block_out_channels))
        ]
        net = UNet2DModel(
            sample_size=s.resolution,
            in_channels=s.channels,
            out_channels=s.channels,
            block_out_channels=tuple(c.block_out_channels),
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
            layers_per_block=c.layers_per_block,
            add_attention=c.mid_attention,
            attention_head_dim=c.attention_head_dim,
            norm_num_groups=c.norm_num_groups,
            act_fn=c.act_fn,
            dropout=c.dropout,
            resnet_time_scale_shift=c.resnet_time_scale_shift,
            downsample_type=c.downsample_type,
            upsample_type=c.upsample_type,
            num_train_timesteps=c.timesteps,
            # One embedding per class plus the null class (last) for classifier-free guidance.
            num_class_embeds=s.num_classes + 1 if s.condition == "classes" else None,
        )
        if c.grad_checkpoint:
            net.enable_gradient_checkpointing()
        return net

    def call_network(
        self,
        net: nn.Module,
        x: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor | None,
        drop: torch.Tensor | None,
    ) -> torch.Tensor:
        table = getattr(net, "class_embedding", None)
        if table is None:
            return net(x, t).sample
        n, null = len(x), self._null_class()
        if labels is None:  # the null condition
            labels, drop = torch.full((n,), null, device=x.device), None
        if labels.is_floating_point():
            return self._call_mixture(net, x, t, labels, drop)
        if drop is not None:
            labels = torch.where(drop, torch.full_like(labels, null), labels)
        return net(x, t, class_labels=labels).sample

    def _call_mixture(
        self,
        net: nn.Module,
        x: torch.Tensor,
        t: torch.Tensor,
        weights: torch.Tensor,
        drop: torch.Tensor | None,
    ) -> torch.Tensor:
        # Class-mixture weights (n x classes) mix the embedding rows; the UNet's own lookup
        # is replaced for this one call by the weighted sum.
        w = torch.zeros(len(x), net.class_embedding.num_embeddings, device=x.device)
        w[:, : weights.shape[1]] = weights.to(w)
        if drop is not None:
            w[drop] = 0.0
            w[drop, self._null_class()] = 1.0

        def mix(module: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
            return (w @ module.weight).to(out.dtype)

        handle = net.class_embedding.register_forward_hook(mix)
        try:
            return net(
                x, t, class_labels=torch.zeros(len(x), dtype=torch.long, device=x.device)
            ).sample
        finally:
            handle.remove()

    def _null_class(self) -> int:
        return self.net.class_embedding.num_embeddings - 1

    def _has_null(self) -> bool:
        # A pretrained UNet may have exactly one embedding per class: then no guidance.
        table = getattr(self.net, "class_embedding", None)
        return table is not None and table.num_embeddings == self.spec.num_classes + 1

    # -- conditioning ----------------------------------------------------------
    def passes_per_step(self) -> int:
        return 2 if self._has_null() else 1

    def predict(
        self, net: nn.Module, x: torch.Tensor, t: int | float, labels: torch.Tensor | None
    ) -> torch.Tensor:
        if labels is not None and not self._has_null():  # conditional, nothing to guide with
            return self._forward(net, x, t, labels)
        return super().predict(net, x, t, labels)

    def _train_condition(
        self, labels: torch.Tensor | None, n: int
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if getattr(self.net, "class_embedding", None) is None:
            return None, None
        return super()._train_condition(labels, n)

    def sampling_protocol(self) -> dict[str, Any]:
        out = super().sampling_protocol()
        if not self._has_null():
            out.pop("guidance_scale", None)
        return out

    # -- pretrained ------------------------------------------------------------
    pretrained_info: dict[str, Any] | None = None

    @classmethod
    def from_pretrained(
        cls,
        source: str,
        *,
        spec: DataSpec,
        config: DiffusersUNetConfig,  # type: ignore[override]
        device: torch.device,
        train_data: Any = None,
    ) -> DiffusersUNet:
        """A diffusers ``UNet2DModel`` from a ``save_pretrained`` folder, a pipeline folder
        (its ``unet/``, and the betas of its ``scheduler/``), or a Hub id (online only)."""
        from diffusers import UNet2DModel

        folder = Path(source).expanduser()
        local = folder.exists() or source.startswith((".", "/", "~")) or source.count("/") != 1
        if local and not folder.is_dir():
            raise ValueError("no such folder (a diffusers save_pretrained folder or a Hub id)")
        if not local:
            _check_hub_reachable(source)
        sub = "unet" if (folder / "unet" / "config.json").is_file() else None
        try:
            net = UNet2DModel.from_pretrained(
                str(folder) if local else source, subfolder=sub, low_cpu_mem_usage=False
            )
        except Exception as exc:
            raise ValueError(f"not a diffusers UNet2DModel: {one_line(exc)}") from None
        _check_fits(net, spec)
        schedule, betas_from = _pretrained_schedule(folder, config, net)
        model = cls(
            spec=spec,
            config=config,
            device=device,
            train_data=train_data,
            network=net,
            schedule=schedule,
        )
        model.pretrained_info = {
            "source": source,
            "format": "diffusers",
            "betas": betas_from,
            "class_embeds": getattr(net.config, "num_class_embeds", None),
        }
        return model


def _check_hub_reachable(repo_id: str) -> None:
    # Offline, huggingface_hub retries for ~30 s before failing; one DNS lookup says it now.
    import os
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or ""
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get(
        "GENBENCH_OFFLINE"
    )
    if not offline:
        try:
            socket.getaddrinfo(host, 443)
        except OSError:
            offline = True
    if offline:
        raise ValueError(
            f"Hub id {repo_id!r} needs the Hugging Face Hub, which is unreachable here (offline); "
            "save the model with save_pretrained where you are online and pass its folder"
        )


def _check_fits(net: nn.Module, spec: DataSpec) -> None:
    cfg = net.config
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else None
    if cfg.in_channels != spec.channels or cfg.out_channels != spec.channels:
        raise ValueError(
            f"the pretrained UNet has {cfg.in_channels} input channel(s); the data has {spec.channels} (data.channels)"
        )
    if size is not None and size != spec.resolution:
        raise ValueError(
            f"the pretrained UNet was built for {size}x{size}; set data.resolution = {size}"
        )
    embeds = cfg.num_class_embeds
    if cfg.class_embed_type is not None:
        raise ValueError(f"class_embed_type {cfg.class_embed_type!r} is not supported (only None)")
    if embeds is not None and embeds not in (spec.num_classes, spec.num_classes + 1):
        raise ValueError(
            f"the pretrained UNet has {embeds} class embeddings; the data has {spec.num_classes} classes"
        )


def _pretrained_schedule(
    folder: Path, config: DiffusersUNetConfig, net: nn.Module
) -> tuple[NoiseSchedule, str]:
    """The betas a pretrained UNet was trained with: its pipeline's scheduler config when
    there is one, else the generator config's schedule."""
    path = folder / "scheduler" / "scheduler_config.json"
    if not path.is_file():
        return (
            NoiseSchedule(
                kind=config.schedule,
                timesteps=config.timesteps,
                beta_start=config.beta_start,
                beta_end=config.beta_end,
            ),
            "generator config",
        )
    sc = json.loads(path.read_text(encoding="utf-8"))
    if sc.get("prediction_type", "epsilon") != "epsilon":
        raise ValueError(
            f"{path}: prediction_type {sc['prediction_type']!r}; only epsilon is supported"
        )
    t = int(sc.get("num_train_timesteps", 1000))
    start, end = float(sc.get("beta_start", 1e-4)), float(sc.get("beta_end", 0.02))
    kind = sc.get("beta_schedule", "linear")
    if sc.get("trained_betas") is not None:
        betas = torch.tensor(sc["trained_betas"], dtype=torch.float64)
    elif kind == "linear":
        return NoiseSchedule(kind="linear", timesteps=t, beta_start=start, beta_end=end), str(path)
    elif kind == "squaredcos_cap_v2":
        return NoiseSchedule(kind="cosine", timesteps=t), str(path)
    elif kind == "scaled_linear":
        betas = torch.linspace(start**0.5, end**0.5, t, dtype=torch.float64) ** 2
    else:
        raise ValueError(f"{path}: beta_schedule {kind!r} is not supported")
    return NoiseSchedule(betas=betas), str(path)
