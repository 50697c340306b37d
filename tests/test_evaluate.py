"""The evaluator end to end on tiny settings: reports, consistency, fresh re-attacks, gates, resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest
import torch

from advgen.cli import main
from advgen.evaluate import EvaluateConfig, evaluate
from advgen.harden import HardenConfig
from advgen.models import load_checkpoint, save_checkpoint
from advgen.report import load_report
from advgen.train import predict


def tiny_config(**kw) -> EvaluateConfig:
    base = dict(train_images=300, onepixel_images=3, pgd_images=40, pgd_steps=3, advgan_images=40,
                advgan_epochs=1, cgan_epochs=1, cgan_samples=40, onepixel_train_images=4,
                retrain=HardenConfig(epochs=1, pgd_steps=2), seed=0)
    base.update(kw)
    return EvaluateConfig(**base)


@pytest.fixture(scope="module")
def target_path(tmp_path_factory, trained_mlp):
    path = tmp_path_factory.mktemp("target") / "mlp.pt"
    save_checkpoint(path, trained_mlp)
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory, target_path):
    out = tmp_path_factory.mktemp("eval")
    report = evaluate(tiny_config(), out, checkpoint=target_path, fail_under=["clean=0.5"], device="cpu",
                      quiet=True)
    return out, report


def test_report_files_parse_and_agree(finished):
    out, report = finished
    loaded = load_report(out / "report.json")
    assert loaded.to_dict() == report.to_dict()
    raw = json.loads((out / "report.json").read_text())
    assert raw["schema_version"] == 1 and raw["seed"] == 0 and "torch" in raw["machine"]
    suite = ET.parse(out / "junit.xml").getroot()
    cases = suite.iter("testcase")
    assert len(list(cases)) == len(report.gates) == 1
    assert "| clean" in (out / "report.md").read_text().lower().replace("clean_accuracy", "clean")
    assert (out / "report.html").read_text().startswith("<!")


@pytest.mark.parametrize("stage", ["before", "after"])
def test_stage_fields_present_and_consistent(finished, stage):
    _, report = finished
    m = getattr(report, stage)
    assert m.onepixel_images == 3
    assert 0 <= m.onepixel_vulnerable <= m.onepixel_images
    assert m.onepixel_vulnerable_rate == pytest.approx(m.onepixel_vulnerable / m.onepixel_images)
    assert m.onepixel_robust_accuracy <= 1 - m.onepixel_vulnerable_rate + 1e-9
    assert m.onepixel_pruned <= m.onepixel_candidates
    for value in (m.clean_accuracy, m.pgd_robust_accuracy, m.advgan_success_rate, m.advgan_robust_accuracy):
        assert value is not None and 0.0 <= value <= 1.0
    assert m.advgan_robust_accuracy <= m.clean_accuracy + 1e-9 or m.advgan_robust_accuracy <= 1.0


def test_after_stage_attacks_the_retrained_model(finished, mnist_test, target_path):
    out, report = finished
    state = out / "state"
    retrained = load_checkpoint(state / "retrained.pt").model
    original = load_checkpoint(target_path).model
    assert any(not torch.equal(a, b) for a, b in zip(retrained.state_dict().values(),
                                                      original.state_dict().values()))
    images = mnist_test.head(3)
    for stage, model in (("before", original), ("after", retrained)):
        records = [json.loads(line) for line in (state / f"onepixel_{stage}" / "records.jsonl").read_text().splitlines()]
        clean_pred = [r["clean_pred"] for r in sorted(records, key=lambda r: r["index"])]
        assert clean_pred == predict(model, images.images).tolist()
    assert report.after.clean_accuracy == pytest.approx(
        float((predict(retrained, mnist_test.images) == mnist_test.labels).float().mean()))
    g_before = torch.load(state / "advgan_before.pt", weights_only=True)
    g_after = torch.load(state / "advgan_after.pt", weights_only=True)
    assert g_before != g_after  # a second generator, trained against the retrained model
    assert report.augmentation["advgan"] == 300 and report.augmentation["cgan"] == 40


def test_gates_and_exit_codes(finished, target_path, capsys):
    out, report = finished
    assert report.passed and report.gates[0].name == "clean"
    common = ["evaluate", "--checkpoint", str(target_path), "--out", str(out), "--resume", "--quiet",
              "--device", "cpu", "--onepixel-images", "3", "--pgd-images", "40", "--pgd-steps", "3",
              "--advgan-images", "40", "--onepixel-train-images", "4", "--train-images", "300"]
    assert main(common + ["--fail-under", "clean=0.5"]) == 0
    assert main(common + ["--fail-under", "clean=0.5", "--fail-under", "pgd=1.0"]) == 1
    capsys.readouterr()
    assert main(common + ["--fail-under", "clean=2"]) == 2
    assert main(common + ["--fail-under", "nonsense=0.5"]) == 2
    err = capsys.readouterr().err
    assert err.count("advgen: error") == 2 and "Traceback" not in err


def test_resume_after_losing_late_phases_gives_identical_report(finished, target_path, tmp_path):
    out, report = finished
    copy = tmp_path / "copy"
    shutil.copytree(out / "state", copy / "state")
    for name in ("retrained.pt", "pgd_after.json", "advgan_after.pt"):
        (copy / "state" / name).unlink()
    shutil.rmtree(copy / "state" / "onepixel_after")
    again = evaluate(tiny_config(), copy, checkpoint=target_path, fail_under=["clean=0.5"], resume=True,
                     device="cpu", quiet=True)
    def scores(m):
        return {k: v for k, v in m.to_dict().items() if k != "seconds"}

    assert scores(again.after) == scores(report.after) and scores(again.before) == scores(report.before)
    assert again.augmentation == report.augmentation


def test_refuses_to_mix_runs_without_resume(finished, target_path, capsys):
    out, _ = finished
    code = main(["evaluate", "--checkpoint", str(target_path), "--out", str(out), "--quiet"])
    assert code == 2 and "--resume" in capsys.readouterr().err


def _cli_args(target_path, out):
    return [sys.executable, "-m", "advgen", "evaluate", "--checkpoint", str(target_path), "--out", str(out),
            "--quiet", "--device", "cpu", "--train-images", "300", "--onepixel-images", "4",
            "--pgd-images", "40", "--pgd-steps", "3", "--advgan-images", "40", "--advgan-epochs", "2",
            "--cgan-epochs", "2", "--cgan-samples", "40", "--onepixel-train-images", "4", "--retrain-epochs", "1"]


def _scores(path):
    report = json.loads((path / "report.json").read_text())
    return {stage: {k: v for k, v in report[stage].items() if k != "seconds"} for stage in ("before", "after")}, \
        report["augmentation"]


def test_kill_9_then_resume_equals_uninterrupted(tmp_path, target_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ADVGEN_QUIET": "1"}
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(_cli_args(target_path, whole), check=True, env=env, capture_output=True, timeout=600)
    proc = subprocess.Popen(_cli_args(target_path, killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if (killed / "state" / "pgd_before.json").exists():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert not (killed / "report.json").exists() or proc.returncode == 0
    done = subprocess.run(_cli_args(target_path, killed) + ["--resume"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert _scores(killed) == _scores(whole)
