"""The noise-predicting UNet shared by the diffusion baselines.

Pre-activation residual blocks (GroupNorm, SiLU/GELU, 3x3 conv, twice) get the
timestep embedding, plus an optional condition embedding, added in every block;
multi-head self-attention runs at the resolutions listed in ``attn_resolutions``
and in the middle; the up path concatenates the down path's activations (skip
connections). The layout follows DDPM's network (Ho et al. 2020) with the
class/attribute embeddings and the learned null condition of the seed reports
(001: classes, 002: a linear map of CelebA's attribute vector).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

Activation = Literal["silu", "gelu"]


def timestep_embedding(t: torch.Tensor, dim: int, *, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding (N, dim) of integer time indices (N,), as in Transformers and DDPM."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    # The largest group count that divides the width, so any width works.
    return nn.GroupNorm(math.gcd(channels, groups), channels)


def _act(kind: Activation) -> nn.Module:
    if kind == "silu":
        return nn.SiLU()
    if kind == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation {kind!r} (use 'silu' or 'gelu')")


def _zero(m: nn.Module) -> nn.Module:
    # Zero-initialised last layers make every residual branch start as the identity.
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


class ResBlock(nn.Module):
    """Residual double 3x3 conv with GroupNorm and the embedding added in between."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        emb_dim: int,
        groups: int,
        activation: Activation,
        dropout: float,
    ) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(
            _norm(in_ch, groups), _act(activation), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        )
        self.emb = nn.Sequential(_act(activation), nn.Linear(emb_dim, out_ch))
        self.out_layers = nn.Sequential(
            _norm(out_ch, groups),
            _act(activation),
            nn.Dropout(dropout),
            _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1)),
        )
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x) + self.emb(emb)[:, :, None, None]
        return self.skip(x) + self.out_layers(h)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, residual."""

    def __init__(self, channels: int, *, heads: int, groups: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels cannot be split into {heads} attention heads")
        self.heads = heads
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each b, heads, hw, c/heads
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Stage(nn.Module):
    """A residual block, optionally followed by self-attention."""

    def __init__(self, res: ResBlock, attn: SelfAttention | None) -> None:
        super().__init__()
        self.res, self.attn = res, attn

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.res(x, emb)
        return self.attn(x) if self.attn is not None else x


class ConditionEmbedding(nn.Module):
    """Embeds class labels, class-mixture weights or attribute vectors; row ``drop`` gets the learned null.

    Classes: an embedding table with one extra row, the null class used for
    classifier-free guidance. Integer labels pick rows; a float (N x classes)
    matrix of mixture weights gives the weighted mix of the class rows.
    Attributes: a linear map of the (multi-hot) vector, plus a learned null vector.
    """

    def __init__(self, *, dim: int, num_classes: int = 0, num_attributes: int = 0) -> None:
        super().__init__()
        if (num_classes > 0) == (num_attributes > 0):
            raise ValueError(
                "a condition embedding needs exactly one of num_classes, num_attributes"
            )
        self.num_classes, self.num_attributes = num_classes, num_attributes
        if num_classes:
            self.table = nn.Embedding(num_classes + 1, dim)  # the last row is the null class
        else:
            self.proj = nn.Linear(num_attributes, dim)
            self.null = nn.Parameter(torch.randn(dim) * 0.02)

    def null_embedding(self) -> torch.Tensor:
        return self.table.weight[self.num_classes] if self.num_classes else self.null

    def forward(
        self, labels: torch.Tensor | None, drop: torch.Tensor | None = None, *, n: int
    ) -> torch.Tensor:
        null = self.null_embedding()
        if labels is None:
            return null.expand(n, -1)
        if self.num_classes:
            if labels.is_floating_point():
                if labels.shape != (n, self.num_classes):
                    raise ValueError(
                        f"class-mixture weights must be (N, {self.num_classes}), got {tuple(labels.shape)}"
                    )
                e = labels.to(self.table.weight.dtype) @ self.table.weight[: self.num_classes]
            else:
                e = self.table(labels)
        else:
            if labels.shape != (n, self.num_attributes):
                raise ValueError(
                    f"attribute vectors must be (N, {self.num_attributes}), got {tuple(labels.shape)}"
                )
            e = self.proj(labels.float())
        if drop is not None:
            e = torch.where(drop[:, None], null.to(e.dtype), e)
        return e


class UNet(nn.Module):
    """Noise predictor eps(x_t, t[, condition]).

    Args:
        channels: image channels in and out.
        base_channels: width of the first level; level i has ``base * channel_mults[i]``.
        channel_mults: one entry per resolution level; each level after the first halves the side.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attn_resolutions: feature-map sides (pixels) with self-attention; the middle always has it.
        num_heads: attention heads.
        dropout: dropout inside residual blocks.
        activation: ``"silu"`` or ``"gelu"``.
        norm_groups: GroupNorm groups (reduced to a divisor of each width).
        num_classes / num_attributes: add a condition embedding (at most one of them).
        grad_checkpoint: recompute block activations in backward to save memory.
    """

    # 74 lines: the layers are built in the order the forward pass runs them.
    # params: the network's hyperparameters, each a field of the UNet models' configs
    def __init__(
        self,
        *,
        channels: int,
        resolution: int,
        base_channels: int = 64,
        channel_mults: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16,),
        num_heads: int = 4,
        dropout: float = 0.0,
        activation: Activation = "silu",
        norm_groups: int = 32,
        num_classes: int = 0,
        num_attributes: int = 0,
        grad_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        check_resolution(resolution, len(channel_mults))
        self.base_channels, self.grad_checkpoint = base_channels, grad_checkpoint
        emb_dim = 4 * base_channels
        self.time_mlp = nn.Sequential(
            nn.Linear(base_channels, emb_dim), _act(activation), nn.Linear(emb_dim, emb_dim)
        )
        self.cond = (
            ConditionEmbedding(dim=emb_dim, num_classes=num_classes, num_attributes=num_attributes)
            if num_classes or num_attributes
            else None
        )

        def res(i: int, o: int) -> ResBlock:
            return ResBlock(
                i, o, emb_dim=emb_dim, groups=norm_groups, activation=activation, dropout=dropout
            )

        def attn(ch: int, side: int) -> SelfAttention | None:
            return (
                SelfAttention(ch, heads=num_heads, groups=norm_groups)
                if side in attn_resolutions
                else None
            )

        self.stem = nn.Conv2d(channels, base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips, ch, side = [base_channels], base_channels, resolution
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                self.down.append(
                    Stage(res(ch, base_channels * mult), attn(base_channels * mult, side))
                )
                ch = base_channels * mult
                skips.append(ch)
            if level < len(channel_mults) - 1:
                self.down.append(Downsample(ch))
                skips.append(ch)
                side //= 2
        self.mid = nn.ModuleList(
            [res(ch, ch), SelfAttention(ch, heads=num_heads, groups=norm_groups), res(ch, ch)]
        )
        self.up = nn.ModuleList()
        self._concat: list[bool] = []  # which up modules take a skip connection
        for level, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                out = base_channels * mult
                self.up.append(Stage(res(ch + skips.pop(), out), attn(out, side)))
                self._concat.append(True)
                ch = out
            if level > 0:
                self.up.append(Upsample(ch))
                self._concat.append(False)
                side *= 2
        self.head = nn.Sequential(
            _norm(ch, norm_groups), _act(activation), _zero(nn.Conv2d(ch, channels, 3, padding=1))
        )

    def _run(self, block: nn.Module, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(block, h, emb, use_reentrant=False)
        return block(h, emb)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor | None = None,
        drop: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predicted noise for ``x`` at time indices ``t`` (N,).

        ``labels``: class indices, mixture weights or attribute vectors (None:
        the null condition); ``drop``: bool (N,), rows that get the null condition.
        """
        emb = self.time_mlp(timestep_embedding(t, self.base_channels))
        if self.cond is not None:
            emb = emb + self.cond(labels, drop, n=len(x))
        elif labels is not None:
            raise ValueError("this UNet has no condition embedding, but labels were given")
        h = self.stem(x)
        hs = [h]
        for block in self.down:
            h = self._run(block, h, emb)
            hs.append(h)
        for block in self.mid:
            h = self._run(block, h, emb)
        for block, concat in zip(self.up, self._concat, strict=True):
            if concat:
                h = torch.cat([h, hs.pop()], dim=1)
            h = self._run(block, h, emb)
        return self.head(h)


def check_resolution(resolution: int, levels: int) -> None:
    """Raise ValueError unless the side halves cleanly ``levels - 1`` times."""
    if levels < 1:
        raise ValueError("channel_mults needs at least one level")
    if resolution % 2 ** (levels - 1):
        raise ValueError(
            f"a {levels}-level UNet needs a side divisible by {2 ** (levels - 1)}; got {resolution}"
        )
