"""advgen.evaluate_config: what follows from the settings alone, checked without running anything."""

from __future__ import annotations

import pytest
import torch

from advgen.errors import InputError
from advgen.evaluate_config import AUGMENTATIONS, Budget, EvaluateConfig
from advgen.harden import HardenConfig

CPU = torch.device("cpu")


def test_budgets_set_their_recipe_and_explicit_values_win():
    assert EvaluateConfig.for_budget("default") == EvaluateConfig()
    robust = EvaluateConfig.for_budget(Budget.ROBUST)
    assert (robust.arch, robust.augment, robust.cgan_samples) == ("cnn-wide", ("pgd", "cgan"), 2000)
    r = robust.retrain
    assert (r.epochs, r.pgd_steps, r.clean_weight, r.certified_weight) == (40, 10, 0.0, 0.0)
    mine = EvaluateConfig.for_budget("robust", retrain={"epochs": 3}, arch="cnn", seed=2)
    assert (mine.arch, mine.retrain.epochs, mine.retrain.pgd_steps, mine.seed) == ("cnn", 3, 10, 2)
    assert EvaluateConfig.for_budget().retrain == HardenConfig()  # the preset's dict was not consumed
    with pytest.raises(InputError, match="unknown budget 'huge'"):
        EvaluateConfig.for_budget("huge")


def test_effective_settings_leave_out_what_takes_no_effect_and_keep_the_rest():
    pgd_only = EvaluateConfig(augment=("pgd",))
    effective = pgd_only.effective(CPU)
    for unused in ("onepixel_train_images", "onepixel_flips_per_image", "advgan_samples", "cgan_samples",
                   "cgan_epochs"):
        assert unused not in effective and unused in pgd_only.settings()
    assert effective == EvaluateConfig(augment=("pgd",), cgan_samples=9, advgan_samples=7).effective(CPU)
    assert effective["autoattack_version"] == "cpu"  # unset: the device's
    assert effective == EvaluateConfig(augment=("pgd",), autoattack_version="cpu").effective(CPU)
    assert effective != EvaluateConfig(augment=("pgd",), autoattack_version="standard").effective(CPU)
    assert "advgan_epochs" in effective  # AdvGAN is still trained to measure
    assert "advgan_epochs" not in EvaluateConfig(augment=("pgd",), advgan_images=0).effective(CPU)
    assert "advgan_epochs" in EvaluateConfig(augment=AUGMENTATIONS, advgan_images=0).effective(CPU)  # a source
    assert EvaluateConfig(autoattack_images=0).effective(CPU)["autoattack_version"] is None


def test_a_measure_only_config_records_no_retraining():
    settings = EvaluateConfig(measure_only=True, cgan_samples=9).settings()
    assert settings["measure_only"] is True and not {"augment", "retrain", "cgan_samples"} & set(settings)
    assert "measure_only" not in EvaluateConfig().settings()  # as before the option existed
    assert "onepixel_time_limit" not in EvaluateConfig().settings()
    assert EvaluateConfig(onepixel_time_limit=5).settings()["onepixel_time_limit"] == 5


def test_retraining_switches_off_the_terms_of_sources_not_asked_for():
    config = EvaluateConfig(seed=3)
    full = config.retraining()
    assert full.seed == 3 and full.pgd_eps == config.retrain.pgd_eps > 0 and full.certified_weight > 0
    clean = config.retraining(())
    assert (clean.pgd_eps, clean.onepixel_weight, clean.certified_weight) == (0.0, 0.0, 0.0)
    assert clean.epochs == full.epochs  # the recipe otherwise stays


def test_coverage_and_counts_past_the_split():
    config = EvaluateConfig(onepixel_images=5000, pgd_images=200, train_images=9000)
    assert config.coverage(1000).startswith("one-pixel: exact enumeration of the first 1000 test images; PGD: the "
                                            "first 200; AutoAttack: the first 500")
    assert config.past_the_split(4000, 1000) == [
        "train_images 9000: more than the 4000 training images there are, so all 4000 are used",
        "onepixel_images 5000: more than the 1000 test images there are, so all 1000 are used"]
    assert EvaluateConfig().past_the_split(4000, 1000) == []
