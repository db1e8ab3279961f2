"""Density estimation as anomaly detection: -log p(x) tells digits from corrupted ones.

    python examples/anomaly.py [--epochs 8] [--eval-samples 100]

Shows a density model put to work: a VAE trained on MNIST scores 2,000 real test digits and
2,000 corrupted ones per kind (10% of pixels flipped, rotated by 90 degrees, inverted, random
binary images with the same ink density) by -log p(x) (importance sampling, nats,
:func:`pyro_lvm.diagnostics.anomaly_scores`); the library's GMM does the same in the space
of the pixels' top principal components (exact -log p).  The AUROC of each score
(scikit-learn's roc_auc_score) says how well it separates each kind from real digits.

Writes metrics.json (what :func:`main` returns: the AUROC table) and scores.png (histograms
per group) into --out.

Run time on a 2-core CPU, one thread: the defaults
6 min; ``--epochs 1 --eval-samples 2 --pcs 2`` 2 min.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

import pyro
from pyro_lvm.cli import nonnegative_int, positive_int
from pyro_lvm.data import binarize, fixed_binarization, load_mnist
from pyro_lvm.diagnostics import anomaly_scores
from pyro_lvm.infer import make_loss
from pyro_lvm.models import VAE, gmm
from pyro_lvm.plots import plt
from pyro_lvm.report import write_metrics
from pyro_lvm.train import decaying_adam, fit

REAL = "real digits"


def parse_args(argv=None) -> argparse.Namespace:
    """The command line; a bad value exits with status 2 before any work."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=positive_int, default=8)
    parser.add_argument("--eval-samples", type=positive_int, default=100)
    parser.add_argument("--pcs", type=positive_int, default=20, help="principal components for the GMM")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="results/anomaly")
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    return parser.parse_args(argv)


def image_groups(test: torch.Tensor, seed: int) -> dict:
    """2,000 real test digits and four corruptions of 2,000 others, ``{group: (2000, 784)}``."""
    generator = torch.Generator().manual_seed(seed)
    real, other = test[:2000], test[2000:4000]
    flips = torch.rand(other.shape, generator=generator) < 0.1
    return {
        REAL: real,
        "10% pixels flipped": torch.where(flips, 1 - other, other),
        "rotated 90 degrees": other.reshape(-1, 28, 28).rot90(1, (1, 2)).reshape(-1, 784),
        "inverted": 1 - other,
        "random binary": torch.bernoulli(other.mean(1, keepdim=True).expand(-1, 784), generator=generator),
    }


def vae_scores(args, images, groups) -> dict:
    """Train a VAE (z = 20) and score every group by -log p(x), ``{group: (2000,)}``."""
    torch.manual_seed(args.seed)
    vae = VAE(z_dim=20)
    with pyro.validation_enabled(False):  # fit and anomaly_scores check the data at their doors
        fit(vae.model, vae.guide, images, loss=make_loss("meanfield"),
            optim=decaying_adam(3e-3, 3e-4, args.epochs), num_epochs=args.epochs,
            batch_size=256, transform=binarize, seed=args.seed, progress=False)
        return {g: anomaly_scores(vae.model, vae.guide, x, args.eval_samples) for g, x in groups.items()}


def gmm_scores(args, images, groups) -> dict:
    """EM for a 10-component GMM on the top --pcs principal components of 20,000 training
    images; exact -log p of every group in that space."""
    pixels = fixed_binarization(images[:20000]).double()
    centre = pixels.mean(0)
    axes_pc = torch.linalg.svd(pixels - centre, full_matrices=False).Vh[: args.pcs].T
    em = gmm.fit_em((pixels - centre) @ axes_pc, 10, seed=args.seed, max_iter=300)
    return {g: -gmm.log_likelihood((x.double() - centre) @ axes_pc, **em.params()) for g, x in groups.items()}


def auroc(scores: dict) -> dict:
    """``{group: AUROC}`` of each corrupted group against the real digits."""
    table = {}
    for group, s in scores.items():
        if group != REAL:
            both = torch.cat([scores[REAL], s])
            is_anomaly = torch.cat([torch.zeros(len(s)), torch.ones(len(s))])
            table[group] = roc_auc_score(is_anomaly.numpy(), both.numpy())
    return table


def plot_scores(scores_by_model: dict, path):
    """One histogram panel per model, the groups overlaid."""
    fig, axes = plt.subplots(1, len(scores_by_model), figsize=(12, 4.2))
    for ax, (name, scores) in zip(axes, scores_by_model.items()):
        low = min(s.quantile(0.01).item() for s in scores.values())
        high = max(s.quantile(0.99).item() for s in scores.values())
        # Scores spanning orders of magnitude (the VAE's inverted digits) get a log axis.
        log_axis = low > 0 and high / low > 20
        bins = np.geomspace(low, high, 61) if log_axis else np.linspace(low, high, 61)
        for group, s in scores.items():
            ax.hist(s.clamp(low, high).numpy(), bins=bins, alpha=0.5, label=group)
        if log_axis:
            ax.set_xscale("log")
        ax.set_xlabel(f"{name}, nats")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("images")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> dict:
    """Score, compare and write; returns what metrics.json holds."""
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = load_mnist(args.data_dir, train=True)[0]
    groups = image_groups(fixed_binarization(load_mnist(args.data_dir, train=False)[0]), args.seed)
    scores = {"VAE -log p(x)": vae_scores(args, images, groups),
              f"GMM on {args.pcs} PCs -log p(x)": gmm_scores(args, images, groups)}
    table = {name: auroc(s) for name, s in scores.items()}
    plot_scores(scores, out / "scores.png")
    written = write_metrics(out / "metrics.json", {"config": vars(args), "auroc": table})
    for name, row in table.items():
        print(f"{name}: AUROC " + ", ".join(f"{g} {a:.4f}" for g, a in row.items()))
    print(f"wrote {out}/scores.png, metrics.json")
    return written


if __name__ == "__main__":
    main()
