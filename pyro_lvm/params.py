"""Who owns a parameter: the one place the library's design for Pyro's param store is stated.

Pyro keys parameters by name in one process-wide store.  ``pyro.module(name, m)`` puts a
module's tensors there under ``name$$$...`` (and, with ``update_module_params=True``,
*replaces* the module's tensors by stored ones of that name); a bare ``pyro.param(name,
init)`` (the style of Pyro's tutorials) lives only there, initialised on first use.  Two
pairs sharing a name therefore share, or take, each other's values silently, and any
code that clears or writes the store destroys another pair's training.  Pyro's
``PyroModule`` avoids the store but would change every model's class; the library keeps
Pyro's store and follows these rules:

* **A module's parameters belong to the module.**  Its tensors are the truth; the store
  only points at them.  :func:`unique_name` gives each instance its own name (``vae_0``,
  ``vae_1``, ...) and :func:`register` (``pyro.module`` with a shape check) refuses a
  stored tensor of another shape under that name instead of taking it.
* **A bare ``pyro.param`` belongs to the store**, under its name, as in Pyro: it keeps its
  trained value there until someone removes it (``pyro.clear_param_store()``).
* **Training touches only the pair trained.**  :func:`~pyro_lvm.train.fit` traces the pair
  once and :func:`take_ownership` removes from the store only that pair's module entries
  (so the modules' own tensors are registered, never a stale tensor of the same name) and
  the baselines of its guide sites (loss state, like the optimizer's); its bare parameters
  continue from their stored values, as with Pyro's ``SVI`` (clear the store to start them
  afresh).  Every other pair's parameters stay as they were, and checkpoints hold only the
  run's own.
* **Everything else reads and leaves the store as it found it.**  ``evaluate``,
  ``diagnostics``, ``compare_losses``, ``imputation`` and every ``testing`` assertion run
  on a store of their own (:func:`isolated_param_store`): modules read from the modules,
  bare parameters carried in (copied where the block takes gradients or trains, so the
  caller's values never change), baselines left out, and nothing registered inside
  stays behind; a result never depends on what ran before it.
* **Scoring an untrained bare parameter is said.**  A bare parameter the store does not
  hold is initialised inside the block; ``evaluate`` then warns, naming it, since its
  estimate is at the initial value and not at a trained one.  A ``PyroModule`` (an
  autoguide) holds its own values and brings them in itself, after
  ``pyro.clear_param_store()`` or a ``torch.load`` too: those are not named.
* :func:`traced_params`: which parameters a model and a guide register, read by running
  them once (for resume checks, gradient statistics and per-group comparisons).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from contextlib import contextmanager

import torch
from torch import nn
from torch.distributions import constraints

import pyro
from pyro import poutine
from pyro.params.param_store import _MODULE_NAMESPACE_DIVIDER, param_with_module_name

__all__ = ["IsolatedStore", "isolated_param_store", "register", "take_ownership", "traced_params",
           "unique_name"]

_counters: dict = defaultdict(itertools.count)


def unique_name(prefix: str, name: str | None = None) -> str:
    """``name`` when given (the caller then answers for its uniqueness), else
    ``f"{prefix}_{i}"`` with ``i`` counting the instances of ``prefix`` made in this
    process.  Instances are numbered in creation order, so a script that builds its
    models in the same order finds the names of its checkpoint again (``--resume``).

    :raises ValueError: ``name`` not a non-empty string or holding Pyro's ``$$$``.
    """
    if name is None:
        return f"{prefix}_{next(_counters[prefix])}"
    if not isinstance(name, str) or not name or _MODULE_NAMESPACE_DIVIDER in name:
        raise ValueError(f"name must be a non-empty string without {_MODULE_NAMESPACE_DIVIDER!r}, "
                         f"got {name!r}")
    return name


def register(name: str, module: nn.Module) -> nn.Module:
    """What ``pyro.module(name, module, update_module_params=True)`` does (each trainable
    parameter becomes the ``pyro.param`` site ``name$$$<param name>``, and the module takes
    what the store holds under that name), refusing a stored tensor whose shape differs
    from the module's (another model's, or one left by a run with another architecture).
    One loop in place of ``pyro.module``'s: the check costs no extra pass over the
    parameters and no device sync, so it runs at every step.

    :raises ValueError: naming the stored parameter, its shape and the module's; the
        module is then left as it was.
    """
    taken = {}
    for param_name, p in module.named_parameters():
        if not p.requires_grad:  # as pyro.module: frozen parameters are not trained
            continue
        full = param_with_module_name(name, param_name)
        stored = pyro.param(full, p)  # registers p, or returns the store's tensor of that name
        if stored is not p:
            if stored.shape != p.shape:
                raise ValueError(
                    f"Pyro's param store holds {full!r} of shape {tuple(stored.shape)} but the "
                    f"module registering under {name!r} has shape {tuple(p.shape)}: a stale or "
                    "foreign parameter (another model's, or an old run's). Give each model its "
                    "own name, or pyro.clear_param_store() first.")
            taken[param_name] = stored
    for param_name, stored in taken.items():  # only once every shape is known to agree
        owner, _, leaf = param_name.rpartition(".")
        (module.get_submodule(owner) if owner else module)._parameters[leaf] = stored
    return module


#: Prefix of the decaying-average baselines Pyro's TraceGraph_ELBO keeps in the store.
BASELINE_PREFIX = "__baseline"


def _is_bare(name: str) -> bool:
    return _MODULE_NAMESPACE_DIVIDER not in name and not name.startswith(BASELINE_PREFIX)


class IsolatedStore:
    """What :func:`isolated_param_store` yields; after the block, ``initialised`` lists the
    bare parameters the block created from their initial values in the code (the store held
    no value for them, and no ``PyroModule`` brought one of its own)."""

    def __init__(self, carried):
        self.carried, self.initialised = carried, []


@contextmanager
def isolated_param_store(copy: bool = False):
    """Run the block on a param store of its own (Pyro's ``ParamStoreDict.scope``), so
    module parameters are read from the modules, never taken from the global store by
    name, and nothing the block registers stays behind.  Bare ``pyro.param`` sites
    (names without ``$$$``) have no module to live in: they are carried in, as the same
    tensors or, with ``copy``, as copies (for blocks that take gradients or train).
    TraceGraph baselines are not carried: they belong to one loss run.

    :returns: (as the ``with`` target) an :class:`IsolatedStore`.
    """
    store = pyro.get_param_store()
    state = store.get_state()
    params = {k: v for k, v in state["params"].items() if _is_bare(k)}
    if copy:
        params = {k: v.detach().clone().requires_grad_(v.requires_grad) for k, v in params.items()}
    bare = {"params": params,
            "constraints": {k: v for k, v in state["constraints"].items() if k in params}}
    scope = IsolatedStore(frozenset(params))
    created, previous = [], store.__dict__.get("setdefault")
    store.setdefault = _recording(store.setdefault, store, created)
    with store.scope(bare):
        try:
            yield scope
        finally:
            if previous is None:
                del store.setdefault
            else:
                store.setdefault = previous
            scope.initialised = sorted({k for k in created if _is_bare(k) and k not in params})


def _recording(setdefault, store, created):
    """``store.setdefault`` noting the names it creates from an initial value.  Pyro's store
    keeps no record of how a name entered it: a ``PyroModule`` (e.g. an autoguide) that holds
    trained values writes its own tensors in directly, and only ``pyro.param(name, init)``
    of a missing name passes through ``ParamStoreDict.setdefault``."""

    def recording(name, init_constrained_value, constraint=constraints.real):
        if name not in store:
            created.append(name)
        return setdefault(name, init_constrained_value, constraint)

    return recording


def take_ownership(names, guide_sites) -> frozenset:
    """Before training a pair: remove from the global store its module entries among
    ``names`` (the modules' own tensors are then registered) and the TraceGraph baselines
    of its ``guide_sites``; leave its bare parameters and every other pair's.

    :returns: the names of the parameters left that are not the pair's (the run must not
        save or check them).
    """
    store = pyro.get_param_store()
    baselines = {f"{BASELINE_PREFIX}_avg_downstream_cost_{site}" for site in guide_sites}
    for name in list(store.keys()):
        if name in names and not _is_bare(name) or name in baselines:
            del store[name]
    return frozenset(store.keys()) - set(names)


def traced_params(model, guide, *args, **kwargs) -> dict:
    """The ``pyro.param`` sites each of ``guide`` and ``model`` registers when called on
    ``(*args, **kwargs)``: ``{"guide": {name: tensor}, "model": {name: tensor}}`` (constrained
    values), a parameter both touch counted as the guide's.  Runs both once without
    gradients, outside every handler of the caller, sampling from the guide and the
    model's prior (the model is not replayed).  As the first registration of a module in
    the store, this also loads what the store holds under its name into the module.
    """
    with poutine.block(), torch.no_grad():
        guide_trace = poutine.trace(guide, param_only=True).get_trace(*args, **kwargs)
        model_trace = poutine.trace(model, param_only=True).get_trace(*args, **kwargs)
    guide_params = {name: site["value"] for name, site in guide_trace.nodes.items()
                    if site["type"] == "param"}
    model_params = {name: site["value"] for name, site in model_trace.nodes.items()
                    if site["type"] == "param" and name not in guide_params}
    return {"guide": guide_params, "model": model_params}
