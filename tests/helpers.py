"""Small real data sets and fitted shallow models shared by the tests."""

import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA

from pyro_lvm.models import ppca


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
