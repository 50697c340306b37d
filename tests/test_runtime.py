"""The caller's state is left as it was: every submodule's mode, weights and buffers, and the random streams."""

from __future__ import annotations

import copy
import random

import numpy as np
import torch
from torch import nn

import advgen
from advgen import onepixel
from advgen.autoattack import AutoAttackConfig
from advgen.methods import AttackOptions
from advgen.runtime import evaluating, seeded
from run_compare import random_streams


def _fine_tuning_setup(trained_cnn) -> nn.Sequential:
    """The trained CNN with a batch norm after its first conv, the whole model in train mode but the
    batch norm frozen in eval mode: a common fine-tuning setup."""
    m = trained_cnn.model
    model = nn.Sequential(m[0], nn.BatchNorm2d(m[0].out_channels), *list(m)[1:])
    model.train()
    model[1].eval()
    return model


def _modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_evaluating_restores_every_submodules_mode():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(), nn.BatchNorm1d(2))
    model.train()
    model[2].eval()
    before = _modes(model)
    with evaluating(model) as m:
        assert not any(_modes(m))
    assert _modes(model) == before


def test_attacks_and_accuracy_leave_modes_weights_and_buffers_alone(trained_cnn, mnist_test, tmp_path):
    model = _fine_tuning_setup(trained_cnn)
    modes, state = _modes(model), _state(model)
    data = mnist_test.head(4)
    calls = {
        "onepixel.attack": lambda: onepixel.attack(model, data.images, data.labels, device="cpu"),
        "advgen.accuracy": lambda: advgen.accuracy(model, data),
        "AutoAttack part": lambda: AutoAttackConfig.named("cpu").robust("apgd-ce", model, data, torch.device("cpu")),
        # targeted: the target is checked against the model's classes before the attack puts it in eval mode
        "run_attack targeted": lambda: advgen.run_attack(model, data, range(4), tmp_path / f"t{len(list(tmp_path.iterdir()))}", method="fgsm",
                                                         target=3 if 3 not in data.labels.tolist() else 9),
    }
    for name, call in calls.items():
        call()
        assert _modes(model) == modes, name
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items()), name
    model.train()  # the batch norm too: a forward pass in train mode would move its running statistics
    for name, call in calls.items():
        call()
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items()), name


def test_run_attack_takes_the_seed_of_its_run(trained_cnn, mnist_test, tmp_path):
    """``run`` carries the seed: without ``options.seed`` the attack uses it, and records it."""
    summaries = {}
    for seed in (0, 5):
        with advgen.start("cpu", seed=seed) as run:
            summaries[seed] = advgen.run_attack(copy.deepcopy(trained_cnn.model), mnist_test, range(8),
                                                tmp_path / f"s{seed}", method="pgd",
                                                options=AttackOptions(params={"steps": 2}), run=run)
    assert summaries[0].seed == 0 and summaries[5].seed == 5
    adv = [torch.load(tmp_path / f"s{s}" / "adversarial.pt", weights_only=True) for s in (0, 5)]
    assert adv[0]["images"].shape == adv[1]["images"].shape
    assert not torch.equal(adv[0]["images"], adv[1]["images"])  # PGD's random start follows the seed


def test_a_seeded_block_repeats_its_draws_and_gives_the_callers_streams_back():
    torch.manual_seed(4), random.seed(4), np.random.seed(4)
    before = random_streams()
    draws = []
    for _ in range(2):
        with seeded(7) as gen:
            draws.append((torch.rand(2), random.random(), np.random.rand(), torch.rand(2, generator=gen)))
        assert random_streams() == before
    assert all(torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b for a, b in zip(*draws))
