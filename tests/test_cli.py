"""The command line: results, refusals, and the one-line/exit-2 contract for bad input."""

import subprocess
import sys

import pytest

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
