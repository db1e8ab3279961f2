"""Assertions for a user's own tests of a model/guide pair, in the style of ``numpy.testing``.

* :func:`check_pair`: the structure the estimators need, found by tracing once,
  before any training (Pyro's ``check_model_guide_match`` and ``check_site_shape``
  plus what they do not check: supports, a data plate, local parameters).
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
from pyro import poutine
from pyro.infer.util import is_validation_enabled
from pyro.poutine.util import prune_subsample_sites, site_is_subsample
from pyro.util import check_model_guide_match, check_site_shape

from .checks import check_callable, check_model_data, check_positive, check_size, checked_values
from .infer import IWAE, resolve_loss
from .infer.importance import data_plate_name, plates_by_site
from .params import traced_params

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


def _shape_problems(trace, who) -> list:
    """Pyro's ``check_site_shape`` of every sample site of ``trace``, as problem lines."""
    try:
        trace.compute_log_prob()
    except ValueError as error:
        return [f"{who}: {error}"]
    problems = []
    for site in trace.nodes.values():
        if site["type"] == "sample":
            try:
                check_site_shape(site, max_plate_nesting=math.inf)
            except ValueError as error:
                problems.append(f"{who}: {error}")
    return problems


def check_pair(model, guide, *data, per_point: bool = False, **kwargs) -> None:
    """Assert that ``model`` and ``guide`` (called with ``*data, **kwargs``) fit together.

    Runs the guide once and the model replayed against it, then reports every
    problem found, one line each:

    * Pyro's ``check_model_guide_match``: a model latent the guide does not sample,
      a guide site the model lacks, plates in the guide but not the model,
      disagreeing event dims or shapes;
    * a guide site whose support differs from the model's (draws outside the model's
      support give ``log p = -inf`` or NaN);
    * Pyro's ``check_site_shape``: batch dims not declared by a plate or ``.to_event``;
    * under a subsampled plate, a guide parameter with a dim of the full data size
      that was not declared local (``pyro.param(..., event_dim=...)`` inside the plate),
      so every minibatch would use the first rows;
    * with ``per_point=True`` (per-point :func:`pyro_lvm.evaluate.log_likelihood`,
      ``(N,)``): sites outside one common data plate.

    :param data: a tensor ``(N, ...)``, several sharing N (e.g. ``x, mask``), or none.
    :raises ValueError: ``model`` or ``guide`` not callable, bad data, ``per_point`` not a bool.
    :raises AssertionError: listing the problems.
    """
    data = _check_pair_inputs(model, guide, data, kwargs)
    if not isinstance(per_point, bool):
        raise ValueError(f"per_point must be True or False, got {per_point!r}")
    problems = []
    try:
        with checked_values():
            guide_trace = poutine.trace(guide).get_trace(*data, **kwargs)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
                *data, **kwargs)
    except Exception as error:  # the user's code failed: report it as the one problem
        raise AssertionError(f"running the guide and model failed: {type(error).__name__}: "
                             f"{error}") from error
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            check_model_guide_match(model_trace, guide_trace)
        except (ValueError, NotImplementedError) as error:
            problems.append(str(error))
    problems += [str(w.message) for w in caught]

    subsampled = {s["name"]: (s["fn"].size, len(s["value"])) for s in guide_trace.nodes.values()
                  if site_is_subsample(s)}
    model_trace, guide_trace = prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or name not in model_trace.nodes:
            continue
        model_fn, guide_fn = model_trace.nodes[name]["fn"], site["fn"]
        if not model_trace.nodes[name]["is_observed"] and hasattr(model_fn, "support") and \
                hasattr(guide_fn, "support") and str(model_fn.support) != str(guide_fn.support):
            problems.append(f"site '{name}': the guide's support {guide_fn.support} differs from "
                            f"the model's {model_fn.support}")
    problems += _shape_problems(model_trace, "model") + _shape_problems(guide_trace, "guide")
    problems += [f"guide parameter '{name}' {tuple(site['value'].shape)} has a dim of the data "
                 f"size {size} but plate '{plate}' takes {batch} rows: declare it local with "
                 "pyro.param(..., event_dim=...) inside the plate"
                 for plate, (size, batch) in subsampled.items() if batch != size
                 for name, site in guide_trace.nodes.items()
                 if site["type"] == "param" and size in site["value"].shape]
    if per_point:
        sites = [s for t in (model_trace, guide_trace) for s in t.nodes.values()
                 if s["type"] == "sample"]
        if data_plate_name(sites) is None:
            problems.append("per-point estimates need every sample site in one common data "
                            f"plate; plates by site: {plates_by_site(sites)}")
    if problems:
        raise AssertionError(f"model/guide pair has {len(problems)} problem(s):\n  - "
                             + "\n  - ".join(" ".join(p.split()) for p in problems))


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
    as the caller set it, the rest without (it checks structure, not values, and is slow)."""
    with torch.no_grad():
        values = [-float(loss.loss(model, guide, *data, **kwargs))]
        with pyro.validation_enabled(False):
            values += [-float(loss.loss(model, guide, *data, **kwargs)) for _ in range(num_draws - 1)]
    return torch.tensor(values, dtype=torch.float64)


def _param_values(model, guide, data, kwargs) -> dict:
    """``{name: value}`` of the parameters the pair registers (registering them)."""
    return {n: v for group in traced_params(model, guide, *data, **kwargs).values()
            for n, v in group.items()}


def _draws(loss, model, guide, data, kwargs, num_draws, names) -> GradientDraws:
    """:class:`GradientDraws` of the registered parameters ``names``: each draw one
    ``loss.loss_and_grads``, as SVI takes it; Pyro's validation as in :func:`_values`."""
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
    with checked_values():
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
    with checked_values():
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
    with checked_values():
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
    with checked_values():
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
