"""Generator checkpoints: weights plus the configuration and metrics needed to rebuild and trust them.

Files are written atomically and read with ``weights_only=True``: loading a generator never runs code,
and the network is rebuilt from the stored configuration by advgen itself.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path

from ..errors import InputError
from ..files import atomic_torch_save, safe_torch_load
from .advgan import AdvGAN, AdvGANConfig
from .cgan import CGAN, CGANConfig
from .nets import ConditionalGenerator, PerturbationGenerator

GENERATOR_FORMAT = "advgen.generator"
GENERATOR_VERSION = 1


def save_generator(path: str | Path, model: AdvGAN | CGAN) -> Path:
    """Write ``model``'s generator weights with its kind, configuration, image shape and metrics."""
    if not isinstance(model, (AdvGAN, CGAN)):
        raise InputError(f"save_generator writes an AdvGAN or a CGAN (what train_advgan and train_cgan return), "
                         f"got {type(model).__name__}")
    kind = "advgan" if isinstance(model, AdvGAN) else "cgan"
    return atomic_torch_save(path, {
        "format": GENERATOR_FORMAT, "version": GENERATOR_VERSION, "kind": kind,
        "config": asdict(model.config), "input_shape": list(model.input_shape),
        "num_classes": int(getattr(model, "num_classes", 0)), "metrics": model.metrics,
        "state_dict": {k: v.detach().cpu() for k, v in model.generator.state_dict().items()},
    })


def load_generator(path: str | Path, kind: str | None = None) -> AdvGAN | CGAN:
    """Read a file written by :func:`save_generator` (on the CPU); ``kind`` insists on "advgan" or "cgan"."""
    raw = safe_torch_load(path, what="generator checkpoint")
    if not isinstance(raw, dict) or raw.get("format") != GENERATOR_FORMAT:
        raise InputError(f"{path} is not an advgen generator checkpoint")
    if raw.get("version") != GENERATOR_VERSION:
        raise InputError(f"{path} has generator format version {raw.get('version')}; this advgen reads "
                         f"version {GENERATOR_VERSION}")
    found = raw.get("kind")
    if kind is not None and found != kind:
        raise InputError(f"{path} holds a {found} generator, not {kind}")
    try:
        shape = tuple(int(s) for s in raw["input_shape"])
        if found == "advgan":
            config = _config(AdvGANConfig, raw["config"])
            gen = PerturbationGenerator(shape, config.eps, config.g_width, config.g_blocks)
            gen.load_state_dict(raw["state_dict"])
            return AdvGAN(gen.eval(), config, shape, dict(raw.get("metrics") or {}))
        if found == "cgan":
            config = _config(CGANConfig, raw["config"])
            k = int(raw["num_classes"])
            gen = ConditionalGenerator(shape, k, config.z_dim, config.g_width)
            gen.load_state_dict(raw["state_dict"])
            return CGAN(gen.eval(), config, shape, k, dict(raw.get("metrics") or {}))
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"generator checkpoint {path} does not match its configuration: "
                         f"{str(exc).splitlines()[0][:200]}") from exc
    raise InputError(f"{path} holds an unknown generator kind {found!r}")


def _config(cls, values: dict):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"generator checkpoint has unknown settings {', '.join(unknown)}")
    return cls(**values).validate()
