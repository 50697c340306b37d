"""A class-conditional DCGAN that makes labelled images for augmentation, and two ways to judge them.

G maps noise and a label to an image; D is a projection discriminator (class-aware), trained with the
non-saturating GAN loss and one-sided label smoothing (real target 0.9) so it cannot win outright.
Sample quality is measured as in Shmelkov et al. 2018 ("How good is my GAN?"):

* GAN-test: the share of generated samples a trained target classifier assigns to the conditioning label
  (are the samples recognisable as their class?);
* GAN-train: the real-test accuracy of a classifier trained on generated samples only (do the samples
  cover what a classifier needs to learn?).

Example::

    >>> cgan = train_cgan(train_set, CGANConfig(epochs=10))
    >>> extra = sample(cgan, 2000, seed=1)          # a Dataset, 200 images per class
    >>> gan_test(ckpt.model, cgan), gan_train(cgan, test_set)
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..data import Dataset, as_labels
from ..errors import InputError, check_fields
from ..models import output_classes
from ..runtime import cpu_threads, own_random_state, resolve_device, seed_everything
from ..train import TrainConfig, train_classifier
from .nets import ConditionalGenerator, ImageDiscriminator
from ..resume import fingerprint
from .state import settings as _settings, run_epochs

KIND = "cgan"


@dataclass
class CGANConfig:
    """Hyper-parameters; on the embedded MNIST sample the defaults take ~60 s of one CPU core (GAN-test ~0.89)."""

    epochs: int = 30
    batch_size: int = 64
    z_dim: int = 32
    g_width: int = 8
    d_width: int = 16
    lr_g: float = 1e-3
    lr_d: float = 1e-3
    real_label: float = 0.9
    seed: int = 0

    def validate(self) -> "CGANConfig":
        """Self, or an :class:`~advgen.errors.InputError` naming the first setting out of range."""
        check_fields(self, {"epochs": 1, "batch_size": 1, "z_dim": 1, "g_width": 1, "d_width": 1, "seed": 0},
                     positive=("lr_g", "lr_d"))
        if not 0 < self.real_label <= 1:
            raise InputError(f"real_label must be in (0, 1], got {self.real_label}")
        return self


@dataclass
class CGAN:
    """A trained conditional generator, what it makes (shape, classes), its configuration and metrics."""

    generator: ConditionalGenerator
    config: CGANConfig
    input_shape: tuple[int, int, int]
    num_classes: int
    metrics: dict = field(default_factory=dict)

    def to(self, device: str | torch.device) -> "CGAN":
        """Move the generator to ``device`` (``auto``, ``cpu``, ``cuda``); returns self, as ``nn.Module.to`` does."""
        self.generator.to(resolve_device(device))
        return self


def train_cgan(data: Dataset, config: CGANConfig | None = None, device: str | torch.device = "auto",
               state_dir: str | Path | None = None, threads: int | None = 1) -> CGAN:
    """Train a class-conditional GAN on ``data``'s images and labels.

    With ``state_dir`` the full training state is saved atomically after every epoch and a later call with
    the same directory and settings resumes from it; on CPU the result equals an uninterrupted run.
    ``threads`` sets torch's CPU threads while training (None leaves them alone); one is fastest for these
    small nets on shared cores.
    The caller's random streams are as they were afterwards.
    """
    with cpu_threads(threads), own_random_state(resolve_device(device)):
        return _train(data, config, device, state_dir)


def _train(data: Dataset, config: CGANConfig | None, device: str | torch.device,
           state_dir: str | Path | None) -> CGAN:
    config = (config or CGANConfig()).validate()
    if data.images.dtype != torch.float32:
        raise InputError(f"the conditional GAN trains on float32 images, got "
                         f"{str(data.images.dtype).removeprefix('torch.')}")
    dev = resolve_device(device)
    shape, k = data.input_shape, data.num_classes
    gen = seed_everything(config.seed)
    G = ConditionalGenerator(shape, k, config.z_dim, config.g_width).to(dev)
    D = ImageDiscriminator(shape, config.d_width, num_classes=k).to(dev)
    images, labels = data.images.to(dev), data.labels.to(dev)
    history, seconds = run_epochs(
        KIND, G, D, asdict(config), gen,
        lambda opt_g, opt_d: _epoch(G, D, opt_g, opt_d, images, labels, config, gen),
        lambda st: {"d_loss": f"{st['d_loss']:.3f}", "g_loss": f"{st['g_loss']:.3f}"},
        state_dir, fingerprint(_settings(config), data=data))
    metrics = {"train_seconds": round(seconds, 3), "epochs": config.epochs,
               "history": history}
    return CGAN(G, config, shape, k, metrics)


def _epoch(G: ConditionalGenerator, D: ImageDiscriminator, opt_g: torch.optim.Optimizer,
           opt_d: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor, config: CGANConfig,
           gen: torch.Generator) -> dict:
    """One pass over the data: a D step then a G step per batch, fakes conditioned on the real batch's labels."""
    G.train()
    D.train()
    totals = dict.fromkeys(("d_loss", "g_loss", "d_accuracy"), 0.0)
    order = torch.randperm(len(images), generator=gen).to(images.device)
    batches = 0
    for i in range(0, len(images), config.batch_size):
        idx = order[i:i + config.batch_size]
        x, y = images[idx], labels[idx]
        z = torch.randn(len(idx), config.z_dim, generator=gen).to(images.device)
        fake = G(z, y)

        d_real, d_fake = D(x, y), D(fake.detach(), y)
        d_loss = (F.binary_cross_entropy_with_logits(d_real, torch.full_like(d_real, config.real_label))
                  + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()

        g_out = D(fake, y)
        g_loss = F.binary_cross_entropy_with_logits(g_out, torch.ones_like(g_out))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()

        batches += 1
        totals["d_loss"] += float(d_loss.detach())
        totals["g_loss"] += float(g_loss.detach())
        hits = (d_real.detach() > 0).float().mean() + (d_fake.detach() < 0).float().mean()
        totals["d_accuracy"] += 0.5 * float(hits)
    return {k: round(v / batches, 5) for k, v in totals.items()}


@torch.no_grad()
def sample(cgan: CGAN, labels: torch.Tensor | list[int] | int, seed: int = 0, batch_size: int = 1024) -> Dataset:
    """Generated images for ``labels`` (or ``n`` images cycling through the classes), as a CPU Dataset."""
    if isinstance(labels, numbers.Integral) or (isinstance(labels, torch.Tensor) and labels.ndim == 0):
        count = int(labels)  # a count, whether a Python, NumPy or 0-d torch integer
        if count < 1:
            raise InputError(f"need at least one sample, got {count}")
        labels = torch.arange(count) % cgan.num_classes
    given = torch.as_tensor(labels).flatten()
    labels = as_labels(given, len(given))
    if len(labels) == 0 or int(labels.min()) < 0 or int(labels.max()) >= cgan.num_classes:
        raise InputError(f"labels must be a non-empty list in 0..{cgan.num_classes - 1}")
    G = cgan.generator.eval()
    dev = next(G.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(len(labels), G.z_dim, generator=gen)
    out = [G(z[i:i + batch_size].to(dev), labels[i:i + batch_size].to(dev)).cpu()
           for i in range(0, len(labels), batch_size)]
    images = torch.cat(out).clamp_(0.0, 1.0)
    return Dataset(images, labels, name="cgan", levels=256, num_classes=cgan.num_classes,
                   meta={"generator": KIND, "seed": seed})


def gan_test(target: nn.Module, cgan: CGAN, n: int = 1000, seed: int = 0) -> float:
    """GAN-test: the share of ``n`` class-balanced samples that ``target`` assigns to their conditioning label."""
    from ..train import accuracy

    fake = sample(cgan, n, seed=seed)
    output_classes(target, fake.images, fake.labels)  # a target that does not fit the samples stops here
    return accuracy(target, fake)


def gan_train(cgan: CGAN, test_data: Dataset, n: int = 4000, arch: str = "cnn", config: TrainConfig | None = None,
              seed: int = 0, device: str | torch.device = "auto") -> float:
    """GAN-train: real-test accuracy of a fresh ``arch`` classifier trained on ``n`` generated samples only."""
    if tuple(test_data.input_shape) != tuple(cgan.input_shape) or test_data.num_classes != cgan.num_classes:
        raise InputError(f"the test data ({tuple(test_data.input_shape)}, {test_data.num_classes} classes) is not "
                         f"what the generator makes ({tuple(cgan.input_shape)}, {cgan.num_classes} classes)")
    config = config or TrainConfig(seed=seed)
    fake = sample(cgan, n, seed=seed)
    ckpt = train_classifier(fake, test_data, arch, config, device=device)
    return float(ckpt.meta["test_accuracy"])
