"""advgen.run_method: any registered attack in memory, one typed record per image, the same as run_attack's."""

from __future__ import annotations

import pytest
import torch

import advgen
from advgen.errors import InputError
from advgen.files import read_jsonl


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
