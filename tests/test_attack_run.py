"""`advgen.run_attack`: the API behind `advgen attack`; kill -9 and resume, reproducibility, record merging."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess

import pytest
import torch

import advgen
from advgen import run_attack
from advgen.attack_run import merge_records, settled
from advgen.cli import main
from advgen.errors import InputError
from advgen.files import read_jsonl
from advgen.methods import AttackOptions
from advgen.models import save_checkpoint
from run_compare import PYTHON, assert_same_run, clean_lines, kill_when, subprocess_env, without_time


@pytest.fixture(scope="module")
def ckpt_path(tmp_path_factory, trained_cnn):
    path = tmp_path_factory.mktemp("ckpt") / "cnn.pt"
    save_checkpoint(path, trained_cnn)
    return path


def cli_args(ckpt_path, out, limit, *extra) -> list[str]:
    return ["attack", "--checkpoint", str(ckpt_path), "--limit", str(limit), "--out", str(out), "--quiet",
            "--device", "cpu", *map(str, extra)]


def test_api_matches_the_cli(trained_cnn, mnist_test, ckpt_path, tmp_path):
    assert main(cli_args(ckpt_path, tmp_path / "cli", 4)) == 0
    summary = run_attack(trained_cnn.model, mnist_test, range(4), tmp_path / "api",
                         options=AttackOptions(levels=mnist_test.levels, device="cpu"),
                         config={"data": "mnist-sample"})
    assert summary.to_dict() == json.loads((tmp_path / "api" / "summary.json").read_text())
    assert_same_run(tmp_path / "cli", tmp_path / "api")
    with pytest.raises(InputError, match="already holds results"):
        run_attack(trained_cnn.model, mnist_test, range(4), tmp_path / "api")
    with pytest.raises(InputError, match="different settings"):
        run_attack(trained_cnn.model, mnist_test, range(3), tmp_path / "api", resume=True)


def test_model_source_is_called_after_the_output_is_ready(trained_cnn, mnist_test, tmp_path):
    seen = []

    def load():
        seen.append(sorted(p.name for p in (tmp_path / "o").iterdir()))
        return trained_cnn.model

    run_attack(load, mnist_test, [5, 1], tmp_path / "o", options=AttackOptions(device="cpu"))
    assert seen == [[]]  # the directory is ready (checked, empty); run.json follows with the model's digest
    assert [r["index"] for r in read_jsonl(tmp_path / "o" / "records.jsonl")] == [1, 5]


@pytest.mark.parametrize("method, limit", [("onepixel", 4), ("pgd", 8)])
def test_same_seed_same_results(method, limit, ckpt_path, tmp_path):
    for name in ("a", "b"):
        assert main(cli_args(ckpt_path, tmp_path / name, limit, "--method", method, "--seed", 3)) == 0
    assert_same_run(tmp_path / "a", tmp_path / "b")
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["seed"] == 3 and summary["images"] == limit


def test_pgd_resume_redoes_the_whole_unit(ckpt_path, tmp_path):
    """PGD's random start is drawn per batch, so a half-recorded batch is attacked again as a whole."""
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(cli_args(ckpt_path, full, 6, "--method", "pgd")) == 0
    part.mkdir()
    shutil.copy(full / "run.json", part / "run.json")
    lines = (full / "records.jsonl").read_text().splitlines(keepends=True)
    (part / "records.jsonl").write_text("".join(lines[:3]))
    assert main(cli_args(ckpt_path, part, 6, "--method", "pgd", "--resume")) == 0
    assert_same_run(full, part)


def test_kill_9_then_resume_matches_an_uninterrupted_run(ckpt_path, tmp_path):
    """SIGKILL once the first records are on disk, resume, and end with an uninterrupted run's files.

    Every run is a child with the same environment, so only the interruption differs. On a machine so
    slow or so fast that the kill misses the attack, the test still checks the resumed outputs.
    """
    n = 24  # six groups of four images on a CPU; the first group's records land well before the end
    args = cli_args(ckpt_path, tmp_path / "ref", n, "--mode", "first")
    env = subprocess_env()
    ref = subprocess.run([PYTHON, "-m", "advgen", *args], env=env, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    args = cli_args(ckpt_path, out, n, "--mode", "first")
    records = out / "records.jsonl"
    killed = kill_when([PYTHON, "-m", "advgen", *args], env,
                       lambda: records.exists() and records.stat().st_size > 0 and b"\n" in records.read_bytes())
    if killed:
        assert len(read_jsonl(records)) < n or not (out / "summary.json").exists()
    resumed = subprocess.run([PYTHON, "-m", "advgen", *args, "--resume"], env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(tmp_path / "ref", out)
    assert json.loads(resumed.stdout)["images"] == n


def test_merge_records_dedupes_sorts_and_drops_parts(tmp_path):
    rec = lambda i, tag: {"index": i, "tag": tag}  # noqa: E731
    (tmp_path / "records.jsonl").write_text(json.dumps(rec(4, "r0")) + "\n" + json.dumps(rec(0, "r0")) + "\n")
    (tmp_path / "records.rank-1.jsonl").write_text(json.dumps(rec(0, "r1")) + "\n" + json.dumps(rec(3, "r1"))
                                                   + "\n" + '{"index": 9, "ta')
    (tmp_path / "records.rank-12.jsonl").write_text(json.dumps(rec(1, "r12")) + "\n")
    merged = merge_records(tmp_path)
    assert [(r["index"], r["tag"]) for r in merged] == [(0, "r0"), (1, "r12"), (3, "r1"), (4, "r0")]
    assert clean_lines(tmp_path / "records.jsonl") == merged
    assert not list(tmp_path.glob("records.rank-*"))
    assert merge_records(tmp_path) == merged  # idempotent: a kill mid-merge is harmless


def test_without_time_ignores_only_timing():
    assert without_time({"seconds": 1, "exact": {"seconds": 2, "flips": []}, "index": 0}) == \
        {"exact": {"flips": []}, "index": 0}


def test_a_parameter_the_method_does_not_take_stops_before_out_is_touched(trained_cnn, mnist_test, tmp_path):
    for method, params in (("onepixel", {"steps": 3}), ("pgd", {"epsilon": 0.1})):
        out = tmp_path / method
        with pytest.raises(InputError, match="takes no parameter"):
            run_attack(trained_cnn.model, mnist_test, range(2), out, method=method,
                       options=AttackOptions(params=params))
        assert not out.exists() or not any(out.iterdir())


def test_a_run_that_failed_before_recording_anything_leaves_no_claim(trained_cnn, mnist_test, tmp_path):
    """The model fails inside the attack, after ``out`` was claimed; the retry with a working one is not refused."""
    import torch

    class FailsOnBatches(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            if len(x) > 1:
                raise RuntimeError("boom")
            return self.inner(x)

    out = tmp_path / "pgd"
    with pytest.raises(RuntimeError, match="boom"):
        run_attack(FailsOnBatches(trained_cnn.model), mnist_test, range(2), out, method="pgd",
                   options=AttackOptions(params={"steps": 2}))
    assert not out.exists()  # the failed call made it, and leaves nothing behind
    out.mkdir()
    with pytest.raises(RuntimeError, match="boom"):
        run_attack(FailsOnBatches(trained_cnn.model), mnist_test, range(2), out, method="pgd",
                   options=AttackOptions(params={"steps": 2}))
    assert out.is_dir() and not any(out.iterdir())  # a folder the caller made stays
    summary = run_attack(trained_cnn.model, mnist_test, range(2), out, method="pgd",
                         options=AttackOptions(params={"steps": 2}))
    assert summary.images == 2


def test_wrong_argument_types_are_named(trained_cnn, mnist_test, tmp_path):
    with pytest.raises(InputError, match="advgen.data.Dataset"):
        run_attack(trained_cnn.model, mnist_test.images[:3], out=tmp_path / "a")
    with pytest.raises(InputError, match="nn.Module"):
        run_attack("model.pt", mnist_test, out=tmp_path / "b")
    with pytest.raises(InputError, match="do not fit the model"):
        run_attack(trained_cnn.model, datasets_32x32(), range(2), tmp_path / "c", method="pgd")
    assert not (tmp_path / "c").exists()


def datasets_32x32():
    import torch

    from advgen.data import Dataset

    return Dataset(torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 2, 3]), "random-32")


def test_an_interrupted_run_keeps_what_it_needs_to_resume(trained_cnn, mnist_test, tmp_path):
    """Ctrl-C is not a failure: the claim and a model trained for the run stay for --resume."""
    from advgen.models import save_checkpoint

    out = tmp_path / "int"

    def model():
        save_checkpoint(out / "model.pt", trained_cnn)  # as the CLI caches a model trained on the spot
        return trained_cnn.model

    def interrupt(recs):
        raise KeyboardInterrupt

    import advgen.attack_run as attack_run

    original = attack_run.append_jsonl
    attack_run.append_jsonl = lambda path, records: interrupt(records)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_attack(model, mnist_test, range(2), out, method="fgsm")
    finally:
        attack_run.append_jsonl = original
    assert (out / "run.json").exists() and (out / "model.pt").exists()
    assert run_attack(model, mnist_test, range(2), out, method="fgsm", resume=True).images == 2


def test_a_resume_under_a_longer_limit_completes_cut_short_flip_lists(monkeypatch, tmp_path):
    """An image whose search the limit stopped after a first flip is searched again, to its full list; the
    images the short limit settled keep their records (their seconds too: they are not attacked again)."""
    from advgen import onepixel
    from advgen.data import Dataset
    from test_onepixel import TickingClock, images_for, tiny_cnn

    model = tiny_cnn()
    x, y = images_for(model, (1, 8, 8), 16, 6)
    data = Dataset(x, y, "tiny", levels=16, num_classes=4)
    opts = AttackOptions(levels=16, device="cpu", batch_size=40)
    run_attack(model, data, out=tmp_path / "whole", options=opts)
    whole = read_jsonl(tmp_path / "whole" / "records.jsonl")
    monkeypatch.setattr(onepixel.clock, "time", TickingClock())
    for limit in range(1, 200):  # the shortest limit that leaves a flip list incomplete
        out = tmp_path / f"cut{limit}"
        run_attack(model, data, out=out, options=dataclasses.replace(opts, params={"time_limit": float(limit)}))
        cut = read_jsonl(out / "records.jsonl")
        if any(r["status"] == "vulnerable" and not r["exact"]["exhaustive"] for r in cut):
            break
    else:
        pytest.fail("no limit cut a flip list short")
    kept = [r for r in cut if settled(r)]
    run_attack(model, data, out=out, options=opts, resume=True)  # no limit now
    again = read_jsonl(out / "records.jsonl")
    assert [without_time(r) for r in again] == [without_time(r) for r in whole]
    assert [r for r in again if r["index"] in {k["index"] for k in kept}] == kept
    assert json.loads((out / "run.json").read_text())["time_limit"] is None


def test_a_gradient_attack_on_probabilities_warns_and_the_exact_search_does_not(trained_cnn, mnist_test, tmp_path,
                                                                               caplog):
    """auto-attack's output check: PGD's cross-entropy on softmax rows saturates; the exact search reads the argmax."""
    softmax = torch.nn.Sequential(trained_cnn.model, torch.nn.Softmax(dim=1))
    data = mnist_test.head(4)
    with caplog.at_level("WARNING", logger="advgen"):
        advgen.run_attack(softmax, data, None, tmp_path / "pgd", method="pgd",
                          options=advgen.AttackOptions(params={"steps": 2}))
    assert "returns probabilities" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="advgen"):
        advgen.run_attack(softmax, data, None, tmp_path / "exact", method="onepixel")
    assert "returns probabilities" not in caplog.text
