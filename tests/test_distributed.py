"""torchrun scale-out: two CPU ranks give the single-process result, resume works across world sizes,
and only rank 0 speaks."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from advgen.resume import model_sha256
from advgen.run import Run
from advgen.models import save_checkpoint
from run_compare import PYTHON, assert_same_run, subprocess_env

LIMIT = 4


@pytest.fixture(scope="module")
def ckpt_path(tmp_path_factory, trained_cnn):
    path = tmp_path_factory.mktemp("ckpt") / "cnn.pt"
    save_checkpoint(path, trained_cnn)
    return path


def attack_args(ckpt_path: Path, out: Path, *extra) -> list[str]:
    return ["attack", "--checkpoint", str(ckpt_path), "--limit", str(LIMIT), "--out", str(out), "--quiet",
            "--device", "cpu", *map(str, extra)]


@pytest.fixture(scope="module")
def single(tmp_path_factory, ckpt_path):
    """The reference: one process, run in a child like the torchrun ranks (one thread, same code path)."""
    out = tmp_path_factory.mktemp("single") / "out"
    proc = subprocess.run([PYTHON, "-m", "advgen", *attack_args(ckpt_path, out)], env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


def torchrun(args: list[str], logs: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --standalone` (a free port) with each rank's stdout/stderr kept in its own file under logs."""
    cmd = [PYTHON, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--standalone",
           "--log-dir", str(logs), "--redirects", "3", "-m", "advgen", *args]
    return subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)


def rank_output(logs: Path, rank: int) -> tuple[str, str]:
    """What local rank ``rank`` wrote to stdout and stderr."""
    (folder,) = logs.glob(f"*/attempt_0/{rank}")
    return (folder / "stdout.log").read_text(), (folder / "stderr.log").read_text()


def test_two_ranks_match_a_single_process(single, ckpt_path, tmp_path):
    out, logs = tmp_path / "out", tmp_path / "logs"
    proc = torchrun(attack_args(ckpt_path, out), logs)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_same_run(single, out)
    stdout0, _ = rank_output(logs, 0)
    assert json.loads(stdout0)["images"] == LIMIT and len(stdout0.strip().splitlines()) == 1
    assert rank_output(logs, 1) == ("", "")


def test_two_ranks_resume_a_killed_three_rank_run(single, ckpt_path, tmp_path):
    """Rank 0 had recorded image 0, rank 2 image 2 and half of image 3's line, rank 1 nothing."""
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(single / "run.json", out / "run.json")
    lines = (single / "records.jsonl").read_text().splitlines(keepends=True)
    (out / "records.jsonl").write_text(lines[0])
    (out / "records.rank-2.jsonl").write_text(lines[2] + lines[3][: len(lines[3]) // 2])
    proc = torchrun(attack_args(ckpt_path, out, "--resume"), tmp_path / "logs")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_same_run(single, out)


def test_one_process_resumes_a_two_rank_run(single, ckpt_path, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(single / "run.json", out / "run.json")
    lines = (single / "records.jsonl").read_text().splitlines(keepends=True)
    (out / "records.jsonl").write_text(lines[0] + lines[2])
    (out / "records.rank-1.jsonl").write_text(lines[1] + lines[1])  # a unit redone after a kill: duplicates
    proc = subprocess.run([PYTHON, "-m", "advgen", *attack_args(ckpt_path, out, "--resume")], env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert_same_run(single, out)


def test_bad_input_under_torchrun_is_reported_once_by_rank_0(single, ckpt_path, tmp_path):
    logs = tmp_path / "logs"
    proc = torchrun(attack_args(ckpt_path, single), logs)  # the output exists and no --resume
    assert proc.returncode != 0
    _, err0 = rank_output(logs, 0)
    assert "--resume" in err0 and len(err0.strip().splitlines()) == 1
    assert rank_output(logs, 1) == ("", "")


def test_one_rank_run_is_plain_calls(trained_cnn):
    run = Run()
    assert run.is_main and run.shard([1, 2, 3]) == [1, 2, 3] and run.gather(5) == [5] and run.broadcast(6) == 6
    with run.main() as shared:
        if run.is_main:
            shared.value = 7
    assert shared.value == 7
    assert Run(rank=1, size=3).shard(list(range(8))) == [1, 4, 7]
    assert model_sha256(trained_cnn.model) == model_sha256(trained_cnn.model)


WORLD_SCRIPT = '''
import json, os, sys
from pathlib import Path
from advgen.run import start
from advgen.errors import InputError

out = Path(sys.argv[1])

with start("cpu") as run:
    res = {"size": run.size, "shard": run.shard(list(range(5)))}
    with run.main():  # rank 0 first: it makes a file the others then read
        if run.is_main:
            (out / "made.txt").write_text("made by rank 0")
    res["first"] = (out / "made.txt").read_text()
    try:
        with run.main() as shared:
            if run.is_main:
                raise InputError("bad input seen on rank 0")
    except InputError as exc:
        res["error"] = str(exc)
    with run.main() as shared:
        if run.is_main:
            shared.value = {"from": run.rank}
    res["value"] = shared.value
    try:
        run.check_same(run.rank, "the rank")
    except InputError as exc:
        res["same"] = str(exc)
    run.check_same("equal", "a constant")
    import torch.distributed.nn  # as training does (via torch._dynamo): its defaults bind the live group
    run.barrier()
tasks = os.listdir("/proc/self/task")
res["gloo_threads"] = [n for n in (open(f"/proc/self/task/{t}/comm").read().strip() for t in tasks) if "gloo" in n]
(out / f"rank{run.rank}.json").write_text(json.dumps(res))
'''


def test_world_primitives_over_two_gloo_ranks(tmp_path):
    """run.main() orders the ranks and hands rank 0's value or input error to all; check_same compares.

    Leaving start() frees the group, so no gloo thread is left to abort the finished rank at exit."""
    script = tmp_path / "world.py"
    script.write_text(WORLD_SCRIPT)
    cmd = [PYTHON, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", str(script),
           str(tmp_path)]
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["shard"] for r in ranks] == [[0, 2, 4], [1, 3]]
    for r in ranks:
        assert r["size"] == 2 and r["first"] == "made by rank 0" and r["error"] == "bad input seen on rank 0"
        assert r["value"] == {"from": 0}
        assert r["same"] == "the rank differs between rank 0 and rank(s) 1"
        assert r["gloo_threads"] == []


def evaluate_alone_and_over_two_ranks(opts: list[str], tmp_path: Path) -> tuple[Path, Path]:
    """`advgen evaluate OPTS` in one process (into tmp/one) and under a two-rank torchrun (tmp/two)."""
    one, two = tmp_path / "one", tmp_path / "two"
    proc = subprocess.run([PYTHON, "-m", "advgen", "evaluate", "--out", str(one), *opts], env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = torchrun(["evaluate", "--out", str(two), *opts], tmp_path / "logs")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return one, two


def test_evaluate_under_torchrun_matches_a_single_process(ckpt_path, tmp_path):
    """`evaluate` shares its exact searches over two ranks; the report's numbers equal one process's."""
    opts = ["--checkpoint", str(ckpt_path), "--quiet", "--device", "cpu", "--train-images", "200",
            "--onepixel-images", "4", "--pgd-images", "20", "--pgd-steps", "2", "--autoattack-images", "0",
            "--advgan-images", "20", "--advgan-epochs", "1", "--cgan-epochs", "1", "--cgan-samples", "20",
            "--onepixel-train-images", "4", "--retrain-epochs", "1"]
    one, two = evaluate_alone_and_over_two_ranks(opts, tmp_path)

    def numbers(out: Path) -> dict:
        report = json.loads((out / "report.json").read_text())
        return {stage: {attack: {k: v for k, v in m.items() if k != "seconds"} for attack, m in attacks.items()}
                for stage, attacks in report["stages"].items()}

    assert numbers(one) == numbers(two)
    assert json.loads((two / "report.json").read_text())["config"]["processes"] == 2
    for stage in ("before", "after"):
        assert_same_run(one / "state" / f"onepixel_{stage}", two / "state" / f"onepixel_{stage}")
    assert rank_output(tmp_path / "logs", 1) == ("", "")


def test_ablation_under_torchrun_shares_variants_and_matches_a_single_process(ckpt_path, tmp_path):
    """Two ranks share two variants (clean-only and PGD) and give the same numbers as one process."""
    opts = ["--ablation", "--augment", "pgd", "--checkpoint", str(ckpt_path), "--quiet", "--device", "cpu",
            "--train-images", "200", "--onepixel-images", "4", "--pgd-images", "20", "--pgd-steps", "2",
            "--autoattack-images", "0", "--advgan-images", "0", "--retrain-epochs", "1"]
    one, two = evaluate_alone_and_over_two_ranks(opts, tmp_path)

    def numbers(out: Path) -> dict:
        found = json.loads((out / "ablation.json").read_text())
        return {stage: {attack: m["outcomes"] for attack, m in attacks.items()}
                for stage, attacks in found["stages"].items()}

    assert numbers(one) == numbers(two) and set(numbers(two)) == {"before", "clean-only", "only-pgd"}
    assert sorted(p.name for p in (two / "variants").iterdir()) == ["clean-only", "only-pgd"]
