"""Gaussian mixture model: closed-form EM, exact posterior, the number of components by
BIC, and Pyro model/guide pairs.

Generative model (Bishop 2006, sec. 9.2)::

    z_n ~ Categorical(pi),        x_n | z_n = k ~ N(mu_k, Sigma_k)

with the covariance types of scikit-learn's ``GaussianMixture``, whose ``covariances_``
shapes the ``covariances`` argument takes (K components, D dimensions):

=============  ==============  ==================================================
type           covariances     Sigma_k
=============  ==============  ==================================================
``full``       ``(K, D, D)``   one symmetric positive definite matrix per component
``diag``       ``(K, D)``      ``diag(sigma_k^2)``, variances per component
``spherical``  ``(K,)``        ``sigma_k^2 I``, one variance per component
``tied``       ``(D, D)``      one matrix shared by all components
=============  ==============  ==================================================

The type is an explicit keyword (``covariance_type="full"`` by default), never read off the
shape (a ``(K, D)`` tensor may be diag covariances or a mistake); covariances of another
shape than the type's are refused with the shape it needs.

Everything is exact here: ``log p(x_n) = logsumexp_k [log pi_k + log N(x_n | mu_k, Sigma_k)]``
and ``p(z_n = k | x_n)`` is Bayes' rule (the responsibilities), so every
approximate method of the library can be checked against it.

Choosing K (:func:`select_num_components`): fit K = 1, 2, ... and keep the least
``BIC = -2 sum_n log p(x_n) + p log N`` (Schwarz 1978) or ``AIC = -2 sum_n log p(x_n) + 2 p``
(Akaike 1974), with p free parameters counted as scikit-learn's ``_n_parameters``:
``K - 1`` weights, ``K D`` means, and ``K D (D + 1) / 2`` (full), ``K D`` (diag), ``K``
(spherical) or ``D (D + 1) / 2`` (tied) covariance parameters.

Pyro pairs (all sites in the data plate; see :class:`GMM`):

* exact marginalisation: ``GMM.enumerated_model`` with :func:`empty_guide` and
  ``TraceEnum_ELBO`` (``make_loss("enum")``); the loss is exactly ``-log p(x)``;
* :class:`MeanFieldGuide`: ``q(z_n) = Categorical(r_n)`` with local per-point
  responsibilities, trained by score-function losses (``tracegraph``, ``vimco``);
* :class:`AmortisedGuide`: ``r_n = softmax(g(x_n))`` from an MLP.

The guides do not depend on the covariance type.

EM is split into named steps after scikit-learn's ``GaussianMixture``
(``_e_step``, ``_m_step``) and follows its conventions (``reg_covar``
added to every covariance's diagonal; stop when the mean log-likelihood changes
by less than ``tol``; Gaussian log-densities from Cholesky factors of the precisions), so
the two agree when started from the same parameters.

References:

* C. M. Bishop (2006), *Pattern Recognition and Machine Learning*, ch. 9.
* A. P. Dempster, N. M. Laird, D. B. Rubin (1977), Maximum likelihood from incomplete data
  via the EM algorithm, *J. R. Stat. Soc. B* 39(1).
* G. Schwarz (1978), Estimating the dimension of a model, *Ann. Statist.* 6(2).
* H. Akaike (1974), A new look at the statistical model identification, *IEEE Trans.
  Automat. Control* 19(6).
* D. Arthur, S. Vassilvitskii (2007), k-means++: the advantages of careful seeding, SODA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.distributions import constraints, transform_to

import pyro
import pyro.distributions as dist
from pyro.infer import config_enumerate

from ..checks import (check_choice, check_data, check_generator, check_positive, check_size,
                      check_sizes, check_values)
from ..params import register, unique_name
from .common import check_local_rows, data_plate, mlp, overflow_error
from .saving import Saveable

__all__ = [
    "COVARIANCE_TYPES", "GMM", "GMMFit", "MeanFieldGuide", "AmortisedGuide", "empty_guide",
    "fit_em", "initial_params", "log_likelihood", "responsibilities", "sample",
    "select_num_components",
]

#: The covariance types (scikit-learn's names); the module docstring gives their shapes.
COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")
#: The criteria :func:`select_num_components` minimises.
CRITERIA = ("bic", "aic")


def _covariance_shape(covariance_type: str, k: int, d: int) -> tuple:
    return {"full": (k, d, d), "diag": (k, d), "spherical": (k,), "tied": (d, d)}[covariance_type]


def _is_matrix(covariance_type: str) -> bool:
    """Whether the type's covariances are matrices (full, tied) rather than variances."""
    return covariance_type in ("full", "tied")


def _per_component(t: torch.Tensor, covariance_type: str, shape: tuple) -> torch.Tensor:
    """Covariances, or their factors, of any type as one per component (expanded views):
    ``(K, D, D)`` for the matrix types, ``(K, D)`` for the variance types; ``shape`` is
    ``(K, D)``, that of the means."""
    k, d = shape
    if covariance_type == "tied":
        return t.expand(k, d, d)
    if covariance_type == "spherical":
        return t.unsqueeze(-1).expand(k, d)
    return t


def _which(bad: torch.Tensor) -> str:
    """``" of component(s) [i, ...]"`` for a ``(K,)`` mask; ``""`` for a 0-dim one (the
    tied covariance, shared by all)."""
    return "" if bad.dim() == 0 else f" of component(s) {torch.nonzero(bad).flatten().tolist()}"


def _num_parameters(k: int, d: int, covariance_type: str) -> int:
    """Free parameters of a K-component mixture in D dimensions (scikit-learn's
    ``GaussianMixture._n_parameters``): ``K - 1`` weights, ``K D`` means and the covariances'."""
    covariance = {"full": k * d * (d + 1) // 2, "diag": k * d, "spherical": k,
                  "tied": d * (d + 1) // 2}[covariance_type]
    return k - 1 + k * d + covariance


def _check_simplex_rows(p, name: str, shape: tuple, dtype=None) -> None:
    """Probability vectors along the last dimension of ``p`` (``shape``): non-negative and
    summing to 1 within ``K sqrt(eps)`` (float32 rounding of a normalised vector passes, a
    sum of 1.01 does not).

    :raises ValueError: naming ``name`` and what was expected."""
    check_data(p, name, ndim=len(shape), dtype=dtype)
    if tuple(p.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(p.shape)}")
    sums, tol = p.sum(-1), shape[-1] * torch.finfo(p.dtype).eps ** 0.5
    if bool((p < 0).any()) or bool(((sums - 1).abs() > tol).any()):
        raise ValueError(f"{name} must be non-negative and sum to 1 (probabilities over the "
                         f"{shape[-1]} components), got sums in [{sums.min().item():.6g}, "
                         f"{sums.max().item():.6g}] and min {p.min().item():.4g}; normalise them "
                         f"with {name} / {name}.sum(-1, keepdim=True)")


def _check_params(weights, means, covariances, covariance_type) -> None:
    """Mixture parameters a mixture can have: weights on the simplex, covariances of the
    shape ``covariance_type`` needs and, for the matrix types, symmetric (positive
    (definite)ness is checked where they are factorised, :func:`_scale`).

    :raises ValueError: naming the parameter and what was expected.
    """
    check_choice("covariance_type", covariance_type, COVARIANCE_TYPES)
    check_data(means, "means")
    k, d = means.shape
    _check_simplex_rows(weights, "weights", (k,), dtype=means.dtype)
    check_data(covariances, "covariances", ndim=None, dtype=means.dtype, values=False)
    shape = _covariance_shape(covariance_type, k, d)
    if tuple(covariances.shape) != shape:
        raise ValueError(f"covariances must have shape {shape} for means ({k}, {d}) and "
                         f"covariance_type {covariance_type!r}, got {tuple(covariances.shape)}")
    if not bool(torch.isfinite(covariances).all()):
        # inf: e.g. float64 covariances above 3.4e38 cast to float32
        cause = (f"inf: they overflowed {covariances.dtype} (largest "
                 f"{torch.finfo(covariances.dtype).max:.3g}); use torch.float64 or rescale the "
                 "data and parameters" if bool(torch.isinf(covariances).any()) else "NaN values")
        raise ValueError(f"covariances contain {cause}")
    if _is_matrix(covariance_type):
        tol = torch.finfo(means.dtype).eps ** 0.5
        asym = (covariances - covariances.mT).abs().amax((-1, -2))
        bad = asym > tol * covariances.abs().amax((-1, -2))
        if bool(bad.any()):
            raise ValueError(f"covariances{_which(bad)} are not symmetric (covariance_type "
                             f"{covariance_type!r}); pass (C + C.mT) / 2 if the asymmetry is "
                             "rounding")


def _scale(covariances, covariance_type) -> torch.Tensor:
    """Square roots of the covariances, in the type's shape: lower Cholesky factors ``L``
    (``Sigma = L L^T``) for full ``(K, D, D)`` and tied ``(D, D)``, standard deviations for
    diag ``(K, D)`` and spherical ``(K,)``.

    :raises ValueError: a covariance that is not positive definite (a variance <= 0),
        naming the covariances, their type and the component(s).
    """
    if _is_matrix(covariance_type):
        scale, info = torch.linalg.cholesky_ex(covariances)
        bad, cause = info > 0, "singular"
    else:
        scale, bad, cause = covariances.sqrt(), covariances <= 0, "a variance <= 0"
        bad = bad.any(-1) if covariance_type == "diag" else bad
    if bool(bad.any()):
        raise ValueError(f"covariances with covariance_type {covariance_type!r}: the covariance"
                         f"{_which(bad)} is not positive definite ({cause}); pass positive "
                         "definite covariances, or increase reg_covar in fit_em")
    return scale


def _covariances_from_scale(scale, covariance_type) -> torch.Tensor:
    """The inverse of :func:`_scale`: ``L L^T`` or the squared standard deviations."""
    return scale @ scale.mT if _is_matrix(covariance_type) else scale.square()


def _precision_cholesky(covariances, covariance_type, shape) -> torch.Tensor:
    """Per-component factors ``U_k`` of the precisions, ``Sigma_k^{-1} = U_k U_k^T``
    (scikit-learn's ``precisions_cholesky_``, upper triangular: ``U = L^{-T}``): ``(K, D, D)``
    for the matrix types, ``(K, D)`` (``1 / sigma``) for the variance types.

    :raises ValueError: as :func:`_scale`.
    """
    scale = _scale(covariances, covariance_type)
    if _is_matrix(covariance_type):
        eye = torch.eye(shape[1], dtype=scale.dtype, device=scale.device)
        factor = torch.linalg.solve_triangular(scale, eye, upper=False).mT
    else:
        factor = scale.reciprocal()
    return _per_component(factor, covariance_type, shape)


def _estimate_log_gaussian_prob(x, means, precision_chol) -> torch.Tensor:
    """``log N(x_n | mu_k, Sigma_k)``, ``(N, K)``, nats, from the precision factors of
    :func:`_precision_cholesky` (scikit-learn's ``_estimate_log_gaussian_prob``)::

        log N = -D/2 log(2 pi) + log |U_k| - |U_k^T (x_n - mu_k)|^2 / 2

    Deviations are whitened before they are squared (not expanded into ``x^2 - 2 x mu +
    mu^2``), so nothing cancels and a square overflows only where the deviation itself does.
    """
    diff = x.unsqueeze(0) - means.unsqueeze(1)  # (K, N, D)
    if precision_chol.dim() == 3:
        whitened = diff @ precision_chol
        log_det = precision_chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    else:
        whitened = diff * precision_chol.unsqueeze(1)
        log_det = precision_chol.log().sum(-1)
    d = x.shape[-1]
    return (log_det.unsqueeze(-1) - 0.5 * (d * math.log(2 * math.pi) + whitened.square().sum(-1))).T


def _estimate_log_prob(x, weights, means, covariances, covariance_type):
    """``(log pi_k + log N(x_n | mu_k, Sigma_k) (N, K), log p(x_n) (N,))``, nats.

    With finite data and parameters ``log p(x_n)`` is finite (the weights sum to 1), so a
    non-finite one means that a squared Mahalanobis distance overflowed the dtype.
    """
    precision_chol = _precision_cholesky(covariances, covariance_type, means.shape)
    weighted = _estimate_log_gaussian_prob(x, means, precision_chol) + weights.log()
    log_norm = torch.logsumexp(weighted, -1)
    if not bool(torch.isfinite(log_norm).all()):
        raise overflow_error(x, "log p(x_n) (its squared Mahalanobis distances)")
    return weighted, log_norm


def _checked(x, weights, means, covariances, covariance_type):
    _check_params(weights, means, covariances, covariance_type)
    check_data(x, "x", size=means.shape[-1], dtype=means.dtype)
    return _estimate_log_prob(x, weights, means, covariances, covariance_type)


def log_likelihood(x, weights, means, covariances, covariance_type: str = "full") -> torch.Tensor:
    """Exact ``log p(x_n)`` under the mixture, nats per point, ``(N,)`` (scikit-learn's
    ``score_samples``).

    :param x: ``(N, D)``; ``weights (K,)``, ``means (K, D)``, ``covariances`` of the
        shape ``covariance_type`` needs (module docstring).
    :param str covariance_type: one of :data:`COVARIANCE_TYPES`.
    :raises ValueError: bad shapes or dtypes, NaN/inf, weights off the simplex, an unknown
        ``covariance_type`` or covariances of another type's shape, a covariance that is not
        symmetric positive definite (a variance <= 0), or log-densities that overflow the
        dtype (data too large for float32: the message says so).
    """
    return _checked(x, weights, means, covariances, covariance_type)[1]


def responsibilities(x, weights, means, covariances, covariance_type: str = "full") -> torch.Tensor:
    """The exact posterior ``p(z_n = k | x_n)`` by Bayes' rule, ``(N, K)``, rows sum to 1
    (scikit-learn's ``predict_proba``).

    :raises ValueError: as :func:`log_likelihood`."""
    weighted, log_norm = _checked(x, weights, means, covariances, covariance_type)
    return (weighted - log_norm[:, None]).exp()


def sample(weights, means, covariances, n: int, generator=None, covariance_type: str = "full"):
    """Draw ``n`` points: returns ``(x (n, D), z (n,))``.

    :raises ValueError: as :func:`log_likelihood`, ``n`` not a positive integer, or
        ``generator`` not a ``torch.Generator`` on the parameters' device."""
    _check_params(weights, means, covariances, covariance_type)
    n = check_size("n", n)
    check_generator(generator, means.device)
    scale = _per_component(_scale(covariances, covariance_type), covariance_type, means.shape)
    z = torch.multinomial(weights / weights.sum(), n, replacement=True, generator=generator)
    eps = torch.randn(n, means.shape[1], dtype=means.dtype, device=means.device,
                      generator=generator)
    if scale.dim() == 3:
        return means[z] + (scale[z] @ eps.unsqueeze(-1)).squeeze(-1), z
    return means[z] + scale[z] * eps, z


class _MixtureScores:
    """What a mixture with ``params()`` and ``covariance_type`` says about data, as
    scikit-learn's ``GaussianMixture`` methods; shared by :class:`GMMFit` and :class:`GMM`."""

    def score_samples(self, x) -> torch.Tensor:
        """``log p(x_n)``, nats per point, ``(N,)`` (:func:`log_likelihood`).

        :raises ValueError: ``x`` not ``(N, D)`` finite data of the parameters' dtype."""
        return log_likelihood(x, **self.params(), covariance_type=self.covariance_type)

    def responsibilities(self, x) -> torch.Tensor:
        """``p(z_n = k | x_n)``, ``(N, K)`` (:func:`responsibilities`; ``predict_proba``).

        :raises ValueError: as :meth:`score_samples`."""
        return responsibilities(x, **self.params(), covariance_type=self.covariance_type)

    def predict(self, x) -> torch.Tensor:
        """The most probable component of each point, ``argmax_k p(z_n = k | x_n)``, ``(N,)``.

        :raises ValueError: as :meth:`score_samples`."""
        return self.responsibilities(x).argmax(-1)

    def num_parameters(self) -> int:
        """Free parameters (scikit-learn's ``_n_parameters``; module docstring)."""
        k, d = self.params()["means"].shape
        return _num_parameters(k, d, self.covariance_type)

    def bic(self, x) -> float:
        """Bayesian information criterion on ``x`` (Schwarz 1978), nats; lower is better:
        ``-2 sum_n log p(x_n) + p log N``.

        :raises ValueError: as :meth:`score_samples`."""
        return -2 * self.score_samples(x).sum().item() + self.num_parameters() * math.log(len(x))

    def aic(self, x) -> float:
        """Akaike information criterion on ``x`` (Akaike 1974), nats; lower is better:
        ``-2 sum_n log p(x_n) + 2 p``.

        :raises ValueError: as :meth:`score_samples`."""
        return -2 * self.score_samples(x).sum().item() + 2 * self.num_parameters()


@dataclass
class GMMFit(_MixtureScores):
    """Result of :func:`fit_em`.

    :ivar weights: ``(K,)`` mixing proportions.
    :ivar means: ``(K, D)``.
    :ivar covariances: the shape ``covariance_type`` needs (module docstring).
    :ivar covariance_type: one of :data:`COVARIANCE_TYPES`.
    :ivar log_likelihood: mean ``log p(x_n)`` at the final parameters, nats per point
        (per-point values of any data: :meth:`score_samples`).
    :ivar history: mean log-likelihood before each M-step and at the end (never decreases).
    :ivar converged: whether the change fell below ``tol`` before ``max_iter``.
    :ivar n_iter: EM iterations of the best initialisation.
    """

    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor
    covariance_type: str
    log_likelihood: float
    history: list = field(default_factory=list)
    converged: bool = False
    n_iter: int = 0

    def params(self) -> dict:
        """``dict(weights=, means=, covariances=)``, the tensors themselves (``init`` of
        :func:`fit_em`; pass ``covariance_type=fit.covariance_type`` beside them)."""
        return {"weights": self.weights, "means": self.means, "covariances": self.covariances}


def _e_step(x, params, covariance_type):
    """E-step: ``(mean log p(x_n), log responsibilities (N, K))`` by Bayes' rule."""
    weighted, log_norm = _estimate_log_prob(x, **params, covariance_type=covariance_type)
    return log_norm.mean().item(), weighted - log_norm[:, None]


def _estimate_covariances(x, share, nk, means, covariance_type) -> torch.Tensor:
    """Responsibility-weighted covariances about the new means (Bishop 2006, eq. 9.25),
    before ``reg_covar``, in the shape of ``covariance_type`` (scikit-learn's
    ``_estimate_gaussian_covariances_*``): full per component; tied their average weighted
    by ``N_k / N``; diag their diagonals; spherical the diagonals' means.

    :param share: ``(K, N)`` responsibilities divided by ``nk (K,)``.
    """
    diff = x.unsqueeze(0) - means.unsqueeze(1)  # (K, N, D)
    if covariance_type == "full":
        return torch.einsum("kn,knd,kne->kde", share, diff, diff)
    if covariance_type == "tied":
        return torch.einsum("kn,knd,kne->de", share * (nk / nk.sum())[:, None], diff, diff)
    variances = torch.einsum("kn,knd->kd", share, diff.square())
    return variances if covariance_type == "diag" else variances.mean(-1)


def _m_step(x, log_resp, reg_covar, covariance_type):
    """M-step: weights, means and covariances maximising the expected complete-data
    log-likelihood under the responsibilities (Bishop 2006, eqs. 9.24-9.26), the
    covariances constrained to ``covariance_type`` (:func:`_estimate_covariances`).

    The responsibilities are divided by ``N_k`` before the sums over points, so no sum
    of N squares is formed: the covariances overflow only where a squared deviation does.

    :raises ValueError: the covariances overflowed the dtype (:func:`~.common.overflow_error`).
    """
    resp = log_resp.exp()
    nk = resp.sum(0) + 10 * torch.finfo(x.dtype).eps  # keeps empty components finite (as sklearn)
    share = resp.T / nk[:, None]  # (K, N)
    means = share @ x
    covariances = _estimate_covariances(x, share, nk, means, covariance_type)
    if not bool(torch.isfinite(covariances).all()):
        raise overflow_error(x, "the covariances")
    if _is_matrix(covariance_type):
        reg_covar = reg_covar * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    covariances = covariances + reg_covar
    return {"weights": nk / x.shape[0], "means": means, "covariances": covariances}


def _initialize(x, num_components, covariance_type, reg_covar, generator):
    """k-means++ seeding (Arthur & Vassilvitskii 2007) and 10 Lloyd steps give hard
    responsibilities; one M-step turns them into parameters."""
    n, raw = x.shape[0], x
    # Seeding and Lloyd steps depend on distances only through their ratios and argmins: a
    # power-of-two scale changes no rounding, and keeps squared distances of large data
    # finite, so overflow is met (and named) in the M-step's covariances alone.
    x = torch.ldexp(x, -torch.frexp(x.abs().max()).exponent)
    centers = x[torch.randint(n, (1,), generator=generator, device="cpu").to(x.device)]
    for _ in range(1, num_components):
        d2 = torch.cdist(x, centers).min(1).values.pow(2)
        probs = (d2 / d2.sum()).cpu() if d2.sum() > 0 else torch.full((n,), 1.0 / n)
        centers = torch.cat([centers, x[torch.multinomial(probs, 1, generator=generator).to(x.device)]])
    for _ in range(10):
        labels = torch.cdist(x, centers).argmin(1)
        onehot = nn.functional.one_hot(labels, num_components).to(x.dtype)
        centers = torch.where(onehot.sum(0)[:, None] > 0,
                              onehot.T @ x / onehot.sum(0).clamp(min=1)[:, None], centers)
    log_resp = torch.log(onehot.clamp(min=1e-12))
    return _m_step(raw, log_resp, reg_covar, covariance_type)


def _check_start(x, num_components, covariance_type, reg_covar, seed, name="num_components"):
    """The door shared by :func:`fit_em`, :func:`initial_params` and
    :func:`select_num_components` (whose K is ``max_components``, ``name``):
    ``(K, reg_covar, generator)``."""
    check_data(x, "x")
    check_choice("covariance_type", covariance_type, COVARIANCE_TYPES)
    num_components = check_size(name, num_components, 0)
    if not 1 <= num_components <= x.shape[0]:
        raise ValueError(f"{name} must be between 1 and N={x.shape[0]}, got {num_components}")
    reg_covar = check_positive("reg_covar", reg_covar, allow_zero=True)
    return num_components, reg_covar, torch.Generator().manual_seed(check_size("seed", seed, 0))


def _check_iterations(max_iter, tol, n_init) -> tuple:
    """``(max_iter, tol, n_init)`` checked, for :func:`fit_em` and :func:`select_num_components`."""
    return (check_size("max_iter", max_iter), check_positive("tol", tol, allow_zero=True),
            check_size("n_init", n_init))


def _check_init(init, x, num_components, covariance_type) -> dict:
    """``init`` as parameters of ``x``'s dtype and device, checked as :func:`log_likelihood`'s."""
    keys = ("weights", "means", "covariances")
    if not isinstance(init, dict) or set(init) != set(keys):
        raise ValueError(f"init must be a dict with the keys {keys} (e.g. initial_params(x, K)), "
                         f"got {init if not isinstance(init, dict) else sorted(init)!r}")
    for key in keys:
        if not isinstance(init[key], torch.Tensor):
            raise ValueError(f"init[{key!r}] must be a torch.Tensor, got {type(init[key]).__name__}")
    params = {key: init[key].to(dtype=x.dtype, device=x.device) for key in keys}
    _check_params(**params, covariance_type=covariance_type)
    if params["means"].shape != (num_components, x.shape[1]):
        raise ValueError(f"init['means'] must be ({num_components}, {x.shape[1]}) for "
                         f"num_components={num_components} and x of {x.shape[1]} columns, got "
                         f"{tuple(params['means'].shape)}")
    return params


def _run_em(x, params, covariance_type, max_iter, tol, reg_covar) -> GMMFit:
    """EM iterations from ``params`` until the mean log-likelihood changes by less than ``tol``."""
    history, converged, n_iter = [], False, 0
    for n_iter in range(1, max_iter + 1):
        mean_ll, log_resp = _e_step(x, params, covariance_type)
        history.append(mean_ll)
        params = _m_step(x, log_resp, reg_covar, covariance_type)
        if len(history) > 1 and abs(history[-1] - history[-2]) < tol:
            converged = True
            break
    final = _e_step(x, params, covariance_type)[0]
    history.append(final)
    return GMMFit(covariance_type=covariance_type, log_likelihood=final, history=history,
                  converged=converged, n_iter=n_iter, **params)


def fit_em(x, num_components: int, covariance_type: str = "full", max_iter: int = 100,
           tol: float = 1e-3, n_init: int = 1, reg_covar: float = 1e-6, seed: int = 0,
           init: dict | None = None) -> GMMFit:
    """Maximum-likelihood GMM by expectation-maximisation (Dempster, Laird & Rubin 1977).

    :param x: ``(N, D)`` data; the result keeps its dtype and device.
    :param int num_components: K, between 1 and N.
    :param str covariance_type: one of :data:`COVARIANCE_TYPES` (module docstring).
    :param int max_iter: EM iterations at most, per initialisation.
    :param float tol: stop when the mean log-likelihood changes by less (nats per point).
    :param int n_init: initialisations tried; the best final log-likelihood is kept.
    :param float reg_covar: added to every covariance's diagonal (to every variance).
    :param int seed: seeds the k-means++ initialisation (a CPU generator), >= 0.
    :param init: ``dict(weights=, means=, covariances=)`` of tensors to start from instead,
        the covariances in the shape of ``covariance_type`` (converted to ``x``'s dtype and
        device).
    :returns: a :class:`GMMFit`.
    :raises ValueError: bad data, K < 1 or K > N, an unknown ``covariance_type``, a count that
        is not a positive integer, ``tol``/``reg_covar`` negative or not finite, bad ``init``
        (covariances of another type's shape included), a singular covariance (a variance
        <= 0) that ``reg_covar`` cannot fix, or covariances that overflow the dtype (data too
        large for float32: the message says so).
    """
    num_components, reg_covar, generator = _check_start(x, num_components, covariance_type,
                                                        reg_covar, seed)
    max_iter, tol, n_init = _check_iterations(max_iter, tol, n_init)
    start = None if init is None else _check_init(init, x, num_components, covariance_type)
    best = None
    for _ in range(1 if init is not None else n_init):
        params = start if init is not None else _initialize(x, num_components, covariance_type,
                                                            reg_covar, generator)
        run = _run_em(x, params, covariance_type, max_iter, tol, reg_covar)
        if best is None or run.log_likelihood > best.log_likelihood:
            best = run
    return best


def select_num_components(x, max_components: int, covariance_type: str = "full", n_init: int = 1,
                          criterion: str = "bic", seed: int = 0, max_iter: int = 100,
                          tol: float = 1e-3, reg_covar: float = 1e-6) -> tuple[GMMFit, dict]:
    """Choose K: fit K = 1, ..., ``max_components`` by :func:`fit_em` and keep the fit of
    least ``criterion`` on ``x`` (BIC, Schwarz 1978; AIC, Akaike 1974; module docstring), as
    scikit-learn's "Gaussian Mixture Model Selection" example does.

    :param x: ``(N, D)`` data.
    :param int max_components: the largest K tried, between 1 and N.
    :param str criterion: ``"bic"`` or ``"aic"``.
    :param covariance_type, n_init, seed, max_iter, tol, reg_covar: as :func:`fit_em`, for
        every K.
    :returns: ``(fit, curve)``: the :class:`GMMFit` of least criterion and ``{K: its
        criterion}`` for every K (nats; the curve to plot).
    :raises ValueError: as :func:`fit_em`, ``max_components`` not an integer in [1, N], or an
        unknown ``criterion``.
    """
    max_components, reg_covar, _ = _check_start(x, max_components, covariance_type, reg_covar,
                                                seed, name="max_components")
    max_iter, tol, n_init = _check_iterations(max_iter, tol, n_init)
    criterion = check_choice("criterion", criterion, CRITERIA)
    fits, curve = {}, {}
    for k in range(1, max_components + 1):
        fits[k] = fit_em(x, k, covariance_type, max_iter=max_iter, tol=tol, n_init=n_init,
                         reg_covar=reg_covar, seed=seed)
        curve[k] = getattr(fits[k], criterion)(x)
    return fits[min(curve, key=curve.get)], curve


def initial_params(x, num_components: int, covariance_type: str = "full", reg_covar: float = 1e-6,
                   seed: int = 0) -> dict:
    """The k-means++ starting parameters :func:`fit_em` uses, for starting SVI alike.

    :returns: ``dict(weights=(K,), means=(K, D), covariances=)``, the covariances in the
        shape of ``covariance_type``.
    :raises ValueError: as :func:`fit_em`."""
    num_components, reg_covar, generator = _check_start(x, num_components, covariance_type,
                                                        reg_covar, seed)
    return _initialize(x, num_components, covariance_type, reg_covar, generator)


class GMM(_MixtureScores, Saveable):
    """The mixture as a Pyro model with parameters in a module.

    ``model(x, num_data=None)``: ``z ~ Categorical(pi)``, ``x ~ N(mu_z, Sigma_z)`` inside
    the data plate, ``Sigma_z`` of ``covariance_type``: for full and tied ``L L^T`` with
    ``L`` a Cholesky factor (unconstrained parameters mapped by
    ``transform_to(constraints.lower_cholesky)``), for diag and spherical ``diag(sigma^2)``
    with standard deviations ``sigma`` mapped by ``transform_to(constraints.positive)``.
    ``enumerated_model`` is the same model with ``z`` enumerated (``TraceEnum_ELBO`` sums
    it out exactly; pair it with :func:`empty_guide`).  ``score_samples``,
    ``responsibilities``, ``predict``, ``bic`` and ``aic`` answer at the current parameters.

    :param weights, means, covariances: initial parameters ``(K,)``, ``(K, D)`` and the
        shape of ``covariance_type`` (e.g. from :func:`fit_em` or :func:`initial_params`).
    :param str covariance_type: one of :data:`COVARIANCE_TYPES`.
    :param str name: prefix of the parameter names in Pyro's param store.
    :raises ValueError: parameters as :func:`log_likelihood` refuses them, or a bad name.
    """

    def __init__(self, weights, means, covariances, covariance_type: str = "full",
                 name: str | None = None):
        super().__init__()
        _check_params(weights, means, covariances, covariance_type)
        self.name = unique_name("gmm", name)
        self.covariance_type = covariance_type
        self.num_components, self.dim = means.shape
        # contiguous: Pyro's param store keeps contiguous copies and would swap the module's tensors
        self.logits = nn.Parameter(weights.log().contiguous())
        self.means = nn.Parameter(means.contiguous().clone())
        raw_scale = self._scale_transform().inv(_scale(covariances, covariance_type))
        self.raw_scale = nn.Parameter(raw_scale.contiguous())

    def _scale_transform(self):
        """Unconstrained ``raw_scale`` to the square roots of :func:`_scale`."""
        matrix = _is_matrix(self.covariance_type)
        return transform_to(constraints.lower_cholesky if matrix else constraints.positive)

    def params(self) -> dict:
        """Current ``weights (K,)``, ``means (K, D)`` and ``covariances`` (the shape of
        ``covariance_type``), detached."""
        with torch.no_grad():
            scale = self._scale_transform()(self.raw_scale)
            return {"weights": torch.softmax(self.logits, 0), "means": self.means.clone(),
                    "covariances": _covariances_from_scale(scale, self.covariance_type)}

    def check_inputs(self, x, values: bool | None = None) -> None:
        """Reject ``x`` that is not ``(B, D)`` of the parameters' dtype; values (NaN/inf)
        when ``values``, by default as :func:`~pyro_lvm.checks.check_values` says.

        :raises ValueError: naming ``x`` and what was expected."""
        check_data(x, "x", size=self.dim, dtype=self.means.dtype,
                   values=check_values() if values is None else values)

    def model(self, x, num_data=None):
        self.check_inputs(x)
        register(self.name, self)
        scale = _per_component(self._scale_transform()(self.raw_scale), self.covariance_type,
                               self.means.shape)  # (K, D, D) Cholesky factors or (K, D) sigmas
        with data_plate(x, num_data):
            z = pyro.sample("z", dist.Categorical(logits=self.logits))
            if scale.dim() == 3:
                component = dist.MultivariateNormal(self.means[z], scale_tril=scale[z])
            else:
                component = dist.Normal(self.means[z], scale[z]).to_event(1)
            pyro.sample("x", component, obs=x)

    def enumerated_model(self, x, num_data=None):
        # A method (not config_enumerate(self.model) kept as an attribute), so that the
        # doors of fit and evaluate find the module's check_inputs through it.
        return config_enumerate(self.model)(x, num_data)


def empty_guide(x, num_data=None):
    """The guide for ``GMM.enumerated_model``: z is summed out, nothing is sampled."""


class MeanFieldGuide(Saveable):
    """``q(z_n) = Categorical(r_n)``, one free probability vector per data point.

    Local parameters: the guide must see the full data set at every step
    (``batch_size >= N`` in :func:`~pyro_lvm.train.fit`).

    :param int num_data: N.  :param int num_components: K.
    :param init: optional ``(N, K)`` initial responsibilities, rows on the simplex (e.g.
        :func:`responsibilities`; default uniform).
    :param str name: prefix of the parameter names in Pyro's param store.
    :raises ValueError: a count that is not a positive integer, ``init`` not a floating
        tensor ``(N, K)`` whose finite rows in [0, 1] sum to 1, or a bad name.
    """

    def __init__(self, num_data: int, num_components: int, init=None, name=None):
        super().__init__()
        num_data, num_components = check_size("num_data", num_data), check_size("num_components", num_components)
        if init is None:
            logits = torch.zeros(num_data, num_components)
        else:
            _check_simplex_rows(init, "init", (num_data, num_components))
            logits = init.clamp(min=1e-6).log()
        self.logits = nn.Parameter(logits)
        self.name = unique_name("gmm_meanfield", name)
        self.num_local_rows = num_data  # local parameters: fit refuses DDP (Context.check_split)

    def check_inputs(self, x, values: bool | None = None) -> None:
        """Reject ``x`` that is not ``(N, D)`` with the guide's N rows; values (NaN/inf) when
        ``values``, by default as :func:`~pyro_lvm.checks.check_values` says.

        :raises ValueError: naming ``x`` and what was expected."""
        check_data(x, "x", values=check_values() if values is None else values)
        check_local_rows(x, self.logits.shape[0], "mean-field")

    @torch.no_grad()
    def responsibilities(self, x) -> torch.Tensor:
        """``r_n`` of the rows of ``x`` (all N of them, in order), ``(N, K)``."""
        self.check_inputs(x, values=True)
        return torch.softmax(self.logits, -1)

    def guide(self, x, num_data=None):
        self.check_inputs(x)
        register(self.name, self)
        with data_plate(x, num_data):
            pyro.sample("z", dist.Categorical(logits=self.logits))


class AmortisedGuide(Saveable):
    """``q(z_n | x_n) = Categorical(softmax(g(x_n)))`` with ``g`` an MLP (ReLU hidden units).

    :param int dim: D.  :param int num_components: K.  :param hidden_dims: MLP widths.
    :param str name: prefix of the parameter names in Pyro's param store.
    :raises ValueError: a size that is not a positive integer, ``hidden_dims`` not a
        sequence of them, or a bad name.
    """

    def __init__(self, dim: int, num_components: int, hidden_dims=(64,), name=None):
        super().__init__()
        dim, num_components = check_size("dim", dim), check_size("num_components", num_components)
        self.net = mlp((dim, *check_sizes("hidden_dims", hidden_dims), num_components), nn.ReLU)
        self.name = unique_name("gmm_amortised", name)

    def check_inputs(self, x, values: bool | None = None) -> None:
        """Reject ``x`` that is not ``(B, D)`` of the network's dtype; values (NaN/inf) when
        ``values``, by default as :func:`~pyro_lvm.checks.check_values` says.

        :raises ValueError: naming ``x`` and what was expected."""
        check_data(x, "x", size=self.net[0].in_features, dtype=self.net[0].weight.dtype,
                   values=check_values() if values is None else values)

    @torch.no_grad()
    def responsibilities(self, x) -> torch.Tensor:
        """``r_n = softmax(g(x_n))``, ``(N, K)``."""
        self.check_inputs(x, values=True)
        return torch.softmax(self.net(x), -1)

    def guide(self, x, num_data=None):
        self.check_inputs(x)
        register(self.name, self)
        with data_plate(x, num_data):
            pyro.sample("z", dist.Categorical(logits=self.net(x)))
