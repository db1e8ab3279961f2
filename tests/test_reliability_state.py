"""Issue 14, part A: parameters owned per model, an example refusing an infinite step size,
strict metrics JSON.  Each test fails on the code before the fix (noted per test); the PSIS
tests of this issue are in tests/test_diagnostics.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pyro

from pyro_lvm import evaluate
from pyro_lvm.data import binarize
from pyro_lvm.models import VAE, ppca
from pyro_lvm.train import fit

ROOT = Path(__file__).resolve().parents[1]


def _vae(hidden=16, name=None, seed=0):
    torch.manual_seed(seed)
    return VAE(z_dim=4, hidden_dims=(hidden,), name=name)


def _x(n=64, seed=1):
    return torch.rand(n, 784, generator=torch.Generator().manual_seed(seed))


def _fit(vae, x, **kwargs):
    kwargs = {"num_epochs": 1, "batch_size": 32, "lr": 1e-2, "transform": binarize, "progress": False,
              **kwargs}
    return fit(vae.model, vae.guide, x, **kwargs)


def _elbo(vae, x):
    pyro.set_rng_seed(7)  # same draws for every call: differences are the parameters'
    return evaluate.elbo(vae.model, vae.guide, x, num_particles=2)


# --- defect 1: one model's parameters are never another's -------------------------------

def test_two_models_trained_one_after_the_other_keep_their_own_weights():
    # Before: both were "vae" in Pyro's store, so fitting B gave B A's tensors (A's were lost).
    x = binarize(_x())
    a = _vae(seed=0)
    _fit(a, x)
    trained_a = {k: v.detach().clone() for k, v in a.state_dict().items()}
    score_a = _elbo(a, x)
    b = _vae(seed=1)
    _fit(b, x, seed=3)
    assert a.encoder[0].weight is not b.encoder[0].weight
    assert all(torch.equal(v, a.state_dict()[k]) for k, v in trained_a.items())
    assert torch.equal(_elbo(a, x), score_a)  # A scores as it did before B was trained
    assert not torch.equal(_elbo(b, x), score_a)


def test_evaluate_scores_the_model_it_is_given_not_a_trained_one_in_the_store():
    # Before: a new VAE(hidden 64) took the trained hidden-32 encoder in place and scored like it.
    x = binarize(_x())
    trained = _vae(hidden=32, name="vae")
    _fit(trained, x)
    fresh = _vae(hidden=64, name="vae", seed=2)
    init = fresh.encoder[0].weight.detach().clone()
    score = _elbo(fresh, x)
    assert fresh.encoder[0].weight.shape == (64, 784) and torch.equal(fresh.encoder[0].weight, init)
    pyro.clear_param_store()
    assert torch.equal(score, _elbo(fresh, x))  # the same as with nothing else in the store
    assert set(pyro.get_param_store().keys()) == set()  # evaluation leaves nothing behind


def test_registering_over_a_stale_parameter_of_another_shape_is_an_error():
    # Before: pyro.module silently replaced the module's (64, 784) weight by the stored (32, 784).
    x = binarize(_x(8))
    old = _vae(hidden=32, name="m")
    old.guide(x)  # registers m_encoder$$$... in the global store, as a hand-written SVI loop does
    new = _vae(hidden=64, name="m")
    with pytest.raises(ValueError, match=r"m_encoder\$\$\$0\.weight.*\(32, 784\).*\(64, 784\)"):
        new.guide(x)
    assert new.encoder[0].weight.shape == (64, 784)


def test_default_names_are_one_per_instance_and_explicit_names_are_kept():
    from pyro_lvm.params import unique_name

    a, b = VAE(z_dim=2, hidden_dims=(4,)), VAE(z_dim=2, hidden_dims=(4,))
    assert a.name != b.name and a.name.startswith("vae_") and b.name.startswith("vae_")
    assert VAE(z_dim=2, hidden_dims=(4,), name="mine").name == "mine"
    g1, g2 = ppca.MeanFieldGuide(5, 2), ppca.MeanFieldGuide(5, 2)
    assert g1.name != g2.name
    with pytest.raises(ValueError, match="name"):
        unique_name("vae", "a$$$b")




def test_svi_vae_with_an_infinite_step_size_exits_with_a_clear_message(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "svi_vae.py"), "--lr", "inf",
                          "--epochs", "1", "--out", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode != 0
    assert "lr" in run.stderr and "inf" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "metrics.json").exists()


# --- defect 6: metrics.json is strict JSON --------------------------------------------

def _strict_json(text):
    def refuse(word):
        raise ValueError(f"{word} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_metrics_with_nan_and_inf_are_written_as_null_with_a_note(tmp_path):
    from pyro_lvm.report import write_metrics

    path = tmp_path / "metrics.json"
    write_metrics(path, {"test_elbo": [-90.5, float("nan")], "log_px": torch.tensor(float("-inf")),
                         "rows": [{"snr": float("inf"), "loss": "iwae"}], "epochs": 2})
    metrics = _strict_json(path.read_text())
    assert metrics["test_elbo"] == [-90.5, None] and metrics["log_px"] is None
    assert metrics["rows"] == [{"snr": None, "loss": "iwae"}] and metrics["epochs"] == 2
    assert metrics["null_values"]["values"] == {"test_elbo[1]": "nan", "log_px": "-inf",
                                                "rows[0].snr": "inf"}
    assert "NaN or infinite" in metrics["null_values"]["reason"]


def test_every_example_writes_its_metrics_through_write_metrics():
    for script in sorted((ROOT / "examples").glob("*.py")):
        text = script.read_text()
        if "metrics.json" in text:
            assert "write_metrics(out / \"metrics.json\"" in text and "json.dump" not in text, script.name
