"""One training loop for every model/guide pair: :func:`fit`.

Contract with the model and guide: both are called as ``model(*batch, num_data=N)`` where
``batch`` holds the rows of each data tensor for one minibatch and ``N`` is the data set
size, so a model whose data plate takes ``num_data`` (:func:`pyro_lvm.models.common.data_plate`)
scales its likelihood by ``N / B`` and every loss is an estimate for the whole data set.

How :func:`fit` runs.  Its door checks every argument, and the data (values included) against
what the model declares it takes (:func:`~pyro_lvm.checks.check_model_inputs`); a ``transform``
draws each batch's first tensor anew from such data (dynamic binarization of grey levels in
[0, 1]), so the door checks the data as given, whatever the transform.  Then one trace of the
first batch, in a param store of its own, checks the pair: every model latent sampled by the
guide (or enumerated, for a loss that sums it out), on the elements where the model does not
observe it (``obs_mask``) and only there, and, when batches are smaller than N, a data
plate that scales by ``N / B`` and no guide parameter with one entry per row
(:mod:`pyro_lvm.infer.structure`).  The pair's stale module
entries and baselines are removed from Pyro's store, nothing else (:mod:`pyro_lvm.params`).  The epochs run inside
:func:`~pyro_lvm.checks.checked_values`: model and guide bodies check only shapes per step.
Each epoch draws a fresh permutation of the N rows on the data's device and takes
``N // batch_size`` SVI steps on batches of ``batch_size`` rows (the incomplete last batch is
left to later permutations); the whole split stays one tensor, with no ``DataLoader``.  With
``batch_size >= N`` every step sees all rows in their order, as guides with local (per-row)
parameters need.  After each epoch: the parameters are checked for NaN/inf (one host sync),
the callback runs, an LR schedule steps, and the checkpoint is written
(:mod:`pyro_lvm.checkpoint`).

Under ``torchrun`` (:mod:`pyro_lvm.distributed`) every process runs this same loop on its
share of each global batch of ``batch_size`` rows, with ``num_data = N``; DDP averages the
gradients, the epoch loss is the mean over ranks, rank 0 alone shows progress and writes the
checkpoint, and rank ``r`` seeds ``seed + r``.
"""

from __future__ import annotations

import inspect
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

import pyro
import pyro.optim
from pyro.infer import SVI, TraceEnum_ELBO
from pyro.optim.lr_scheduler import PyroLRScheduler

from . import distributed
from .checkpoint import check_resumable, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .checks import (check_callable, check_model_inputs, check_positive, check_size, check_tensors,
                     checked_values)
from .infer import ImportanceWeightedLoss, make_loss
from .infer.structure import (mask_problems, missing_latents, per_row_param_problems,
                              scale_problems, trace_pair)
from .params import isolated_param_store, take_ownership, traced_params

__all__ = ["History", "decaying_adam", "fit"]


@dataclass
class History:
    """What :func:`fit` measured, one entry per completed epoch.

    :ivar epoch: epoch numbers (1-based).
    :ivar loss: mean training loss per data point over the epoch's steps, nats
        (the negative ELBO for ``loss="elbo"``).
    :ivar seconds: wall time of each epoch's training steps.
    :ivar metrics: what the ``callback`` returned after each epoch.
    """

    epoch: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    metrics: list = field(default_factory=list)


def _check_arguments(model, guide, data, loss, num_particles, optim, lr, num_epochs, batch_size,
                     transform, seed, checkpoint, resume, config, callback) -> tuple:
    """:func:`fit`'s door: every argument, before any work; the data's values once, and the
    data against what the model declares it takes (:func:`~pyro_lvm.checks.check_model_inputs`).

    :returns: ``(tensors, num_particles, num_epochs, batch_size)``, the sizes as ints.
    """
    tensors = check_tensors(data, "data")
    check_callable("model", model), check_callable("guide", guide)
    check_callable("transform", transform, optional=True)
    check_callable("callback", callback, optional=True)
    if not isinstance(loss, str) and not callable(getattr(loss, "loss_and_grads", None)):
        raise ValueError(f"loss must be a name or an ELBO object, got {type(loss).__name__}")
    check_positive("lr", lr)
    optim_args = getattr(optim, "pt_optim_args", None)  # a Pyro optimizer's fixed settings
    if isinstance(optim_args, dict) and "lr" in optim_args:
        check_positive("the optimizer's learning rate (lr)", optim_args["lr"])
    if seed is not None:
        check_size("seed", seed, 0)
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise ValueError(f"checkpoint must be a path, got {type(checkpoint).__name__}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    if config is not None and not isinstance(config, dict):
        raise ValueError(f"config must be a dict of the run's settings, got {type(config).__name__}")
    sizes = (check_size("num_particles", num_particles), check_size("num_epochs", num_epochs, 0),
             check_size("batch_size", batch_size))
    for name, fn in (("model", model), ("guide", guide)):
        _check_takes_num_data(name, fn)
    check_model_inputs(model, tensors)
    return (tensors, *sizes)


def _check_takes_num_data(name, fn) -> None:
    """fit calls ``fn(*batch, num_data=N)``: refuse a callable that cannot take the keyword."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin or wrapper without a signature: Python will tell
        return
    if not any(p.name == "num_data" and p.kind != p.POSITIONAL_ONLY or p.kind == p.VAR_KEYWORD
               for p in parameters):
        raise ValueError(f"{name} must take the keyword num_data (fit calls it as "
                         f"{name}(*batch, num_data=N), N the data set size, so that its data plate "
                         f"scales each minibatch to the whole data set); "
                         f"{getattr(fn, '__qualname__', type(fn).__name__)} does not")


def _check_pair(model, guide, run: "_Run", loss_fn) -> tuple:
    """fit's door, on the pair itself: one trace of the first batch (``num_data = N``), in a
    param store of its own, refusing a model latent the guide does not sample and the loss
    does not enumerate (Pyro only warns), a latent scored by the guide where the model masks
    it out (observed there, e.g. by ``obs_mask``) or the other way round, and, when batches
    are smaller than N, a data plate that ignores ``num_data`` or a guide parameter with one
    entry per row (:mod:`pyro_lvm.infer.structure`); a model or guide without the keyword
    ``num_data`` is refused before (:func:`_check_takes_num_data`).

    :returns: ``(param_names, guide_site_names)`` of the pair, for :func:`take_ownership`.
    :raises ValueError: listing every problem found.
    """
    with torch.no_grad():
        batch = run.batch(slice(0, run.batch_size))
    with isolated_param_store(), checked_values():
        model_trace, guide_trace = trace_pair(model, guide, *batch, num_data=run.num_data)
    enumerates = isinstance(loss_fn, (TraceEnum_ELBO, ImportanceWeightedLoss))
    problems = missing_latents(model_trace, guide_trace, enumerates)
    problems += mask_problems(model_trace, guide_trace)
    if run.batch_size < run.num_data:
        problems += scale_problems(model_trace, guide_trace, run.batch_size, run.num_data)
        problems += per_row_param_problems(guide_trace, run.batch_size, run.num_data)
    if problems:
        raise ValueError(f"the model/guide pair cannot be trained as it is ({len(problems)} "
                         "problem(s)):\n  - " + "\n  - ".join(problems))
    params = {name for trace in (model_trace, guide_trace) for name, site in trace.nodes.items()
              if site["type"] == "param"}
    return params, {name for name, site in guide_trace.nodes.items() if site["type"] == "sample"}


@dataclass
class _Run:
    """What the epochs of one :func:`fit` call share."""

    svi: SVI
    optim: pyro.optim.PyroOptim
    tensors: tuple
    transform: Callable | None
    batch_size: int
    ctx: distributed.Context
    checkpoint: str | os.PathLike | None
    config: dict
    callback: Callable | None
    progress: bool  # rank 0 only
    num_epochs: int
    history: History = field(default_factory=History)
    saved_epoch: int | None = None  # the epoch the checkpoint holds
    foreign: frozenset = frozenset()  # other pairs' parameters in the store: not this run's

    def params(self) -> dict:
        """``{name: unconstrained tensor}`` of this run's parameters in Pyro's store."""
        return {name: p for name, p in pyro.get_param_store().named_parameters()
                if name not in self.foreign}

    @property
    def num_data(self) -> int:
        return self.tensors[0].shape[0]

    @property
    def steps(self) -> int:
        return self.num_data // self.batch_size

    def batch(self, idx) -> list:
        """The rows ``idx`` of every data tensor, the first one transformed."""
        batch = [t[idx] for t in self.tensors]
        if self.transform is not None:
            batch[0] = self.transform(batch[0])
        return batch

    def checkpoint_note(self) -> str:
        if self.saved_epoch is None:
            return "No checkpoint was written by this run."
        return f"The last good checkpoint ({self.checkpoint}) holds epoch {self.saved_epoch}."


def _registered_shapes(model, guide, batch, num_data) -> dict:
    """``{name: shape}`` of every parameter guide and model register on ``batch``
    (:func:`~pyro_lvm.params.traced_params`; this also loads what the store holds into
    the modules)."""
    params = traced_params(model, guide, *batch, num_data=num_data)
    return {name: tuple(value.shape) for group in params.values() for name, value in group.items()}


def _resume(run: _Run, model, guide) -> int:
    """Load ``run.checkpoint`` into the param store, the modules, the optimizer, the history
    and the RNG, after :func:`~pyro_lvm.checkpoint.check_resumable`; returns its epoch."""
    device = run.tensors[0].device
    state = load_checkpoint(run.checkpoint, device)
    batch = run.batch(slice(0, run.batch_size))
    check_resumable(state, run.checkpoint, run.config,
                    _registered_shapes(model, guide, batch, run.num_data))
    store = pyro.get_param_store()
    for name in run.params():  # this run's parameters become the checkpoint's; others stay
        del store[name]
    store.set_state(state["param_store"])
    _registered_shapes(model, guide, batch, run.num_data)  # the modules take the saved weights
    run.optim.set_state(state["optim"])
    run.history, run.saved_epoch = History(**state["history"]), state["epoch"]
    set_rng_state(state, device, run.ctx.rank)  # after the runs above, which drew random numbers
    return state["epoch"]


def _check_finite_parameters(run: _Run, epoch: int) -> None:
    """One host sync: are all of this run's parameters finite after ``epoch``?"""
    params = run.params()
    if not params:
        return
    device = next(iter(params.values())).device
    if bool(torch.stack([torch.isfinite(p).all().to(device) for p in params.values()]).all()):
        return
    bad = [name for name, p in params.items() if not torch.isfinite(p).all()]
    raise FloatingPointError(
        f"parameters became NaN/inf in epoch {epoch}: {bad}; training stopped and nothing was "
        f"saved for epoch {epoch}. {run.checkpoint_note()} A smaller step size (lr) usually helps.")


def _epoch(run: _Run, epoch: int) -> None:
    """One epoch: ``run.steps`` SVI steps over a fresh permutation of the rows, then
    :func:`_end_epoch`."""
    n, device, ctx = run.num_data, run.tensors[0].device, run.ctx
    # A full batch keeps the rows in order: guides with local (per-row) parameters
    # match them by position.
    perm = torch.randperm(n, device=device) if run.steps > 1 else torch.arange(n, device=device)
    perm = ctx.same_on_all(perm)  # distributed: every rank follows rank 0's permutation
    total, t0 = 0.0, time.perf_counter()
    bar = tqdm(range(run.steps), desc=f"epoch {epoch}/{run.num_epochs}", disable=not run.progress,
               leave=False, mininterval=0.5)
    for step in bar:
        batch = run.batch(ctx.shard(perm[step * run.batch_size:(step + 1) * run.batch_size]))
        try:
            value = run.svi.step(*batch, num_data=n)  # a float: SVI's one host sync per step
        except dist.DistError as err:  # distributed: a process died or hung
            raise RuntimeError(ctx.message(err)) from err
        if not math.isfinite(value):
            raise FloatingPointError(f"loss is {value} at epoch {epoch}, step {step + 1} of "
                                     f"{run.steps}; training stopped. {run.checkpoint_note()}")
        total += value
        bar.set_postfix(loss_per_point=f"{total / (step + 1) / n:.2f}", refresh=False)
    bar.close()
    loss = ctx.mean(total, device) / run.steps / n  # distributed: the mean over ranks
    _end_epoch(run, epoch, loss, time.perf_counter() - t0)


def _end_epoch(run: _Run, epoch: int, loss: float, seconds: float) -> None:
    """Record the epoch, check the parameters, call back, step the schedule, report and save."""
    history = run.history
    history.epoch.append(epoch)
    history.loss.append(loss)
    history.seconds.append(seconds)
    _check_finite_parameters(run, epoch)  # before callback and saving
    history.metrics.append((run.callback(epoch, history) if run.callback else None) or {})
    if isinstance(run.optim, PyroLRScheduler):
        run.optim.step()
    if run.progress:
        metrics = history.metrics[-1].items()
        extra = "".join(f", {k} {v:.3f}" for k, v in metrics if isinstance(v, float))
        tqdm.write(f"epoch {epoch}: loss {loss:.3f} nats/point{extra}, {seconds:.1f} s")
    if run.checkpoint is not None:
        _save(run, epoch)


def _save(run: _Run, epoch: int) -> None:
    """Write the checkpoint of ``epoch`` (:mod:`pyro_lvm.checkpoint`): rank 0 writes it,
    with every rank's RNG stream."""
    device, ctx = run.tensors[0].device, run.ctx
    rngs = ctx.gather(rng_state(device)) if ctx.active else None
    if ctx.is_main:
        save_checkpoint(run.checkpoint, {
            "epoch": epoch,
            "param_store": _own_state(run),
            "optim": run.optim.get_state(),
            "history": asdict(run.history),
            "rng": rng_state(device),
            "config": run.config,
            **({"rng_per_rank": rngs} if rngs else {}),
        })
    run.saved_epoch = epoch  # on every rank: rank 0 wrote it


def _own_state(run: _Run) -> dict:
    """The param store's state restricted to this run's parameters."""
    state = pyro.get_param_store().get_state()
    return {key: {k: v for k, v in entries.items() if k not in run.foreign}
            for key, entries in state.items()}


def decaying_adam(lr: float, lr_final: float, num_epochs: int) -> PyroLRScheduler:
    """Adam whose step size decays geometrically from ``lr`` (first epoch) to ``lr_final``
    (last epoch); :func:`fit` steps the schedule once per epoch.

    :raises ValueError: a step size that is not finite and positive, or ``num_epochs`` < 1.
    """
    num_epochs = check_size("num_epochs", num_epochs)
    try:
        check_positive("lr", lr), check_positive("lr_final", lr_final)
    except ValueError:
        raise ValueError(f"need finite lr > 0 and lr_final > 0, got {lr!r}, {lr_final!r}") from None
    gamma = (lr_final / lr) ** (1 / max(1, num_epochs - 1))
    return pyro.optim.ExponentialLR({"optimizer": torch.optim.Adam, "optim_args": {"lr": lr},
                                     "gamma": gamma})


def fit(model, guide, data, *, loss="elbo", num_particles: int = 1,
        optim: pyro.optim.PyroOptim | None = None, lr: float = 1e-3, num_epochs: int = 10,
        batch_size: int = 128, transform=None, seed: int | None = 0, checkpoint=None,
        resume: bool = False, config: dict | None = None, callback=None,
        progress: bool = True) -> History:
    """Train ``model``/``guide`` by SVI over minibatches of ``data``, epoch by epoch as the
    module docstring says, from the parameters the pair holds (or the checkpoint's), leaving
    other pairs' parameters as they are (:mod:`pyro_lvm.params` states the design).

    :param model, guide: Pyro callables taking ``(*batch, num_data=N)``.
    :param data: a tensor ``(N, ...)`` or a tuple of tensors sharing N, that the model takes.
    :param loss: a name for :func:`pyro_lvm.infer.make_loss` or an ELBO object.
    :param int num_particles: particles per step when ``loss`` is a name.
    :param optim: a Pyro optimizer or LR scheduler (stepped once per epoch); default
        ``pyro.optim.Adam({"lr": lr})``.
    :param float lr: the default optimizer's step size.
    :param int num_epochs: epochs in all, resumed ones included.
    :param int batch_size: rows per step (under ``torchrun``, the global batch).
    :param transform: applied to the **first** data tensor of each batch only (e.g.
        :func:`pyro_lvm.data.binarize` of ``x`` in ``(x, labels)``); the others are passed as
        they are (transform those once before ``fit``, or inside the model).
    :param seed: ``pyro.set_rng_seed(seed + rank)`` before training (None: leave the RNG).
    :param checkpoint: a path; after each epoch the parameters, optimizer state, epoch,
        history and RNG state are written there atomically (:mod:`pyro_lvm.checkpoint`).
    :param bool resume: continue from ``checkpoint`` as saved; the modules hold its weights.
    :param config: a dict of the run's settings that a checkpoint cannot honour when they
        change (architecture, schedule, ...): saved with ``lr`` (no ``optim``), compared on resume.
    :param callback: ``callback(epoch, history) -> dict | None`` after each epoch; a returned
        dict (e.g. test ELBO) is stored in ``history.metrics``.
    :param bool progress: show a tqdm bar with the running loss in nats per point.
    :returns: the :class:`History` of all epochs, resumed ones included.
    :raises ValueError: a bad argument (named), data the model does not take, a pair that
        would train silently wrong (``_check_pair``); on ``resume``, a damaged checkpoint
        or another run's (:func:`~pyro_lvm.checkpoint.check_resumable`); under ``torchrun``,
        what cannot be split (:meth:`~pyro_lvm.distributed.Context.check_split`).
    :raises FileNotFoundError: ``resume`` without a checkpoint file.
    :raises RuntimeError: under ``torchrun``, this process lost contact with the others.
    :raises FloatingPointError: the loss became NaN/inf (the message names the epoch and
        step) or a parameter did (the epoch, the parameter); the last checkpoint is untouched.
    """
    tensors, num_particles, num_epochs, batch_size = _check_arguments(
        model, guide, data, loss, num_particles, optim, lr, num_epochs, batch_size, transform,
        seed, checkpoint, resume, config, callback)
    # Prepare: the loss, the optimizer, the processes (torchrun) and the RNG.
    config = {**({"lr": lr} if optim is None else {}), **(config or {})}
    loss_fn = make_loss(loss, num_particles) if isinstance(loss, str) else loss
    optim = optim if optim is not None else pyro.optim.Adam({"lr": lr})
    ctx = distributed.init(tensors[0].device)
    batch_size = min(batch_size, len(tensors[0]))
    ctx.check_split(guide, batch_size)
    run = _Run(ctx.svi(model, guide, optim, loss_fn), optim, tensors, transform, batch_size, ctx,
               checkpoint, config, callback, progress and ctx.is_main, num_epochs)
    run.foreign = take_ownership(*_check_pair(model, guide, run, loss_fn))  # draws: before seed
    if seed is not None:
        pyro.set_rng_seed(seed + ctx.rank)  # each rank its own noise; rank 0 as one process
    with checked_values():  # the door checked the data: bodies check shapes only
        start = _resume(run, model, guide) if resume else 0
        for epoch in range(start + 1, num_epochs + 1):
            _epoch(run, epoch)
    return run.history
