"""params: one param-store name per model instance, registration checked against the store,
evaluation on a store of its own; a block on a store of its own leaves the caller's store as it
found it, and taking ownership before training removes the pair's stale entries only."""

import pytest
import torch

import pyro
from pyro.distributions import constraints

from helpers import fit_briefly, grey_images, small_vae
from pyro_lvm import evaluate
from pyro_lvm.data import binarize
from pyro_lvm.models import VAE, ppca
from pyro_lvm.params import isolated_param_store, register, take_ownership


def _elbo(vae, x):
    pyro.set_rng_seed(7)  # same draws for every call: differences are the parameters'
    return evaluate.elbo(vae.model, vae.guide, x, num_particles=2)


def test_two_models_trained_one_after_the_other_keep_their_own_weights():
    # Before: both were "vae" in Pyro's store, so fitting B gave B A's tensors (A's were lost).
    x = binarize(grey_images())
    a = small_vae(seed=0)
    fit_briefly(a, x)
    trained_a = {k: v.detach().clone() for k, v in a.state_dict().items()}
    score_a = _elbo(a, x)
    b = small_vae(seed=1)
    fit_briefly(b, x, seed=3)
    assert a.encoder[0].weight is not b.encoder[0].weight
    assert all(torch.equal(v, a.state_dict()[k]) for k, v in trained_a.items())
    assert torch.equal(_elbo(a, x), score_a)  # A scores as it did before B was trained
    assert not torch.equal(_elbo(b, x), score_a)


def test_evaluate_scores_the_model_it_is_given_not_a_trained_one_in_the_store():
    # Before: a new VAE(hidden 64) took the trained hidden-32 encoder in place and scored like it.
    x = binarize(grey_images())
    trained = small_vae(hidden=32, name="vae")
    fit_briefly(trained, x)
    fresh = small_vae(hidden=64, name="vae", seed=2)
    init = fresh.encoder[0].weight.detach().clone()
    score = _elbo(fresh, x)
    assert fresh.encoder[0].weight.shape == (64, 784) and torch.equal(fresh.encoder[0].weight, init)
    pyro.clear_param_store()
    assert torch.equal(score, _elbo(fresh, x))  # the same as with nothing else in the store
    assert set(pyro.get_param_store().keys()) == set()  # evaluation leaves nothing behind


def test_registering_over_a_stale_parameter_of_another_shape_is_an_error():
    # Before: pyro.module silently replaced the module's (64, 784) weight by the stored (32, 784).
    x = binarize(grey_images(8))
    old = small_vae(hidden=32, name="m")
    old.guide(x)  # registers m_encoder$$$... in the global store, as a hand-written SVI loop does
    new = small_vae(hidden=64, name="m")
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


def _state():
    store = pyro.get_param_store()
    return {name: store._params[name] for name in store.keys()}


@pytest.mark.parametrize("copy", [False, True])
def test_an_isolated_block_reads_bare_parameters_and_leaves_the_store_as_it_was(copy):
    a = pyro.param("a", torch.tensor([1.0, 2.0]))
    pyro.param("s", torch.tensor(3.0), constraint=constraints.positive)
    pyro.param("__baseline_avg_downstream_cost_z", torch.zeros(5))  # one loss run's state
    module = torch.nn.Linear(2, 1)
    register("stale", torch.nn.Linear(2, 1))  # another instance's tensors under the name
    before = _state()
    with isolated_param_store(copy=copy) as scope:
        inside = pyro.get_param_store()
        assert set(inside.keys()) == {"a", "s"} and scope.carried == {"a", "s"}
        assert torch.equal(pyro.param("a"), a) and (pyro.param("a") is a) != copy
        assert float(pyro.param("s")) == pytest.approx(3.0)  # with its constraint
        register("stale", module)  # a module is read from itself, never from the store
        assert inside.get_param("stale$$$weight") is module.weight
        pyro.param("b", torch.ones(3))  # created here
        if copy:
            with torch.no_grad():
                inside["a"].add_(10.0)  # trained here: the caller's tensor is not touched
    assert scope.initialised == ["b"]
    assert _state() == before and torch.equal(a, torch.tensor([1.0, 2.0]))


def test_taking_ownership_removes_the_pairs_module_entries_and_baselines_only():
    register("mine", torch.nn.Linear(2, 1))
    register("theirs", torch.nn.Linear(2, 1))
    pyro.param("a", torch.tensor(0.5))  # the pair's bare parameter: kept, training continues
    pyro.param("c", torch.tensor(1.5))  # another pair's
    for site in ("z", "u"):
        pyro.param(f"__baseline_avg_downstream_cost_{site}", torch.zeros(2))
    names = {"mine$$$weight", "mine$$$bias", "a"}
    foreign = take_ownership(names, guide_sites={"z"})
    assert set(pyro.get_param_store().keys()) == {"theirs$$$weight", "theirs$$$bias", "a", "c",
                                                   "__baseline_avg_downstream_cost_u"}
    assert foreign == {"theirs$$$weight", "theirs$$$bias", "c", "__baseline_avg_downstream_cost_u"}
    assert float(pyro.param("a")) == 0.5
