"""Losses for SVI, by name: ``make_loss(name, num_particles=1, **options)``.

==============  ===========================================  =====================  ==============
name            estimator                                    value                  guide needs
==============  ===========================================  =====================  ==============
``elbo``        Pyro ``Trace_ELBO``: reparameterised, score  ELBO (bound)           any
                function for discrete sites
``meanfield``   Pyro ``TraceMeanField_ELBO``: analytic KL    ELBO (bound)           reparameterisable;
                where known                                                         same plates as
                                                                                    the model
``tracegraph``  Pyro ``TraceGraph_ELBO``: score function     ELBO (bound)           any
                with baselines (:class:`TraceGraph`)
``enum``        Pyro ``TraceEnum_ELBO``: discrete sites      exact marginal of      enumerable
                marked for enumeration summed out exactly    enumerated sites       discrete sites
``iwae``        :class:`IWAE` (Burda et al. 2016)            IWAE_K (bound)         any
``dreg``        :class:`DReG` (Tucker et al. 2019)           IWAE_K (bound)         reparameterisable
``vimco``       :class:`VIMCO` (Mnih & Rezende 2016)         IWAE_K (bound)         any; K >= 2
==============  ===========================================  =====================  ==============

Refusals by design (each raises a ``ValueError``/``NotImplementedError`` naming the site):
``dreg`` needs every guide site reparameterisable (its estimator differentiates through
the draws; a score-function site would need the plain IWAE gradient instead);
``meanfield`` is Pyro's ``TraceMeanField_ELBO``, which raises "All distributions in the
guide must be fully reparameterized" (not forced by the mathematics: a score-function
term for such sites, as ``elbo`` has, would lift it); with K > 1 every sample carries the
particle dim (see :mod:`pyro_lvm.infer.importance`, "Shapes"), so code asserting exact
sample shapes, or a local ``pyro.param`` with batch dims left of its plate, fails as it
does with Pyro's own vectorised particles.

Every returned object has Pyro's ELBO interface (``loss``, ``loss_and_grads``,
``differentiable_loss``) and can be given to ``pyro.infer.SVI`` or
:func:`pyro_lvm.train.fit`.  Values are negative bounds in nats for the whole
data set (the data plate's subsample scale applied).
"""

from __future__ import annotations

from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO

from ..checks import check_callable, check_size
from .importance import ImportanceWeightedLoss, LogWeights, log_mean_exp
from .losses import DReG, IWAE, TraceGraph, VIMCO, score_function_guide

__all__ = ["LOSSES", "make_loss", "resolve_loss", "IWAE", "DReG", "VIMCO", "TraceGraph",
           "ImportanceWeightedLoss", "LogWeights", "log_mean_exp", "score_function_guide"]


def _vectorized(cls):
    def build(num_particles=1, **options):
        return cls(num_particles=num_particles, vectorize_particles=num_particles > 1, **options)
    return build


def _enum(num_particles=1, max_plate_nesting=float("inf"), **options):
    return TraceEnum_ELBO(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                          **options)


LOSSES = {
    "elbo": _vectorized(Trace_ELBO),
    "meanfield": _vectorized(TraceMeanField_ELBO),
    "tracegraph": TraceGraph,
    "enum": _enum,
    "iwae": IWAE,
    "dreg": DReG,
    "vimco": VIMCO,
}


def make_loss(name: str, num_particles: int = 1, **options):
    """Build the loss called ``name`` with ``num_particles`` samples per data point.

    :param str name: one of :data:`LOSSES` (table above).
    :param int num_particles: K; the K-particle losses draw them in one vectorised pass.
    :param options: passed to the loss class (e.g. ``baseline="none"`` for
        ``tracegraph``, ``max_plate_nesting`` for ``enum``).
    :raises ValueError: an unknown name or option, or ``num_particles`` not an integer >= 1.
    """
    if not isinstance(name, str) or name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    num_particles = check_size("num_particles", num_particles)
    try:
        return LOSSES[name](num_particles=num_particles, **options)
    except TypeError as err:  # an option the loss class does not take
        raise ValueError(f"loss {name!r} does not take the options {sorted(options)}: {err}") from err


def resolve_loss(entry, num_particles: int = 1, guide=None, *, name: str = "loss"):
    """``(loss, guide)`` from what a caller may give as a loss: a name (built by
    :func:`make_loss` with ``num_particles``), a loss object (used as it is, with its own
    K), or a ``(loss, guide)`` tuple for an estimator that needs another guide (e.g.
    :func:`score_function_guide` of the same one).

    :param guide: the guide used unless ``entry`` is a tuple.
    :param str name: how messages name ``entry`` (e.g. ``"losses[1]"``).
    :raises ValueError: an unknown name (naming ``name``), a tuple that is not ``(loss, guide)`` with a
        callable guide, or an object without Pyro's ELBO interface (``loss``,
        ``loss_and_grads``).
    """
    if isinstance(entry, tuple):
        if len(entry) != 2:
            raise ValueError(f"{name} must be a loss or a (loss, guide) tuple, got a tuple of "
                             f"{len(entry)}")
        entry, guide = entry[0], check_callable(f"the guide of {name}", entry[1])
    if isinstance(entry, str) and entry not in LOSSES:
        raise ValueError(f"{name} must be one of {sorted(LOSSES)} or a loss object, got {entry!r}")
    if isinstance(entry, str):
        return make_loss(entry, num_particles=num_particles), guide
    if not all(callable(getattr(entry, m, None)) for m in ("loss", "loss_and_grads")):
        raise ValueError(f"{name} must be a loss name (one of {sorted(LOSSES)}) or an ELBO "
                         f"object with loss and loss_and_grads, got {type(entry).__name__}")
    return entry, guide
