"""Issue 14, part A: parameters owned per model, non-finite parameters and step sizes,
resume against another configuration, damaged checkpoints, strict metrics JSON, PSIS on
exact weights.  Each test fails on the code before the fix (noted per test)."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pyro
import pyro.optim

from pyro_lvm import diagnostics, evaluate
from pyro_lvm.data import binarize
from pyro_lvm.models import VAE, ppca
from pyro_lvm.train import decaying_adam, fit, load_checkpoint, save_checkpoint

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


# --- defect 2: non-finite parameters and step sizes ------------------------------------

def _poisoned(vae, poison_epochs, steps_per_epoch):
    """``vae.model`` plus a zero factor whose gradient is NaN (d sqrt|u| at u = 0) at the
    last step of the given epochs: every loss stays finite, that step makes the decoder NaN."""
    calls = {"n": 0}

    def model(x, num_data=None):
        vae.model(x, num_data)
        calls["n"] += 1
        epoch, step = divmod(calls["n"] - 1, steps_per_epoch)
        if epoch + 1 in poison_epochs and step == steps_per_epoch - 1:
            w = vae.decoder[0].weight
            pyro.factor("poison", (w - w.detach()).abs().sqrt().sum())

    return model


def test_parameters_made_nan_by_a_step_stop_training_before_any_checkpoint(tmp_path):
    # Before: one step per epoch wrote the NaN weights into "the last good checkpoint".
    x, vae, path = _x(32), _vae(name="p"), tmp_path / "ckpt.pt"
    with pyro.validation_enabled(False), pytest.raises(FloatingPointError) as err:
        fit(_poisoned(vae, {1}, 1), vae.guide, x, num_epochs=3, batch_size=32, lr=1e-2,
            transform=binarize, checkpoint=path, progress=False)
    message = str(err.value)
    assert "epoch 1" in message and "p_decoder$$$0.weight" in message
    assert "No checkpoint was written" in message and str(path) not in message
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_nan_parameters_in_a_later_epoch_keep_the_last_good_checkpoint(tmp_path):
    x, vae, path = _x(64), _vae(name="p"), tmp_path / "ckpt.pt"
    with pyro.validation_enabled(False), pytest.raises(FloatingPointError) as err:
        fit(_poisoned(vae, {2}, 2), vae.guide, x, num_epochs=3, batch_size=32, lr=1e-2,
            transform=binarize, checkpoint=path, progress=False)
    assert "epoch 2" in str(err.value) and f"({path}) holds epoch 1" in str(err.value)
    saved = load_checkpoint(path)  # verifies every saved parameter is finite
    assert saved["epoch"] == 1


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), 0.0, -1e-3])
def test_non_finite_or_non_positive_step_sizes_are_refused(bad):
    # Before: lr=inf trained to NaN (and svi_vae.py --lr inf exited 0 with NaN metrics).
    vae = _vae()
    with pytest.raises(ValueError, match="lr"):
        fit(vae.model, vae.guide, _x(8), lr=bad, progress=False)
    with pytest.raises(ValueError, match="learning rate"):
        fit(vae.model, vae.guide, _x(8), optim=pyro.optim.Adam({"lr": bad}), progress=False)
    with pytest.raises(ValueError, match="finite lr > 0"):
        decaying_adam(bad, 1e-4, 3)
    with pytest.raises(ValueError, match="finite lr > 0"):
        decaying_adam(1e-3, bad, 3)


def test_svi_vae_with_an_infinite_step_size_exits_with_a_clear_message(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "svi_vae.py"), "--lr", "inf",
                          "--epochs", "1", "--out", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode != 0
    assert "lr" in run.stderr and "inf" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "metrics.json").exists()


# --- defect 3: resume against another configuration ------------------------------------

def test_resume_with_another_configuration_lists_every_difference(tmp_path):
    # Before: fit had no config; a changed lr, schedule or architecture was silently ignored.
    x, path = _x(64), tmp_path / "ckpt.pt"
    _fit(_vae(hidden=16, name="v"), x, checkpoint=path, config={"hidden": [16], "lr_final": 1e-4})
    with pytest.raises(ValueError) as err:
        _fit(_vae(hidden=32, name="v"), x, num_epochs=2, lr=2e-2, checkpoint=path, resume=True,
             config={"hidden": [32], "lr_final": 1e-3})
    message = str(err.value)
    for words in ("hidden: checkpoint [16], now [32]", "lr_final: checkpoint 0.0001, now 0.001",
                  "lr: checkpoint 0.01, now 0.02",
                  "parameter v_encoder$$$0.weight: checkpoint shape (16, 784), now (32, 784)",
                  "parameter v_decoder$$$2.weight: checkpoint shape (784, 16), now (784, 32)"):
        assert words in message


def test_resume_with_a_new_default_named_model_is_refused(tmp_path):
    x, path = _x(64), tmp_path / "ckpt.pt"
    _fit(_vae(), x, checkpoint=path)
    with pytest.raises(ValueError, match="not in the checkpoint"):
        _fit(_vae(), x, num_epochs=2, checkpoint=path, resume=True)  # vae_<n+1>: not the saved one


def test_after_resume_the_modules_hold_the_checkpoint_weights(tmp_path):
    # Before: with nothing left to train, the resumed modules kept their initial weights.
    x, path = _x(64), tmp_path / "ckpt.pt"
    trained = _vae(name="v")
    _fit(trained, x, num_epochs=2, checkpoint=path)
    resumed = _vae(name="v", seed=5)
    history = _fit(resumed, x, num_epochs=2, checkpoint=path, resume=True)
    assert history.epoch == [1, 2]
    for (name, a), b in zip(trained.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name


# --- defect 5 (checkpoints) and 6 (stale temporaries, full disk) -------------------------

def _saved(tmp_path):
    x, path = _x(32), tmp_path / "ckpt.pt"
    _fit(_vae(name="v"), x, checkpoint=path)
    return path


def _flip_64_bytes(raw):
    raw = bytearray(raw)
    for i in range(len(raw) // 2, len(raw) // 2 + 64):
        raw[i] ^= 0xFF
    return bytes(raw)


@pytest.mark.parametrize("damage, words", [
    (lambda raw: b"", "empty"),
    (lambda raw: b"\x80\x02garbage" * 100, "not a pyro-lvm checkpoint"),
    (lambda raw: raw[: len(raw) // 2], "do not match"),  # truncated
    (_flip_64_bytes, "do not match"),
    (lambda raw: raw.split(b"\n", 2)[2], "not a pyro-lvm checkpoint"),  # a bare torch.save file
])
def test_damaged_checkpoints_are_refused_naming_the_file(tmp_path, damage, words):
    # Before: raw UnpicklingError/EOFError/zip errors, and flipped bytes loaded silently.
    path = _saved(tmp_path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=words) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)
    vae = _vae(name="v")
    with pytest.raises(ValueError, match=words):
        _fit(vae, _x(32), num_epochs=2, checkpoint=path, resume=True)


def test_a_checkpoint_with_non_finite_parameters_is_refused(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"param_store": {"params": {"w": torch.tensor([1.0, float("nan")])},
                                           "constraints": {}}})
    with pytest.raises(ValueError, match=r"non-finite parameters: \['w'\]"):
        load_checkpoint(path)


def _dead_pid():
    pid = 2**22 - 1
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path):
    path = tmp_path / "ckpt.pt"
    stale = tmp_path / f".ckpt.pt.tmp{_dead_pid()}"
    alive = tmp_path / f".ckpt.pt.tmp{os.getppid()}"  # a live writer's file stays
    stale.write_bytes(b"half a checkpoint")
    alive.write_bytes(b"being written")
    save_checkpoint(path, {"epoch": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ckpt.pt", alive.name])


class _FullDisk:
    """A file that takes 1000 bytes, then fails as a full disk does."""

    def __init__(self, f):
        self.f, self.written = f, 0

    def write(self, data):
        self.written += len(data)
        if self.written > 1000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_a_full_disk_says_so_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    # Before: torch reported "unexpected pos" (its zip writer's view of the failed write).
    import pyro_lvm.files

    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.zeros(1000)})
    monkeypatch.setattr(pyro_lvm.files, "open", lambda *a, **k: _FullDisk(open(*a, **k)), raising=False)
    with pytest.raises(OSError, match="No space left on device") as err:
        save_checkpoint(path, {"epoch": 2, "w": torch.ones(1000)})
    assert err.value.errno == errno.ENOSPC and str(path) in str(err.value)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


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


# --- defect 7: PSIS on exact weights ----------------------------------------------------

def test_psis_of_an_exact_posterior_guide_is_good_when_log_p_is_in_the_hundreds():
    # Before: float32 rounding of log w ~ -100 exceeded the absolute 1e-6 tolerance: k-hat = inf.
    torch.manual_seed(0)
    d, q = 64, 5
    W, mean = torch.randn(d, q), torch.randn(d)
    model = ppca.PPCA(d, q, W=W, mean=mean, noise_scale=0.3)
    x = torch.randn(50, q) @ W.T + mean + 0.8 * torch.randn(50, d)  # |log p(x)| ~ 100
    log_w = evaluate.log_weights(model.model, ppca.exact_posterior_guide(model).guide, x, num_samples=200)
    assert log_w.dtype == torch.float32 and log_w.abs().min() > 50
    result = diagnostics.psis_from_log_weights(log_w)
    assert (result.khat < 0.5).all() and result.share_above == 0.0
    assert torch.equal(result.ess, torch.full((50,), 200.0))


def test_psis_still_fits_a_tail_when_the_weights_vary():
    torch.manual_seed(0)
    log_w = -100.0 + 0.5 * torch.randn(400, 20)  # spread ~3 nats: far above rounding
    result = diagnostics.psis_from_log_weights(log_w)
    assert torch.isfinite(result.khat).all() and (result.ess < 400).all()
    log_w[0, 0] = -torch.inf  # one zero weight among constant ones: not a perfect proposal
    log_w[1:, 0] = -100.0
    assert diagnostics.psis_from_log_weights(log_w).khat[0] > -torch.inf
