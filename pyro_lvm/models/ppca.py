"""Probabilistic PCA: exact marginal likelihood, closed-form ML, exact posterior, Pyro pairs.

Generative model (Tipping & Bishop 1999, eqs. 2-6)::

    z_n ~ N(0, nu^2 I_q),        x_n | z_n ~ N(W z_n + mu, sigma^2 I_D)

so ``x_n ~ N(mu, nu^2 W W^T + sigma^2 I)`` and ``p(z_n | x_n)`` is Gaussian with
covariance ``(I / nu^2 + W^T W / sigma^2)^{-1}`` shared by all points.  The model
is linear-Gaussian, so log-likelihoods, posteriors and the ELBO gap
``log p(x) - ELBO = KL(q || p(z | x))`` are all known in closed form.

Guides (all sites in the data plate):

* ``PPCA.exact_guide``: the exact posterior at the model's current parameters;
* :class:`AmortisedLinearGuide` ``q(z | x) = N(A x + b, Sigma_q)``, full or
  diagonal ``Sigma_q``; with a full covariance the family holds the exact
  posterior, and :func:`exact_posterior_guide` sets a copy there with its own
  parameters (for tests of guide gradients);
* :class:`MeanFieldGuide`: per-point ``N(m_n, diag s_n^2)`` (local parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import LowRankMultivariateNormal, MultivariateNormal, kl_divergence
from torch.distributions import constraints, transform_to

import pyro
import pyro.distributions as dist

from ..checks import check_data, check_size, check_values
from ..params import register, unique_name
from .common import check_local_rows, data_plate
from .saving import Saveable

__all__ = [
    "PPCA", "PPCAFit", "AmortisedLinearGuide", "MeanFieldGuide", "exact_posterior_guide",
    "fit_closed_form", "fit_gradient", "kl_to_posterior", "marginal_log_likelihood", "posterior",
]


def _check_latent_dim(x, latent_dim):
    check_data(x, "x", min_rows=2)
    if not 1 <= check_size("latent_dim", latent_dim) < x.shape[1]:
        raise ValueError(f"latent_dim must be between 1 and D-1={x.shape[1] - 1}, got {latent_dim}")


def _as_tensor(value, like):
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def _check_params(x, W, mean, noise_scale, latent_scale):
    """The door of the closed forms: data and parameters of agreeing shapes and dtype,
    scales positive; returns ``(sigma, nu)`` as tensors of the data's dtype."""
    check_data(W, "W")
    check_data(x, "x", dtype=W.dtype)
    if W.shape[0] != x.shape[1]:
        raise ValueError(f"W must be (D, q) with D={x.shape[1]} (the columns of x), got "
                         f"{tuple(W.shape)}")
    check_data(mean, "mean", ndim=1, size=x.shape[1], dtype=x.dtype)
    sigma, nu = _as_tensor(noise_scale, x), _as_tensor(latent_scale, x)
    if sigma.numel() != 1 or nu.numel() != 1 or not bool((sigma > 0) & (nu > 0)) \
            or not bool(torch.isfinite(sigma) & torch.isfinite(nu)):
        raise ValueError(f"noise_scale and latent_scale must be positive finite scalars, got "
                         f"{noise_scale}, {latent_scale}")
    return sigma.reshape(()), nu.reshape(())


def marginal_log_likelihood(x, W, mean, noise_scale, latent_scale=1.0) -> torch.Tensor:
    """Exact ``log N(x_n | mu, nu^2 W W^T + sigma^2 I)``, nats per point, ``(N,)``.

    O(N D q) through ``torch.distributions.LowRankMultivariateNormal`` (Woodbury
    identity and matrix determinant lemma), never a dense D x D inverse.

    :param x: ``(N, D)``.  :param W: ``(D, q)``.  :param mean: ``(D,)``.
    :param noise_scale: sigma > 0.  :param latent_scale: nu > 0.
    :raises ValueError: bad shapes or dtypes, NaN/inf, or scales not positive.
    """
    sigma, nu = _check_params(x, W, mean, noise_scale, latent_scale)
    cov_diag = (sigma**2).expand(x.shape[1])
    return LowRankMultivariateNormal(mean, nu * W, cov_diag).log_prob(x)


def posterior(x, W, mean, noise_scale, latent_scale=1.0):
    """The exact ``p(z_n | x_n)`` (Tipping & Bishop 1999, eq. 7 with prior scale nu).

    :returns: ``(loc (N, q), cov (q, q))``: ``cov = (I/nu^2 + W^T W/sigma^2)^{-1}``,
        ``loc_n = cov W^T (x_n - mu) / sigma^2``.
    :raises ValueError: as :func:`marginal_log_likelihood`.
    """
    sigma, nu = _check_params(x, W, mean, noise_scale, latent_scale)
    sigma2, nu2 = sigma**2, nu**2
    q = W.shape[1]
    precision = torch.eye(q, dtype=x.dtype, device=x.device) / nu2 + W.T @ W / sigma2
    cov = torch.cholesky_inverse(torch.linalg.cholesky(precision))
    return (x - mean) @ W @ cov / sigma2, cov


@dataclass
class PPCAFit:
    """Maximum-likelihood PPCA parameters.

    :ivar W: ``(D, q)``.  :ivar mean: ``(D,)``.  :ivar noise_scale: sigma (0-dim tensor).
    :ivar log_likelihood: mean exact ``log p(x_n)`` at these parameters, nats per point.
    """

    W: torch.Tensor
    mean: torch.Tensor
    noise_scale: torch.Tensor
    log_likelihood: float


def fit_closed_form(x, latent_dim: int) -> PPCAFit:
    """The maximum-likelihood solution (Tipping & Bishop 1999, eqs. 7-8), nu = 1.

    With the sample covariance ``S`` (divisor N) having eigenvalues
    ``l_1 >= ... >= l_D`` and eigenvectors ``U``: ``mu`` = the sample mean,
    ``sigma^2 = mean(l_{q+1..D})`` and ``W = U_q (L_q - sigma^2 I)^{1/2}`` (R = I).

    :param x: ``(N, D)``; the result keeps its dtype and device.
    :param int latent_dim: q, between 1 and D - 1.
    :raises ValueError: bad data, q out of range, or data of rank <= q (sigma^2 = 0).
    """
    _check_latent_dim(x, latent_dim)
    mean = x.mean(0)
    centred = x - mean
    eigvals, eigvecs = torch.linalg.eigh(centred.T @ centred / x.shape[0])
    eigvals, eigvecs = eigvals.flip(0).clamp(min=0), eigvecs.flip(1)
    sigma2 = eigvals[latent_dim:].mean()
    # Eigenvalues of a rank-q covariance are zero only up to rounding, |err| ~ l_1 D eps
    # (the rule of numpy.linalg.matrix_rank), so the threshold scales with the largest one.
    if not sigma2 > eigvals[0] * max(x.shape) * torch.finfo(x.dtype).eps:
        raise ValueError(f"the data have rank <= latent_dim={latent_dim} (up to rounding: "
                         f"sigma^2 = {sigma2.item():.3g} of largest eigenvalue "
                         f"{eigvals[0].item():.3g}); sigma^2 would be 0")
    W = eigvecs[:, :latent_dim] * (eigvals[:latent_dim] - sigma2).clamp(min=0).sqrt()
    sigma = sigma2.sqrt()
    return PPCAFit(W, mean, sigma, marginal_log_likelihood(x, W, mean, sigma).mean().item())


def fit_gradient(x, latent_dim: int, max_iter: int = 200, seed: int = 0) -> PPCAFit:
    """Maximum likelihood by gradient-based optimisation of the exact marginal likelihood.

    Minimises ``-mean_n log N(x_n | mu, W W^T + sigma^2 I)`` over ``W``, ``mu`` and
    ``log sigma`` from a random start with L-BFGS (strong-Wolfe line search), the
    quasi-Newton form of gradient descent; the closed form is not used.

    :param int max_iter: L-BFGS iterations.  :param int seed: seeds the random start.
    :raises ValueError: as :func:`fit_closed_form`.
    """
    _check_latent_dim(x, latent_dim)
    generator = torch.Generator().manual_seed(seed)
    scale = x.std()
    W = (torch.randn(x.shape[1], latent_dim, generator=generator, dtype=x.dtype) * scale * 0.1)
    W = W.to(x.device).requires_grad_()
    mean = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device, requires_grad=True)
    log_sigma = torch.log(scale).detach().clone().requires_grad_()
    optim = torch.optim.LBFGS([W, mean, log_sigma], max_iter=max_iter, line_search_fn="strong_wolfe",
                              tolerance_grad=1e-10, tolerance_change=1e-14, history_size=20)

    def closure():
        optim.zero_grad()
        loss = -marginal_log_likelihood(x, W, mean, log_sigma.exp()).mean()
        loss.backward()
        return loss

    optim.step(closure)
    W, mean, sigma = W.detach(), mean.detach(), log_sigma.detach().exp()
    return PPCAFit(W, mean, sigma, marginal_log_likelihood(x, W, mean, sigma).mean().item())


class PPCA(Saveable):
    """PPCA as a Pyro model with ``W``, ``mu`` and ``log sigma`` as module parameters.

    :param int x_dim: D.  :param int latent_dim: q.  :param float latent_scale: nu (fixed).
    :param W, mean, noise_scale: initial values (default: small random ``W``,
        zero mean, sigma = 1).
    """

    def __init__(self, x_dim: int, latent_dim: int, latent_scale: float = 1.0, W=None, mean=None,
                 noise_scale=1.0, name: str | None = None):
        super().__init__()
        x_dim, latent_dim = check_size("x_dim", x_dim), check_size("latent_dim", latent_dim)
        if not 1 <= latent_dim < x_dim:
            raise ValueError(f"latent_dim must be between 1 and x_dim-1, got {latent_dim}")
        self.x_dim, self.latent_dim, self.latent_scale, self.name = x_dim, latent_dim, latent_scale, \
            unique_name("ppca", name)
        # contiguous: Pyro's param store keeps contiguous copies and would swap the module's tensors
        self.W = nn.Parameter(torch.randn(x_dim, latent_dim) * 0.1 if W is None else W.contiguous().clone())
        self.mean = nn.Parameter(torch.zeros(x_dim) if mean is None else mean.contiguous().clone())
        self.log_noise_scale = nn.Parameter(torch.as_tensor(noise_scale, dtype=self.W.dtype).log().clone())

    @property
    def noise_scale(self) -> torch.Tensor:
        return self.log_noise_scale.exp()

    def model(self, x, num_data=None):
        check_data(x, "x", size=self.x_dim, dtype=self.W.dtype, values=check_values())
        register(self.name, self)
        prior = dist.Normal(x.new_zeros(self.latent_dim), self.latent_scale).to_event(1)
        with data_plate(x, num_data):
            z = pyro.sample("z", prior)
            pyro.sample("x", dist.Normal(z @ self.W.T + self.mean, self.noise_scale).to_event(1), obs=x)

    def exact_guide(self, x, num_data=None):
        """Guide sampling the exact posterior at the current parameters, held fixed
        (as EM's E-step): with it, the ELBO equals ``log p(x)`` and its model
        gradient is the gradient of the exact log-likelihood (Fisher's identity)."""
        loc, cov = self.posterior(x)
        with data_plate(x, num_data):
            pyro.sample("z", dist.MultivariateNormal(loc, covariance_matrix=cov))

    def marginal_log_likelihood(self, x) -> torch.Tensor:
        """Exact ``log p(x_n)`` at the current parameters, ``(N,)``."""
        return marginal_log_likelihood(x, self.W, self.mean, self.noise_scale, self.latent_scale)

    def posterior(self, x):
        """Exact ``p(z | x)`` at the current parameters: ``(loc (N, q), cov (q, q))``."""
        with torch.no_grad():
            return posterior(x, self.W, self.mean, self.noise_scale, self.latent_scale)


class AmortisedLinearGuide(Saveable):
    """``q(z_n | x_n) = N(A x_n + b, Sigma_q)``: a linear-Gaussian encoder.

    :param str covariance: ``"full"`` (``Sigma_q = L L^T``, the exact posterior's
        family) or ``"diagonal"`` (mean-field over latent dimensions).
    """

    def __init__(self, x_dim: int, latent_dim: int, covariance: str = "full",
                 name: str | None = None):
        super().__init__()
        if covariance not in ("full", "diagonal"):
            raise ValueError(f"covariance must be 'full' or 'diagonal', got {covariance!r}")
        self.covariance, self.name = covariance, unique_name("ppca_amortised", name)
        self.linear = nn.Linear(x_dim, latent_dim)
        nn.init.zeros_(self.linear.weight)
        shape = (latent_dim, latent_dim) if covariance == "full" else (latent_dim,)
        self.raw_scale = nn.Parameter(torch.zeros(shape))

    def distribution(self, x) -> dist.Distribution:
        """``q(z | x)`` with batch shape ``(N,)`` and event shape ``(q,)``."""
        loc = self.linear(x)
        if self.covariance == "full":
            return dist.MultivariateNormal(loc, scale_tril=transform_to(constraints.lower_cholesky)(self.raw_scale))
        return dist.Normal(loc, F.softplus(self.raw_scale)).to_event(1)

    def encode(self, x):
        """Posterior means and standard deviations of q(z | x), ``(N, q)`` each."""
        q = self.distribution(x)
        return q.mean, q.stddev

    def guide(self, x, num_data=None):
        check_data(x, "x", size=self.linear.in_features, dtype=self.linear.weight.dtype,
                   values=check_values())
        register(self.name, self)
        q = self.distribution(x)
        with data_plate(x, num_data):
            pyro.sample("z", q)


def exact_posterior_guide(ppca: PPCA) -> AmortisedLinearGuide:
    """An :class:`AmortisedLinearGuide` (full covariance, its own parameters) set to
    the exact posterior of ``ppca``: ``A = cov W^T / sigma^2``, ``b = -A mu``, ``L = chol(cov)``."""
    guide = AmortisedLinearGuide(ppca.x_dim, ppca.latent_dim, "full", name=unique_name("ppca_exact"))
    W, mean = ppca.W.detach(), ppca.mean.detach()
    _, cov = posterior(mean[None], W, mean, ppca.noise_scale.detach(), ppca.latent_scale)
    A = cov @ W.T / ppca.noise_scale.detach() ** 2
    with torch.no_grad():
        guide.to(W.dtype).to(W.device)
        guide.linear.weight.copy_(A)
        guide.linear.bias.copy_(-A @ mean)
        guide.raw_scale.copy_(transform_to(constraints.lower_cholesky).inv(torch.linalg.cholesky(cov)))
    return guide


class MeanFieldGuide(Saveable):
    """Local ``q(z_n) = N(m_n, diag s_n^2)``, free parameters per data point.

    The guide must see the full data set at every step (``batch_size >= N``).
    """

    def __init__(self, num_data: int, latent_dim: int, name: str | None = None):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(num_data, latent_dim))
        self.raw_scale = nn.Parameter(torch.zeros(num_data, latent_dim))
        self.name = unique_name("ppca_meanfield", name)
        self.num_local_rows = num_data  # local parameters: fit refuses DDP (Context.check_split)

    def distribution(self, x=None) -> dist.Distribution:
        return dist.Normal(self.loc, F.softplus(self.raw_scale)).to_event(1)

    def guide(self, x, num_data=None):
        check_local_rows(x, self.loc.shape[0], "mean-field")
        register(self.name, self)
        with data_plate(x, num_data):
            pyro.sample("z", self.distribution())


def kl_to_posterior(q: torch.distributions.Distribution, x, ppca: PPCA) -> torch.Tensor:
    """The exact ELBO gap ``KL(q(z | x_n) || p(z | x_n)) = log p(x_n) - ELBO_n``, nats, ``(N,)``.

    :param q: a Gaussian with batch shape ``(N,)`` and event shape ``(q,)``
        (``guide.distribution(x)``).
    """
    loc, cov = ppca.posterior(x)
    if not isinstance(q, torch.distributions.MultivariateNormal):  # diagonal: Independent(Normal)
        q = MultivariateNormal(q.mean, scale_tril=torch.diag_embed(q.stddev))
    return kl_divergence(q, MultivariateNormal(loc, covariance_matrix=cov))
