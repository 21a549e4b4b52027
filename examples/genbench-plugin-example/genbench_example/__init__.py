"""A complete genbench plugin: every pixel is an independent Gaussian whose mean
and log-std (per class, if the data has classes) are fit by gradient descent."""

import torch
from pydantic import Field
from torch import nn

from genbench import DataSpec, Generator, GeneratorConfig


class PixelGaussianConfig(GeneratorConfig):
    lr: float = Field(0.05, gt=0)


class PixelGaussian(Generator):
    Config = PixelGaussianConfig
    conditional = True

    def __init__(
        self, *, spec: DataSpec, config: PixelGaussianConfig, device: torch.device, train_data=None
    ):
        super().__init__(spec=spec, config=config, device=device, train_data=train_data)
        k = max(1, spec.num_classes)
        shape = (k, spec.channels, spec.resolution, spec.resolution)
        self.net = nn.ParameterDict(
            {"mean": nn.Parameter(torch.zeros(shape)), "log_std": nn.Parameter(torch.zeros(shape))}
        )
        self.net.to(self.device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=config.lr)

    def modules(self):
        return {"net": self.net}

    def optimizers(self):
        return {"opt": self.opt}

    def _rows(self, labels, n):
        # Class indices pick a row; mixture weights blend rows; otherwise row 0.
        mean, log_std = self.net["mean"], self.net["log_std"]
        if labels is None or self.spec.num_classes == 0:
            return mean[:1].expand(n, -1, -1, -1), log_std[:1].expand(n, -1, -1, -1)
        if labels.dtype == torch.int64:
            return mean[labels], log_std[labels]
        w = labels.float().view(n, -1, 1, 1, 1)
        return (w * mean[None]).sum(1), (w * log_std[None]).sum(1)

    def train_step(self, images, labels):
        mean, log_std = self._rows(labels, len(images))
        nll = (log_std + 0.5 * ((images - mean) / log_std.exp()) ** 2).mean()
        self.opt.zero_grad()
        nll.backward()
        self.opt.step()
        return {"nll": nll.item()}

    @torch.no_grad()
    def sample(self, n, *, labels=None, generator=None):
        mean, log_std = self._rows(labels, n)
        noise = torch.randn(mean.shape, generator=generator).to(self.device)
        return ((mean + log_std.exp() * noise).clamp(-1, 1) + 1) / 2
