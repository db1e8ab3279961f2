"""Annealed importance sampling and bidirectional Monte Carlo (pyro_lvm.ais, through
evaluate.ais_log_likelihood and evaluate.bdmc), checked against exact log-likelihoods.

Tolerances are Monte Carlo errors: the delta-method standard error across chains that
AIS returns per point, ``se_n``; a mean over N points has standard error
``sqrt(sum se_n^2) / N``, and the tests allow 3 of them.  The runs are short
(``num_leapfrog=2``) so that the file takes seconds.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import pyro
import pyro.distributions as dist

from pyro_lvm import evaluate
from pyro_lvm.models import VAE, ppca
from pyro_lvm.models.missing import MissingPixelModel
from pyro_lvm.models.pixel_guides import ObservedGuide

D, Q, SIGMA = 5, 2, 0.5


def ppca_model(n, seed=0, dtype=torch.float32):
    """A PPCA model with random W and ``n`` points drawn from it, and the exact
    ``log p(x_n)`` (closed form) as a function of the data."""
    g = torch.Generator().manual_seed(seed)
    W, mean = torch.randn(D, Q, generator=g, dtype=dtype), torch.zeros(D, dtype=dtype)
    z = torch.randn(n, Q, generator=g, dtype=dtype)
    x = z @ W.T + SIGMA * torch.randn(n, D, generator=g, dtype=dtype)
    model = ppca.PPCA(D, Q, W=W, mean=mean, noise_scale=SIGMA).to(dtype)
    return model, x, lambda data: ppca.log_likelihood(data, W, mean, SIGMA)


def mean_and_se(result):
    """Mean over points of an AIS result's estimate and its standard error."""
    n = result.log_likelihood.shape[0]
    return result.log_likelihood.mean(), result.stderr.pow(2).sum().sqrt() / n


def test_ais_reaches_the_exact_ppca_likelihood_from_a_poor_guide_as_steps_grow():
    model, x, exact = ppca_model(100)
    # The linear guide at its initialisation ignores x: q(z | x) = N(0, 0.69^2 I) for every
    # point, against posteriors of scale ~0.2 elsewhere.
    guide = ppca.AmortisedLinearGuide(D, Q, "diagonal")
    truth = exact(x).mean()
    errors = {}
    for num_steps in (1, 10, 100):
        result = evaluate.ais_log_likelihood(model.model, guide.guide, x, num_steps=num_steps,
                                             num_chains=16, num_leapfrog=2,
                                             return_diagnostics=True)
        estimate, se = mean_and_se(result)
        errors[num_steps] = (estimate - truth, se)
    error, se = errors[100]
    assert abs(error) < 3 * se, errors
    for fewer, more in ((1, 10), (10, 100)):  # a lower bound that tightens with the steps
        (e1, s1), (e2, s2) = errors[fewer], errors[more]
        assert e1 < e2 - 3 * math.hypot(s1, s2), errors


def test_bdmc_sandwiches_the_exact_likelihood_of_simulated_ppca_data():
    model, x, exact = ppca_model(100, seed=1)
    guide = ppca.AmortisedLinearGuide(D, Q, "diagonal")
    result = evaluate.bdmc(model.model, guide.guide, x, num_steps=10, num_chains=16,
                           num_leapfrog=2)
    assert result.data.shape == x.shape and not torch.equal(result.data, x)
    truth = exact(result.data).mean()
    lower, se_lower = mean_and_se(result.forward)
    upper, se_upper = mean_and_se(result.reverse)
    assert torch.equal(result.lower, result.forward.log_likelihood)
    assert lower < truth + 3 * se_lower and truth < upper + 3 * se_upper, (lower, truth, upper)
    assert torch.isclose(result.gap, (result.upper - result.lower).mean())
    assert result.gap > 3 * math.hypot(se_lower, se_upper)  # 10 steps: the sandwich is open


def quadrature_pair(n=20):
    """A nonlinear model with a one-dimensional latent: a Bernoulli VAE decoder on 784 pixels,
    the top half hidden and summed out (MissingPixelModel.observed_model); images drawn from
    it, and their exact log p(x_observed) by quadrature on a fine grid (posterior scales
    0.05-0.25, grid step 4e-4)."""
    torch.manual_seed(3)
    vae = VAE(z_dim=1, hidden_dims=(8,))
    with torch.no_grad():
        for p in vae.decoder.parameters():
            p.mul_(4.0)  # pixels that depend strongly on z: a sharp posterior
        x = torch.bernoulli(torch.sigmoid(vae.decoder(torch.randn(n, 1))))
        mask = torch.zeros(n, 784, dtype=torch.bool)
        mask[:, :392] = True
        grid = torch.linspace(-8, 8, 40001, dtype=torch.float64)
        logits = vae.decoder.double()(grid[:, None])
        vae.float()
        # log Bernoulli(x | l) = x l - softplus(l), summed over the observed pixels by matmul
        observed = (~mask).double()
        log_lik = (x.double() * observed) @ logits.T - observed @ F.softplus(logits).T
        log_joint = log_lik + dist.Normal(0.0, 1.0).log_prob(grid)
        exact = (torch.logsumexp(log_joint, -1) + math.log(grid[1] - grid[0])).float()
    return MissingPixelModel(vae), vae, x, mask, exact


def test_ais_beats_importance_sampling_at_equal_cost_on_a_nonlinear_model():
    model, vae, x, mask, exact = quadrature_pair()
    # An over-confident guide, the usual failure of amortised inference: q(z | x) = N(0, 0.05^2).
    guide = ObservedGuide(vae, hidden_dims=(8,))
    with torch.no_grad():
        guide.encoder[-1].weight.zero_()
        guide.encoder[-1].bias.copy_(torch.tensor([0.0, -3.0]))
    num_chains, num_steps, num_leapfrog = 8, 20, 2
    cost = num_chains * (1 + (num_steps - 1) * (num_leapfrog + 1))  # model evaluations per image
    result = evaluate.ais_log_likelihood(model.observed_model, guide.guide, x, mask,
                                         num_steps=num_steps, num_chains=num_chains,
                                         num_leapfrog=num_leapfrog, return_diagnostics=True)
    is_error = (evaluate.log_likelihood(model.observed_model, guide.guide, x, mask,
                                        num_samples=cost) - exact).mean()
    ais_error, se = mean_and_se(result)
    ais_error = ais_error - exact.mean()
    assert ais_error < 3 * se  # a lower bound, up to Monte Carlo error
    assert abs(ais_error) + 3 * se < abs(is_error), (ais_error, se, is_error)


def test_ais_with_the_exact_posterior_as_guide_has_constant_weights():
    model, x, exact = ppca_model(20, dtype=torch.float64)
    guide = ppca.exact_posterior_guide(model)
    for num_steps in (1, 4):
        result = evaluate.ais_log_likelihood(model.model, guide.guide, x, num_steps=num_steps,
                                             num_chains=4, num_leapfrog=2,
                                             return_diagnostics=True)
        # log p(x, z) - log q(z | x) = log p(x) at every z: every increment of every chain is
        # (beta_t - beta_{t-1}) log p(x), whatever the chain does (float64 rounding only).
        assert torch.allclose(result.log_likelihood, exact(x), atol=1e-8, rtol=0)
        assert torch.all(result.stderr < 1e-8)


def discrete_pair():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Bernoulli(0.3))

    return model, guide


def global_pair():
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(x):
        pyro.sample("mu", dist.Normal(0.1, 1.0))

    return model, guide


@pytest.mark.parametrize("estimate", [evaluate.ais_log_likelihood, evaluate.bdmc])
@pytest.mark.parametrize("pair, words", [
    (discrete_pair, "guide site 'z' is discrete"),
    (global_pair, "latent site 'mu' is outside the data plate"),
])
def test_pairs_ais_cannot_move_are_refused_naming_the_site(estimate, pair, words):
    model, guide = pair()
    with pytest.raises(ValueError, match=words):
        estimate(model, guide, torch.randn(4), num_steps=3, num_chains=2)


@pytest.mark.parametrize("estimate", [evaluate.ais_log_likelihood, evaluate.bdmc])
@pytest.mark.parametrize("options, words", [
    (dict(num_steps=0), "num_steps must be a positive integer"),
    (dict(num_steps=2.5), "num_steps must be a positive integer"),
    (dict(num_chains=-1), "num_chains must be a positive integer"),
    (dict(num_chains=True), "num_chains must be a positive integer"),
    (dict(num_leapfrog=0), "num_leapfrog must be a positive integer"),
    (dict(step_size=float("nan")), "step_size must be a finite number > 0"),
    (dict(step_size=float("inf")), "step_size must be a finite number > 0"),
    (dict(target_accept=1.0), r"target_accept must lie in \(0, 1\)"),
    (dict(target_accept=float("nan")), r"target_accept must lie in \(0, 1\)"),
    (dict(schedule="cosine"), "schedule must be one of"),
])
def test_bad_settings_are_refused_at_the_door(estimate, options, words):
    vae = VAE(z_dim=2, hidden_dims=(8,))
    with pytest.raises(ValueError, match=words):
        estimate(vae.model, vae.guide, torch.zeros(3, 784), **options)


@pytest.mark.parametrize("estimate", [evaluate.ais_log_likelihood, evaluate.bdmc])
@pytest.mark.parametrize("x, words", [
    (torch.zeros(3, 10), r"x must have shape \(B, 784\)"),
    (torch.zeros(784), r"x must have shape \(B, 784\)"),
    (torch.full((3, 784), float("nan")), "NaN"),
    ([torch.zeros(784)] * 3, "got a list"),
])
def test_data_of_the_wrong_shape_or_values_are_refused_at_the_door(estimate, x, words):
    vae = VAE(z_dim=2, hidden_dims=(8,))
    with pytest.raises(ValueError, match=words):
        estimate(vae.model, vae.guide, x, num_steps=2, num_chains=2)
