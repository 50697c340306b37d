"""Compare two `advgen attack` output directories, ignoring only what may differ between runs (timing), and the
random streams of this process before and after a call."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from advgen.files import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("seconds", "seconds_per_image")


def random_streams() -> tuple:
    """Python's, NumPy's and torch's CPU random states, comparable with ``==``: a training or an attack called
    from a user's own loop must leave them as it found them."""
    return random.getstate(), np.random.get_state()[1].tobytes(), torch.get_rng_state().numpy().tobytes()


def without_time(rec: dict) -> dict:
    """A record or summary without its timing fields (also inside the exact method's record)."""
    rec = {k: v for k, v in rec.items() if k not in TIMING}
    if rec.get("exact"):
        rec["exact"] = {k: v for k, v in rec["exact"].items() if k not in TIMING}
    return rec


def clean_lines(path: Path) -> list[dict]:
    """Every line of a JSON-lines file, asserting none is torn or corrupt."""
    raw = path.read_text()
    assert raw == "" or raw.endswith("\n"), f"{path} ends with a torn line"
    return [json.loads(line) for line in raw.splitlines()]


def assert_same_run(a: Path, b: Path) -> None:
    """Same summary, same records in the same (index) order, same adversarial set; no leftover part files."""
    sa, sb = (without_time(json.loads((d / "summary.json").read_text())) for d in (a, b))
    assert sa == sb
    ra, rb = ([without_time(r) for r in clean_lines(d / "records.jsonl")] for d in (a, b))
    assert [r["index"] for r in rb] == sorted(r["index"] for r in rb)
    assert ra == rb
    assert read_jsonl(b / "records.jsonl") == clean_lines(b / "records.jsonl")
    xa, xb = (torch.load(d / "adversarial.pt", weights_only=True) for d in (a, b))
    assert xa.keys() == xb.keys()
    for key in xa:
        if isinstance(xa[key], torch.Tensor):
            assert torch.equal(xa[key], xb[key]), key
        else:
            assert xa[key] == xb[key], key
    assert not list(b.glob("records.rank-*.jsonl"))


def subprocess_env() -> dict[str, str]:
    """Environment for child `advgen` processes: this checkout first on the path, one thread each, quiet."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", ADVGEN_QUIET="1", PYTHONUNBUFFERED="1")
    return env


PYTHON = sys.executable


def kill_when(args: list[str], env: dict[str, str], ready: Callable[[], bool], timeout: float = 300) -> bool:
    """Run ``args`` as a child and SIGKILL it as soon as ``ready()`` holds: True when it was killed so, False when
    it ended first (and then it must have ended well). A child that is not ready within ``timeout`` seconds
    fails the test; none outlives the call."""
    child = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while child.poll() is None and not ready():
            assert time.monotonic() < deadline, f"not ready to kill within {timeout:g} s: {' '.join(args)}"
            time.sleep(0.01)
        killed = child.poll() is None
        if killed:
            os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
        assert killed or child.returncode == 0, f"ended with exit code {child.returncode}: {' '.join(args)}"
        return killed
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
