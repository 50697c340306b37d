"""advgen: exact one-pixel robustness, GAN-made adversarial and augmentation data, before/after reports.

The command line is a thin layer over this API::

    import advgen
    train, test = advgen.data.load("mnist-sample", "train"), advgen.data.load("mnist-sample", "test")
    ckpt = advgen.train_classifier(train, test)
    summary = advgen.run_attack(ckpt.model, test, range(10), "runs/attack", method="onepixel")
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("advgen")  # one source of truth: pyproject.toml
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

from . import data, models  # noqa: E402
from .attack_run import run_attack  # noqa: E402
from .data import Dataset  # noqa: E402
from .errors import InputError  # noqa: E402
from .models import Checkpoint, build, load_checkpoint, save_checkpoint  # noqa: E402
from .train import TrainConfig, accuracy, fit, predict, train_classifier  # noqa: E402

__all__ = [
    "__version__", "data", "models", "Dataset", "InputError", "Checkpoint", "build", "load_checkpoint",
    "save_checkpoint", "TrainConfig", "accuracy", "fit", "predict", "train_classifier",
    "run_attack",
]
