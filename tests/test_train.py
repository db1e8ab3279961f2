import os

import pytest
import torch

import pyro

from pyro_lvm import evaluate
from pyro_lvm.data import binarize, fixed_binarization
from pyro_lvm.models import VAE
from pyro_lvm.train import decaying_adam, fit, load_checkpoint, save_checkpoint


def _small_vae():
    torch.manual_seed(0)
    return VAE(z_dim=8, hidden_dims=(64,), name="vae")  # one name: runs resume each other's checkpoints


def test_short_run_on_real_mnist_lowers_the_loss(mnist_train, mnist_test):
    x = mnist_train[0][:3000]
    x_test = fixed_binarization(mnist_test[0][:500])
    vae = _small_vae()
    before = evaluate.elbo(vae.model, vae.guide, x_test).mean().item()
    history = fit(vae.model, vae.guide, x, num_epochs=3, batch_size=100, lr=3e-3,
                  transform=binarize, progress=False)
    after = evaluate.elbo(vae.model, vae.guide, x_test).mean().item()
    assert history.epoch == [1, 2, 3]
    assert history.loss[0] > history.loss[1] > history.loss[2]
    # Untrained, a 784-pixel Bernoulli decoder sits near 784 log 2 = 543 nats; three epochs on
    # 3000 digits must take off well over a hundred nats per held-out image.
    assert after > before + 100


def test_resume_continues_from_the_saved_epoch_with_the_saved_state(tmp_path):
    x = torch.rand(256, 784)

    def run(epochs, resume):
        vae = _small_vae()
        history = fit(vae.model, vae.guide, x, num_epochs=epochs, batch_size=64, transform=binarize,
                      seed=5, checkpoint=tmp_path / "ckpt.pt", resume=resume, progress=False)
        return vae, history

    straight, straight_history = run(3, resume=False)
    run(2, resume=False)  # overwrites the checkpoint with epoch 2 of the same trajectory
    assert load_checkpoint(tmp_path / "ckpt.pt")["epoch"] == 2
    resumed, resumed_history = run(3, resume=True)
    assert resumed_history.epoch == [1, 2, 3]
    assert resumed_history.loss == straight_history.loss  # bitwise: same RNG, params, Adam state
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    vae = _small_vae()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        fit(vae.model, vae.guide, torch.rand(8, 784), checkpoint=tmp_path / "absent.pt",
            resume=True, progress=False)


@pytest.mark.filterwarnings("ignore:Encountered NaN")  # the NaN is the point of the test
def test_nan_loss_stops_with_epoch_and_step_and_keeps_the_checkpoint(tmp_path):
    x = torch.rand(128, 784)
    calls = {"n": 0}

    def poison_on_sixth_batch(batch):
        calls["n"] += 1
        return torch.full_like(batch, float("nan")) if calls["n"] == 6 else binarize(batch)

    vae = _small_vae()
    with pyro.validation_enabled(False), pytest.raises(FloatingPointError) as err:
        fit(vae.model, vae.guide, x, num_epochs=3, batch_size=32, transform=poison_on_sixth_batch,
            checkpoint=tmp_path / "ckpt.pt", progress=False)
    assert "epoch 2, step 2 of 4" in str(err.value)
    saved = load_checkpoint(tmp_path / "ckpt.pt")
    assert saved["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in saved["param_store"]["params"].values())
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_checkpoint_write_is_atomic(tmp_path):
    path = tmp_path / "state.pt"
    save_checkpoint(path, {"epoch": 1})
    with pytest.raises(Exception):
        save_checkpoint(path, {"epoch": 2, "unpicklable": lambda: None})
    assert load_checkpoint(path)["epoch"] == 1  # the old file is intact
    assert os.listdir(tmp_path) == ["state.pt"]  # and the half-written temp file is gone


@pytest.mark.parametrize(
    "data, kwargs, error, words",
    [
        (torch.full((4, 784), float("nan")), {}, ValueError, "NaN"),
        ((torch.rand(4, 784), torch.rand(5, 1)), {}, ValueError, "share their first dimension"),
        (torch.rand(4, 784), {"batch_size": 0}, ValueError, "batch_size"),
        (torch.rand(4, 784), {"resume": True}, ValueError, "checkpoint path"),
        (torch.rand(4, 784), {"loss": "nope"}, ValueError, "unknown loss"),
    ],
)
def test_fit_rejects_bad_input(data, kwargs, error, words):
    vae = _small_vae()
    with pytest.raises(error, match=words):
        fit(vae.model, vae.guide, data, progress=False, **kwargs)


def test_full_batch_keeps_row_order_and_minibatches_cover_every_row():
    seen = []

    def model(x, num_data=None):
        seen.append(x[:, 0].clone())

    def guide(x, num_data=None):
        pass

    x = torch.arange(12.0)[:, None]
    fit(model, guide, x, loss="elbo", num_epochs=2, batch_size=12, progress=False)
    assert all(torch.equal(s, x[:, 0]) for s in seen)  # local parameters match rows by position
    seen.clear()
    fit(model, guide, x, loss="elbo", num_epochs=1, batch_size=4, progress=False)
    assert sorted(torch.cat(seen).tolist()) == list(range(12))  # one permutation per epoch


def test_decaying_adam_runs_epochs_from_lr_to_lr_final():
    vae = _small_vae()
    optim = decaying_adam(1e-2, 1e-4, 3)
    seen = []

    def lr_now(epoch, history):
        schedulers = optim.optim_objs.values()
        seen.append({s.optimizer.param_groups[0]["lr"] for s in schedulers})

    fit(vae.model, vae.guide, torch.rand(64, 784), optim=optim, num_epochs=3, batch_size=32,
        callback=lr_now, progress=False)
    assert all(len(s) == 1 for s in seen)  # every parameter shares one step size per epoch
    assert [s.pop() for s in seen] == pytest.approx([1e-2, 1e-3, 1e-4])
    with pytest.raises(ValueError, match="lr_final > 0"):
        decaying_adam(1e-3, 0.0, 10)
