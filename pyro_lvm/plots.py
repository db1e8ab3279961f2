"""Pictures written to files: image grids (torchvision) and curves (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import save_image  # noqa: E402

from .data import MNIST_SHAPE  # noqa: E402

__all__ = ["save_image_grid", "plot_curves", "plt"]


def save_image_grid(images: torch.Tensor, path, nrow: int = 8, shape=MNIST_SHAPE) -> Path:
    """Save ``(N, H*W)`` grey levels in [0, 1] as one PNG grid of ``nrow`` images per row."""
    images = images.detach().float().cpu().reshape(-1, 1, *shape).clamp(0, 1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, path, nrow=nrow, padding=2, pad_value=1.0)
    return path


def plot_curves(curves: dict, path, xlabel="epoch", ylabel="nats per image", title=None) -> Path:
    """Plot named curves ``{label: (xs, ys)}`` on one axis and save them.

    :raises ValueError: ``curves`` not a non-empty dict of ``(xs, ys)`` pairs of equal length."""
    if not isinstance(curves, dict) or not curves or not all(
            isinstance(c, (tuple, list)) and len(c) == 2 and len(c[0]) == len(c[1])
            for c in curves.values()):
        raise ValueError(f"curves must be a non-empty dict {{label: (xs, ys)}} with xs and ys of "
                         f"equal length, got {curves!r}")
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (xs, ys) in curves.items():
        ax.plot(xs, ys, marker="o", markersize=3, label=label)
    if all(float(x).is_integer() for xs, _ in curves.values() for x in xs):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, K: no 2.5 ticks
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
