import logging
import warnings

import pytest
import torch
from torch.nn import functional as F

from advgen.errors import InputError
from advgen.harden import HardenConfig, harden, short_ramps, worst_pixel
from run_compare import random_streams


def test_worst_pixel_changes_one_pixel_to_an_extreme_and_hurts(trained_cnn, mnist_test):
    model = trained_cnn.model.eval()
    x, y = mnist_test.images[:64], mnist_test.labels[:64]
    adv = worst_pixel(model, x, y)
    changed = (adv != x).flatten(1)
    assert (changed.sum(1) <= 1).all() and changed.any()
    moved = adv[adv != x]
    assert ((moved == 0) | (moved == 1)).all()
    with torch.no_grad():
        assert F.cross_entropy(model(adv), y) > F.cross_entropy(model(x), y)


def test_harden_returns_a_retrained_copy(trained_mlp, small_train, caplog):
    before = {k: v.clone() for k, v in trained_mlp.model.state_dict().items()}
    streams = random_streams()
    with caplog.at_level(logging.WARNING, logger="advgen"):
        model, info = harden(trained_mlp.model, small_train.head(128), [small_train.subset(slice(128, 160))],
                             HardenConfig(epochs=1, pgd_steps=1), device="cpu")
    assert random_streams() == streams  # PGD's starts and the sampled pixels drew from the retraining's own seed
    # one epoch against the default ramps: PGD ends at a third of its radius, the certified term never acts
    assert [r.getMessage() for r in caplog.records] == short_ramps(HardenConfig(epochs=1)) != []
    assert all(torch.equal(v, trained_mlp.model.state_dict()[k]) for k, v in before.items())
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert info["train_images"] == 160 and info["epochs"] == 1


def test_no_certified_ramp_means_full_weight_from_the_first_step(trained_mlp, small_train):
    """``certified_ramp_epochs=0`` switches the ramp off; it used to leave the first epoch without the term."""
    common = dict(epochs=1, pgd_eps=0.0, clean_weight=1.0, seed=0)
    plain, _ = harden(trained_mlp.model, small_train.head(128), None, HardenConfig(certified_weight=0.0, **common),
                      device="cpu")
    ramped, _ = harden(trained_mlp.model, small_train.head(128), None,
                       HardenConfig(certified_weight=0.5, certified_ramp_epochs=4, **common), device="cpu")
    at_once, _ = harden(trained_mlp.model, small_train.head(128), None,
                        HardenConfig(certified_weight=0.5, certified_ramp_epochs=0, **common), device="cpu")
    def equal(a, b) -> bool:
        return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

    assert equal(plain, ramped) and not equal(plain, at_once)


def _mnist14(data, n):
    """MNIST halved to 14x14 and 16 levels: a one-pixel problem small enough to search exactly in a test."""
    from advgen import onepixel
    from advgen.data import Dataset

    return Dataset(onepixel.quantize(F.avg_pool2d(data.images[:n], 2), 16), data.labels[:n], "mnist14", 16, 10)


def test_a_small_hardening_run_lowers_the_exact_vulnerable_count(mnist_train):
    """A converged 14x14 CNN, fine-tuned with the certified one-pixel term: the exact search, judging the
    images it trained on, finds clearly fewer vulnerable ones. (Whether the term beats plain fine-tuning
    is a full-scale question; the README gives that comparison on the 1,000 test images.)"""
    from advgen import onepixel
    from advgen.models import build
    from advgen.train import TrainConfig, fit

    train = _mnist14(mnist_train, 1000)
    torch.manual_seed(0)
    model = build("cnn", (1, 14, 14), 10)
    fit(model, train, TrainConfig(epochs=15, seed=0), device="cpu")
    judged = train.head(200)

    def vulnerable(m) -> int:
        found = onepixel.attack(m, judged.images, judged.labels, levels=16, device="cpu")
        return sum(r.status == "vulnerable" for r in found)

    config = HardenConfig(epochs=8, pgd_eps=0.0, clean_weight=1.0, shift=0, certified_weight=0.5,
                          certified_ramp_epochs=2)
    hardened, _ = harden(model, train, None, config, device="cpu")
    start, after = vulnerable(model), vulnerable(hardened)
    assert after <= start - 8, (start, after)


def test_unsupported_model_retrains_without_the_certified_term(small_train):
    import logging

    from torch import nn

    class Odd(nn.Module):  # no rule for the running product in forward, so no bound
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(784, 10)

        def forward(self, x):
            return self.fc(x.flatten(1)).cumprod(1)

    said: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("advgen")
    logger.addHandler(handler)
    try:
        _, info = harden(Odd(), small_train.head(64), None,
                         HardenConfig(epochs=1, pgd_eps=0.0, certified_weight=0.5), device="cpu")
    finally:
        logger.removeHandler(handler)
    assert info["epochs"] == 1 and any("without the certified one-pixel term" in s for s in said)


def test_trades_term_makes_predictions_stable_under_its_own_attack(trained_mlp, small_train, mnist_test):
    """TRADES fine-tuning lowers the KL divergence its adversary finds, compared with the same fine-tune without it."""
    from torchattacks import TPGD

    def divergence(model):
        x = mnist_test.images[:200]
        model.eval()
        adv = TPGD(model, eps=0.1, alpha=0.025, steps=10)(x, mnist_test.labels[:200])
        with torch.no_grad():
            return float(F.kl_div(F.log_softmax(model(adv), 1), F.softmax(model(x), 1), reduction="batchmean"))

    common = dict(epochs=2, pgd_steps=5, pgd_ramp_epochs=1, certified_weight=0.0)
    plain, _ = harden(trained_mlp.model, small_train.head(512), None, HardenConfig(pgd_eps=0.0, **common),
                      device="cpu")
    trades, _ = harden(trained_mlp.model, small_train.head(512), None,
                       HardenConfig(pgd_eps=0.1, trades_beta=6.0, **common), device="cpu")
    assert divergence(trades) < 0.5 * divergence(plain)


def test_short_ramps_say_what_a_short_retraining_never_reaches():
    assert short_ramps(HardenConfig()) == []  # the default: 20 epochs, ramps of 3 and 4
    pgd, certified = short_ramps(HardenConfig(epochs=2))
    assert pgd.endswith("it ends at eps 0.2, not 0.3")  # radius 0.3 * (epoch + 1) / 3 at epoch 1
    assert certified.endswith("it ends at 0.125, not 0.5")  # weight 0.5 * epoch / 4 at epoch 1
    assert short_ramps(HardenConfig(epochs=4, pgd_ramp_epochs=4, certified_ramp_epochs=3)) == []
    assert len(short_ramps(HardenConfig(epochs=4, certified_ramp_epochs=4))) == 1  # the last epoch is at 3/4
    assert short_ramps(HardenConfig(epochs=1, pgd_ramp_epochs=0, certified_ramp_epochs=0)) == []
    assert short_ramps(HardenConfig(epochs=1, pgd_eps=0.0, certified_weight=0.0)) == []


@pytest.mark.parametrize("field, value", [("clean_weight", 1.5), ("pgd_eps", -0.1), ("certified_ramp_epochs", -1),
                                          ("epochs", 0), ("batch_size", 0), ("pgd_steps", 0), ("lr", -1.0),
                                          ("certified_weight", float("nan"))])
def test_a_recipe_out_of_range_is_named(field, value):
    """A clean weight above 1 would make PGD's weight negative and train the model towards its own attack."""
    with pytest.raises(InputError, match=f"HardenConfig.{field}"):
        HardenConfig(**{field: value})


def test_harden_names_a_model_that_does_not_fit_the_data(trained_cnn):
    from advgen.data import Dataset

    data = Dataset(torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 2, 3]), "random-32")
    with pytest.raises(InputError, match="do not fit the model"):
        harden(trained_cnn.model, data, None, HardenConfig(epochs=1), device="cpu")


def test_the_pgd_term_never_gets_a_negative_weight():
    with pytest.raises(InputError, match="at most 1"):
        HardenConfig(clean_weight=0.55, onepixel_weight=0.5)
    HardenConfig(clean_weight=0.55, onepixel_weight=0.5, pgd_eps=0.0)  # no PGD term: nothing to weigh


def test_a_model_in_train_mode_gets_the_certified_term_and_keeps_its_statistics(small_train):
    """The bound checks itself with eval statistics; before, a batch-norm model handed over in train mode
    failed that check, lost the certified term without an error, and had its running statistics moved."""
    from torch import nn

    from advgen.onepixel.certified import PixelBound

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 13 * 13, 10)).train()
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    PixelBound(model, (1, 28, 28), torch.device("cpu"))
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())
    common = dict(epochs=1, pgd_eps=0.0, clean_weight=1.0, certified_ramp_epochs=0, seed=0)
    plain, _ = harden(model, small_train.head(64), None, HardenConfig(certified_weight=0.0, **common), device="cpu")
    bounded, info = harden(model, small_train.head(64), None, HardenConfig(certified_weight=0.5, **common),
                           device="cpu")
    assert info["certified_term"] and info["final_pgd_eps"] == 0.0
    assert any(not torch.equal(a, b) for a, b in zip(plain.state_dict().values(), bounded.state_dict().values()))


@pytest.mark.parametrize("bad, needle", [
    (dict(epochs=1.5), "epochs must be a finite integer"), (dict(lr=float("inf")), "lr must be a finite number"),
    (dict(seed=-1), "seed must be at least 0"),
    (dict(certified_top=0, certified_random=0), "certified term needs pixels"),
])
def test_configs_that_would_crash_or_diverge_are_refused(bad, needle):
    with pytest.raises(InputError, match=needle):
        HardenConfig(**bad)


def test_harden_names_arguments_of_the_wrong_kind(trained_mlp, small_train):
    from torch import nn

    with pytest.raises(InputError, match="Dataset"):
        harden(trained_mlp.model, (small_train.images, small_train.labels), device="cpu")
    with pytest.raises(InputError, match="HardenConfig"):
        harden(trained_mlp.model, small_train.head(8), None, {"epochs": 1}, device="cpu")
    with pytest.raises(InputError, match="no trainable parameters"):
        harden(nn.Sequential(nn.Flatten(), nn.Identity()), small_train.head(8), device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated, and still used
        scripted = torch.jit.script(trained_mlp.model)
    with pytest.raises(InputError, match="TorchScript"):
        harden(scripted, small_train.head(8), device="cpu")
    model, info = harden(trained_mlp.model, small_train.head(32), small_train.subset(slice(32, 40)),
                         HardenConfig(epochs=1, pgd_eps=0.0, clean_weight=1.0, certified_weight=0.0), device="cpu")
    assert info["train_images"] == 40  # one Dataset as extra is taken as a list of one


def test_a_retraining_killed_after_an_epoch_resumes_to_the_same_weights(trained_cnn, small_train, tmp_path,
                                                                       monkeypatch):
    """The state file keeps what the next epoch draws: the data order, PGD's random starts, the certified term's
    random pixels (torch's global stream), the Adam moments and the schedule. Stopped after each epoch in turn and
    resumed, the retraining ends with the uninterrupted run's weights, bit for bit."""
    from advgen import train

    data = small_train.head(96)
    config = HardenConfig(epochs=3, pgd_steps=2, pgd_ramp_epochs=1, certified_ramp_epochs=1, certified_top=2,
                          certified_random=2, batch_size=32)
    whole, _ = harden(trained_cnn.model, data, None, config, device="cpu")
    save = train._Saved.save

    def killed_after(epochs: int):
        def save_then_stop(self, done: int, loss: float, seconds: float) -> None:
            save(self, done, loss, seconds)
            if done == epochs:
                raise KeyboardInterrupt
        return save_then_stop

    for stop in (1, 2, 3):  # the last: killed before the retrained model was returned
        state = tmp_path / f"stop{stop}.pt"
        with monkeypatch.context() as patch:
            patch.setattr(train._Saved, "save", killed_after(stop))
            with pytest.raises(KeyboardInterrupt):
                harden(trained_cnn.model, data, None, config, device="cpu", state=state)
        torch.manual_seed(123)  # the resumed run must not depend on the stream it happens to find
        resumed, _ = harden(trained_cnn.model, data, None, config, device="cpu", state=state)
        assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
    with pytest.raises(InputError, match=r"stop1\.pt was made with different settings: .*harden\.pgd_steps \(2 -> 3\)"):
        harden(trained_cnn.model, data, None, HardenConfig(**{**config.__dict__, "pgd_steps": 3}), device="cpu",
               state=tmp_path / "stop1.pt")
