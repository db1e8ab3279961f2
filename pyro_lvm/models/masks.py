"""Masks of hidden pixels, and the one check of an image batch with its mask.

A mask is a boolean tensor of the images' shape ``(N, 784)``, True where a pixel is hidden
(not observed).  Every function and module of the missing-pixel family
(:mod:`~pyro_lvm.models.missing`, :mod:`~pyro_lvm.models.pixel_guides`,
:mod:`pyro_lvm.imputation`) checks its ``(x, mask)`` by :func:`check_mask`.
"""

from __future__ import annotations

import torch

from ..checks import check_choice, check_data, check_size
from ..data import MNIST_SHAPE

__all__ = ["MASK_KINDS", "check_mask", "make_mask", "top_half_mask"]

#: Mask kinds of :func:`make_mask`: the seeds' top half, pixels missing completely at random
#: (MCAR) at 50% and 90%, and a per-image mix of the three.
MASK_KINDS = ("top_half", "mcar50", "mcar90", "mix")


def top_half_mask(n: int, device="cpu") -> torch.Tensor:
    """``(n, 784)`` boolean mask hiding the top 14 of 28 rows of every image.

    :raises ValueError: ``n`` not a positive integer.
    """
    n = check_size("n", n)
    height, width = MNIST_SHAPE
    one = torch.zeros(height, width, dtype=torch.bool, device=device)
    one[: height // 2] = True
    return one.reshape(1, -1).expand(n, -1).clone()


def make_mask(kind: str, n: int, generator: torch.Generator | None = None,
              device="cpu") -> torch.Tensor:
    """``(n, 784)`` boolean mask (True = hidden) of one of :data:`MASK_KINDS`.

    ``"mcar50"``/``"mcar90"`` hide each pixel independently with probability 0.5/0.9;
    ``"mix"`` gives each image one of ``top_half``, ``mcar50``, ``mcar90`` uniformly.  Draws
    use ``generator`` (CPU) or the global RNG; an MCAR image hiding all 784 pixels
    (probability 0.9^784) would be rejected by :func:`check_mask`.

    :raises ValueError: an unknown ``kind``, ``n`` not a positive integer, or ``generator``
        not a CPU ``torch.Generator``.
    """
    check_choice("mask kind", kind, MASK_KINDS)
    n = check_size("n", n)
    if generator is not None and (not isinstance(generator, torch.Generator)
                                  or generator.device.type != "cpu"):
        raise ValueError(f"generator must be a CPU torch.Generator or None, got {generator!r}")
    uniform = torch.rand(n, MNIST_SHAPE[0] * MNIST_SHAPE[1], generator=generator)
    kinds = {"top_half": top_half_mask(n), "mcar50": uniform < 0.5, "mcar90": uniform < 0.9}
    if kind == "mix":
        pick = torch.randint(3, (n, 1), generator=generator)
        mask = torch.where(pick == 0, kinds["top_half"],
                           torch.where(pick == 1, kinds["mcar50"], kinds["mcar90"]))
    else:
        mask = kinds[kind]
    return mask.to(device)


def check_mask(x: torch.Tensor, mask: torch.Tensor, x_dim: int | None = None, *, dtype=None,
               values: bool = True, truth: bool = False) -> None:
    """Reject images ``x`` ``(N, x_dim)`` and a ``mask`` that the missing-pixel family
    cannot take.

    :param x_dim: the number of pixels required, or None for any.
    :param dtype: the floating dtype ``x`` must have (the VAE's), or None for any.
    :param bool values: also check the values (a device sync; see
        :func:`~pyro_lvm.checks.check_values`), not only types, shapes and dtypes.
    :param bool truth: ``x`` holds the true value of every pixel, hidden ones included
        (scores, conditional log-likelihoods): all of them must be binary.
    :raises ValueError: ``x`` not a floating ``(N, x_dim)`` tensor (of ``dtype``), NaN/inf,
        a ``mask`` that is not a boolean tensor of ``x``'s shape and device, an image with
        every pixel hidden, or observed pixels (every pixel with ``truth``) not 0 or 1.
    """
    check_data(x, "x", size=x_dim, dtype=dtype, values=values)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a boolean tensor (True = hidden), got "
                         f"{getattr(mask, 'dtype', type(mask).__name__)}; convert it with "
                         "mask.bool()")
    if mask.shape != x.shape:
        raise ValueError(f"mask must have the shape of x {tuple(x.shape)}, got {tuple(mask.shape)}")
    if mask.device != x.device:
        raise ValueError(f"mask must be on the device of x ({x.device}), got {mask.device}")
    if not values:
        return
    if bool(mask.all(1).any()):
        raise ValueError("mask hides every pixel of an image: nothing is observed")
    binary = (x == 0) | (x == 1)
    if not bool((binary | mask).all() if not truth else binary.all()):
        pixels = "pixels of x" if truth else "observed pixels of x"
        raise ValueError(f"the {pixels} must be binary (0 or 1); binarize the images first")
