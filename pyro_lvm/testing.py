"""Assertions for a user's own tests of a model/guide pair, in the style of ``numpy.testing``.

* :func:`check_pair`: the structure the estimators need, found by tracing the pair,
  before any training (Pyro's ``check_model_guide_match`` and ``check_site_shape``
  plus what they do not check: supports, masks, a data plate and its scale, local
  parameters, particles that mix at K > 1).
* :func:`assert_bounds_ordered`: ELBO <= IWAE_K1 <= IWAE_K2 <= log p(x)
  (Burda, Grosse & Salakhutdinov 2016, Theorem 1), each within Monte Carlo error.
* :func:`assert_gradients_agree`: two estimators of the same objective's gradient
  have the same expectation (reparameterised vs score function, ``iwae`` vs
  ``dreg``, ``iwae`` K=1 vs ``elbo``).
* :func:`assert_unbiased`: a loss's value and gradient against closed forms.
* :func:`gradient_draws`: independent draws of a loss's value and gradient, as SVI takes
  them (what the assertions compare; :func:`pyro_lvm.compare.compare_losses` reads its
  gradient variance and SNR from them too).

Each Monte Carlo assertion draws ``num_draws`` independent estimates from a
seeded start (``seed``), compares means by their standard errors (sample
standard deviation / sqrt(draws)) with a two-sided Student-t test, and splits the
false-alarm rate ``false_alarm`` over all the comparisons it makes (Bonferroni),
so a correct estimator fails with probability at most ``false_alarm`` per call.
Every tolerance also allows ``1e-5`` relative for float32 rounding, which is
all that is left for quantities without spread (deterministic).  Failures raise ``AssertionError`` listing the
estimates, their standard errors, and the tolerance used.

Every function runs on a param store of its own (:func:`pyro_lvm.params.isolated_param_store`,
copies of the bare ``pyro.param`` sites, the modules' own tensors) and each estimator's draws
on one of their own, so no result depends on what ran before (a module registered under a
name another one used, a TraceGraph baseline of another K) and the caller's store is left as
it was.

Every function checks its arguments at its door (model, guide, the data as
:func:`~pyro_lvm.checks.check_model_data` takes them, counts, ``seed``, ``false_alarm``,
losses, closed forms) and raises ``ValueError`` naming the bad one before any draw.

Losses are given as :func:`pyro_lvm.infer.resolve_loss` takes them: by name (built with
``num_particles``), as a loss object, or as a ``(loss, guide)`` tuple when one
estimator needs another guide (e.g. :func:`~pyro_lvm.infer.score_function_guide`).
Values are in nats for the whole data set, as the losses return them.  Pyro's
validation (if on) checks the first draw of each estimator; the others run without
it, for speed.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import NamedTuple

import torch
from scipy import stats

import pyro
import pyro.distributions as dist
from pyro import poutine
from pyro.poutine.enum_messenger import EnumMessenger
from pyro.infer.util import is_validation_enabled
from pyro.poutine.util import prune_subsample_sites, site_is_subsample
from pyro.util import check_model_guide_match, check_site_shape

from .checks import check_callable, check_model_data, check_positive, check_size, checked_values
from .infer import IWAE, resolve_loss
from .infer.importance import data_plate_name, log_weights_from_traces, plates_by_site
from .infer.structure import mask_problems, scale_problems, trace_pair
from .params import isolated_param_store, traced_params

__all__ = ["check_pair", "assert_bounds_ordered", "assert_gradients_agree", "assert_unbiased",
           "gradient_draws", "GradientDraws"]

#: Relative tolerance added to every comparison for float32 rounding (sums of log-densities).
ROUNDING = 1e-5


# --------------------------------------------------------------------------- structure


def _check_pair_inputs(model, guide, data: tuple, kwargs: dict) -> tuple:
    """The door every assertion shares: callables that take ``(*data, **kwargs)``, and the
    data as :func:`~pyro_lvm.checks.check_model_data` takes them (values once); a pair may
    take no data at all, as many of Pyro's own test models do."""
    for name, fn in (("model", model), ("guide", guide)):
        check_callable(name, fn)
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):  # a builtin or wrapper without one: Python will tell
            continue
        try:
            signature.bind(*data, **kwargs)
        except TypeError as err:
            raise ValueError(f"{name} cannot be called with the {len(data)} data tensor(s) and "
                             f"keywords {sorted(kwargs)} given: {err}") from err
    return check_model_data(model, data, "data") if data else ()


def _shape_problems(trace, who, nesting=math.inf, enum_dims=frozenset()) -> list:
    """Pyro's ``check_site_shape`` of every sample site of ``trace``, as problem lines; for
    a model traced with enumeration, dims left of the ``nesting`` plates must be the
    enumeration dims."""
    try:
        trace.compute_log_prob()
    except ValueError as error:
        return [f"{who}: {error}"]
    problems = []
    for site in trace.nodes.values():
        if site["type"] != "sample":
            continue
        try:
            check_site_shape(site, max_plate_nesting=nesting)
        except ValueError as error:
            problems.append(f"{who}: {error}")
        left = [d for d in range(-site["log_prob"].dim(), -nesting)
                if site["log_prob"].shape[d] != 1 and d not in enum_dims] if nesting < math.inf else []
        if left:
            problems.append(f"{who}: site '{site['name']}' has log_prob shape "
                            f"{tuple(site['log_prob'].shape)} with dims {left} left of its "
                            f"{nesting} plates that are not enumeration dims: declare them as "
                            "plates or with .to_event()")
    return problems


def _nesting(*traces) -> int:
    """The plates used by the sample sites of ``traces``, as ``max_plate_nesting``."""
    dims = [f.dim for t in traces for site in t.nodes.values() if site["type"] == "sample"
            for f in site["cond_indep_stack"] if f.vectorized]
    return -min(dims) if dims else 0


def _traces(model, guide, data, kwargs) -> tuple:
    """``(model_trace, guide_trace, nesting, enum_dims)``: the guide once and the model replayed
    against it; model latents the guide lacks that are marked for parallel enumeration are
    enumerated (left of the plates), as ``TraceEnum_ELBO`` and the importance weights do."""
    try:
        with checked_values():
            guide_trace = poutine.trace(guide).get_trace(*data, **kwargs)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
                *data, **kwargs)
            nesting = _nesting(model_trace, guide_trace)
            if any(site["type"] == "sample" and not site["is_observed"] and name not in guide_trace
                   and site["infer"].get("enumerate") == "parallel"
                   for name, site in model_trace.nodes.items()):
                enumerated = EnumMessenger(first_available_dim=-1 - nesting)(model)
                model_trace = poutine.trace(poutine.replay(enumerated, trace=guide_trace)).get_trace(
                    *data, **kwargs)
    except Exception as error:  # the user's code failed: report it as the one problem
        raise AssertionError(f"running the guide and model failed: {type(error).__name__}: "
                             f"{error}") from error
    enum_dims = frozenset(site["infer"]["_enumerate_dim"] for site in model_trace.nodes.values()
                          if site["type"] == "sample"
                          and site["infer"].get("_enumerate_dim") is not None)
    return model_trace, guide_trace, nesting, enum_dims


def _match_problems(model_trace, guide_trace, nesting=math.inf) -> list:
    """Pyro's ``check_model_guide_match``, its warnings included, as problem lines (shapes
    compared within ``nesting`` plates when the model enumerates, as ``TraceEnum_ELBO`` does)."""
    problems = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            check_model_guide_match(model_trace, guide_trace, nesting)
        except (ValueError, NotImplementedError) as error:
            problems.append(str(error))
    return problems + [str(w.message) for w in caught]


def _base(fn):
    """``fn`` without its ``Independent``/``Masked``/``Expanded`` wrappers."""
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


def _support_problems(model_trace, guide_trace) -> list:
    """A guide site whose support differs from the model's: its draws may leave the model's
    support.  A point mass (``dist.Delta``, ``AutoDelta``) has the real line as support
    whatever its value; it is a problem only when its value lies outside the model's."""
    problems = []
    for name, site in guide_trace.nodes.items():
        model_site = model_trace.nodes.get(name)
        if site["type"] != "sample" or model_site is None or model_site["is_observed"]:
            continue
        model_fn, guide_fn = model_site["fn"], site["fn"]
        if not (hasattr(model_fn, "support") and hasattr(guide_fn, "support")) or \
                str(model_fn.support) == str(guide_fn.support):
            continue
        if isinstance(_base(guide_fn), dist.Delta):
            if not bool(model_fn.support.check(site["value"]).all()):
                problems.append(f"site '{name}': the guide's point mass lies outside the model's "
                                f"support {model_fn.support}")
            continue
        problems.append(f"site '{name}': the guide's support {guide_fn.support} differs from "
                        f"the model's {model_fn.support}")
    return problems


def _local_param_problems(guide_trace, subsampled) -> list:
    return [f"guide parameter '{name}' {tuple(site['value'].shape)} has a dim of the data "
            f"size {size} but plate '{plate}' takes {batch} rows: declare it local with "
            "pyro.param(..., event_dim=...) inside the plate"
            for plate, (size, batch) in subsampled.items() if batch != size
            for name, site in guide_trace.nodes.items()
            if site["type"] == "param" and size in site["value"].shape]


def _takes_num_data(fn) -> bool:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "num_data" or p.kind == p.VAR_KEYWORD for p in parameters)


def _scale_check(model, guide, data, kwargs, sizes) -> list:
    """The data plate's scale (:func:`~pyro_lvm.infer.structure.scale_problems`) on a batch
    of ``B < N`` rows called with ``num_data = N``, as :func:`~pyro_lvm.train.fit` calls a
    pair that takes ``num_data``: the data given when they are fewer rows than a
    ``num_data`` passed, else their first ``B`` rows (``B`` near N / 2, unlike the size of
    every other plate, ``sizes``).  A guide that needs all rows (local parameters) is left
    out; a model that fails on fewer rows is a problem."""
    n = data[0].shape[0] if data else 0
    num_data = kwargs.get("num_data") or n
    if not data or not (kwargs.get("num_data") or _takes_num_data(model) and _takes_num_data(guide)):
        return []
    if n < num_data:
        batch = n
    else:
        batch = next((b for b in [*range(n // 2, 0, -1), *range(n // 2 + 1, n)] if b not in sizes),
                     None)
        if batch is None:  # one row: no smaller batch
            return []
    rows, keywords = [t[:batch] for t in data], {**kwargs, "num_data": num_data}
    try:
        model_trace, guide_trace = trace_pair(model, guide, *rows, **keywords)
    except Exception:  # a guide holding per-row parameters takes all rows: the model alone
        try:
            model_trace, guide_trace = trace_pair(model, lambda *a, **k: None, *rows, **keywords)
        except Exception as error:
            return [f"the model fails on a batch of {batch} of the {num_data} rows with "
                    f"num_data={num_data} (as fit calls it with batch_size < N): "
                    f"{type(error).__name__}: {error}"]
    return scale_problems(model_trace, guide_trace, batch, num_data)


def _per_particle(trace, num_plates, k) -> dict:
    """``{site: (k,) tensor}``: each site's log-density summed per particle."""
    out = {}
    for site in trace.nodes.values():
        if site["type"] == "sample":
            lp = site["log_prob"]
            if lp.dim() >= num_plates and lp.shape[lp.dim() - num_plates] == k:
                lp = lp.movedim(lp.dim() - num_plates, 0).reshape(k, -1).sum(-1)
            else:  # no particle dim: the same for every particle
                lp = lp.sum().expand(k)
            out[site["name"]] = lp.detach()
    return out


def _replayed_values(guide_trace, single_trace, k, j):
    """A trace holding particle ``j`` of every guide site of the vectorised ``guide_trace``
    in the shape that site has with one particle (``single_trace``), for ``poutine.replay``."""
    replay = poutine.Trace()
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or name not in single_trace.nodes:
            continue
        value, shape = site["value"], single_trace.nodes[name]["value"].shape
        if value.shape != shape:
            if value.dim() == 0 or value.shape[0] != k or value[j].numel() != math.prod(shape):
                raise ValueError(f"guide site '{name}' has a value of shape {tuple(value.shape)} "
                                 f"with {k} particles, which is not {k} draws of its "
                                 f"one-particle shape {tuple(shape)}")
            value = value[j].reshape(shape)
        replay.add_node(name, type="sample", value=value, is_observed=False, infer=site["infer"])
    return replay


def _particle_problems(model, guide, data, kwargs, guide_trace, k) -> list:
    """The pair at ``k`` vectorised particles, as ``iwae``/``dreg``/``vimco`` and ``evaluate``
    run it: the weights path's shape check (a dim left of the particle dim), then each
    site's log-density at each particle against the same draw scored alone (K = 1, Pyro's
    own shapes): a difference means the code mixes particles (indexing from the left)."""
    loss = IWAE(num_particles=k)
    try:
        model_k, guide_k = loss.traces(model, guide, *data, **kwargs)  # its errors name K
        log_weights_from_traces(model_k, guide_k, loss.max_plate_nesting, particles=True)
    except ValueError as error:
        return [str(error) if str(error).startswith(f"with K={k} ") else
                f"with K={k} vectorised particles: {error}"]
    except Exception as error:
        return [f"the pair fails with K={k} vectorised particles (the iwae/dreg/vimco losses, "
                f"evaluate.log_likelihood and evaluate.elbo need them): "
                f"{type(error).__name__}: {error}"]
    single = IWAE(num_particles=1, max_plate_nesting=loss.max_plate_nesting - 1)
    vectorised = {**_per_particle(model_k, loss.max_plate_nesting, k),
                  **{f"{name} (guide)": v for name, v in
                     _per_particle(guide_k, loss.max_plate_nesting, k).items()}}
    alone = {name: [] for name in vectorised}
    for j in range(k):
        try:
            replay = poutine.replay(guide, trace=_replayed_values(guide_k, guide_trace, k, j))
            model_1, guide_1 = single.traces(model, replay, *data, **kwargs)
        except Exception as error:
            return [f"scoring particle {j} of K={k} alone failed: {type(error).__name__}: {error}"]
        one = {**_per_particle(model_1, single.max_plate_nesting + 1, 1),
               **{f"{name} (guide)": v for name, v in
                  _per_particle(guide_1, single.max_plate_nesting + 1, 1).items()}}
        for name in alone:
            alone[name].append(one.get(name, torch.full((1,), math.nan)))
    problems = []
    for name, values in vectorised.items():
        single_values = torch.cat(alone[name]).to(values)
        if not torch.allclose(values, single_values, rtol=1e-4, atol=1e-3, equal_nan=True):
            j = int((values - single_values).abs().nan_to_num(math.inf).argmax())
            problems.append(
                f"site '{name}': its log-density at particle {j} of K={k} vectorised particles is "
                f"{float(values[j]):.6g} but {float(single_values[j]):.6g} for the same draw "
                "scored alone: the code mixes particles (indexing from the left, z[0] or z[:, i], "
                "or reshaping a latent); index from the right (z[..., i]) and broadcast")
    return problems


def check_pair(model, guide, *data, per_point: bool = False, num_particles: int = 3,
               **kwargs) -> None:
    """Assert that ``model`` and ``guide`` (called with ``*data, **kwargs``) fit together.

    Runs the guide once and the model replayed against it (model latents the guide lacks
    that are marked ``infer={"enumerate": "parallel"}``, e.g. by ``config_enumerate``,
    enumerated as ``TraceEnum_ELBO`` and the importance weights sum them out), then the pair
    at ``num_particles`` vectorised particles, in a param store of its own, and reports
    every problem found, one line each:

    * Pyro's ``check_model_guide_match``: a model latent the guide neither samples nor
      enumerates, a guide site the model lacks (e.g. one the model observes), plates in
      the guide but not the model, disagreeing event dims or shapes;
    * a guide site whose support differs from the model's (draws outside the model's
      support give ``log p = -inf`` or NaN); a point mass (``dist.Delta``, ``AutoDelta``)
      only when its value lies outside the model's support;
    * a latent scored by the guide where the model masks it out (observed there, as
      ``obs_mask`` does for some rows), or the other way round
      (:func:`~pyro_lvm.infer.structure.mask_problems`, which ``fit`` and ``evaluate``
      refuse too);
    * Pyro's ``check_site_shape``: batch dims not declared by a plate or ``.to_event``;
    * under a subsampled plate, a guide parameter with a dim of the full data size
      that was not declared local (``pyro.param(..., event_dim=...)`` inside the plate),
      so every minibatch would use the first rows;
    * for a pair taking ``num_data`` (as :func:`~pyro_lvm.train.fit` calls it): a data
      plate that does not scale a batch of B < N rows by ``N / B``
      (:func:`~pyro_lvm.infer.structure.scale_problems`);
    * at K = ``num_particles``: a site whose log-density has a dim left of the particle dim,
      or differs from the same draw scored alone (the code mixes particles);
    * with ``per_point=True`` (per-point :func:`pyro_lvm.evaluate.log_likelihood`,
      ``(N,)``): sites outside one common data plate.

    :param data: a tensor ``(N, ...)``, several sharing N (e.g. ``x, mask``), or none.
    :param int num_particles: K of the vectorised run; 1 leaves it out (for a pair meant only
        for single-particle losses, e.g. one written for ``TraceEnum_ELBO`` that indexes
        its latents from the left).
    :raises ValueError: ``model`` or ``guide`` not callable, bad data, ``per_point`` not a
        bool, ``num_particles`` not a positive integer.
    :raises AssertionError: listing the problems.
    """
    data = _check_pair_inputs(model, guide, data, kwargs)
    if not isinstance(per_point, bool):
        raise ValueError(f"per_point must be True or False, got {per_point!r}")
    num_particles = check_size("num_particles", num_particles)
    with isolated_param_store(copy=True), checked_values():
        problems = _pair_problems(model, guide, data, kwargs, per_point, num_particles)
    if problems:
        raise AssertionError(f"model/guide pair has {len(problems)} problem(s):\n  - "
                             + "\n  - ".join(" ".join(p.split()) for p in problems))


def _pair_problems(model, guide, data, kwargs, per_point, num_particles) -> list:
    """Every problem :func:`check_pair` lists, in its order."""
    model_trace, guide_trace, nesting, enum_dims = _traces(model, guide, data, kwargs)
    problems = _match_problems(model_trace, guide_trace, nesting if enum_dims else math.inf)
    missing = any(line.startswith("Found vars in model but not guide") for line in problems)
    subsampled = {s["name"]: (s["fn"].size, len(s["value"])) for s in guide_trace.nodes.values()
                  if site_is_subsample(s)}
    sizes = {f.size for t in (model_trace, guide_trace) for site in t.nodes.values()
             if site["type"] == "sample" for f in site["cond_indep_stack"]}
    single_guide = guide_trace
    model_trace, guide_trace = prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)
    problems += _support_problems(model_trace, guide_trace)
    problems += mask_problems(model_trace, guide_trace)
    shapes = (_shape_problems(model_trace, "model", nesting, enum_dims) if enum_dims else
              _shape_problems(model_trace, "model")) + _shape_problems(guide_trace, "guide")
    problems += shapes
    problems += _local_param_problems(guide_trace, subsampled)
    if per_point:
        sites = [s for t in (model_trace, guide_trace) for s in t.nodes.values()
                 if s["type"] == "sample"]
        if data_plate_name(sites) is None:
            problems.append("per-point estimates need every sample site in one common data "
                            f"plate; plates by site: {plates_by_site(sites)}")
    problems += _scale_check(model, guide, data, kwargs, sizes - {data[0].shape[0] if data else 0})
    # (Not with a latent drawn from the prior in the model, which differs at every run, nor
    # with undeclared batch dims, which fail there again.)
    if not missing and not shapes and num_particles > 1:
        problems += _particle_problems(model, guide, data, kwargs, single_guide, num_particles)
    return problems


# --------------------------------------------------------------------------- Monte Carlo


class GradientDraws(NamedTuple):
    """``values`` ``(num_draws,)``: the bound (``-loss``) of each draw, nats, float64;
    ``grads`` ``{name: (num_draws, *shape)}``: the loss's gradient of each draw with respect
    to each parameter's unconstrained value (what ``.grad`` holds after an SVI step), float64."""

    values: torch.Tensor
    grads: dict


def _label(entry, num_particles) -> str:
    name = entry[0] if isinstance(entry, tuple) else entry
    return f"{name}(K={num_particles})" if isinstance(name, str) else type(name).__name__


def _check_monte_carlo(num_draws, seed, false_alarm) -> int:
    """The door of every Monte Carlo assertion: ``num_draws`` an integer >= 2 (a standard
    error needs two draws), ``seed`` an integer >= 0 and ``false_alarm`` in (0, 1)."""
    check_size("seed", seed, 0)
    if check_positive("false_alarm", false_alarm) >= 1:
        raise ValueError(f"false_alarm must be a probability in (0, 1), got {false_alarm!r}")
    return check_size("num_draws", num_draws, 2)


def _check_exact(name, value) -> torch.Tensor:
    """A closed form given by the caller: a finite number or tensor, as float64."""
    try:
        value = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be a number or a tensor, got {type(value).__name__}") from err
    if value.numel() == 0 or not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} must be finite and non-empty, got {value}")
    return value


def _broadcasts(shape, to) -> bool:
    try:
        return torch.broadcast_shapes(shape, to) == to
    except RuntimeError:
        return False


def _t_quantile(false_alarm, comparisons, draws, two_sided=True):
    """Critical value of Student's t (``draws - 1`` dof) at rate ``false_alarm / comparisons``."""
    tail = false_alarm / comparisons / (2 if two_sided else 1)
    return float(stats.t.ppf(1 - tail, df=max(draws - 1, 1)))


def _mean_se(samples: torch.Tensor):
    samples = samples.double()
    return samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])


def _values(loss, model, guide, data, kwargs, num_draws):
    """``num_draws`` values of the bound (``-loss``), nats; the first with Pyro's validation
    as the caller set it, the rest without (it checks structure, not values, and is slow).
    A param store of its own: what one loss leaves there (baselines) never reaches another."""
    with torch.no_grad(), isolated_param_store(copy=True):
        values = [-float(loss.loss(model, guide, *data, **kwargs))]
        with pyro.validation_enabled(False):
            values += [-float(loss.loss(model, guide, *data, **kwargs)) for _ in range(num_draws - 1)]
    return torch.tensor(values, dtype=torch.float64)


def _param_values(model, guide, data, kwargs) -> dict:
    """``{name: value}`` of the parameters the pair registers (registering them)."""
    return {n: v for group in traced_params(model, guide, *data, **kwargs).values()
            for n, v in group.items()}


def _draws(loss, model, guide, data, kwargs, num_draws, names) -> GradientDraws:
    """:class:`GradientDraws` of the parameters ``names``: each draw one
    ``loss.loss_and_grads``, as SVI takes it; Pyro's validation as in :func:`_values`.
    A param store of its own (copies of the bare parameters, the modules' own tensors),
    registered afresh: one loss's baselines never reach another's draws."""
    with isolated_param_store(copy=True):
        _param_values(model, guide, data, kwargs)
        return _draws_here(loss, model, guide, data, kwargs, num_draws, names)


def _draws_here(loss, model, guide, data, kwargs, num_draws, names) -> GradientDraws:
    store = pyro.get_param_store()
    params = [store.get_param(n).unconstrained() for n in names]
    values, grads = [], []
    for i in range(num_draws):
        for p in params:
            p.grad = None
        with pyro.validation_enabled(is_validation_enabled() and i == 0):
            values.append(-float(loss.loss_and_grads(model, guide, *data, **kwargs)))
        grads.append([torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
                      for p in params])
    for p in store.values():  # leave no gradient behind, baselines' included
        p.unconstrained().grad = None
    return GradientDraws(torch.tensor(values, dtype=torch.float64),
                         {n: torch.stack([g[j] for g in grads]).double() for j, n in enumerate(names)})


def _check_names(arg, names, params: dict) -> list:
    """``names`` sorted, refused unless strings naming parameters in ``params``."""
    if not isinstance(names, (list, tuple, dict)) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{arg} must name parameters by strings, got {names!r}")
    unknown = sorted(set(names) - set(params))
    if unknown:
        raise ValueError(f"{arg}: the model and guide register no parameters {unknown}; "
                         f"they register {sorted(params)}")
    return sorted(names)


def gradient_draws(loss, model, guide, *data, num_draws: int = 100, names=None,
                   num_particles: int = 1, **kwargs) -> GradientDraws:
    """``num_draws`` independent draws of a loss's value and gradient at the current
    parameters (each one ``loss.loss_and_grads``, as an SVI step takes it), for the
    assertions here and :func:`pyro_lvm.compare.compare_losses`' gradient statistics.

    :param loss: a name of :func:`~pyro_lvm.infer.make_loss` (built with
        ``num_particles``), a loss object, or a ``(loss, guide)`` tuple.
    :param names: the parameters whose gradients are drawn (default: every parameter
        the model and guide register, sorted).
    :returns: :class:`GradientDraws`; the parameters' ``.grad`` are left empty.
    :raises ValueError: bad loss, model, guide, data or ``num_draws``, or ``names`` that
        are not the pair's parameters.
    """
    loss, guide = resolve_loss(loss, num_particles, check_callable("guide", guide))
    data = _check_pair_inputs(model, guide, data, kwargs)
    num_draws = check_size("num_draws", num_draws)
    with isolated_param_store(copy=True), checked_values():
        params = _param_values(model, guide, data, kwargs)
        names = sorted(params) if names is None else _check_names("names", names, params)
        return _draws(loss, model, guide, data, kwargs, num_draws, names)


def _element_labels(grads: dict) -> list:
    return [f"{n}[{i}]" if g[0].numel() > 1 else n for n, g in grads.items()
            for i in range(g[0].numel())]


def _flat(grads: dict) -> torch.Tensor:
    """``(num_draws, P)``: the gradients of all parameters side by side."""
    return torch.cat([g.reshape(g.shape[0], -1) for g in grads.values()], 1)


def _compare(estimate, se, target, target_se, crit):
    """Failure lines for elements whose difference exceeds ``crit`` standard errors (or
    rounding where there is no spread)."""
    diff = (estimate - target).abs()
    tol = crit * torch.sqrt(se**2 + target_se**2) + ROUNDING * (1 + target.abs())
    bad = (diff > tol).nonzero().flatten().tolist()
    return [(i, float(estimate[i]), float(se[i]), float(target[i]), float(target_se[i]),
             float(tol[i])) for i in bad]


def _bound_chain(losses, num_particles, guide) -> list:
    """The door's plan of :func:`assert_bounds_ordered`: per loss, its ``(label, loss,
    guide)`` at each K, in rising K."""
    if isinstance(losses, str) or not isinstance(losses, (list, tuple)) or not losses:
        raise ValueError(f"losses must be a non-empty list or tuple of losses, got {losses!r}")
    if isinstance(num_particles, (str, bytes)) or not hasattr(num_particles, "__iter__"):
        raise ValueError(f"num_particles must be a sequence of particle counts, got "
                         f"{num_particles!r}")
    ks = sorted({check_size("num_particles[]", k) for k in num_particles})
    plan = []
    for i, entry in enumerate(losses):
        name = entry[0] if isinstance(entry, tuple) else entry
        own = [None] if not isinstance(name, str) else [1] if name == "elbo" else \
            [k for k in ks if not (name == "vimco" and k < 2)]
        if not own:
            raise ValueError(f"losses[{i}] 'vimco' needs K >= 2, but num_particles is {ks}")
        plan.append([(_label(entry, k), *resolve_loss(entry, k or 1, guide, name=f"losses[{i}]"))
                     for k in own])
    return plan


def assert_bounds_ordered(model, guide, *data, losses=("elbo", "iwae"), num_particles=(1, 5, 50),
                          log_likelihood=None, reference_particles: int = 2000,
                          num_draws: int = 20, seed: int = 0, false_alarm: float = 1e-3,
                          **kwargs) -> dict:
    """Assert ELBO <= IWAE_K1 <= IWAE_K2 <= ... <= log p(x), each within Monte Carlo error.

    For each loss after ``elbo`` (an importance-weighted one: ``iwae``, ``dreg``,
    ``vimco``) its bounds at each K of ``num_particles`` must rise with K (``vimco``
    from K = 2) and its first must not be below the ELBO (when ``losses`` starts with
    ``"elbo"``); every bound must be below ``log p(x)``.  Each link is tested
    one-sided at the Bonferroni-split rate.

    :param log_likelihood: exact ``log p(x)`` of the whole data set (nats; a float, or
        a tensor that is summed), else estimated by IWAE with ``reference_particles``
        (a lower bound itself; then only the order below it is tested).
    :param int num_draws: independent values of each bound (>= 2).
    :returns: ``{label: (mean, standard error)}``, nats for the whole data set.
    :raises ValueError: bad model, guide, data, losses, counts, ``log_likelihood`` (not
        finite) or ``false_alarm``.
    :raises AssertionError: a bound above a later one or above ``log p(x)``, beyond
        its tolerance (listed with the estimates and standard errors).
    """
    data = _check_pair_inputs(model, guide, data, kwargs)
    num_draws = _check_monte_carlo(num_draws, seed, false_alarm)
    plan = _bound_chain(losses, num_particles, guide)
    reference_particles = check_size("reference_particles", reference_particles)
    if log_likelihood is not None:
        exact = _check_exact("log_likelihood", log_likelihood).sum()
    pyro.set_rng_seed(seed)
    chain, links = [], []
    with isolated_param_store(copy=True), checked_values():
        for runs in plan:
            start = len(chain)
            chain += [(label, _mean_se(_values(loss, model, g, data, kwargs, num_draws)))
                      for label, loss, g in runs]
            # each loss's bounds rise with K; the ELBO (first, if given) is below every one
            links += list(zip(chain[start:], chain[start + 1:]))
            if start and isinstance(losses[0], str) and losses[0] == "elbo":
                links.append((chain[0], chain[start]))
        if log_likelihood is None:
            values = _values(IWAE(reference_particles), model, guide, data, kwargs,
                             max(2, num_draws // 4))
            top = ("log p(x) ~ IWAE(K=%d)" % reference_particles, _mean_se(values))
        else:
            top = ("log p(x) exact", (exact, torch.zeros((), dtype=torch.float64)))
    pairs = links + [(c, top) for c in chain]
    crit = _t_quantile(false_alarm, len(pairs), num_draws, two_sided=False)
    failures = []
    for (lo_label, (lo, lo_se)), (hi_label, (hi, hi_se)) in pairs:
        spread = math.sqrt(float(lo_se) ** 2 + float(hi_se) ** 2)
        tol = crit * spread + ROUNDING * (1 + abs(float(hi)))
        if float(lo) > float(hi) + tol:
            failures.append(f"{lo_label} = {float(lo):.6g} +- {float(lo_se):.3g} is above "
                            f"{hi_label} = {float(hi):.6g} +- {float(hi_se):.3g} "
                            f"(tolerance {tol:.3g} = {crit:.2f} standard errors)")
    if failures:
        raise AssertionError("bounds out of order (false-alarm rate "
                             f"{false_alarm}, {num_draws} draws, seed {seed}):\n  "
                             + "\n  ".join(failures))
    return {label: (float(m), float(s)) for label, (m, s) in chain + [top]}


def assert_gradients_agree(model, guide, *data, losses=("elbo", "tracegraph"), num_particles: int = 1,
                           num_draws: int = 200, seed: int = 0, false_alarm: float = 1e-3,
                           **kwargs) -> None:
    """Assert that two estimators of the same objective's gradient agree in expectation.

    Each loss gives ``num_draws`` independent gradients of every parameter element
    (with respect to the unconstrained value, as ``.grad`` holds it); per element,
    ``z = (mean_a - mean_b) / sqrt(se_a^2 + se_b^2)`` is compared with Student's t at
    the rate ``false_alarm`` split over all elements.  The two must estimate the
    gradient of the same objective: ``elbo``/``tracegraph``/``meanfield``/``iwae`` K=1
    (the ELBO), or ``iwae``/``dreg``/``vimco`` at one K (IWAE_K).

    :param losses: two entries (names built with ``num_particles``, loss objects, or
        ``(loss, guide)`` tuples).
    :raises ValueError: bad model, guide, data, losses, counts or ``false_alarm``.
    :raises AssertionError: listing the elements that disagree with both means, their
        standard errors and the tolerance.
    """
    data = _check_pair_inputs(model, guide, data, kwargs)
    if not isinstance(losses, (list, tuple)) or len(losses) != 2:
        raise ValueError(f"losses must be a list or tuple of the two losses compared, got {losses!r}")
    num_particles = check_size("num_particles", num_particles)
    num_draws = _check_monte_carlo(num_draws, seed, false_alarm)
    runs = [(_label(entry, num_particles),
             *resolve_loss(entry, num_particles, guide, name=f"losses[{i}]"))
            for i, entry in enumerate(losses)]
    results = []
    with isolated_param_store(copy=True), checked_values():
        names = sorted(_param_values(model, guide, data, kwargs))
        for i, (label, loss, g) in enumerate(runs):
            pyro.set_rng_seed(seed + 7919 * i)  # independent draws for each estimator
            grads = _draws(loss, model, g, data, kwargs, num_draws, names).grads
            results.append((label, *_mean_se(_flat(grads))))
    (la, ma, sa), (lb, mb, sb) = results
    crit = _t_quantile(false_alarm, max(1, ma.numel()), num_draws)
    failures = _compare(ma, sa, mb, sb, crit)
    if failures:
        labels = _element_labels(grads)
        raise AssertionError(
            f"gradients of {la} and {lb} disagree ({num_draws} draws each, seed {seed}, "
            f"false-alarm rate {false_alarm}):\n  " + "\n  ".join(
                f"{labels[i]}: {a:.6g} +- {sa_:.3g} vs {b:.6g} +- {sb_:.3g} (tolerance {tol:.3g})"
                for i, a, sa_, b, sb_, tol in failures))


def assert_unbiased(model, guide, *data, loss, exact_value=None, exact_grad=None,
                    num_particles: int = 1, num_draws: int = 200, seed: int = 0,
                    false_alarm: float = 1e-3, **kwargs) -> None:
    """Assert that a loss's value and gradient have the closed-form expectations.

    :param loss: a name of :func:`~pyro_lvm.infer.make_loss` (built with
        ``num_particles``), a loss object, or a ``(loss, guide)`` tuple.
    :param exact_value: the exact expectation of the *bound* the loss estimates
        (``-loss``, e.g. the ELBO), nats for the whole data set.
    :param dict exact_grad: ``{param name: tensor}``, the exact expected gradient of
        the *loss* (the negative bound) with respect to each parameter's unconstrained
        value, as ``loss_and_grads`` leaves it in ``.grad``; parameters not named are
        not tested.
    :raises ValueError: bad model, guide, data, loss, counts or ``false_alarm``; neither
        ``exact_value`` nor ``exact_grad``, non-finite ones, or ``exact_grad`` naming
        parameters the pair lacks or of shapes that do not broadcast to theirs.
    :raises AssertionError: the mean of ``num_draws`` draws differs from the closed form
        by more than the Student-t tolerance (listed per element).
    """
    data = _check_pair_inputs(model, guide, data, kwargs)
    if exact_value is None and exact_grad is None:
        raise ValueError("give exact_value, exact_grad or both")
    num_draws = _check_monte_carlo(num_draws, seed, false_alarm)
    label = _label(loss, check_size("num_particles", num_particles))
    loss, g = resolve_loss(loss, num_particles, guide)
    targets, labels = [], []
    if exact_value is not None:
        targets.append(_check_exact("exact_value", exact_value).sum().reshape(1))
        labels.append("value")
    if exact_grad is not None and not isinstance(exact_grad, dict):
        raise ValueError(f"exact_grad must be a dict {{param name: tensor}}, got "
                         f"{type(exact_grad).__name__}")
    with isolated_param_store(copy=True), checked_values():
        params = _param_values(model, g, data, kwargs)
        names = _check_names("exact_grad", exact_grad, params) if exact_grad else []
        for n in names:
            target = _check_exact(f"exact_grad[{n!r}]", exact_grad[n])
            if not _broadcasts(target.shape, params[n].shape):
                raise ValueError(f"exact_grad[{n!r}] has shape {tuple(target.shape)}, which does "
                                 f"not broadcast to the parameter's {tuple(params[n].shape)}")
            targets.append(target.expand(params[n].shape).reshape(-1))
        pyro.set_rng_seed(seed)
        if names:
            draws = _draws(loss, model, g, data, kwargs, num_draws, names)
            labels += ["grad " + l for l in _element_labels(draws.grads)]
        else:
            draws = GradientDraws(_values(loss, model, g, data, kwargs, num_draws), {})
    estimates = ([_mean_se(draws.values)] if exact_value is not None else []) + \
        ([_mean_se(_flat(draws.grads))] if names else [])
    mean = torch.cat([m.reshape(-1) for m, _ in estimates])
    se = torch.cat([s.reshape(-1) for _, s in estimates])
    target = torch.cat(targets)
    crit = _t_quantile(false_alarm, mean.numel(), num_draws)
    failures = _compare(mean, se, target, torch.zeros_like(target), crit)
    if failures:
        raise AssertionError(
            f"{label} is biased ({num_draws} draws, seed {seed}, false-alarm rate "
            f"{false_alarm}):\n  " + "\n  ".join(
                f"{labels[i]}: estimate {a:.6g} +- {s_:.3g}, exact {b:.6g} (tolerance {tol:.3g})"
                for i, a, s_, b, _, tol in failures))
