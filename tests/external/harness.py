"""Run one case of :mod:`cases` with one loss of ``make_loss``: passed / refused / wrong.

* A valid case (Pyro's ``Trace_ELBO`` trains it) **passes** when one SVI step runs, the
  loss's ``loss``, ``differentiable_loss`` and ``loss_and_grads`` agree under one seed
  (Pyro's ``assert_ok``), estimators of the ELBO at K = 1 give Pyro's ``Trace_ELBO``
  value for the same draws (``iwae``/``dreg`` also its gradient when every guide site
  is reparameterised), ``vimco`` (K = 2) gives Pyro's ``RenyiELBO(alpha=0)`` value
  where every site is shared by the batch, and the case's closed-form check holds.
  It is **refused** when the loss raises an error listed in :data:`REFUSALS` (and
  stated in the loss's docstring), and **wrong** otherwise.
* An invalid case passes when every step raises (Pyro's suite turns warnings into
  errors, so a warning counts), and is wrong when it runs.
"""

from __future__ import annotations

import math
import re
import warnings

import torch

import pyro
from pyro.infer import SVI, RenyiELBO, Trace_ELBO
from pyro.optim import Adam

from pyro_lvm import infer
from pyro_lvm.infer import DReG, make_loss

LOSS_NAMES = ("elbo", "meanfield", "tracegraph", "enum", "iwae", "dreg", "vimco")
#: K of each loss in these runs (vimco needs two particles for its baselines).
NUM_PARTICLES = {"vimco": 2}

_SHAPES = (AssertionError, "", infer, "code asserting exact sample shapes")
_PARTICLE_PARAM = (ValueError, r"num_particles_vectorized.*invalid shape of pyro.param", infer,
                   "a local ``pyro.param`` with batch dims left of its plate")
#: Refusals by design: loss -> [(error type, message pattern, object whose docstring
#: states the refusal, the phrase stating it)].
REFUSALS = {
    "dreg": [(ValueError, r"not reparameterisable", DReG, "Needs every guide site reparameterisable")],
    "meanfield": [(NotImplementedError, "must be fully reparameterized", infer,
                   "All distributions in the guide must be fully reparameterized")],
    "vimco": [_SHAPES, _PARTICLE_PARAM],
}


def _refusal_documented(name, error):
    for kind, pattern, where, phrase in REFUSALS.get(name, ()):
        if isinstance(error, kind) and re.search(pattern, str(error)):
            return phrase in " ".join(where.__doc__.split())  # undocumented: wrong
    return False


def _close(a, b, tol=1e-4):
    a, b = float(a), float(b)
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol * (1 + abs(b))


def _grads(value):
    params = [p.unconstrained() for n, p in pyro.get_param_store().items()
              if not n.startswith("__baseline")]
    if not params or not value.requires_grad:
        return torch.zeros(0)
    parts = torch.autograd.grad(value, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, parts)])


def _seeded(fn, seed=0):
    pyro.set_rng_seed(seed)
    return fn()


def _consistent(name, case, loss):
    """Pyro's assert_ok, then agreement with Pyro's own estimators for the same draws."""
    m, g, a = case.model, case.guide, case.args
    value = _seeded(lambda: loss.loss(m, g, *a))
    try:
        differentiable = _seeded(lambda: loss.differentiable_loss(m, g, *a))
    except ValueError:  # as Pyro's assert_ok: TraceEnum_ELBO's value without parameters
        differentiable = value
    stepped = _seeded(lambda: loss.loss_and_grads(m, g, *a))
    for label, other in (("differentiable_loss", differentiable), ("loss_and_grads", stepped)):
        assert _close(other, value, 1e-3), f"{label} {float(other)} != loss {value}"
    k = NUM_PARTICLES.get(name, 1)
    if k == 1 and name != "meanfield":  # meanfield uses analytic KLs: another estimate
        reference = Trace_ELBO()
        expected = _seeded(lambda: reference.loss(m, g, *a))
        assert _close(value, expected), f"value {value} != Trace_ELBO {expected}"
        guide_trace = pyro.poutine.trace(g).get_trace(*a)
        reparam = all(s["fn"].has_rsample for s in guide_trace.nodes.values()
                      if s["type"] == "sample" and not s["is_observed"])
        if name == "iwae" and reparam:  # dreg's K=1 gradient drops a zero-mean term
            ours = _grads(_seeded(lambda: loss.differentiable_loss(m, g, *a)))
            theirs = _grads(_seeded(lambda: reference.differentiable_loss(m, g, *a)))
            assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-6), f"gradient {ours} != Trace_ELBO {theirs}"
    if name == "vimco":
        weights = _seeded(lambda: loss.log_weights(m, g, *a))
        subsampled = any(s["type"] == "sample" and type(s["fn"]).__name__ == "_Subsample"
                         for s in pyro.poutine.trace(g).get_trace(*a).nodes.values())
        sites = any(s["type"] == "sample" for s in pyro.poutine.trace(g).get_trace(*a).nodes.values())
        if weights.data_dim is None and not subsampled and sites:  # RenyiELBO needs a guide site
            renyi = RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True,
                              max_plate_nesting=loss.max_plate_nesting - 1)
            expected = _seeded(lambda: renyi.loss(m, g, *a))
            assert _close(value, expected), f"value {value} != RenyiELBO(alpha=0) {expected}"


def run(case, name) -> tuple[str, str]:
    """``(outcome, detail)`` of loss ``name`` on ``case``."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    loss = make_loss(name, num_particles=NUM_PARTICLES.get(name, 1))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error" if not case.valid else "ignore")
            SVI(case.model, case.guide, Adam({"lr": 1e-6}), loss).step(*case.args)
            if not case.valid:  # some invalid pairs fail only on the second trace
                loss.loss(case.model, case.guide, *case.args)
    except (ValueError, NotImplementedError, RuntimeError, KeyError, UserWarning, AssertionError) as error:
        detail = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        if not case.valid:
            return "passed", "refused as Pyro does: " + detail
        return ("refused" if _refusal_documented(name, error) else "wrong"), detail
    except Exception as error:  # a crash with an unclear error is a bug too
        return "wrong", f"{type(error).__name__}: {error}"
    if not case.valid:
        return "wrong", "ran although Pyro's Trace_ELBO refuses this pair"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _consistent(name, case, loss)
            if case.check is not None:
                pyro.clear_param_store()
                case.check(name, case)
    except AssertionError as error:
        return "wrong", str(error)
    except Exception as error:
        return "wrong", f"{type(error).__name__}: {error}"
    return "passed", ""
