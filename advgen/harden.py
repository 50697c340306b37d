"""Retraining that makes a classifier harder to fool: generated data plus PGD examples made on the fly.

Static generated sets (one-pixel flips, AdvGAN outputs, conditional-GAN samples) are mixed into the
clean training data; PGD examples are made against the model being trained, at every step, because
examples made against the old model stop being adversarial as soon as the weights move (Madry et al.
2018). The PGD radius ramps up over the first epochs, which keeps small networks from collapsing at
eps 0.3. In the same spirit, with ``onepixel_weight > 0`` (off by default: the certified term below did
better, README), a cheap one-pixel example is made on the fly per image: the single pixel whose move to
black or white raises the loss most to first order (a one-step L0 attack), since the exact enumerator
is too slow to run inside every training step.

The one-pixel threat is trained against with the exact search's own bound (certified training,
:mod:`advgen.onepixel.certified`): per image, a few boxes "this pixel anywhere in [0, 1]" on the
pixels with the largest first-order gain plus random ones, and cross-entropy on their worst-case
logits. Its weight ramps up from zero, as IBP training needs (Gowal et al. 2018): a bound pushed
too early collapses the clean accuracy.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torchattacks import TPGD

from .data import Dataset
from .errors import InputError, check_fields
from .methods import pgd
from .models import output_classes
from .onepixel.certified import PixelBound, gain_pixels
from .runtime import resolve_device
from .train import TrainConfig, concat, fit

log = logging.getLogger("advgen")


@dataclass
class HardenConfig:
    """How the target is retrained; ``pgd_eps=0`` switches the on-the-fly PGD examples off.

    With ``trades_beta > 0`` the PGD term is TRADES' (Zhang et al. 2019): cross-entropy on the clean
    image plus ``trades_beta`` times the KL divergence between the clean and the adversarial
    prediction, the adversary maximising that divergence (torchattacks' TPGD); ``clean_weight`` is
    then unused.

    The ramps: PGD's radius is ``pgd_eps * (epoch + 1) / pgd_ramp_epochs`` (full from the first epoch
    when that is 0 or 1); the certified weight is ``certified_weight * epoch / certified_ramp_epochs``,
    so it starts at zero, or is full from the first step when ``certified_ramp_epochs`` is 0.
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    pgd_eps: float = 0.3
    pgd_steps: int = 7
    pgd_ramp_epochs: int = 3
    clean_weight: float = 0.55
    trades_beta: float = 0.0
    onepixel_weight: float = 0.0
    certified_weight: float = 0.5
    certified_ramp_epochs: int = 4
    certified_top: int = 8
    certified_random: int = 8
    shift: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self, {"epochs": 1, "batch_size": 1, "pgd_steps": 1, "pgd_ramp_epochs": 0, "trades_beta": 0,
                            "onepixel_weight": 0, "certified_weight": 0, "certified_ramp_epochs": 0,
                            "certified_top": 0, "certified_random": 0, "shift": 0, "seed": 0},
                     fractions=("pgd_eps", "clean_weight"), positive=("lr",))
        if self.certified_weight > 0 and self.certified_top + self.certified_random == 0:
            raise InputError("HardenConfig: the certified term needs pixels to bound; certified_top + "
                             "certified_random is 0 (set certified_weight=0 to switch it off)")
        if self.pgd_eps > 0 and self.trades_beta == 0 and self.clean_weight + self.onepixel_weight > 1:
            raise InputError(f"HardenConfig: clean_weight + onepixel_weight is "
                             f"{self.clean_weight + self.onepixel_weight:g}; the PGD term weighs what is left "
                             f"of 1, so it must be at most 1")


def worst_pixel(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per image, set the one pixel to 0 or 1 that the loss gradient says hurts most (first order)."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    up, down = (grad * (1 - x)).flatten(1), (-grad * x).flatten(1)
    gain = torch.maximum(up, down)
    pos = gain.argmax(1)
    rows = torch.arange(len(x), device=x.device)
    out = x.detach().flatten(1).clone()
    out[rows, pos] = (up[rows, pos] >= down[rows, pos]).to(out.dtype)
    return out.view_as(x)


def _pixel_bound(model: nn.Module, input_shape: tuple[int, int, int], device: torch.device) -> PixelBound | None:
    """The certified term's bound, or None (with one warning) for a model the bounds do not support."""
    try:
        return PixelBound(model, input_shape, device)
    except ValueError as exc:
        log.warning(f"retraining without the certified one-pixel term: {exc}")
        return None


def pgd_radius(config: HardenConfig, epoch: int) -> float:
    """PGD's L-inf radius in ``epoch`` (0-based): ramped up over ``pgd_ramp_epochs``."""
    return config.pgd_eps * min(1.0, (epoch + 1) / max(1, config.pgd_ramp_epochs))


def certified_weight(config: HardenConfig, epoch: int) -> float:
    """The certified term's weight in ``epoch`` (0-based): zero at first, full after ``certified_ramp_epochs``."""
    ramp = min(1.0, epoch / config.certified_ramp_epochs) if config.certified_ramp_epochs else 1.0
    return ramp * config.certified_weight


def short_ramps(config: HardenConfig) -> list[str]:
    """What a run too short for its ramps never reaches: the ramps count epochs, so cutting ``epochs``
    (as a large dataset on a CPU invites) can end retraining before PGD's radius or the certified
    weight is at its configured value."""
    out, last = [], config.epochs - 1
    if (eps := pgd_radius(config, last)) < config.pgd_eps:
        out.append(f"retraining runs {config.epochs} epochs but PGD's radius ramps over {config.pgd_ramp_epochs}: "
                   f"it ends at eps {eps:.3g}, not {config.pgd_eps:g}")
    if (weight := certified_weight(config, last)) < config.certified_weight:
        out.append(f"retraining runs {config.epochs} epochs but the certified weight ramps over "
                   f"{config.certified_ramp_epochs}: it ends at {weight:.3g}, not {config.certified_weight:g}")
    return out


def harden(model: nn.Module, train_data: Dataset, extra: list[Dataset] | None = None,
           config: HardenConfig | None = None, device: str | torch.device = "auto",
           state: str | Path | None = None) -> tuple[nn.Module, dict]:
    """Return a retrained copy of ``model`` on the CPU (the original is untouched) and what the retraining did.

    ``state``: a file that keeps the retraining's progress after every epoch, so that a run killed half-way
    continues from there (:func:`advgen.train.fit`); a state made under another recipe is refused.
    """
    config = config or HardenConfig()
    extra = [extra] if isinstance(extra, Dataset) else list(extra or [])
    if not all(isinstance(d, Dataset) for d in (train_data, *extra)) or not isinstance(config, HardenConfig):
        raise InputError("harden takes advgen.data.Dataset training data (and a list of them as extra) and a "
                         "HardenConfig")
    if isinstance(model, torch.jit.ScriptModule):  # a copy of one has parameters the optimiser cannot take
        raise InputError("harden cannot retrain a TorchScript model; pass the nn.Module it was scripted from")
    if not any(p.requires_grad for p in model.parameters()):
        raise InputError("the model has no trainable parameters")
    data = concat([train_data, *extra])
    output_classes(model, data.images, data.labels)
    for warning in short_ramps(config):
        log.warning(warning)
    dev = resolve_device(device)
    model = copy.deepcopy(model).to(dev)  # before the bound is built: it checks itself on dev
    attacks: dict[int, object | None] = {}
    bound = _pixel_bound(model, train_data.input_shape, dev) if config.certified_weight > 0 else None

    def pgd_at(epoch: int) -> object | None:
        if epoch not in attacks:
            eps = pgd_radius(config, epoch)
            alpha = 2.5 * eps / config.pgd_steps
            attacks[epoch] = None if eps <= 0 else \
                TPGD(model, eps=eps, alpha=alpha, steps=config.pgd_steps) if config.trades_beta > 0 else \
                pgd(model, eps=eps, steps=config.pgd_steps, alpha=alpha)
        return attacks[epoch]

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        logits = model(x)
        trades = config.trades_beta > 0
        loss = (1.0 if trades else config.clean_weight) * F.cross_entropy(logits, y)
        rest = 1 - config.clean_weight
        if config.onepixel_weight > 0:
            loss = loss + config.onepixel_weight * F.cross_entropy(model(worst_pixel(model, x, y)), y)
            rest -= config.onepixel_weight
        attack = pgd_at(epoch)
        if attack is not None:
            x_adv = attack(x, y)
            model.train()
            if trades:
                loss = loss + config.trades_beta * F.kl_div(F.log_softmax(model(x_adv), 1), F.softmax(logits, 1),
                                                            reduction="batchmean")
            else:
                loss = loss + rest * F.cross_entropy(model(x_adv), y)
        if bound is not None:
            weight = certified_weight(config, epoch)
            if weight > 0:
                pixels = gain_pixels(model, x, y, config.certified_top, config.certified_random)
                loss = loss + weight * bound.loss(x, y, pixels)
        return loss

    result = fit(model, data, TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                                          shift=config.shift, seed=config.seed),
                 device=dev, desc="retrain", loss_fn=loss_fn, state=state, depends={"harden": asdict(config)})
    return model.cpu(), {"train_images": len(data), "epochs": config.epochs, "seconds": round(result.seconds, 3),
                         "certified_term": bound is not None, "final_pgd_eps": pgd_radius(config, config.epochs - 1)}
