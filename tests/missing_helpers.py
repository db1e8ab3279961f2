"""A tiny missing-pixel joint whose every completion can be enumerated, and its exact
quantities (sums over completions, Gauss-Hermite quadrature over the 1-d latent), shared
by the tests of models.missing, models.pixel_guides and imputation."""

import math

import numpy as np
import torch

from pyro_lvm.models import VAE
from pyro_lvm.models.pixel_guides import ObservedGuide

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


def quadrature(nodes=120):
    e, w = np.polynomial.hermite_e.hermegauss(nodes)
    return torch.tensor(e), torch.tensor(w / math.sqrt(2 * math.pi))


def completions(x, mask):
    """Every completion of each image: (N, 2^h, 16)."""
    bits = torch.cartesian_prod(*[torch.tensor([0.0, 1.0], dtype=x.dtype)] * HIDDEN)  # (2^h, h)
    full = x[:, None, :].expand(-1, len(bits), -1).clone()
    full[:, :, :HIDDEN] = bits
    return full


def exact_log_marginal(vae, x, mask):
    """log p(x_obs) = log sum over completions of the integral over z, by enumeration and
    Gauss-Hermite quadrature."""
    e, w = quadrature()
    logits = vae.decoder(e[:, None])  # (J, 16)
    full = completions(x, mask)  # (N, C, 16)
    log_lik = torch.distributions.Bernoulli(logits=logits).log_prob(full[:, :, None, :]).sum(-1)  # (N, C, J)
    return torch.logsumexp(log_lik + w.log(), (-1, -2))


def exact_elbo(vae, guide, x, mask):
    """The ELBO of a mean-field pixel guide: sum over completions, quadrature over z."""
    e, w = quadrature(60)
    logits = guide.logits(x, mask)
    soft = torch.where(mask, torch.sigmoid(logits), x)
    loc, scale = vae.encode(soft)  # (N, 1)
    z = loc + scale * e  # (N, J)
    log_pz_minus_qz = (torch.distributions.Normal(0.0, 1.0).log_prob(z)
                       - torch.distributions.Normal(loc, scale).log_prob(z))  # (N, J)
    full = completions(x, mask)
    log_lik = torch.distributions.Bernoulli(logits=vae.decoder(z[..., None])[:, None]).log_prob(
        full[:, :, None, :]).sum(-1)  # (N, C, J)
    log_q = (torch.distributions.Bernoulli(logits=logits[:, None, :]).log_prob(full) * mask[:, None]).sum(-1)  # (N, C)
    inner = ((log_lik + log_pz_minus_qz[:, None]) * w).sum(-1) - log_q
    return (log_q.exp() * inner).sum(-1)


def exact_posterior_mean(vae, x, mask, nodes=120):
    """E[x_i | x_obs] = sum_j p(z_j | x_obs) sigmoid(f(z_j))_i by Gauss-Hermite quadrature
    (hidden pixels sum out: p(z | x_obs) ∝ p(z) prod_{observed} p(x_i | z))."""
    e, w = quadrature(nodes)
    logits = vae.decoder(e[:, None])  # (J, 16)
    log_obs = (torch.distributions.Bernoulli(logits=logits).log_prob(x[:, None]) * ~mask[:, None]).sum(-1)
    post = torch.softmax(log_obs + w.log(), -1)  # (N, J)
    return post @ torch.sigmoid(logits)


def observed_guide(vae):
    torch.manual_seed(5)
    return ObservedGuide(vae, hidden_dims=(8,)).double()
