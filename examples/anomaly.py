"""Density estimation as anomaly detection: -log p(x) tells digits from corrupted ones.

    python examples/anomaly.py [--epochs 8] [--eval-samples 100]

A VAE trained on MNIST scores 2,000 real test digits and 2,000 corrupted ones per kind
(10% of pixels flipped, rotated by 90 degrees, inverted, random binary images with the same
ink density) by -log p(x) (importance sampling, nats); the library's GMM does the same in the
space of the pixels' top principal components (exact -log p).  The AUROC of each score
(scikit-learn's roc_auc_score) says how well it separates each kind from real digits.
Writes metrics.json and scores.png (histograms per group) into --out.
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

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--epochs", type=positive_int, default=8)
parser.add_argument("--eval-samples", type=positive_int, default=100)
parser.add_argument("--pcs", type=positive_int, default=20, help="principal components for the GMM")
parser.add_argument("--data-dir", default=None)
parser.add_argument("--out", default="results/anomaly")
parser.add_argument("--seed", type=nonnegative_int, default=0)
args = parser.parse_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)

images = load_mnist(args.data_dir, train=True)[0]
test = fixed_binarization(load_mnist(args.data_dir, train=False)[0])
generator = torch.Generator().manual_seed(args.seed)
real, other = test[:2000], test[2000:4000]
flips = torch.rand(other.shape, generator=generator) < 0.1
groups = {
    "real digits": real,
    "10% pixels flipped": torch.where(flips, 1 - other, other),
    "rotated 90 degrees": other.reshape(-1, 28, 28).rot90(1, (1, 2)).reshape(-1, 784),
    "inverted": 1 - other,
    "random binary": torch.bernoulli(other.mean(1, keepdim=True).expand(-1, 784), generator=generator),
}

torch.manual_seed(args.seed)
vae = VAE(z_dim=20)
with pyro.validation_enabled(False):
    fit(vae.model, vae.guide, images, loss=make_loss("meanfield"),
        optim=decaying_adam(3e-3, 3e-4, args.epochs), num_epochs=args.epochs,
        batch_size=256, transform=binarize, seed=args.seed, progress=False)
    vae_scores = {g: anomaly_scores(vae.model, vae.guide, x, args.eval_samples) for g, x in groups.items()}

pixels = fixed_binarization(images[:20000]).double()
centre = pixels.mean(0)
axes_pc = torch.linalg.svd(pixels - centre, full_matrices=False).Vh[: args.pcs].T
em = gmm.fit_em((pixels - centre) @ axes_pc, 10, seed=args.seed, max_iter=300)
gmm_scores = {g: -gmm.log_likelihood((x.double() - centre) @ axes_pc, **em.params()) for g, x in groups.items()}

auroc = {}
for name, scores in (("VAE -log p(x)", vae_scores), (f"GMM on {args.pcs} PCs -log p(x)", gmm_scores)):
    auroc[name] = {}
    for group, s in scores.items():
        if group != "real digits":
            both = torch.cat([scores["real digits"], s])
            is_anomaly = torch.cat([torch.zeros(len(s)), torch.ones(len(s))])
            auroc[name][group] = roc_auc_score(is_anomaly.numpy(), both.numpy())

fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
for ax, (name, scores) in zip(axes, (("VAE -log p(x), nats", vae_scores),
                                     (f"GMM on {args.pcs} PCs, -log p(x), nats", gmm_scores))):
    low = min(s.quantile(0.01).item() for s in scores.values())
    high = max(s.quantile(0.99).item() for s in scores.values())
    # Scores spanning orders of magnitude (the VAE's inverted digits) get a log axis.
    log_axis = low > 0 and high / low > 20
    bins = np.geomspace(low, high, 61) if log_axis else np.linspace(low, high, 61)
    for group, s in scores.items():
        ax.hist(s.clamp(low, high).numpy(), bins=bins, alpha=0.5, label=group)
    if log_axis:
        ax.set_xscale("log")
    ax.set_xlabel(name)
    ax.legend(fontsize=8)
axes[0].set_ylabel("images")
fig.tight_layout()
fig.savefig(out / "scores.png", dpi=110)
write_metrics(out / "metrics.json", {"config": vars(args), "auroc": auroc})
for name, table in auroc.items():
    print(f"{name}: AUROC " + ", ".join(f"{g} {a:.4f}" for g, a in table.items()))
print(f"wrote {out}/scores.png, metrics.json")
