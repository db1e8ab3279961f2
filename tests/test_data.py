"""pyro_lvm.data: MNIST as tensors, checked (headers, SHA-256) before it is read, and the
binarizations; bad input refused at every door naming the argument and the cause."""

import hashlib
import os
import shutil

import pytest
import torch

from pyro_lvm import data
from pyro_lvm.checks import check_data
from pyro_lvm.data import (DATA_ENV, binarize, fixed_binarization, load_mnist,
                           resolve_device)

from helpers import assert_refused


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


def test_missing_files_say_generically_how_to_point_at_them(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_mnist(root=tmp_path / "nowhere", train=False)
    message = str(err.value)
    assert f"set the environment variable {DATA_ENV}=<folder>" in message and "root=<folder>" in message
    assert "(here:" not in message and "../shared/data" not in message  # nothing of this checkout


# --- damaged MNIST files (moved from tests/test_errors.py) ---------------------------------

def write_idx(path, magic, dims, payload=None):
    """An idx file: big-endian magic and dimensions, then ``payload`` (default: the
    bytes the dimensions announce)."""
    size = 1
    for d in dims:
        size *= d
    header = b"".join(int(v).to_bytes(4, "big") for v in (magic, *dims))
    path.write_bytes(header + (bytes(size) if payload is None else payload))


def mnist_folder(tmp_path, images=3, labels=3):
    """Tiny idx files of both splits (torchvision wants all four); the test split is
    ``images`` blank images and ``labels`` labels."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, n, m in (("train", 3, 3), ("t10k", images, labels)):
        write_idx(raw / f"{split}-images-idx3-ubyte", 0x803, (n, 28, 28))
        write_idx(raw / f"{split}-labels-idx1-ubyte", 0x801, (m,))
    return raw


def test_mnist_files_that_agree_load(tmp_path):
    # Idx files announcing 3 images, not the official 10,000: a subset, read without checksum.
    mnist_folder(tmp_path)
    images, labels = load_mnist(tmp_path, train=False)
    assert images.shape == (3, 784) and labels.shape == (3,)


@pytest.mark.parametrize("damage, words", [
    ("other split", "holds 3 images but .*t10k-labels-idx1-ubyte holds 2 labels"),
    ("truncated", "t10k-images-idx3-ubyte is truncated"),
    ("empty", "t10k-labels-idx1-ubyte is empty"),
    ("bad magic", "t10k-images-idx3-ubyte has magic number 0x00000801"),
    ("short header", "t10k-labels-idx1-ubyte is truncated"),
])
def test_damaged_mnist_files_are_named(tmp_path, damage, words):
    raw = mnist_folder(tmp_path, labels=2 if damage == "other split" else 3)
    images, labels = raw / "t10k-images-idx3-ubyte", raw / "t10k-labels-idx1-ubyte"
    if damage == "truncated":
        images.write_bytes(images.read_bytes()[:-100])
    elif damage == "empty":
        labels.write_bytes(b"")
    elif damage == "bad magic":
        write_idx(images, 0x801, (3, 28, 28))
    elif damage == "short header":
        labels.write_bytes(labels.read_bytes()[:6])
    with pytest.raises(ValueError, match=words):
        load_mnist(tmp_path, train=False)


def real_test_split(tmp_path):
    """A copy of the real test split (7.9 MB) under ``tmp_path/MNIST/raw``, beside tiny
    training files (torchvision wants all four)."""
    raw = mnist_folder(tmp_path)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        shutil.copy(os.path.join(os.environ[DATA_ENV], "MNIST", "raw", name), raw / name)
    return raw


@pytest.mark.parametrize("name, offset", [("t10k-images-idx3-ubyte", 16 + 784 * 5000 + 400),
                                          ("t10k-labels-idx1-ubyte", 8 + 17)])
def test_a_file_of_the_right_size_with_altered_bytes_is_refused_naming_it(tmp_path, name, offset):
    # Before: headers and lengths agree, so the altered pixel (or label) was loaded as data.
    raw = real_test_split(tmp_path)
    content = bytearray((raw / name).read_bytes())
    content[offset] ^= 0x01
    (raw / name).write_bytes(bytes(content))
    with pytest.raises(ValueError, match=f"{name} is damaged or is not the official MNIST: its "
                                         "SHA-256 is [0-9a-f]{64}") as err:
        load_mnist(tmp_path, train=False)
    assert str(raw / name) in str(err.value) and "download=True" in str(err.value)


def test_the_sha256_of_an_unchanged_file_is_computed_once(tmp_path, monkeypatch):
    raw = real_test_split(tmp_path)
    hashed = []
    sha256 = hashlib.sha256

    def counting():
        hashed.append(1)
        return sha256()

    monkeypatch.setattr(data.hashlib, "sha256", counting)
    first = load_mnist(tmp_path, train=False)
    assert len(hashed) == 2  # images and labels
    second = load_mnist(tmp_path, train=False)
    assert len(hashed) == 2 and torch.equal(first[0], second[0])  # no hashing the second time
    labels = raw / "t10k-labels-idx1-ubyte"
    content = bytearray(labels.read_bytes())
    content[8] = (content[8] + 1) % 10  # another digit: same size, new modification time
    labels.write_bytes(bytes(content))
    os.utime(labels, ns=(labels.stat().st_atime_ns, labels.stat().st_mtime_ns + 10**9))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte is damaged"):
        load_mnist(tmp_path, train=False)
    assert len(hashed) == 3  # the changed file, and only it, hashed again


# --- bad input at every door -------------------------------------------------------------

def grey(n=4, d=6):
    return torch.rand(n, d, generator=torch.Generator().manual_seed(0))


def with_value(value):
    x = grey()
    x[1, 2] = value
    return x


BAD_IMAGES = {
    "list of rows": ([[0.5] * 6] * 4, "images must be a torch.Tensor, got list"),
    "list of tensors": (list(grey()), "images must be a torch.Tensor, got list"),
    "None": (None, "images must be a torch.Tensor, got NoneType"),
    "string": ("x", "images must be a torch.Tensor, got str"),
    "empty": (torch.zeros(0, 6), "images must have at least 1 rows"),
    "int": (grey().long(), "images must be a floating tensor"),
    "uint8 grey levels 0-255": ((grey() * 255).to(torch.uint8), "images must be a floating tensor"),
    "NaN": (with_value(float("nan")), "images contains NaN"),
    "inf": (with_value(float("inf")), "images contains NaN or inf"),
    "grey levels 0-255 as floats": (grey() * 255, r"images must lie in \[0.0, 1.0\]"),
    "negative": (-grey(), r"images must lie in \[0.0, 1.0\]"),
}
CASES = {}
for _what, (_x, _words) in BAD_IMAGES.items():
    CASES[f"binarize images={_what}"] = (lambda x=_x: binarize(x), _words)
    CASES[f"fixed_binarization images={_what}"] = (lambda x=_x: fixed_binarization(x), _words)
CASES.update({
    "binarize generator=3": (lambda: binarize(grey(), 3), "generator must be a torch.Generator"),
    "binarize generator='cpu'": (lambda: binarize(grey(), "cpu"),
                                 "generator must be a torch.Generator or None, got str"),
    **{f"fixed_binarization seed={w}": (lambda v=v: fixed_binarization(grey(), v),
                                        "seed must be an integer >= 0")
       for w, v in {"-1": -1, "2.5": 2.5, "True": True, "'3'": "3", "None": None}.items()},
    "load_mnist root=3": (lambda: load_mnist(3), "root must be a folder"),
    "load_mnist train='yes'": (lambda: load_mnist(train="yes"), "train must be True or False"),
    "load_mnist train=1": (lambda: load_mnist(train=1), "train must be True or False, got 1"),
    "load_mnist download='no'": (lambda: load_mnist(download="no"), "download must be True or False"),
    "load_mnist device='gpu'": (lambda: load_mnist(device="gpu"), "device must be 'auto', 'cpu'"),
    "load_mnist device=3.5": (lambda: load_mnist(device=3.5), "device must be .* got 3.5"),
    "resolve_device None": (lambda: resolve_device(None), "device must be .* got None"),
    "resolve_device 'cuda:x'": (lambda: resolve_device("cuda:x"), "device must be"),
})
if not torch.cuda.is_available():
    CASES["resolve_device 'cuda:1' without CUDA"] = (lambda: resolve_device("cuda:1"),
                                                     "device 'cuda:1' was asked for")


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_a_value_error_naming_it(case):
    assert_refused(*CASES[case])
