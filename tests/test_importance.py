"""pyro_lvm.infer.importance: the one weights path refuses pairs whose particles mix (a dim
left of the particle dim), and sums out sites enumerated in the model exactly."""

import math

import pytest
import torch

import pyro
import pyro.distributions as dist
from pyro.infer import TraceEnum_ELBO
from pyro.ops.indexing import Vindex

from pyro_lvm import evaluate
from pyro_lvm.infer import IWAE, make_loss

# Bayesian linear regression, w ~ N(0, I), y_n ~ N(x_n . w, 1): the guide below is the exact
# posterior, so every importance weight is the evidence log p(y) (no Monte Carlo error).
_g = torch.Generator().manual_seed(0)
X = torch.randn(30, 3, generator=_g)
Y = X @ torch.tensor([1.0, -2.0, 0.5]) + torch.randn(30, generator=_g)
_cov = torch.linalg.inv(torch.eye(3) + X.T @ X)
_mean = _cov @ X.T @ Y
EVIDENCE = dist.MultivariateNormal(torch.zeros(30), X @ X.T + torch.eye(30)).log_prob(Y)


def regression(x, y, unsqueeze=False):
    w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    if unsqueeze:  # the mistake: (K, 1, 3) -> (K, 1, 1, 3), so y broadcasts to (K, K, N)
        w = w.unsqueeze(-2)
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal((x * w).sum(-1), 1.0), obs=y)


def posterior(x, y, unsqueeze=False):
    pyro.sample("w", dist.MultivariateNormal(_mean, _cov))


@pytest.mark.parametrize("k", [1, 2, 10])
def test_an_exact_posterior_guide_gives_the_exact_evidence_at_every_k(k):
    estimate = evaluate.log_likelihood(regression, posterior, X, Y, num_samples=k)
    assert estimate.shape == ()  # a global latent: one estimate for the data set
    assert float(estimate) == pytest.approx(float(EVIDENCE), abs=1e-3)  # float32 sums of 30


@pytest.mark.parametrize("k", [2, 10])
def test_a_global_latent_unsqueezed_from_the_left_is_named_with_both_shapes(k):
    # Before: -81.48 at K=2 and -375.49 at K=10 for the evidence -43.58, without a word.
    assert float(evaluate.log_likelihood(regression, posterior, X, Y, num_samples=1,
                                         unsqueeze=True)) == pytest.approx(float(EVIDENCE), abs=1e-3)
    message = (rf"site 'y' has a log-density of shape \({k}, {k}, 30\) with {k} particles, "
               rf"expected \({k}, 30\).*unsqueeze on a global latent")
    with pytest.raises(ValueError, match=message):
        evaluate.log_likelihood(regression, posterior, X, Y, num_samples=k, unsqueeze=True)
    for name in ("iwae", "dreg", "vimco"):  # every loss reads the same weights
        with pytest.raises(ValueError, match=message):
            make_loss(name, k).loss(regression, posterior, X, Y, unsqueeze=True)


# A mixture: y_n ~ Categorical(pi) enumerated in the model, z_n ~ N(0, 1) shared by both
# components, x_n ~ N(mu_y + z_n, 1).  With q(z | x) the prior, log w_nk = log p(x_n | z_nk) is
# a two-term logsumexp; with z dropped from the likelihood it is log p(x_n) exactly.
PI = torch.tensor([0.3, 0.7])
MU = torch.tensor([-2.0, 3.0])
XS = torch.linspace(-4.0, 5.0, 9)


def mixture(x, uses_z=True):
    with pyro.plate("data", len(x)):
        y = pyro.sample("y", dist.Categorical(PI), infer={"enumerate": "parallel"})
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
        pyro.sample("x", dist.Normal(MU[y] + (z if uses_z else 0.0), 1.0), obs=x)


def prior_guide(x, uses_z=True):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))


def _mixture_log_density(x, scale):
    return torch.logsumexp(PI.log() + dist.Normal(MU, scale).log_prob(x[:, None]), -1)


@pytest.mark.parametrize("k", [1, 7])
def test_a_site_enumerated_in_the_model_is_summed_out_exactly_in_each_weight(k):
    exact = _mixture_log_density(XS, 1.0)  # z does not enter: q = the exact posterior of z
    estimate = evaluate.log_likelihood(mixture, prior_guide, XS, num_samples=k, uses_z=False)
    assert estimate.shape == (9,)
    assert torch.allclose(estimate, exact, atol=1e-5)


def test_enumerated_weights_equal_pyro_trace_enum_at_k1_and_approach_log_p_as_k_grows():
    pyro.set_rng_seed(3)
    ours = IWAE(num_particles=1).loss(mixture, prior_guide, XS)
    pyro.set_rng_seed(3)
    pyro_value = TraceEnum_ELBO(max_plate_nesting=1).loss(mixture, prior_guide, XS)
    assert ours == pytest.approx(pyro_value, rel=1e-6)  # the same draws, the same sum
    exact = _mixture_log_density(XS, math.sqrt(2.0)).sum()  # z + noise: N(mu_y, 2)
    bounds = [float(evaluate.log_likelihood(mixture, prior_guide, XS, num_samples=k).sum())
              for k in (1, 30, 3000)]
    # Monte Carlo: at K = 3000 the estimate is within 0.05 nats of log p(x) (its standard
    # error there is below 0.01 for these 9 points), and the bound rises with K.
    assert bounds[0] < bounds[1] < bounds[2] <= float(exact) + 0.02
    assert bounds[2] == pytest.approx(float(exact), abs=0.05)


# A mixture with global latents (the style of Pyro's GMM tutorial): the component means sit
# outside the data plate, so the batch has one weight per particle; a point-mass guide makes
# that weight log p(locs) + sum_n log sum_y p(y) p(x_n | y, locs), exactly.
LOCS = torch.tensor([-1.0, 4.0])


def global_mixture(x, num_data=None):
    locs = pyro.sample("locs", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))):
        y = pyro.sample("y", dist.Categorical(PI), infer={"enumerate": "parallel"})
        pyro.sample("x", dist.Normal(Vindex(locs)[..., y], 1.0), obs=x)


def point_guide(x, num_data=None):
    pyro.sample("locs", dist.Delta(LOCS, event_dim=1))


@pytest.mark.parametrize("k", [1, 4])
def test_enumerated_sites_in_the_data_plate_of_a_pair_with_global_latents(k):
    prior = dist.Normal(0.0, 10.0).log_prob(LOCS).sum()
    per_point = torch.logsumexp(PI.log() + dist.Normal(LOCS, 1.0).log_prob(XS[:, None]), -1)
    estimate = evaluate.log_likelihood(global_mixture, point_guide, XS, num_samples=k)
    assert float(estimate) == pytest.approx(float(prior + per_point.sum()), abs=1e-4)
    # A minibatch of 3 rows for N = 9: the data plate's scale 3 multiplies the summed-out
    # terms outside the logsumexp (as TraceEnum_ELBO does), not the log-densities inside it.
    loss = make_loss("iwae", k).loss(global_mixture, point_guide, XS[:3], num_data=9)
    assert -loss == pytest.approx(float(prior + 3 * per_point[:3].sum()), abs=1e-4)


def nested(x):  # a discrete latent per feature, in a plate nested in the data plate
    with pyro.plate("data", len(x), dim=-2):
        z = pyro.sample("z", dist.Normal(torch.zeros(len(x), 1), 1.0))
        with pyro.plate("features", x.shape[1], dim=-1):
            c = pyro.sample("c", dist.Bernoulli(0.3), infer={"enumerate": "parallel"})
            pyro.sample("x", dist.Normal(z + 2 * c, 1.0), obs=x)


def nested_guide(x):
    with pyro.plate("data", len(x), dim=-2):
        pyro.sample("z", dist.Normal(torch.zeros(len(x), 1), 1.0))


def test_a_site_enumerated_in_a_nested_plate_is_summed_out_per_element():
    x = torch.linspace(-2.0, 3.0, 12).reshape(4, 3)
    (chunk,) = evaluate.log_weight_chunks(nested, nested_guide, x, num_samples=5,
                                          return_sites=("z",))
    z = chunk.values["z"]  # (5, 4, 1): q is the prior, so log w = log p(x_n | z_n)
    mixture = torch.stack([dist.Normal(z + 2 * c, 1.0).log_prob(x) + math.log(p)
                           for c, p in ((0, 0.7), (1, 0.3))])  # (2, 5, 4, 3)
    assert torch.allclose(chunk.log_w, torch.logsumexp(mixture, 0).sum(-1), atol=1e-5)


def test_enumeration_the_weights_cannot_sum_out_is_refused_naming_the_sites():
    def two_levels(x):  # a global discrete latent and a local one
        g = pyro.sample("g", dist.Bernoulli(0.5), infer={"enumerate": "parallel"})
        with pyro.plate("data", len(x)):
            y = pyro.sample("y", dist.Categorical(PI), infer={"enumerate": "parallel"})
            pyro.sample("x", dist.Normal(MU[y] + g, 1.0), obs=x)

    with pytest.raises(ValueError, match=r"enumerated model sites sit in different plates.*'g': "
                                         r"\[\].*'y': \['data'\].*loss='enum'"):
        evaluate.log_likelihood(two_levels, lambda x: None, XS, num_samples=2)

    def sequential(x):
        with pyro.plate("data", len(x)):
            y = pyro.sample("y", dist.Categorical(PI), infer={"enumerate": "sequential"})
            pyro.sample("x", dist.Normal(MU[y], 1.0), obs=x)

    with pytest.raises(NotImplementedError, match="'y', model-side sequential enumeration"):
        evaluate.log_likelihood(sequential, lambda x: None, XS, num_samples=2)  # Pyro's check
    with pyro.validation_enabled(False), \
            pytest.raises(ValueError, match="'y' is not sampled by the guide.*'parallel' ones only"):
        evaluate.log_likelihood(sequential, lambda x: None, XS, num_samples=2)


def test_a_pair_that_fails_only_with_particles_is_told_how_to_index():
    # Pyro's GMM tutorial picks a component mean as locs[assignment]: fine for TraceEnum_ELBO,
    # but with K particles locs is (K, 2) and the index selects particles, not components
    # (Pyro raised "Shape mismatch inside plate('data')" with no word about particles).
    def tutorial(x):
        weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
        with pyro.plate("components", 2):
            locs = pyro.sample("locs", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(x)):
            assignment = pyro.sample("assignment", dist.Categorical(weights),
                                     infer={"enumerate": "parallel"})
            pyro.sample("obs", dist.Normal(locs[assignment], 1.0), obs=x)

    def point_guide(x):
        pyro.sample("weights", dist.Delta(torch.tensor([0.4, 0.6])).to_event(1))
        with pyro.plate("components", 2):
            pyro.sample("locs", dist.Delta(torch.tensor([-1.0, 1.0])))

    pyro.set_rng_seed(0)
    one = evaluate.log_likelihood(tutorial, point_guide, XS, num_samples=1)
    assert float(one) == pytest.approx(-TraceEnum_ELBO(max_plate_nesting=1).loss(
        tutorial, point_guide, XS), abs=1e-4)
    with pytest.raises(ValueError, match=r"(?s)^with K=4 vectorised particles.*Shape mismatch inside "
                                         r"plate\('data'\).*indexes or reshapes a latent from the "
                                         r"left \(locs\[assignment\].*Vindex\(locs\)\[\.\.\., "
                                         r"assignment\]"):
        evaluate.log_likelihood(tutorial, point_guide, XS, num_samples=4)
