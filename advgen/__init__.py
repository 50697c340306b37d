"""advgen: exact one-pixel robustness, GAN-made adversarial and augmentation data, before/after reports.

The command line is a thin layer over this API; each command is one function here::

    import advgen
    train, test = advgen.data.load("mnist-sample", "train"), advgen.data.load("mnist-sample", "test")
    ckpt = advgen.train_classifier(train, test)
    summary = advgen.run_attack(ckpt.model, test, range(10), "runs/attack", method="onepixel")
    records = advgen.run_method("pgd", ckpt.model, test.images[:64], test.labels[:64])  # in memory, no files
    result = advgen.augment("advgan", checkpoint=None, out="runs/augment")
    report = advgen.evaluate(advgen.EvaluateConfig(), out="reports")
    quick = advgen.EvaluateConfig(onepixel_images=100, retrain=advgen.HardenConfig(epochs=8))

Long calls take an optional ``run`` (:func:`advgen.run.start`): the device, rank, seed and output
directory of the whole command, built once.
"""

from ._version import __version__
from . import data, models  # noqa: E402
from .attack_run import run_attack  # noqa: E402
from .augment import AugmentResult, augment  # noqa: E402
from .data import Dataset  # noqa: E402
from .errors import InputError  # noqa: E402
from .harden import HardenConfig, harden  # noqa: E402
from .evaluate import evaluate  # noqa: E402
from .evaluate_config import Budget, EvaluateConfig  # noqa: E402
from .methods import AttackOptions, AttackRecord, Status, run_method  # noqa: E402
from .models import Checkpoint, build, load_checkpoint, save_checkpoint  # noqa: E402
from .outputs import AttackSummary  # noqa: E402
from .run import Run, start  # noqa: E402
from .target import load_target  # noqa: E402
from .train import TrainConfig, accuracy, fit, predict, train_classifier  # noqa: E402

__all__ = [
    "__version__", "data", "models", "Dataset", "InputError", "Checkpoint", "build", "load_checkpoint",
    "save_checkpoint", "TrainConfig", "accuracy", "fit", "predict", "train_classifier", "run_attack",
    "AttackSummary", "run_method", "AttackOptions", "AttackRecord", "Status", "augment", "AugmentResult",
    "evaluate", "EvaluateConfig", "Budget", "HardenConfig", "harden", "Run", "start", "load_target",
]
