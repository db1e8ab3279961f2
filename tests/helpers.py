"""Small real data sets, fitted shallow models and small user pairs shared by the tests."""

import math

import pyro
import pytest
import pyro.distributions as dist
import torch
from pyro import poutine
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA

from pyro_lvm.data import binarize
from pyro_lvm.models import VAE, ppca
from pyro_lvm.train import fit


def digits(dtype=torch.float64):
    """scikit-learn's bundled 8x8 digits: (1797, 64) grey levels 0..16."""
    return torch.tensor(load_digits().data, dtype=dtype)


def digits_pca(n_components, n=None, dtype=torch.float64):
    x = load_digits().data[:n]
    return torch.tensor(PCA(n_components, random_state=0).fit_transform(x), dtype=dtype)


def fitted_ppca(x, latent_dim):
    """A float64 PPCA module at the closed-form maximum-likelihood parameters."""
    fit = ppca.fit_closed_form(x, latent_dim)
    return ppca.PPCA(x.shape[1], latent_dim, W=fit.W, mean=fit.mean, noise_scale=fit.noise_scale).double()


def closed_form_elbo(model, q, x):
    """Exact ELBO per point of a PPCA ``model`` under a Gaussian ``q`` (batch (N,), event (q,)),
    differentiable in both; ``E_q`` of the Gaussian log-densities in closed form plus H[q]."""
    W, mean, sigma2, nu2 = model.W, model.mean, model.noise_scale**2, model.latent_scale**2
    m = q.mean
    S = q.covariance_matrix if hasattr(q, "covariance_matrix") else torch.diag_embed(q.variance)
    S = S.expand(m.shape[0], *S.shape[-2:])
    d, k = W.shape
    resid = x - m @ W.T - mean
    trace_wsw = torch.einsum("ij,njk,ik->n", W, S, W)
    log_lik = -0.5 * d * torch.log(2 * torch.pi * sigma2) - (resid.pow(2).sum(-1) + trace_wsw) / (2 * sigma2)
    log_prior = -0.5 * k * torch.log(2 * torch.pi * torch.as_tensor(nu2, dtype=x.dtype)) - (
        m.pow(2).sum(-1) + torch.diagonal(S, dim1=-2, dim2=-1).sum(-1)) / (2 * nu2)
    return log_lik + log_prior + q.entropy()


def imperfect_guide(model, x, shift=0.4, widen=1.5):
    """A diagonal linear-Gaussian guide near, but not at, the exact posterior of ``model``."""
    from pyro_lvm.models.ppca import AmortisedLinearGuide

    exact = ppca.exact_posterior_guide(model)
    guide = AmortisedLinearGuide(model.x_dim, model.latent_dim, "diagonal").double()
    _, cov = model.posterior(x[:1])
    with torch.no_grad():
        guide.linear.weight.copy_(exact.linear.weight)
        guide.linear.bias.copy_(exact.linear.bias + shift)
        guide.raw_scale.copy_(torch.log(torch.expm1(widen * cov.diagonal().sqrt())))
    return guide


# M2 (Kingma et al. 2014) in one dimension: p(y) = 1/2 on {0, 1}, x | y ~ N(2y - 1, 1); the
# label is observed on the labelled rows (obs_mask) and latent on the others.
M2_DATA = (torch.tensor([-1.0, 2.0, 1.5, -0.5, 1.0, -2.0, 0.0, 3.0]),
           torch.tensor([0, 1, 1, 0, 1, 0, 0, 1]),
           torch.tensor([True, True, False, False, True, False, True, False]))


def m2_model(x, labels, labelled, num_data=None):
    with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))):
        y = pyro.sample("y", dist.Categorical(torch.tensor([0.5, 0.5])), obs=labels,
                        obs_mask=labelled)
        pyro.sample("x", dist.Normal(2.0 * y - 1.0, 1.0), obs=x)


def m2_guide(x, labels, labelled, num_data=None, mask=None):
    """q(y_n | x_n) = Bernoulli(sigmoid(a x_n)) on the unlabelled rows; ``mask``: the rows
    it is scored on instead (to get it wrong)."""
    a = pyro.param("a", torch.tensor(1.0))
    probs = torch.stack([torch.sigmoid(-a * x), torch.sigmoid(a * x)], -1)
    with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))), \
            poutine.mask(mask=~labelled if mask is None else mask):
        pyro.sample("y_unobserved", dist.Categorical(probs))


def m2_log_likelihood(x, labels, labelled):
    """Exact ``log p(x_n, y_n)`` on labelled rows, ``log sum_y p(x_n, y)`` on the others, (N,)."""
    joint = torch.stack([dist.Normal(-1.0, 1.0).log_prob(x), dist.Normal(1.0, 1.0).log_prob(x)],
                        -1) - math.log(2.0)
    return torch.where(labelled, joint.gather(-1, labels[:, None])[:, 0], joint.logsumexp(-1))


def assert_refused(call, words):
    """``call()`` raises a ValueError whose message matches ``words``, with Pyro's validation
    off: the library's door checks must not depend on Pyro's switch."""
    with pyro.validation_enabled(False):
        with pytest.raises(ValueError, match=words):
            call()


def small_vae(hidden=16, name=None, seed=0):
    """A VAE of z 4 and one hidden layer, seeded: quick to train on MNIST-shaped rows."""
    torch.manual_seed(seed)
    return VAE(z_dim=4, hidden_dims=(hidden,), name=name)


def grey_images(n=64, seed=1):
    """``(n, 784)`` uniform grey levels, seeded."""
    return torch.rand(n, 784, generator=torch.Generator().manual_seed(seed))


def fit_briefly(vae, x, **kwargs):
    """``fit`` one epoch of batches of 32 (dynamic binarization, no progress bar)."""
    kwargs = {"num_epochs": 1, "batch_size": 32, "lr": 1e-2, "transform": binarize, "progress": False,
              **kwargs}
    return fit(vae.model, vae.guide, x, **kwargs)
