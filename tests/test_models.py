import os
import textwrap

import pytest
import torch

from advgen import models
from advgen.errors import InputError
from advgen.models import Checkpoint, build, load_checkpoint, save_checkpoint


@pytest.mark.parametrize("arch", list(models.ARCHITECTURES))
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_builtin_architectures_are_sequential_and_fit_shapes(arch, shape):
    model = build(arch, shape, 10)
    assert isinstance(model, torch.nn.Sequential)
    assert model(torch.zeros(2, *shape)).shape == (2, 10)


def test_checkpoint_round_trip(tmp_path, trained_cnn):
    path = tmp_path / "m.pt"
    save_checkpoint(path, trained_cnn)
    back = load_checkpoint(path)
    assert back.arch == "cnn" and back.input_shape == (1, 28, 28) and back.num_classes == 10
    assert back.meta == trained_cnn.meta
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(back.model(x), trained_cnn.model.eval()(x))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_code_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": models.CHECKPOINT_FORMAT, "arch": "cnn", "state_dict": _Payload(marker)}, path)
    with pytest.raises(InputError):
        load_checkpoint(path)
    assert not marker.exists()


def test_checkpoint_naming_user_factory_needs_explicit_consent(tmp_path, monkeypatch):
    pkg = tmp_path / "usermodels.py"
    pkg.write_text(textwrap.dedent("""
        import torch
        def tiny():
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build("usermodels:tiny")
    path = tmp_path / "u.pt"
    save_checkpoint(path, Checkpoint(model, "usermodels:tiny", (1, 28, 28), 10))
    with pytest.raises(InputError, match="--model usermodels:tiny"):
        load_checkpoint(path)
    assert load_checkpoint(path, factory="usermodels:tiny").arch == "usermodels:tiny"
    bare = tmp_path / "bare.pt"
    torch.save(model.state_dict(), bare)
    assert isinstance(load_checkpoint(bare, factory="usermodels:tiny").model, torch.nn.Sequential)


def test_bad_names_and_mismatched_weights(tmp_path, trained_cnn):
    with pytest.raises(InputError, match="unknown model"):
        build("resnet9000")
    with pytest.raises(InputError, match="cannot import"):
        build("no_such_pkg.mod:factory")
    path = tmp_path / "m.pt"
    save_checkpoint(path, trained_cnn)
    raw = torch.load(path, weights_only=True)
    raw["arch"] = "mlp"
    torch.save(raw, path)
    with pytest.raises(InputError, match=r"does not match model 'mlp': (Missing|Unexpected) key\(s\) in state_dict: \""):
        load_checkpoint(path)  # torch's first line alone ("Error(s) in loading state_dict for ...") says nothing


def test_truncated_checkpoint(tmp_path, trained_cnn):
    path = tmp_path / "m.pt"
    save_checkpoint(path, trained_cnn)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(InputError, match="corrupted"):
        load_checkpoint(path)


def test_a_checkpoint_edited_by_hand_is_named_damaged(tmp_path, trained_cnn):
    path = save_checkpoint(tmp_path / "m.pt", trained_cnn)
    raw = torch.load(path, weights_only=True)
    for key, value in (("state_dict", None), ("input_shape", "abc")):
        edited = dict(raw)
        if value is None:
            del edited[key]
        else:
            edited[key] = value
        torch.save(edited, tmp_path / "edited.pt")
        with pytest.raises(InputError, match="is damaged"):
            load_checkpoint(tmp_path / "edited.pt")


def test_model_names_beside_a_checkpoint_are_checked(tmp_path, trained_cnn, capsys):
    """A checkpoint decides its own model; a --model beside it must be known, and agree with it."""
    from advgen.cli import main

    path = str(save_checkpoint(tmp_path / "m.pt", trained_cnn))
    for model, needle in (("cnnn", "unknown model 'cnnn'"), ("mlp", "holds a cnn")):
        code = main(["attack", "--checkpoint", path, "--model", model, "--limit", "2", "--out",
                     str(tmp_path / model), "--device", "cpu", "--quiet"])
        assert code == 2 and needle in capsys.readouterr().err
    assert main(["attack", "--checkpoint", path, "--model", "cnn", "--limit", "2", "--out", str(tmp_path / "ok"),
                 "--device", "cpu", "--quiet"]) == 0
    assert main(["evaluate", "--checkpoint", path, "--model", "mlp", "--out", str(tmp_path / "ev"), "--quiet"]) == 2
    assert "holds a cnn" in capsys.readouterr().err


def test_train_refuses_an_unwritable_out_before_training(tmp_path, capsys):
    from advgen.cli import main

    (tmp_path / "afile").write_text("x")
    assert main(["train", "--epochs", "1", "--out", str(tmp_path / "afile" / "m.pt"), "--quiet"]) == 2
    assert "not writable" in capsys.readouterr().err
    assert main(["train", "--epochs", "1", "--out", str(tmp_path), "--quiet"]) == 2


def test_a_model_that_writes_into_its_input_is_refused_and_the_images_are_left_alone():
    from torch import nn

    from advgen.models import output_classes

    class Normalises(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(16, 3)

        def forward(self, x):
            return self.fc(x.sub_(0.5).div_(0.25).flatten(1))

    images = torch.rand(4, 1, 4, 4)
    kept = images.clone()
    with pytest.raises(InputError, match="writes into its input"):
        output_classes(Normalises(), images, torch.zeros(4, dtype=torch.long))
    assert torch.equal(images, kept)


class _DropoutBug(torch.nn.Module):
    """``F.dropout(x, p)`` defaults to ``training=True``: random in eval mode, the classic bug."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(torch.nn.functional.dropout(x.flatten(1), 0.5))


class _InputNoise(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(784, 10)

    def forward(self, x):
        return self.fc((x + 0.01 * torch.randn_like(x)).flatten(1))


def test_random_in_eval_finds_randomised_models_and_leaves_the_random_stream_alone(trained_cnn, mnist_test):
    x = mnist_test.images[:8]
    with_dropout = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(784, 10)).train()
    assert not models.random_in_eval(trained_cnn.model, x)
    assert not models.random_in_eval(with_dropout, x) and with_dropout.training  # eval mode for the check only
    dropout_bug, input_noise = _DropoutBug(), _InputNoise()
    state = torch.get_rng_state()
    assert models.random_in_eval(dropout_bug, x) and models.random_in_eval(input_noise, x)
    assert torch.equal(torch.get_rng_state(), state)


def test_outputs_probabilities_tells_softmax_rows_from_logits(trained_cnn, mnist_test):
    x = mnist_test.images[:8]
    softmax = torch.nn.Sequential(trained_cnn.model, torch.nn.Softmax(dim=1))
    log_softmax = torch.nn.Sequential(trained_cnn.model, torch.nn.LogSoftmax(dim=1))  # cross-entropy is fine on these
    assert models.outputs_probabilities(softmax, x)
    assert not models.outputs_probabilities(trained_cnn.model, x) and not models.outputs_probabilities(log_softmax, x)
