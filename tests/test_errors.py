"""Bad input at the door of every public function: a ValueError naming the input, before any work.

Each case is one bad argument to one public function, chosen among those that on the
code before these checks gave a silently wrong result or an error from deep inside
torch/Pyro ("mat1 and mat2 shapes cannot be multiplied", a TypeError from ``range``).
Imports sit inside the cases so that each case fails on its own, for its own reason.
"""

import runpy
import sys
from pathlib import Path

import pytest
import torch

import pyro

ROOT = Path(__file__).resolve().parents[1]


def small_vae():
    from pyro_lvm.models import VAE

    return VAE(x_dim=6, z_dim=2, hidden_dims=(4,))


def binary(n=8, d=6, dtype=torch.float32):
    return torch.bernoulli(torch.full((n, d), 0.5, dtype=dtype),
                           generator=torch.Generator().manual_seed(0))


def fit(data, **kwargs):
    from pyro_lvm.train import fit

    vae = small_vae()
    kwargs = {"num_epochs": 1, "batch_size": 4, **kwargs}
    return fit(vae.model, vae.guide, data, progress=False, **kwargs)


def evaluate(name, x, **kwargs):
    from pyro_lvm import evaluate

    vae = small_vae()
    return getattr(evaluate, name)(vae.model, vae.guide, x, **kwargs)




def psis(log_w):
    from pyro_lvm.diagnostics import psis_from_log_weights

    return psis_from_log_weights(log_w)


def diagnostics(name, **kwargs):
    from pyro_lvm import diagnostics

    vae = small_vae()
    return getattr(diagnostics, name)(vae.model, vae.guide, binary(), **kwargs)


def compare(**kwargs):
    from pyro_lvm.compare import compare_losses
    from pyro_lvm.infer import make_loss

    vae = small_vae()
    return compare_losses(vae.model, vae.guide, binary(), {"elbo": make_loss("elbo")},
                          timing_steps=1, **kwargs)


def make_loss(*args, **kwargs):
    from pyro_lvm.infer import make_loss

    return make_loss(*args, **kwargs)


NAN = binary()
NAN[1, 2] = float("nan")

CASES = {
    # train.fit: sizes, and data the guide would have run on before the model's check
    "fit num_particles=2.5": (lambda: fit(binary(), num_particles=2.5), "num_particles"),
    "log_weights batch_size=-1": (lambda: evaluate("log_weights", binary(), num_samples=2,
                                                   batch_size=-1), "batch_size"),
    "fit batch_size=2.5": (lambda: fit(binary(), batch_size=2.5), "batch_size"),
    "fit num_epochs=1.5": (lambda: fit(binary(), num_epochs=1.5), "num_epochs"),
    "fit width 5 for x_dim 6": (lambda: fit(binary(8, 5)), r"x must have shape \(B, 6\)"),
    "fit float64 data": (lambda: fit(binary(dtype=torch.float64)), "x .*torch.float32"),
    "fit int data": (lambda: fit(binary().long()), "x .*floating"),
    "fit bool data": (lambda: fit(binary().bool()), "x .*floating"),
    "fit transform not callable": (lambda: fit(binary(), transform="binarize"), "transform"),
    # infer.make_loss
    "make_loss num_particles=2.5": (lambda: make_loss("elbo", 2.5), "num_particles"),
    "make_loss num_particles=True": (lambda: make_loss("iwae", True), "num_particles"),
    "make_loss unknown option": (lambda: make_loss("elbo", baseline="none"), "baseline"),
    # evaluate
    "elbo NaN data, validation off": (lambda: evaluate("elbo", NAN), "x contains NaN"),
    "elbo width 5": (lambda: evaluate("elbo", binary(8, 5)), r"x must have shape \(B, 6\)"),
    "elbo float64": (lambda: evaluate("elbo", binary(dtype=torch.float64)), "x .*torch.float32"),
    "elbo empty": (lambda: evaluate("elbo", torch.zeros(0, 6)), "x must have at least 1 rows"),
    "elbo num_particles=0.5": (lambda: evaluate("elbo", binary(), num_particles=0.5),
                               "num_particles"),
    "log_likelihood num_samples=2.5": (lambda: evaluate("log_likelihood", binary(), num_samples=2.5),
                                       "num_samples"),
    "log_likelihood batch_size=0": (lambda: evaluate("log_likelihood", binary(), num_samples=2,
                                                     batch_size=0), "batch_size"),
    "log_weights max_elements=0": (lambda: evaluate("log_weights", binary(), num_samples=2,
                                                    max_elements=0), "max_elements"),
    "cluster_accuracy float labels": (
        lambda: __import__("pyro_lvm.evaluate").evaluate.cluster_accuracy([0.5, 1.0], [0, 1]),
        "labels"),
    # diagnostics
    "psis_diagnostic num_samples=2.5": (lambda: diagnostics("psis_diagnostic", num_samples=2.5),
                                        "num_samples"),
    "anomaly_scores num_samples=1.5": (lambda: diagnostics("anomaly_scores", num_samples=1.5),
                                       "num_samples"),
    "psis_from_log_weights NaN": (lambda: psis(torch.tensor([[0.0, float("nan")], [1.0, 2.0]])),
                                  "log_w"),
    "to_inference_data num_samples=0": (lambda: diagnostics("to_inference_data", num_samples=0),
                                        "num_samples"),
    # compare
    "compare num_draws=1": (lambda: compare(num_draws=1), "num_draws"),
    # sizes and ranges of the functions added with issues 11, 12 and 15
    "decaying_adam num_epochs=2.5": (
        lambda: __import__("pyro_lvm.train").train.decaying_adam(1e-3, 1e-4, 2.5), "num_epochs"),
    "IWAE num_particles=2.5": (lambda: __import__("pyro_lvm.infer").infer.IWAE(num_particles=2.5),
                               "num_particles"),
    "vimco num_particles=2.5": (lambda: make_loss("vimco", 2.5), "num_particles"),
    "assert_unbiased num_draws=1": (lambda: __import__("pyro_lvm.testing").testing.assert_unbiased(
        small_vae().model, small_vae().guide, binary(), loss="elbo", exact_value=0.0, num_draws=1),
        "num_draws"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_a_value_error_naming_it(case):
    call, words = CASES[case]
    with pyro.validation_enabled(False):  # the checks must not depend on Pyro's switch
        with pytest.raises(ValueError, match=words):
            call()


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
    from pyro_lvm.data import load_mnist

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
    from pyro_lvm.data import load_mnist

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


#: One bad value per example that argparse's plain ``int``/``float`` accepted.
BAD_FLAGS = {
    "svi_vae.py": ["--eval-samples", "1"], "anomaly.py": ["--epochs", "0"],
    "compare_elbos.py": ["--particles", "1"], "gmm.py": ["--components", "0"],
    "latent_space.py": ["--seed", "-1"], "missing_pixels.py": ["--samples", "0"],
    "ppca.py": ["--lr", "nan"], "iwae_table.py": ["--epochs-scale", "0"],
}


@pytest.mark.parametrize("script", list(BAD_FLAGS))
def test_every_example_refuses_bad_values_at_parse_time(script, tmp_path, monkeypatch, capsys):
    # In-process (torch and Pyro are imported already): a fresh interpreter per script costs
    # seconds.  Without data any work would fail with FileNotFoundError instead of exit 2.
    monkeypatch.setenv("PYRO_LVM_DATA", str(tmp_path / "no-data"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [script, *BAD_FLAGS[script], "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / "examples" / script), run_name="__main__")
    assert exit_.value.code == 2
    assert f"argument {BAD_FLAGS[script][0]}" in capsys.readouterr().err
