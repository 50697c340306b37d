"""The bad-input matrix: every command answers bad names, shapes, ranges, files and options with one
line on stderr and exit code 2, never a traceback, and before doing any real work."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from advgen.cli import main
from advgen.models import save_checkpoint


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def files(tmp_path_factory, trained_mlp):
    d = tmp_path_factory.mktemp("bad")
    good = d / "model.pt"
    save_checkpoint(good, trained_mlp)
    truncated = d / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:2000])
    garbage = d / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    evil = d / "evil.pt"
    torch.save({"format": "advgen.checkpoint", "state_dict": _Payload(d / "pwned")}, evil)
    legacy_evil = d / "legacy_evil.pt"
    legacy_evil.write_bytes(pickle.dumps(_Payload(d / "pwned")))
    rgb = d / "rgb.npz"
    np.savez(rgb, images=np.zeros((8, 32, 32, 3), np.uint8), labels=np.zeros(8, np.int64))
    out_of_range = d / "range.pt"
    torch.save({"images": torch.full((4, 1, 28, 28), 2.0), "labels": torch.zeros(4, dtype=torch.long)}, out_of_range)
    nan = d / "nan.pt"
    torch.save({"images": torch.full((4, 1, 28, 28), float("nan")), "labels": torch.zeros(4, dtype=torch.long)}, nan)
    empty = d / "empty.npz"
    np.savez(empty, images=np.zeros((0, 28, 28), np.uint8), labels=np.zeros(0, np.int64))
    truncated_npz = d / "truncated.npz"
    np.savez(truncated_npz, images=np.zeros((4, 28, 28), np.uint8), labels=np.zeros(4, np.int64))
    truncated_npz.write_bytes(truncated_npz.read_bytes()[:100])
    blocker = d / "a_file"
    blocker.write_text("not a directory")
    return {"good": good, "truncated": truncated, "garbage": garbage, "evil": evil, "legacy_evil": legacy_evil,
            "rgb": rgb, "range": out_of_range, "nan": nan, "empty": empty, "truncated_npz": truncated_npz,
            "blocker": blocker, "dir": d}


COMMANDS = {
    "attack": ["attack", "--limit", "2"],
    "augment": ["augment", "--gan", "advgan", "--epochs", "1"],
    "evaluate": ["evaluate", "--onepixel-images", "1", "--pgd-images", "4", "--advgan-images", "4"],
}

CASES = [
    ("unknown dataset", ["--data", "imagenet-9000"], "unknown dataset"),
    ("unknown model", ["--model", "resnet9000"], "model"),
    ("wrong shape", ["--data", "{rgb}"], "shape"),
    ("out of range", ["--data", "{range}"], "[0, 1]"),
    ("nan", ["--data", "{nan}"], "NaN"),
    ("empty", ["--data", "{empty}"], "empty"),
    ("truncated data", ["--data", "{truncated_npz}"], ".npz"),
    ("truncated checkpoint", ["--checkpoint", "{truncated}"], "corrupted"),
    ("garbage checkpoint", ["--checkpoint", "{garbage}"], "checkpoint"),
    ("code payload", ["--checkpoint", "{evil}"], "weights_only"),
    ("legacy code payload", ["--checkpoint", "{legacy_evil}"], "weights_only"),
    ("missing checkpoint", ["--checkpoint", "{dir}/nope.pt"], "not found"),
    ("unwritable out", ["--out", "{blocker}/sub"], "writable"),
    ("bad device", ["--device", "tpu"], "--device"),
    ("negative seed", ["--seed", "-1"], "--seed"),
]


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("name, extra, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_matrix(files, tmp_path, capsys, command, name, extra, needle):
    args = list(COMMANDS[command])
    extra = [e.format(**files) for e in extra]
    if "--checkpoint" not in extra and "--model" not in extra:
        args += ["--checkpoint", str(files["good"])]
    if "--out" not in extra:
        args += ["--out", str(tmp_path / "out")]
    code = main(args + extra + ["--quiet", "--device", "cpu"] * ("--device" not in extra))
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert needle.lower() in lines[0].lower(), lines[0]
    assert not (files["dir"] / "pwned").exists()
    assert not (tmp_path / "out").exists()  # refused input leaves nothing that would block the corrected retry


@pytest.mark.parametrize("args, needle", [
    (["attack", "--method", "nope"], "nope"),
    (["attack", "--target", "11"], "--target"),
    (["attack", "--limit", "0"], "--limit"),
    (["augment", "--gan", "stylegan"], "--gan"),
    (["augment", "--gan", "advgan", "--eps", "1.5"], "eps"),
    (["evaluate", "--augment", "onepixel,mixup"], "mixup"),
    (["evaluate", "--pgd-eps", "0"], "--pgd-eps"),
    (["evaluate", "--fail-under", "clean=1.5"], "clean"),
    (["evaluate", "--fail-under", "speed=0.5"], "speed"),
    (["evaluate", "--resume", "--overwrite"], "contradict"),
    (["evaluate", "--measure-only", "--augment", "pgd"], "--measure-only does not retrain"),
    (["evaluate", "--measure-only", "--ablation"], "--measure-only does not retrain"),
    (["report", "compare", "{good}", "{good}"], "report"),
])
def test_bad_options(files, tmp_path, capsys, args, needle):
    args = [a.format(**files) for a in args]
    if args[0] != "report":
        args += ["--checkpoint", str(files["good"]), "--out", str(tmp_path / "o"), "--quiet", "--device", "cpu"]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert needle.lower() in err.lower(), err


FACTORIES = '''
import torch
from torch import nn

def needs_width(width):
    return nn.Linear(784, 10)

def raises():
    raise RuntimeError("boom in user code")

not_callable = 3

def colour():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))

def seven_classes():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 7))
'''


@pytest.mark.parametrize("factory, needle", [
    ("needs_width", "missing 1 required positional argument"),
    ("raises", "boom in user code"),
    ("not_callable", "not a function or class"),
    ("colour", "do not fit the model"),
    ("seven_classes", "0..6"),
], ids=["needs_width", "raises", "not_callable", "colour", "seven_classes"])
@pytest.mark.parametrize("command", ["train", *COMMANDS])
def test_user_factories_that_cannot_train_are_named(tmp_path, capsys, monkeypatch, command, factory, needle):
    """The first model a user writes: a factory that needs arguments, raises, is not callable, or does not fit
    the data gets one line naming it (exit 2) before any training, never an internal error."""
    (tmp_path / "badfactories.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    args = ["train", "--epochs", "1"] if command == "train" else list(COMMANDS[command])
    out = tmp_path / ("model.pt" if command == "train" else "out")
    code = main(args + ["--model", f"badfactories:{factory}", "--out", str(out), "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "internal error" not in err, err
    assert needle in err, err


RANDOM_FACTORY = '''
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(nn.functional.dropout(x.flatten(1), 0.2))  # training=True by default: random in eval mode

def net():
    return Net()
'''


@pytest.fixture
def random_model(tmp_path, monkeypatch):
    (tmp_path / "randomfactory.py").write_text(RANDOM_FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "random.pt"
    assert main(["train", "--model", "randomfactory:net", "--epochs", "1", "--out", str(path), "--quiet",
                 "--device", "cpu"]) == 0
    return path


@pytest.mark.parametrize("command", ["attack", "evaluate"])
def test_a_model_random_in_eval_mode_gets_no_exact_answer(random_model, tmp_path, capsys, command):
    """auto-attack's pre-flight randomness check: the exact search would certify noise, so it refuses in one line."""
    capsys.readouterr()
    code = main([*COMMANDS[command], "--checkpoint", str(random_model), "--model", "randomfactory:net",
                 "--out", str(tmp_path / "out"), "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "F.dropout(x, p) without training" in err, err
    assert not (tmp_path / "out").exists()


def test_a_gradient_attack_on_a_random_model_runs_with_a_warning(random_model, tmp_path, capsys):
    capsys.readouterr()
    code = main(["attack", "--method", "pgd", "--param", "steps=2", "--limit", "4", "--checkpoint", str(random_model),
                 "--model", "randomfactory:net", "--out", str(tmp_path / "pgd"), "--device", "cpu"])
    assert code == 0 and "pgd sees one draw per step" in capsys.readouterr().err
