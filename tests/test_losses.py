"""The mission's "compare ELBO variants in tests", on models with exact answers."""

import math

import numpy as np
import pytest
import torch

import pyro
from pyro.infer import RenyiELBO, Trace_ELBO

from pyro_lvm import testing
from pyro_lvm.compare import gradient_statistics
from pyro_lvm.infer import IWAE, LOSSES, make_loss, score_function_guide
from pyro_lvm.models import gmm, ppca

from helpers import closed_form_elbo, digits, fitted_ppca, imperfect_guide


def test_registry_builds_every_loss_and_rejects_unknown_ones():
    for name in LOSSES:
        loss = make_loss(name, num_particles=2)
        assert all(hasattr(loss, m) for m in ("loss", "loss_and_grads", "differentiable_loss"))
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("renyi")
    with pytest.raises(ValueError, match="num_particles"):
        make_loss("iwae", num_particles=0)
    with pytest.raises(ValueError, match="vimco needs num_particles >= 2"):
        make_loss("vimco", num_particles=1)
    with pytest.raises(ValueError, match="baseline"):
        make_loss("tracegraph", baseline="magic")


@pytest.mark.parametrize("num_data", [None, 1000], ids=["full-batch", "subsampled-N1000-B60"])
def test_elbo_below_iwae_below_log_likelihood_and_iwae_grows_with_k(num_data):
    x = digits()[:60]
    model = fitted_ppca(digits()[:500], 3)
    guide = imperfect_guide(model, x)
    scale = (num_data or len(x)) / len(x)  # the losses' values are for the whole data set
    exact = scale * model.log_likelihood(x).sum().item()
    bounds = testing.assert_bounds_ordered(model.model, guide.guide, x, losses=("elbo", "iwae"),
                                           num_particles=(1, 10, 100, 1000), log_likelihood=exact,
                                           num_draws=10, num_data=num_data)
    per_point = {k: (exact - bounds[f"iwae(K={k})"][0]) / scale / len(x) for k in (1, 1000)}
    assert per_point[1] > 1.0  # the guide is imperfect: the ELBO is well below
    assert per_point[1000] < 0.05


def test_pyro_renyi_goes_above_log_likelihood_under_subsampling_and_ours_does_not():
    x = digits()[:60]
    model = fitted_ppca(digits()[:500], 3)
    guide = imperfect_guide(model, x)
    scaled_exact = 1000 / 60 * model.log_likelihood(x).sum().item()
    renyi = -RenyiELBO(alpha=0, num_particles=1000, vectorize_particles=True).loss(
        model.model, guide.guide, x, num_data=1000)
    ours = -IWAE(num_particles=1000).loss(model.model, guide.guide, x, num_data=1000)
    assert renyi > scaled_exact + 10  # Pyro exponentiates the scaled weights: no longer a bound
    assert ours <= scaled_exact
    assert ours > scaled_exact - 0.05 * 1000


def test_exact_posterior_guide_makes_every_bound_tight_and_dreg_stick_the_landing():
    x = digits()[:50]
    model = fitted_ppca(digits()[:500], 3)
    guide = ppca.exact_posterior_guide(model)
    exact = model.log_likelihood(x).sum().item()
    for name in ("elbo", "iwae", "dreg"):
        value = -make_loss(name, num_particles=10).loss(model.model, guide.guide, x)
        assert value == pytest.approx(exact, abs=1e-6 * abs(exact))
    guide_params = list(guide.parameters())

    def guide_gradient(name):
        pyro.set_rng_seed(1)
        value = make_loss(name, num_particles=10).differentiable_loss(model.model, guide.guide, x)
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, guide_params)])

    assert guide_gradient("dreg").abs().max() < 1e-8
    assert guide_gradient("elbo").abs().max() > 1e-2  # Trace_ELBO keeps the zero-mean score term
    assert guide_gradient("iwae").abs().max() > 1e-2


def _mean_and_se(estimate, draws):
    samples = torch.stack([estimate() for _ in range(draws)])
    return samples.mean(0), samples.std(0) / math.sqrt(draws), samples.var(0)


def _grad(value, params):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, params)])


@pytest.mark.parametrize("name", ["elbo", "tracegraph-score-function"])
def test_elbo_gradients_are_unbiased_against_the_closed_form(name):
    x = digits()[:4, :8]
    model = fitted_ppca(digits()[:300, :8], 2)
    guide = imperfect_guide(model, x)
    params = list(guide.parameters()) + list(model.parameters())
    exact = _grad(-closed_form_elbo(model, guide.distribution(x), x).sum(), params)
    if name == "elbo":
        loss, g = Trace_ELBO(), guide.guide
    else:
        loss, g = make_loss("tracegraph", baseline="none"), score_function_guide(guide.guide)
    reps = 50  # each draw averages 50 independent one-sample estimates, as 50 copies of the data
    x_rep = x.repeat(reps, 1)
    pyro.set_rng_seed(0)
    mean, se, _ = _mean_and_se(lambda: _grad(loss.differentiable_loss(model.model, g, x_rep), params) / reps, 100)
    assert torch.all((mean - exact).abs() <= 4 * se + 1e-9), (mean - exact) / se


def _iwae2_by_quadrature(model, guide, x, nodes=40):
    """E over z_1, z_2 ~ q of log (w_1 + w_2) / 2 for a 1-d latent, by Gauss-Hermite quadrature
    (tensor grid of ``nodes``^2 points), differentiable in every parameter."""
    e, w = np.polynomial.hermite_e.hermegauss(nodes)
    e, w = torch.tensor(e), torch.tensor(w / math.sqrt(2 * math.pi))
    q = guide.distribution(x)
    loc, scale = q.mean[:, 0], q.stddev[:, 0]  # (N,)
    z = loc[:, None] + scale[:, None] * e  # (N, nodes)
    joint = torch.distributions.Normal(z[..., None] * model.W[:, 0] + model.mean, model.noise_scale)
    log_w = (joint.log_prob(x[:, None, :]).sum(-1)
             + torch.distributions.Normal(0.0, model.latent_scale).log_prob(z)
             - torch.distributions.Normal(loc[:, None], scale[:, None]).log_prob(z))  # (N, nodes)
    pair = torch.logaddexp(log_w[:, :, None], log_w[:, None, :]) - math.log(2)
    return (pair * w[:, None] * w[None, :]).sum((-1, -2))


@pytest.mark.parametrize("name", ["iwae", "dreg"])
def test_importance_weighted_gradients_are_unbiased_against_quadrature(name):
    x = digits()[:3, :5]
    model = fitted_ppca(digits()[:300, :5], 1)
    guide = imperfect_guide(model, x, shift=0.8, widen=2.0)
    params = list(guide.parameters()) + list(model.parameters())
    exact = _grad(-_iwae2_by_quadrature(model, guide, x).sum(), params)
    loss = make_loss(name, num_particles=2)
    reps = 40  # each draw averages 40 independent K=2 estimates, as 40 copies of the data
    x_rep = x.repeat(reps, 1)
    pyro.set_rng_seed(0)
    mean, se, _ = _mean_and_se(
        lambda: _grad(loss.differentiable_loss(model.model, guide.guide, x_rep), params) / reps, 150)
    assert torch.all((mean - exact).abs() <= 4 * se + 1e-9), (mean - exact) / se


def _tiny_gmm():
    x = torch.tensor([[-1.0], [0.3], [2.0]], dtype=torch.float64)
    model = gmm.GMM(torch.tensor([0.4, 0.6], dtype=torch.float64),
                    torch.tensor([[-1.0], [1.5]], dtype=torch.float64),
                    torch.tensor([[[0.8]], [[1.2]]], dtype=torch.float64))
    guide = gmm.MeanFieldGuide(3, 2, init=torch.tensor([[0.3, 0.7], [0.5, 0.5], [0.8, 0.2]])).double()
    return x, model, guide


def _exact_iwae_by_enumeration(model, guide, x, k):
    """E over all 2^k particle configurations of log mean_k w, differentiable."""
    p = model.params  # detached; rebuild differentiably:
    from torch.distributions import constraints, transform_to

    tril = transform_to(constraints.lower_cholesky)(model.raw_scale)
    comp = torch.distributions.MultivariateNormal(model.means, scale_tril=tril)
    log_joint = comp.log_prob(x[:, None, :]) + torch.log_softmax(model.logits, 0)  # (N, 2)
    log_q = torch.log_softmax(guide.logits, -1)  # (N, 2)
    configs = torch.cartesian_prod(*[torch.arange(2)] * k)  # (2^k, k)
    log_w = (log_joint - log_q)[:, configs]  # (N, 2^k, k)
    log_prob_config = log_q[:, configs].sum(-1)  # (N, 2^k)
    bound = torch.logsumexp(log_w, -1) - math.log(k)
    del p
    return (log_prob_config.exp() * bound).sum(-1)


def test_vimco_is_unbiased_and_beats_the_plain_multi_sample_score_function():
    x, model, guide = _tiny_gmm()
    params = list(guide.parameters()) + list(model.parameters())
    exact = _grad(-_exact_iwae_by_enumeration(model, guide, x, 3).sum(), params)
    n_guide = guide.logits.numel()
    variances = {}
    for name in ("vimco", "iwae"):
        pyro.clear_param_store()  # the copies' guide below reuses one parameter name
        loss = make_loss(name, num_particles=3)
        reps = 20
        x_rep = x.repeat(reps, 1)
        rep_guide = gmm.MeanFieldGuide(3 * reps, 2).double()
        with torch.no_grad():
            rep_guide.logits.copy_(guide.logits.repeat(reps, 1))
        rep_params = list(rep_guide.parameters()) + list(model.parameters())

        def estimate():
            g = _grad(loss.differentiable_loss(model.model, rep_guide.guide, x_rep), rep_params)
            guide_part = g[: rep_guide.logits.numel()].reshape(reps, -1).sum(0)  # sum over copies
            return torch.cat([guide_part, g[rep_guide.logits.numel():]]) / reps

        pyro.set_rng_seed(0)
        mean, se, var = _mean_and_se(estimate, 300)
        assert torch.all((mean - exact).abs() <= 4 * se + 1e-9), (name, (mean - exact) / se)
        variances[name] = var[:n_guide].sum().item()
    assert variances["vimco"] < 0.5 * variances["iwae"], variances


def test_variance_ordering_score_function_reparameterised_and_baselines():
    x = digits()[:20, :8]
    model = fitted_ppca(digits()[:300, :8], 2)
    guide = imperfect_guide(model, x)
    sf_guide = score_function_guide(guide.guide)
    pyro.set_rng_seed(0)
    reparam = gradient_statistics(make_loss("elbo"), model.model, guide.guide, (x,), 100)
    plain = gradient_statistics(make_loss("tracegraph", baseline="none"), model.model, sf_guide, (x,), 100)
    averaged = make_loss("tracegraph", baseline="decaying_avg", baseline_beta=0.9)
    for _ in range(30):  # let the moving-average baseline settle at these parameters
        averaged.loss_and_grads(model.model, sf_guide, x)
    baseline = gradient_statistics(averaged, model.model, sf_guide, (x,), 100)
    v = {k: s["groups"]["guide"]["variance"] for k, s in
         (("reparam", reparam), ("plain", plain), ("baseline", baseline))}
    assert v["plain"] > 10 * v["reparam"], v
    assert v["baseline"] < 0.5 * v["plain"], v


def test_losses_step_without_trainable_parameters_and_without_sample_sites():
    """Pyro's own cases: no backward pass without parameters; TraceGraph's float 0.0."""
    def observed_only():
        pyro.sample("x", pyro.distributions.Normal(0.0, 1.0), obs=torch.tensor(0.5))

    def empty():
        pass

    for name in LOSSES:
        k = 2 if name == "vimco" else 1
        value = make_loss(name, num_particles=k).loss_and_grads(observed_only, empty)
        assert float(value) == pytest.approx(0.5 * math.log(2 * math.pi) + 0.125)
    assert float(make_loss("tracegraph").differentiable_loss(empty, empty)) == 0.0


def test_no_particle_dim_at_k1_and_iwae_k1_is_trace_elbo_for_the_same_draws():
    import pyro.distributions as dist

    shapes = []

    def model(x):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(2), 1.0).to_event(1))  # a global latent
        shapes.append(mu.shape)
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, 1.0).to_event(1), obs=x)

    def guide(x):
        pyro.sample("mu", dist.Normal(pyro.param("m", torch.zeros(2)), 0.5).to_event(1))

    x = torch.randn(5, 2)
    values = {}
    for name, loss in (("elbo", Trace_ELBO()), ("iwae", make_loss("iwae"))):
        pyro.set_rng_seed(3)
        value = loss.differentiable_loss(model, guide, x)
        values[name] = (value.item(), torch.autograd.grad(value, pyro.param("m").unconstrained())[0])
    assert shapes[-1] == (2,)  # the user's shapes at K = 1
    assert values["iwae"][0] == pytest.approx(values["elbo"][0], rel=1e-6)
    assert torch.allclose(values["iwae"][1], values["elbo"][1])
    weights = make_loss("iwae", num_particles=4).log_weights(model, guide, x)
    assert shapes[-1] == (4, 1, 2) and weights.log_w.shape == (4, 1)  # one weight per particle
