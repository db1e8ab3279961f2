"""Data-parallel training under ``torchrun``: the plumbing :func:`pyro_lvm.train.fit` calls.

Launched by ``torchrun --nproc_per_node=N [--nnodes=M ...] script.py``, every process
runs the same :func:`~pyro_lvm.train.fit`; :func:`init` joins torchrun's process group
(``env://``: ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...; gloo on CPU, NCCL on GPU) and
returns a :class:`Context` that

* broadcasts rank 0's permutation of the rows each epoch and gives each process its
  contiguous share of every global batch (``batch_size`` stays the global batch);
* wraps the loss in PyTorch's ``DistributedDataParallel``, so DDP's all-reduce averages the
  gradients.  Each process's loss keeps ``num_data = N``, so it is an unbiased estimate of the
  full-data loss and so is the mean DDP takes;
* leaves checkpoints, the progress bar and files to rank 0 (:attr:`Context.is_main`);
* refuses what cannot be split across processes (:meth:`Context.check_split`): a global
  batch smaller than the number of processes, and a guide with local (per-row) parameters,
  which needs every row at every step.  Such a guide is a method of a module that says so
  with an attribute ``num_local_rows`` (the N it holds parameters for), e.g.
  :class:`pyro_lvm.models.gmm.MeanFieldGuide`.

Why not Pyro's ``ELBOModule`` alone: ``loss(model, guide)`` is the ``nn.Module`` DDP wraps,
but it owns parameters only when model and guide are ``nn.Module`` s; our models are callables
whose parameters live in Pyro's param store (``pyro.module``).  :meth:`Context.svi` registers
those param-store tensors on the ``ELBOModule`` before handing it to DDP.

Outside ``torchrun`` (and without a process group) :func:`init` returns a one-process context
whose methods change nothing, so ``fit`` has a single code path.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

import pyro
import pyro.util
from pyro import poutine
from pyro.infer import ELBO, SVI

__all__ = ["Context", "init", "launched", "local_device", "main_first"]


def launched() -> bool:
    """True in a process started by ``torchrun`` (it sets ``RANK`` and ``WORLD_SIZE``)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def local_device(device: torch.device) -> torch.device:
    """This process's GPU under ``torchrun``: ``cuda`` becomes ``cuda:$LOCAL_RANK``; other
    devices (and explicit indices) pass through."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


@dataclass(frozen=True)
class Context:
    """Where this process stands: ``rank`` of ``world_size`` processes joined by ``backend``
    (``None`` when there is no process group)."""

    rank: int = 0
    world_size: int = 1
    backend: str | None = None

    @property
    def active(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """Rank 0, the one process that writes files and shows progress."""
        return self.rank == 0

    def same_on_all(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``tensor`` on every rank (e.g. the epoch's permutation)."""
        if self.active:
            dist.broadcast(tensor, src=0)
        return tensor

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global batch of indices ``(B,)``."""
        return idx.tensor_split(self.world_size)[self.rank] if self.world_size > 1 else idx

    def mean(self, value: float, device: torch.device) -> float:
        """The mean of a per-rank number over all ranks (one collective; used once per epoch)."""
        if not self.active:
            return value
        t = torch.tensor(float(value), dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.item() / self.world_size

    def gather(self, obj) -> list:
        """Every rank's ``obj`` (picklable), in rank order."""
        if not self.active:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def check_split(self, guide, batch_size: int) -> None:
        """Refuse a fit that cannot be split across the processes.

        :raises ValueError: ``batch_size`` (the global batch) smaller than the number of
            processes, or, with more than one process, ``guide`` a method of a module with
            ``num_local_rows`` (local parameters: each process sees only its share of the rows).
        """
        if batch_size < self.world_size:
            raise ValueError(f"batch_size ({batch_size}) is the global batch and must be at least "
                             f"the number of processes ({self.world_size})")
        owner = getattr(guide, "__self__", None)
        num_local = getattr(owner, "num_local_rows", None)
        if num_local is not None and self.world_size > 1:
            raise ValueError(f"the guide {type(owner).__name__} holds local parameters for "
                             f"{num_local} rows, but under DDP each of the {self.world_size} "
                             "processes sees only its share of the rows; train it in one process "
                             "(no torchrun)")

    def svi(self, model, guide, optim, loss_fn) -> SVI:
        """Pyro's ``SVI`` whose gradients DDP averages across ranks (plain ``SVI`` when
        there is no process group).

        :raises ValueError: ``loss_fn`` is not a Pyro ``ELBO`` (DDP wraps its ``ELBOModule``).
        """
        if not self.active:
            return SVI(model, guide, optim, loss_fn)
        if not isinstance(loss_fn, ELBO):
            raise ValueError(f"distributed fit needs a Pyro ELBO loss, got {type(loss_fn).__name__}")
        ddp = _LazyDDP(loss_fn, model, guide)
        return SVI(model, guide, optim, loss=ddp.loss, loss_and_grads=ddp.loss_and_grads)

    def message(self, err: Exception) -> str:
        """What to tell the user when a collective fails (another process died or hung)."""
        return (f"rank {self.rank} of {self.world_size} lost contact with the other processes "
                f"({type(err).__name__}: {err}); a process probably died. The checkpoint holds the "
                f"last completed epoch: relaunch all ranks with resume=True (--resume).")


class _LazyDDP:
    """Builds ``DDP(loss_fn(model, guide))`` on the first step, when the batch that makes
    the model and guide create their param-store parameters is at hand."""

    def __init__(self, loss_fn, model, guide):
        self.loss_fn, self.model, self.guide, self.module = loss_fn, model, guide, None

    def _build(self, args, kwargs):
        elbo_module = self.loss_fn(self.model, self.guide)  # Pyro's ELBOModule
        # One forward without gradients to see which param-store tensors the loss reads;
        # the RNG streams are restored so that the trajectory is the same as without it.
        state = pyro.util.get_rng_state()
        device = args[0].device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                torch.no_grad(), poutine.trace(param_only=True) as tr:
            elbo_module(*args, **kwargs)
        pyro.util.set_rng_state(state)
        for name in tr.trace.nodes:
            # The unconstrained leaf tensors the optimizer updates in place.  Written into
            # _parameters directly: pyro.param tensors need not be nn.Parameter objects, and
            # DDP must hook these very tensors.
            elbo_module._parameters[name.replace(".", "/")] = pyro.get_param_store()._params[name]
        if not any(True for _ in elbo_module.parameters()):
            raise ValueError("the model and guide have no parameters for DDP to train")
        device_ids = [device] if device.type == "cuda" else None
        # DDP broadcasts rank 0's parameters here, so all ranks start from the same point.
        self.module = nn.parallel.DistributedDataParallel(elbo_module, device_ids=device_ids)

    def loss(self, model, guide, *args, **kwargs):
        with torch.no_grad():
            return self.loss_fn.differentiable_loss(model, guide, *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        if self.module is None:
            self._build(args, kwargs)
        loss = self.module(*args, **kwargs)
        loss.backward()  # DDP's hooks all-reduce (average) the gradients during backward
        return loss.detach()


def init(device: torch.device | str = "cpu") -> Context:
    """Join the process group of a ``torchrun`` launch (gloo for a CPU ``device``, NCCL for
    CUDA), or describe the one already joined; a one-process :class:`Context` otherwise.
    Idempotent, so a script may call it before :func:`~pyro_lvm.train.fit` does."""
    device = torch.device(device)
    if dist.is_available() and not dist.is_initialized() and launched():
        if device.type == "cuda":
            torch.cuda.set_device(local_device(device))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.is_available() and dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size(), dist.get_backend())
    return Context()


@contextmanager
def main_first(ctx: Context):
    """Rank 0 runs the block first (e.g. a download into a shared folder), the others after it."""
    if ctx.active and not ctx.is_main:
        dist.barrier()
    yield
    if ctx.active and ctx.is_main:
        dist.barrier()
