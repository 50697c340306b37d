"""The generated training data the evaluator retrains on, one function per source.

``onepixel``: every flip the exact search finds on the first training images (a few per image).
``advgan``: the BEFORE stage's AdvGAN applied to the first training images, with their true labels.
``cgan``: labelled samples of a conditional GAN trained on the training split.
``pgd`` and ``certified`` make nothing here: PGD examples and the certified one-pixel bound are
computed against the model being retrained, at every step (:mod:`advgen.harden`); they are counted
so the report says how much each source contributed.

Each static set is a saved phase of the :class:`~advgen.workspace.Workspace`, so a resumed run
retrains on exactly the data the first run made.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import data as datasets
from . import gan
from .data import Dataset
from .files import safe_torch_load
from .gan.state import settings as gan_settings
from .harden import HardenConfig, certified_weight
from .measure import exact_search
from .pictures import save_grid
from .workspace import Workspace

#: Every source of retraining data, in the order the report lists them.
SOURCES = ("onepixel", "advgan", "pgd", "cgan", "certified")


@dataclass(frozen=True)
class SourceConfig:
    """How much each static source makes; ``sources`` says which are on."""

    sources: tuple[str, ...]
    onepixel_train_images: int = 200
    onepixel_flips_per_image: int = 16
    advgan_samples: int = 4000
    cgan_samples: int = 2000
    cgan_epochs: int | None = None
    onepixel_time_limit: float | None = None  # seconds of exact search per training image mined


def generate(ws: Workspace, config: SourceConfig, retrain: HardenConfig, train: Dataset, target: nn.Module,
             advgan: "gan.AdvGAN | None") -> tuple[dict[str, Dataset], dict[str, int]]:
    """The static training sets by source (on rank 0; other ranks only help with the exact search), and counts."""
    on = set(config.sources)
    flips = onepixel_flips(ws, config, train, target) if "onepixel" in on else None
    extra: dict[str, Dataset] = {}
    counts: dict[str, int] = {}
    if not ws.run.is_main:
        return extra, counts
    if "onepixel" in on:
        if flips is not None:
            extra["onepixel"] = flips
        counts["onepixel"] = len(flips) if flips is not None else 0
    if "advgan" in on and advgan is not None and config.advgan_samples:
        with ws.timer("augment_advgan"):
            extra["advgan"] = advgan_examples(ws, advgan, train.head(config.advgan_samples))
        counts["advgan"] = len(extra["advgan"])
    if "cgan" in on and config.cgan_samples:
        with ws.timer("augment_cgan"):
            extra["cgan"] = cgan_samples(ws, config, train)
        counts["cgan"] = len(extra["cgan"])
    if "pgd" in on and retrain.pgd_eps > 0:
        counts["pgd"] = len(train) * retrain.epochs  # one PGD example per image per epoch
    bounded = sum(certified_weight(retrain, e) > 0 for e in range(retrain.epochs))  # the ramp starts at zero
    if "certified" in on and bounded:
        counts["certified"] = len(train) * bounded * (retrain.certified_top + retrain.certified_random)
    return extra, counts


def onepixel_flips(ws: Workspace, config: SourceConfig, train: Dataset, target: nn.Module) -> Dataset | None:
    """Every flip the exact attack finds on the first training images (shared over ranks); None if none."""
    if not config.onepixel_train_images:
        return None
    subset = train.head(config.onepixel_train_images)
    where = ws.phases.path("onepixel_train")
    with ws.timer("augment_onepixel"):
        exact_search(ws.run, target, subset, where, max_examples=config.onepixel_flips_per_image,
                     time_limit=config.onepixel_time_limit)
    if not ws.run.is_main:
        return None
    adv = safe_torch_load(where / "adversarial.pt", what="one-pixel examples")
    if not len(adv["labels"]):
        return None
    return Dataset(adv["images"], adv["labels"], "onepixel", subset.levels, subset.num_classes)


def advgan_examples(ws: Workspace, advgan: "gan.AdvGAN", source: Dataset) -> Dataset:
    """``source`` perturbed by the generator, with the true labels."""
    def make() -> Dataset:
        adv = advgan.perturb(source.images.to(ws.run.device)).cpu()
        return Dataset(adv, source.labels.clone(), "advgan", source.levels, source.num_classes)

    return ws.phases.cached("augment_advgan", ws.fingerprint({}, model=advgan.generator, data=source), make,
                            datasets.save_file, datasets.load_file)


def cgan_samples(ws: Workspace, config: SourceConfig, train: Dataset) -> Dataset:
    """Labelled samples of a conditional GAN trained on ``train``; 100 of them, by class, in a picture."""
    cfg = gan.CGANConfig(seed=ws.run.seed)
    if config.cgan_epochs:
        cfg.epochs = config.cgan_epochs

    def make() -> Dataset:
        cgan = gan.train_cgan(train, cfg, device=ws.run.device, state_dir=ws.phases.path("cgan_training"))
        return gan.sample(cgan, config.cgan_samples, seed=ws.run.seed)

    wanted = ws.fingerprint(gan_settings(cfg) | {"epochs": cfg.epochs, "samples": config.cgan_samples}, data=train)
    samples = ws.phases.cached("augment_cgan", wanted, make, datasets.save_file, datasets.load_file)
    order = torch.argsort(samples.labels, stable=True)[:: max(1, len(samples) // 100)][:100]
    save_grid(ws.out / "cgan_samples.png", samples.images[order], nrow=10)
    return samples
