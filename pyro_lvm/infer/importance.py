"""Importance weights from Pyro traces: the one place they are computed.

Two paths, chosen from the traces:

* **per point** (every sample site of model and guide, observed ones included,
  sits in one common vectorised data plate): K particles drawn in one vectorised
  pass give for every data point ``n`` and particle ``k`` the log weight::

      log w_nk = log p(x_n, z_nk) - log q(z_nk | x_n),      z_nk ~ q(. | x_n)

  where both densities sum only the sites (and elements) of point ``n``; shape
  ``(K, B)``.  The log-mean-exp is then taken per point on unscaled densities and
  the plate's subsample scale ``N / B`` multiplies the result, so the bound stays
  a bound under minibatching (Pyro's ``RenyiELBO`` exponentiates scaled weights).
* **shared** (any site outside that plate: a global latent, no plate at all,
  sequential ``pyro.plate`` loops, several nested plates holding every site,
  sites carrying different scales, e.g. nested subsampled plates or a
  ``poutine.scale`` on some sites): a site outside the data plate is shared by
  all points of the batch, so the batch has one weight per particle,
  ``log w_k = log p(x, z_k) - log q(z_k | x)`` summed over every site with Pyro's
  scales applied; shape ``(K, 1)``, as Pyro's ``RenyiELBO`` (alpha = 0) does.  With
  the full data this is the IWAE bound on ``log p(x_1..N)``; under subsampling (a plate with ``subsample_size``) the
  scaled log-weight is unbiased but its log-mean-exp is not a bound for K > 1.
  At K = 1 both paths equal Pyro's ``Trace_ELBO`` value.

The importance-weighted losses (:mod:`pyro_lvm.infer.losses`),
:func:`pyro_lvm.evaluate.log_likelihood` and the diagnostics all read their
weights from :meth:`ImportanceWeightedLoss.log_weights`, so there is one
definition of the estimator in the library; annealed importance sampling
(:mod:`pyro_lvm.ais`) reads the same densities at latent values it chooses
itself through :func:`log_weights_at`.

Shapes: with K > 1 the particles are a plate (:data:`PARTICLE_PLATE`) outside
the model's plates, so every sample in the model and guide gets a leading
``(K, ...)`` dimension (``(K, B, z_dim)`` for a local ``z``); user code must
index from the right (``z[..., i]``, ``torch.cat(..., dim=-1)``).  With K = 1
there is no particle plate: the user's code sees the shapes it wrote.  Code that
indexes or unsqueezes from the left makes a site's log-density broadcast against the
particles of another (``(K, K, B)`` from ``w.unsqueeze(-2)`` on a global ``w`` of shape
``(K, 1, D)``); each weight would then mix particles, so a log-density with a dim of
size > 1 left of the particle dim is refused, naming the site, the shape found and the
shape expected (a shape check per site: no host sync).  Mixing that keeps the shapes
(``w[0]``) is found by :func:`pyro_lvm.testing.check_pair`, which scores each particle
alone.

Enumeration: model latents the guide does not sample and that are marked
``infer={"enumerate": "parallel"}`` (``config_enumerate``) are enumerated left of the
particle dim, as ``TraceEnum_ELBO`` does, and summed out exactly inside each weight:
the sites that depend on them are added, ``logsumexp``-ed over the enumerated values
per element of the enumerated sites' plates, then summed over those plates, with the
sites' scale applied outside the ``logsumexp`` (Pyro's rule).  This needs the
enumerated sites to share one set of plates (e.g. all in the data plate) and their
dims to be distinct (no ``pyro.markov`` chains); other cases are refused naming
``loss='enum'``.
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import torch

from pyro.distributions.util import detach, scale_and_mask
from pyro.infer.elbo import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.infer.util import torch_item
from pyro.poutine.enum_messenger import EnumMessenger
from pyro.poutine.messenger import Messenger
from pyro.util import get_rng_state, set_rng_state

from ..checks import check_size

__all__ = ["LogWeights", "ImportanceWeightedLoss", "log_mean_exp", "log_weights_at",
           "log_weights_from_traces",
           "PARTICLE_PLATE"]

#: Name of the plate over particles (Pyro's own name for it).
PARTICLE_PLATE = "num_particles_vectorized"


class _NoPlateGuess(logging.Filter):
    """Drops Pyro's INFO line "Guessed max_plate_nesting = n", which every loss object
    built with K > 1 (and every evaluation) would print once more."""

    def filter(self, record):
        return not str(record.msg).startswith("Guessed max_plate_nesting")


logging.getLogger("pyro.infer.elbo").addFilter(_NoPlateGuess())


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``log (1/K) sum_k exp(log_w_k)`` along ``dim``, stably via ``torch.logsumexp``."""
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])


class LogWeights(NamedTuple):
    """Log-densities of K particles; every tensor is ``(K, B)`` per point, or ``(K, 1)``
    on the shared path (see the module docstring), in nats.

    :ivar log_p: ``log p(x_n, z_nk)``, model sites of point n (observed and latent).
    :ivar log_q: ``log q(z_nk | x_n)``, guide sites of point n.
    :ivar log_q_score: the part of ``log_q`` from sites that cannot be
        reparameterised (discrete), through which score-function gradients flow;
        zeros when every site is reparameterised.
    :ivar scale: the data plate's subsample scale ``N / B`` (1 for full data, and on
        the shared path, whose densities carry Pyro's scales already).
    :ivar reparam_sites: the reparameterised guide sites (their values carry the
        pathwise gradient; :class:`~pyro_lvm.infer.losses.DReG` reweights it).
    :ivar num_plates: plates with the particle plate, which sits at ``dim=-num_plates``
        (for K = 1 the particle dim is virtual: sample values do not have it).
    :ivar data_dim: the data plate's ``dim`` (negative); ``None`` on the shared path.
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


def plates_by_site(sites) -> dict:
    """``{site name: sorted vectorised plate names}`` without the particle plate."""
    return {s["name"]: sorted(f.name for f in s["cond_indep_stack"]
                              if f.vectorized and f.name != PARTICLE_PLATE) for s in sites}


def data_plate_name(sites):
    """The one vectorised plate every site sits in, or ``None`` (shared weights) when
    there is none, several, or no site at all."""
    common = None
    for names in plates_by_site(sites).values():
        common = set(names) if common is None else common & set(names)
    return common.pop() if common and len(common) == 1 else None


def _enumerated_dims(model_sites, guide_names) -> dict:
    """``{site name: enumeration dim}`` of the model's latents summed out by enumeration
    (``infer={"enumerate": "parallel"}``, run under Pyro's ``EnumMessenger``).

    :raises ValueError: a model latent the guide neither samples nor enumerates, or two
        enumerated sites sharing a dim (``pyro.markov`` recycles dims; the weights sum every
        enumerated dim jointly, so only ``TraceEnum_ELBO`` handles those)."""
    dims = {}
    for site in model_sites:
        if site["is_observed"] or site["name"] in guide_names:
            continue
        dim = site["infer"].get("_enumerate_dim")
        if dim is None:
            how = site["infer"].get("enumerate")
            hint = (f" (it is marked enumerate={how!r}; the importance weights sum out "
                    "'parallel' ones only)" if how else "")
            raise ValueError(f"model latent site '{site['name']}' is not sampled by the guide{hint}")
        shared = [name for name, d in dims.items() if d == dim]
        if shared:
            raise ValueError(f"model sites '{shared[0]}' and '{site['name']}' share enumeration "
                             f"dim {dim} (pyro.markov): sum them out with loss='enum' instead")
        dims[site["name"]] = dim
    return dims


def _enumerated_plates(model_trace, enumerated: dict) -> tuple:
    """The dims of the plates the enumerated sites sit in (one set shared by all of them: a
    ``logsumexp`` per element of those plates sums them out exactly; sites in different
    plates need Pyro's tensor contraction, ``TraceEnum_ELBO``)."""
    plates = {name: tuple(sorted((f.name, f.dim) for f in model_trace.nodes[name]["cond_indep_stack"]
                                 if f.vectorized and f.name != PARTICLE_PLATE))
              for name in enumerated}
    if len(set(plates.values())) > 1:
        raise ValueError(f"the enumerated model sites sit in different plates "
                         f"{ {n: [p for p, _ in v] for n, v in plates.items()} }: the importance "
                         "weights sum out sites of one plate set only; use loss='enum'")
    return tuple(dim for _, dim in next(iter(plates.values()), ()))


def _left_dims(log_prob: torch.Tensor, first: int, enum_dims) -> list:
    """The dims (negative) of ``log_prob`` left of dim ``first`` of size > 1 that are not
    enumeration dims."""
    return [d for d in range(-log_prob.dim(), first) if log_prob.shape[d] != 1 and d not in enum_dims]


def _expected_shape(site, num_plates: int) -> tuple:
    """The batch shape a site's log-density should have: its plates' sizes at their dims."""
    shape = [1] * num_plates
    for frame in site["cond_indep_stack"]:
        if frame.vectorized and frame.dim is not None and -frame.dim <= num_plates:
            shape[frame.dim] = frame.size
    return tuple(shape)


def _check_particle_shape(site, log_prob: torch.Tensor, num_plates: int, enum_dims) -> None:
    """With K > 1 particles, a site's log-density carries the particle dim at
    ``dim=-num_plates`` (the particle plate) and nothing left of it but enumeration dims.
    A dim there means the site broadcast against the particles of another site, so each
    weight would mix particles (shape checks only: no host sync)."""
    if not _left_dims(log_prob, -num_plates, enum_dims):
        return
    raise ValueError(
        f"site '{site['name']}' has a log-density of shape {tuple(log_prob.shape)} with "
        f"{log_prob.shape[-num_plates]} particles, expected {_expected_shape(site, num_plates)}: "
        f"a dim left of the particle dim (dim={-num_plates}), so its particles mix with those "
        "of another site. Likely cause: indexing or reshaping a latent from the left (z[0], "
        "z[:, i], torch.cat(..., dim=0)) or an unsqueeze on a global latent (w.unsqueeze(-2) "
        "on a draw of shape (K, 1, D)); index from the right (z[..., i], dim=-1) and let the "
        "plates broadcast")


def _reduce(log_prob: torch.Tensor, num_plates: int, keep: tuple) -> torch.Tensor:
    """Sum a site's ``log_prob`` over its plate dims but ``keep`` (negative), keeping every
    dim: ``(*enumeration dims, num_plates dims)``, to be summed with the other sites'."""
    if log_prob.dim() < num_plates:
        log_prob = log_prob.reshape((1,) * (num_plates - log_prob.dim()) + log_prob.shape)
    others = [d for d in range(-num_plates, 0) if d not in keep]
    return log_prob.sum(others, keepdim=True) if others else log_prob


def _flatten(total, num_plates: int) -> torch.Tensor:
    """The sum of the sites' reduced log-densities as ``(K or 1, B or 1)``, its
    enumeration dims (left of the particle dim) summed out by ``logsumexp``."""
    if not isinstance(total, torch.Tensor):  # no site at all
        return total
    if total.dim() > num_plates:
        total = torch.logsumexp(total, dim=tuple(range(total.dim() - num_plates)))
    return total.reshape(total.shape[0], -1)


def _site_scale(sites):
    """The one scale all sites carry (the data plate's ``N / B``), or ``None`` when they
    differ (nested subsampled plates, ``poutine.scale`` on some sites)."""
    scales = {float(s["scale"]) if not isinstance(s["scale"], torch.Tensor) or s["scale"].numel() == 1
              else None for s in sites}
    return scales.pop() if len(scales) == 1 else None


def _depends(log_prob: torch.Tensor, enum_dims) -> bool:
    """Whether a log-density varies along an enumeration dim (depends on an enumerated site)."""
    return any(-d <= log_prob.dim() and log_prob.shape[d] > 1 for d in enum_dims)


def _summed_out(dependent: torch.Tensor, num_plates: int, plate_dims, scale) -> torch.Tensor:
    """``scale * sum_plates log sum_y exp(dependent)``: the enumeration dims (left of the
    particle dim) summed out per element of the enumerated sites' plates, then those plates
    summed (they are kept only on the per-point path) and the sites' scale applied outside
    the ``logsumexp``, as ``TraceEnum_ELBO`` does."""
    total = torch.logsumexp(dependent, dim=tuple(range(dependent.dim() - num_plates)))
    return scale * (total.sum(plate_dims, keepdim=True) if plate_dims else total)


def _log_p(model_sites, reduce, enum_dims, enum_plates, keep, per_point, num_plates):
    """``log p`` ``(K or 1, B or 1)``: the sites that depend on enumerated ones summed out
    (:func:`_summed_out`), the others summed as they are."""
    log_p, dependent, scales = 0.0, 0.0, set()
    for site in model_sites:
        if enum_dims and _depends(site["unscaled_log_prob"], enum_dims):
            dependent = dependent + reduce(site, site["unscaled_log_prob"], False,
                                           keep + enum_plates)  # scaled after the sum
            scales.add(1.0 if per_point else _site_scale([site]))
        else:
            log_p = log_p + reduce(site, site["unscaled_log_prob"], not per_point)
    if scales:
        if len(scales) > 1 or None in scales:
            raise ValueError("the model sites that depend on enumerated ones carry different "
                             "scales: use loss='enum'")
        plate_dims = tuple(d for d in enum_plates if d not in keep)
        log_p = log_p + _summed_out(dependent, num_plates, plate_dims, scales.pop())
    return _flatten(log_p, num_plates)


def _log_q(guide_sites, reduce, scaled, num_plates, detach_guide_params):
    """``(log_q, log_q_score, reparam_sites)``: ``log q`` ``(K or 1, B or 1)``, its part from
    sites without ``rsample`` (score-function gradients), and the reparameterised sites."""
    log_q, log_q_score, reparam_sites = 0.0, 0.0, []
    for site in guide_sites:
        reparam = site["fn"].has_rsample
        if detach_guide_params and not reparam:
            raise ValueError(f"guide site '{site['name']}' is not reparameterisable; "
                             "detached-parameter (DReG) weights need rsample")
        lq = detach(site["fn"]).log_prob(site["value"]) if detach_guide_params else \
            site["unscaled_log_prob"]
        lq = _flatten(reduce(site, lq, scaled), num_plates)
        log_q = log_q + lq
        if reparam:
            reparam_sites.append(site)
        else:
            log_q_score = log_q_score + lq
    return log_q, log_q_score, reparam_sites


def log_weights_from_traces(model_trace, guide_trace, num_plates: int,
                            detach_guide_params: bool = False,
                            particles: bool = True) -> LogWeights:
    """:class:`LogWeights` from a model trace replayed against a vectorised guide trace.

    Model latents the guide does not sample may be enumerated in the model (run under
    Pyro's ``EnumMessenger``, as :class:`ImportanceWeightedLoss` does): the sites that
    depend on them are summed out exactly per element of their plates,
    ``log p(x_n, z_nk) = log sum_y p(x_n, y, z_nk)``.

    :param int num_plates: ``max_plate_nesting`` with the particle plate, outermost at
        ``dim = -num_plates``; log-probs must already be computed on both traces.
    :param bool detach_guide_params: evaluate ``log q`` with the guide's parameters
        detached (the doubly reparameterised estimator); only for reparameterised sites.
    :param bool particles: whether the traces carry the particle plate (K > 1);
        without it (K = 1) the weights still come out ``(1, B)`` or ``(1, 1)``.
    :raises ValueError: a model latent the guide neither samples nor enumerates, enumerated
        sites in different plates (or sharing a dim, or with different scales), a guide
        site that cannot be reparameterised under ``detach_guide_params``, undeclared batch
        dims, or (K > 1) a site whose log-density has a dim left of the particle dim (the
        site, the shape found and the shape expected are named).
    """
    model_sites, guide_sites = _sample_sites(model_trace), _sample_sites(guide_trace)
    sites = model_sites + guide_sites
    enumerated = _enumerated_dims(model_sites, {s["name"] for s in guide_sites})
    enum_dims = set(enumerated.values())
    if particles:
        for site in sites:
            _check_particle_shape(site, site["unscaled_log_prob"], num_plates, enum_dims)
    plate = data_plate_name(sites)
    scale = _site_scale(sites) if plate is not None else None
    per_point = scale is not None  # else no common data plate, or per-site scales
    data_dim = next(f.dim for f in sites[0]["cond_indep_stack"] if f.name == plate) \
        if per_point else None
    keep = (-num_plates, data_dim) if per_point else (-num_plates,)
    enum_plates = _enumerated_plates(model_trace, enumerated)

    def masked(site, log_prob, scaled):
        log_prob = scale_and_mask(log_prob, site["scale"] if scaled else 1.0, site["mask"])
        # Without the particle plate (K = 1) its dim must be free too.
        extra = _left_dims(log_prob, -num_plates + (0 if particles else 1), enum_dims)
        if extra and per_point:
            raise ValueError(
                f"site '{site['name']}' has batch shape {tuple(log_prob.shape)} with more "
                f"dims than its {num_plates - (0 if particles else 1)} plates: declare them "
                "as plates or with .to_event()")
        # K = 1, shared path: summed, as Pyro's Trace_ELBO does.
        return log_prob.sum(extra, keepdim=True) if extra else log_prob

    def reduce(site, log_prob, scaled, kept=keep):
        return _reduce(masked(site, log_prob, scaled), num_plates, kept)

    log_p = _log_p(model_sites, reduce, enum_dims, enum_plates, keep, per_point, num_plates)
    log_q, log_q_score, reparam_sites = _log_q(guide_sites, reduce, not per_point, num_plates,
                                               detach_guide_params)
    ref = next((t for t in (log_p, log_q) if isinstance(t, torch.Tensor)), None)
    zero = torch.zeros(1, 1) if ref is None else ref.new_zeros(1, 1)  # empty model or guide
    log_p, log_q = torch.broadcast_tensors(log_p + zero, log_q + zero)
    log_q_score = log_q_score + torch.zeros_like(log_q)
    return LogWeights(log_p, log_q, log_q_score, 1.0 if scale is None else scale, reparam_sites,
                      num_plates, data_dim)


class ImportanceWeightedLoss(ELBO):
    """Base of the K-particle losses: vectorised particles and importance weights.

    Reuses Pyro's :class:`~pyro.infer.elbo.ELBO` machinery (plate-nesting guess,
    the particle plate, ``get_importance_trace``).  As in Pyro, there is no
    particle plate for ``num_particles=1`` (the model sees the shapes it wrote);
    the weights are ``(K, B)`` or ``(K, 1)`` either way (module docstring).

    :param int num_particles: K, the particles per data point.
    :param max_plate_nesting: plates in the model (without the particle plate);
        guessed from one run when left at infinity.
    :raises ValueError: ``num_particles`` < 1.
    """

    detach_guide_params = False

    def __init__(self, num_particles: int = 1, max_plate_nesting=float("inf")):
        super().__init__(num_particles=check_size("num_particles", num_particles), max_plate_nesting=max_plate_nesting,
                         vectorize_particles=True)

    def _guess_max_plate_nesting(self, model, guide, args, kwargs):
        # The guess runs the guide once; restoring the random state keeps the draws of
        # a seeded run identical to Pyro's Trace_ELBO (which does not guess).
        state = get_rng_state()
        try:
            super()._guess_max_plate_nesting(model, guide, args, kwargs)
        finally:
            set_rng_state(state)

    def _get_trace(self, model, guide, args, kwargs):
        # Model sites marked for parallel enumeration that the guide does not sample are
        # enumerated left of every plate (and of the particle dim, also where K = 1 leaves
        # it virtual), as TraceEnum_ELBO does; the weights sum them out.
        first = -1 - self.max_plate_nesting - (0 if self.num_particles > 1 else 1)
        return get_importance_trace("flat", self.max_plate_nesting,
                                    EnumMessenger(first_available_dim=first)(model), guide, args,
                                    kwargs)

    def traces(self, model, guide, *args, **kwargs) -> tuple:
        """``(model_trace, guide_trace)`` of K particles drawn in one vectorised pass, the model
        replayed against the guide (enumerated sites summed out later), log-densities
        computed: what :meth:`log_weights` reads."""
        if self.max_plate_nesting == float("inf"):
            self._guess_max_plate_nesting(model, guide, args, kwargs)
        try:
            return self._get_vectorized_trace(model, guide, args, kwargs)
        except ValueError as error:  # Pyro's shape errors do not say that particles are in play
            if self.num_particles == 1:
                raise
            raise ValueError(
                f"with K={self.num_particles} vectorised particles (a plate left of the model's "
                f"plates): {error}\nA pair that runs with one particle but not with K likely "
                "indexes or reshapes a latent from the left (locs[assignment], z[0], z[:, i]); "
                "index from the right (Vindex(locs)[..., assignment], z[..., i]) so that the "
                "particle dim broadcasts") from error

    def log_weights(self, model, guide, *args, **kwargs) -> LogWeights:
        """Draw K particles for each data point of ``args`` and return their :class:`LogWeights`."""
        return self.log_weights_of(*self.traces(model, guide, *args, **kwargs))

    def log_weights_of(self, model_trace, guide_trace) -> LogWeights:
        """The :class:`LogWeights` of traces drawn by :meth:`traces`, for a caller that reads
        the traces too (:mod:`pyro_lvm.evaluate` checks the pair's masks on its first pass)."""
        particles = self.num_particles > 1
        num_plates = self.max_plate_nesting + (0 if particles else 1)
        return log_weights_from_traces(model_trace, guide_trace, num_plates,
                                       self.detach_guide_params, particles)

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
        """Backpropagate the estimator (skipped, as in Pyro, when nothing in the model or
        guide is trainable); returns the loss as a 0-dim tensor, not Pyro's float, so a
        training loop on a GPU need not wait for the device (``float()`` it to print)."""
        loss, surrogate = self.surrogate(self.log_weights(model, guide, *args, **kwargs))
        if surrogate.requires_grad:
            surrogate.backward(retain_graph=self.retain_graph)
        return loss.detach()


def log_weights_at(values: dict, model, guide, *args, num_particles: int,
                   max_plate_nesting, **kwargs) -> LogWeights:
    """:class:`LogWeights` at given latent values instead of guide draws: the guide's
    sample sites take ``values`` (``_Given``), so ``log_q`` is ``log q(z | x)`` and
    ``log_p`` is ``log p(x, z)`` at ``z = values``, reduced per point exactly as
    :meth:`ImportanceWeightedLoss.log_weights` reduces them.

    For samplers that move the latents themselves (:mod:`pyro_lvm.ais`); the
    densities are differentiable in ``values``.

    :param dict values: ``{site name: tensor}`` for every latent site of the guide, shaped
        as the guide samples it with ``num_particles`` particles (``(K, B, ...)`` for K > 1,
        the particle plate leftmost; the shapes the user's code wrote for K = 1).
    :param int num_particles: K, the size of the particle plate the values carry.
    :param max_plate_nesting: the model's plates without the particle plate.
    :raises ValueError: as :func:`log_weights_from_traces`.
    """
    estimator = ImportanceWeightedLoss(num_particles, max_plate_nesting=max_plate_nesting)
    return estimator.log_weights(model, _Given(values)(guide), *args, **kwargs)


class _Given(Messenger):
    """Sample sites named in ``values`` take those values and stay latent.  Pyro has no
    handler for this: ``poutine.condition`` marks them observed (the model's replay then
    refuses them), and ``poutine.replay`` marks them done, so the particle plate outside
    no longer broadcasts their distributions (Pyro's shape validation then fails)."""

    def __init__(self, values: dict):
        super().__init__()
        self.values = values

    def _pyro_sample(self, msg):
        if msg["name"] in self.values:  # a value that is not None is kept, not sampled
            msg["value"] = self.values[msg["name"]]
