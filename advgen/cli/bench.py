"""`advgen bench onepixel`: time the exact one-pixel attack against torchattacks' OnePixel."""

from __future__ import annotations

from pathlib import Path

import click

from .. import data as datasets
from ..bench import bench_onepixel, correctly_classified, summary, table
from ..files import atomic_write_json
from ..run import start
from ..target import load_target
from .options import common, data_option, model_options, overwrite_option, refuse_clobber


@click.group()
def bench() -> None:
    """Benchmarks: how fast and how strong the attacks are on one model and one set of images."""


@bench.command("onepixel")
@data_option
@model_options
@click.option("--limit", type=click.IntRange(1, None), default=20, show_default=True,
              help="Images for the pruned exact attack and DE with defaults.")
@click.option("--dense-limit", type=click.IntRange(0, None), default=2, show_default=True,
              help="Images for the dense (no bounds) exact attack; 0 skips it.")
@click.option("--first/--no-first", default=True, show_default=True,
              help="Also time the exact attack stopping at each image's first flip (what DE looks for).")
@click.option("--slow-limit", type=click.IntRange(0, None), default=3, show_default=True,
              help="Images for DE with steps=100 popsize=100 (slow); 0 skips it.")
@click.option("--joint-limit", type=click.IntRange(0, None), default=2, show_default=True,
              help="Colour data: images for the exact attack over whole colours (--joint-channels); 0 skips it.")
@click.option("--batch-size", type=click.IntRange(1, None), default=None, help="Candidates per forward pass.")
@click.option("--threads", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="CPU threads for every row (exact and DE alike); one is fastest on shared cores.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("runs/bench/onepixel.json"),
              show_default=True, help="Where to write the JSON results.")
@overwrite_option
@common
def bench_onepixel_cmd(data_source: str, arch: str | None, checkpoint: Path | None, limit: int, dense_limit: int,
                       first: bool, slow_limit: int, joint_limit: int, batch_size: int | None, threads: int,
                       out: Path, overwrite: bool, seed: int, device: str, quiet: bool) -> None:
    """Exact one-pixel attack (pruned, dense) vs torchattacks OnePixel: time per image, vulnerable found."""
    refuse_clobber(out, overwrite)
    with start(device, seed, quiet=quiet) as run:
        test_all = datasets.load(data_source, "test")
        ckpt = load_target(run, test_all, checkpoint, arch, data_source)
        test = correctly_classified(ckpt.model, test_all, limit)
        rows = bench_onepixel(ckpt.model, test.images, test.labels, levels=test.levels,
                              dense_limit=min(dense_limit, limit), slow_limit=min(slow_limit, limit),
                              joint_limit=min(joint_limit, limit), device=run.device, batch_size=batch_size,
                              seed=seed, threads=threads, first=first)
    found = summary(rows, data=data_source, model=ckpt.arch, device=run.device, threads=threads, seed=seed)
    atomic_write_json(out, found)
    click.echo(table(rows))
    joint = [r for r in rows if r.de_outside_flips is not None]
    if joint:
        click.echo(f"joint channels: {joint[0].de_checked} grid-snapped DE flips checked, outside the exact flip "
                   f"set: {joint[0].de_outside_flips or 'none'}")
    ratio, ratio_first, missed = (found[k] for k in ("exact_to_de_ratio", "exact_first_to_de_ratio",
                                                     "de_vulnerable_missed_by_exact"))
    shown = "-" if ratio is None else f"{ratio:.2f}"
    shown_first = "" if ratio_first is None else f" (first flip: {ratio_first:.2f})"
    click.echo(f"device {run.device}, {threads} thread(s) per row; exact/DE time ratio {shown}{shown_first}; "
               f"DE-broken images the exact attack missed: {missed or 'none'}; wrote {out}")
