import os
from pathlib import Path

import pytest
import torch

import pyro

# The real MNIST files: $PYRO_LVM_DATA, else ../shared/data beside the checkout (as .ci/run sets).
os.environ.setdefault("PYRO_LVM_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def fresh_pyro():
    """Every test starts with an empty param store, validation on and seed 0."""
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="session")
def mnist_train():
    from pyro_lvm.data import load_mnist

    return load_mnist(train=True)


@pytest.fixture(scope="session")
def mnist_test():
    from pyro_lvm.data import load_mnist

    return load_mnist(train=False)
