"""AdvGAN (Xiao et al. 2018, "Generating Adversarial Examples with Adversarial Networks"), untargeted.

A generator G maps an image x to a perturbation bounded in L-infinity (``eps * tanh``); the adversarial
image is ``clip(x + G(x), 0, 1)``, so one forward pass attacks a whole batch. G minimises

    L = L_adv + alpha * L_gan + beta * L_hinge

* ``L_adv``: the C&W margin on the frozen target's logits, ``max(Z_y - max_{i != y} Z_i, -kappa)``;
* ``L_gan``: LSGAN generator loss against a discriminator D that tells x from x + G(x), which keeps the
  perturbation looking like part of the image (the term is *not* detached: its gradient reaches G);
* ``L_hinge``: ``max(0, ||G(x)||_2 - c)``, a soft budget on the perturbation's L2 norm.

D is trained with LSGAN losses and one-sided label smoothing (real target 0.9) so it cannot drive its
loss to zero and starve G of gradient; its accuracy per epoch is recorded so a collapse is visible.
Measured on MNIST at eps 0.3: D still tells x from x + G(x) almost perfectly from epoch 3 on (gray
noise on a black background is easy to spot), and LSGAN keeps G's GAN gradient alive. Weighting the
GAN term up (alpha 1, lr_d 2e-4) left D at 0.99 and cut the success rate to 94%, so the defaults favour
success. The target is kept in eval mode with frozen weights throughout.

Example::

    >>> adv = train_advgan(ckpt.model, train_set, AdvGANConfig(epochs=5))
    >>> x_adv = adv.perturb(test_set.images)            # same shape, in [0, 1], |x_adv - x| <= 0.3
    >>> attack_success_rate(ckpt.model, adv, test_set)  # share of correctly classified images fooled
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..data import Dataset, on_grid, validate_images
from ..errors import InputError, check_fields
from ..models import output_classes
from ..runtime import cpu_threads, own_random_state, resolve_device, seed_everything
from .nets import ImageDiscriminator, PerturbationGenerator
from ..resume import fingerprint
from .state import settings as _settings, frozen, run_epochs

KIND = "advgan"


@dataclass
class AdvGANConfig:
    """Hyper-parameters; the defaults fool the default MNIST CNN on ~99% of its test images (~38 s of one core)."""

    eps: float = 0.3
    epochs: int = 10
    batch_size: int = 64
    lr_g: float = 1e-3
    lr_d: float = 1e-3
    alpha: float = 0.1
    beta: float = 0.05
    hinge_bound: float = 3.0
    kappa: float = 2.0
    g_width: int = 8
    g_blocks: int = 1
    d_width: int = 16
    real_label: float = 0.9
    seed: int = 0

    def validate(self) -> "AdvGANConfig":
        """Self, or an :class:`~advgen.errors.InputError` naming the first setting out of range."""
        if not 0 < self.eps <= 1:
            raise InputError(f"eps must be in (0, 1], got {self.eps}")
        check_fields(self, {"epochs": 1, "batch_size": 1, "g_width": 1, "d_width": 1, "alpha": 0, "beta": 0,
                            "hinge_bound": 0, "kappa": 0, "g_blocks": 0, "seed": 0}, positive=("lr_g", "lr_d"))
        if not 0 < self.real_label <= 1:
            raise InputError(f"real_label must be in (0, 1], got {self.real_label}")
        return self


@dataclass
class AdvGAN:
    """A trained perturbation generator, the configuration it was trained with, and training metrics."""

    generator: PerturbationGenerator
    config: AdvGANConfig
    input_shape: tuple[int, int, int]
    metrics: dict = field(default_factory=dict)

    @torch.no_grad()
    def perturb(self, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Adversarial images ``clip(x + G(x), 0, 1)``, same shape and device as ``images`` (floats in [0, 1])."""
        validate_images(images)
        if tuple(images.shape[1:]) != tuple(self.input_shape):
            raise InputError(f"the generator expects images shaped (N, {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(images.shape)}")
        if images.dtype != torch.float32:
            raise InputError(f"the generator takes float32 images, got {str(images.dtype).removeprefix('torch.')}")
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        self.generator.eval()
        dev = next(self.generator.parameters()).device
        out = []
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].to(dev)
            out.append(adversarial(self.generator, x).to(images.device))
        return torch.cat(out)

    def to(self, device: str | torch.device) -> "AdvGAN":
        """Move the generator to ``device`` (``auto``, ``cpu``, ``cuda``); returns self, as ``nn.Module.to`` does."""
        self.generator.to(resolve_device(device))
        return self


def adversarial(generator: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x + G(x) clipped to [0, 1]; clipping can only shrink the perturbation, so the L-inf bound holds."""
    return (x + generator(x)).clamp(0.0, 1.0)


def cw_margin(logits: torch.Tensor, labels: torch.Tensor, kappa: float) -> torch.Tensor:
    """Untargeted C&W loss per image: how far the true class's logit leads the best other one, floored at -kappa."""
    real = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(1)
    return (real - other).clamp(min=-kappa)


def train_advgan(target: nn.Module, data: Dataset, config: AdvGANConfig | None = None, device: str | torch.device = "auto",
                 state_dir: str | Path | None = None,
                 test_data: Dataset | None = None, threads: int | None = 1) -> AdvGAN:
    """Train an AdvGAN generator against ``target`` on ``data`` (images and their true labels).

    With ``state_dir`` the full training state is saved atomically after every epoch and a later call with
    the same directory and settings resumes from it; on CPU the result equals an uninterrupted run.
    With ``test_data`` the returned metrics include the attack success rate on it. ``threads`` sets torch's
    CPU threads while training (None leaves them alone); one is fastest for these small nets on shared cores.
    The caller's random streams are as they were afterwards.
    """
    with cpu_threads(threads), own_random_state(resolve_device(device)):
        return _train(target, data, config, device, state_dir, test_data)


def _train(target: nn.Module, data: Dataset, config: AdvGANConfig | None, device: str | torch.device,
           state_dir: str | Path | None, test_data: Dataset | None) -> AdvGAN:
    config = (config or AdvGANConfig()).validate()
    dev = resolve_device(device)
    output_classes(target, data.images, data.labels)
    shape = data.input_shape
    gen = seed_everything(config.seed)
    G = PerturbationGenerator(shape, config.eps, config.g_width, config.g_blocks).to(dev)
    D = ImageDiscriminator(shape, config.d_width).to(dev)
    images, labels = data.images.to(dev), data.labels.to(dev)
    with frozen(target, dev):
        history, seconds = run_epochs(
            KIND, G, D, asdict(config), gen,
            lambda opt_g, opt_d: _epoch(G, D, opt_g, opt_d, target, images, labels, config, gen),
            lambda st: {"fooled": f"{st['train_fooled']:.3f}", "d_acc": f"{st['d_accuracy']:.2f}"},
            state_dir, fingerprint(_settings(config), model=target, data=data))
    metrics = {"train_seconds": round(seconds, 3), "epochs": config.epochs,
               "history": history}
    result = AdvGAN(G, config, shape, metrics)
    if test_data is not None:
        metrics["success_rate"] = attack_success_rate(target, result, test_data)
    return result


def _epoch(G: nn.Module, D: nn.Module, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
           target: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: AdvGANConfig,
           gen: torch.Generator) -> dict:
    """One pass over the data: a D step then a G step per batch; returns mean losses and rates."""
    G.train()
    D.train()
    totals = dict.fromkeys(("d_loss", "g_adv", "g_gan", "g_hinge", "train_fooled", "d_accuracy"), 0.0)
    order = torch.randperm(len(images), generator=gen).to(images.device)
    batches = 0
    for i in range(0, len(images), config.batch_size):
        idx = order[i:i + config.batch_size]
        x, y = images[idx], labels[idx]
        x_adv = adversarial(G, x)

        d_real, d_fake = D(x), D(x_adv.detach())
        d_loss = 0.5 * ((d_real - config.real_label) ** 2).mean() + 0.5 * (d_fake ** 2).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()

        logits = target(x_adv)
        g_adv = cw_margin(logits, y, config.kappa).mean()
        g_gan = ((D(x_adv) - 1.0) ** 2).mean()
        g_hinge = F.relu((x_adv - x).flatten(1).norm(dim=1) - config.hinge_bound).mean()
        g_loss = g_adv + config.alpha * g_gan + config.beta * g_hinge
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()

        batches += 1
        totals["d_loss"] += float(d_loss.detach())
        totals["g_adv"] += float(g_adv.detach())
        totals["g_gan"] += float(g_gan.detach())
        totals["g_hinge"] += float(g_hinge.detach())
        totals["train_fooled"] += float((logits.argmax(1) != y).float().mean())
        hits = (d_real.detach() > 0.5).float().mean() + (d_fake.detach() < 0.5).float().mean()
        totals["d_accuracy"] += 0.5 * float(hits)
    return {k: round(v / batches, 5) for k, v in totals.items()}


@torch.no_grad()
def outcomes(target: nn.Module, advgan: AdvGAN, data: Dataset, batch_size: int = 1024) -> dict[str, torch.Tensor]:
    """Per image of ``data``: ``correct`` (clean), ``robust`` (still right after AdvGAN), ``fooled`` (both)."""
    from ..train import predict

    output_classes(target, data.images, data.labels)  # a target that does not fit the data stops here
    correct = predict(target, data.images, batch_size) == data.labels
    robust = predict(target, advgan.perturb(data.images, batch_size), batch_size) == data.labels
    return {"correct": correct, "fooled": correct & ~robust, "robust": robust}


def attack_success_rate(target: nn.Module, advgan: AdvGAN, data: Dataset, batch_size: int = 1024) -> float:
    """Among images of ``data`` that ``target`` classifies correctly, the share misclassified after AdvGAN."""
    found = outcomes(target, advgan, data, batch_size)
    correct = int(found["correct"].sum())
    if not correct:
        raise InputError("the target classifies none of the images correctly; the success rate is undefined")
    return int(found["fooled"].sum()) / correct


def adversarial_dataset(advgan: AdvGAN, data: Dataset, n: int | None = None, seed: int = 0,
                        grid: bool = False) -> Dataset:
    """``n`` images drawn from ``data`` (all, in a seeded order, when None), perturbed, with their TRUE labels.

    This is augmentation data: retraining on it teaches the target the correct class for its adversarial
    neighbours. When ``n`` exceeds the dataset, images are reused (each pass in a fresh order). With
    ``grid`` each perturbed pixel is rounded towards its source onto ``data``'s level grid
    (:func:`advgen.data.on_grid`), within ``eps`` still, so the set can be written and attacked as
    ``levels``-valued images.
    """
    n = len(data) if n is None else n
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise InputError(f"need a whole number of samples, at least one, got {n!r}")
    gen = torch.Generator().manual_seed(seed)
    passes = -(-n // len(data))
    idx = torch.cat([torch.randperm(len(data), generator=gen) for _ in range(passes)])[:n]
    picked = data.subset(idx)
    images = advgan.perturb(picked.images).cpu()
    if grid:
        images = on_grid(images, data.levels, toward=picked.images.cpu())
    return Dataset(images, picked.labels, name="advgan", levels=data.levels,
                   num_classes=data.num_classes, meta={"generator": KIND, "seed": seed, "eps": advgan.config.eps})
