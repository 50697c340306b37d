"""advgen.run and advgen.runtime: one switch for output, a one-rank run of plain calls, the machine described."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from advgen.run import Run, configure_logging, log, progress, speaking, start
from advgen.runtime import machine_info
from run_compare import random_streams


def test_quiet_is_one_switch_for_chatter_and_progress(capsys, monkeypatch):
    monkeypatch.delenv("ADVGEN_QUIET", raising=False)
    configure_logging(quiet=False, is_main=True)
    items = [1, 2]
    assert speaking() and progress(items, "x") is not items
    capsys.readouterr()
    log.info("hello")
    assert capsys.readouterr().err == "advgen: hello\n"
    configure_logging(quiet=True, is_main=True)
    items = [1, 2]
    assert not speaking() and progress(items, "x") is items
    log.info("hidden")
    log.error("shown")
    assert capsys.readouterr().err == "advgen: shown\n"
    configure_logging(quiet=False, is_main=False)  # a non-zero rank says nothing, errors included
    log.error("rank 1")
    assert capsys.readouterr().err == "" and log.level > logging.CRITICAL
    configure_logging(quiet=True)


def test_start_resolves_the_device_once_and_seeds():
    with start("cpu", seed=5, out="somewhere") as run:
        assert run == Run(torch.device("cpu"), 5, run.out) and run.is_main and str(run.out) == "somewhere"
        a = torch.rand(3)
    with start("cpu", seed=5):
        assert torch.equal(a, torch.rand(3))


def test_start_gives_the_callers_random_streams_and_logging_level_back(monkeypatch):
    monkeypatch.delenv("ADVGEN_QUIET", raising=False)
    torch.manual_seed(9)
    before = random_streams()
    log.setLevel(logging.NOTSET)  # a notebook that never configured advgen's logger
    with start("cpu", seed=5, quiet=True):
        torch.rand(3)
        assert log.level == logging.WARNING
    assert random_streams() == before and log.level == logging.NOTSET
    log.setLevel(logging.INFO)
    with pytest.raises(RuntimeError), start("cpu", quiet=True):
        raise RuntimeError("a command that fails")
    assert log.level == logging.INFO
    configure_logging(quiet=True)


def test_machine_info_describes_the_run():
    info = machine_info("cpu")
    assert set(info) == {"platform", "python", "torch", "torchvision", "torchattacks", "device", "cpu", "cpu_count",
                         "gpu"}
    assert info["device"] == "cpu" and info["gpu"] is None and info["cpu_count"] >= 1
    json.dumps(info)
