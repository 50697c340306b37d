"""The robustness evaluator: measure a classifier, retrain it on generated data, measure it again.

Every attack in the AFTER stage is run from scratch against the retrained model: a fresh exact
one-pixel enumeration, fresh PGD, and a freshly trained AdvGAN. Nothing made against the old model is
scored against the new one. Each phase stores its result atomically under ``out/state`` so a killed
run resumes where it stopped, and each phase seeds itself, so the resumed result equals an
uninterrupted one. Under torchrun the exact one-pixel enumerations (the costly part) are shared out
between the ranks; rank 0 does every other phase and writes the reports.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

import torch
import torchattacks
from torch import nn

from . import data as datasets
from . import gan
from .attack_run import run_attack
from .data import Dataset
from .distributed import World, device_for_rank, session
from .errors import InputError
from .files import atomic_write_json, check_writable_dir, safe_torch_load
from .harden import HardenConfig, harden
from .methods import AttackOptions
from .models import Checkpoint, build, load_checkpoint, save_checkpoint
from .report import REPORT_FILES, GateSpec, Report, StageMetrics, evaluate_gates, machine_info, parse_gate_specs
from .report import write_reports
from .runtime import resolve_device, seed_everything
from .train import TrainConfig, accuracy, predict, train_classifier

T = TypeVar("T")
AUGMENTATIONS = ("onepixel", "advgan", "pgd", "cgan")


@dataclass
class EvaluateConfig:
    """What to measure and how to retrain; the defaults fit 10 minutes on 2 CPU cores."""

    data: str = datasets.EMBEDDED
    arch: str = "cnn"
    train_images: int | None = None
    onepixel_images: int = 100
    pgd_images: int = 1000
    pgd_eps: float = 0.3
    pgd_steps: int = 40
    advgan_images: int = 1000
    augment: tuple[str, ...] = AUGMENTATIONS
    onepixel_train_images: int = 200
    onepixel_flips_per_image: int = 16
    cgan_samples: int = 2000
    advgan_epochs: int | None = None
    cgan_epochs: int | None = None
    retrain: HardenConfig = field(default_factory=HardenConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.augment) - set(AUGMENTATIONS)
        if unknown:
            raise InputError(f"unknown augmentation {', '.join(sorted(unknown))}; "
                             f"choose from {', '.join(AUGMENTATIONS)}")
        for name in ("onepixel_images", "pgd_images", "advgan_images", "onepixel_train_images", "cgan_samples"):
            if getattr(self, name) < 0:
                raise InputError(f"{name.replace('_', '-')} must be >= 0")
        if not 0 < self.pgd_eps <= 1:
            raise InputError(f"pgd eps must be in (0, 1], got {self.pgd_eps}")


_PICTURES = ("examples_before.png", "examples_after.png", "heatmaps_before.png", "heatmaps_after.png",
             "advgan_before.png", "advgan_after.png", "cgan_samples.png")


class _State:
    """Phase results under ``out/state``, each written atomically once and reused on resume."""

    def __init__(self, out: Path, resume: bool, overwrite: bool) -> None:
        self.dir = out / "state"
        if resume and overwrite:
            raise InputError("--resume and --overwrite contradict each other; pick one")
        outputs = [out / name for name in (*REPORT_FILES.values(), *_PICTURES)]
        if overwrite:
            shutil.rmtree(self.dir, ignore_errors=True)
            for path in outputs:
                path.unlink(missing_ok=True)
        earlier = (self.dir.exists() and any(self.dir.iterdir())) or any(p.exists() for p in outputs)
        if earlier and not resume:
            raise InputError(f"{out} holds an earlier run; pass --resume to continue it or --overwrite "
                             f"to start again")
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.dir / name

    def _cached(self, path: Path, compute: Callable[[], T], save: Callable[[Path, T], object],
                load: Callable[[Path], T]) -> T:
        if path.exists():
            return load(path)
        value = compute()
        save(path, value)
        return value

    def json(self, name: str, compute: Callable[[], dict]) -> dict:
        return self._cached(self.dir / f"{name}.json", compute, atomic_write_json,
                            lambda p: json.loads(p.read_text()))

    def checkpoint(self, name: str, compute: Callable[[], Checkpoint]) -> Checkpoint:
        return self._cached(self.dir / f"{name}.pt", compute, save_checkpoint, load_checkpoint)

    def dataset(self, name: str, compute: Callable[[], Dataset]) -> Dataset:
        return self._cached(self.dir / f"{name}.pt", compute, datasets.save_file, datasets.load_file)


def evaluate(config: EvaluateConfig | None = None, out: str | Path = "reports", checkpoint: Path | None = None,
             fail_under: list[str | GateSpec] | None = None, resume: bool = False, overwrite: bool = False,
             device: str = "auto", quiet: bool = False, factory: str | None = None,
             log: Callable[[str], None] = lambda s: None) -> Report:
    """Measure the target BEFORE, retrain it on generated data, measure AFTER from scratch; write reports.

    ``fail_under`` holds gate specs such as ``clean=0.97``; the returned report says whether they passed.
    Without ``resume`` or ``overwrite`` an earlier run in ``out`` is refused, never mixed in.
    """
    config = config or EvaluateConfig()
    gates_spec = parse_gate_specs(fail_under or [])  # a typo fails now, not after minutes of work
    with session(resolve_device(device)) as world:
        return _evaluate(config, Path(out), checkpoint, gates_spec, resume, overwrite, device, quiet, factory,
                         log if world.is_main else (lambda s: None), world)


def _evaluate(config: EvaluateConfig, out: Path, checkpoint: Path | None, gates_spec: list[GateSpec],
              resume: bool, overwrite: bool, device: str, quiet: bool, factory: str | None,
              log: Callable[[str], None], world: World) -> Report:
    def prepare() -> _State:
        check_writable_dir(out)
        return _State(out, resume, overwrite)

    state = world.on_main(prepare)
    dev = device_for_rank(resolve_device(device)) if world.size > 1 else resolve_device(device)
    quiet = quiet or not world.is_main
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], T]) -> T:
        t0 = time.perf_counter()
        value = fn()
        timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - t0, 3)
        return value

    train_set = datasets.load(config.data, "train").head(config.train_images)
    test_set = datasets.load(config.data, "test")

    def load_target() -> Checkpoint:
        if checkpoint is not None:
            target = load_checkpoint(checkpoint, factory=factory)
            if target.input_shape and tuple(target.input_shape) != test_set.input_shape:
                raise InputError(f"the checkpoint expects images of shape {tuple(target.input_shape)}, "
                                 f"but {config.data} has {test_set.input_shape}")
            return target
        build(config.arch, train_set.input_shape, train_set.num_classes)  # a bad name fails before the log line
        log(f"no --checkpoint given: training the default {config.arch} on {config.data}")
        return state.checkpoint("target", lambda: train_classifier(
            train_set, test_set, config.arch, TrainConfig(seed=config.seed), device=device, quiet=quiet))

    target = timed("train_target", lambda: world.on_main(load_target))

    log("measuring BEFORE")
    before, before_advgan = _measure(target.model, "before", train_set, test_set, config, state, out, dev,
                                     quiet, timed, world)

    log("making augmentation data")
    flips = _onepixel_flips(target.model, train_set, config, state, dev, quiet, timed, world)
    extra, counts = world.on_main(lambda: _augmentation(flips, before_advgan, train_set, config, state, out, dev,
                                                        quiet, timed))

    log("retraining")
    retrain_cfg = HardenConfig(**{
        **asdict(config.retrain), "seed": config.seed,
        "pgd_eps": config.retrain.pgd_eps if "pgd" in config.augment else 0.0,
        "onepixel_weight": config.retrain.onepixel_weight if "onepixel" in config.augment else 0.0})

    def retrain() -> Checkpoint:
        model, info = harden(target.model, train_set, extra, retrain_cfg, device=device, quiet=quiet)
        return Checkpoint(model, target.arch, target.input_shape or test_set.input_shape,
                          target.num_classes or test_set.num_classes, {"retrain": info})

    retrained = timed("retrain", lambda: world.on_main(lambda: state.checkpoint("retrained", retrain)))

    log("measuring AFTER (every attack from scratch against the retrained model)")
    after, _ = _measure(retrained.model, "after", train_set, test_set, config, state, out, dev, quiet, timed,
                        world)

    def write() -> Report:
        timings["total"] = round(time.perf_counter() - started, 3)
        report = Report(
            seed=config.seed, machine=machine_info(dev), config=_config_dict(config, checkpoint, world),
            timings=timings, before=before, after=after, augmentation=counts,
            artifacts={name: name for name in _PICTURES if (out / name).exists()},
            notes=[f"one-pixel: exact enumeration of the first {config.onepixel_images} test images; PGD: the "
                   f"first {config.pgd_images}; AdvGAN: the first {config.advgan_images}; clean accuracy: all "
                   f"{len(test_set)}"],
        )
        report.set_gates(evaluate_gates(report, gates_spec))
        write_reports(report, out)
        return report

    return world.on_main(write)


def _config_dict(config: EvaluateConfig, checkpoint: Path | None, world: World) -> dict:
    d = asdict(config)
    d["augment"] = list(config.augment)
    d["checkpoint"] = str(checkpoint) if checkpoint else None
    d["processes"] = world.size
    return d


def _measure(model: nn.Module, stage: str, train_set: Dataset, test_set: Dataset, config: EvaluateConfig,
             state: _State, out: Path, dev: torch.device, quiet: bool, timed: Callable,
             world: World) -> tuple[StageMetrics, "gan.AdvGAN | None"]:
    """Every metric of one stage, each attack freshly run against ``model``."""
    model = model.to(dev).eval()
    seconds: dict[str, float] = {}
    metrics = StageMetrics(clean_accuracy=accuracy(model, test_set))

    if config.onepixel_images:
        t0 = time.perf_counter()
        summary = timed(f"onepixel_{stage}", lambda: _exact(model, test_set.head(config.onepixel_images),
                                                             state.path(f"onepixel_{stage}"), dev, quiet, world))
        seconds["onepixel"] = round(time.perf_counter() - t0, 3)
        n = summary["images"]
        metrics.onepixel_images = n
        metrics.onepixel_vulnerable = summary["vulnerable"]
        metrics.onepixel_vulnerable_rate = summary["vulnerable"] / n
        metrics.onepixel_robust_accuracy = summary["certified"] / n
        metrics.onepixel_candidates = summary["candidates_total"]
        metrics.onepixel_pruned = summary["pruned"]
        if world.is_main:
            for picture in ("heatmaps", "examples"):
                made = state.path(f"onepixel_{stage}") / f"{picture}.png"
                if made.exists():
                    shutil.copyfile(made, out / f".{picture}_{stage}.png.tmp")
                    (out / f".{picture}_{stage}.png.tmp").replace(out / f"{picture}_{stage}.png")

    def rest() -> tuple[StageMetrics, "gan.AdvGAN | None"]:
        if config.pgd_images:
            t0 = time.perf_counter()
            metrics.pgd_robust_accuracy = timed(f"pgd_{stage}", lambda: state.json(
                f"pgd_{stage}", lambda: {"robust_accuracy": _pgd(model, test_set.head(config.pgd_images), config,
                                                                 dev)}))["robust_accuracy"]
            seconds["pgd"] = round(time.perf_counter() - t0, 3)
        advgan = None
        if config.advgan_images:
            t0 = time.perf_counter()
            advgan = timed(f"advgan_{stage}", lambda: _advgan(model, stage, train_set, config, state, dev, quiet))
            scored = test_set.head(config.advgan_images)
            metrics.advgan_success_rate = gan.attack_success_rate(model, advgan, scored)
            perturbed = advgan.perturb(scored.images.to(dev)).cpu()
            metrics.advgan_robust_accuracy = float((predict(model, perturbed) == scored.labels).float().mean())
            _save_grid(out / f"advgan_{stage}.png", torch.cat([scored.images[:16], perturbed[:16]]), nrow=16)
            seconds["advgan"] = round(time.perf_counter() - t0, 3)
        metrics.seconds = seconds
        return metrics, advgan

    return world.on_main(rest)


def _exact(model: nn.Module, data: Dataset, out: Path, dev: torch.device, quiet: bool, world: World,
           max_examples: int = 64) -> dict:
    """The exact one-pixel attack on ``data`` into ``out`` (records per image; resumes; shared over ranks)."""
    return run_attack(model, data, None, out, method="onepixel", options=AttackOptions(levels=data.levels, device=dev),
                      resume=True, max_examples=max_examples, quiet=quiet, world=world)


def _onepixel_flips(target: nn.Module, train_set: Dataset, config: EvaluateConfig, state: _State,
                    dev: torch.device, quiet: bool, timed: Callable, world: World) -> Dataset | None:
    """Every flip the exact attack finds on the first training images (a few per image), as training data."""
    if "onepixel" not in config.augment or not config.onepixel_train_images:
        return None
    subset = train_set.head(config.onepixel_train_images)
    where = state.path("onepixel_train")
    timed("augment_onepixel", lambda: _exact(target, subset, where, dev, quiet, world,
                                             max_examples=config.onepixel_flips_per_image))
    adv = safe_torch_load(where / "adversarial.pt", what="one-pixel examples")
    if not len(adv["labels"]):
        return None
    return Dataset(adv["images"], adv["labels"], "onepixel", subset.levels, subset.num_classes)


def _pgd(model: nn.Module, data: Dataset, config: EvaluateConfig, dev: torch.device, batch: int = 500) -> float:
    seed_everything(config.seed)
    attack = torchattacks.PGD(model, eps=config.pgd_eps, alpha=0.01, steps=config.pgd_steps, random_start=True)
    correct = 0
    for i in range(0, len(data), batch):
        x, y = data.images[i:i + batch].to(dev), data.labels[i:i + batch].to(dev)
        x_adv = attack(x, y)
        with torch.no_grad():
            correct += int((model(x_adv).argmax(1) == y).sum())
    return correct / len(data)


def _advgan(model: nn.Module, stage: str, train_set: Dataset, config: EvaluateConfig, state: _State,
            dev: torch.device, quiet: bool) -> "gan.AdvGAN":
    """A generator trained from scratch against ``model`` (resumed per epoch from the state directory)."""
    path = state.path(f"advgan_{stage}.pt")
    if path.exists():
        return gan.load_generator(path, kind="advgan").to(dev)
    cfg = gan.AdvGANConfig(eps=config.pgd_eps, seed=config.seed)
    if config.advgan_epochs:
        cfg.epochs = config.advgan_epochs
    advgan = gan.train_advgan(model, train_set, cfg, device=str(dev), quiet=quiet,
                              state_dir=state.path(f"advgan_{stage}_training"))
    gan.save_generator(path, advgan)
    return advgan


def _augmentation(flips: Dataset | None, advgan: "gan.AdvGAN | None", train_set: Dataset, config: EvaluateConfig,
                  state: _State, out: Path, dev: torch.device, quiet: bool,
                  timed: Callable) -> tuple[list[Dataset], dict]:
    """The generated training sets (PGD and worst-pixel examples are made on the fly while retraining)."""
    extra: list[Dataset] = []
    counts: dict[str, int] = {}
    if "onepixel" in config.augment:
        counts["onepixel"] = len(flips) if flips is not None else 0
        if flips is not None:
            extra.append(flips)
    if "advgan" in config.augment and advgan is not None:
        def advgan_set() -> Dataset:
            images = advgan.perturb(train_set.images.to(dev)).cpu()
            return Dataset(images, train_set.labels.clone(), "advgan", train_set.levels, train_set.num_classes)

        adv = timed("augment_advgan", lambda: state.dataset("augment_advgan", advgan_set))
        extra.append(adv)
        counts["advgan"] = len(adv)
    if "cgan" in config.augment and config.cgan_samples:
        def cgan_set() -> Dataset:
            cfg = gan.CGANConfig(seed=config.seed)
            if config.cgan_epochs:
                cfg.epochs = config.cgan_epochs
            cgan = gan.train_cgan(train_set, cfg, device=str(dev), quiet=quiet, state_dir=state.path("cgan_training"))
            return gan.sample(cgan, config.cgan_samples, seed=config.seed)

        samples = timed("augment_cgan", lambda: state.dataset("augment_cgan", cgan_set))
        order = torch.argsort(samples.labels, stable=True)[:: max(1, len(samples) // 100)][:100]
        _save_grid(out / "cgan_samples.png", samples.images[order], nrow=10)
        extra.append(samples)
        counts["cgan"] = len(samples)
    if "pgd" in config.augment:
        counts["pgd"] = len(train_set) * config.retrain.epochs  # one PGD example per training image per epoch
    return extra, counts


def _save_grid(path: Path, images: torch.Tensor, nrow: int) -> None:
    """A PNG picture grid, written via a temporary file so a kill never leaves half a picture."""
    from torchvision.utils import save_image

    tmp = path.with_name(f".{path.name}.tmp.png")
    save_image(images, tmp, nrow=nrow, padding=2, pad_value=0.5)
    tmp.replace(path)
