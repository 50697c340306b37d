"""Shared fixtures: tiny data and tiny trained models, so every test runs in seconds on CPU."""

from __future__ import annotations

import os

import pytest
import torch

from advgen import data as datasets
from advgen.models import Checkpoint, build
from advgen.runtime import seed_everything
from advgen.train import TrainConfig, fit

os.environ.setdefault("ADVGEN_QUIET", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def mnist_train() -> datasets.Dataset:
    return datasets.load("mnist-sample", "train")


@pytest.fixture(scope="session")
def mnist_test() -> datasets.Dataset:
    return datasets.load("mnist-sample", "test")


@pytest.fixture(scope="session")
def small_train(mnist_train) -> datasets.Dataset:
    return mnist_train.head(1000)


@pytest.fixture(scope="session")
def trained_cnn(small_train) -> Checkpoint:
    """The default CNN after a short fit on 1,000 images: good enough to have real decision boundaries."""
    seed_everything(0)  # the initial weights too, so every session tests the same model
    model = build("cnn")
    fit(model, small_train, TrainConfig(epochs=3, seed=0), device="cpu")
    return Checkpoint(model, "cnn", (1, 28, 28), 10, {"note": "test fixture"})


@pytest.fixture(scope="session")
def trained_mlp(small_train) -> Checkpoint:
    seed_everything(0)
    model = build("mlp")
    fit(model, small_train, TrainConfig(epochs=3, seed=0, shift=0), device="cpu")
    return Checkpoint(model, "mlp", (1, 28, 28), 10, {"note": "test fixture"})
