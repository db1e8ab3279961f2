"""When can a fitted guide be trusted? PSIS diagnostics, anomaly scores, arviz posteriors.

* :func:`psis_diagnostic`: Pareto-smoothed importance sampling (Vehtari, Simpson, Gelman,
  Yao & Gabry 2024; used for variational inference by Yao, Vehtari, Simpson & Gelman 2018)
  on the weights ``log p(x_n, z_k) - log q(z_k | x_n)`` per data point: the fitted Pareto
  shape k-hat says whether importance sampling with the guide is reliable (k-hat < 0.5
  good, 0.5-0.7 usable, > 0.7 the estimate cannot be trusted) and the effective sample
  size how many of the K draws count.  The Pareto fit is arviz's ``psislw``.
* :func:`anomaly_scores`: ``-log p(x)`` by importance sampling (density estimation).
* :func:`to_inference_data`: guide draws of chosen sites through ``pyro.infer.Predictive``
  as an ``arviz.InferenceData``, for ``az.summary`` and ``az.plot_posterior``.

All read the importance weights from :func:`pyro_lvm.evaluate.log_weights`.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch

from pyro.infer import Predictive

from . import evaluate
from .checks import check_callable, check_data, check_model_data, check_size, checked_values
from .params import isolated_param_store

__all__ = ["PSISResult", "anomaly_scores", "import_arviz", "psis_diagnostic", "psis_from_log_weights",
           "to_inference_data"]

#: k-hat above which importance sampling (and the ELBO as an estimate of log p(x)) is unreliable.
KHAT_THRESHOLD = 0.7
#: Log weights of one point whose spread is within this many units in the last place of
#: their largest magnitude (in their dtype) count as constant: an exact-posterior guide on
#: 20-784 dimensional PPCA data with |log p(x)| from 100 to 9000 gave spreads of 4-20 ulps.
CONSTANT_ULPS = 128


def import_arviz():
    """``import arviz``, without the FutureWarning arviz 0.x prints about its refactor."""
    with warnings.catch_warnings():  # arviz 0.x announces its refactor on import
        warnings.simplefilter("ignore", FutureWarning)
        import arviz
    return arviz


class PSISResult(NamedTuple):
    """Per data point: ``khat`` (N,), Pareto shape; ``ess`` (N,), effective sample size
    ``1 / sum_k w~_k^2`` of the smoothed normalised weights (at most K); and
    ``share_above`` the fraction of points with ``khat > 0.7``."""

    khat: torch.Tensor
    ess: torch.Tensor
    share_above: float


def _check_log_weights(log_w: torch.Tensor) -> None:
    """The door of :func:`psis_from_log_weights` (one pass over the weights)."""
    check_data(log_w, "log_w", values=False)
    if log_w.shape[0] < 2:
        raise ValueError(f"log weights log_w must be (K >= 2, N), got {tuple(log_w.shape)}")
    if bool(torch.isnan(log_w).any() | (log_w == torch.inf).any()):  # -inf: a zero weight
        raise ValueError("log_w contains NaN or +inf values")
    zero = (log_w == -torch.inf).all(0).nonzero().flatten().tolist()
    if zero:
        shown = zero if len(zero) <= 10 else zero[:10] + ["..."]
        raise ValueError(
            f"the importance weights log_w of data point(s) {shown} ({len(zero)} of "
            f"{log_w.shape[1]}) are all zero (log w = -inf for all K = {log_w.shape[0]} draws): "
            "the guide puts no mass where the model has any (every draw z ~ q(z | x) has "
            "p(x, z) = 0: outside the model's support, or the model gives these points "
            "probability 0), so importance sampling with this guide says nothing about them")


def psis_from_log_weights(log_w: torch.Tensor) -> PSISResult:
    """PSIS diagnostic from log weights ``(K, N)`` (K draws per data point).

    A point whose K weights agree to rounding (within ``CONSTANT_ULPS`` = 128 units in the
    last place of ``max_k |log w_nk|`` in ``log_w``'s dtype, or 1e-6 nats) gets
    ``khat = -inf`` and ``ess = K``: bounded weights, a perfect proposal.  Some zero
    weights (``log w = -inf``) among others are allowed.

    :raises ValueError: not a floating ``(K >= 2, N)`` tensor, NaN/+inf weights, or a
        point whose K weights are all zero (the message names the points).
    """
    _check_log_weights(log_w)
    az = import_arviz()
    psislw = getattr(az, "psislw", None)
    if psislw is None:  # arviz >= 1.0 keeps it in arviz_stats
        from arviz_stats import psislw
    weights = log_w.detach().double().cpu().T  # (N, K): arviz wants samples last
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arviz warns about k-hat > 0.7, which we report
        smoothed, khat = psislw(weights.numpy())
    smoothed, khat = torch.as_tensor(smoothed), torch.as_tensor(khat)
    # Weights equal up to rounding (q is the exact posterior) have no tail to fit: arviz's
    # Pareto fit divides by their zero spread. They are bounded, so k = -inf and ESS = K.
    # Rounding grows with |log w| (hundreds of nats per image), so the tolerance is relative.
    # A weight of 0 (log w = -inf) is no rounding: its spread is inf and never counts as constant.
    spread = weights.amax(-1) - weights.amin(-1)
    ulp = torch.finfo(log_w.dtype).eps * weights.abs().amax(-1).clamp(min=1.0)
    constant = torch.isfinite(spread) & (spread <= torch.clamp(CONSTANT_ULPS * ulp, min=1e-6))
    khat = torch.where(constant, torch.tensor(-torch.inf, dtype=khat.dtype), khat)
    ess = torch.where(constant, torch.tensor(float(weights.shape[-1]), dtype=khat.dtype),
                      1.0 / torch.exp(2 * smoothed).sum(-1))
    khat, ess = khat.to(log_w.dtype).to(log_w.device), ess.to(log_w.dtype).to(log_w.device)
    return PSISResult(khat, ess, (khat > KHAT_THRESHOLD).double().mean().item())


def psis_diagnostic(model, guide, x, num_samples: int = 1000, **kwargs) -> PSISResult:
    """PSIS k-hat and effective sample size per data point of ``x`` ``(N, ...)``.

    :param x: a tensor ``(N, ...)`` or a tuple of tensors sharing N.
    :param int num_samples: K draws from the guide per point (>= 2; PSIS wants hundreds).
    :raises ValueError: as :func:`pyro_lvm.evaluate.log_weights` and
        :func:`psis_from_log_weights` (a point whose weights are all zero).
    """
    num_samples = check_size("num_samples", num_samples, 2)
    return psis_from_log_weights(evaluate.log_weights(model, guide, x, num_samples=num_samples,
                                                      **kwargs))


def anomaly_scores(model, guide, x, num_samples: int = 100, **kwargs) -> torch.Tensor:
    """``-log p(x_n)`` estimated by importance sampling with the guide, nats, ``(N,)``:
    high for points the model finds improbable.  ``x``: a tensor ``(N, ...)`` or a tuple
    of tensors sharing N.

    :raises ValueError: as :func:`pyro_lvm.evaluate.log_likelihood`."""
    return -evaluate.log_likelihood(model, guide, x, num_samples=num_samples, **kwargs)


def to_inference_data(model, guide, x, sites=("z",), num_samples: int = 1000, **kwargs):
    """Guide posterior draws of ``sites`` for the data ``x`` as ``arviz.InferenceData``.

    Draws come from ``pyro.infer.Predictive(model, guide=guide, return_sites=sites)``;
    each site becomes a posterior variable of shape ``(chain=1, draw=num_samples, ...)``.

    :param x: a tensor ``(N, ...)`` or a tuple of tensors sharing N, passed to the model
        and guide as their positional arguments.
    :raises ValueError: bad ``model``, ``guide``, ``num_samples``, ``sites`` or data, or
        sites the model lacks.
    """
    check_callable("model", model)
    check_callable("guide", guide)
    num_samples = check_size("num_samples", num_samples)
    if isinstance(sites, str) or not isinstance(sites, (list, tuple)) or not sites \
            or not all(isinstance(s, str) for s in sites):
        raise ValueError(f"sites must be a non-empty list or tuple of site names, got {sites!r}")
    tensors = check_model_data(model, x, "x")
    predictive = Predictive(model, guide=guide, num_samples=num_samples, return_sites=list(sites),
                            parallel=True)
    # The modules' parameters, not the store's; values were checked above.
    with torch.no_grad(), isolated_param_store(), checked_values():
        draws = predictive(*tensors, **kwargs)
    missing = [s for s in sites if s not in draws]
    if missing:
        raise ValueError(f"sites {missing} are not sample sites of the model/guide")
    return import_arviz().from_dict(posterior={s: draws[s].detach().cpu().numpy()[None] for s in sites})
