"""Per-data-point importance weights from Pyro traces: the one place they are computed.

For a model ``p(x, z)`` and guide ``q(z | x)`` whose sample sites all sit in one
data plate, K particles drawn in one vectorised pass give for every data point
``n`` and particle ``k`` the log importance weight::

    log w_nk = log p(x_n, z_nk) - log q(z_nk | x_n),      z_nk ~ q(. | x_n)

where both densities sum only the sites (and their elements) of data point
``n``.  The importance-weighted losses (:mod:`pyro_lvm.infer.losses`),
:func:`pyro_lvm.evaluate.log_likelihood` and the diagnostics all read their
weights from :meth:`ImportanceWeightedLoss.log_weights`, so there is one
definition of the estimator in the library.

Pyro's ``RenyiELBO`` sums each particle over the whole plate before taking the
log-mean-exp and exponentiates the subsample-scaled log-weights; here the
log-mean-exp is taken per data point on unscaled densities and the plate's
subsample scale ``N / B`` multiplies the result, so the bound stays a bound
under minibatching.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

import pyro
from pyro.distributions.util import detach, scale_and_mask
from pyro.infer.elbo import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.infer.util import torch_item

__all__ = ["LogWeights", "ImportanceWeightedLoss", "log_mean_exp", "PARTICLE_PLATE"]

#: Name of the plate over particles (Pyro's own name for it).
PARTICLE_PLATE = "num_particles_vectorized"


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``log (1/K) sum_k exp(log_w_k)`` along ``dim``, stably via ``torch.logsumexp``."""
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])


class LogWeights(NamedTuple):
    """Per-point log-densities of K particles; every tensor is ``(K, B)``, in nats.

    :ivar log_p: ``log p(x_n, z_nk)``, model sites of point n (observed and latent).
    :ivar log_q: ``log q(z_nk | x_n)``, guide sites of point n.
    :ivar log_q_score: the part of ``log_q`` from sites that cannot be
        reparameterised (discrete), through which score-function gradients flow;
        zeros when every site is reparameterised.
    :ivar scale: the data plate's subsample scale ``N / B`` (1 for full data).
    :ivar reparam_sites: the reparameterised guide sites (their values carry the
        pathwise gradient; :class:`~pyro_lvm.infer.losses.DReG` reweights it).
    :ivar num_plates: plates with the particle plate, which sits at ``dim=-num_plates``.
    :ivar data_dim: the data plate's ``dim`` (negative).
    """

    log_p: torch.Tensor
    log_q: torch.Tensor
    log_q_score: torch.Tensor
    scale: float
    reparam_sites: list
    num_plates: int
    data_dim: int

    @property
    def log_w(self) -> torch.Tensor:
        """``log w_nk = log p - log q``, ``(K, B)``."""
        return self.log_p - self.log_q


def _sample_sites(trace):
    return [s for s in trace.nodes.values() if s["type"] == "sample"]


def _data_plate_name(sites) -> str:
    common = None
    for site in sites:
        names = {f.name for f in site["cond_indep_stack"] if f.vectorized and f.name != PARTICLE_PLATE}
        common = names if common is None else common & names
    if not common:
        where = {s["name"]: sorted(f.name for f in s["cond_indep_stack"] if f.name != PARTICLE_PLATE)
                 for s in sites}
        raise ValueError(
            "per-point importance weights need every sample site of the model and guide inside "
            f"one vectorised data plate (pyro.plate(..., dim=...)); plates by site: {where}"
        )
    if len(common) > 1:
        raise ValueError(f"every site sits in several common plates {sorted(common)}; "
                         "per-point weights need exactly one")
    return common.pop()


def _per_point(log_prob: torch.Tensor, num_plates: int, data_dim: int, name: str) -> torch.Tensor:
    """Sum a site's ``log_prob`` (batch shape) over every dim but particles and data."""
    if log_prob.dim() > num_plates:
        raise ValueError(
            f"site '{name}' has batch shape {tuple(log_prob.shape)} with more dims than its "
            f"{num_plates} plates (particles included): declare them as plates or with .to_event()"
        )
    log_prob = log_prob.reshape((1,) * (num_plates - log_prob.dim()) + log_prob.shape)
    keep = (0, num_plates + data_dim)
    others = [d for d in range(num_plates) if d not in keep]
    return log_prob.sum(others) if others else log_prob


def _site_scale(sites):
    scales = {float(s["scale"]) for s in sites if not isinstance(s["scale"], torch.Tensor)}
    if len(scales) > 1:
        raise ValueError(
            f"sites carry different scales {sorted(scales)}; per-point importance weights "
            "need one common (subsample) scale"
        )
    if scales:
        return scales.pop()
    return torch_item(sites[0]["scale"])


def log_weights_from_traces(model_trace, guide_trace, num_plates: int,
                            detach_guide_params: bool = False) -> LogWeights:
    """:class:`LogWeights` from a model trace replayed against a vectorised guide trace.

    :param int num_plates: ``max_plate_nesting`` with the particle plate, outermost at
        ``dim = -num_plates``; log-probs must already be computed on both traces.
    :param bool detach_guide_params: evaluate ``log q`` with the guide's parameters
        detached (the doubly reparameterised estimator); only for reparameterised sites.
    :raises ValueError: a site outside the data plate, a model latent the guide does
        not sample, inconsistent scales, or undeclared batch dims.
    """
    model_sites, guide_sites = _sample_sites(model_trace), _sample_sites(guide_trace)
    sites = model_sites + guide_sites
    plate = _data_plate_name(sites)
    guide_names = {s["name"] for s in guide_sites}
    for site in model_sites:
        if not site["is_observed"] and site["name"] not in guide_names:
            raise ValueError(f"model latent site '{site['name']}' is not sampled by the guide")

    data_dim = next(f.dim for f in sites[0]["cond_indep_stack"] if f.name == plate)

    def per_point(site, log_prob):
        return _per_point(scale_and_mask(log_prob, mask=site["mask"]), num_plates, data_dim,
                          site["name"])

    log_p = sum(per_point(s, s["unscaled_log_prob"]) for s in model_sites)
    log_q, log_q_score, reparam_sites = 0.0, 0.0, []
    for site in guide_sites:
        reparam = site["fn"].has_rsample
        if detach_guide_params:
            if not reparam:
                raise ValueError(f"guide site '{site['name']}' is not reparameterisable; "
                                 "detached-parameter (DReG) weights need rsample")
            lq = per_point(site, detach(site["fn"]).log_prob(site["value"]))
        else:
            lq = per_point(site, site["unscaled_log_prob"])
        log_q = log_q + lq
        if reparam:
            reparam_sites.append(site)
        else:
            log_q_score = log_q_score + lq
    log_q = log_q + torch.zeros_like(log_p)  # a guide with no sites still gives (K, B)
    log_p, log_q = torch.broadcast_tensors(log_p, log_q)
    log_q_score = log_q_score + torch.zeros_like(log_q)
    return LogWeights(log_p, log_q, log_q_score, _site_scale(sites), reparam_sites, num_plates,
                      data_dim)


class ImportanceWeightedLoss(ELBO):
    """Base of the K-particle losses: vectorised particles and per-point weights.

    Reuses Pyro's :class:`~pyro.infer.elbo.ELBO` machinery (plate-nesting guess,
    the particle plate, ``get_importance_trace``).  The particle plate is kept
    even for ``num_particles=1`` so the weights always have shape ``(K, B)``.

    :param int num_particles: K, the particles per data point.
    :param max_plate_nesting: plates in the model (without the particle plate);
        guessed from one run when left at infinity.
    :raises ValueError: ``num_particles`` < 1.
    """

    detach_guide_params = False

    def __init__(self, num_particles: int = 1, max_plate_nesting=float("inf")):
        if int(num_particles) < 1:
            raise ValueError(f"num_particles must be >= 1, got {num_particles}")
        super().__init__(num_particles=int(num_particles), max_plate_nesting=max_plate_nesting,
                         vectorize_particles=True)
        if self.num_particles == 1:  # ELBO adds the particle plate only for K > 1
            self.max_plate_nesting += 1

    def _guess_max_plate_nesting(self, model, guide, args, kwargs):
        super()._guess_max_plate_nesting(model, guide, args, kwargs)
        if self.num_particles == 1:
            self.max_plate_nesting += 1

    def _vectorized_num_particles(self, fn):
        return pyro.plate(PARTICLE_PLATE, self.num_particles, dim=-self.max_plate_nesting)(fn)

    def _get_trace(self, model, guide, args, kwargs):
        return get_importance_trace("flat", self.max_plate_nesting, model, guide, args, kwargs)

    def log_weights(self, model, guide, *args, **kwargs) -> LogWeights:
        """Draw K particles for each data point of ``args`` and return their :class:`LogWeights`."""
        if self.max_plate_nesting == float("inf"):
            self._guess_max_plate_nesting(model, guide, args, kwargs)
        model_trace, guide_trace = self._get_vectorized_trace(model, guide, args, kwargs)
        return log_weights_from_traces(model_trace, guide_trace, self.max_plate_nesting,
                                       self.detach_guide_params)

    def surrogate(self, weights: LogWeights) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, surrogate_loss)`` from the weights: the loss's value and a scalar
        whose gradient is the estimator.  Subclasses define it."""
        raise NotImplementedError

    def loss(self, model, guide, *args, **kwargs) -> float:
        """Value of the loss (negative bound, nats for the whole data set)."""
        with torch.no_grad():
            loss, _ = self.surrogate(self.log_weights(model, guide, *args, **kwargs))
        return torch_item(loss)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """A tensor whose value is the loss and whose gradient is the estimator."""
        loss, surrogate = self.surrogate(self.log_weights(model, guide, *args, **kwargs))
        return loss.detach() + (surrogate - surrogate.detach())

    def loss_and_grads(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """Backpropagate the estimator; returns the loss as a 0-dim tensor (no host sync)."""
        loss, surrogate = self.surrogate(self.log_weights(model, guide, *args, **kwargs))
        surrogate.backward()
        return loss.detach()
