"""`advgen augment`: readable outputs for both GANs, reuse of a saved generator, and one-line refusals."""

from __future__ import annotations

import json

import pytest
import torch

from advgen import augment
from advgen import data as datasets
from advgen.cli import main
from advgen.errors import InputError
from advgen.gan import load_generator
from advgen.models import save_checkpoint
from advgen.run import start

FAST = ["--device", "cpu", "--quiet", "--seed", "1"]


def run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture()
def files(tmp_path, small_train, trained_cnn):
    data = tmp_path / "tiny.pt"
    datasets.save_file(data, small_train.head(128))
    ckpt = tmp_path / "cnn.pt"
    save_checkpoint(ckpt, trained_cnn)
    return {"data": str(data), "ckpt": str(ckpt), "out": tmp_path / "out"}


def test_advgan_writes_readable_outputs_and_reuses_generator(files, capsys, tmp_path):
    out = files["out"]
    args = ["augment", "--gan", "advgan", "--data", files["data"], "--checkpoint", files["ckpt"], "--epochs", "1",
            "--eps", "0.2", "--num-samples", "50", "--out", str(out), *FAST]
    code, stdout, err = run(args, capsys)
    assert code == 0, err
    assert "success rate" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["schema_version"] == 1 and summary["gan"] == "advgan" and summary["seed"] == 1
    assert 0 <= summary["success_rate"] <= 1 and summary["eps"] == 0.2 and summary["num_samples"] == 50
    assert summary["seconds"] > 0 and summary["generator_train_seconds"] > 0
    samples = datasets.load_file(out / "samples.pt")
    tiny = datasets.load_file(files["data"])
    assert len(samples) == 50 and samples.input_shape == (1, 28, 28)
    assert float(samples.images.min()) >= 0 and float(samples.images.max()) <= 1
    assert (out / "samples.png").read_bytes()[:4] == b"\x89PNG"
    assert load_generator(out / "generator.pt").config.eps == 0.2
    assert set(samples.labels.tolist()) <= set(tiny.labels.tolist())
    # 8-bit images like the data they came from, each within eps of a source image
    assert samples.levels == 256 and torch.equal(samples.images * 255, (samples.images * 255).round())
    dist = (samples.images.flatten(1)[:, None] - tiny.images.flatten(1)[None]).abs().amax(2)
    assert (dist.min(1).values <= 0.2 + 1e-6).all()

    # refuses to clobber, then reuses the saved generator elsewhere
    code, _, err = run(args, capsys)
    assert code == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    out2 = tmp_path / "out2"
    code, _, err = run(["augment", "--gan", "advgan", "--data", files["data"], "--checkpoint", files["ckpt"],
                        "--generator", str(out / "generator.pt"), "--num-samples", "20", "--out", str(out2), *FAST],
                       capsys)
    assert code == 0, err
    again = json.loads((out2 / "summary.json").read_text())
    assert again["generator_loaded_from"] == str(out / "generator.pt")
    assert again["success_rate"] == summary["success_rate"]

    # the samples feed `advgen train --extra-data`
    code, stdout, err = run(["train", "--model", "mlp", "--epochs", "1", "--data", files["data"], "--extra-data",
                             str(out / "samples.pt"), "--out", str(tmp_path / "m.pt"), *FAST], capsys)
    assert code == 0 and "178 images" in stdout, err


def test_cgan_trains_target_when_no_checkpoint(files, capsys):
    out = files["out"]
    code, stdout, err = run(["augment", "--gan", "cgan", "--data", files["data"], "--epochs", "1",
                             "--num-samples", "30", "--out", str(out), *FAST], capsys)
    assert code == 0, err
    assert "GAN-test" in stdout  # --quiet: the training announcement is not printed
    summary = json.loads((out / "summary.json").read_text())
    assert 0 <= summary["gan_test"] <= 1 and 0 <= summary["gan_train"] <= 1
    samples = datasets.load_file(out / "samples.pt")
    assert samples.labels.tolist() == [i % 10 for i in range(30)]
    # on the level grid they claim, so the exact search takes them
    code, stdout, err = run(["attack", "--data", str(out / "samples.pt"), "--checkpoint", files["ckpt"],
                             "--limit", "3", "--out", str(out.parent / "attacked"), *FAST], capsys)
    assert code == 0 and json.loads(stdout)["images"] == 3, err


def test_resume_continues_an_unfinished_run(files, capsys):
    out = files["out"]
    base = ["augment", "--gan", "cgan", "--data", files["data"], "--checkpoint", files["ckpt"], "--num-samples", "10",
            "--out", str(out), *FAST]
    assert run(base + ["--epochs", "1"], capsys)[0] == 0
    for name in ("generator.pt", "samples.pt", "samples.png", "summary.json"):
        (out / name).unlink()  # as if killed before writing outputs
    code, _, err = run(base + ["--epochs", "2"], capsys)
    assert code == 2 and "--resume" in err
    code, _, err = run(base + ["--epochs", "2", "--resume"], capsys)
    assert code == 0, err
    gen = load_generator(out / "generator.pt")
    assert [h["epoch"] for h in gen.metrics["history"]] == [1, 2]


@pytest.mark.parametrize("extra, needle", [
    (["--gan", "nope"], "--gan"),
    (["--gan", "cgan", "--eps", "0.1"], "--eps applies"),
    (["--gan", "advgan", "--eps", "2"], "--eps"),
    (["--gan", "advgan", "--generator", "/nonexistent.pt"], "not found"),
    (["--gan", "advgan", "--generator", "/nonexistent.pt", "--resume"], "cannot be combined"),
    (["--gan", "advgan", "--checkpoint", "/nonexistent.pt"], "not found"),
    (["--gan", "advgan", "--num-samples", "0"], "--num-samples"),
    (["--gan", "cgan", "--data", "nope"], "unknown dataset"),
])
def test_bad_input_is_one_line_exit_2(files, capsys, extra, needle):
    code, _, err = run(["augment", *extra, "--out", str(files["out"]), *FAST], capsys)
    assert code == 2, err
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_generator_of_wrong_kind_or_corrupt(files, capsys, tmp_path):
    out = files["out"]
    assert run(["augment", "--gan", "cgan", "--data", files["data"], "--checkpoint", files["ckpt"], "--epochs", "1",
                "--num-samples", "10", "--out", str(out), *FAST], capsys)[0] == 0
    code, _, err = run(["augment", "--gan", "advgan", "--data", files["data"], "--checkpoint", files["ckpt"],
                        "--generator", str(out / "generator.pt"), "--out", str(tmp_path / "o2"), *FAST], capsys)
    assert code == 2 and "not advgan" in err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    code, _, err = run(["augment", "--gan", "cgan", "--data", files["data"], "--checkpoint", files["ckpt"],
                        "--generator", str(bad), "--out", str(tmp_path / "o3"), *FAST], capsys)
    assert code == 2 and "corrupted" in err and len(err.strip().splitlines()) == 1


def test_a_model_in_memory_is_the_target_as_its_checkpoint_is(files, capsys, trained_cnn, tmp_path):
    """``advgen.augment(..., model=)``: the samples and figures of the saved checkpoint, the caller's model untouched."""
    kw = dict(data_source=files["data"], epochs=1, eps=0.2, num_samples=50)
    weights = {k: v.clone() for k, v in trained_cnn.model.state_dict().items()}
    with start("cpu", seed=1, quiet=True) as r:
        saved = augment("advgan", checkpoint=files["ckpt"], out=tmp_path / "saved", run=r, **kw)
    with start("cpu", seed=1, quiet=True) as r:
        held = augment("advgan", model=trained_cnn.model, out=tmp_path / "held", run=r, **kw)
    assert held.summary["success_rate"] == saved.summary["success_rate"]
    assert held.summary["target"]["arch"] == "Sequential (in memory)"
    a, b = (torch.load(tmp_path / d / "samples.pt", weights_only=True) for d in ("saved", "held"))
    assert torch.equal(a["images"], b["images"])
    assert all(torch.equal(v, weights[k]) for k, v in trained_cnn.model.state_dict().items())
    with pytest.raises(InputError, match="not both"):
        augment("advgan", checkpoint=files["ckpt"], model=trained_cnn.model, out=tmp_path / "both")
    with pytest.raises(InputError, match="model must be a torch.nn.Module, got OrderedDict"):
        augment("advgan", model=trained_cnn.model.state_dict(), out=tmp_path / "dict")
