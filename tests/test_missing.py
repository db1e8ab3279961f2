"""Missing-pixel MNIST, checked on a tiny joint where every completion can be enumerated."""

import math

import numpy as np
import pytest
import torch

import pyro
import pyro.optim

from pyro_lvm.infer import make_loss
from pyro_lvm.models import VAE
from pyro_lvm.models.missing import (AmortisedPixelGuide, MeanFieldPixelGuide, MissingPixelModel,
                                     check_mask, estimate_log_marginal, inpaint, top_half_mask)
from pyro_lvm.train import fit

HIDDEN = 10  # latent pixels of 16: 1024 completions per image


def tiny():
    """A 16-pixel Bernoulli VAE with a 1-d latent (so z integrates by quadrature) and
    three images with 10 hidden pixels each."""
    torch.manual_seed(3)
    vae = VAE(x_dim=16, z_dim=1, hidden_dims=(8,)).double()
    with torch.no_grad():
        for p in vae.decoder.parameters():
            p.mul_(3.0)  # a decoder whose pixels depend strongly on z
    x = torch.bernoulli(torch.full((3, 16), 0.5, dtype=torch.float64), generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(3, 16, dtype=torch.bool)
    mask[:, :HIDDEN] = True
    return vae, x, mask


def _quadrature(nodes=120):
    e, w = np.polynomial.hermite_e.hermegauss(nodes)
    return torch.tensor(e), torch.tensor(w / math.sqrt(2 * math.pi))


def _completions(x, mask):
    """Every completion of each image: (N, 2^h, 16)."""
    bits = torch.cartesian_prod(*[torch.tensor([0.0, 1.0], dtype=x.dtype)] * HIDDEN)  # (2^h, h)
    full = x[:, None, :].expand(-1, len(bits), -1).clone()
    full[:, :, :HIDDEN] = bits
    return full


def exact_log_marginal(vae, x, mask):
    """log p(x_obs) = log sum over completions of the integral over z, by enumeration and
    Gauss-Hermite quadrature."""
    e, w = _quadrature()
    logits = vae.decoder(e[:, None])  # (J, 16)
    full = _completions(x, mask)  # (N, C, 16)
    log_lik = torch.distributions.Bernoulli(logits=logits).log_prob(full[:, :, None, :]).sum(-1)  # (N, C, J)
    return torch.logsumexp(log_lik + w.log(), (-1, -2))


def exact_elbo(vae, guide, x, mask):
    """The ELBO of a mean-field pixel guide: sum over completions, quadrature over z."""
    e, w = _quadrature(60)
    logits = guide.logits(x, mask)
    soft = torch.where(mask, torch.sigmoid(logits), x)
    loc, scale = vae.encode(soft)  # (N, 1)
    z = loc + scale * e  # (N, J)
    log_pz_minus_qz = (torch.distributions.Normal(0.0, 1.0).log_prob(z)
                       - torch.distributions.Normal(loc, scale).log_prob(z))  # (N, J)
    full = _completions(x, mask)
    log_lik = torch.distributions.Bernoulli(logits=vae.decoder(z[..., None])[:, None]).log_prob(
        full[:, :, None, :]).sum(-1)  # (N, C, J)
    log_q = (torch.distributions.Bernoulli(logits=logits[:, None, :]).log_prob(full) * mask[:, None]).sum(-1)  # (N, C)
    inner = ((log_lik + log_pz_minus_qz[:, None]) * w).sum(-1) - log_q
    return (log_q.exp() * inner).sum(-1)


def test_shapes_finite_losses_and_learning_with_missing_data(mnist_train):
    x = torch.bernoulli(mnist_train[0][:64], generator=torch.Generator().manual_seed(0))
    mask = top_half_mask(64)
    mask[32:] = False  # half the images complete
    vae = VAE(z_dim=4, hidden_dims=(32,))
    model = MissingPixelModel(vae, learn=True)
    guide = AmortisedPixelGuide(vae, hidden_dims=(32,), learn_encoder=True)
    for name, k in (("tracegraph", 1), ("elbo", 1), ("iwae", 3), ("vimco", 3)):
        assert math.isfinite(make_loss(name, k).loss(model.model, guide.guide, x, mask))
    before = [p.detach().clone() for p in vae.decoder.parameters()]
    fit(model.model, guide.guide, (x, mask), loss="tracegraph", num_epochs=2, batch_size=32, progress=False)
    assert all(not torch.equal(a, b) for a, b in zip(before, vae.decoder.parameters()))
    assert guide.probs(x, mask).shape == (64, 784)


def test_amortised_phi_starts_at_its_init_for_every_image(mnist_train):
    x = torch.bernoulli(mnist_train[0][:8], generator=torch.Generator().manual_seed(0))
    mask = top_half_mask(8)
    means = mnist_train[0].mean(0)
    phi = AmortisedPixelGuide(VAE(z_dim=4, hidden_dims=(32,)), hidden_dims=(32,), init=means).probs(x, mask)
    expected = torch.where(mask, means.clamp(1e-3, 1 - 1e-3).expand_as(x), x)
    assert torch.allclose(phi, expected, atol=1e-6)


def test_estimates_of_log_p_observed_converge_to_the_enumerated_value():
    vae, x, mask = tiny()
    model = MissingPixelModel(vae)
    exact = exact_log_marginal(vae, x, mask).detach()
    # The sum over completions equals the integral of the observed pixels alone.
    e, w = _quadrature()
    observed_only = torch.distributions.Bernoulli(logits=vae.decoder(e[:, None])).log_prob(x[:, None]) * ~mask[:, None]
    assert torch.allclose(exact, torch.logsumexp(observed_only.sum(-1) + w.log(), -1), atol=1e-9)
    _, _, guide = inpaint(model, x, mask, "meanfield", steps=200, lr=0.1)
    for proposal in ("guide", "prior", "uniform"):
        pyro.set_rng_seed(0)
        runs = torch.stack([estimate_log_marginal(model, x, mask, proposal, guide=guide, num_samples=4000)
                            for _ in range(6)])
        se = runs.std(0) / math.sqrt(6)
        # Monte Carlo error (4 standard errors of 6 repeats) plus the O(1/K) bias of log-mean-exp.
        assert torch.all((runs.mean(0) - exact).abs() < 4 * se + 0.02), (proposal, runs.mean(0), exact)


def test_fitted_phi_beats_one_half_and_the_best_mean_field_elbo_stays_below_log_p():
    vae, x, mask = tiny()
    model = MissingPixelModel(vae)
    exact = exact_log_marginal(vae, x, mask).detach()
    half = MeanFieldPixelGuide(vae, 3).double()
    elbo_half = exact_elbo(vae, half, x, mask).detach()
    _, _, fitted = inpaint(model, x, mask, "meanfield", steps=300, lr=0.1)
    fitted.double()
    elbo_fitted = exact_elbo(vae, fitted, x, mask).detach()
    assert torch.all(elbo_fitted > elbo_half + 0.1), (elbo_fitted, elbo_half)
    best = MeanFieldPixelGuide(vae, 3).double()  # the optimal member, by L-BFGS on the exact ELBO
    optimizer = torch.optim.LBFGS(best.pixels.parameters(), max_iter=60, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = -exact_elbo(vae, best, x, mask).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    elbo_best = exact_elbo(vae, best, x, mask).detach()
    assert torch.all(elbo_best < exact - 1e-3), (elbo_best, exact)
    assert torch.all(elbo_best >= elbo_fitted - 1e-6)
    assert torch.all(elbo_fitted > elbo_best - 0.5)  # SVI with score-function gradients gets close


def test_score_function_gradient_wrt_phi_is_unbiased():
    vae, x, mask = tiny()
    model = MissingPixelModel(vae)
    init = torch.sigmoid(torch.randn(3, 16, generator=torch.Generator().manual_seed(2)))
    guide = MeanFieldPixelGuide(vae, 3, init=init).double()
    exact = torch.autograd.grad(-exact_elbo(vae, guide, x, mask).sum(), guide.pixels.logits)[0][mask]
    reps = 50  # copies of the data per draw, with phi repeated and gradients averaged back
    copies = MeanFieldPixelGuide(vae, 3 * reps).double()
    loss = make_loss("tracegraph", baseline="decaying_avg")
    draws = []
    pyro.set_rng_seed(0)
    for _ in range(200):
        with torch.no_grad():
            copies.pixels.logits.copy_(guide.pixels.logits.repeat(reps, 1))
        copies.pixels.logits.grad = None
        loss.loss_and_grads(model.model, copies.guide, x.repeat(reps, 1), mask.repeat(reps, 1))
        draws.append(copies.pixels.logits.grad.reshape(reps, 3, 16).mean(0)[mask])
    draws = torch.stack(draws)
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(len(draws))
    assert torch.all((mean - exact).abs() < 4 * se + 1e-6), ((mean - exact) / se).abs().max()


@pytest.mark.parametrize(
    "x, mask, words",
    [
        (torch.ones(2, 784), torch.ones(2, 784), "boolean"),
        (torch.ones(2, 784), torch.zeros(2, 783, dtype=torch.bool), "shape of x"),
        (torch.ones(2, 784), torch.ones(2, 784, dtype=torch.bool), "every pixel"),
        (torch.full((2, 784), 0.5), torch.zeros(2, 784, dtype=torch.bool), "binary"),
        (torch.full((2, 784), float("nan")), torch.zeros(2, 784, dtype=torch.bool), "NaN"),
    ],
)
def test_bad_input_is_rejected(x, mask, words):
    with pytest.raises(ValueError, match=words):
        check_mask(x, mask, 784)
    vae = VAE(z_dim=2, hidden_dims=(8,))
    with pytest.raises(ValueError, match=words):
        estimate_log_marginal(MissingPixelModel(vae), x, mask, "uniform", num_samples=2)
