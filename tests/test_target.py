"""advgen.target.load_target: the one place a command gets its classifier, and the rules it keeps."""

from __future__ import annotations

import textwrap

import pytest
import torch

from advgen import data as datasets
from advgen import target as target_mod
from advgen.errors import InputError
from advgen.models import save_checkpoint
from advgen.run import local
from advgen.target import load_target


@pytest.fixture
def ckpt_file(tmp_path, trained_cnn):
    path = tmp_path / "cnn.pt"
    save_checkpoint(path, trained_cnn)
    return path


def test_a_checkpoint_is_loaded_in_eval_mode_and_another_builtin_model_is_refused(ckpt_file, trained_cnn, mnist_test):
    got = load_target(local("cpu"), mnist_test, ckpt_file)
    assert got.arch == "cnn" and not got.model.training
    x = mnist_test.images[:4]
    with torch.no_grad():
        assert torch.equal(got.model(x), trained_cnn.model.eval()(x))
    assert load_target(local("cpu"), mnist_test, ckpt_file, "cnn").arch == "cnn"  # naming its own model is fine
    with pytest.raises(InputError, match="holds a cnn; leave --model out"):
        load_target(local("cpu"), mnist_test, ckpt_file, "mlp")


def test_images_of_another_shape_are_refused(ckpt_file):
    rgb = datasets.Dataset(torch.zeros(2, 3, 28, 28), torch.zeros(2, dtype=torch.long), "rgb")
    with pytest.raises(InputError, match=r"expects images of shape \(1, 28, 28\), but rgb has \(3, 28, 28\)"):
        load_target(local("cpu"), rgb, ckpt_file)


def test_a_model_trained_here_is_cached_and_read_back_instead_of_trained_again(tmp_path, mnist_train, mnist_test,
                                                                              monkeypatch):
    small = mnist_train.head(64)
    cache = tmp_path / "model.pt"
    first = load_target(local("cpu"), mnist_test, arch="mlp", cache=cache, train=small)
    assert cache.is_file() and first.arch == "mlp"

    def no_training(*args, **kwargs):
        raise AssertionError("the cached model should have been read, not trained again")

    monkeypatch.setattr(target_mod, "train_classifier", no_training)
    again = load_target(local("cpu"), mnist_test, arch="mlp", cache=cache, train=small)
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)


def test_a_user_factory_runs_only_when_named(tmp_path, monkeypatch, mnist_train, mnist_test):
    (tmp_path / "usertarget.py").write_text(textwrap.dedent("""
        import torch
        def tiny():
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    cache = tmp_path / "model.pt"
    made = load_target(local("cpu"), mnist_test, arch="usertarget:tiny", cache=cache, train=mnist_train.head(64))
    assert made.arch == "usertarget:tiny"
    with pytest.raises(InputError, match="pass --model usertarget:tiny"):
        load_target(local("cpu"), mnist_test, cache)  # the file alone never decides what code runs
    assert load_target(local("cpu"), mnist_test, cache, "usertarget:tiny").arch == "usertarget:tiny"


class _Noisy(torch.nn.Module):
    """Randomness in forward: input noise, even in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(784, 10)

    def forward(self, x):
        return self.fc((x + 0.01 * torch.randn_like(x)).flatten(1))


def test_preflight_refuses_a_random_model_only_to_the_exact_search_and_warns_the_rest(trained_cnn, mnist_test,
                                                                                     caplog):
    x = mnist_test.images[:8]
    with pytest.raises(InputError, match=r"exact one-pixel search needs .* \(measure the rest\)"):
        target_mod.preflight(_Noisy(), x, "pgd", exact="measure the rest")
    with caplog.at_level("WARNING", logger="advgen"):
        target_mod.preflight(_Noisy(), x, "pgd")
        assert "pgd sees one draw per step" in caplog.text and "probabilities" not in caplog.text
        caplog.clear()
        target_mod.preflight(torch.nn.Sequential(trained_cnn.model, torch.nn.Softmax(dim=1)), x, "pgd", exact="-")
        assert "returns probabilities" in caplog.text and "draw" not in caplog.text
        caplog.clear()
        target_mod.preflight(trained_cnn.model, x, "pgd", exact="-")
        assert caplog.text == ""
