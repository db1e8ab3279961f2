"""Gaussian mixture model: closed-form EM, exact posterior, and Pyro model/guide pairs.

Generative model (Bishop 2006, sec. 9.2)::

    z_n ~ Categorical(pi),        x_n | z_n = k ~ N(mu_k, Sigma_k)      (full covariances)

Everything is exact here: ``log p(x_n) = logsumexp_k [log pi_k + log N(x_n | mu_k, Sigma_k)]``
and ``p(z_n = k | x_n)`` is Bayes' rule (the responsibilities), so every
approximate method of the library can be checked against it.

Pyro pairs (all sites in the data plate; see :class:`GMM`):

* exact marginalisation: ``GMM.enumerated_model`` with :func:`empty_guide` and
  ``TraceEnum_ELBO`` (``make_loss("enum")``); the loss is exactly ``-log p(x)``;
* :class:`MeanFieldGuide`: ``q(z_n) = Categorical(r_n)`` with local per-point
  responsibilities, trained by score-function losses (``tracegraph``, ``vimco``);
* :class:`AmortisedGuide`: ``r_n = softmax(g(x_n))`` from an MLP.

EM is split into named steps after scikit-learn's ``GaussianMixture``
(:func:`_e_step`, :func:`_m_step`) and follows its conventions (``reg_covar``
added to every covariance's diagonal; stop when the mean log-likelihood changes
by less than ``tol``), so the two agree when started from the same parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.distributions import MultivariateNormal, constraints, transform_to

import pyro
import pyro.distributions as dist
from pyro.infer import config_enumerate

from ..checks import check_data, check_generator, check_positive, check_size, check_sizes, check_values
from ..params import register, unique_name
from .common import check_local_rows, data_plate, mlp, overflow_error
from .saving import Saveable

__all__ = [
    "GMM", "GMMFit", "MeanFieldGuide", "AmortisedGuide", "empty_guide",
    "fit_em", "initial_params", "log_likelihood", "responsibilities", "sample",
]


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


def _check_params(weights, means, covariances):
    """Mixture parameters a mixture can have: weights on the simplex, covariances symmetric
    (positive definiteness is checked by their Cholesky factorisation, :func:`_cholesky`).

    :raises ValueError: naming the parameter and what was expected.
    """
    check_data(means, "means")
    k, d = means.shape
    _check_simplex_rows(weights, "weights", (k,), dtype=means.dtype)
    check_data(covariances, "covariances", ndim=3, dtype=means.dtype, values=False)
    if not bool(torch.isfinite(covariances).all()):
        # inf: e.g. float64 covariances above 3.4e38 cast to float32
        cause = (f"inf: they overflowed {covariances.dtype} (largest "
                 f"{torch.finfo(covariances.dtype).max:.3g}); use torch.float64 or rescale the "
                 "data and parameters" if bool(torch.isinf(covariances).any()) else "NaN values")
        raise ValueError(f"covariances contain {cause}")
    if covariances.shape != (k, d, d):
        raise ValueError(f"covariances must have shape ({k}, {d}, {d}) for means ({k}, {d}), got "
                         f"{tuple(covariances.shape)}")
    tol = torch.finfo(means.dtype).eps ** 0.5
    asym = (covariances - covariances.transpose(-1, -2)).abs().amax((-1, -2))
    bad = torch.nonzero(asym > tol * covariances.abs().amax((-1, -2))).flatten().tolist()
    if bad:
        raise ValueError(f"covariances of component(s) {bad} are not symmetric; pass "
                         "(C + C.mT) / 2 if the asymmetry is rounding")


def _cholesky(covariances: torch.Tensor) -> torch.Tensor:
    chol, info = torch.linalg.cholesky_ex(covariances)
    if bool((info > 0).any()):
        bad = torch.nonzero(info > 0).flatten().tolist()
        raise ValueError(f"covariance of component(s) {bad} is not positive definite "
                         "(singular); increase reg_covar")
    return chol


def _estimate_log_prob(x, weights, means, covariances):
    """``(log pi_k + log N(x_n | mu_k, Sigma_k) (N, K), log p(x_n) (N,))``, nats.

    With finite data and parameters ``log p(x_n)`` is finite (the weights sum to 1), so a
    non-finite one means that a squared Mahalanobis distance overflowed the dtype.
    """
    components = MultivariateNormal(means, scale_tril=_cholesky(covariances))
    weighted = components.log_prob(x.unsqueeze(-2)) + weights.log()
    log_norm = torch.logsumexp(weighted, -1)
    if not bool(torch.isfinite(log_norm).all()):
        raise overflow_error(x, "log p(x_n) (its squared Mahalanobis distances)")
    return weighted, log_norm


def _checked(x, weights, means, covariances):
    _check_params(weights, means, covariances)
    check_data(x, "x", size=means.shape[-1], dtype=means.dtype)
    return _estimate_log_prob(x, weights, means, covariances)


def log_likelihood(x, weights, means, covariances) -> torch.Tensor:
    """Exact ``log p(x_n)`` under the mixture, nats per point, ``(N,)``.

    :param x: ``(N, D)``; ``weights (K,)``, ``means (K, D)``, ``covariances (K, D, D)``.
    :raises ValueError: bad shapes or dtypes, NaN/inf, weights off the simplex, a
        covariance that is not symmetric positive definite, or log-densities that
        overflow the dtype (data too large for float32: the message says so).
    """
    return _checked(x, weights, means, covariances)[1]


def responsibilities(x, weights, means, covariances) -> torch.Tensor:
    """The exact posterior ``p(z_n = k | x_n)`` by Bayes' rule, ``(N, K)``, rows sum to 1.

    :raises ValueError: as :func:`log_likelihood`."""
    weighted, log_norm = _checked(x, weights, means, covariances)
    return (weighted - log_norm[:, None]).exp()


def sample(weights, means, covariances, n: int, generator=None):
    """Draw ``n`` points: returns ``(x (n, D), z (n,))``.

    :raises ValueError: as :func:`log_likelihood`, ``n`` not a positive integer, or
        ``generator`` not a ``torch.Generator`` on the parameters' device."""
    _check_params(weights, means, covariances)
    n = check_size("n", n)
    check_generator(generator, means.device)
    z = torch.multinomial(weights / weights.sum(), n, replacement=True, generator=generator)
    chol = _cholesky(covariances)
    eps = torch.randn(n, means.shape[1], 1, dtype=means.dtype, device=means.device,
                      generator=generator)
    return means[z] + (chol[z] @ eps).squeeze(-1), z


@dataclass
class GMMFit:
    """Result of :func:`fit_em`.

    :ivar weights: ``(K,)`` mixing proportions.
    :ivar means: ``(K, D)``.
    :ivar covariances: ``(K, D, D)``.
    :ivar log_likelihood: mean ``log p(x_n)`` at the final parameters, nats per point.
    :ivar history: mean log-likelihood before each M-step and at the end (never decreases).
    :ivar converged: whether the change fell below ``tol`` before ``max_iter``.
    :ivar n_iter: EM iterations of the best initialisation.
    """

    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor
    log_likelihood: float
    history: list = field(default_factory=list)
    converged: bool = False
    n_iter: int = 0

    def params(self) -> dict:
        return {"weights": self.weights, "means": self.means, "covariances": self.covariances}


def _e_step(x, params):
    """E-step: ``(mean log p(x_n), log responsibilities (N, K))`` by Bayes' rule."""
    weighted, log_norm = _estimate_log_prob(x, **params)
    return log_norm.mean().item(), weighted - log_norm[:, None]


def _m_step(x, log_resp, reg_covar):
    """M-step: weights, means and covariances maximising the expected complete-data
    log-likelihood under the responsibilities (Bishop 2006, eqs. 9.24-9.26).

    The responsibilities are divided by ``N_k`` before the sums over points, so no sum
    of N squares is formed: the covariances overflow only where a squared deviation does.

    :raises ValueError: the covariances overflowed the dtype (:func:`~.common.overflow_error`).
    """
    resp = log_resp.exp()
    nk = resp.sum(0) + 10 * torch.finfo(x.dtype).eps  # keeps empty components finite (as sklearn)
    share = resp.T / nk[:, None]  # (K, N)
    means = share @ x
    diff = x.unsqueeze(0) - means.unsqueeze(1)  # (K, N, D)
    covariances = torch.einsum("kn,knd,kne->kde", share, diff, diff)
    if not bool(torch.isfinite(covariances).all()):
        raise overflow_error(x, "the covariances")
    covariances = covariances + reg_covar * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return {"weights": nk / x.shape[0], "means": means, "covariances": covariances}


def _initialize(x, num_components, reg_covar, generator):
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
    return _m_step(raw, log_resp, reg_covar)


def _check_start(x, num_components, reg_covar, seed):
    """The door shared by :func:`fit_em` and :func:`initial_params`: ``(K, reg_covar,
    generator)``."""
    check_data(x, "x")
    num_components = check_size("num_components", num_components, 0)
    if not 1 <= num_components <= x.shape[0]:
        raise ValueError(f"num_components must be between 1 and N={x.shape[0]}, got {num_components}")
    reg_covar = check_positive("reg_covar", reg_covar, allow_zero=True)
    return num_components, reg_covar, torch.Generator().manual_seed(check_size("seed", seed, 0))


def _check_init(init, x, num_components) -> dict:
    """``init`` as parameters of ``x``'s dtype and device, checked as :func:`log_likelihood`'s."""
    keys = ("weights", "means", "covariances")
    if not isinstance(init, dict) or set(init) != set(keys):
        raise ValueError(f"init must be a dict with the keys {keys} (e.g. initial_params(x, K)), "
                         f"got {init if not isinstance(init, dict) else sorted(init)!r}")
    for key in keys:
        if not isinstance(init[key], torch.Tensor):
            raise ValueError(f"init[{key!r}] must be a torch.Tensor, got {type(init[key]).__name__}")
    params = {key: init[key].to(dtype=x.dtype, device=x.device) for key in keys}
    _check_params(**params)
    if params["means"].shape != (num_components, x.shape[1]):
        raise ValueError(f"init['means'] must be ({num_components}, {x.shape[1]}) for "
                         f"num_components={num_components} and x of {x.shape[1]} columns, got "
                         f"{tuple(params['means'].shape)}")
    return params


def _run_em(x, params, max_iter, tol, reg_covar) -> GMMFit:
    """EM iterations from ``params`` until the mean log-likelihood changes by less than ``tol``."""
    history, converged, n_iter = [], False, 0
    for n_iter in range(1, max_iter + 1):
        mean_ll, log_resp = _e_step(x, params)
        history.append(mean_ll)
        params = _m_step(x, log_resp, reg_covar)
        if len(history) > 1 and abs(history[-1] - history[-2]) < tol:
            converged = True
            break
    final = _e_step(x, params)[0]
    history.append(final)
    return GMMFit(log_likelihood=final, history=history, converged=converged, n_iter=n_iter,
                  **params)


def fit_em(x, num_components: int, max_iter: int = 100, tol: float = 1e-3, n_init: int = 1,
           reg_covar: float = 1e-6, seed: int = 0, init: dict | None = None) -> GMMFit:
    """Maximum-likelihood GMM by expectation-maximisation (Dempster, Laird & Rubin 1977).

    :param x: ``(N, D)`` data; the result keeps its dtype and device.
    :param int num_components: K, between 1 and N.
    :param int max_iter: EM iterations at most, per initialisation.
    :param float tol: stop when the mean log-likelihood changes by less (nats per point).
    :param int n_init: initialisations tried; the best final log-likelihood is kept.
    :param float reg_covar: added to every covariance's diagonal.
    :param int seed: seeds the k-means++ initialisation (a CPU generator), >= 0.
    :param init: ``dict(weights=, means=, covariances=)`` of tensors to start from instead
        (converted to ``x``'s dtype and device).
    :returns: a :class:`GMMFit`.
    :raises ValueError: bad data, K < 1 or K > N, a count that is not a positive integer,
        ``tol``/``reg_covar`` negative or not finite, bad ``init``, a singular covariance
        that ``reg_covar`` cannot fix, or covariances that overflow the dtype (data too large
        for float32: the message says so).
    """
    num_components, reg_covar, generator = _check_start(x, num_components, reg_covar, seed)
    max_iter, n_init = check_size("max_iter", max_iter), check_size("n_init", n_init)
    tol = check_positive("tol", tol, allow_zero=True)
    start = None if init is None else _check_init(init, x, num_components)
    best = None
    for _ in range(1 if init is not None else n_init):
        params = start if init is not None else _initialize(x, num_components, reg_covar, generator)
        run = _run_em(x, params, max_iter, tol, reg_covar)
        if best is None or run.log_likelihood > best.log_likelihood:
            best = run
    return best


class GMM(Saveable):
    """The mixture as a Pyro model with parameters in a module.

    ``model(x, num_data=None)``: ``z ~ Categorical(pi)``, ``x ~ N(mu_z, L_z L_z^T)``
    inside the data plate, with ``L_k`` a Cholesky factor (unconstrained
    parameters mapped by ``transform_to(constraints.lower_cholesky)``).
    ``enumerated_model`` is the same model with ``z`` enumerated (``TraceEnum_ELBO`` sums
    it out exactly; pair it with :func:`empty_guide`).

    :param weights, means, covariances: initial parameters ``(K,)``, ``(K, D)``,
        ``(K, D, D)`` (e.g. from :func:`fit_em` or :func:`initial_params`).
    :param str name: prefix of the parameter names in Pyro's param store.
    :raises ValueError: parameters as :func:`log_likelihood` refuses them, or a bad name.
    """

    def __init__(self, weights, means, covariances, name: str | None = None):
        super().__init__()
        _check_params(weights, means, covariances)
        self.name = unique_name("gmm", name)
        self.num_components, self.dim = means.shape
        # contiguous: Pyro's param store keeps contiguous copies and would swap the module's tensors
        self.logits = nn.Parameter(weights.log().contiguous())
        self.means = nn.Parameter(means.contiguous().clone())
        chol = _cholesky(covariances)
        self.raw_scale_tril = nn.Parameter(transform_to(constraints.lower_cholesky).inv(chol).contiguous())

    def params(self) -> dict:
        """Current ``weights (K,)``, ``means (K, D)``, ``covariances (K, D, D)``, detached."""
        with torch.no_grad():
            tril = transform_to(constraints.lower_cholesky)(self.raw_scale_tril)
            return {"weights": torch.softmax(self.logits, 0), "means": self.means.clone(),
                    "covariances": tril @ tril.transpose(-1, -2)}

    def check_inputs(self, x, values: bool | None = None) -> None:
        """Reject ``x`` that is not ``(B, D)`` of the parameters' dtype; values (NaN/inf)
        when ``values``, by default as :func:`~pyro_lvm.checks.check_values` says.

        :raises ValueError: naming ``x`` and what was expected."""
        check_data(x, "x", size=self.dim, dtype=self.means.dtype,
                   values=check_values() if values is None else values)

    def model(self, x, num_data=None):
        self.check_inputs(x)
        register(self.name, self)
        scale_tril = transform_to(constraints.lower_cholesky)(self.raw_scale_tril)
        with data_plate(x, num_data):
            z = pyro.sample("z", dist.Categorical(logits=self.logits))
            pyro.sample("x", dist.MultivariateNormal(self.means[z], scale_tril=scale_tril[z]),
                        obs=x)

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


def initial_params(x, num_components: int, reg_covar: float = 1e-6, seed: int = 0) -> dict:
    """The k-means++ starting parameters :func:`fit_em` uses, for starting SVI alike.

    :returns: ``dict(weights=(K,), means=(K, D), covariances=(K, D, D))``.
    :raises ValueError: as :func:`fit_em`."""
    num_components, reg_covar, generator = _check_start(x, num_components, reg_covar, seed)
    return _initialize(x, num_components, reg_covar, generator)
