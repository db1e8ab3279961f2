"""Who owns a parameter: one name per module instance in Pyro's global param store.

Pyro keys parameters by name in one process-wide store, and ``pyro.module(name, m,
update_module_params=True)`` *replaces* the module's tensors by the stored ones of
that name.  Two instances sharing a name therefore share (or take) each other's
weights silently.  Pyro's ``PyroModule`` avoids the store but would change every
model's class; the library keeps ``pyro.module`` and adds what it lacks:

* :func:`unique_name`: a name per instance (``vae_0``, ``vae_1``, ...);
* :func:`register`: ``pyro.module`` after a shape check against what the store holds
  under that name, so a stale or foreign parameter raises instead of being taken;
* :func:`isolated_param_store`: evaluation runs on a store of its own, so it reads
  the modules' parameters and leaves the training store as it was;
* :func:`traced_params`: which parameters a model and a guide register, read by running
  them once (for resume checks, gradient statistics and per-group comparisons).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from contextlib import contextmanager

import torch
from torch import nn

import pyro
from pyro import poutine
from pyro.params.param_store import _MODULE_NAMESPACE_DIVIDER, param_with_module_name

__all__ = ["isolated_param_store", "register", "traced_params", "unique_name"]

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


@contextmanager
def isolated_param_store():
    """Run the block on a param store of its own (Pyro's ``ParamStoreDict.scope``), so
    module parameters are read from the modules, never taken from the global store by
    name, and nothing the block registers stays behind.  Bare ``pyro.param`` sites
    (names without ``$$$``) have no module to live in: they are carried in."""
    store = pyro.get_param_store()
    state = store.get_state()
    bare = {"params": {k: v for k, v in state["params"].items() if _MODULE_NAMESPACE_DIVIDER not in k},
            "constraints": {k: v for k, v in state["constraints"].items()
                            if _MODULE_NAMESPACE_DIVIDER not in k}}
    with store.scope(bare):
        yield


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
