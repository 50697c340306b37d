"""`advgen evaluate`: before/after robustness with retraining, written as reports CI can gate on."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from ..ablation import ablate
from ..distributed import env_rank
from ..errors import InputError
from ..evaluate import evaluate as run_evaluate
from ..evaluate_config import AUGMENTATIONS, DEFAULT_AUGMENT, RETRAINING_FIELDS, Budget, EvaluateConfig
from ..harden import HardenConfig
from ..models import load_checkpoint, user_factory
from ..target import refuse_other_model
from ..report import format_gate
from ..report.markdown import md_table
from ..report.tables import headline, metrics_table
from .options import common, data_option, fail_under_option, model_options, overwrite_option


@click.command()
@click.option("--budget", type=click.Choice([b.value for b in Budget]), default=Budget.DEFAULT.value,
              show_default=True,
              help="The recipe: default (10 minutes on 2 CPU cores, aimed at the one-pixel threat) or robust "
                   "(L-inf robust accuracy: cnn-wide retrained 40 epochs on PGD-10 and conditional-GAN digits; "
                   "about 30 minutes on 2 CPU cores). Options given explicitly override the recipe's values.")
@data_option
@model_options
@click.option("--onepixel-images", type=click.IntRange(0), default=EvaluateConfig.onepixel_images, show_default=True,
              help="Test images given the exact one-pixel enumeration (0: skip).")
@click.option("--onepixel-time-limit", type=click.FloatRange(0, None, min_open=True), default=None,
              metavar="SECONDS",
              help="Give up the exact search of an image after SECONDS (for models too slow to search to the end); "
                   "an image left undecided is reported as a timeout, nothing proved. [default: no limit]")
@click.option("--pgd-images", type=click.IntRange(0), default=EvaluateConfig.pgd_images, show_default=True,
              help="Test images attacked with PGD (0: skip).")
@click.option("--pgd-eps", type=click.FloatRange(0, 1, min_open=True), default=EvaluateConfig.pgd_eps,
              show_default=True, help="L-inf radius of PGD and AdvGAN, and of the PGD retraining.")
@click.option("--pgd-steps", type=click.IntRange(1), default=EvaluateConfig.pgd_steps, show_default=True,
              help="Steps of the PGD attack that measures robust accuracy (step size 0.01, one random start).")
@click.option("--autoattack-images", type=click.IntRange(0), default=EvaluateConfig.autoattack_images,
              show_default=True, help="Test images attacked with AutoAttack (0: skip).")
@click.option("--autoattack-version", type=click.Choice(["standard", "cpu"]), default=None,
              help="AutoAttack's parts: standard, or the cpu subset [default: standard on CUDA, cpu elsewhere].")
@click.option("--advgan-images", type=click.IntRange(0), default=EvaluateConfig.advgan_images, show_default=True,
              help="Test images scored against a freshly trained AdvGAN (0: skip AdvGAN).")
@click.option("--augment", default=",".join(DEFAULT_AUGMENT), show_default=True,
              help="Comma-separated sources of retraining data: " + ", ".join(AUGMENTATIONS) + ".")
@click.option("--onepixel-train-images", type=click.IntRange(0), default=EvaluateConfig.onepixel_train_images,
              show_default=True, help="Training images the exact attack mines for one-pixel flips.")
@click.option("--advgan-samples", type=click.IntRange(0), default=EvaluateConfig.advgan_samples, show_default=True,
              help="AdvGAN examples (of the first training images) added to the retraining data.")
@click.option("--cgan-samples", type=click.IntRange(0), default=EvaluateConfig.cgan_samples, show_default=True,
              help="Conditional-GAN samples added to the retraining data.")
@click.option("--train-images", type=click.IntRange(1), default=None,
              help="Use only the first N training images (for every training step) [default: all].")
@click.option("--advgan-epochs", type=click.IntRange(1), default=None, help="AdvGAN epochs [default: the GAN's].")
@click.option("--cgan-epochs", type=click.IntRange(1), default=None, help="Conditional-GAN epochs [default: the GAN's].")
@click.option("--retrain-epochs", type=click.IntRange(1), default=HardenConfig.epochs, show_default=True,
              help="Epochs of retraining (the certified term's weight ramps up over the first 4).")
@click.option("--certified-weight", type=click.FloatRange(0), default=HardenConfig.certified_weight,
              show_default=True,
              help="Weight of the certified one-pixel bound in the retraining loss (needs 'certified' in "
                   "--augment).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("reports"),
              show_default=True, help="Report directory (state for --resume goes to OUT/state).")
@fail_under_option
@click.option("--resume", is_flag=True, help="Continue a killed run in OUT from its saved state.")
@click.option("--measure-only", is_flag=True,
              help="Only measure the target (--checkpoint, or the default model trained here): no generated data, "
                   "no retraining; the report has the BEFORE stage, which --fail-under then gates. For a CI check "
                   "of a model as it is.")
@click.option("--ablation", is_flag=True,
              help="Instead: retrain once per subset of the --augment sources (all five unless given): clean only, "
                   "each alone, all but each, all; attack each afresh; write OUT/ablation.{json,md,html,png}.")
@overwrite_option
@common
def evaluate(budget: str, data_source: str, arch: str | None, checkpoint: Path | None, onepixel_images: int,
             onepixel_time_limit: float | None, pgd_images: int, pgd_eps: float, pgd_steps: int,
             autoattack_images: int, autoattack_version: str | None, advgan_images: int, augment: str,
             onepixel_train_images: int, advgan_samples: int, cgan_samples: int, train_images: int | None,
             advgan_epochs: int | None, cgan_epochs: int | None, retrain_epochs: int, certified_weight: float,
             out: Path, fail_under: tuple[str, ...], resume: bool, measure_only: bool, ablation: bool,
             overwrite: bool, seed: int, device: str, quiet: bool) -> int:
    """Measure the target, retrain it on generated data, re-attack it from scratch, and report.

    Exit code 0 when every --fail-under gate passes, 1 when one fails, 2 on bad input.
    """
    ctx = click.get_current_context()
    given = {name for name in ctx.params if ctx.get_parameter_source(name) != ParameterSource.DEFAULT}
    fields = {"data": data_source, "arch": arch, "onepixel_images": onepixel_images,
              "onepixel_time_limit": onepixel_time_limit, "pgd_images": pgd_images,
              "pgd_eps": pgd_eps, "pgd_steps": pgd_steps, "autoattack_images": autoattack_images,
              "autoattack_version": autoattack_version, "advgan_images": advgan_images,
              "augment": tuple(a.strip() for a in augment.split(",") if a.strip()),
              "onepixel_train_images": onepixel_train_images, "advgan_samples": advgan_samples,
              "cgan_samples": cgan_samples, "train_images": train_images, "advgan_epochs": advgan_epochs,
              "cgan_epochs": cgan_epochs}
    retrain = {"epochs": retrain_epochs, "certified_weight": certified_weight}
    option = {"data": "data_source", "epochs": "retrain_epochs"}  # where an option's name is not its field's
    if measure_only:
        retraining = {f for f in RETRAINING_FIELDS if f != "retrain"} | {option.get(k, k) for k in retrain}
        unused = sorted(given & (retraining | {"ablation", "budget"}))
        if unused:
            raise InputError(f"--measure-only does not retrain, so --{unused[0].replace('_', '-')} has nothing to "
                             f"do; drop one of them")
    if checkpoint is not None and "arch" in given:  # the API cannot tell a given --model from the default
        refuse_other_model(checkpoint, arch, load_checkpoint(checkpoint, factory=user_factory(arch)).arch)
    config = EvaluateConfig.for_budget(
        budget, retrain={"pgd_eps": pgd_eps, **{k: v for k, v in retrain.items() if option.get(k, k) in given}},
        seed=seed, measure_only=measure_only, **{k: v for k, v in fields.items() if option.get(k, k) in given})
    if ablation:
        used = config.augment if "augment" in given else AUGMENTATIONS
        return _ablation(config, used, out, checkpoint, fail_under, resume, overwrite, device, quiet)
    report = run_evaluate(config, out, checkpoint=checkpoint, fail_under=list(fail_under), resume=resume,
                          overwrite=overwrite, device=device, quiet=quiet)
    if env_rank() != 0:  # under torchrun rank 0 speaks for the group
        return 0 if report.passed else 1
    click.echo(" ".join(headline(report)))
    click.echo(md_table(metrics_table(report)))
    for gate in report.gates:
        click.echo(format_gate(gate))
    for warning in report.warnings():
        click.echo(f"WARNING: {warning}")
    click.echo(f"reports written to {out}/ (report.json, report.md, report.html, junit.xml)")
    return 0 if report.passed else 1


def _ablation(config: EvaluateConfig, used: tuple[str, ...], out: Path, checkpoint: Path | None, fail_under: tuple,
              resume: bool, overwrite: bool, device: str, quiet: bool) -> int:
    if fail_under:
        raise InputError("--fail-under gates an evaluation, not an ablation; drop one of them")
    result = ablate(config, out, checkpoint, used=used, resume=resume, overwrite=overwrite, device=device, quiet=quiet)
    if env_rank() == 0:
        click.echo(md_table(result.table()))
        click.echo(md_table(result.changes_table()))
        click.echo(f"ablation written to {out}/ (ablation.json, ablation.md, ablation.html, ablation.png)")
    return 0
