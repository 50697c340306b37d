"""AutoAttack's per-image worst case, the gradient-masking warning, and `advgen attack --method autoattack`."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import nn

from advgen import measure
from advgen.autoattack import PARTS, AutoAttackConfig, worst_case
from advgen.cli import main
from advgen.errors import InputError
from advgen.models import save_checkpoint
from advgen.report import Report
from advgen.run import local
from advgen.workspace import Workspace

#: Every part, cheaply: enough to find real adversarial examples on a tiny model in seconds.
QUICK = AutoAttackConfig("quick", eps=0.3, parts=PARTS, steps=10, targets=2, queries=150)


class Quantise(nn.Module):
    """Round the input to 16 levels: the prediction barely changes, but every gradient is zero (masking)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 15) / 15


def _stage(tmp_path, model, data, eps, config):
    ws = Workspace(local("cpu", 0), tmp_path)
    pgd = measure.pgd(ws, model, data, eps, 40, "before")
    aa = measure.autoattack(ws, model, data, config, "before", pgd.outcomes["robust"])
    return {"clean": measure.clean(model, data), "pgd": pgd, "autoattack": aa}


def test_worst_case_is_never_above_its_weakest_part(tmp_path, trained_cnn, mnist_test):
    data = mnist_test.head(40)
    cfg = AutoAttackConfig("quick", eps=0.1, parts=PARTS, steps=10, targets=2, queries=150)
    stage = _stage(tmp_path, trained_cnn.model, data, 0.1, cfg)
    aa, pgd = stage["autoattack"], stage["pgd"]
    parts = {p: aa.rate(p).value for p in PARTS}
    assert aa.rate("robust").value <= min(parts.values())
    assert aa.rate("worst").value <= min(aa.rate("robust").value, pgd.rate("robust").value)
    every = [all(aa.outcomes[p][i] == "1" for p in PARTS) for i in range(len(data))]
    assert aa.outcomes["robust"] == "".join("1" if r else "0" for r in every)
    # each part is a saved phase: a rerun reads the flags back, and other settings are refused
    ws = Workspace(local("cpu", 0), tmp_path)
    assert measure.autoattack(ws, trained_cnn.model, data, cfg, "before", pgd.outcomes["robust"]).outcomes == aa.outcomes
    with pytest.raises(InputError, match=r"queries \(150 -> 10\)"):
        measure.autoattack(ws, trained_cnn.model, data, replace(cfg, queries=10), "before")


def test_worst_case_refuses_flags_of_other_images():
    with pytest.raises(ValueError, match="not the same images"):
        worst_case({"apgd-ce": [True, False]}, "101")
    assert worst_case({"a": [True, True, False], "b": [True, False, True]}, "011") == {
        "robust": [True, False, False], "a": [True, True, False], "b": [True, False, True],
        "worst": [False, False, False]}


def test_masking_warning_fires_on_a_model_that_hides_its_gradients(tmp_path, trained_cnn, mnist_test):
    masked = nn.Sequential(Quantise(), trained_cnn.model).eval()
    data = mnist_test.head(30)
    report = Report(stages={"before": _stage(tmp_path, masked, data, 0.3, QUICK)})
    pgd, aa = report.stages["before"]["pgd"].rate("robust"), report.stages["before"]["autoattack"].rate("robust")
    assert pgd.value - aa.value > 0.03, (pgd, aa)
    (warning,) = report.warnings()
    assert "gradient masking (before)" in warning and f"{aa.value:.4f}" in warning
    assert "gradient masking" in json.dumps(report.to_dict()["warnings"])


def test_masking_warning_stays_quiet_on_the_default_model(tmp_path, trained_cnn, mnist_test):
    report = Report(stages={"before": _stage(tmp_path, trained_cnn.model, mnist_test.head(30), 0.3, QUICK)})
    assert report.warnings() == []


def test_versions_and_bad_parts():
    assert AutoAttackConfig.for_device(torch.device("cpu")).version == "cpu"
    assert AutoAttackConfig.named("standard").parts == PARTS
    assert "fab-t" not in AutoAttackConfig.named("cpu").parts
    with pytest.raises(InputError, match="unknown AutoAttack part"):
        AutoAttackConfig("x", parts=("apgd-ce", "pgd"))
    with pytest.raises(InputError, match="choose standard or cpu"):
        AutoAttackConfig.named("fast")


def test_attack_command_runs_autoattack(tmp_path, trained_mlp, capsys):
    ckpt = tmp_path / "mlp.pt"
    save_checkpoint(ckpt, trained_mlp)
    out = tmp_path / "aa"
    code = main(["attack", "--method", "autoattack", "--checkpoint", str(ckpt), "--limit", "4", "--out", str(out),
                 "--device", "cpu", "--quiet"])
    assert code == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 4 and {r["method"] for r in records} == {"autoattack"}
    assert all(r["linf"] is None or r["linf"] <= 0.3 + 1e-6 for r in records)


def test_masking_warning_needs_a_gap_that_is_not_noise():
    from advgen.report import Measurement

    def stage(pgd_robust: int, aa_robust: int) -> dict:
        flags = lambda k: [i < k for i in range(30)]  # noqa: E731
        return {"pgd": Measurement.from_flags({"robust": flags(pgd_robust)}),
                "autoattack": Measurement.from_flags({"robust": flags(aa_robust)})}

    assert Report(stages={"before": stage(2, 1)}).warnings() == []     # 3.3 points, one image: noise
    assert Report(stages={"before": stage(20, 20)}).warnings() == []
    (warning,) = Report(stages={"before": stage(20, 10), "after": stage(5, 5)}).warnings()
    assert warning.startswith("possible gradient masking (before)") and "33.3 points" in warning


def test_an_unknown_part_is_named_not_run_as_square(trained_cnn):
    config = AutoAttackConfig.named("cpu")
    with pytest.raises(InputError, match="unknown AutoAttack part 'apgd_ce'"):
        config.build("apgd_ce", trained_cnn.model, 10)
