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

import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import LowRankMultivariateNormal, MultivariateNormal, kl_divergence
from torch.distributions import constraints, transform_to

import pyro
import pyro.distributions as dist

from ..checks import check_choice, check_data, check_positive, check_size, check_values
from ..params import register, unique_name
from .common import check_local_rows, data_plate, overflow_error
from .saving import Saveable

__all__ = [
    "PPCA", "PPCAFit", "AmortisedLinearGuide", "MeanFieldGuide", "exact_posterior_guide",
    "fit_closed_form", "fit_gradient", "kl_to_posterior", "log_likelihood", "posterior",
]


def _spectrum(x, latent_dim):
    """The door of the maximum-likelihood fits: ``(mean (D,), eigenvalues (D,) descending,
    eigenvectors (D, D))`` of the sample covariance of ``x`` (divisor N).

    :raises ValueError: bad data or ``latent_dim``; a covariance that overflows the dtype;
        data that are constant or of rank <= ``latent_dim``, for which the maximum-likelihood
        noise variance (the mean of the D - q smallest eigenvalues) is 0 and ``log p(x)``
        unbounded.
    """
    check_data(x, "x", min_rows=2)
    if not 1 <= check_size("latent_dim", latent_dim) < x.shape[1]:
        raise ValueError(f"latent_dim must be between 1 and D-1={x.shape[1] - 1}, got {latent_dim}")
    mean = x.mean(0)
    centred = x - mean
    cov = centred.T @ centred / x.shape[0]
    if not bool(torch.isfinite(cov).all()):
        raise overflow_error(x, "the sample covariance of x")
    eigvals, eigvecs = torch.linalg.eigh(cov)
    eigvals, eigvecs = eigvals.flip(0).clamp(min=0), eigvecs.flip(1)
    # Eigenvalues of a rank-r covariance are zero only up to rounding, |err| ~ l_1 D eps
    # (the rule of numpy.linalg.matrix_rank), so the threshold scales with the largest one.
    rank = (eigvals > eigvals[0] * max(x.shape) * torch.finfo(x.dtype).eps).sum().item()
    if rank <= latent_dim:
        what = ("x is constant (no column varies: rank 0)" if rank == 0 else
                f"x has rank <= latent_dim={latent_dim} (its values vary in only {rank} "
                "direction(s), up to rounding)")
        raise ValueError(f"{what}, so PPCA's maximum-likelihood noise variance sigma^2 would be 0 "
                         "and log p(x) unbounded" + (f"; use latent_dim < {rank}" if rank > 1 else ""))
    return mean, eigvals, eigvecs


def _scale(name, value, like):
    """A positive finite scalar (number or one-element tensor, kept differentiable) as a 0-dim
    tensor of ``like``'s dtype and device."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, torch.Tensor)) \
            or isinstance(value, torch.Tensor) and value.numel() != 1:
        raise ValueError(f"{name} must be a positive finite scalar, got {value!r}")
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device).reshape(())
    if not bool(torch.isfinite(value) & (value > 0)):
        raise ValueError(f"{name} must be a positive finite scalar, got {value.item()!r}")
    return value


def _check_params(x, W, mean, noise_scale, latent_scale):
    """The door of the closed forms: data and parameters of agreeing shapes and dtype,
    scales positive; returns ``(sigma, nu)`` as 0-dim tensors of the data's dtype."""
    check_data(W, "W")
    check_data(x, "x", dtype=W.dtype)
    if W.shape[0] != x.shape[1]:
        raise ValueError(f"W must be (D, q) with D={x.shape[1]} (the columns of x), got "
                         f"{tuple(W.shape)}")
    check_data(mean, "mean", ndim=1, size=x.shape[1], dtype=x.dtype)
    return _scale("noise_scale", noise_scale, x), _scale("latent_scale", latent_scale, x)


def _log_likelihood(x, W, mean, sigma, nu):
    cov_diag = (sigma**2).expand(x.shape[1])
    return LowRankMultivariateNormal(mean, nu * W, cov_diag).log_prob(x)


def log_likelihood(x, W, mean, noise_scale, latent_scale=1.0) -> torch.Tensor:
    """Exact ``log N(x_n | mu, nu^2 W W^T + sigma^2 I)``, nats per point, ``(N,)``.

    O(N D q) through ``torch.distributions.LowRankMultivariateNormal`` (Woodbury
    identity and matrix determinant lemma), never a dense D x D inverse.

    :param x: ``(N, D)``.  :param W: ``(D, q)``.  :param mean: ``(D,)``.
    :param noise_scale: sigma > 0.  :param latent_scale: nu > 0.
    :raises ValueError: bad shapes or dtypes, NaN/inf, or scales not positive.
    """
    return _log_likelihood(x, W, mean, *_check_params(x, W, mean, noise_scale, latent_scale))


def _posterior(x, W, mean, sigma, nu):
    precision = torch.eye(W.shape[1], dtype=x.dtype, device=x.device) / nu**2 + W.T @ W / sigma**2
    cov = torch.cholesky_inverse(torch.linalg.cholesky(precision))
    return (x - mean) @ W @ cov / sigma**2, cov


def posterior(x, W, mean, noise_scale, latent_scale=1.0):
    """The exact ``p(z_n | x_n)`` (Tipping & Bishop 1999, eq. 7 with prior scale nu).

    :returns: ``(loc (N, q), cov (q, q))``: ``cov = (I/nu^2 + W^T W/sigma^2)^{-1}``,
        ``loc_n = cov W^T (x_n - mu) / sigma^2``.
    :raises ValueError: as :func:`log_likelihood`.
    """
    return _posterior(x, W, mean, *_check_params(x, W, mean, noise_scale, latent_scale))


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
    :raises ValueError: bad data, q out of range, constant data or data of rank <= q
        (sigma^2 = 0: the message says which), or a covariance that overflows the dtype.
    """
    mean, eigvals, eigvecs = _spectrum(x, latent_dim)
    sigma2 = eigvals[latent_dim:].mean()
    W = eigvecs[:, :latent_dim] * (eigvals[:latent_dim] - sigma2).clamp(min=0).sqrt()
    sigma = sigma2.sqrt()
    return PPCAFit(W, mean, sigma, _log_likelihood(x, W, mean, sigma, 1.0).mean().item())


def fit_gradient(x, latent_dim: int, max_iter: int = 200, seed: int = 0) -> PPCAFit:
    """Maximum likelihood by gradient-based optimisation of the exact marginal likelihood.

    Minimises ``-mean_n log N(x_n | mu, W W^T + sigma^2 I)`` over ``W``, ``mu`` and
    ``log sigma`` from a random start with L-BFGS (strong-Wolfe line search), the
    quasi-Newton form of gradient descent; the closed form is not used.

    :param int max_iter: L-BFGS iterations.
    :param int seed: seeds the random start, >= 0.
    :raises ValueError: as :func:`fit_closed_form` (whose checks, the rank of the data
        included, it shares), or a count that is not a positive integer.
    """
    _spectrum(x, latent_dim)  # refuses data whose likelihood has no maximum
    max_iter = check_size("max_iter", max_iter)
    generator = torch.Generator().manual_seed(check_size("seed", seed, 0))
    scale = x.std()
    W = (torch.randn(x.shape[1], latent_dim, generator=generator, dtype=x.dtype) * scale * 0.1)
    W = W.to(x.device).requires_grad_()
    mean = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device, requires_grad=True)
    log_sigma = torch.log(scale).detach().clone().requires_grad_()
    optim = torch.optim.LBFGS([W, mean, log_sigma], max_iter=max_iter, line_search_fn="strong_wolfe",
                              tolerance_grad=1e-10, tolerance_change=1e-14, history_size=20)

    def closure():
        optim.zero_grad()
        loss = -_log_likelihood(x, W, mean, log_sigma.exp(), 1.0).mean()
        loss.backward()
        return loss

    optim.step(closure)
    W, mean, sigma = W.detach(), mean.detach(), log_sigma.detach().exp()
    return PPCAFit(W, mean, sigma, _log_likelihood(x, W, mean, sigma, 1.0).mean().item())


class PPCA(Saveable):
    """PPCA as a Pyro model with ``W``, ``mu`` and ``log sigma`` as module parameters.

    :param int x_dim: D.
    :param int latent_dim: q, between 1 and D - 1.
    :param float latent_scale: nu > 0 (fixed).
    :param W, mean, noise_scale: initial values: ``W`` a tensor ``(D, q)``, ``mean`` a
        tensor ``(D,)`` of the same dtype, ``noise_scale`` sigma > 0 (default: small random
        ``W``, zero mean, sigma = 1; the defaults take the dtype of a given ``W`` or ``mean``).
    :param str name: prefix of the parameter names in Pyro's param store.
    :raises ValueError: a size that is not a positive integer or q out of range, initial
        values of another shape or dtype, NaN/inf, scales not positive and finite, a bad name.
    """

    def __init__(self, x_dim: int, latent_dim: int, latent_scale: float = 1.0, W=None, mean=None,
                 noise_scale=1.0, name: str | None = None):
        super().__init__()
        x_dim, latent_dim = check_size("x_dim", x_dim), check_size("latent_dim", latent_dim)
        if not 1 <= latent_dim < x_dim:
            raise ValueError(f"latent_dim must be between 1 and x_dim-1={x_dim - 1}, got {latent_dim}")
        self.latent_scale = check_positive("latent_scale", latent_scale)
        noise_scale = check_positive("noise_scale", noise_scale)
        if W is not None:
            check_data(W, "W")
            if W.shape != (x_dim, latent_dim):
                raise ValueError(f"W must have shape (x_dim, latent_dim) = ({x_dim}, {latent_dim}), "
                                 f"got {tuple(W.shape)}")
        if mean is not None:
            check_data(mean, "mean", ndim=1, size=x_dim, dtype=None if W is None else W.dtype)
        dtype = next((t.dtype for t in (W, mean) if t is not None), torch.get_default_dtype())
        self.x_dim, self.latent_dim, self.name = x_dim, latent_dim, unique_name("ppca", name)
        # contiguous: Pyro's param store keeps contiguous copies and would swap the module's tensors
        self.W = nn.Parameter(torch.randn(x_dim, latent_dim, dtype=dtype) * 0.1 if W is None
                              else W.contiguous().clone())
        self.mean = nn.Parameter(torch.zeros(x_dim, dtype=dtype) if mean is None
                                 else mean.contiguous().clone())
        self.log_noise_scale = nn.Parameter(torch.tensor(noise_scale, dtype=dtype).log())

    @property
    def noise_scale(self) -> torch.Tensor:
        return self.log_noise_scale.exp()

    def check_inputs(self, x, values: bool | None = None) -> None:
        """Reject ``x`` that is not ``(B, x_dim)`` of the parameters' dtype; values (NaN/inf)
        when ``values``, by default as :func:`~pyro_lvm.checks.check_values` says.

        :raises ValueError: naming ``x`` and what was expected."""
        check_data(x, "x", size=self.x_dim, dtype=self.W.dtype,
                   values=check_values() if values is None else values)

    def model(self, x, num_data=None):
        self.check_inputs(x)
        register(self.name, self)
        prior = dist.Normal(x.new_zeros(self.latent_dim), self.latent_scale).to_event(1)
        with data_plate(x, num_data):
            z = pyro.sample("z", prior)
            pyro.sample("x", dist.Normal(z @ self.W.T + self.mean, self.noise_scale).to_event(1), obs=x)

    def exact_guide(self, x, num_data=None):
        """Guide sampling the exact posterior at the current parameters, held fixed
        (as EM's E-step): with it, the ELBO equals ``log p(x)`` and its model
        gradient is the gradient of the exact log-likelihood (Fisher's identity)."""
        self.check_inputs(x)
        with torch.no_grad():
            loc, cov = _posterior(x, self.W, self.mean, self.noise_scale, self.latent_scale)
        with data_plate(x, num_data):
            pyro.sample("z", dist.MultivariateNormal(loc, covariance_matrix=cov))

    def log_likelihood(self, x) -> torch.Tensor:
        """Exact ``log p(x_n)`` at the current parameters, nats per point, ``(N,)``.

        :raises ValueError: as :func:`~pyro_lvm.models.ppca.log_likelihood`."""
        return log_likelihood(x, self.W, self.mean, self.noise_scale, self.latent_scale)

    def posterior(self, x):
        """Exact ``p(z | x)`` at the current parameters: ``(loc (N, q), cov (q, q))``.

        :raises ValueError: as :func:`~pyro_lvm.models.ppca.posterior`."""
        with torch.no_grad():
            return posterior(x, self.W, self.mean, self.noise_scale, self.latent_scale)


class AmortisedLinearGuide(Saveable):
    """``q(z_n | x_n) = N(A x_n + b, Sigma_q)``: a linear-Gaussian encoder.

    :param int x_dim: D.
    :param int latent_dim: q.
    :param str covariance: ``"full"`` (``Sigma_q = L L^T``, the exact posterior's
        family) or ``"diagonal"`` (mean-field over latent dimensions).
    :param str name: prefix of the parameter names in Pyro's param store.
    :raises ValueError: a size that is not a positive integer, another covariance, a bad name.
    """

    def __init__(self, x_dim: int, latent_dim: int, covariance: str = "full",
                 name: str | None = None):
        super().__init__()
        x_dim, latent_dim = check_size("x_dim", x_dim), check_size("latent_dim", latent_dim)
        self.covariance = check_choice("covariance", covariance, ("full", "diagonal"))
        self.name = unique_name("ppca_amortised", name)
        self.linear = nn.Linear(x_dim, latent_dim)
        nn.init.zeros_(self.linear.weight)
        shape = (latent_dim, latent_dim) if covariance == "full" else (latent_dim,)
        self.raw_scale = nn.Parameter(torch.zeros(shape))

    def check_inputs(self, x, values: bool | None = None) -> None:
        """Reject ``x`` that is not ``(B, x_dim)`` of the encoder's dtype; values (NaN/inf)
        when ``values``, by default as :func:`~pyro_lvm.checks.check_values` says.

        :raises ValueError: naming ``x`` and what was expected."""
        check_data(x, "x", size=self.linear.in_features, dtype=self.linear.weight.dtype,
                   values=check_values() if values is None else values)

    def distribution(self, x) -> dist.Distribution:
        """``q(z | x)`` with batch shape ``(N,)`` and event shape ``(q,)``.

        :raises ValueError: as :meth:`check_inputs`."""
        self.check_inputs(x)
        loc = self.linear(x)
        if self.covariance == "full":
            return dist.MultivariateNormal(loc, scale_tril=transform_to(constraints.lower_cholesky)(self.raw_scale))
        return dist.Normal(loc, F.softplus(self.raw_scale)).to_event(1)

    def encode(self, x):
        """Posterior means and standard deviations of q(z | x), ``(N, q)`` each.

        :raises ValueError: as :meth:`check_inputs` (values included)."""
        self.check_inputs(x, values=True)
        q = self.distribution(x)
        return q.mean, q.stddev

    def guide(self, x, num_data=None):
        register(self.name, self)
        q = self.distribution(x)  # checks x before the encoder sees it
        with data_plate(x, num_data):
            pyro.sample("z", q)


def _check_ppca(ppca) -> None:
    if not isinstance(ppca, PPCA):
        raise ValueError(f"ppca must be a pyro_lvm.models.ppca.PPCA, got {type(ppca).__name__}")


def exact_posterior_guide(ppca: PPCA) -> AmortisedLinearGuide:
    """An :class:`AmortisedLinearGuide` (full covariance, its own parameters) set to
    the exact posterior of ``ppca``: ``A = cov W^T / sigma^2``, ``b = -A mu``, ``L = chol(cov)``.

    :raises ValueError: ``ppca`` not a :class:`PPCA`."""
    _check_ppca(ppca)
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

    :param int num_data: N.
    :param int latent_dim: q.
    :param str name: prefix of the parameter names in Pyro's param store.
    :raises ValueError: a size that is not a positive integer, a bad name.
    """

    def __init__(self, num_data: int, latent_dim: int, name: str | None = None):
        super().__init__()
        num_data, latent_dim = check_size("num_data", num_data), check_size("latent_dim", latent_dim)
        self.loc = nn.Parameter(torch.zeros(num_data, latent_dim))
        self.raw_scale = nn.Parameter(torch.zeros(num_data, latent_dim))
        self.name = unique_name("ppca_meanfield", name)
        self.num_local_rows = num_data  # local parameters: fit refuses DDP (Context.check_split)

    def check_inputs(self, x, values: bool | None = None) -> None:
        """Reject ``x`` that is not ``(N, D)`` with the guide's N rows; values (NaN/inf) when
        ``values``, by default as :func:`~pyro_lvm.checks.check_values` says.

        :raises ValueError: naming ``x`` and what was expected."""
        check_data(x, "x", values=check_values() if values is None else values)
        check_local_rows(x, self.loc.shape[0], "mean-field")

    def distribution(self, x=None) -> dist.Distribution:
        """``q(z_n)`` of all N points: batch shape ``(N,)``, event shape ``(q,)``."""
        return dist.Normal(self.loc, F.softplus(self.raw_scale)).to_event(1)

    def guide(self, x, num_data=None):
        self.check_inputs(x)
        register(self.name, self)
        with data_plate(x, num_data):
            pyro.sample("z", self.distribution())


def kl_to_posterior(q: torch.distributions.Distribution, x, ppca: PPCA) -> torch.Tensor:
    """The exact ELBO gap ``KL(q(z | x_n) || p(z | x_n)) = log p(x_n) - ELBO_n``, nats, ``(N,)``.

    :param q: a Gaussian with batch shape ``(N,)`` and event shape ``(q,)``
        (``guide.distribution(x)``).
    :raises ValueError: ``ppca`` not a :class:`PPCA`, ``q`` not a distribution of those
        shapes, or ``x`` as :func:`posterior` refuses it.
    """
    _check_ppca(ppca)
    loc, cov = ppca.posterior(x)
    shapes = (tuple(loc.shape[:1]), (ppca.latent_dim,))
    if not isinstance(q, torch.distributions.Distribution) \
            or (tuple(q.batch_shape), tuple(q.event_shape)) != shapes:
        got = (f"batch shape {tuple(q.batch_shape)}, event shape {tuple(q.event_shape)}"
               if isinstance(q, torch.distributions.Distribution) else type(q).__name__)
        raise ValueError(f"q must be a Gaussian distribution with batch shape {shapes[0]} and "
                         f"event shape {shapes[1]} (guide.distribution(x)), got {got}")
    if not isinstance(q, torch.distributions.MultivariateNormal):  # diagonal: Independent(Normal)
        q = MultivariateNormal(q.mean, scale_tril=torch.diag_embed(q.stddev))
    return kl_divergence(q, MultivariateNormal(loc, covariance_matrix=cov))
