"""The evaluator end to end on tiny settings: reports, consistency, fresh re-attacks, gates, resume."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import torch

from advgen.cli import main
from advgen.errors import InputError
from advgen.evaluate import evaluate
from advgen.evaluate_config import AUGMENTATIONS, EvaluateConfig
from advgen.harden import HardenConfig
from advgen.models import load_checkpoint, save_checkpoint
from advgen.report import load_report
from advgen.train import predict
from run_compare import kill_when, random_streams


def tiny_config(**kw) -> EvaluateConfig:
    base = dict(train_images=300, onepixel_images=3, pgd_images=40, pgd_steps=3, autoattack_images=40, autoattack_version="cpu",
                advgan_images=40,
                advgan_epochs=1, cgan_epochs=1, cgan_samples=40, onepixel_train_images=4, augment=AUGMENTATIONS,
                retrain=HardenConfig(epochs=1), seed=0)
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
    assert raw["schema_version"] == 2 and raw["seed"] == 0 and "torch" in raw["machine"]
    assert raw["config"]["arch"] == "mlp"  # the checkpoint's model, not the config's unused default
    assert set(raw["stages"]["before"]) == {"clean", "onepixel", "pgd", "autoattack", "advgan"}
    suite = ET.parse(out / "junit.xml").getroot()
    cases = suite.iter("testcase")
    assert len(list(cases)) == len(report.gates) == 1
    assert "| clean" in (out / "report.md").read_text().lower().replace("clean_accuracy", "clean")
    assert (out / "report.html").read_text().startswith("<!")


@pytest.mark.parametrize("stage", ["before", "after"])
def test_stage_fields_present_and_consistent(finished, stage):
    _, report = finished
    m = report.stages[stage]
    onepixel = m["onepixel"]
    assert onepixel.images == 3 and onepixel.counts["pruned"] <= onepixel.counts["candidates"]
    vulnerable, certified = onepixel.outcomes["vulnerable"], onepixel.outcomes["certified"]
    assert not any(v == c == "1" for v, c in zip(vulnerable, certified))  # one status per image
    assert m["clean"].images == 1000 and m["pgd"].images == 40 and m["advgan"].images == 40
    advgan = m["advgan"].outcomes
    for i, (correct, fooled, robust) in enumerate(zip(advgan["correct"], advgan["fooled"], advgan["robust"])):
        assert fooled == ("1" if correct == "1" and robust == "0" else "0"), i


def test_a_onepixel_time_limit_reports_undecided_images_as_timeouts(tmp_path, target_path, finished):
    """With no time to search, every image the model classifies right is a timeout: neither vulnerable nor
    certified, in its own row of the status table; the limit is in the settings, and absent when unset."""
    from advgen.report.tables import all_tables

    config = tiny_config(onepixel_time_limit=1e-9, onepixel_images=4, pgd_images=0, autoattack_images=0,
                         advgan_images=0, augment=("onepixel",), onepixel_train_images=4)
    report = evaluate(config, tmp_path, checkpoint=target_path, fail_under=["onepixel=0.5"], device="cpu", quiet=True)
    for stage in ("before", "after"):
        m = report.stages[stage]["onepixel"]
        correct = report.stages[stage]["clean"].outcomes["correct"][:4]
        assert m.outcomes["timeout"] == correct and set(m.outcomes["vulnerable"] + m.outcomes["certified"]) == {"0"}
        assert "lower bound" in m.note
    assert report.augmentation["onepixel"] == 0  # the mined training images timed out too: no flips
    assert not report.passed and report.gates[0].value == 0.0  # nothing proved: the gate fails
    assert load_report(tmp_path / "report.json").to_dict() == report.to_dict()
    status = next(t for t in all_tables(report) if t.title.startswith("One-pixel status"))
    assert status.header == ["before", "certified", "vulnerable", "timeout", "misclassified", "total"]
    assert report.config["onepixel_time_limit"] == 1e-9 and "onepixel_time_limit" not in finished[1].config
    assert "undecided" in (tmp_path / "report.md").read_text()


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
    correct = (predict(retrained, mnist_test.images) == mnist_test.labels).tolist()
    assert report.stages["after"]["clean"].outcomes["correct"] == "".join("1" if c else "0" for c in correct)
    g_before = torch.load(state / "advgan_before.pt", weights_only=True)
    g_after = torch.load(state / "advgan_after.pt", weights_only=True)
    assert g_before != g_after  # a second generator, trained against the retrained model
    assert report.augmentation["advgan"] == 300 and report.augmentation["cgan"] == 40
    assert report.augmentation["pgd"] == 300 and "certified" not in report.augmentation  # 1 epoch: weight still 0


def test_gates_and_exit_codes(finished, target_path, capsys):
    out, report = finished
    assert report.passed and report.gates[0].name == "clean"
    common = ["evaluate", "--checkpoint", str(target_path), "--out", str(out), "--resume", "--quiet",
              "--device", "cpu", "--onepixel-images", "3", "--pgd-images", "40", "--pgd-steps", "3", "--autoattack-images", "40",
              "--autoattack-version", "cpu",
              "--advgan-images", "40", "--onepixel-train-images", "4", "--train-images", "300",
              "--advgan-epochs", "1", "--cgan-epochs", "1", "--cgan-samples", "40", "--retrain-epochs", "1",
              "--augment", ",".join(AUGMENTATIONS)]
    assert main(common + ["--fail-under", "clean=0.5"]) == 0
    assert main(common + ["--fail-under", "clean=0.5", "--fail-under", "pgd=1.0"]) == 1
    capsys.readouterr()
    assert main(common + ["--fail-under", "clean=2"]) == 2
    assert main(common + ["--fail-under", "nonsense=0.5"]) == 2
    err = capsys.readouterr().err
    assert err.count("advgen: error") == 2 and "Traceback" not in err


def test_measure_only_reports_the_before_stage_alone_and_gates_read_it(finished, target_path, tmp_path, capsys):
    """A CI check of a model as it is: the same BEFORE as a full run's, nothing retrained, unprefixed gates on it."""
    out, full = finished
    mo = tmp_path / "measure-only"
    report = evaluate(tiny_config(measure_only=True), mo, checkpoint=target_path,
                      fail_under=["clean=0.5", "after.clean=0.5"], device="cpu", quiet=True)
    assert set(report.stages) == {"before"} and report.augmentation == {}
    assert _outcomes(report.to_dict())["before"] == _outcomes(full.to_dict())["before"]
    assert [(g.stage, g.passed) for g in report.gates] == [("before", True), ("after", False)]
    assert "no 'after' stage" in report.gates[1].reason and not report.passed
    assert not (mo / "state" / "retrained.pt").exists() and "retrain" not in report.timings
    assert load_report(mo / "report.json").config["measure_only"] is True
    args = resume_args(mo, target_path)
    capsys.readouterr()
    assert main(args) == 2  # resuming it as a full run would mix two kinds of run
    assert "measure_only (true -> unset)" in capsys.readouterr().err
    measure_args = [a for a in args if a not in ("--augment", ",".join(AUGMENTATIONS))]
    at = measure_args.index("--retrain-epochs")
    del measure_args[at:at + 2]
    cut = measure_args.index("--onepixel-train-images")
    del measure_args[cut:cut + 2]
    cut = measure_args.index("--cgan-epochs")
    del measure_args[cut:cut + 4]
    assert main(measure_args + ["--measure-only", "--fail-under", "clean=0.5"]) == 0, capsys.readouterr().err
    assert main(measure_args + ["--measure-only", "--retrain-epochs", "2"]) == 2
    assert "--measure-only does not retrain, so --retrain-epochs has nothing to do" in capsys.readouterr().err


def test_a_model_in_memory_is_measured_as_its_checkpoint_and_left_as_it_was(finished, trained_mlp, tmp_path):
    """RobustBench's ``benchmark(model, ...)``: the same BEFORE as the saved checkpoint's, the caller's model untouched."""
    _, full = finished
    model = trained_mlp.model.train()  # in train mode, as a caller's model may be
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)  # a state no seeded run leaves behind
    streams = random_streams()
    report = evaluate(tiny_config(measure_only=True), tmp_path / "mem", model=model, device="cpu", quiet=True)
    assert random_streams() == streams
    assert _outcomes(report.to_dict())["before"] == _outcomes(full.to_dict())["before"]
    assert report.config["arch"] == "Sequential (in memory)" and report.config["checkpoint"] is None
    assert model.training and all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    with pytest.raises(InputError, match="a checkpoint or a model in memory, not both"):
        evaluate(tiny_config(), tmp_path / "both", checkpoint=tmp_path / "x.pt", model=model)
    with pytest.raises(InputError, match="model must be a torch.nn.Module, got str"):
        evaluate(tiny_config(measure_only=True), tmp_path / "str", model="mlp", device="cpu", quiet=True)


class TinyNet(torch.nn.Module):
    """A model class advgen has no name for: only the object itself can rebuild it."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 16), torch.nn.ReLU(),
                                        torch.nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_a_model_in_memory_is_retrained_and_a_resume_must_hand_over_the_same(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    config = tiny_config(train_images=200, onepixel_images=2, pgd_images=20, autoattack_images=0, advgan_images=0,
                         augment=("pgd",))
    out = tmp_path / "run"
    report = evaluate(config, out, model=model, device="cpu", quiet=True)
    assert set(report.stages) == {"before", "after"} and report.config["arch"] == "TinyNet (in memory)"
    retrained = load_checkpoint(out / "state" / "retrained.pt", template=model).model  # the weights come back
    assert isinstance(retrained, TinyNet) and not torch.equal(retrained.body[1].weight, model.body[1].weight)
    with pytest.raises(InputError, match="handed over in memory \\(TinyNet \\(in memory\\)\\); load them into that"):
        load_checkpoint(out / "state" / "retrained.pt")  # without the object, the file alone cannot say what to run
    again = evaluate(config, out, model=model, resume=True, device="cpu", quiet=True)
    assert _outcomes(again.to_dict()) == _outcomes(report.to_dict())
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.body[1].weight[0, 0] += 1.0  # one weight off
    with pytest.raises(InputError, match="model_sha256"):
        evaluate(config, out, model=other, resume=True, device="cpu", quiet=True)


def test_resume_after_losing_late_phases_gives_identical_report(finished, target_path, tmp_path):
    out, report = finished
    copied = tmp_path / "copied"
    shutil.copytree(out / "state", copied / "state")
    for name in ("retrained.pt", "pgd_after.json", "advgan_after.pt"):
        (copied / "state" / name).unlink()
    shutil.rmtree(copied / "state" / "onepixel_after")
    again = evaluate(tiny_config(), copied, checkpoint=target_path, fail_under=["clean=0.5"], resume=True,
                     device="cpu", quiet=True)
    assert _outcomes(again.to_dict()) == _outcomes(report.to_dict())
    assert again.augmentation == report.augmentation


def resume_args(out, target_path) -> list[str]:
    """``advgen evaluate --resume`` with the settings of ``tiny_config``, spelled out on the command line."""
    return ["evaluate", "--checkpoint", str(target_path), "--out", str(out), "--resume", "--quiet",
            "--device", "cpu", "--onepixel-images", "3", "--pgd-images", "40", "--pgd-steps", "3",
            "--autoattack-images", "40", "--autoattack-version", "cpu",
            "--advgan-images", "40", "--onepixel-train-images", "4", "--train-images", "300",
            "--advgan-epochs", "1", "--cgan-epochs", "1", "--cgan-samples", "40", "--retrain-epochs", "1",
            "--augment", ",".join(AUGMENTATIONS)]


@pytest.mark.parametrize("changed, named", [(["--pgd-eps", "0.1"], "pgd_eps (0.3 -> 0.1)"),
                                            (["--retrain-epochs", "2"], "retrain.epochs (1 -> 2)"),
                                            (["--seed", "1"], "seed (0 -> 1)"),
                                            (["--onepixel-time-limit", "5"], "onepixel_time_limit (unset -> 5"),
                                            (["--budget", "robust"], "retrain.clean_weight (0.55 -> 0.0)")])
def test_resume_with_a_changed_setting_exits_2_naming_it(finished, target_path, capsys, changed, named):
    out, _ = finished
    before = (out / "report.json").read_bytes()
    capsys.readouterr()
    assert main(resume_args(out, target_path) + changed) == 2
    err = capsys.readouterr().err
    assert named in err and "different settings" in err and len(err.strip().splitlines()) == 1
    assert (out / "report.json").read_bytes() == before  # nothing was mixed in or rewritten


def test_a_budget_on_the_command_line_keeps_the_options_given(finished, target_path, capsys):
    out, _ = finished
    capsys.readouterr()
    assert main(resume_args(out, target_path) + ["--budget", "robust"]) == 2
    err = capsys.readouterr().err
    assert "retrain.pgd_steps (7 -> 10)" in err and "retrain.certified_weight" in err  # the preset's
    assert "retrain.epochs" not in err and "augment" not in err and "cgan_samples" not in err  # given explicitly


def test_resume_accepts_settings_that_take_the_same_effect(finished, target_path, capsys):
    out, report = finished
    unset = resume_args(out, target_path)
    at = unset.index("--autoattack-version")
    del unset[at:at + 2]  # on a CPU an unset version is the cpu one
    assert main(unset + ["--model", "mlp"]) == 0, capsys.readouterr().err  # the checkpoint's own model
    assert _outcomes(load_report(out / "report.json").to_dict()) == _outcomes(report.to_dict())


def test_the_run_fingerprint_leaves_out_what_cannot_change_a_result(tmp_path, target_path):
    from advgen.evaluate import Evaluation
    from advgen.run import local
    from advgen.workspace import Workspace

    ws = Workspace(local("cpu"), tmp_path)
    fp = lambda cfg, ckpt=None: Evaluation(cfg, ckpt)._run_fingerprint(ws)  # noqa: E731
    pgd_only = dict(augment=("pgd",))
    assert fp(tiny_config(**pgd_only)) == fp(tiny_config(**pgd_only, advgan_samples=7, cgan_samples=9,
                                                         cgan_epochs=3, onepixel_train_images=50))
    assert fp(tiny_config(autoattack_version=None)) == fp(tiny_config(autoattack_version="cpu"))
    assert fp(tiny_config(arch="cnn"), target_path) == fp(tiny_config(arch="cnn-wide"), target_path)
    assert fp(tiny_config(advgan_images=0, **pgd_only)) == fp(tiny_config(advgan_images=0, advgan_epochs=5, **pgd_only))
    for changed in (dict(advgan_samples=7), dict(autoattack_version="standard"), dict(arch="cnn-wide"),
                    dict(advgan_epochs=5), dict(onepixel_train_images=50)):
        assert fp(tiny_config(**changed)) != fp(tiny_config()), changed


def test_counts_past_the_split_are_used_as_all_and_said(caplog, tmp_path, target_path):
    from advgen.evaluate import Evaluation
    from advgen.run import local
    from advgen.workspace import Workspace

    ev = Evaluation(tiny_config(onepixel_images=5000, pgd_images=1200, train_images=9000), target_path)
    with caplog.at_level("INFO", logger="advgen"):
        ev.target(Workspace(local("cpu"), tmp_path))
    said = [r.getMessage() for r in caplog.records if "more than" in r.getMessage()]
    assert said == ["train_images 9000: more than the 4000 training images there are, so all 4000 are used",
                    "onepixel_images 5000, pgd_images 1200: more than the 1000 test images there are, so all 1000 "
                    "are used"]
    assert "exact enumeration of the first 1000 test images; PGD: the first 1000;" in ev.config.coverage(len(ev.test))


def test_refuses_to_mix_runs_without_resume(finished, target_path, capsys):
    out, _ = finished
    code = main(["evaluate", "--checkpoint", str(target_path), "--out", str(out), "--quiet"])
    assert code == 2 and "--resume" in capsys.readouterr().err


def _cli_args(target_path, out):
    return [sys.executable, "-m", "advgen", "evaluate", "--checkpoint", str(target_path), "--out", str(out),
            "--quiet", "--device", "cpu", "--train-images", "300", "--onepixel-images", "4",
            "--pgd-images", "40", "--pgd-steps", "3", "--autoattack-images", "40",
              "--autoattack-version", "cpu", "--advgan-images", "40", "--advgan-epochs", "2",
            "--cgan-epochs", "2", "--cgan-samples", "40", "--onepixel-train-images", "4", "--retrain-epochs", "3",
            "--augment", ",".join(AUGMENTATIONS)]


def _outcomes(report: dict) -> dict:
    """Every measured outcome and count, without the timings."""
    return {stage: {attack: (m["outcomes"], m["counts"]) for attack, m in attacks.items()}
            for stage, attacks in report["stages"].items()}


def _scores(path):
    report = json.loads((path / "report.json").read_text())
    return _outcomes(report), report["augmentation"]


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory, target_path):
    whole = tmp_path_factory.mktemp("whole")
    subprocess.run(_cli_args(target_path, whole), check=True, env=KILL_ENV, capture_output=True, timeout=600)
    return whole


KILL_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ADVGEN_QUIET": "1"}


@pytest.mark.parametrize("after", ["pgd_before.json", "retrained_training.pt"])  # a phase; an epoch of retraining
def test_kill_9_then_resume_equals_uninterrupted(tmp_path, target_path, whole_run, after):
    killed = tmp_path / "killed"
    assert kill_when(_cli_args(target_path, killed), KILL_ENV, lambda: (killed / "state" / after).exists()), \
        "killed in time, before the run could finish"
    done = subprocess.run(_cli_args(target_path, killed) + ["--resume"], env=KILL_ENV, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert _scores(killed) == _scores(whole_run)
