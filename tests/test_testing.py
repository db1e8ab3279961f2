"""pyro_lvm.testing: each assertion passes on the library's correct estimators (at
several seeds, false-alarm rate 1e-3 each) and fails on a deliberately broken one."""

import math

import pytest
import torch

import pyro
import pyro.distributions as dist
from pyro.infer import Trace_ELBO

from pyro_lvm import testing
from pyro_lvm.infer import IWAE, VIMCO, log_mean_exp, score_function_guide

from helpers import digits, fitted_ppca, imperfect_guide

# z_n ~ N(0, 1), x_n ~ N(z_n, 1): log p(x_n) = log N(x_n; 0, 2).  Spread-out points make
# pooling weights across points visibly wrong.
X = torch.linspace(-3.0, 3.0, 12, dtype=torch.float64)
LOG_P = dist.Normal(0.0, math.sqrt(2.0)).log_prob(X).sum()
DRAWS = 60  # per estimator and check; the tolerances are Student-t at 59 degrees of freedom


def model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def guide(x):
    """q(z_n) = N(a x_n, s), at a = 0.2, s = 1 (the posterior is a = 0.5, s = 0.71)."""
    a = pyro.param("a", torch.tensor(0.2, dtype=torch.float64))
    s = pyro.param("s", torch.tensor(1.0, dtype=torch.float64))
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(a * x, s))


def exact_elbo(a, s, x=X):
    """ELBO in closed form: E_q[log N(z; 0, 1) + log N(x; z, 1) - log q(z)] summed over points."""
    m = a * x
    return (-math.log(2 * math.pi) - 0.5 * (m**2 + s**2) - 0.5 * ((x - m) ** 2 + s**2)
            + 0.5 * torch.log(2 * math.pi * s**2) + 0.5).sum()


class PooledIWAE(IWAE):
    """Broken: averages the weights of all points before the log (B log mean_{k,n} w_nk)."""

    def surrogate(self, weights):
        loss = -weights.scale * weights.log_w.shape[1] * log_mean_exp(weights.log_w.reshape(-1), 0)
        return loss, loss


class SelfBaselineVIMCO(VIMCO):
    """Broken: each particle's baseline is its own log-weight, which depends on its draw."""

    def learning_signal(self, log_w, bound):
        return bound - log_w


def test_check_pair_passes_on_library_pairs_and_lists_every_problem():
    testing.check_pair(model, guide, X)
    x = digits()[:20]
    ppca_model = fitted_ppca(digits()[:300], 3)
    testing.check_pair(ppca_model.model, imperfect_guide(ppca_model, x).guide, x, per_point=True)

    def bad_guide(x):
        pyro.sample("u", dist.Normal(0.0, 1.0))  # not in the model; 'z' is missing

    with pytest.raises(AssertionError, match=r"(?s)2 problem.*guide but not model.*\{'u'\}.*model but not guide.*\{'z'\}"):
        testing.check_pair(model, bad_guide, X)

    def beta_model(x):
        p = pyro.sample("p", dist.Beta(2.0, 2.0))
        pyro.sample("x", dist.Bernoulli(p).expand([len(x)]), obs=x)  # no plate: undeclared dim

    def normal_guide(x):
        pyro.sample("p", dist.Normal(pyro.param("m", torch.tensor(0.5)), 0.1))

    with pytest.raises(AssertionError, match=r"2 problem\(s\):\n.*support Real\(\) differs from the model's Interval.*\n.*\"x\", invalid log_prob shape"):
        testing.check_pair(beta_model, normal_guide, torch.ones(4))

    def subsampled_model(x):
        with pyro.plate("data", 10, subsample_size=4) as rows:
            pyro.sample("z", dist.Normal(0.0, 1.0).expand([len(rows)]))

    def global_loc_guide(x):
        loc = pyro.param("loc", torch.zeros(10))  # per-point, but not declared local
        with pyro.plate("data", 10, subsample_size=4):
            pyro.sample("z", dist.Normal(loc[:4], 1.0))

    with pytest.raises(AssertionError, match=r"parameter 'loc' \(10,\).*event_dim"):
        testing.check_pair(subsampled_model, global_loc_guide, X)

    def global_model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def global_guide(x):
        pyro.sample("mu", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0))

    testing.check_pair(global_model, global_guide, X)  # fine for every loss ...
    with pytest.raises(AssertionError, match="one common data plate"):  # ... not per point
        testing.check_pair(global_model, global_guide, X, per_point=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bounds_ordered_passes_for_the_library_estimators(seed):
    bounds = testing.assert_bounds_ordered(model, guide, X, losses=("elbo", "iwae", "dreg", "vimco"),
                                           num_particles=(1, 5, 50), log_likelihood=LOG_P, seed=seed)
    assert bounds["iwae(K=50)"][0] > bounds["elbo(K=1)"][0]  # the chain is not trivially flat
    testing.assert_bounds_ordered(model, guide, X, seed=seed)  # log p(x) by a large-K estimate


def test_bounds_ordered_fails_for_an_iwae_that_pools_weights_before_the_log():
    with pytest.raises(AssertionError, match=r"PooledIWAE = .* is above log p\(x\) exact"):
        testing.assert_bounds_ordered(model, guide, X, losses=("elbo", PooledIWAE(num_particles=50)),
                                      log_likelihood=LOG_P)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradients_agree_for_estimators_of_one_objective(seed):
    sf_guide = score_function_guide(guide)
    testing.assert_gradients_agree(model, guide, X, losses=("elbo", ("tracegraph", sf_guide)),
                                   num_draws=DRAWS, seed=seed)
    testing.assert_gradients_agree(model, guide, X, losses=("iwae", "dreg"), num_particles=5,
                                   num_draws=DRAWS, seed=seed)
    testing.assert_gradients_agree(model, guide, X, losses=(("iwae", sf_guide), ("vimco", sf_guide)),
                                   num_particles=3, num_draws=DRAWS, seed=seed)
    testing.assert_gradients_agree(model, guide, X, losses=("iwae", Trace_ELBO()), num_draws=DRAWS,
                                   seed=seed)


def test_gradients_agree_fails_for_a_baseline_that_depends_on_the_draw():
    sf_guide = score_function_guide(guide)
    with pytest.raises(AssertionError, match=r"gradients of vimco\(K=3\) and SelfBaselineVIMCO disagree"):
        testing.assert_gradients_agree(model, guide, X, losses=(
            ("vimco", sf_guide), (SelfBaselineVIMCO(num_particles=3), sf_guide)), num_particles=3,
            num_draws=DRAWS)


def _exact_grad():
    a = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    ga, gs = torch.autograd.grad(-exact_elbo(a, s), (a, s))
    return exact_elbo(a, s).item(), {"a": ga, "s": gs}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", ["elbo", "meanfield", "tracegraph", "iwae", "dreg"])
def test_unbiased_passes_for_every_elbo_estimator(name, seed):
    value, grad = _exact_grad()
    testing.assert_unbiased(model, guide, X, loss=name, exact_value=value, exact_grad=grad,
                            num_draws=DRAWS, seed=seed)


def test_unbiased_fails_for_another_objective_or_a_wrong_gradient():
    value, grad = _exact_grad()
    with pytest.raises(AssertionError, match=r"iwae\(K=5\) is biased.*\n  value: estimate"):
        testing.assert_unbiased(model, guide, X, loss="iwae", num_particles=5, exact_value=value)
    with pytest.raises(AssertionError, match=r"grad a: estimate"):
        testing.assert_unbiased(model, guide, X, loss="elbo", exact_grad={"a": 0.0})  # the optimum's
