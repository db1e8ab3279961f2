import math

import pytest
import torch
from scipy.optimize import linear_sum_assignment

import pyro
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO

from pyro_lvm import evaluate
from pyro_lvm.models import MixtureVAE
from pyro_lvm.models.gmm import fit_em
from pyro_lvm.train import fit


def _tiny(seed=0):
    """A float64 MixtureVAE with a prior far from its start (weights, means, scales all differ)."""
    torch.manual_seed(seed)
    m = MixtureVAE(x_dim=5, z_dim=2, num_components=3, hidden_dims=(4,)).double()
    with torch.no_grad():
        m.prior.logits.copy_(torch.tensor([0.3, -0.5, 0.1]))
        m.prior.locs.copy_(torch.tensor([[-1.0, 0.5], [0.8, 0.2], [0.1, -1.2]]))
        m.prior.raw_scales.copy_(torch.tensor([[0.2, -0.4], [0.0, 0.5], [-0.3, 0.1]]))
    return m


def _log_normal(v, loc, scale):
    return -0.5 * ((v - loc) / scale) ** 2 - math.log(scale) - 0.5 * math.log(2 * math.pi)


def test_enumerated_elbo_equals_a_brute_force_sum_over_y():
    m = _tiny()
    x = torch.rand(6, 5, dtype=torch.float64).round()
    guide_trace = poutine.trace(m.guide).get_trace(x)
    guide = poutine.replay(m.guide, trace=guide_trace)  # the same z draw for every loss
    enum_loss = TraceEnum_ELBO(max_plate_nesting=1).loss(m.model, guide, x)
    marginal_loss = Trace_ELBO().loss(m.marginal_model, guide, x)
    # By hand: log p(x_n | z_n) + log sum_y pi_y prod_d N(z_nd | mu_yd, sigma_yd) - log q(z_n | x_n).
    z = guide_trace.nodes["z"]["value"]
    loc, scale = m.encode(x)
    pi, mu, sigma = m.prior.weights.tolist(), m.prior.locs.tolist(), m.prior.scales.tolist()
    probs = torch.sigmoid(m.decoder(z))
    elbo = 0.0
    for n in range(6):
        log_lik = sum(math.log(p if xi else 1 - p) for p, xi in zip(probs[n].tolist(), x[n].tolist()))
        log_prior = math.log(sum(pi[y] * math.exp(sum(_log_normal(z[n, d].item(), mu[y][d], sigma[y][d])
                                                      for d in range(2))) for y in range(3)))
        log_q = sum(_log_normal(z[n, d].item(), loc[n, d].item(), scale[n, d].item()) for d in range(2))
        elbo += log_lik + log_prior - log_q
    assert enum_loss == pytest.approx(-elbo, rel=1e-10)
    assert marginal_loss == pytest.approx(-elbo, rel=1e-10)


def test_cluster_is_the_argmax_of_p_y_given_the_posterior_mean():
    m = _tiny()
    x = torch.rand(40, 5, dtype=torch.float64).round()
    z = m.encode(x)[0]
    pi, mu, sigma = m.prior.weights.tolist(), m.prior.locs.tolist(), m.prior.scales.tolist()
    by_hand = torch.tensor([[math.log(pi[y]) + sum(_log_normal(z[n, d].item(), mu[y][d], sigma[y][d])
                                                   for d in range(2)) for y in range(3)]
                            for n in range(40)], dtype=torch.float64)
    resp = m.responsibilities(x)
    assert resp.shape == (40, 3)
    assert torch.allclose(resp, torch.softmax(by_hand, -1), atol=1e-12)
    assert torch.equal(m.cluster(x), by_hand.argmax(-1))
    assert len(set(m.cluster(x).tolist())) > 1  # the prior is not degenerate: the test can fail


def test_prior_parameters_are_constrained():
    m = _tiny()
    with torch.no_grad():
        m.prior.raw_scales.fill_(-50.0)
        m.prior.logits.copy_(torch.tensor([80.0, -80.0, 0.0]))
    assert (m.prior.scales > 0).all()
    assert m.prior.weights.sum().item() == pytest.approx(1.0) and (m.prior.weights >= 0).all()


def _known_mixture(n, generator):
    """Clusters in a 2-D latent space pushed through a fixed random decoder: (x, labels, truth)."""
    torch.manual_seed(1)
    truth = MixtureVAE(x_dim=40, z_dim=2, num_components=3, hidden_dims=(32,))
    with torch.no_grad():
        for p in truth.decoder.parameters():
            p.mul_(3.0)  # sharp pixels: each image pins its z down to about 0.2
        truth.prior.logits.copy_(torch.tensor([0.3, 0.3, 0.4]).log())
        truth.prior.locs.copy_(torch.tensor([[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0]]))
        truth.prior.raw_scales.fill_(math.log(0.4))
    labels = torch.multinomial(truth.prior.weights.detach(), n, replacement=True, generator=generator)
    with torch.no_grad():
        z = truth.prior.locs[labels] + truth.prior.scales[labels] * torch.randn(n, 2, generator=generator)
        x = torch.bernoulli(truth.decode(z), generator=generator)
    return x, labels, truth


def _distance_to_truth(m, truth) -> float:
    """Largest distance between matched component means (the order of components is arbitrary)."""
    cost = torch.cdist(m.prior.locs.detach(), truth.prior.locs.detach())
    rows, cols = linear_sum_assignment(cost.numpy())
    return cost[rows, cols].max().item(), rows, cols


def test_training_recovers_the_clusters_of_a_known_mixture():
    generator = torch.Generator().manual_seed(0)
    x, labels, truth = _known_mixture(1000, generator)
    x_test, labels_test, _ = _known_mixture(1000, generator)
    torch.manual_seed(0)
    m = MixtureVAE(x_dim=40, z_dim=2, num_components=3, hidden_dims=(32,))
    m.decoder.load_state_dict(truth.decoder.state_dict())
    m.decoder.requires_grad_(False)  # a fixed decoder: the latent space of the truth is identified
    fit(m.vae_model, m.guide, x, loss="elbo", lr=1e-2, num_epochs=5, batch_size=100, progress=False)
    m.init_prior(x, n_init=3)
    # Pre-trained under N(0, I), the encoder shrinks the clusters towards 0 (about 2 of 3-4 units).
    start, _, _ = _distance_to_truth(m, truth)
    before = evaluate.elbo(m.marginal_model, m.guide, x, num_particles=20).mean()
    fit(m.model, m.guide, x, loss="enum", lr=3e-2, num_epochs=15, batch_size=100, progress=False)
    after = evaluate.elbo(m.marginal_model, m.guide, x, num_particles=20).mean()
    # The mean ELBO of 1000 points with 20 particles each has a standard error below 0.05 nats.
    assert after > before + 0.2
    assert evaluate.cluster_accuracy(labels_test, m.cluster(x_test)) >= 0.95
    # Training moves the mixture to the truth's (0.5 is about two posterior scales of z).
    end, rows, cols = _distance_to_truth(m, truth)
    assert end < 0.5 and end < start / 2
    assert torch.allclose(m.prior.weights.detach()[rows], truth.prior.weights.detach()[cols], atol=0.05)


def test_init_prior_is_the_diagonal_em_fit_of_the_encoded_means():
    m = _tiny()
    x = torch.rand(300, 5, dtype=torch.float64).round()
    m.init_prior(x, n_init=2, seed=3)
    em = fit_em(m.encode(x)[0].detach(), 3, covariance_type="diag", n_init=2, seed=3, max_iter=300)
    assert torch.allclose(m.prior.weights, em.weights, atol=1e-10)
    assert torch.allclose(m.prior.locs, em.means, atol=1e-10)
    assert torch.allclose(m.prior.scales ** 2, em.covariances, rtol=1e-8)


def test_log_likelihood_of_the_marginal_model_is_above_its_elbo():
    m = _tiny()
    x = torch.rand(200, 5, dtype=torch.float64).round()
    elbo = evaluate.elbo(m.marginal_model, m.guide, x, num_particles=10)
    log_px = evaluate.log_likelihood(m.marginal_model, m.guide, x, num_samples=200)
    assert log_px.shape == elbo.shape == (200,) and torch.isfinite(log_px).all()
    gap = log_px - elbo  # the Jensen gap plus Monte Carlo noise: positive by many standard errors
    assert gap.mean() > 5 * gap.std() / 200**0.5
    # The enumerated model sums y out inside the importance weights: the same draws of z give
    # the same estimate as the marginal model, to rounding.
    pyro.set_rng_seed(1)
    marginal = evaluate.log_likelihood(m.marginal_model, m.guide, x, num_samples=20)
    pyro.set_rng_seed(1)
    enumerated = evaluate.log_likelihood(m.model, m.guide, x, num_samples=20)
    assert torch.allclose(enumerated, marginal, rtol=0, atol=1e-10)


def test_sample_draws_from_one_component_or_the_mixture(tmp_path):
    m = _tiny()
    images = m.sample(7, generator=torch.Generator().manual_seed(0), component=2)
    assert images.shape == (7, 5) and ((images >= 0) & (images <= 1)).all()
    again = m.sample(7, generator=torch.Generator().manual_seed(0), component=2)
    assert torch.equal(images, again)
    assert m.sample(4).shape == (4, 5)
    m.save(tmp_path / "m.pt")
    loaded = MixtureVAE.load(tmp_path / "m.pt")
    assert torch.equal(loaded.prior.locs, m.prior.locs) and loaded.num_components == 3


@pytest.mark.parametrize("call, match", [
    (lambda: MixtureVAE(num_components=0), "num_components"),
    (lambda: MixtureVAE(num_components=2.5), "num_components"),
    (lambda: _tiny().sample(3, component=3), "component"),
    (lambda: _tiny().sample(3, component=-1), "component"),
    (lambda: _tiny().cluster(torch.rand(4, 6, dtype=torch.float64)), "x must have shape"),
    (lambda: _tiny().cluster(torch.rand(4, 5)), "dtype"),
    (lambda: _tiny().cluster(torch.full((4, 5), 2.0, dtype=torch.float64)), r"\[0.0, 1.0\]"),
    (lambda: _tiny().init_prior(torch.rand(9, 5, dtype=torch.float64), n_init=0), "n_init"),
    (lambda: _tiny().init_prior(torch.rand(2, 5, dtype=torch.float64)), "num_components"),
])
def test_bad_input_refused_at_the_door(call, match):
    with pytest.raises(ValueError, match=match):
        call()
