import random

import numpy as np
import pytest
import torch

from advgen.errors import InputError
from advgen.models import build
from advgen.train import TrainConfig, accuracy, fit, random_shift, train_classifier
from run_compare import random_streams


def test_training_learns_and_is_deterministic(small_train, mnist_test):
    test = mnist_test.head(300)
    torch.manual_seed(0)
    a = build("mlp")
    torch.manual_seed(0)
    b = build("mlp")
    cfg = TrainConfig(epochs=3, seed=3, shift=0)
    before = accuracy(a, test)
    fit(a, small_train, cfg, device="cpu")
    fit(b, small_train, cfg, device="cpu")
    assert accuracy(a, test) > max(0.8, before + 0.5)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_random_shift_moves_content_without_scaling():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 4, 4] = 1.0
    moved = random_shift(x.repeat(50, 1, 1, 1), 2, torch.Generator().manual_seed(0))
    assert torch.equal(moved.sum((1, 2, 3)), torch.ones(50))
    assert len({tuple(torch.nonzero(m[0])[0].tolist()) for m in moved}) > 5


def test_train_classifier_records_metadata(small_train, mnist_test):
    ckpt = train_classifier(small_train.head(200), mnist_test.head(100), "mlp", TrainConfig(epochs=1), "cpu",
                            extra=[small_train.subset(slice(200, 300))])
    assert ckpt.meta["train_images"] == 300 and 0 <= ckpt.meta["test_accuracy"] <= 1
    assert ckpt.meta["config"]["epochs"] == 1


def test_training_leaves_the_callers_random_streams_and_repeats(small_train):
    """The training seeds itself so that it repeats; the caller's own shuffling and sampling go on where they were."""
    data, config = small_train.head(64), TrainConfig(epochs=1, seed=2)
    runs = []
    for caller_seed in (5, 6):
        random.seed(caller_seed), np.random.seed(caller_seed), torch.manual_seed(caller_seed)
        before = random_streams()
        runs.append(train_classifier(data, None, "cnn", config, "cpu"))
        assert random_streams() == before
    assert all(torch.equal(p, q) for p, q in zip(runs[0].model.parameters(), runs[1].model.parameters()))


def test_a_training_config_out_of_range_is_named():
    for field, value in (("epochs", 0), ("batch_size", 0), ("lr", 0.0), ("weight_decay", -1e-4), ("shift", -1)):
        with pytest.raises(InputError, match=f"TrainConfig.{field}"):
            TrainConfig(**{field: value})


def test_extra_data_cannot_bring_classes_the_model_lacks(mnist_train):
    from advgen.data import Dataset
    from advgen.train import concat

    extra = Dataset(mnist_train.images[:4], torch.tensor([10, 12, 15, 19]), "extra", num_classes=20)
    with pytest.raises(InputError, match="labels up to 19.*10 classes"):
        concat([mnist_train.head(8), extra])


def test_a_training_state_continues_a_killed_run_and_refuses_another(small_train, tmp_path, monkeypatch):
    from advgen import train

    data, config = small_train.head(200), TrainConfig(epochs=3, seed=1)
    whole = train_classifier(data, None, "cnn", config, "cpu")
    save = train._Saved.save

    def save_then_stop(self, done: int, loss: float, seconds: float) -> None:
        save(self, done, loss, seconds)
        if done == 2:
            raise KeyboardInterrupt  # killed as soon as the second epoch of three is on disk

    with monkeypatch.context() as patch:
        patch.setattr(train._Saved, "save", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            train_classifier(data, None, "cnn", config, "cpu", state=tmp_path / "s.pt")
    resumed = train_classifier(data, None, "cnn", config, "cpu", state=tmp_path / "s.pt")
    assert all(torch.equal(a, b) for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()))
    assert resumed.meta["final_loss"] == whole.meta["final_loss"]
    # the killed run's two epochs count too: alone, the resumed one's would be a third of the whole
    assert resumed.meta["train_seconds"] > 0.6 * whole.meta["train_seconds"]
    with pytest.raises(InputError, match=r"arch \(cnn -> mlp\)"):
        train_classifier(data, None, "mlp", config, "cpu", state=tmp_path / "s.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a state")
    with pytest.raises(InputError):
        train_classifier(data, None, "cnn", config, "cpu", state=tmp_path / "junk.pt")
