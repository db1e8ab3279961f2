import functools
import math

import pytest
import torch

import pyro
import pyro.distributions as dist
import pyro.optim
from pyro.infer.autoguide import AutoNormal

from helpers import M2_DATA, fit_briefly, grey_images, m2_guide, m2_model, small_vae
from pyro_lvm import evaluate
from pyro_lvm.checkpoint import load_checkpoint
from pyro_lvm.checks import check_values
from pyro_lvm.data import binarize, fixed_binarization
from pyro_lvm.infer import score_function_guide
from pyro_lvm.models import VAE
from pyro_lvm.train import decaying_adam, fit


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
        calls["n"] += torch.is_grad_enabled()  # a step's batch, not the door's trace of the pair
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


def _vae784():
    return VAE(z_dim=2, hidden_dims=(4,), name="door")


_X = torch.rand(8, 784, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("change, words", [
    ({"data": torch.tensor(0.5)}, r"data must have a leading data dimension \(N, ...\), got a 0-dim"),
    ({"data": [_X[0], _X[1]]}, "data must be a tensor .* got a list; pass torch.stack"),
    ({"data": (_X, _X[:5])}, r"the tensors of data must share their first dimension N, got \[\(8, 784\), \(5, 784\)\]"),
    ({"data": (_X, "mask")}, r"data\[1\] must be a torch.Tensor, got str"),
    ({"data": ()}, "data must be a tensor .* non-empty tuple"),
    ({"data": _X[:0]}, "data must have at least 1 rows"),
    ({"data": "x"}, "data must be a tensor .* got str"),
    ({"model": "vae"}, "model must be callable, got str"),
    ({"guide": None}, "guide must be callable, got NoneType"),
    ({"lr": float("nan")}, "lr must be a finite number > 0, got nan"),
    ({"lr": 0}, "lr must be a finite number > 0, got 0"),
    ({"lr": -1}, "lr must be a finite number > 0, got -1"),
    ({"lr": "a"}, "lr must be a finite number > 0, got 'a'"),
    ({"optim": pyro.optim.Adam({"lr": "a"})}, r"optimizer's learning rate \(lr\) must be a finite"),
    ({"batch_size": 2.5}, "batch_size must be a positive integer, got 2.5"),
    ({"num_epochs": -1}, "num_epochs must be an integer >= 0, got -1"),
    ({"num_particles": 0}, "num_particles must be a positive integer, got 0"),
    ({"transform": "binarize"}, "transform must be callable, got str"),
    ({"callback": 3}, "callback must be callable, got int"),
    ({"loss": 3}, "loss must be a name or an ELBO object, got int"),
    ({"seed": -1}, "seed must be an integer >= 0, got -1"),
    ({"seed": 1.5}, "seed must be an integer >= 0, got 1.5"),
    ({"checkpoint": 3}, "checkpoint must be a path, got int"),
    ({"config": ["lr"]}, "config must be a dict of the run's settings, got list"),
    # What the model declares it takes, with and without a transform: the door checks the
    # data as given, which a transform such as binarize maps to data of the same kind.
    ({"data": _X[:, :700]}, r"x must have shape \(B, 784\), got shape \(8, 700\)"),
    ({"data": _X[:, :700], "transform": binarize}, r"x must have shape \(B, 784\), got shape \(8, 700\)"),
    ({"data": 255 * _X}, r"x must lie in \[0.0, 1.0\]"),
    ({"data": 255 * _X, "transform": binarize}, r"x must lie in \[0.0, 1.0\]"),
    ({"data": _X.double(), "transform": binarize}, "x must be dtype torch.float32, got dtype torch.float64"),
])
def test_the_door_of_fit_names_the_bad_argument(change, words):
    vae = _vae784()
    args = {"model": vae.model, "guide": vae.guide, "data": _X, "num_epochs": 1, "progress": False,
            **change}
    with pytest.raises(ValueError, match=words):
        fit(**args)
    assert set(pyro.get_param_store().keys()) == set()  # refused before model or guide ran


def test_model_and_guide_bodies_skip_value_checks_inside_fit_only():
    vae = _small_vae()
    seen = []

    def model(x, num_data=None):
        seen.append(check_values())
        vae.model(x, num_data)

    model.__self__ = vae  # declares its inputs: checked at the door
    fit(model, vae.guide, torch.rand(64, 784), num_epochs=2, batch_size=32, progress=False)
    assert seen and not any(seen)  # every step: shapes only, the door checked the values
    assert check_values()  # validation is on (conftest) and fit has left its block


def test_full_batch_keeps_row_order_and_minibatches_cover_every_row():
    seen = []

    def model(x, num_data=None):
        if torch.is_grad_enabled():  # a training step, not the door's trace of the pair
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


# --- non-finite parameters and step sizes ----------------------------------------------

def _poisoned(vae, poison_epochs, steps_per_epoch):
    """``vae.model`` plus a zero factor whose gradient is NaN (d sqrt|u| at u = 0) at the
    last step of the given epochs: every loss stays finite, that step makes the decoder NaN."""
    calls = {"n": 0}

    def model(x, num_data=None):
        vae.model(x, num_data)
        if not torch.is_grad_enabled():  # the door's trace of the pair, not a step
            return
        calls["n"] += 1
        epoch, step = divmod(calls["n"] - 1, steps_per_epoch)
        if epoch + 1 in poison_epochs and step == steps_per_epoch - 1:
            w = vae.decoder[0].weight
            pyro.factor("poison", (w - w.detach()).abs().sqrt().sum())

    return model


def test_parameters_made_nan_by_a_step_stop_training_before_any_checkpoint(tmp_path):
    # Before: one step per epoch wrote the NaN weights into "the last good checkpoint".
    x, vae, path = grey_images(32), small_vae(name="p"), tmp_path / "ckpt.pt"
    with pyro.validation_enabled(False), pytest.raises(FloatingPointError) as err:
        fit(_poisoned(vae, {1}, 1), vae.guide, x, num_epochs=3, batch_size=32, lr=1e-2,
            transform=binarize, checkpoint=path, progress=False)
    message = str(err.value)
    assert "epoch 1" in message and "p_decoder$$$0.weight" in message
    assert "No checkpoint was written" in message and str(path) not in message
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_nan_parameters_in_a_later_epoch_keep_the_last_good_checkpoint(tmp_path):
    x, vae, path = grey_images(64), small_vae(name="p"), tmp_path / "ckpt.pt"
    with pyro.validation_enabled(False), pytest.raises(FloatingPointError) as err:
        fit(_poisoned(vae, {2}, 2), vae.guide, x, num_epochs=3, batch_size=32, lr=1e-2,
            transform=binarize, checkpoint=path, progress=False)
    assert "epoch 2" in str(err.value) and f"({path}) holds epoch 1" in str(err.value)
    saved = load_checkpoint(path)  # verifies every saved parameter is finite
    assert saved["epoch"] == 1


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), 0.0, -1e-3])
def test_non_finite_or_non_positive_step_sizes_are_refused(bad):
    # Before: lr=inf trained to NaN (and svi_vae.py --lr inf exited 0 with NaN metrics).
    vae = small_vae()
    with pytest.raises(ValueError, match="lr"):
        fit(vae.model, vae.guide, grey_images(8), lr=bad, progress=False)
    with pytest.raises(ValueError, match="learning rate"):
        fit(vae.model, vae.guide, grey_images(8), optim=pyro.optim.Adam({"lr": bad}), progress=False)
    with pytest.raises(ValueError, match="finite lr > 0"):
        decaying_adam(bad, 1e-4, 3)
    with pytest.raises(ValueError, match="finite lr > 0"):
        decaying_adam(1e-3, bad, 3)


# --- resume against another configuration ----------------------------------------------

def test_resume_with_another_configuration_lists_every_difference(tmp_path):
    # Before: fit had no config; a changed lr, schedule or architecture was silently ignored.
    x, path = grey_images(64), tmp_path / "ckpt.pt"
    fit_briefly(small_vae(hidden=16, name="v"), x, checkpoint=path, config={"hidden": [16], "lr_final": 1e-4})
    with pytest.raises(ValueError) as err:
        fit_briefly(small_vae(hidden=32, name="v"), x, num_epochs=2, lr=2e-2, checkpoint=path, resume=True,
             config={"hidden": [32], "lr_final": 1e-3})
    message = str(err.value)
    for words in ("hidden: checkpoint [16], now [32]", "lr_final: checkpoint 0.0001, now 0.001",
                  "lr: checkpoint 0.01, now 0.02",
                  "parameter v_encoder$$$0.weight: checkpoint shape (16, 784), now (32, 784)",
                  "parameter v_decoder$$$2.weight: checkpoint shape (784, 16), now (784, 32)"):
        assert words in message


def test_resume_with_a_new_default_named_model_is_refused(tmp_path):
    x, path = grey_images(64), tmp_path / "ckpt.pt"
    fit_briefly(small_vae(), x, checkpoint=path)
    with pytest.raises(ValueError, match="not in the checkpoint"):
        fit_briefly(small_vae(), x, num_epochs=2, checkpoint=path, resume=True)  # vae_<n+1>: not the saved one


def test_after_resume_the_modules_hold_the_checkpoint_weights(tmp_path):
    # Before: with nothing left to train, the resumed modules kept their initial weights.
    x, path = grey_images(64), tmp_path / "ckpt.pt"
    trained = small_vae(name="v")
    fit_briefly(trained, x, num_epochs=2, checkpoint=path)
    resumed = small_vae(name="v", seed=5)
    history = fit_briefly(resumed, x, num_epochs=2, checkpoint=path, resume=True)
    assert history.epoch == [1, 2]
    for (name, a), b in zip(trained.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name


# --- the pair at the door: one trace of the first batch ----------------------------------

X12 = torch.linspace(-3.0, 3.0, 12)


def _model(x, num_data=None):
    with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def _guide(x, num_data=None):
    a = pyro.param("a", torch.tensor(0.2))
    with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))):
        pyro.sample("z", dist.Normal(a * x, 1.0))


def _unscaled_model(x, num_data=None):
    with pyro.plate("data", len(x)):  # takes num_data, ignores it
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def _unscaled_guide(x, num_data=None):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(pyro.param("a", torch.tensor(0.2)) * x, 1.0))


def _mixture(x, num_data=None):
    with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))):
        y = pyro.sample("y", dist.Categorical(torch.tensor([0.5, 0.5])),
                        infer={"enumerate": "parallel"})
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
        pyro.sample("x", dist.Normal(2.0 * y - 1.0 + z, 1.0), obs=x)


def _per_row_guide(x, num_data=None):
    """q(z_n) = N(loc_n, 1) with a bare parameter per row, indexed by the plate's subsample
    (positions in the batch under fit's minibatches)."""
    loc = pyro.param("loc", torch.zeros(num_data or len(x)))
    with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))) as rows:
        pyro.sample("z", dist.Normal(loc[rows], 1.0))


PAIR_MISTAKES = {
    "a latent the guide does not sample": (
        dict(model=_model, guide=lambda x, num_data=None: None),
        r"model latent 'z' is not sampled by the guide: every loss would draw it from the prior"),
    "an enumerated latent with a loss that does not enumerate": (
        dict(model=_mixture, guide=_guide, loss="elbo"),
        r"model latent 'y' is marked enumerate='parallel' but the loss does not sum it out"),
    "a model that ignores num_data": (
        dict(model=_unscaled_model, guide=_guide, batch_size=6),
        r"model site 'x' carries scale 1 on a batch of 6 rows with num_data=12, expected "
        r"num_data / batch = 2: the model ignores num_data; open plate 'data'"),
    "a guide that ignores num_data": (
        dict(model=_model, guide=_unscaled_guide, batch_size=4),
        r"guide site 'z' carries scale 1 on a batch of 4 rows with num_data=12, expected "
        r"num_data / batch = 3: the guide ignores num_data"),
    "a guide parameter per row, with batches smaller than N": (
        dict(model=_model, guide=_per_row_guide, batch_size=6),
        r"guide parameter 'loc' \(12,\) holds one entry per data row \(dim -1 has num_data = 12 "
        r"entries\), but batches of 6 rows reach the pair without their row indices"),
    "an AutoNormal over local latents, with batches smaller than N": (
        dict(model=_model, guide=AutoNormal(_model), batch_size=4),
        r"guide parameter 'AutoNormal.locs.z' \(12,\) holds one entry per data row"),
    "a guide scoring the label on every row, also where the model observes it": (
        dict(model=m2_model, guide=functools.partial(m2_guide, mask=True), data=M2_DATA),
        r"1 problem\(s\)\):\n  - site 'y_unobserved' is scored by the guide on 4 element\(s\) "
        r"where the model masks it out \(there it is observed, e.g. by obs_mask\): log p and "
        r"log q count different elements, so every bound is wrong; mask the guide's site the "
        r"same way \(poutine.mask\(mask=...\) or .mask\(...\)\)$"),
    "a guide scoring the label on the labelled rows only (the mask inverted)": (
        dict(model=m2_model, guide=functools.partial(m2_guide, mask=M2_DATA[2]), data=M2_DATA),
        r"(?s)2 problem\(s\)\):\n  - site 'y_unobserved' is scored by the guide on 4 element\(s\) "
        r"where the model masks it out.*\n  - site 'y_unobserved' is scored by the model on 4 "
        r"element\(s\) where the guide masks it out .*mask the model's site the same way"),
    "a model without the keyword num_data": (
        dict(model=lambda x: _model(x), guide=_guide),
        r"model must take the keyword num_data \(fit calls it as model\(\*batch, num_data=N\)"),
}


@pytest.mark.parametrize("mistake", PAIR_MISTAKES)
def test_the_door_of_fit_refuses_a_pair_that_would_train_silently_wrong(mistake):
    kwargs, message = PAIR_MISTAKES[mistake]
    with pytest.raises(ValueError, match=message):
        fit(**{"data": X12, "num_epochs": 1, "batch_size": 12, "progress": False, **kwargs})
    assert list(pyro.get_param_store().keys()) == []  # refused before any training


def test_the_same_pairs_written_or_trained_correctly_pass_the_door():
    for kwargs in (dict(model=_unscaled_model, guide=_unscaled_guide, batch_size=12),  # full batch
                   dict(model=_mixture, guide=_guide, loss="enum"),
                   dict(model=_mixture, guide=_guide, loss="iwae", num_particles=3),
                   dict(model=_model, guide=_guide, batch_size=4),
                   dict(model=_model, guide=_per_row_guide, batch_size=12),  # per-row, full batch
                   dict(model=_model, guide=AutoNormal(_model), batch_size=12),
                   dict(model=m2_model, guide=m2_guide, data=M2_DATA),
                   dict(model=m2_model, guide=m2_guide, data=M2_DATA, batch_size=4)):
        history = fit(**{"data": X12, "num_epochs": 2, "batch_size": 12, "progress": False,
                         **kwargs})
        assert history.epoch == [1, 2] and all(math.isfinite(v) for v in history.loss)


# --- parameter ownership: fit trains its pair and touches nothing else -------------------

def _other_model(x, num_data=None):
    with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))):
        u = pyro.sample("u", dist.Normal(torch.zeros_like(x), 1.0))
        pyro.sample("x", dist.Normal(u, 1.0), obs=x)


def _other_guide(x, num_data=None):
    b = pyro.param("b", torch.tensor(0.0))
    with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))):
        pyro.sample("u", dist.Normal(b * x, 1.0))


@pytest.mark.parametrize("order", ["ab", "ba"])
def test_fit_keeps_the_trained_bare_parameters_of_other_pairs(order, tmp_path):
    # Before: fit cleared Pyro's store, so pair A's bare "a" came back at its initial 0.2 and
    # evaluate scored that (-4.504 nats became -7.850 in the example).
    pairs = {"a": (_model, _guide), "b": (_other_model, _other_guide)}
    first, second = pairs[order[0]], pairs[order[1]]
    fit(*first, X12, num_epochs=30, batch_size=12, lr=0.05, progress=False)
    trained = {name: p.detach().clone() for name, p in pyro.get_param_store().items()}
    pyro.set_rng_seed(1)
    before = evaluate.elbo(*first, X12, num_particles=50)
    fit(*second, X12, num_epochs=3, batch_size=12, lr=0.05, progress=False,
        checkpoint=tmp_path / "second.pt")
    for name, value in trained.items():
        assert torch.equal(pyro.param(name).detach(), value), name
    pyro.set_rng_seed(1)
    assert torch.equal(evaluate.elbo(*first, X12, num_particles=50), before)
    saved = load_checkpoint(tmp_path / "second.pt")["param_store"]["params"]
    assert set(saved) == {order[1]}  # the checkpoint holds the run's own parameters only


def test_fit_continues_a_bare_parameter_from_its_stored_value_as_svi_does():
    pyro.param("a", torch.tensor(0.45))
    fit(_model, _guide, X12, num_epochs=1, batch_size=12, lr=1e-6, progress=False)
    assert float(pyro.param("a")) == pytest.approx(0.45, abs=1e-5)  # not its initial 0.2


class _NamedNet(torch.nn.Module):
    """q(z_n) = N(net(x_n), 1) registered by pyro.module under one fixed name."""

    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Linear(1, 1)

    def guide(self, x, num_data=None):
        pyro.module("net", self.net)
        with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))):
            pyro.sample("z", dist.Normal(self.net(x[:, None])[:, 0], 1.0))


@pytest.mark.parametrize("order", ["old first", "new first"])
def test_fit_trains_a_fixed_name_module_itself_not_a_stale_tensor_of_its_name(order):
    old, new = _NamedNet(1), _NamedNet(2)
    runs = [old, new] if order == "old first" else [new, old]
    start = {id(m): [p.detach().clone() for p in m.parameters()] for m in runs}
    fit(_model, runs[0].guide, X12, num_epochs=5, batch_size=12, lr=0.05, progress=False)
    after_first = [p.detach().clone() for p in runs[0].parameters()]
    fit(_model, runs[1].guide, X12, num_epochs=5, batch_size=12, lr=0.05, progress=False)
    for p, p0 in zip(runs[1].parameters(), start[id(runs[1])]):
        assert not torch.equal(p, p0)  # the second module's own tensors were trained
    for p, p1 in zip(runs[0].parameters(), after_first):
        assert torch.equal(p, p1)  # and the first one's left alone
    store = pyro.get_param_store()
    assert all(store.get_param(f"net$$${n}") is p for n, p in runs[1].net.named_parameters())


@pytest.mark.parametrize("ks", [(1, 5), (5, 1)], ids=["K=1 then K=5", "K=5 then K=1"])
def test_fit_starts_the_tracegraph_baselines_of_its_guide_afresh(ks):
    guide = score_function_guide(_guide)
    for k in ks:
        history = fit(_model, guide, X12, loss="tracegraph", num_particles=k, num_epochs=2,
                      batch_size=12, progress=False)
        assert all(math.isfinite(v) for v in history.loss)


def _vae6():
    return VAE(x_dim=6, z_dim=2, hidden_dims=(4,))


def _binary6(n=8, d=6, dtype=torch.float32):
    return torch.bernoulli(torch.full((n, d), 0.5, dtype=dtype),
                           generator=torch.Generator().manual_seed(0))


def _fit6(data, **kwargs):
    vae = _vae6()
    kwargs = {"num_epochs": 1, "batch_size": 4, **kwargs}
    return fit(vae.model, vae.guide, data, progress=False, **kwargs)


#: Sizes, and data the guide would have run on before the model's check (moved from the
#: library-wide table of bad inputs).
SMALL_FIT_CASES = {
    "fit num_particles=2.5": (lambda: _fit6(_binary6(), num_particles=2.5), "num_particles"),
    "fit batch_size=2.5": (lambda: _fit6(_binary6(), batch_size=2.5), "batch_size"),
    "fit num_epochs=1.5": (lambda: _fit6(_binary6(), num_epochs=1.5), "num_epochs"),
    "fit width 5 for x_dim 6": (lambda: _fit6(_binary6(8, 5)), r"x must have shape \(B, 6\)"),
    "fit float64 data": (lambda: _fit6(_binary6(dtype=torch.float64)), "x .*torch.float32"),
    "fit int data": (lambda: _fit6(_binary6().long()), "x .*floating"),
    "fit bool data": (lambda: _fit6(_binary6().bool()), "x .*floating"),
    "fit transform not callable": (lambda: _fit6(_binary6(), transform="binarize"), "transform"),
    "decaying_adam num_epochs=2.5": (lambda: decaying_adam(1e-3, 1e-4, 2.5), "num_epochs"),
}


@pytest.mark.parametrize("case", list(SMALL_FIT_CASES))
def test_bad_sizes_and_data_of_a_vae6_get_a_value_error_naming_them(case):
    call, words = SMALL_FIT_CASES[case]
    with pyro.validation_enabled(False):  # the checks must not depend on Pyro's switch
        with pytest.raises(ValueError, match=words):
            call()
