"""`advgen bench onepixel`: rows agree with each other and the command writes its JSON."""

from __future__ import annotations

import json

import torch
from torch import nn

from advgen.bench import bench_onepixel, exact_to_de_ratio, missed_by_exact, table
from advgen.cli import main
from advgen.models import save_checkpoint
from advgen.runtime import cpu_model


def test_bench_rows_agree_on_a_tiny_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 3)).eval()
    with torch.no_grad():
        model[0].weight.mul_(4)
    x = torch.randint(0, 16, (4, 1, 8, 8)).float() / 15
    with torch.no_grad():
        y = model(x).argmax(1)
    rows = bench_onepixel(model, x, y, levels=16, dense_limit=4, slow_limit=1, device="cpu")
    assert [r.name.split(" (")[0] for r in rows] == ["advgen exact", "advgen exact", "advgen exact",
                                                      "torchattacks OnePixel", "torchattacks OnePixel"]
    pruned, first, dense = rows[0], rows[1], rows[2]
    assert first.vulnerable_indices == pruned.vulnerable_indices and first.evaluated <= pruned.evaluated
    assert pruned.vulnerable_indices == dense.vulnerable_indices
    assert dense.evaluated == 4 * 15 * 64 and dense.candidates_per_second > 0
    assert pruned.evaluated + pruned.pruned == dense.evaluated
    assert "bound_seconds" in pruned.breakdown or pruned.evaluated == dense.evaluated
    assert missed_by_exact(rows) == [] or all(i not in pruned.vulnerable_indices for i in missed_by_exact(rows))
    assert "advgen exact (pruned)" in table(rows)
    assert exact_to_de_ratio(rows) == round(pruned.seconds_per_image / rows[3].seconds_per_image, 3)
    assert exact_to_de_ratio(rows, "advgen exact (pruned, first flip)") == round(
        first.seconds_per_image / rows[3].seconds_per_image, 3)
    assert exact_to_de_ratio(rows[1:]) is None


def test_bench_cli_writes_json(tmp_path, trained_mlp, capsys):
    ckpt = tmp_path / "mlp.pt"
    save_checkpoint(ckpt, trained_mlp)
    out = tmp_path / "bench.json"
    code = main(["bench", "onepixel", "--checkpoint", str(ckpt), "--limit", "1", "--dense-limit", "0",
                 "--slow-limit", "0", "--out", str(out), "--quiet", "--device", "cpu", "--threads", "2"])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["schema_version"] == 1 and [r["images"] for r in result["rows"]] == [1, 1, 1]
    assert result["threads"] == 2 and result["exact_to_de_ratio"] > 0
    assert result["machine"]["cpu"] == cpu_model()  # the ratio depends on the processor, so the file names it
    printed = capsys.readouterr().out
    assert "advgen exact (pruned)" in printed and "exact/DE time ratio" in printed
    assert main(["bench", "onepixel", "--checkpoint", str(ckpt), "--out", str(out), "--quiet"]) == 2
    assert main(["bench", "onepixel", "--checkpoint", str(ckpt), "--out", str(out), "--overwrite", "--quiet",
                 "--threads", "0"]) == 2
