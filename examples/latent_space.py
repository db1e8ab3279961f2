"""What the latents are for: representation learning with the MNIST VAE.

    python examples/latent_space.py [--epochs 10] [--z-dim 20]

Shows what the encoder of a trained VAE gives: two VAEs are trained on dynamically binarized
MNIST (z = --z-dim and z = 2), then: the 2-D model's decoded manifold; interpolations in z
between test digits; test posterior means coloured by label; k-NN and linear-probe accuracy
from z; and unsupervised clustering of z with the library's GMM (EM), next to the same GMM on
the raw pixels' top principal components.

Writes manifold.png, interpolation.png (rows: pairs of test digits), scatter.png and
metrics.json (what :func:`main` returns) into --out.

Run time on a 2-core CPU, one thread: the defaults
13 min (two VAEs of 10 epochs); ``--epochs 1 --z-dim 2`` 1.5 to 2.5 min.
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


def parse_args(argv=None) -> argparse.Namespace:
    """The command line; a bad value exits with status 2 before any work."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=positive_int, default=10)
    parser.add_argument("--z-dim", type=positive_int, default=20)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="results/latent_space")
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    return parser.parse_args(argv)


def train_vae(args, images, z_dim: int) -> VAE:
    """A VAE (one hidden layer of 400) trained for --epochs on the grey levels ``images``."""
    torch.manual_seed(args.seed)
    vae = VAE(z_dim=z_dim, hidden_dims=(400,))
    with pyro.validation_enabled(False):  # fit checks the data at its door
        fit(vae.model, vae.guide, images, loss=make_loss("meanfield"),
            optim=decaying_adam(3e-3, 3e-4, args.epochs),
            num_epochs=args.epochs, batch_size=256, transform=binarize, seed=args.seed, progress=False)
    pyro.clear_param_store()
    return vae


@torch.no_grad()
def draw_pictures(vae, vae2, z_test, out):
    """manifold.png: the 2-D model's decoded 15 x 15 grid of prior quantiles;
    interpolation.png: 8 pairs of test digits, 10 steps on the line between their means."""
    quantiles = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.03, 0.97, 15))
    grid = torch.cartesian_prod(quantiles.flip(0), quantiles)[:, [1, 0]]
    save_image_grid(vae2.decode(grid), out / "manifold.png", nrow=15)
    steps = torch.linspace(0, 1, 10)[:, None]
    strips = [vae.decode(z_test[2 * i] * (1 - steps) + z_test[2 * i + 1] * steps) for i in range(8)]
    save_image_grid(torch.cat(strips), out / "interpolation.png", nrow=10)


def scatter_means(z2_test, z_test, test_labels, z_dim: int, path):
    """Posterior means by label: the 2-D model's, and the first two principal axes of z."""
    centred = z_test - z_test.mean(0)
    z_projected = centred @ torch.linalg.svd(centred, full_matrices=False).Vh[:2].T
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, points, title in ((axes[0], z2_test, "z = 2: posterior means"),
                              (axes[1], z_projected, f"z = {z_dim}: means on 2 principal axes")):
        scatter = ax.scatter(points[:5000, 0], points[:5000, 1], c=test_labels[:5000], cmap="tab10", s=3)
        ax.set_title(title)
    fig.colorbar(scatter, ax=axes, ticks=range(10), label="digit")
    fig.savefig(path, dpi=110)


def probes(z_train, train_labels, z_test, test_labels) -> dict:
    """5-NN and logistic-regression accuracy from z (fit on training means, scored on test)."""
    train, test = (z_train.numpy(), train_labels.numpy()), (z_test.numpy(), test_labels.numpy())
    return {"knn_accuracy_k5": KNeighborsClassifier(5).fit(*train).score(*test),
            "linear_probe_accuracy": LogisticRegression(max_iter=2000).fit(*train).score(*test)}


def clustering(args, images, x_test, z_train, z_test, test_labels) -> dict:
    """Matched accuracy of GMM (EM, K = 10) clusters of z and of the pixels' top --z-dim
    principal components."""
    pixels = images[:10000].double()
    centre = pixels.mean(0)
    axes_pc = torch.linalg.svd(pixels - centre, full_matrices=False).Vh[: args.z_dim].T
    accuracy = {}
    for name, train_x, test_x in (("GMM on VAE z", z_train.double(), z_test.double()),
                                  (f"GMM on {args.z_dim} pixel PCs", (pixels - centre) @ axes_pc,
                                   (x_test.double() - centre) @ axes_pc)):
        em = gmm.fit_em(train_x, 10, n_init=3, seed=args.seed, max_iter=300)
        clusters = gmm.responsibilities(test_x, **em.params()).argmax(1)
        accuracy[name] = cluster_accuracy(test_labels, clusters)
    return accuracy


def main(argv=None) -> dict:
    """Train both VAEs, draw, probe, cluster and write; returns what metrics.json holds."""
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, labels = load_mnist(args.data_dir, train=True)
    test_images, test_labels = load_mnist(args.data_dir, train=False)
    x_test = fixed_binarization(test_images)
    vae, vae2 = train_vae(args, images, args.z_dim), train_vae(args, images, 2)
    with torch.no_grad():
        z_train = vae.encode(fixed_binarization(images[:10000]))[0]
        z_test, z2_test = vae.encode(x_test)[0], vae2.encode(x_test)[0]
    draw_pictures(vae, vae2, z_test, out)
    scatter_means(z2_test, z_test, test_labels, args.z_dim, out / "scatter.png")
    accuracy = probes(z_train, labels[:10000], z_test, test_labels)
    clusters = clustering(args, images, x_test, z_train, z_test, test_labels)
    written = write_metrics(out / "metrics.json", {"config": vars(args), **accuracy,
                                                   "cluster_accuracy": clusters})
    print(f"z = {args.z_dim}: 5-NN accuracy {accuracy['knn_accuracy_k5']:.4f}, linear probe "
          f"{accuracy['linear_probe_accuracy']:.4f}; cluster accuracy "
          + ", ".join(f"{k} {v:.4f}" for k, v in clusters.items()))
    print(f"wrote {out}/manifold.png, interpolation.png (rows: pairs of test digits), scatter.png, metrics.json")
    return written


if __name__ == "__main__":
    main()
