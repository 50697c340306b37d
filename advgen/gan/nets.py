"""Small generator and discriminator networks, sized so a whole GAN trains in about a minute on 2 CPU cores.

None of them uses batch normalisation or dropout, so train and eval mode compute the same function:
a generator sampled after training behaves exactly as it did during training, and a resumed run
does not depend on running statistics.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError


def check_shape(input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """The GAN nets down- and up-sample twice by 2, so height and width must be multiples of 4."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1 or shape[1] % 4 or shape[2] % 4:
        raise InputError(f"GAN nets need images shaped (C, H, W) with H and W multiples of 4, got {shape}")
    return shape  # type: ignore[return-value]


def _norm(channels: int) -> nn.Module:
    """Instance norm: per-image statistics, no running buffers, so train and eval mode agree."""
    return nn.InstanceNorm2d(channels, affine=True)


class PerturbationGenerator(nn.Module):
    """AdvGAN's G: an encoder-decoder that maps an image to a perturbation in [-eps, eps] (eps * tanh).

    Two stride-2 convolutions, residual blocks at a quarter of the resolution, two transposed
    convolutions back; the input image is fed again before the last layer so fine pixel detail is kept.
    """

    def __init__(self, input_shape: tuple[int, int, int], eps: float, width: int = 16, blocks: int = 1) -> None:
        super().__init__()
        c = check_shape(input_shape)[0]
        self.eps = float(eps)
        w2 = 2 * width
        self.encode = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1), _norm(width), nn.ReLU(),
            nn.Conv2d(width, w2, 4, stride=2, padding=1), _norm(w2), nn.ReLU(),
            nn.Conv2d(w2, w2, 4, stride=2, padding=1), _norm(w2), nn.ReLU(),
        )
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(w2, w2, 3, padding=1), _norm(w2), nn.ReLU(),
                          nn.Conv2d(w2, w2, 3, padding=1), _norm(w2)) for _ in range(blocks))
        self.decode = nn.Sequential(
            nn.ConvTranspose2d(w2, w2, 4, stride=2, padding=1), _norm(w2), nn.ReLU(),
            nn.ConvTranspose2d(w2, width, 4, stride=2, padding=1), _norm(width), nn.ReLU(),
        )
        self.out = nn.Conv2d(width + c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encode(x)
        for block in self.blocks:
            h = h + block(h)
        h = self.decode(h)
        return self.eps * torch.tanh(self.out(torch.cat([h, x], dim=1)))


class ImageDiscriminator(nn.Module):
    """A small conv net scoring how real an image looks (one logit per image); optionally class-aware.

    With ``num_classes`` it is a projection discriminator (Miyato & Koyama 2018): the score adds the inner
    product of the image features with a learned class embedding, which ties samples to their labels.
    """

    def __init__(self, input_shape: tuple[int, int, int], width: int = 16, num_classes: int = 0) -> None:
        super().__init__()
        c, h, w = check_shape(input_shape)
        self.features = nn.Sequential(
            nn.Conv2d(c, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(2 * width * (h // 4) * (w // 4), 4 * width), nn.LeakyReLU(0.2),
        )
        self.score = nn.Linear(4 * width, 1)
        self.embed = nn.Embedding(num_classes, 4 * width) if num_classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        f = self.features(x)
        out = self.score(f).squeeze(1)
        if self.embed is not None:
            if labels is None:
                raise ValueError("a class-conditional discriminator needs labels")
            out = out + (self.embed(labels) * f).sum(1)
        return out


class ConditionalGenerator(nn.Module):
    """A class-conditional DCGAN generator: noise and a label embedding -> an image in [0, 1] (sigmoid)."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, z_dim: int = 64,
                 width: int = 32) -> None:
        super().__init__()
        c, h, w = check_shape(input_shape)
        self.z_dim, self.num_classes, self.width = z_dim, num_classes, width
        self.grid = (h // 4, w // 4)
        self.embed = nn.Embedding(num_classes, z_dim)
        self.project = nn.Sequential(nn.Linear(2 * z_dim, 4 * width * self.grid[0] * self.grid[1]), nn.ReLU())
        self.body = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, c, 3, padding=1),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.project(torch.cat([z, self.embed(labels)], dim=1))
        h = h.view(len(z), 4 * self.width, *self.grid)
        return torch.sigmoid(self.body(h))
