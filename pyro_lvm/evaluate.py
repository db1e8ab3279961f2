"""Per-data-point evaluation: the ELBO and the importance-sampled log-likelihood.

Both read their weights from :meth:`pyro_lvm.infer.IWAE.log_weights`, the one
place the library computes ``log w_nk = log p(x_n, z_nk) - log q(z_nk | x_n)``
from Pyro traces; they work for any model/guide pair, not only the VAE.  Data
points and particles are processed in chunks so that K = 5000 over the 10,000
MNIST test images fits in memory.

The data are the positional arguments after ``model, guide`` (one tensor, a tuple
of tensors sharing N, or several such tensors); ``num_samples``/``num_particles``
are keyword-only.

**Pairs with global latents** (any site outside the data plate, e.g. a shared
mean): the points are not independent given the model, so ``log p(x_n)`` and a
per-point ELBO are not defined.  The functions then return data-set quantities
as 0-dim tensors: :func:`elbo` the data-set ELBO ``E_q[log p(x_1..N, z) - log
q(z)]`` and :func:`log_likelihood` the importance-sampled ``log p(x_1..N)`` (a
lower bound in expectation, tight as K grows), both in nats for the whole data
set, computed in one pass over all rows (``batch_size`` must then cover N).
Per-point estimates conditional on one guide draw of the globals are not provided.

**Enumerated models**: a model site marked ``infer={"enumerate": "parallel"}`` (e.g. by
``config_enumerate``) that the guide does not sample is summed out exactly inside each weight,
``log p(x_n, z_nk) = log sum_y p(x_n, y, z_nk)``, at every K (in the data plate, or outside
every plate; :mod:`pyro_lvm.infer.importance`); other enumerated sites are refused naming them.

**Masks**: a latent that the guide scores on elements where the model observes it
(``obs_mask``: an M2 guide sampling the label on every row while the model observes it on the
labelled ones), or the other way round, would make every weight count different elements in
``log p`` and ``log q``.  Each call compares the masks once, on the traces of its first pass
(its first block of rows; :func:`~pyro_lvm.infer.structure.mask_problems`), and refuses such a
pair with a ``ValueError`` naming the site.

**Parameters**: every pass runs on a param store of its own (:mod:`pyro_lvm.params`): modules
are scored as they are, bare ``pyro.param`` sites at their values in Pyro's store.  A bare
site the store does not hold is scored at its initial value, with a ``UserWarning`` naming it.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
import torch

from pyro import poutine

from .checks import check_callable, check_model_data, check_size, checked_values
from . import ais
from .infer import IWAE
from .infer.structure import mask_problems
from .params import isolated_param_store

__all__ = ["WeightChunk", "ais_log_likelihood", "bdmc", "cluster_accuracy", "elbo",
           "log_likelihood", "log_weight_chunks", "log_weights"]

#: Elements per chunk of (particles x points x features); bounds the memory of one pass.
MAX_ELEMENTS = 2**23


def _checked(model, guide, data, num_samples, batch_size, max_elements, name="num_samples"):
    """The door of every evaluation: ``(tensors, num_samples, batch_size, max_elements)``
    checked, before any work; each data tensor's values are read once, here.

    :raises ValueError: naming the bad argument.
    """
    check_callable("model", model)
    check_callable("guide", guide)
    num_samples = check_size(name, num_samples)
    max_elements = check_size("max_elements", max_elements)
    if batch_size is not None:
        batch_size = check_size("batch_size", batch_size)
    return check_model_data(model, data, "x"), num_samples, batch_size, max_elements


def _rows_per_block(n, width, batch_size, max_elements, particles=1):
    """Data points per pass: ``batch_size``, else as many as ``max_elements`` allows with
    ``particles`` per point, all N when they fit (guides with local parameters need every
    row); a small batch_size with many particles per pass runs an amortised encoder rarely."""
    return min(n, batch_size or max(1, max_elements // (particles * width)))


def _chunks(model, guide, tensors, num_samples, batch_size, max_elements, return_sites=None,
            **kwargs):
    """Yield ``(rows, log_w)`` with ``log_w`` of shape ``(k, len(rows))``, or
    ``(k, 1)`` with ``rows = None`` for pairs with global latents; the particle
    chunks of each row block add up to ``num_samples``.  With ``return_sites`` (a tuple of
    names), :class:`WeightChunk` s with the guide's values there.  Arguments as returned
    by :func:`_checked`."""
    n = tensors[0].shape[0]
    width = max(1, tensors[0][0].numel())
    batch_size = _rows_per_block(n, width, batch_size, max_elements)
    per_pass = max(1, min(num_samples, max_elements // (batch_size * width)))
    yield from _passes(model, guide, tensors, n, num_samples, batch_size, per_pass, kwargs,
                       return_sites)


def _one_pass(estimator, model, guide, tensors, kwargs, first=False):
    """The weights of one chunk.  A store of its own: the modules' parameters are scored,
    never another model's that happens to share their names in the global store (or a
    training run's).  Values were checked at the door: the model and guide bodies check
    shapes only.  Entered per pass, so that the caller's code between chunks runs in its
    own state (store, gradient mode).  On the ``first`` pass of a call, the pair's masks
    are compared on the traces drawn for the weights (:func:`_check_masks`)."""
    with isolated_param_store() as store, checked_values(), torch.no_grad():
        traces = estimator.traces(model, guide, *tensors, **kwargs)
        if first:
            _check_masks(*traces)
        weights = estimator.log_weights_of(*traces)
    return weights, store.initialised


def _check_masks(model_trace, guide_trace) -> None:
    """Refuse a latent scored by the guide where the model masks it out (observed there, e.g.
    by ``obs_mask``), or the other way round (:func:`~pyro_lvm.infer.structure.mask_problems`):
    every weight would count different elements in ``log p`` and ``log q``."""
    problems = mask_problems(model_trace, guide_trace)
    if problems:
        raise ValueError(f"the model/guide pair cannot be evaluated as it is ({len(problems)} "
                         "problem(s)):\n  - " + "\n  - ".join(problems))


def _warn_initialised(names) -> None:
    """The estimate scores bare ``pyro.param`` sites at the initial values given in the code:
    Pyro's store held none for them (never trained, or removed since, e.g. by
    ``pyro.clear_param_store()``)."""
    warnings.warn(f"the parameters {names} are not in Pyro's param store, so this estimate scores "
                  "them at their initial values, not trained ones (never trained, or the store "
                  "was cleared since); train the pair first (pyro_lvm.train.fit), or give the "
                  "model and guide modules that hold their parameters", UserWarning, stacklevel=4)


def _passes(model, guide, tensors, n, num_samples, batch_size, per_pass, kwargs, return_sites):
    estimators, nesting = {}, float("inf")
    traced = guide if return_sites is None else poutine.trace(guide)
    for start in range(0, n, batch_size):
        rows = slice(start, min(n, start + batch_size))
        done = 0
        while done < num_samples:
            k, first = min(per_pass, num_samples - done), start == done == 0  # once per call
            if k not in estimators:  # one per chunk size, sharing the plate nesting
                estimators[k] = IWAE(num_particles=k, max_plate_nesting=nesting)
            weights, initialised = _one_pass(estimators[k], model, traced,
                                             [t[rows] for t in tensors], kwargs, first)
            if initialised and first:
                _warn_initialised(initialised)
            nesting = weights.num_plates - 1  # the model's plates, without the particles
            if weights.data_dim is None and rows != slice(0, n):
                raise ValueError(
                    "this model/guide pair has sites outside the data plate (global "
                    f"latents), so its estimates are for the whole data set: pass "
                    f"batch_size >= N = {n} (got {batch_size})")
            block = None if weights.data_dim is None else rows
            if return_sites is None:
                yield block, weights.log_w
            else:
                yield WeightChunk(block, weights.log_w,
                                  _site_values(traced.trace, return_sites, k, nesting))
            done += k


def _site_values(trace, names, k, nesting) -> dict:
    """``{name: value}`` of the guide's sample sites, each with the leading particle dim
    and its batch dims padded to the plate nesting, also for k = 1 (where Pyro has no
    particle plate)."""
    values = {}
    for name in names:
        site = trace.nodes.get(name)
        if site is None or site["type"] != "sample":
            sites = [s for s, node in trace.nodes.items() if node["type"] == "sample"]
            raise ValueError(f"return_sites names {name!r}, which is not a sample site of the "
                             f"guide (its sites: {sites})")
        value = site["value"]
        if k == 1:
            batch_dims = value.dim() - site["fn"].event_dim
            value = value.reshape((1,) * (1 + nesting - batch_dims) + value.shape)
        values[name] = value
    return values


def _data(data):
    """The positional data: one tensor or tuple, or several tensors (as a tuple)."""
    return data[0] if len(data) == 1 else data


def log_weights(model, guide, *x, num_samples: int = 1000, batch_size=None,
                max_elements: int = MAX_ELEMENTS, **kwargs) -> torch.Tensor:
    """All log importance weights ``log w_nk``, ``(num_samples, N)``, nats
    (``(num_samples, 1)`` for pairs with global latents: one weight per draw).

    For diagnostics that need every weight (PSIS); :func:`log_likelihood` reduces
    them on the fly instead of storing them.

    :raises ValueError: as :func:`log_likelihood`.
    """
    x, num_samples, batch_size, max_elements = _checked(model, guide, _data(x), num_samples,
                                                        batch_size, max_elements)
    n = x[0].shape[0]
    out, filled = None, {}
    for rows, log_w in _chunks(model, guide, x, num_samples, batch_size, max_elements, **kwargs):
        if out is None:
            out = log_w.new_empty(num_samples, n if rows is not None else 1)
        rows = rows if rows is not None else slice(0, 1)
        start = filled.get(rows.start, 0)
        out[start:start + log_w.shape[0], rows] = log_w
        filled[rows.start] = start + log_w.shape[0]
    return out


class WeightChunk(NamedTuple):
    """One chunk of :func:`log_weight_chunks`.

    :ivar rows: the data points of the chunk, a ``slice`` of N (``None`` for pairs with
        global latents: one weight per draw for the whole data set).
    :ivar log_w: ``log w_nk``, ``(k, B)`` nats for the ``B`` rows and ``k`` particles of
        the chunk (``(k, 1)`` with global latents).
    :ivar values: ``{site: value}`` of the guide's draws at ``return_sites``, each
        ``(k, *batch_shape, *event_shape)``: the particle dim first (also for k = 1), then
        the site's batch dims padded on the left to the model's plate nesting, as Pyro's
        vectorised particles give them (``(k, B, 1, z_dim)`` for a ``z`` in a data plate
        at ``dim=-2``); ``values[s][j]`` belongs to ``log_w[j]``.
    """

    rows: slice | None
    log_w: torch.Tensor
    values: dict


def log_weight_chunks(model, guide, *x, num_samples: int = 1000, batch_size=None,
                      max_elements: int = MAX_ELEMENTS, return_sites=(), **kwargs):
    """The log importance weights of :func:`log_weights`, chunk by chunk, with the guide's
    draws at ``return_sites`` (as in ``pyro.infer.Predictive``): for estimates that weigh a
    function of the latents by the weights, e.g. self-normalised importance sampling
    ``E_p(z | x)[f(z)] ~= sum_k softmax(log w)_k f(z_k)``
    (:func:`pyro_lvm.imputation.impute`), without storing every draw.

    Chunks come row block by row block; the particle chunks of one block follow each other
    and their ``k`` add up to ``num_samples``, so a reduction over particles combines them
    by ``torch.logaddexp`` of their ``logsumexp``.  Each chunk holds at most
    ``max_elements`` particles x points x features.  The arguments are checked here, at the
    call; the chunks are computed as they are iterated, on a param store of their own and
    without gradients, and the loop body runs in the caller's own state.

    :param return_sites: names of sample sites of the guide (a tuple or list).
    :returns: an iterator of :class:`WeightChunk` ``(rows, log_w, values)``.
    :raises ValueError: as :func:`log_likelihood`; ``return_sites`` not a tuple or list of
        strings, or (while iterating) naming a site the guide does not sample.
    """
    x, num_samples, batch_size, max_elements = _checked(model, guide, _data(x), num_samples,
                                                        batch_size, max_elements)
    if not isinstance(return_sites, (tuple, list)) or \
            not all(isinstance(name, str) for name in return_sites):
        raise ValueError(f"return_sites must be a tuple of site names such as ('z',), got "
                         f"{return_sites!r}")
    return _chunks(model, guide, x, num_samples, batch_size, max_elements,
                   return_sites=tuple(return_sites), **kwargs)


def log_likelihood(model, guide, *x, num_samples: int = 5000, batch_size=None,
                   max_elements: int = MAX_ELEMENTS, **kwargs) -> torch.Tensor:
    """Importance-sampling estimate of ``log p(x_n)`` per data point, nats, ``(N,)``
    (for pairs with global latents: of ``log p(x_1..N)``, 0-dim; module docstring)::

        log p(x_n) ~= log (1/K) sum_k p(x_n, z_k) / q(z_k | x_n),    z_k ~ q(. | x_n)

    (Burda et al. 2016, eq. 8; the IWAE bound with K = ``num_samples``): a
    stochastic lower bound in expectation that tightens as K grows, with the
    guide as proposal.  Log-mean-exp by ``torch.logsumexp`` across chunks.

    :param model, guide: Pyro callables; ``x`` (a tensor or tuple of tensors
        sharing N) is passed as their positional arguments, ``kwargs`` too.
    :param int num_samples: K, importance samples per data point.
    :param batch_size: data points per pass (default: as many as ``max_elements``
        allows with one particle, all N if they fit, as guides with local parameters need).
        With an amortised guide a small block (e.g. 100) is faster: the encoder then runs
        once per block for many particles.
    :param int max_elements: bound on particles x points x features per pass.
    :raises ValueError: ``num_samples``, ``batch_size`` or ``max_elements`` not an integer
        >= 1, data that are empty, NaN/inf or of unequal N, a pair with global latents
        split into several row blocks, or a latent scored by the guide where the model masks
        it out (observed there, e.g. by ``obs_mask``) or the other way round (module
        docstring).
    """
    x, num_samples, batch_size, max_elements = _checked(model, guide, _data(x), num_samples,
                                                        batch_size, max_elements)
    n = x[0].shape[0]
    total = None
    for rows, log_w in _chunks(model, guide, x, num_samples, batch_size, max_elements, **kwargs):
        if total is None:
            total = log_w.new_full((n,) if rows is not None else (), -math.inf)
        rows = rows if rows is not None else ...
        total[rows] = torch.logaddexp(total[rows], torch.logsumexp(log_w, 0).squeeze())
    return total - math.log(num_samples)


def elbo(model, guide, *x, num_particles: int = 1, batch_size=None,
         max_elements: int = MAX_ELEMENTS, **kwargs) -> torch.Tensor:
    """Monte Carlo ELBO per data point, nats, ``(N,)``: the mean of ``log w_nk``
    over ``num_particles`` draws (``E_q[log p(x_n, z) - log q(z | x_n)]``, a lower
    bound on ``log p(x_n)``; Jordan et al. 1999).  For pairs with global latents,
    the data-set ELBO (0-dim, nats for all N points; module docstring).

    :raises ValueError: as :func:`log_likelihood`, for ``num_particles``."""
    x, num_particles, batch_size, max_elements = _checked(model, guide, _data(x), num_particles,
                                                          batch_size, max_elements, "num_particles")
    n = x[0].shape[0]
    total = None
    for rows, log_w in _chunks(model, guide, x, num_particles, batch_size, max_elements, **kwargs):
        if total is None:
            total = log_w.new_zeros((n,) if rows is not None else ())
        total[rows if rows is not None else ...] += log_w.sum(0).squeeze()
    return total / num_particles


def _ais_blocks(model, guide, data, options, batch_size, max_elements) -> list:
    """The door of the AIS functions, then the data in row blocks (tuples of tensors) sized
    like :func:`log_likelihood`'s, with all ``num_chains`` chains of a point in one pass.
    Each block's work runs in :func:`_ais_scope`.

    :raises ValueError: naming the bad argument."""
    check_callable("model", model)
    check_callable("guide", guide, optional=True)
    max_elements = check_size("max_elements", max_elements)
    if batch_size is not None:
        batch_size = check_size("batch_size", batch_size)
    tensors = check_model_data(model, data, "x")
    n = tensors[0].shape[0]
    rows = _rows_per_block(n, max(1, tensors[0][0].numel()), batch_size, max_elements,
                           options.num_chains)
    return [tuple(t[start:start + rows] for t in tensors) for start in range(0, n, rows)]


def _ais_scope(run, *args):
    """``run(*args)`` in the scope of :func:`_one_pass`: a param store of its own, the
    bodies' value checks off (the door checked them)."""
    with isolated_param_store(), checked_values():
        return run(*args)


def ais_log_likelihood(model, guide, *x, num_steps: int = 1000, num_chains: int = 16,
                       num_leapfrog: int = 10, step_size: float = 0.05,
                       target_accept: float | None = 0.65, schedule: str = "sigmoid",
                       batch_size=None, return_diagnostics: bool = False,
                       max_elements: int = MAX_ELEMENTS, **kwargs):
    """Annealed importance sampling estimate of ``log p(x_n)`` per data point, nats,
    ``(N,)`` (Neal 2001; with HMC transitions as Wu et al. 2017): ``num_chains`` chains
    per point from the guide's ``q(z | x_n)`` (the prior when ``guide`` is None) along
    ``f_t = q^(1 - beta_t) p(x_n, z)^beta_t``, ``beta`` from 0 to 1 in ``num_steps``
    steps, one HMC transition of ``num_leapfrog`` leapfrog steps per intermediate
    distribution; the log-mean-exp of the weights over chains.  A stochastic lower bound
    (``E[estimate] <= log p(x_n)``) that, unlike :func:`log_likelihood`, tightens with
    ``num_steps`` even when the guide is a poor proposal.  The mathematics, the schedule,
    the step-size adaptation and which pairs work: :mod:`pyro_lvm.ais`.

    Cost: about ``num_chains * (1 + (num_steps - 1) * (num_leapfrog + 1))`` evaluations
    of ``log p(x_n, z)`` and its gradient per point; ``num_steps=1`` is
    :func:`log_likelihood` with K = ``num_chains``.  Settings: check them with
    :func:`bdmc` on simulated data (raise ``num_steps`` until the gap is below the
    precision you need, e.g. 1 nat); 16 chains and 10 leapfrog steps are the defaults
    of Wu et al.'s (2017) code (with 10,000 steps); more chains mostly lower the
    variance, more steps the bias.
    ``target_accept`` 0.65 is Neal's (2011) recommendation for HMC; ``None`` fixes the
    step size at ``step_size`` (exactly unbiased weights, no adaptation).

    :param model, guide: Pyro callables as for :func:`log_likelihood`; ``guide=None``
        starts the chains at the prior.
    :param int num_steps: T, intermediate distributions (``>= 1``).
    :param int num_chains: C, independent chains per data point.
    :param int num_leapfrog: leapfrog steps per HMC transition.
    :param float step_size: initial leapfrog step size (adapted per data point).
    :param target_accept: the HMC acceptance rate the step sizes adapt to, in (0, 1), or
        None (no adaptation).
    :param str schedule: ``"sigmoid"`` (Grosse et al. 2015) or ``"linear"``.
    :param batch_size: data points per pass (default: as many as ``max_elements`` allows
        with all chains, all N if they fit).
    :param bool return_diagnostics: return an :class:`~pyro_lvm.ais.AISResult`
        (estimate, standard error across chains, mean acceptance rate, final step sizes,
        each ``(N,)``) instead of the estimate alone.
    :raises ValueError: a count not a positive integer, ``step_size`` not finite and
        > 0, ``target_accept`` outside (0, 1), an unknown schedule, bad data (as
        :func:`log_likelihood`), or a pair AIS cannot move: a discrete or constrained
        latent, a latent outside the data plate (the message names the site).
    """
    options = ais.check_options(num_steps, num_chains, num_leapfrog, step_size, target_accept,
                                schedule)
    blocks = _ais_blocks(model, guide, _data(x), options, batch_size, max_elements)
    result = _cat([_ais_scope(ais.forward, model, guide, block, kwargs, options)
                   for block in blocks])
    return result if return_diagnostics else result.log_likelihood


def bdmc(model, guide, *x, num_steps: int = 1000, num_chains: int = 16, num_leapfrog: int = 10,
         step_size: float = 0.05, target_accept: float | None = 0.65, schedule: str = "sigmoid",
         batch_size=None, max_elements: int = MAX_ELEMENTS, **kwargs) -> ais.BDMCResult:
    """Bidirectional Monte Carlo (Grosse, Ghahramani & Adams 2015): sandwich ``log p(x_n)``
    on data simulated from the model, to find the AIS settings a model needs.

    Draws ``(z_n, x_n) ~ p(z) p(x | z)`` with ``x``'s shape (``poutine.uncondition``; the
    values of the observed tensors are not used, other data such as a mask are), then
    runs :func:`ais_log_likelihood`'s forward AIS on the simulated ``x_n`` (a stochastic
    lower bound) and reverse AIS from the exact posterior sample ``z_n`` back to the guide
    (a stochastic upper bound).  ``log p(x_n)`` lies between them up to Monte Carlo error,
    and the mean gap bounds the error of both for these settings.

    What the gap does not certify: real data are not simulated data.  A test image may
    sit where the model puts little mass and its posterior be harder to anneal to than a
    simulated one's, so a small gap on simulated data is evidence, not proof, that AIS
    with the same settings is accurate on real data (Wu et al. 2017 make this
    assumption).  It says nothing about how good the model is.

    :param x: data of the shape the model observes (a tensor, or a tuple whose observed
        tensor the model's observed site takes as ``obs=`` unchanged).
    :param num_steps, ...: as :func:`ais_log_likelihood`, for both directions.
    :returns: :class:`~pyro_lvm.ais.BDMCResult` with ``lower``, ``upper`` (``(N,)``
        nats), ``data`` (the simulated data, given form), ``gap`` (mean of upper - lower)
        and both runs' diagnostics.
    :raises ValueError: as :func:`ais_log_likelihood`, or a model none of whose observed
        sites observes a data tensor.
    """
    options = ais.check_options(num_steps, num_chains, num_leapfrog, step_size, target_accept,
                                schedule)
    blocks = _ais_blocks(model, guide, _data(x), options, batch_size, max_elements)
    forward, reverse, data = zip(*(_ais_scope(ais.sandwich, model, guide, block, kwargs, options)
                                   for block in blocks))
    data = tuple(torch.cat(parts) for parts in zip(*data))
    forward, reverse = _cat(forward), _cat(reverse)
    return ais.BDMCResult(forward.log_likelihood, reverse.log_likelihood,
                          data[0] if len(data) == 1 else data, forward, reverse)


def _cat(results) -> ais.AISResult:
    return ais.AISResult(*(torch.cat(parts) for parts in zip(*results)))


def _labels(name, values):
    """``values`` as a ``(N,)`` numpy array of non-negative integers (``torch.int64``
    labels, numpy arrays and Python lists of ints are accepted)."""
    try:
        array = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values)
    except (TypeError, ValueError) as err:  # ragged lists, objects numpy cannot read
        raise ValueError(f"{name} must be a sequence of non-negative integers, got "
                         f"{type(values).__name__}: {err}") from err
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty (N,) sequence of integers, got "
                         f"{type(values).__name__} of shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise ValueError(f"{name} must be non-negative integers, got dtype {array.dtype}")
    if array.min() < 0:
        raise ValueError(f"{name} must be non-negative integers, got min {array.min()}")
    return array


def cluster_accuracy(labels, clusters) -> float:
    """Share of points whose cluster, matched one-to-one to a label by the Hungarian
    algorithm (``scipy.optimize.linear_sum_assignment``), equals their label.

    :param labels, clusters: integer sequences of length N (tensors, arrays or lists).
    :returns: the accuracy, in [0, 1].
    :raises ValueError: unequal lengths, empty, not 1-dimensional, or not non-negative
        integers (floats and bools included).
    """
    from scipy.optimize import linear_sum_assignment

    labels, clusters = _labels("labels", labels), _labels("clusters", clusters)
    if labels.shape != clusters.shape:
        raise ValueError(f"labels and clusters must be two (N,) sequences of one length, got "
                         f"{labels.shape}, {clusters.shape}")
    counts = np.zeros((clusters.max() + 1, labels.max() + 1))
    np.add.at(counts, (clusters, labels), 1)
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum() / len(labels))
