"""A realistic evaluation report built by hand (no model training), shared by the report tests."""

from __future__ import annotations

from advgen.report import Report, StageMetrics


def make_report(**overrides) -> Report:
    """Before/after metrics as `advgen evaluate` would record them on a 500-image test subset."""
    before = StageMetrics(clean_accuracy=0.98, onepixel_robust_accuracy=0.902, onepixel_images=500,
                          onepixel_vulnerable=48, onepixel_candidates=376_320, onepixel_pruned=301_004,
                          pgd_robust_accuracy=0.12, advgan_success_rate=0.41, advgan_robust_accuracy=0.58,
                          seconds={"clean": 0.4, "onepixel": 31.2, "pgd": 4.1, "advgan": 2.0})
    after = StageMetrics(clean_accuracy=0.985, onepixel_robust_accuracy=0.97, onepixel_images=500,
                         onepixel_vulnerable=14, onepixel_candidates=376_320, onepixel_pruned=322_870,
                         pgd_robust_accuracy=0.35, advgan_success_rate=0.08, advgan_robust_accuracy=0.91,
                         seconds={"clean": 0.4, "onepixel": 27.9, "pgd": 4.0, "advgan": 2.1})
    fields = dict(
        before=before, after=after, seed=7, created="2026-11-23T12:00:00Z",
        machine={"platform": "Linux-test", "python": "3.11.7", "torch": "2.4.0", "torchvision": None,
                 "torchattacks": "3.5.1", "device": "cpu", "cpu_count": 2, "gpu": None},
        config={"data": "mnist-sample", "model": "cnn", "test_subset": 500, "eps": 0.3,
                "augment": {"onepixel": True, "advgan": True, "pgd": False, "cgan": True}},
        timings={"train_before": 20.5, "attacks_before": 37.7, "augment": 12.0, "retrain": 25.0,
                 "attacks_after": 34.4, "total": 129.6},
        augmentation={"onepixel": 480, "advgan": 1000, "cgan": 500},
        notes=["one-pixel search is exact: every pixel and every extreme colour was tried"],
        artifacts={"examples_before": "examples_before.png", "heatmaps_after": "heatmaps_after.png"},
    )
    fields.update(overrides)
    return Report(**fields)
