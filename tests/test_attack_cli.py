"""`advgen attack`: output files, resume that ends exactly like an uninterrupted run, and refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from advgen.cli import main
from advgen.files import read_jsonl
from advgen.models import save_checkpoint
from advgen.stats import Rate

LIMIT = 4


def run(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def ckpt_path(tmp_path_factory, trained_cnn):
    path = tmp_path_factory.mktemp("ckpt") / "cnn.pt"
    save_checkpoint(path, trained_cnn)
    return path


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, ckpt_path):
    out = tmp_path_factory.mktemp("attack") / "full"
    assert main(["attack", "--checkpoint", str(ckpt_path), "--limit", str(LIMIT), "--out", str(out), "--quiet",
                 "--device", "cpu"]) == 0
    return out


def without_time(rec: dict) -> dict:
    rec = dict(rec)
    rec.pop("seconds", None)
    if rec.get("exact"):
        rec["exact"] = {k: v for k, v in rec["exact"].items() if k != "seconds"}
    return rec


def test_attack_writes_every_output(full_run, trained_cnn, mnist_test):
    summary = json.loads((full_run / "summary.json").read_text())
    for key in ("schema_version", "method", "images", "certified", "vulnerable", "misclassified",
                "robust_accuracy", "candidates_total", "evaluated", "pruned", "seconds", "seed", "versions"):
        assert key in summary
    assert summary["images"] == LIMIT and summary["method"] == "onepixel"
    assert summary["certified"] + summary["vulnerable"] + summary["misclassified"] == LIMIT
    assert summary["evaluated"] + summary["pruned"] == summary["candidates_total"]
    lo, hi = Rate(summary["certified"] + summary["robust"], LIMIT).ci95
    assert summary["robust_accuracy_ci95"] == [round(lo, 6), round(hi, 6)] and lo <= summary["robust_accuracy"] <= hi
    assert summary["time_limit"] is None
    records = read_jsonl(full_run / "records.jsonl")
    assert sorted(r["index"] for r in records) == list(range(LIMIT))
    adv = torch.load(full_run / "adversarial.pt", weights_only=True)
    assert len(adv["images"]) == len(adv["labels"]) == len(adv["source_index"]) == len(adv["new_class"])
    if len(adv["images"]):
        # 8-bit exact: every value is on the grid, one pixel differs, and the model agrees it flips
        assert torch.equal(torch.round(adv["images"] * 255) / 255, adv["images"])
        clean = mnist_test.images[adv["source_index"]]
        assert ((adv["images"] != clean).flatten(1).sum(1) == 1).all()
        with torch.no_grad():
            assert torch.equal(trained_cnn.model(adv["images"]).argmax(1), adv["new_class"])
        assert (full_run / "examples.png").stat().st_size > 0 and (full_run / "heatmaps.png").stat().st_size > 0


def test_resume_after_partial_records_matches_uninterrupted(full_run, ckpt_path, tmp_path, capsys):
    part = tmp_path / "part"
    part.mkdir()
    shutil.copy(full_run / "run.json", part / "run.json")
    lines = (full_run / "records.jsonl").read_text().splitlines(keepends=True)
    # two complete records and a torn third line, as a kill mid-write leaves it
    (part / "records.jsonl").write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])
    args = ["attack", "--checkpoint", ckpt_path, "--limit", LIMIT, "--out", part, "--quiet", "--device", "cpu"]
    code, _, err = run(args, capsys)
    assert code == 2 and "--resume" in err
    assert run(args + ["--resume"], capsys)[0] == 0
    a = sorted(map(without_time, read_jsonl(full_run / "records.jsonl")), key=lambda r: r["index"])
    b = sorted(map(without_time, read_jsonl(part / "records.jsonl")), key=lambda r: r["index"])
    assert a == b
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (full_run, part))
    for key in ("images", "certified", "vulnerable", "misclassified", "evaluated", "pruned", "robust_accuracy"):
        assert sa[key] == sb[key]
    xa, xb = (torch.load(d / "adversarial.pt", weights_only=True) for d in (full_run, part))
    assert torch.equal(xa["images"], xb["images"]) and torch.equal(xa["source_index"], xb["source_index"])


def test_resume_with_other_settings_is_refused(full_run, ckpt_path, tmp_path, capsys):
    other = tmp_path / "o"
    shutil.copytree(full_run, other)
    code, _, err = run(["attack", "--checkpoint", ckpt_path, "--limit", 3, "--out", other, "--resume"], capsys)
    assert code == 2 and "limit" in err and len(err.strip().splitlines()) == 1


def test_a_time_limit_records_undecided_images_as_timeouts(full_run, ckpt_path, tmp_path, capsys):
    out = tmp_path / "cut"
    code, stdout, _ = run(["attack", "--checkpoint", ckpt_path, "--limit", LIMIT, "--time-limit", 1e-9,
                           "--out", out, "--quiet", "--device", "cpu"], capsys)
    assert code == 0
    whole = {r["index"]: r["status"] for r in read_jsonl(full_run / "records.jsonl")}
    cut = {r["index"]: r for r in read_jsonl(out / "records.jsonl")}
    attacked = [i for i, s in whole.items() if s != "misclassified"]
    assert attacked and all(cut[i]["status"] == "timeout" and not cut[i]["success"] for i in attacked)
    summary = json.loads(stdout)
    assert summary["timeout"] == len(attacked) and summary["certified"] == summary["vulnerable"] == 0
    assert summary["robust_accuracy"] == 0.0, "an image nothing was proved about is not counted robust"
    assert json.loads((out / "summary.json").read_text())["time_limit"] == 1e-9

    # a resume may raise the limit: the timed-out images are searched again, to the answers of a run without one
    code, _, _ = run(["attack", "--checkpoint", ckpt_path, "--limit", LIMIT, "--time-limit", 60, "--out", out,
                      "--resume"], capsys)
    assert code == 0
    assert [without_time(r) for r in read_jsonl(out / "records.jsonl")] == \
        [without_time(r) for r in read_jsonl(full_run / "records.jsonl")]
    assert json.loads((out / "run.json").read_text())["time_limit"] == 60
    # but not lower it: the records made under 60 s are not what a run under 1e-9 s would hold
    code, _, err = run(["attack", "--checkpoint", ckpt_path, "--limit", LIMIT, "--time-limit", 1e-9, "--out", out,
                        "--resume"], capsys)
    assert code == 2 and "not lower it to 1e-09 s" in err and len(err.strip().splitlines()) == 1


def test_fgsm_through_the_same_format(ckpt_path, tmp_path, capsys):
    out = tmp_path / "fgsm"
    code, stdout, _ = run(["attack", "--method", "fgsm", "--checkpoint", ckpt_path, "--limit", 6, "--out", out,
                           "--quiet", "--device", "cpu"], capsys)
    assert code == 0 and json.loads(stdout)["images"] == 6
    records = read_jsonl(out / "records.jsonl")
    hits = [r for r in records if r["success"]]
    assert hits, "FGSM at eps 0.3 fools a weak MNIST model"
    assert all(r["status"] == "vulnerable" and 0 < r["linf"] <= 0.3 + 1e-6 and r["l0"] >= 1 for r in hits)
    assert all(r["status"] in ("robust", "misclassified") for r in records if not r["success"])


def test_param_sets_the_method_parameters_and_a_resume_must_repeat_them(ckpt_path, tmp_path, capsys):
    out = tmp_path / "pgd"
    args = ["attack", "--method", "pgd", "--checkpoint", ckpt_path, "--limit", 8, "--out", out, "--quiet",
            "--device", "cpu", "--param", "steps=3"]
    code, stdout, _ = run([*args, "--param", "eps=0"], capsys)
    assert code == 0 and json.loads(stdout)["vulnerable"] == 0  # a radius of 0 moves no image
    code, stdout, _ = run([*args, "--param", "eps=3/10", "--overwrite"], capsys)
    assert code == 0 and json.loads(stdout)["vulnerable"] > 0
    records = read_jsonl(out / "records.jsonl")
    assert max(r["linf"] for r in records if r["success"]) <= 0.3 + 1e-6
    code, _, err = run([*args, "--param", "eps=0.2", "--resume"], capsys)
    assert code == 2 and "eps (0.3 -> 0.2)" in err and len(err.strip().splitlines()) == 1


def test_targeted_cli_skips_target_class(ckpt_path, tmp_path, capsys):
    out = tmp_path / "t"
    code, _, _ = run(["attack", "--checkpoint", ckpt_path, "--limit", 2, "--target", 3, "--mode", "first",
                      "--out", out, "--quiet", "--device", "cpu"], capsys)
    assert code == 0
    records = read_jsonl(out / "records.jsonl")
    assert len(records) == 2 and all(r["target"] == 3 and r["label"] != 3 for r in records)


@pytest.mark.parametrize("extra, needle", [
    (["--method", "nope"], "unknown method"),
    (["--target", "10"], "--target"),
    (["--method", "deepfool", "--target", "1"], "does not support"),
    (["--device", "tpu"], "--device"),
    (["--limit", "0"], "--limit"),
    (["--resume", "--overwrite"], "contradict"),
    (["--method", "fgsm", "--time-limit", "5"], "--time-limit applies to the onepixel method only"),
    (["--time-limit", "0"], "--time-limit"),
    (["--method", "pgd", "--param", "epsilon=0.1"], "pgd takes no parameter 'epsilon'; it takes alpha, eps"),
    (["--method", "pgd", "--param", "steps=ten"], "steps must be int, got 'ten'"),
    (["--method", "pgd", "--param", "eps"], "must look like NAME=VALUE"),
    (["--method", "pgd", "--param", "eps=0.1", "--param", "eps=0.2"], "eps given twice"),
    (["--param", "time_limit=1", "--time-limit", "2"], "both given"),
])
def test_bad_input_is_one_line_exit_2(ckpt_path, tmp_path, capsys, extra, needle):
    code, _, err = run(["attack", "--checkpoint", ckpt_path, "--out", tmp_path / "x", *extra], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_wrong_image_shape_and_off_grid_data_are_input_errors(ckpt_path, tmp_path, capsys):
    rgb = tmp_path / "rgb.npz"
    np.savez(rgb, images=np.zeros((3, 3, 8, 8), np.float32), labels=np.zeros(3, np.int64))
    code, _, err = run(["attack", "--checkpoint", ckpt_path, "--data", rgb, "--out", tmp_path / "a"], capsys)
    assert code == 2 and "shape" in err and len(err.strip().splitlines()) == 1
    odd = tmp_path / "odd.npz"
    np.savez(odd, images=np.full((2, 28, 28), 0.123, np.float32), labels=np.zeros(2, np.int64))
    code, _, err = run(["attack", "--checkpoint", ckpt_path, "--data", odd, "--out", tmp_path / "b"], capsys)
    assert code == 2 and "quantised" in err and len(err.strip().splitlines()) == 1


def test_a_training_killed_in_attack_resumes_from_its_last_epoch(tmp_path):
    """Without --checkpoint, attack trains the model in OUT; SIGKILL after its first epoch, resume, and get the
    uninterrupted run's weights bit for bit, with the training state gone once the model is cached."""
    import subprocess

    from run_compare import PYTHON, kill_when, subprocess_env

    data = tmp_path / "digits.npz"
    gen = np.random.default_rng(0)
    np.savez(data, images=gen.random((1000, 28, 28), dtype=np.float32), labels=gen.integers(0, 10, 1000))
    env = subprocess_env()

    def args(out):
        return [PYTHON, "-m", "advgen", "attack", "--data", str(data), "--method", "fgsm", "--limit", "2",
                "--out", str(out), "--device", "cpu"]

    ref = subprocess.run(args(tmp_path / "ref"), env=env, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr
    assert not (tmp_path / "ref" / "model_training.pt").exists()
    out = tmp_path / "killed"
    killed = kill_when(args(out), env, lambda: (out / "model_training.pt").exists())
    assert killed, "the run ended before its training's first epoch was seen"  # 15 epochs of 1,000 images
    assert (out / "model_training.pt").exists() and not (out / "model.pt").exists()
    resumed = subprocess.run([*args(out), "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert not (out / "model_training.pt").exists()
    ours, theirs = (torch.load(d / "model.pt", weights_only=True)["state_dict"] for d in (out, tmp_path / "ref"))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
