import pytest
import torch

from pyro_lvm.checks import check_data
from pyro_lvm.data import DATA_ENV, binarize, fixed_binarization, load_mnist


def test_load_mnist_shapes_and_ranges(mnist_train, mnist_test):
    for (images, labels), n in ((mnist_train, 60000), (mnist_test, 10000)):
        assert images.shape == (n, 784) and images.dtype == torch.float32
        assert labels.shape == (n,) and labels.dtype == torch.int64
        assert images.min() == 0.0 and images.max() == 1.0
        assert set(labels.unique().tolist()) == set(range(10))
    # The first test digit of MNIST is a 7 (a well-known fact of the file, not of our code).
    assert mnist_test[1][0].item() == 7


def test_missing_folder_names_every_place_looked(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as err:
        load_mnist(root=tmp_path / "nowhere")
    assert str((tmp_path / "nowhere" / "MNIST" / "raw").resolve()) in str(err.value)
    assert DATA_ENV in str(err.value)

    monkeypatch.setenv(DATA_ENV, str(tmp_path / "env"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        load_mnist(train=False)
    message = str(err.value)
    assert str((tmp_path / "env" / "MNIST" / "raw").resolve()) in message
    assert str((tmp_path / "data" / "MNIST" / "raw").resolve()) in message


def test_binarize_is_bernoulli_with_grey_level_probability():
    p = torch.linspace(0, 1, 11).repeat(20000, 1)  # (20000, 11)
    x = binarize(p, torch.Generator().manual_seed(1))
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    # Each column's mean estimates p with standard error sqrt(p(1-p)/20000) <= 0.0036; allow 4 SE.
    se = (p[0] * (1 - p[0]) / 20000).sqrt()
    assert torch.all((x.mean(0) - p[0]).abs() <= 4 * se + 1e-12)


def test_fixed_binarization_is_reproducible_and_dynamic_is_not():
    p = torch.full((50, 784), 0.5)
    assert torch.equal(fixed_binarization(p, seed=3), fixed_binarization(p, seed=3))
    assert not torch.equal(binarize(p), binarize(p))


@pytest.mark.parametrize(
    "x, kwargs, words",
    [
        (torch.zeros(3), {}, "2 dimensions"),
        (torch.zeros(3, 5), {"size": 4}, "4 columns"),
        (torch.tensor([[0.0, float("nan")]]), {}, "NaN"),
        (torch.tensor([[0.0, float("inf")]]), {}, "NaN or inf"),
        (torch.tensor([[0.0, 1.5]]), {"low": 0.0, "high": 1.0}, "[0.0, 1.0]"),
        (torch.zeros(0, 2), {}, "at least 1 rows"),
        (torch.zeros(2, 2, dtype=torch.int64), {}, "floating"),
    ],
)
def test_check_data_rejects_bad_input(x, kwargs, words):
    with pytest.raises(ValueError, match=None) as err:
        check_data(x, **kwargs)
    assert words in str(err.value)
