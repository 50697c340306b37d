"""advgen.resume: fingerprints name what changed, and every long command refuses a resume under other settings."""

from __future__ import annotations

import json
import logging

import pytest

from advgen.cli import main
from advgen.errors import InputError
from advgen.models import save_checkpoint
from advgen.resume import (Phases, check, claim, data_sha256, differences, fingerprint, model_sha256,
                           prepare_dir)


def test_fingerprint_is_flat_json_with_digests(trained_cnn, mnist_test):
    fp = fingerprint({"eps": 0.3, "retrain": {"epochs": 2}, "sizes": (1, 2)}, model=trained_cnn.model,
                     data=mnist_test.head(5), seed=4)
    assert fp["retrain.epochs"] == 2 and fp["sizes"] == [1, 2] and fp["seed"] == 4 and "advgen" in fp
    assert fp["model_sha256"] == model_sha256(trained_cnn.model) and len(fp["model_sha256"]) == 64
    assert fp["data_sha256"] == data_sha256(mnist_test.head(5)) != data_sha256(mnist_test.head(6))
    assert json.loads(json.dumps(fp)) == fp


def test_differences_name_old_and_new_values():
    assert differences({"a": 1, "b": "x"}, {"a": 1, "b": "y", "c": True}) == ["b (x -> y)", "c (unset -> true)"]
    assert differences({"a": 1}, {"a": 1}) == []
    with pytest.raises(InputError, match=r"made with different settings: eps \(0.3 -> 0.1\)"):
        check({"eps": 0.3}, {"eps": 0.1}, "out")


def test_claim_writes_once_then_checks(tmp_path):
    path = tmp_path / "run.json"
    assert claim(path, {"eps": 0.3}, "out") is False and json.loads(path.read_text()) == {"eps": 0.3}
    assert claim(path, {"eps": 0.3}, "out") is True
    with pytest.raises(InputError, match="eps"):
        claim(path, {"eps": 0.1}, "out")


def test_resume_with_nothing_saved_says_it_starts_fresh(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="advgen"):
        prepare_dir(tmp_path, ["report.json", "state"], resume=True, overwrite=False, state="state")
        assert [r.getMessage() for r in caplog.records] == [
            f"--resume: nothing saved in {tmp_path} yet; starting a fresh run"]
        caplog.clear()
        (tmp_path / "state").mkdir()
        prepare_dir(tmp_path, ["report.json", "state"], resume=True, overwrite=False, state="state")
        assert caplog.records == []


def test_phases_compute_once_and_refuse_other_inputs(tmp_path):
    phases, calls = Phases(tmp_path / "state"), []

    def compute():
        calls.append(1)
        return {"robust": "0110"}

    assert phases.json("pgd", {"eps": 0.3}, compute) == {"robust": "0110"}
    assert phases.json("pgd", {"eps": 0.3}, compute) == {"robust": "0110"} and len(calls) == 1
    with pytest.raises(InputError, match=r"phase pgd.*eps \(0.3 -> 0.2\)"):
        phases.json("pgd", {"eps": 0.2}, compute)


@pytest.fixture
def ckpt(tmp_path, trained_cnn):
    path = tmp_path / "cnn.pt"
    save_checkpoint(path, trained_cnn)
    return str(path)


def test_attack_resume_with_a_changed_setting_exits_2(ckpt, tmp_path, capsys):
    args = ["attack", "--checkpoint", ckpt, "--limit", "2", "--out", str(tmp_path / "a"), "--quiet", "--device", "cpu"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args + ["--resume", "--mode", "first"]) == 2
    err = capsys.readouterr().err
    assert "mode (full -> first)" in err and len(err.strip().splitlines()) == 1
    assert main(args + ["--resume"]) == 0
    elsewhere = tmp_path / "copy.pt"  # the same weights by another path resume; other weights do not
    elsewhere.write_bytes(open(ckpt, "rb").read())
    assert main([a if a != ckpt else str(elsewhere) for a in args] + ["--resume"]) == 0


def test_augment_resume_with_a_changed_setting_exits_2(ckpt, tmp_path, capsys):
    args = ["augment", "--gan", "advgan", "--checkpoint", ckpt, "--epochs", "1", "--num-samples", "8",
            "--out", str(tmp_path / "g"), "--quiet", "--device", "cpu", "--data"]
    data = tmp_path / "tiny.pt"
    from advgen import data as datasets

    datasets.save_file(data, datasets.load("mnist-sample", "train").head(64))
    assert main(args + [str(data)]) == 0
    capsys.readouterr()
    assert main(args + [str(data), "--resume", "--eps", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "eps (0.3 -> 0.1)" in err and len(err.strip().splitlines()) == 1


def test_an_evaluate_phase_starts_and_continues_without_announcing_a_resume(tmp_path, caplog, trained_mlp,
                                                                           mnist_test):
    """The evaluator's exact-search phases continue what their folder holds; a fresh phase is a plain run,
    so a run without ``--resume`` never logs "--resume: nothing saved"."""
    from advgen.attack_run import statuses
    from advgen.measure import exact_search
    from advgen.run import local

    where, data = tmp_path / "state" / "onepixel_before", mnist_test.head(6)
    with caplog.at_level(logging.INFO, logger="advgen"):
        exact_search(local("cpu"), trained_mlp.model, data, where)
        first = statuses(where)
        exact_search(local("cpu"), trained_mlp.model, data, where)  # continues: the records are there
    assert not [r for r in caplog.records if "--resume" in r.getMessage()]
    assert statuses(where) == first and len(first) == 6


def test_augment_resume_with_another_gan_exits_2(ckpt, tmp_path, capsys):
    """Each GAN keeps its own training state, so only the run's own fingerprint can tell the two apart."""
    args = ["augment", "--checkpoint", ckpt, "--epochs", "1", "--num-samples", "8", "--out", str(tmp_path / "g"),
            "--quiet", "--device", "cpu", "--data"]
    data = tmp_path / "tiny.pt"
    from advgen import data as datasets

    datasets.save_file(data, datasets.load("mnist-sample", "train").head(64))
    assert main(args + [str(data), "--gan", "advgan"]) == 0
    summary = (tmp_path / "g" / "summary.json").read_text()
    capsys.readouterr()
    assert main(args + [str(data), "--gan", "cgan", "--resume"]) == 2
    assert "gan (advgan -> cgan)" in capsys.readouterr().err
    assert (tmp_path / "g" / "summary.json").read_text() == summary


def test_resume_refuses_outputs_without_a_saved_run(tmp_path, capsys):
    """A report copied into OUT is not a run to continue: --resume must not replace it."""
    (tmp_path / "report.json").write_text("{}")
    with pytest.raises(InputError, match=r"no saved state \(state\)"):
        prepare_dir(tmp_path, ["report.json", "state"], resume=True, overwrite=False, state="state")
    assert main(["evaluate", "--onepixel-images", "2", "--out", str(tmp_path), "--resume", "--device", "cpu"]) == 2
    assert "no saved state" in capsys.readouterr().err
    assert (tmp_path / "report.json").read_text() == "{}"


def test_overwrite_never_deletes_the_checkpoint_the_run_reads(ckpt, tmp_path, capsys):
    """A model an earlier run kept in OUT, given back as --checkpoint with --overwrite, is refused, not lost."""
    out = tmp_path / "a"
    args = ["attack", "--limit", "1", "--out", str(out), "--quiet", "--device", "cpu"]
    assert main([*args, "--checkpoint", ckpt]) == 0
    kept = out / "model.pt"
    kept.write_bytes(open(ckpt, "rb").read())
    capsys.readouterr()
    assert main([*args, "--checkpoint", str(kept), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "--overwrite would delete" in err and len(err.strip().splitlines()) == 1
    assert kept.read_bytes() == open(ckpt, "rb").read() and (out / "summary.json").exists()
    (tmp_path / "state").mkdir()  # evaluate's retrained model, inside the state folder --overwrite clears
    (tmp_path / "state" / "retrained.pt").write_text("weights")
    with pytest.raises(InputError, match="retrained.pt, which this run reads"):
        prepare_dir(tmp_path, ["state"], resume=False, overwrite=True, state="state",
                    reads=[tmp_path / "state" / "retrained.pt"])
    prepare_dir(tmp_path, ["state"], resume=False, overwrite=True, state="state", reads=[None, ckpt])
    assert not (tmp_path / "state").exists()
