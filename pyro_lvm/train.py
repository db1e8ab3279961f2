"""One training loop for every model/guide pair: :func:`fit`.

Contract with the model and guide: both are called as
``model(*batch, num_data=N)`` where ``batch`` holds the rows of each data
tensor for one minibatch and ``N`` is the data set size, so a model whose data
plate takes ``num_data`` (:func:`pyro_lvm.models.common.data_plate`) scales its
likelihood by ``N / B`` and every loss is an estimate for the whole data set.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

import pyro
import pyro.optim
from pyro.infer import SVI
from pyro.optim.lr_scheduler import PyroLRScheduler

from . import distributed
from .data import check_data
from .infer import make_loss

__all__ = ["History", "decaying_adam", "fit", "load_checkpoint", "save_checkpoint"]


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


def save_checkpoint(path, state: dict) -> None:
    """Write ``state`` with ``torch.save`` atomically: a temporary file in the same
    folder, flushed to disk, then renamed over ``path``, so a crash mid-write
    leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path, device="cpu") -> dict:
    """Read a checkpoint written by :func:`fit` and put its parameters on ``device``.

    :raises FileNotFoundError: no file at ``path``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path.resolve()} to resume from")
    # weights_only=False: the param store state holds constraint objects; the file is our own.
    state = torch.load(path, map_location="cpu", weights_only=False)
    params = state["param_store"]["params"]
    state["param_store"]["params"] = {k: v.to(device) for k, v in params.items()}
    return state


def _rng_state(device: torch.device) -> dict:
    state = {"pyro": pyro.util.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    pyro.util.set_rng_state(state["pyro"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _as_tensors(data) -> tuple:
    tensors = (data,) if isinstance(data, torch.Tensor) else tuple(data)
    if not tensors:
        raise ValueError("data must be a tensor or a non-empty tuple of tensors")
    n = tensors[0].shape[0] if isinstance(tensors[0], torch.Tensor) else None
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor) or t.dim() < 1:
            raise ValueError(f"data[{i}] must be a tensor with a leading data dimension")
        if t.shape[0] != n:
            raise ValueError(f"data tensors must share their first dimension, got "
                             f"{[tuple(x.shape) for x in tensors]}")
        if torch.is_floating_point(t):
            check_data(t, f"data[{i}]", ndim=None)
    return tensors


def decaying_adam(lr: float, lr_final: float, num_epochs: int) -> PyroLRScheduler:
    """Adam whose step size decays geometrically from ``lr`` (first epoch) to ``lr_final``
    (last epoch); :func:`fit` steps the schedule once per epoch.

    :raises ValueError: a step size that is not positive, or ``num_epochs`` < 1.
    """
    if lr <= 0 or lr_final <= 0 or num_epochs < 1:
        raise ValueError(f"need lr > 0, lr_final > 0 and num_epochs >= 1, "
                         f"got {lr}, {lr_final}, {num_epochs}")
    gamma = (lr_final / lr) ** (1 / max(1, num_epochs - 1))
    return pyro.optim.ExponentialLR({"optimizer": torch.optim.Adam, "optim_args": {"lr": lr},
                                     "gamma": gamma})


def fit(
    model,
    guide,
    data,
    *,
    loss="elbo",
    num_particles: int = 1,
    optim: pyro.optim.PyroOptim | None = None,
    lr: float = 1e-3,
    num_epochs: int = 10,
    batch_size: int = 128,
    transform=None,
    seed: int | None = 0,
    checkpoint=None,
    resume: bool = False,
    callback=None,
    progress: bool = True,
) -> History:
    """Train ``model``/``guide`` by SVI over minibatches of ``data``.

    Each epoch draws a fresh permutation of the N rows on the data's device and
    takes ``N // batch_size`` SVI steps on batches of ``batch_size`` rows (the
    incomplete last batch is left to later permutations); the whole split stays
    one tensor, with no ``DataLoader``.  With ``batch_size >= N`` every step sees
    all rows in their order, as guides with local (per-row) parameters need.

    :param model, guide: Pyro callables taking ``(*batch, num_data=N)``.
    :param data: a tensor ``(N, ...)`` or a tuple of tensors sharing N.
    :param loss: a name for :func:`pyro_lvm.infer.make_loss` or a loss object.
    :param int num_particles: particles per step when ``loss`` is a name.
    :param optim: a Pyro optimizer or LR scheduler (stepped once per epoch);
        default ``pyro.optim.Adam({"lr": lr})``.
    :param transform: applied to the first data tensor of each batch (e.g.
        :func:`pyro_lvm.data.binarize` for dynamic binarization).
    :param seed: ``pyro.set_rng_seed(seed)`` before training (None: leave the RNG).
    :param checkpoint: a path; after each epoch the parameters, optimizer state,
        epoch, history and RNG state are written there atomically.
    :param bool resume: continue from ``checkpoint`` (parameters, optimizer,
        history and RNG as saved) up to ``num_epochs`` in all.
    :param callback: ``callback(epoch, history) -> dict | None`` after each
        epoch; a returned dict (e.g. test ELBO) is stored in ``history.metrics``.
    :param bool progress: show a tqdm bar with the running loss in nats per point.
    :returns: the :class:`History` of all epochs, resumed ones included.
    :raises ValueError: bad data, sizes or arguments.
    :raises FileNotFoundError: ``resume`` without a checkpoint file.
    :raises RuntimeError: under ``torchrun``, this process lost contact with the others.
    :raises FloatingPointError: the loss became NaN/inf; the message names the
        epoch and step, and the checkpoint of the last completed epoch is untouched.

    Under ``torchrun`` (see :mod:`pyro_lvm.distributed`) every process runs this same
    loop on its share of each global batch of ``batch_size`` rows, with ``num_data = N``;
    DDP averages the gradients, the returned loss is the mean over ranks, and only rank 0
    shows progress and writes the checkpoint.  Rank ``r`` seeds ``seed + r``.

    Pyro's param store is cleared first, so training starts from the
    parameters held by the model's and guide's modules (or from the checkpoint).
    """
    tensors = _as_tensors(data)
    n, device = tensors[0].shape[0], tensors[0].device
    if batch_size < 1 or num_epochs < 0:
        raise ValueError(f"batch_size must be >= 1 and num_epochs >= 0, got {batch_size}, {num_epochs}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    batch_size = min(batch_size, n)
    steps = n // batch_size
    # --- distributed (torchrun): process group, per-rank RNG stream, rank-0-only output ---
    ctx = distributed.init(device)
    if batch_size < ctx.world_size:
        raise ValueError(f"batch_size ({batch_size}) is the global batch and must be at least "
                         f"the number of processes ({ctx.world_size})")
    progress = progress and ctx.is_main
    # --- end distributed ---
    loss_fn = make_loss(loss, num_particles) if isinstance(loss, str) else loss
    optim = optim if optim is not None else pyro.optim.Adam({"lr": lr})
    if seed is not None:
        pyro.set_rng_seed(seed + ctx.rank)  # each rank its own noise; rank 0 as one process
    pyro.clear_param_store()
    history, start = History(), 0
    if resume:
        state = load_checkpoint(checkpoint, device)
        pyro.get_param_store().set_state(state["param_store"])
        optim.set_state(state["optim"])
        history, start = History(**state["history"]), state["epoch"]
        # Ranks without a saved stream (resumed on more processes) continue rank 0's.
        rngs = state.get("rng_per_rank", [state["rng"]])
        _set_rng_state(rngs[ctx.rank] if ctx.rank < len(rngs) else rngs[0], device)
    svi = ctx.svi(model, guide, optim, loss_fn)  # plain SVI, or DDP around the loss

    for epoch in range(start + 1, num_epochs + 1):
        # A full batch keeps the rows in order: guides with local (per-row) parameters
        # match them by position.
        perm = torch.randperm(n, device=device) if steps > 1 else torch.arange(n, device=device)
        perm = ctx.same_on_all(perm)  # distributed: every rank follows rank 0's permutation
        total, t0 = 0.0, time.perf_counter()
        bar = tqdm(range(steps), desc=f"epoch {epoch}/{num_epochs}", disable=not progress,
                   leave=False, mininterval=0.5)
        for step in bar:
            idx = ctx.shard(perm[step * batch_size:(step + 1) * batch_size])  # this rank's share
            batch = [t[idx] for t in tensors]
            if transform is not None:
                batch[0] = transform(batch[0])
            try:
                value = svi.step(*batch, num_data=n)  # a float: SVI's one host sync per step
            except dist.DistError as err:  # distributed: a process died or hung
                raise RuntimeError(ctx.message(err)) from err
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"loss is {value} at epoch {epoch}, step {step + 1} of {steps}; training "
                    f"stopped. The last good checkpoint ({checkpoint or 'none kept'}) holds "
                    f"epoch {epoch - 1}."
                )
            total += value
            bar.set_postfix(loss_per_point=f"{total / (step + 1) / n:.2f}", refresh=False)
        bar.close()
        history.epoch.append(epoch)
        history.loss.append(ctx.mean(total, device) / steps / n)  # distributed: mean over ranks
        history.seconds.append(time.perf_counter() - t0)
        history.metrics.append((callback(epoch, history) if callback else None) or {})
        if isinstance(optim, PyroLRScheduler):
            optim.step()
        if progress:  # rank 0 only
            extra = "".join(f", {k} {v:.3f}" for k, v in history.metrics[-1].items()
                            if isinstance(v, float))
            tqdm.write(f"epoch {epoch}: loss {history.loss[-1]:.3f} nats/point"
                       f"{extra}, {history.seconds[-1]:.1f} s")
        # distributed: every rank's RNG stream is kept; rank 0 writes
        rngs = ctx.gather(_rng_state(device)) if checkpoint is not None and ctx.active else None
        if checkpoint is not None and ctx.is_main:
            save_checkpoint(checkpoint, {
                "epoch": epoch,
                "param_store": pyro.get_param_store().get_state(),
                "optim": optim.get_state(),
                "history": asdict(history),
                "rng": _rng_state(device),
                **({"rng_per_rank": rngs} if rngs else {}),
            })
    return history
