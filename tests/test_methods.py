"""advgen.run_method: any registered attack in memory, one typed record per image, the same as run_attack's."""

from __future__ import annotations

import pytest
import torch

import advgen
from advgen.errors import InputError
from advgen.files import read_jsonl
from run_compare import random_streams


def test_in_memory_records_equal_the_ones_run_attack_writes(trained_cnn, mnist_test, tmp_path):
    data = mnist_test.head(12)
    records = advgen.run_method("pgd", trained_cnn.model, data.images, data.labels,
                                options=advgen.AttackOptions(params={"steps": 3}))
    advgen.run_attack(trained_cnn.model, data, None, tmp_path, method="pgd",
                      options=advgen.AttackOptions(params={"steps": 3}))
    written = read_jsonl(tmp_path / "records.jsonl")
    assert [r.status.value for r in records] == [w["status"] for w in written]
    assert [r.adv_pred for r in records] == [w["adv_pred"] for w in written]
    for r in records:
        assert (r.adversarial is not None) == r.success
        if r.success:
            assert float((r.adversarial - data.images[r.index]).abs().max()) <= 0.3 + 1e-6


def test_bad_images_and_labels_are_named(trained_cnn, mnist_test):
    x, y = mnist_test.images[:2], mnist_test.labels[:2]
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        advgen.run_method("fgsm", trained_cnn.model, x * 255, y)
    with pytest.raises(InputError, match="labels must lie in 0..9"):
        advgen.run_method("fgsm", trained_cnn.model, x, torch.tensor([3, 12]))
    with pytest.raises(InputError, match="do not fit the model"):
        advgen.run_method("fgsm", trained_cnn.model, torch.rand(2, 1, 32, 32), y)


@pytest.mark.parametrize("method, params, needle", [
    ("pgd", {"foo": 1}, "takes no parameter 'foo'; it takes alpha, eps, random_start, steps"),
    ("pgd", {"steps": 2.5}, "steps must be int, got 2.5"),
    ("pgd", {"random_start": 1}, "random_start must be bool"),
    ("pgd", {"steps": True}, "steps must be int"),
    ("onepixel", {"stats": 3}, "stats must be dict or none"),
    ("autoattack", {"version": 3}, "version must be str or none"),
])
def test_parameters_are_checked_by_name_and_type_before_any_work(trained_cnn, mnist_test, method, params, needle):
    data = mnist_test.head(2)
    with pytest.raises(InputError, match=needle):
        advgen.run_method(method, trained_cnn.model, data.images, data.labels,
                          options=advgen.AttackOptions(params=params))


def test_parameters_of_the_right_type_pass_and_take_effect(trained_cnn, mnist_test):
    """An int where a float is taken (eps=0 is no attack at all); a float for CW's c, whose torchattacks default
    is the int 1."""
    data = mnist_test.head(16)
    none = advgen.run_method("pgd", trained_cnn.model, data.images, data.labels,
                             options=advgen.AttackOptions(params={"eps": 0, "steps": 2}))
    assert not any(r.success for r in none)
    some = advgen.run_method("pgd", trained_cnn.model, data.images, data.labels,
                             options=advgen.AttackOptions(params={"eps": 0.3, "steps": 2}))
    assert any(r.success for r in some)
    advgen.methods.check_params("cw", {"c": 0.5, "steps": 5})
    advgen.methods.check_params("onepixel", {"time_limit": 3, "threads": None})


@pytest.mark.parametrize("method", ["pgd", "onepixel-de"])
def test_an_attack_in_memory_leaves_the_callers_random_streams_and_repeats(trained_cnn, mnist_test, method):
    """Adversarial training with run_method as its attack must not have its shuffling reset at every call."""
    import random

    import numpy as np

    x, y = mnist_test.images[:8], mnist_test.labels[:8]
    opts = advgen.AttackOptions(seed=3, params={"steps": 2} if method == "onepixel-de" else {"steps": 3})
    random.seed(11), np.random.seed(11), torch.manual_seed(11)
    before = random_streams()
    first = advgen.run_method(method, trained_cnn.model, x, y, options=opts)
    assert random_streams() == before
    again = advgen.run_method(method, trained_cnn.model, x, y, options=opts)
    assert [(r.status, r.adv_pred) for r in first] == [(r.status, r.adv_pred) for r in again]
    assert all(torch.equal(a.adversarial, b.adversarial) for a, b in zip(first, again) if a.adversarial is not None)


def test_an_autoattack_part_leaves_the_callers_random_streams(trained_cnn, mnist_test):
    from advgen.autoattack import AutoAttackConfig

    torch.manual_seed(5)
    before = random_streams()
    config = AutoAttackConfig("cpu", steps=2, queries=20)
    flags = config.robust("square", trained_cnn.model, mnist_test.head(8), torch.device("cpu"))
    assert random_streams() == before
    assert flags == config.robust("square", trained_cnn.model, mnist_test.head(8), torch.device("cpu"))
