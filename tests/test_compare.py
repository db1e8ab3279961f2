"""compare_losses as a user calls it: loss names, tuple data (integer labels included), two
tracegraph rows; bad input refused at its door."""

import math

import pytest
import torch

import pyro
import pyro.distributions as dist

from pyro_lvm.compare import compare_losses
from pyro_lvm.infer import make_loss, score_function_guide
from pyro_lvm.models import VAE

from helpers import assert_refused


def model(x, w):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
        pyro.sample("x", dist.Normal(z, w), obs=x)


def guide(x, w):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(pyro.param("a", torch.tensor(0.3)) * x, 0.8))


def test_compare_losses_takes_names_tuple_data_and_repeated_tracegraph_rows():
    x, w = torch.linspace(-2, 2, 8), torch.ones(8)
    rows = compare_losses(model, guide, (x, w), ["elbo", "tracegraph", "iwae"], num_particles=1,
                          num_draws=5, timing_steps=1)
    assert [r["loss"] for r in rows] == ["elbo", "tracegraph", "iwae"]
    # K = 1: all three estimate the ELBO, per point, for the same parameters
    assert abs(rows[0]["bound"] - rows[2]["bound"]) < 4 * (rows[0]["bound_se"] + rows[2]["bound_se"]) + 1e-6
    rows = compare_losses(model, guide, (x, w), {"tg": "tracegraph", "tg-sf": ("tracegraph", score_function_guide(guide))},
                          num_particles=3, num_draws=5, timing_steps=1)  # baselines of other shapes
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(r["bound"])) for r in rows)


def labelled_model(x, labels, num_data=None):
    """x_n ~ N(z_n + labels_n, 1), z_n ~ N(0, 1): integer labels as a second data tensor."""
    with pyro.plate("data", num_data or len(x), subsample_size=len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
        pyro.sample("x", dist.Normal(z + labels, 1.0), obs=x)


def labelled_guide(x, labels, num_data=None):
    with pyro.plate("data", num_data or len(x), subsample_size=len(x)):
        pyro.sample("z", dist.Normal(pyro.param("a", torch.tensor(0.3)) * (x - labels), 0.8))


class NamedNet:
    """q(z_n) = N(net(x_n), 0.8), registered as Pyro's tutorials do: pyro.module("net", ...)."""

    def __init__(self, seed):
        torch.manual_seed(seed)
        self.net = torch.nn.Linear(1, 1)

    def guide(self, x, num_data=None):
        pyro.module("net", self.net)
        with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))):
            pyro.sample("z", dist.Normal(self.net(x[:, None])[:, 0], 0.8))


def named_model(x, num_data=None):
    with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def _rows(net):
    return compare_losses(named_model, net.guide, X8, ["elbo", "tracegraph"], num_draws=4,
                          timing_steps=1, train_steps=2, lr=0.05, test_data=X8, eval_samples=5)


X8 = torch.linspace(-2, 2, 8)


@pytest.mark.parametrize("order", ["fresh first", "trained first"])
def test_compare_losses_measures_a_fixed_name_module_itself_and_leaves_the_store(order):
    # Before: on the global store a fresh module got the weights (and so the gradients) of
    # one trained before under the same pyro.module name.
    trained, fresh = NamedNet(1), NamedNet(2)
    start = [p.detach().clone() for p in fresh.net.parameters()]
    if order == "fresh first":
        expected = _rows(fresh)
    svi = pyro.infer.SVI(named_model, trained.guide, pyro.optim.Adam({"lr": 0.1}),
                         pyro.infer.Trace_ELBO())
    for _ in range(5):
        svi.step(X8)
    store = pyro.get_param_store()
    before = {name: store._params[name] for name in store.keys()}
    rows = _rows(fresh)
    assert {name: store._params[name] for name in store.keys()} == before
    assert all(torch.equal(p, p0) for p, p0 in zip(fresh.net.parameters(), start))
    if order == "trained first":
        pyro.clear_param_store()
        expected = _rows(fresh)
    for row, want in zip(rows, expected):
        for key in ("bound", "guide_variance", "test_log_likelihood"):
            assert row[key] == want[key], (row["loss"], key)


def test_compare_losses_takes_integer_labels_as_fit_and_evaluate_do():
    # Before: every data tensor had to be floating (check_data), so (x, labels) was refused.
    x, labels = torch.linspace(-2, 2, 8), torch.arange(8) % 2
    rows = compare_losses(labelled_model, labelled_guide, (x, labels), ["elbo", "iwae"],
                          num_draws=5, timing_steps=1, train_steps=1, batch_size=4,
                          test_data=(x, labels), eval_samples=10)
    # K = 1: both estimate the ELBO per point at the same parameters (4 standard errors)
    assert abs(rows[0]["bound"] - rows[1]["bound"]) < 4 * (rows[0]["bound_se"] + rows[1]["bound_se"]) + 1e-6
    assert all(math.isfinite(r["test_log_likelihood"]) for r in rows)


# --- bad input at the door ----------------------------------------------------------------

def small_vae():
    return VAE(x_dim=6, z_dim=2, hidden_dims=(4,))


def binary(n=8, d=6, dtype=torch.float32):
    return torch.bernoulli(torch.full((n, d), 0.5, dtype=dtype),
                           generator=torch.Generator().manual_seed(0))


def compare(**change):
    vae = small_vae()
    args = {"model": vae.model, "guide": vae.guide, "data": binary(),
            "losses": {"elbo": make_loss("elbo")}, "timing_steps": 1, **change}
    return compare_losses(args.pop("model"), args.pop("guide"), args.pop("data"),
                          args.pop("losses"), **args)


def nan_at(x):
    x = x.clone()
    x[1, 2] = float("nan")
    return x


BAD_COUNTS = {"0": 0, "-1": -1, "2.5": 2.5, "True": True, "'3'": "3", "None": None}
CASES = {
    # moved from tests/test_errors.py
    "compare num_draws=1": (lambda: compare(num_draws=1), "num_draws"),
    # data (the VAE names its own argument x; the message says which argument it was)
    "data a list of rows": (lambda: compare(data=[[0.0] * 6] * 8),
                            "data must be a tensor .* got a list; pass torch.stack"),
    "data a list of tensors": (lambda: compare(data=list(binary())), "data must be .* got a list"),
    "data 0-dim": (lambda: compare(data=torch.tensor(1.0)), "data must have a leading data dim"),
    "data empty": (lambda: compare(data=torch.zeros(0, 6)), "data must have at least 1 rows"),
    "data NaN": (lambda: compare(data=nan_at(binary())), "data: x contains NaN"),
    "data int": (lambda: compare(data=binary().long()), "data: x .*floating"),
    "data float64": (lambda: compare(data=binary(dtype=torch.float64)), "data: x .*torch.float32"),
    "data width 5": (lambda: compare(data=binary(8, 5)), r"data: x must have shape \(B, 6\)"),
    "data grey levels 0-3": (lambda: compare(data=binary() * 3), r"data: x must lie in \[0.0, 1.0\]"),
    "data None": (lambda: compare(data=None), "data must be a tensor .* got NoneType"),
    "data unequal N": (lambda: compare(data=(binary(), torch.ones(3))), "share their first dim"),
    "test_data NaN": (lambda: compare(test_data=nan_at(binary())), "test_data: x contains NaN"),
    "test_data width 5": (lambda: compare(test_data=binary(8, 5)), r"test_data: x must have shape"),
    "train_data a list": (lambda: compare(train_data=list(binary())), "train_data must be .* list"),
    "train_data NaN with a transform": (lambda: compare(train_data=nan_at(binary()),
                                                        transform=lambda x: x),
                                        "train_data contains NaN"),
    # losses
    "losses empty": (lambda: compare(losses=[]), "losses must be a non-empty list"),
    "losses a string": (lambda: compare(losses="elbo"), "losses must be .* got 'elbo'"),
    "losses None": (lambda: compare(losses=None), "losses must be"),
    "losses unknown name": (lambda: compare(losses=["nope"]), r"losses\['nope'\] must be one of"),
    "losses a number": (lambda: compare(losses={"a": 3}), r"losses\['a'\] must be a loss name"),
    "losses a 1-tuple": (lambda: compare(losses={"a": ("elbo",)}), r"losses\['a'\] must be .* tuple"),
    "losses guide not callable": (lambda: compare(losses={"a": ("elbo", 3)}),
                                  r"the guide of losses\['a'\] must be callable"),
    # the rest
    "model None": (lambda: compare(model=None), "model must be callable, got NoneType"),
    "guide a string": (lambda: compare(guide="guide"), "guide must be callable, got str"),
    "transform a string": (lambda: compare(transform="binarize"), "transform must be callable"),
    "exact_log_likelihood 1": (lambda: compare(exact_log_likelihood=1),
                               "exact_log_likelihood must be callable"),
    **{f"lr={w}": (lambda v=v: compare(lr=v), "lr must be a finite number > 0")
       for w, v in {"0": 0, "-1": -1, "nan": float("nan"), "'1e-3'": "1e-3"}.items()},
}
for _arg, _minimum in {"num_particles": "a positive integer", "num_draws": "an integer >= 2",
                       "train_steps": "an integer >= 0", "timing_steps": "a positive integer",
                       "eval_samples": "a positive integer", "batch_size": "a positive integer",
                       "seed": "an integer >= 0"}.items():
    for _what, _value in BAD_COUNTS.items():
        if _value is None and _arg == "batch_size" or _value == 0 and _arg in ("train_steps", "seed"):
            continue  # allowed: batch_size None (all rows), no training, seed 0
        CASES[f"{_arg}={_what}"] = (lambda a=_arg, v=_value: compare(**{a: v}),
                                    f"{_arg} must be {_minimum}")


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_a_value_error_naming_it(case):
    assert_refused(*CASES[case])
