"""What every loss needs of a model/guide pair, read from one trace of it.

Mistakes in a user's pair that train and evaluate without a word from Pyro (at most a
warning) and give wrong numbers: a model latent the guide does not sample (every loss then
draws it from the prior inside the model), a latent the guide scores on elements where the
model observes it (``log q`` and ``log p`` count different elements), and a data plate that
ignores ``num_data`` (the minibatch loss is then not an estimate of the full-data one).
:func:`~pyro_lvm.train.fit` calls these checks once at its door, on one trace of its first
batch; :mod:`pyro_lvm.evaluate` calls :func:`mask_problems` once per call, on the trace of its
first pass; :func:`pyro_lvm.testing.check_pair` lists them with its other findings.

* :func:`trace_pair`: the guide's trace and the model's replayed against it.
* :func:`missing_latents`: model latents the guide neither samples nor (with a loss that
  enumerates) sums out.
* :func:`mask_problems`: a latent scored by the guide on elements where the model masks it
  out (there it is observed, e.g. by ``obs_mask``: the M2 label of a labelled row), or the
  other way round.
* :func:`scale_problems`: with ``num_data = N`` and a batch of ``B < N`` rows, every site in
  the data plate must carry the scale ``N / B`` (times the factors of other subsampled
  plates), in the model and in the guide.
* :func:`per_row_param_problems`: with a batch of ``B < N`` rows, a guide parameter holding
  one entry per data row (a bare ``pyro.param`` of N rows, an ``AutoNormal`` over local
  latents): the rows reach the pair without their indices, so the plate's subsample indices
  (positions in the batch, or a draw of the plate's own) pick entries of other rows.
"""

from __future__ import annotations

import math

import torch

from pyro import poutine
from pyro.poutine.util import site_is_subsample

from .importance import PARTICLE_PLATE

__all__ = ["mask_problems", "missing_latents", "per_row_param_problems", "scale_problems",
           "trace_pair"]


def trace_pair(model, guide, *args, **kwargs) -> tuple:
    """``(model_trace, guide_trace)``: the guide run once and the model replayed against it,
    without gradients and hidden from the caller's handlers."""
    with poutine.block(), torch.no_grad():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs)
    return model_trace, guide_trace


def _sample_sites(trace):
    return [s for s in trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s)]


def missing_latents(model_trace, guide_trace, enumerates: bool) -> list:
    """One line per model latent the guide does not sample, unless it is marked for
    parallel enumeration and ``enumerates`` (the loss sums such sites out: ``enum``, and
    the importance-weighted losses for sites in the data plate)."""
    guide_names = {s["name"] for s in _sample_sites(guide_trace)}
    problems = []
    for site in _sample_sites(model_trace):
        if site["is_observed"] or site["name"] in guide_names:
            continue
        marked = site["infer"].get("enumerate")
        if marked == "parallel" and enumerates:
            continue
        if marked:
            problems.append(
                f"model latent '{site['name']}' is marked enumerate={marked!r} but the loss does "
                "not sum it out (Trace_ELBO, TraceGraph_ELBO and TraceMeanField_ELBO draw it from "
                "the prior): use loss='enum' (or 'iwae', 'dreg', 'vimco' for 'parallel'), or "
                "sample it in the guide")
        else:
            problems.append(
                f"model latent '{site['name']}' is not sampled by the guide: every loss would "
                "draw it from the prior inside the model (Pyro only warns); sample it in the "
                "guide under the same name, or mark it infer={'enumerate': 'parallel'} for an "
                "enumerating loss")
    return problems


def _mask(site) -> torch.Tensor:
    """The elements of a site that count, ``site["fn"].batch_shape``: its ``poutine.mask``
    and a masked distribution's (``.mask(...)``, ``obs_mask``)."""
    mask = torch.ones(site["fn"].batch_shape, dtype=torch.bool, device=site["value"].device)
    for m in (site["mask"], getattr(site["fn"], "_mask", None)):
        if m is not None:
            mask = mask & torch.as_tensor(m, dtype=torch.bool, device=mask.device)
    return mask


def _is_masked(site) -> bool:
    return site["mask"] is not None or hasattr(site["fn"], "_mask")


def _per_element(wrong: torch.Tensor, site) -> torch.Tensor:
    """``wrong`` without the particle dim (an element is wrong when it is for any particle),
    so that counts are of data elements at any K."""
    dims = [f.dim for f in site["cond_indep_stack"] if f.name == PARTICLE_PLATE]
    return wrong.any(dims[0]) if dims and -dims[0] <= wrong.dim() else wrong


def mask_problems(model_trace, guide_trace) -> list:
    """One line per latent that the guide scores on elements where the model masks it out
    (there it is observed, e.g. by ``obs_mask``, which masks the model's ``name_unobserved``
    site to the unobserved elements), or the model where the guide masks it out: ``log q`` and
    ``log p`` then count different elements, and every bound is off (too high in the first
    case: an M2 guide that samples the label on every row while the model observes it on the
    labelled rows).  Traces of one particle or of K vectorised ones (counted once per element);
    sites whose shapes disagree are left to Pyro's ``check_model_guide_match``."""
    problems = []
    for name, site in guide_trace.nodes.items():
        model_site = model_trace.nodes.get(name)
        if site["type"] != "sample" or site_is_subsample(site) or model_site is None or \
                model_site["is_observed"] or not (_is_masked(site) or _is_masked(model_site)):
            continue
        try:
            q, p = torch.broadcast_tensors(_mask(site), _mask(model_site))
        except RuntimeError:
            continue
        for wrong, where, other in ((q & ~p, "guide", "model"), (p & ~q, "model", "guide")):
            count = int(_per_element(wrong, site).sum())
            if count:
                problems.append(
                    f"site '{name}' is scored by the {where} on {count} element(s) where the "
                    f"{other} masks it out (there it is observed, e.g. by obs_mask): log p and "
                    f"log q count different elements, so every bound is wrong; mask the "
                    f"{where}'s site the same way (poutine.mask(mask=...) or .mask(...))")
    return problems


def _scale(site):
    scale = site["scale"]
    if isinstance(scale, torch.Tensor):
        return float(scale) if scale.numel() == 1 else None
    return float(scale)


def scale_problems(model_trace, guide_trace, batch: int, num_data: int) -> list:
    """One line per site of the data plate whose scale is not ``num_data / batch``.

    The data plate is found by its size: the vectorised plates of ``batch`` rows that hold
    the model's observed sites.  A site in it must carry ``num_data / batch`` times the
    factors ``full_size / size`` of its other subsampled plates (Pyro's plate scales by its
    own factor; ``poutine.scale`` by the same amount is as good).  Traces of a batch of
    ``batch < num_data`` rows called with ``num_data``."""
    rows = {f.name for s in _sample_sites(model_trace) if s["is_observed"]
            for f in s["cond_indep_stack"]
            if f.vectorized and f.name != PARTICLE_PLATE and f.size == batch}
    problems = []
    for who, trace in (("model", model_trace), ("guide", guide_trace)):
        for site in _sample_sites(trace):
            frames = site["cond_indep_stack"]
            if not any(f.vectorized and f.name in rows for f in frames):
                continue
            expected = num_data / batch * math.prod(
                f.full_size / f.size for f in frames
                if f.name not in rows and f.full_size and f.full_size != f.size)
            scale = _scale(site)
            if scale is None or math.isclose(scale, expected, rel_tol=1e-6):
                continue
            plate = next(f for f in frames if f.name in rows)
            cause = ("ignores num_data" if math.isclose(scale, 1.0) else
                     "scales it twice (a subsampled plate and poutine.scale?)"
                     if math.isclose(scale, expected ** 2, rel_tol=1e-6) else "scales it otherwise")
            problems.append(
                f"{who} site '{site['name']}' carries scale {scale:.6g} on a batch of {batch} rows "
                f"with num_data={num_data}, expected num_data / batch = {expected:.6g}: the "
                f"{who} {cause}; open plate '{plate.name}' as pyro.plate('{plate.name}', "
                "num_data, subsample=rows) (or pyro_lvm.models.common.data_plate(x, num_data)), "
                "so minibatch losses estimate the full-data one")
    return problems


def _row_dims(site, plate_dims) -> list:
    """The dims of a param site's value that would index the data rows: the data plate's dim
    moved left by the ``event_dim`` it was declared with, or (declared without one) the
    plate's dim and every dim left of it."""
    ndim, event_dim = site["value"].dim(), site["kwargs"].get("event_dim")
    dims = {p - event_dim for p in plate_dims} if event_dim is not None else \
        set(range(-ndim, max(plate_dims) + 1))
    return sorted(d for d in dims if -ndim <= d < 0)


def per_row_param_problems(guide_trace, batch: int, num_data: int) -> list:
    """One line per guide parameter with one entry per data row, on a trace of ``batch < num_data``
    rows called with ``num_data``.

    The data plate is the guide's vectorised plate of ``batch`` of ``num_data`` rows; a
    parameter is per-row when a dim that would index that plate (its dim, moved left by the
    parameter's ``event_dim``; any dim from there leftwards when none is declared) has
    ``num_data`` entries.  Module parameters (``name$$$...``) are left out: a module's
    tensors are weights shared by all rows (the library's per-row guides check their rows
    themselves).  :func:`~pyro_lvm.train.fit` passes a batch's rows without their indices,
    so such a parameter would be matched to rows by position in the batch (a plate given
    ``subsample=torch.arange(B)``) or by the plate's own random draw (``subsample_size``, as
    an autoguide builds it), never by identity."""
    plate_dims = {f.dim for s in _sample_sites(guide_trace) for f in s["cond_indep_stack"]
                  if f.vectorized and f.name != PARTICLE_PLATE and f.dim is not None
                  and f.size == batch and f.full_size == num_data}
    if not plate_dims:
        return []
    problems = []
    for name, site in guide_trace.nodes.items():
        if site["type"] != "param" or "$$$" in name:
            continue
        shape = tuple(site["value"].shape)
        dims = [d for d in _row_dims(site, plate_dims) if shape[d] == num_data]
        if dims:
            problems.append(
                f"guide parameter '{name}' {shape} holds one entry per data row (dim {dims[0]} "
                f"has num_data = {num_data} entries), but batches of {batch} rows reach the pair "
                "without their row indices, so its entries would be matched to rows by position "
                "in the batch (or by the plate's own random draw), not by identity: train with "
                f"batch_size >= {num_data} (every step then sees all rows in their order)")
    return problems
