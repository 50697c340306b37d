"""GANs that make data: AdvGAN adversarial examples against a target, and a conditional GAN for augmentation.

* :mod:`.advgan` -- ``train_advgan``, ``AdvGAN.perturb``, ``attack_success_rate``, ``adversarial_dataset``;
* :mod:`.cgan` -- ``train_cgan``, ``sample``, ``gan_test``, ``gan_train``;
* :mod:`.io` -- ``save_generator`` / ``load_generator`` (weights_only, configuration stored alongside);
* :mod:`.nets` -- the small networks; :mod:`.state` -- resumable per-epoch training state.
"""

from .advgan import AdvGAN, AdvGANConfig, adversarial_dataset, attack_success_rate, outcomes, train_advgan
from .cgan import CGAN, CGANConfig, gan_test, gan_train, sample, train_cgan
from .io import load_generator, save_generator

__all__ = [
    "AdvGAN", "AdvGANConfig", "adversarial_dataset", "attack_success_rate", "outcomes", "train_advgan",
    "CGAN", "CGANConfig", "gan_test", "gan_train", "sample", "train_cgan",
    "load_generator", "save_generator",
]
