"""A realistic evaluation report built by hand (no model training), shared by the report tests."""

from __future__ import annotations

from advgen.report import Measurement, Report


def flags(n: int, *ones: tuple[int, int]) -> str:
    """An outcome string of ``n`` images with ``'1'`` on each half-open span ``(start, stop)``."""
    out = ["0"] * n
    for start, stop in ones:
        out[start:stop] = ["1"] * (stop - start)
    return "".join(out)


def make_stages() -> dict[str, dict[str, Measurement]]:
    """Clean accuracy on 1000 images, the attacks on the first 500, before and after retraining.

    Clean 980 -> 985 (10 gained, 5 lost: not significant); one-pixel vulnerable 48 -> 14 and PGD robust
    60 -> 175 (significant); AdvGAN fooled 201/490 -> 39/492 among clean-correct images.
    """
    before = {
        "clean": Measurement(1000, {"correct": flags(1000, (20, 1000))}, seconds=0.4, note="all test images"),
        "onepixel": Measurement(500, {"vulnerable": flags(500, (0, 48)), "certified": flags(500, (49, 500))},
                                counts={"candidates": 376_320, "pruned": 301_004}, seconds=31.2,
                                note="exact search, first 500 test images"),
        "pgd": Measurement(500, {"robust": flags(500, (0, 60))}, seconds=4.1),
        "advgan": Measurement(500, {"correct": flags(500, (10, 500)), "fooled": flags(500, (10, 211)),
                                    "robust": flags(500, (211, 500))}, seconds=2.0),
    }
    after = {
        "clean": Measurement(1000, {"correct": flags(1000, (0, 10), (25, 1000))}, seconds=0.4, note="all test images"),
        "onepixel": Measurement(500, {"vulnerable": flags(500, (0, 14)), "certified": flags(500, (15, 500))},
                                counts={"candidates": 376_320, "pruned": 322_870}, seconds=27.9,
                                note="exact search, first 500 test images"),
        "pgd": Measurement(500, {"robust": flags(500, (0, 175))}, seconds=4.0),
        "advgan": Measurement(500, {"correct": flags(500, (8, 500)), "fooled": flags(500, (8, 47)),
                                    "robust": flags(500, (47, 500))}, seconds=2.1),
    }
    return {"before": before, "after": after}


def make_report(**overrides) -> Report:
    """Before/after measurements as `advgen evaluate` would record them."""
    fields = dict(
        stages=make_stages(), seed=7, created="2026-11-23T12:00:00Z",
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
