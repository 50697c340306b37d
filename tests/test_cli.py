"""The command line: results, refusals, and the one-line/exit-2 contract for bad input."""

import subprocess
import sys

import pytest
import torch

from advgen.cli import main
from advgen.models import load_checkpoint


def run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_writes_checkpoint_and_refuses_clobber(tmp_path, capsys):
    out = tmp_path / "m.pt"
    args = ["train", "--model", "mlp", "--epochs", "1", "--out", str(out), "--quiet", "--device", "cpu"]
    code, stdout, _ = run(args, capsys)
    assert code == 0 and "test accuracy" in stdout
    ckpt = load_checkpoint(out)
    assert ckpt.arch == "mlp" and ckpt.meta["test_accuracy"] > 0.5
    code, _, err = run(args, capsys)
    assert code == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert run(args + ["--overwrite"], capsys)[0] == 0


def test_train_resume_continues_a_killed_training(tmp_path, capsys, monkeypatch):
    from advgen import train

    def args(out):
        return ["train", "--model", "mlp", "--epochs", "2", "--out", str(out), "--quiet", "--device", "cpu"]

    assert run(args(tmp_path / "whole.pt"), capsys)[0] == 0
    out, state = tmp_path / "m.pt", tmp_path / "m.pt.state"
    save = train._Saved.save

    def save_then_stop(self, done: int, loss: float, seconds: float) -> None:
        save(self, done, loss, seconds)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(train._Saved, "save", save_then_stop)
        assert main(args(out)) == 130  # Ctrl-C, as soon as the first epoch is on disk
    capsys.readouterr()
    assert state.exists() and not out.exists()
    code, _, err = run(args(out), capsys)
    assert code == 2 and "--resume" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(args(out) + ["--resume", "--epochs", "3"], capsys)
    assert code == 2 and "fit.epochs (2 -> 3)" in err
    assert run(args(out) + ["--resume"], capsys)[0] == 0
    assert not state.exists()
    whole, resumed = load_checkpoint(tmp_path / "whole.pt").model, load_checkpoint(out).model
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))


@pytest.mark.parametrize("args, needle", [
    (["train", "--data", "nope"], "unknown dataset"),
    (["train", "--model", "nope"], "unknown model"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--device", "tpu"], "--device"),
    (["train", "--bogus"], "No such option"),
    (["nosuchcommand"], "No such command"),
    (["train", "--data", "/nonexistent.npz"], "not found"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, args, needle):
    code, _, err = run(args + ["--out", str(tmp_path / "m.pt")] if args[0] == "train" else args, capsys)
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_corrupt_data_file_via_cli(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file at all")
    code, _, err = run(["train", "--data", str(bad), "--out", str(tmp_path / "m.pt")], capsys)
    assert code == 2 and "corrupted" in err


def test_console_entry_point_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "advgen", "train", "--data", "nope"], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_missing_choice_option_is_still_one_line(capsys):
    code, _, err = run(["augment"], capsys)
    assert code == 2 and "--gan" in err and len(err.strip().splitlines()) == 1


def test_every_option_of_every_command_says_what_it_does():
    import click

    from advgen.cli import cli

    def commands(group, path):
        for name, cmd in group.commands.items():
            if isinstance(cmd, click.Group):
                yield from commands(cmd, f"{path} {name}")
            else:
                yield f"{path} {name}", cmd

    silent = [f"{path} {opt.opts[0]}" for path, cmd in commands(cli, "advgen") for opt in cmd.params
              if isinstance(opt, click.Option) and not (opt.help or "").strip()]
    assert silent == []
