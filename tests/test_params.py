"""pyro_lvm.params: a block on a store of its own leaves the caller's store as it found it,
and taking ownership before training removes the pair's stale entries only."""

import pytest
import torch

import pyro
from pyro.distributions import constraints

from pyro_lvm.params import isolated_param_store, register, take_ownership


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
