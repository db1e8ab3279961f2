"""Pieces every model/guide pair shares: the data plate, the local-parameter check, the MLP,
the Gaussian output head and the message for data that overflow their dtype."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import pyro

from ..checks import check_size

#: Floor on every predicted standard deviation (:func:`gaussian_head`): keeps Gaussian
#: log-densities finite when a network drives its scale output to -inf.
MIN_SCALE = 1e-3

#: Name of the plate over data points; importance weights are computed per
#: element of this plate (:mod:`pyro_lvm.infer.importance`).
DATA_PLATE = "data"


def data_plate(x: torch.Tensor, num_data: int | None = None, dim: int = -1) -> pyro.plate:
    """The plate over the rows of ``x`` (``(B, ...)``), at ``dim`` (-1 unless plates
    nest inside it, as the pixel plate of :mod:`pyro_lvm.models.missing`).

    ``num_data`` is the size of the whole data set when ``x`` is a minibatch:
    the plate then scales every log-density inside it by ``num_data / B``, so
    the loss is an unbiased estimate of the full-data objective.

    :raises ValueError: ``num_data`` not a positive integer, or smaller than the batch.
    """
    batch = x.shape[0]
    num_data = batch if num_data is None else check_size("num_data", num_data)
    if num_data < batch:
        raise ValueError(f"num_data ({num_data}) must be at least the batch size ({batch})")
    # The rows are the subsample already (fit draws them); naming them keeps
    # the plate from drawing indices of its own.
    subsample = torch.arange(batch, device=x.device) if num_data > batch else None
    return pyro.plate(DATA_PLATE, size=num_data, subsample=subsample, dim=dim)


def check_local_rows(x: torch.Tensor, num_local: int, guide: str) -> None:
    """A guide with local parameters (one set per data point, fitted per point) must see
    all its ``num_local`` rows at once, in order.  Its module also sets ``num_local_rows``,
    which :meth:`pyro_lvm.distributed.Context.check_split` reads to refuse DDP before any work.

    :raises ValueError: ``x`` has another number of rows.
    """
    if x.shape[0] != num_local:
        raise ValueError(f"the {guide} guide holds local parameters for {num_local} rows but "
                         f"got {x.shape[0]}; pass all N rows (fit: batch_size >= N, "
                         "evaluate: batch_size=N)")


def mlp(sizes, activation=nn.Softplus) -> nn.Sequential:
    """``Linear -> activation -> ... -> Linear`` through the given layer sizes.

    :raises ValueError: ``activation`` not an ``nn.Module`` class (an instance such as
        ``nn.Tanh()``, a function such as ``torch.tanh``): one instance is built per layer,
        and a class is what a saved model file can name.
    """
    if not (isinstance(activation, type) and issubclass(activation, nn.Module)):
        raise ValueError(f"activation must be an nn.Module class such as nn.Softplus (the class, "
                         f"not an instance or a function), got {activation!r}")
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def gaussian_head(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A network's output ``(..., 2 d)`` read as a diagonal Gaussian: ``(loc, scale)``, each
    ``(..., d)``, with ``scale = softplus(raw) + MIN_SCALE`` (Kingma & Welling 2014, app. C.2,
    predict log-variances; softplus keeps the gradient bounded)."""
    loc, raw = output.chunk(2, dim=-1)
    return loc, F.softplus(raw) + MIN_SCALE


def overflow_error(x: torch.Tensor, what: str) -> ValueError:
    """The error for ``what`` (covariances, log-densities: sums of squared deviations of
    ``x``) computed as inf or NaN from finite data: the squares exceeded the largest number
    of ``x``'s dtype (3.4e38 in float32), so the real cause is the data's magnitude."""
    advice = "rescale it" if x.dtype == torch.float64 else "convert it to torch.float64 or rescale it"
    return ValueError(f"{what} overflowed {x.dtype}: x has values up to "
                      f"{x.abs().max().item():.3g} in magnitude, and squared deviations above "
                      f"{torch.finfo(x.dtype).max:.3g} are inf; {advice} (e.g. "
                      "(x - x.mean(0)) / x.std())")
