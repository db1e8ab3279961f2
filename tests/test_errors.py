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


def make_loss(*args, **kwargs):
    from pyro_lvm.infer import make_loss

    return make_loss(*args, **kwargs)


CASES = {
    # train.fit: sizes, and data the guide would have run on before the model's check
    "fit num_particles=2.5": (lambda: fit(binary(), num_particles=2.5), "num_particles"),
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
    # sizes and ranges of the functions added with issues 11, 12 and 15
    "decaying_adam num_epochs=2.5": (
        lambda: __import__("pyro_lvm.train").train.decaying_adam(1e-3, 1e-4, 2.5), "num_epochs"),
    "IWAE num_particles=2.5": (lambda: __import__("pyro_lvm.infer").infer.IWAE(num_particles=2.5),
                               "num_particles"),
    "vimco num_particles=2.5": (lambda: make_loss("vimco", 2.5), "num_particles"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_a_value_error_naming_it(case):
    call, words = CASES[case]
    with pyro.validation_enabled(False):  # the checks must not depend on Pyro's switch
        with pytest.raises(ValueError, match=words):
            call()


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
