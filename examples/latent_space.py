"""What the latents are for: representation learning with the MNIST VAE.

    python examples/latent_space.py [--epochs 10] [--z-dim 20]

Trains two VAEs on dynamically binarized MNIST (z = --z-dim and z = 2), then: the 2-D
model's decoded manifold; interpolations in z between test digits; test posterior means
coloured by label; k-NN and linear-probe accuracy from z; and unsupervised clustering of z
with the library's GMM (EM), next to the same GMM on the raw pixels' top principal
components.  Writes manifold.png, interpolation.png, scatter.png and metrics.json into --out.
"""

import argparse
from pathlib import Path

import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

import pyro
from pyro_lvm.cli import nonnegative_int, positive_int
from pyro_lvm.data import binarize, fixed_binarization, load_mnist
from pyro_lvm.evaluate import cluster_accuracy
from pyro_lvm.infer import make_loss
from pyro_lvm.models import VAE, gmm
from pyro_lvm.plots import plt, save_image_grid
from pyro_lvm.report import write_metrics
from pyro_lvm.train import decaying_adam, fit

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--epochs", type=positive_int, default=10)
parser.add_argument("--z-dim", type=positive_int, default=20)
parser.add_argument("--data-dir", default=None)
parser.add_argument("--out", default="results/latent_space")
parser.add_argument("--seed", type=nonnegative_int, default=0)
args = parser.parse_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)

images, labels = load_mnist(args.data_dir, train=True)
test_images, test_labels = load_mnist(args.data_dir, train=False)
x_test = fixed_binarization(test_images)


def train_vae(z_dim):
    torch.manual_seed(args.seed)
    vae = VAE(z_dim=z_dim, hidden_dims=(400,))
    with pyro.validation_enabled(False):
        fit(vae.model, vae.guide, images, loss=make_loss("meanfield"),
            optim=decaying_adam(3e-3, 3e-4, args.epochs),
            num_epochs=args.epochs, batch_size=256, transform=binarize, seed=args.seed, progress=False)
    pyro.clear_param_store()
    return vae


vae, vae2 = train_vae(args.z_dim), train_vae(2)
with torch.no_grad():
    z_train = vae.encode(fixed_binarization(images[:10000]))[0]
    z_test = vae.encode(x_test)[0]
    z2_test = vae2.encode(x_test)[0]

    # 1. The 2-D model's decoded manifold: a 15 x 15 grid of prior quantiles.
    quantiles = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.03, 0.97, 15))
    grid = torch.cartesian_prod(quantiles.flip(0), quantiles)[:, [1, 0]]
    save_image_grid(vae2.decode(grid), out / "manifold.png", nrow=15)

    # 2. Interpolations: 8 pairs of test digits, 10 steps on the line between their means.
    steps = torch.linspace(0, 1, 10)[:, None]
    strips = [vae.decode(z_test[2 * i] * (1 - steps) + z_test[2 * i + 1] * steps) for i in range(8)]
    save_image_grid(torch.cat(strips), out / "interpolation.png", nrow=10)

# 3. Posterior means by label: the 2-D model's, and the first two principal axes of z.
centred = z_test - z_test.mean(0)
z_projected = centred @ torch.linalg.svd(centred, full_matrices=False).Vh[:2].T
fig, axes = plt.subplots(1, 2, figsize=(11, 5))
for ax, points, title in ((axes[0], z2_test, "z = 2: posterior means"),
                          (axes[1], z_projected, f"z = {args.z_dim}: means on 2 principal axes")):
    scatter = ax.scatter(points[:5000, 0], points[:5000, 1], c=test_labels[:5000], cmap="tab10", s=3)
    ax.set_title(title)
fig.colorbar(scatter, ax=axes, ticks=range(10), label="digit")
fig.savefig(out / "scatter.png", dpi=110)

# 4. Probes from z (fit on 10,000 training means, scored on the 10,000 test means).
knn = KNeighborsClassifier(5).fit(z_train.numpy(), labels[:10000].numpy()).score(z_test.numpy(), test_labels.numpy())
linear = LogisticRegression(max_iter=2000).fit(z_train.numpy(), labels[:10000].numpy()).score(
    z_test.numpy(), test_labels.numpy())

# 5. Unsupervised clustering: GMM (EM, K = 10) on z vs on the pixels' top principal components.
pixels = images[:10000].double()
centre = pixels.mean(0)
axes_pc = torch.linalg.svd(pixels - centre, full_matrices=False).Vh[: args.z_dim].T
clusterings = {}
for name, train_x, test_x in (("GMM on VAE z", z_train.double(), z_test.double()),
                              (f"GMM on {args.z_dim} pixel PCs", (pixels - centre) @ axes_pc,
                               (x_test.double() - centre) @ axes_pc)):
    em = gmm.fit_em(train_x, 10, n_init=3, seed=args.seed, max_iter=300)
    clusters = gmm.responsibilities(test_x, **em.params()).argmax(1)
    clusterings[name] = cluster_accuracy(test_labels, clusters)

metrics = {"config": vars(args), "knn_accuracy_k5": knn, "linear_probe_accuracy": linear,
           "cluster_accuracy": clusterings}
write_metrics(out / "metrics.json", metrics)
print(f"z = {args.z_dim}: 5-NN accuracy {knn:.4f}, linear probe {linear:.4f}; cluster accuracy "
      + ", ".join(f"{k} {v:.4f}" for k, v in clusterings.items()))
print(f"wrote {out}/manifold.png, interpolation.png (rows: pairs of test digits), scatter.png, metrics.json")
