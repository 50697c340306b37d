"""The ablation: which variants run, that they differ only in their data, its report, and resuming per variant."""

from __future__ import annotations

import json

import pytest

from advgen.ablation import ablate, variants
from advgen.cli import main
from advgen.evaluate_config import EvaluateConfig
from advgen.harden import HardenConfig
from advgen.models import save_checkpoint
from advgen.report.ablation import Ablation
from advgen.sources import SOURCES

#: Retraining settings a variant may change: the data it mixes in and the on-the-fly terms it turns on.
DATA_KEYS = {"extra", "retrain.pgd_eps", "retrain.certified_weight", "retrain.onepixel_weight"}


def test_variants_cover_clean_each_alone_all_but_each_and_all():
    names = [v.name for v in variants(SOURCES)]
    assert names == ["clean-only", *[f"only-{s}" for s in SOURCES], *[f"all-but-{s}" for s in SOURCES], "all"]
    two = variants(("onepixel", "pgd"))  # with two sources "all but one" is "the other alone": run once
    assert [(v.name, v.sources) for v in two] == [("clean-only", ()), ("only-onepixel", ("onepixel",)),
                                                  ("only-pgd", ("pgd",)), ("all", ("onepixel", "pgd"))]


@pytest.fixture(scope="module")
def done(tmp_path_factory, trained_mlp):
    root = tmp_path_factory.mktemp("ablation")
    ckpt = root / "mlp.pt"
    save_checkpoint(ckpt, trained_mlp)
    config = EvaluateConfig(train_images=200, onepixel_images=3, pgd_images=30, pgd_steps=3, autoattack_images=0,
                            advgan_images=30, advgan_epochs=1, onepixel_train_images=200,
                            retrain=HardenConfig(epochs=1), seed=0)
    result = ablate(config, root / "out", ckpt, used=("onepixel", "pgd", "certified"), device="cpu", quiet=True)
    return root, ckpt, result, config


def test_variants_differ_only_in_their_data(done):
    root, _, result, _ = done
    saved = {name: json.loads((root / "out" / "variants" / name / "state" / "retrained.fingerprint.json").read_text())
             for name in result.variants}
    base = saved["clean-only"]
    assert base["extra"] == [] and base["retrain.pgd_eps"] == 0 and base["retrain.certified_weight"] == 0
    for name, fp in saved.items():
        assert {k for k in {*fp, *base} if fp.get(k) != base.get(k)} <= DATA_KEYS, name
        assert fp["model_sha256"] == base["model_sha256"] and fp["data_sha256"] == base["data_sha256"]
        used = result.variants[name]
        assert (fp["retrain.pgd_eps"] > 0) == ("pgd" in used)
        assert (fp["retrain.certified_weight"] > 0) == ("certified" in used)
        assert len(fp["extra"]) == ("onepixel" in used)  # the flips mined once, shared by every variant using them
    assert len({tuple(fp["extra"]) for name, fp in saved.items() if fp["extra"]}) == 1


def test_report_pairs_every_variant_with_clean_only(done):
    root, _, result, _ = done
    loaded = Ablation.from_dict(json.loads((root / "out" / "ablation.json").read_text()))
    assert loaded.variants == result.variants and len(loaded.variants) == 8
    data = loaded.to_dict()
    assert set(data["against_baseline"]) == set(result.variants) - {"clean-only"}
    paired = data["against_baseline"]["all"]["clean.correct"]
    assert paired["paired"] is True and paired["effect"] in ("better", "worse", "no significant change")
    md = (root / "out" / "ablation.md").read_text()
    assert md.count("| all-but-") == 2 * 3 and "Against clean-only" in md  # both tables, three sources
    assert (root / "out" / "ablation.png").read_bytes().startswith(b"\x89PNG")
    assert "data:image/png;base64," in (root / "out" / "ablation.html").read_text()


def test_resume_reuses_variants_and_refuses_other_settings(done, capsys):
    root, ckpt, result, config = done
    kept = root / "out" / "variants" / "all" / "state" / "retrained.pt"
    stamp = kept.stat().st_mtime_ns
    again = ablate(config, root / "out", ckpt, used=("onepixel", "pgd", "certified"), resume=True, device="cpu",
                   quiet=True)
    assert {k: {a: m.outcomes for a, m in v.items()} for k, v in again.stages.items()} == \
        {k: {a: m.outcomes for a, m in v.items()} for k, v in result.stages.items()}
    assert kept.stat().st_mtime_ns == stamp  # read back, not retrained
    common = ["evaluate", "--ablation", "--checkpoint", str(ckpt), "--out", str(root / "out"), "--quiet",
              "--device", "cpu", "--train-images", "200", "--onepixel-images", "3", "--pgd-images", "30",
              "--pgd-steps", "3", "--autoattack-images", "0", "--advgan-images", "30", "--advgan-epochs", "1",
              "--onepixel-train-images", "200", "--augment", "onepixel,pgd,certified"]
    capsys.readouterr()
    assert main(common + ["--retrain-epochs", "2", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "retrain.epochs (1 -> 2)" in err and len(err.strip().splitlines()) == 1
    assert main(common + ["--retrain-epochs", "1", "--fail-under", "clean=0.5"]) == 2
    assert main(common + ["--retrain-epochs", "1"]) == 2  # an earlier run is never mixed in silently


def test_the_undecided_rate_is_shown_only_under_a_time_limit():
    from advgen.report import Measurement
    from advgen.report.ablation import Ablation

    def flags(bits: str) -> list[bool]:
        return [b == "1" for b in bits]

    def stages(**extra):
        onepixel = Measurement.from_flags({"vulnerable": flags("0100"), "certified": flags("1000"),
                                           **{k: flags(v) for k, v in extra.items()}})
        return {v: {"onepixel": onepixel} for v in ("before", "clean-only", "all")}

    variants = {"clean-only": [], "all": ["pgd"]}
    plain = Ablation(variants=variants, stages=stages())
    limited = Ablation(variants=variants, stages=stages(timeout="0011"))
    assert [m.key for m in plain.metrics()] == ["onepixel.vulnerable"]
    assert [m.key for m in limited.metrics()] == ["onepixel.vulnerable", "onepixel.timeout"]
    assert "0.5000 (2/4)" in limited.table().rows[0][3]
