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
