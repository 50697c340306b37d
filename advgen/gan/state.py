"""Resumable GAN training: one atomic state per epoch holding nets, optimizers, epoch and RNG state
(:func:`advgen.resume.save_training`, the format every training loop of advgen keeps).

All randomness of a GAN training run (batch order, noise) is drawn from one private ``torch.Generator``
on the CPU, so saving its state next to the weights and the optimizer moments is enough for a resumed
run to continue bit for bit where the interrupted one stopped (on CPU; CUDA kernels may differ slightly).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..errors import InputError
from ..resume import load_training, save_training
from ..run import progress
from ..runtime import evaluating


def state_path(state_dir: str | Path, kind: str) -> Path:
    """Where the training state of a ``kind`` ("advgan" or "cgan") GAN lives inside ``state_dir``."""
    return Path(state_dir) / f"{kind}-state.pt"


def settings(config: Any) -> dict:
    """A GAN config as the settings its training state must match on resume (``epochs`` may grow)."""
    return {k: v for k, v in asdict(config).items() if k != "epochs"}


def save_state(path: Path, kind: str, depends: dict, epoch: int, modules: dict[str, nn.Module],
               optimizers: dict[str, torch.optim.Optimizer], gen: torch.Generator, history: list[dict]) -> None:
    """Write everything needed to continue after ``epoch`` completed epochs, atomically."""
    save_training(path, {**depends, "gan": kind}, epoch, {
        "modules": {k: {n: t.detach().cpu() for n, t in m.state_dict().items()} for k, m in modules.items()},
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "rng": gen.get_state(), "history": history,
    })


def load_state(path: Path, kind: str, depends: dict, epochs: int, modules: dict[str, nn.Module],
               optimizers: dict[str, torch.optim.Optimizer], gen: torch.Generator) -> tuple[int, list[dict]]:
    """Restore a state saved by :func:`save_state` in place; return (epochs done, per-epoch history).

    The saved fingerprint (settings but ``epochs``, input model and data, seed, version, the kind of GAN)
    must equal ``depends``: anything else would silently mix two different experiments, so it is refused.
    """
    done, parts = load_training(path, {**depends, "gan": kind})
    if not done:
        return 0, []
    if done > epochs:
        raise InputError(f"cannot resume from {path}: it already holds {done} epochs, more than the "
                         f"{epochs} asked for")
    for k, m in modules.items():
        m.load_state_dict(parts["modules"][k])
    for k, o in optimizers.items():
        o.load_state_dict(parts["optimizers"][k])
    gen.set_state(parts["rng"])
    return done, list(parts["history"])


def run_epochs(kind: str, G: nn.Module, D: nn.Module, config: dict, gen: torch.Generator,
               epoch: Callable[[torch.optim.Optimizer, torch.optim.Optimizer], dict],
               shown: Callable[[dict], dict], state_dir: str | Path | None, depends: dict) -> tuple[list[dict], float]:
    """Train G and D with Adam for ``config["epochs"]`` epochs, resuming from and saving to ``state_dir``.

    ``epoch(opt_g, opt_d)`` runs one pass and returns its statistics; ``shown(stats)`` picks what the
    progress bar displays; ``depends`` is the fingerprint a saved state must match to be resumed.
    Returns the per-epoch history (including resumed epochs) and the seconds this call spent; G is left
    in eval mode.
    """
    opt_g = torch.optim.Adam(G.parameters(), lr=config["lr_g"], betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=config["lr_d"], betas=(0.5, 0.999))
    modules, optimizers = {"G": G, "D": D}, {"G": opt_g, "D": opt_d}
    path = state_path(state_dir, kind) if state_dir is not None else None
    total = int(config["epochs"])
    done, history = 0, []
    if path is not None and path.exists():
        done, history = load_state(path, kind, depends, total, modules, optimizers, gen)
    start = time.perf_counter()
    bar = progress(range(done, total), desc=kind, total=total - done, unit="epoch")
    for n in bar:
        stats = epoch(opt_g, opt_d)
        stats["epoch"] = n + 1
        history.append(stats)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(**shown(stats))
        if path is not None:
            save_state(path, kind, depends, n + 1, modules, optimizers, gen, history)
    G.eval()
    return history, time.perf_counter() - start


@contextlib.contextmanager
def frozen(model: nn.Module, device: torch.device | None = None) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with no parameter gradients (on ``device``) for the block, then restore all.

    Eval mode matters for targets with dropout or batch norm (a common AdvGAN bug is to attack the
    train-mode network); switching gradients off saves the backward pass into the target's weights.
    """
    flags = [p.requires_grad for p in model.parameters()]
    with evaluating(model, device):
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            yield model
        finally:
            for p, flag in zip(model.parameters(), flags):
                p.requires_grad_(flag)
