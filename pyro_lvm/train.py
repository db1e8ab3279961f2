"""One training loop for every model/guide pair: :func:`fit`.

Contract with the model and guide: both are called as
``model(*batch, num_data=N)`` where ``batch`` holds the rows of each data
tensor for one minibatch and ``N`` is the data set size, so a model whose data
plate takes ``num_data`` (:func:`pyro_lvm.models.common.data_plate`) scales its
likelihood by ``N / B`` and every loss is an estimate for the whole data set.
"""

from __future__ import annotations

import hashlib
import io
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

import pyro
import pyro.optim
from pyro.optim.lr_scheduler import PyroLRScheduler

from . import distributed
from .checks import check_data, check_size
from .files import write_atomically
from .infer import make_loss
from .params import traced_params

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


#: First line of every checkpoint file; the second is ``sha256 <hex digest of the payload>``.
CHECKPOINT_MAGIC = b"pyro-lvm checkpoint 1\n"


#: What :func:`fit` saves and needs to resume.
_CHECKPOINT_KEYS = {"epoch", "param_store", "optim", "history", "rng"}


def save_checkpoint(path, state: dict) -> None:
    """Write ``state`` with :func:`write_atomically`: :data:`CHECKPOINT_MAGIC`, a line
    ``sha256 <digest>`` and the ``torch.save`` payload.

    :raises OSError: as :func:`write_atomically`.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    header = CHECKPOINT_MAGIC + b"sha256 " + hashlib.sha256(payload).hexdigest().encode() + b"\n"
    write_atomically(path, header, payload)


def load_checkpoint(path, device="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` / :func:`fit`, verify it and put
    its parameters on ``device``.

    :raises FileNotFoundError: no file at ``path``.
    :raises ValueError: naming the file, when it is empty, not a pyro-lvm checkpoint (no
        :data:`CHECKPOINT_MAGIC` header), truncated or altered (sha256 mismatch), unreadable,
        or holds non-finite parameters.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path.resolve()} to resume from")
    raw = path.read_bytes()
    if not raw:
        raise ValueError(f"the checkpoint {path} is empty")
    if not raw.startswith(CHECKPOINT_MAGIC):
        raise ValueError(f"{path} is not a pyro-lvm checkpoint: its first line is not "
                         f"{CHECKPOINT_MAGIC!r} (another file, an older format, or damaged)")
    line, sep, payload = raw[len(CHECKPOINT_MAGIC):].partition(b"\n")
    if not sep or not line.startswith(b"sha256 ") or len(line) != 71:
        raise ValueError(f"the checkpoint {path} is damaged: its checksum line is missing or malformed")
    if hashlib.sha256(payload).hexdigest().encode() != line[7:]:
        raise ValueError(f"the checkpoint {path} is damaged: its contents do not match the sha256 "
                         "checksum written with them (truncated or altered since)")
    try:
        # weights_only=False: the param store state holds constraint objects; the checksum
        # says the bytes are the ones save_checkpoint wrote.
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises pickle, zip and EOF errors of many kinds
        raise ValueError(f"the checkpoint {path} cannot be read: {type(e).__name__}: {e}") from e
    if isinstance(state, dict) and "param_store" in state:
        params = state["param_store"]["params"]
        bad = [k for k, v in params.items() if not torch.isfinite(v).all()]
        if bad:
            raise ValueError(f"the checkpoint {path} holds non-finite parameters: {bad}")
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


def _positive(value) -> bool:
    """A finite real number > 0 (a step size)."""
    try:
        return math.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError):
        return False


def _check_step_size(optim) -> None:
    """An optimizer with a fixed ``lr`` (Pyro's ``pt_optim_args`` dict) must have a usable one."""
    args = getattr(optim, "pt_optim_args", None)
    if isinstance(args, dict) and "lr" in args and not _positive(args["lr"]):
        raise ValueError(f"the optimizer's learning rate must be a finite number > 0, got {args['lr']!r}")


def _registered_shapes(model, guide, args, kwargs) -> dict:
    """``{name: shape}`` of every parameter guide and model register on ``args``
    (:func:`~pyro_lvm.params.traced_params`; this also loads what the store holds into
    the modules)."""
    return {name: tuple(value.shape) for group in traced_params(model, guide, *args, **kwargs).values()
            for name, value in group.items()}


def _resume_differences(state: dict, config: dict, shapes: dict) -> list:
    """Every way the run asked for differs from the one ``state`` was saved by."""
    saved_config = state.get("config", {})
    saved = {k: tuple(v.shape) for k, v in state["param_store"]["params"].items()}
    diffs = [f"{key}: checkpoint {saved_config.get(key, '(absent)')!r}, now {config.get(key, '(absent)')!r}"
             for key in sorted(set(saved_config) | set(config), key=str)
             if saved_config.get(key, "(absent)") != config.get(key, "(absent)")]
    for name, shape in shapes.items():
        if name not in saved:
            diffs.append(f"parameter {name} {shape} is not in the checkpoint")
        elif saved[name] != shape:
            diffs.append(f"parameter {name}: checkpoint shape {saved[name]}, now {shape}")
    if any(name not in saved for name in shapes):
        diffs.append(f"the checkpoint holds {sorted(set(saved) - set(shapes))} instead (models are "
                     "named per instance, vae_0, vae_1, ...: build them in the same order, or pass name=)")
    return diffs


def _checkpoint_note(checkpoint, saved_epoch) -> str:
    if saved_epoch is None:
        return "No checkpoint was written by this run."
    return f"The last good checkpoint ({checkpoint}) holds epoch {saved_epoch}."


def _check_finite_parameters(epoch: int, checkpoint, saved_epoch) -> None:
    """One host sync: are all parameters in the store finite after ``epoch``?"""
    params = dict(pyro.get_param_store().named_parameters())
    if not params:
        return
    device = next(iter(params.values())).device
    if bool(torch.stack([torch.isfinite(p).all().to(device) for p in params.values()]).all()):
        return
    bad = [name for name, p in params.items() if not torch.isfinite(p).all()]
    raise FloatingPointError(
        f"parameters became NaN/inf in epoch {epoch}: {bad}; training stopped and nothing was "
        f"saved for epoch {epoch}. {_checkpoint_note(checkpoint, saved_epoch)} A smaller step "
        "size (lr) usually helps.")


def decaying_adam(lr: float, lr_final: float, num_epochs: int) -> PyroLRScheduler:
    """Adam whose step size decays geometrically from ``lr`` (first epoch) to ``lr_final``
    (last epoch); :func:`fit` steps the schedule once per epoch.

    :raises ValueError: a step size that is not finite and positive, or ``num_epochs`` < 1.
    """
    num_epochs = check_size("num_epochs", num_epochs)
    if not (_positive(lr) and _positive(lr_final)):
        raise ValueError(f"need finite lr > 0 and lr_final > 0, got {lr}, {lr_final}")
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
    config: dict | None = None,
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
        history and RNG as saved) up to ``num_epochs`` in all; the modules hold the
        checkpoint's weights from then on.
    :param config: the run's settings that the checkpoint cannot honour when they change
        (architecture, step sizes and schedule, loss, ...), a dict of plain values; saved in
        the checkpoint with ``lr`` (when ``optim`` is None), and compared on ``resume``.
    :param callback: ``callback(epoch, history) -> dict | None`` after each
        epoch; a returned dict (e.g. test ELBO) is stored in ``history.metrics``.
    :param bool progress: show a tqdm bar with the running loss in nats per point.
    :returns: the :class:`History` of all epochs, resumed ones included.
    :raises ValueError: bad data, sizes or arguments; a non-finite or non-positive
        ``lr`` (or optimizer ``lr``); on ``resume``, a damaged checkpoint
        (:func:`load_checkpoint`) or one made with another ``config`` or other parameter
        names or shapes (all differences listed).
    :raises FileNotFoundError: ``resume`` without a checkpoint file.
    :raises RuntimeError: under ``torchrun``, this process lost contact with the others.
    :raises FloatingPointError: the loss became NaN/inf (the message names the epoch and
        step), or a parameter did (checked once per epoch, before saving: the message names
        the epoch and the parameter); the checkpoint of the last completed epoch is untouched.

    Under ``torchrun`` (see :mod:`pyro_lvm.distributed`) every process runs this same
    loop on its share of each global batch of ``batch_size`` rows, with ``num_data = N``;
    DDP averages the gradients, the returned loss is the mean over ranks, and only rank 0
    shows progress and writes the checkpoint.  Rank ``r`` seeds ``seed + r``.

    Pyro's param store is cleared first, so training starts from the
    parameters held by the model's and guide's modules (or from the checkpoint).
    """
    # Every argument is checked here, before any work (values of the data once per call).
    tensors = _as_tensors(data)
    batch_size, num_epochs = check_size("batch_size", batch_size), check_size("num_epochs", num_epochs, 0)
    num_particles = check_size("num_particles", num_particles)
    for arg, value in (("model", model), ("guide", guide), ("transform", transform),
                       ("callback", callback)):
        if not callable(value) and (value is not None or arg in ("model", "guide")):
            raise ValueError(f"{arg} must be callable, got {type(value).__name__}")
    if not isinstance(loss, str) and not callable(getattr(loss, "loss_and_grads", None)):
        raise ValueError(f"loss must be a name or an ELBO object, got {type(loss).__name__}")
    owner = getattr(model, "__self__", None)  # a model method of a module that checks its data
    if transform is None and callable(getattr(owner, "check_inputs", None)):
        owner.check_inputs(*tensors, values=True)  # all values once; per step Pyro's switch decides
    n, device = tensors[0].shape[0], tensors[0].device
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    if config is not None and not isinstance(config, dict):
        raise ValueError(f"config must be a dict of the run's settings, got {type(config).__name__}")
    if optim is None and not _positive(lr):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if optim is not None:
        _check_step_size(optim)
    config = {**({"lr": lr} if optim is None else {}), **(config or {})}
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
    history, start, saved_epoch = History(), 0, None
    if resume:
        state = load_checkpoint(checkpoint, device)
        if not isinstance(state, dict) or not _CHECKPOINT_KEYS <= set(state):
            raise ValueError(f"{checkpoint} is a checkpoint file but not one of fit (it lacks "
                             f"{sorted(_CHECKPOINT_KEYS - set(state if isinstance(state, dict) else ()))})")
        batch = [t[:batch_size] for t in tensors]
        if transform is not None:
            batch[0] = transform(batch[0])
        diffs = _resume_differences(state, config, _registered_shapes(model, guide, batch, {"num_data": n}))
        if diffs:
            raise ValueError(f"cannot resume from {checkpoint}: it was made by another run:\n  "
                             + "\n  ".join(diffs))
        pyro.clear_param_store()
        pyro.get_param_store().set_state(state["param_store"])
        _registered_shapes(model, guide, batch, {"num_data": n})  # the modules take the saved weights
        optim.set_state(state["optim"])
        history, start = History(**state["history"]), state["epoch"]
        saved_epoch = start
        # After the runs above, which drew random numbers.  Distributed: each rank its own
        # stream; ranks without one (resumed on more processes) continue rank 0's.
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
                    f"stopped. {_checkpoint_note(checkpoint, saved_epoch)}"
                )
            total += value
            bar.set_postfix(loss_per_point=f"{total / (step + 1) / n:.2f}", refresh=False)
        bar.close()
        history.epoch.append(epoch)
        history.loss.append(ctx.mean(total, device) / steps / n)  # distributed: mean over ranks
        history.seconds.append(time.perf_counter() - t0)
        _check_finite_parameters(epoch, checkpoint, saved_epoch)  # before callback and saving
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
                "config": config,
                **({"rng_per_rank": rngs} if rngs else {}),
            })
        if checkpoint is not None:  # on every rank: rank 0 wrote it
            saved_epoch = epoch
    return history
