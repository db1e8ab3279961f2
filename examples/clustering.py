"""Clusters from latent variables on MNIST: a Gaussian mixture, a VAE with a mixture prior, M2.

    python examples/clustering.py [--parts pca,vae,vade,m2] [--epochs 30] [--m2-epochs 6]

Shows four parts, each timed (CPU seconds of this process and wall seconds):

* ``pca``: a GMM (full covariances) on the top --pca-dims principal components of the
  training images, K = 1 .. --max-components chosen by BIC (bic.png), scored at the chosen K and
  at K = 10;
* ``vae``: VaDE's pre-training, a VAE (prior N(0, I)) trained for --pretrain-epochs, then a GMM
  (diagonal covariances, EM) on its encoded means: "VAE + GMM on z";
* ``vade``: that GMM as the prior of a :class:`~pyro_lvm.models.MixtureVAE`, trained for --epochs
  with the ``enum`` loss (y summed out exactly); samples drawn per cluster (vade_clusters.png, one
  row per cluster, rows in the order of the digit each cluster is matched to);
* ``m2``: a :class:`~pyro_lvm.models.SemiSupervisedVAE` from --labels-per-class labels per digit
  (100 in all) and the other training images unlabelled, test error per epoch, and the paper's
  "analogies" (m2_analogies.png: a test digit in the first column, then its style z, inferred
  with its predicted class, decoded with each class 0 .. 9).

Cluster accuracy (clusters matched one-to-one to digits, :func:`pyro_lvm.evaluate.cluster_accuracy`)
and normalised mutual information (scikit-learn) on the 10,000 test images; test log p(x) the
importance-sampled bound with --log-px-samples draws (nats per image, fixed binarization).

Writes metrics.json (the table of methods, also printed; what :func:`main` returns) and the
pictures of the parts run (bic.png, vade_clusters.png, m2_analogies.png) into --out.

Run time on a 2-core CPU, one thread: ``pca`` 8 CPU min (BIC over K = 1 .. 20, 10 starts
each); ``vae`` (10 epochs) 8 CPU min; ``vade`` 25 epochs 18 CPU min; ``m2`` (6 epochs) 18 CPU
min, 22 min wall; ``--train-size 600 --test-size 200`` with one epoch each, about 1 min.

Published figures for comparison: VaDE 94.46% clustering accuracy on MNIST (Jiang et al. 2017,
the authors' code); M2 11.97% (+- 1.71) test error with 100 labels (Kingma et al. 2014,
Table 1, as quoted by replications).

M2's batches: with 100 labels among 60,000 images a batch of 200 holds a labelled image a third
of the time; as Pyro's ``ss_vae_M2`` example and the authors' code (labelled rows in each
batch) the labelled rows are seen more often: they are repeated --label-repeats times in the
training tensor (600: half the rows), which weighs their ELBO that many times more, while the
classification term has the weight alpha = --alpha N spread over the N_l labelled rows (repeats
counted).  The paper's alpha is 0.1 N, trained for far longer; the default 3 N anchors the
classifier to the labels within the 6 epochs that fit in 30 minutes, while the decoder learns to
use y: test error 0.224 after the 6 epochs, falling by about 0.005 an epoch.
"""

import argparse
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import normalized_mutual_info_score
from tqdm.auto import tqdm

import pyro
from pyro_lvm.cli import nonnegative_int, positive_float, positive_int
from pyro_lvm.data import binarize, fixed_binarization, load_mnist
from pyro_lvm.evaluate import cluster_accuracy, log_likelihood
from pyro_lvm.infer import make_loss
from pyro_lvm.models import MixtureVAE, SemiSupervisedVAE
from pyro_lvm.models.gmm import fit_em, select_num_components
from pyro_lvm.plots import plot_curves, save_image_grid
from pyro_lvm.report import write_metrics
from pyro_lvm.train import decaying_adam, fit

PARTS = ("pca", "vae", "vade", "m2")
ACTIVATIONS = {"softplus": nn.Softplus, "relu": nn.ReLU}


def parse_args(argv=None) -> argparse.Namespace:
    """The command line; a bad value exits with status 2 before any work."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated parts to run, of {PARTS} (vade needs vae)")
    parser.add_argument("--train-size", type=positive_int, default=60000)
    parser.add_argument("--test-size", type=positive_int, default=10000)
    parser.add_argument("--pca-dims", type=positive_int, default=20)
    parser.add_argument("--pca-rows", type=positive_int, default=10000, help="training rows for the GMM")
    parser.add_argument("--max-components", type=positive_int, default=20)
    parser.add_argument("--n-init", type=positive_int, default=10, help="EM starts per GMM fit")
    parser.add_argument("--z-dim", type=positive_int, default=10)
    parser.add_argument("--pretrain-epochs", type=positive_int, default=10)
    parser.add_argument("--epochs", type=positive_int, default=30, help="MixtureVAE epochs")
    parser.add_argument("--lr", type=positive_float, default=2e-3)
    parser.add_argument("--m2-epochs", type=positive_int, default=6)
    parser.add_argument("--m2-lr", type=positive_float, default=3e-3,
                        help="M2's first step size, decaying to a tenth of it by the last epoch")
    parser.add_argument("--m2-batch-size", type=positive_int, default=200)
    parser.add_argument("--m2-z-dim", type=positive_int, default=50)
    parser.add_argument("--m2-hidden", type=positive_int, nargs="+", default=[500],
                        help="hidden widths of M2's q(z | x, y) (the decoder mirrors them)")
    parser.add_argument("--m2-classifier", type=positive_int, nargs="+", default=[500],
                        help="hidden widths of M2's classifier q(y | x)")
    parser.add_argument("--m2-activation", choices=sorted(ACTIVATIONS), default="softplus")
    parser.add_argument("--labels-per-class", type=positive_int, default=10)
    parser.add_argument("--label-repeats", type=positive_int, default=600)
    parser.add_argument("--alpha", type=positive_float, default=3.0,
                        help="M2's alpha / N (eq. 9; the paper's alpha = 0.1 N)")
    parser.add_argument("--log-px-samples", type=positive_int, default=100)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="results/clustering")
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    args = parser.parse_args(argv)
    args.parts = tuple(p for p in args.parts.split(",") if p)
    unknown = set(args.parts) - set(PARTS)
    if unknown or ("vade" in args.parts and "vae" not in args.parts):
        parser.error(f"--parts takes names of {PARTS}, vade only with vae; got {args.parts}")
    return args


@contextmanager
def timed(times: dict, name: str):
    """Store the CPU seconds (this process) and wall seconds of the block in ``times[name]``."""
    cpu, wall = time.process_time(), time.perf_counter()
    yield
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    times[name] = {"cpu_s": round(cpu, 1), "wall_s": round(wall, 1)}
    tqdm.write(f"{name}: {cpu / 60:.1f} CPU min, {wall / 60:.1f} min wall")


def scores(labels, clusters) -> dict:
    """Matched cluster accuracy and NMI of ``clusters`` against ``labels``."""
    return {"accuracy": cluster_accuracy(labels, clusters),
            "nmi": float(normalized_mutual_info_score(labels.numpy(), clusters.numpy()))}


def gmm_on_pcs(args, images, x_test, test_labels, out) -> dict:
    """K by BIC for a full-covariance GMM on the top principal components; bic.png."""
    pixels = images[:args.pca_rows].double()
    centre = pixels.mean(0)
    axes = torch.linalg.svd(pixels - centre, full_matrices=False).Vh[:args.pca_dims].T
    train, test = (pixels - centre) @ axes, (x_test.double() - centre) @ axes
    best, curve = select_num_components(train, args.max_components, "full", n_init=args.n_init,
                                        seed=args.seed, max_iter=300)
    plot_curves({"BIC": (list(curve), list(curve.values()))}, out / "bic.png", xlabel="K",
                ylabel="BIC (nats)", title=f"GMM on {args.pca_dims} principal components")
    ten = fit_em(train, 10, "full", n_init=args.n_init, seed=args.seed, max_iter=300)
    return {"chosen_K": int(best.weights.shape[0]), "bic": {str(k): v for k, v in curve.items()},
            "at_chosen_K": scores(test_labels, best.predict(test)),
            "at_K_10": scores(test_labels, ten.predict(test))}


def test_log_px(args, model, guide, x_test) -> float:
    """Mean importance-sampled log p(x) of the test images, nats per image."""
    with torch.no_grad():
        return log_likelihood(model, guide, x_test, num_samples=args.log_px_samples,
                              batch_size=100).mean().item()


def pretrain(args, images) -> MixtureVAE:
    """VaDE's pre-training: the MixtureVAE's encoder and decoder trained as a plain VAE."""
    torch.manual_seed(args.seed)
    m = MixtureVAE(z_dim=args.z_dim, hidden_dims=(500, 500))
    fit(m.vae_model, m.guide, images, loss=make_loss("meanfield"),
        optim=decaying_adam(args.lr, args.lr / 10, args.pretrain_epochs),
        num_epochs=args.pretrain_epochs, batch_size=100, transform=binarize, seed=args.seed)
    return m


def cluster_order(clusters, labels, k) -> list:
    """The clusters in the order of the digits they are matched to (Hungarian matching)."""
    counts = np.zeros((k, int(labels.max()) + 1))
    np.add.at(counts, (clusters.numpy(), labels.numpy()), 1)
    rows, cols = linear_sum_assignment(-counts)
    return [int(r) for _, r in sorted(zip(cols, rows))] + sorted(set(range(k)) - set(rows.tolist()))


def train_vade(args, m, images, x_test, test_labels, out) -> dict:
    """The MixtureVAE from its GMM start, with the per-epoch test accuracy; vade_clusters.png."""
    def callback(epoch, history):
        return scores(test_labels, m.cluster(x_test))

    history = fit(m.model, m.guide, images, loss="enum",
                  optim=decaying_adam(args.lr, args.lr / 10, args.epochs), num_epochs=args.epochs,
                  batch_size=100, transform=binarize, seed=args.seed, callback=callback)
    generator = torch.Generator().manual_seed(args.seed)
    order = cluster_order(m.cluster(x_test), test_labels, m.num_components)
    rows = [m.sample(10, generator=generator, component=k) for k in order]
    save_image_grid(torch.cat(rows), out / "vade_clusters.png", nrow=10)
    return {"accuracy_per_epoch": [h["accuracy"] for h in history.metrics],
            "loss_per_epoch": history.loss, "weights": m.prior.weights.tolist()}


def labelled_split(args, images, labels):
    """``(x, y, labelled)``: --labels-per-class images of each digit labelled and repeated
    --label-repeats times, the other training images unlabelled (label -1)."""
    generator = torch.Generator().manual_seed(args.seed)
    chosen = torch.cat([torch.nonzero(labels == c)[:, 0][
        torch.randperm(int((labels == c).sum()), generator=generator)[:args.labels_per_class]]
        for c in range(10)])
    rest = torch.ones(len(labels), dtype=torch.bool)
    rest[chosen] = False
    x = torch.cat([images[rest], images[chosen].repeat(args.label_repeats, 1)])
    y = torch.cat([torch.full((int(rest.sum()),), -1), labels[chosen].repeat(args.label_repeats)])
    labelled = torch.cat([torch.zeros(int(rest.sum()), dtype=torch.bool),
                          torch.ones(len(chosen) * args.label_repeats, dtype=torch.bool)])
    return x, y, labelled


@torch.no_grad()
def analogies(m, x_test, test_labels, path) -> None:
    """The first test image of each digit, then its style decoded with each class (the paper's
    fig. 1): z is the mean of q(z | x, y) at the predicted class y."""
    x = x_test[torch.stack([torch.nonzero(test_labels == c)[0, 0] for c in range(10)])]
    z = m.encode(x, m.classify(x))[0]
    styled = m.decode(torch.arange(10)[None, :], z[:, None, :])  # (10 images, 10 classes, D)
    save_image_grid(torch.cat([x[:, None, :], styled], 1).reshape(-1, x.shape[-1]), path, nrow=11)


def train_m2(args, images, labels, x_test, test_labels, out) -> dict:
    """M2 from 100 labels: test error per epoch; m2_analogies.png."""
    x, y, labelled = labelled_split(args, images, labels)
    alpha = args.alpha * len(x) / int(labelled.sum())  # the paper's alpha = 0.1 N per labelled row
    torch.manual_seed(args.seed)
    m = SemiSupervisedVAE(z_dim=args.m2_z_dim, hidden_dims=args.m2_hidden, alpha=alpha,
                          classifier_dims=args.m2_classifier,
                          activation=ACTIVATIONS[args.m2_activation])

    def callback(epoch, history):
        return {"test_error": (m.classify(x_test) != test_labels).float().mean().item()}

    history = fit(m.model, m.guide, (x, y, labelled), loss="enum",
                  optim=decaying_adam(args.m2_lr, args.m2_lr / 10, args.m2_epochs),
                  num_epochs=args.m2_epochs, batch_size=args.m2_batch_size, transform=binarize, seed=args.seed,
                  callback=callback)
    analogies(m, x_test, test_labels, out / "m2_analogies.png")
    return {"test_error": history.metrics[-1]["test_error"], "alpha_per_labelled_row": alpha,
            "test_error_per_epoch": [h["test_error"] for h in history.metrics],
            "loss_per_epoch": history.loss}


def main(argv=None) -> dict:
    """Run the chosen parts and write metrics.json; returns what it holds."""
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, labels = (t[:args.train_size] for t in load_mnist(args.data_dir, train=True))
    test_images, test_labels = (t[:args.test_size] for t in load_mnist(args.data_dir, train=False))
    x_test = fixed_binarization(test_images)
    times, results, table = {}, {}, []
    with pyro.validation_enabled(False):  # fit and evaluate check the data at their doors
        if "pca" in args.parts:
            with timed(times, "pca"):
                results["pca"] = gmm_on_pcs(args, images, x_test, test_labels, out)
            table.append({"method": f"GMM on {args.pca_dims} PCs, K = 10",
                          **results["pca"]["at_K_10"], "test_log_px": None, "part": "pca"})
        if "vae" in args.parts:
            with timed(times, "vae"):
                m = pretrain(args, images)
                m.init_prior(fixed_binarization(images), n_init=args.n_init, seed=args.seed)
                results["vae"] = {**scores(test_labels, m.cluster(x_test)),
                                  "test_log_px": test_log_px(args, m.vae_model, m.guide, x_test)}
            table.append({"method": "VAE + GMM on z", **results["vae"], "part": "vae"})
        if "vade" in args.parts:
            with timed(times, "vade"):
                results["vade"] = train_vade(args, m, images, x_test, test_labels, out)
                results["vade"].update(scores(test_labels, m.cluster(x_test)),
                                       test_log_px=test_log_px(args, m.marginal_model, m.guide, x_test))
            table.append({"method": "MixtureVAE (VaDE)", "part": "vade",
                          **{k: results["vade"][k] for k in ("accuracy", "nmi", "test_log_px")}})
        if "m2" in args.parts:
            with timed(times, "m2"):
                results["m2"] = train_m2(args, images, labels, x_test, test_labels, out)
    for row in table:
        row["cpu_min"] = round(times[row["part"]]["cpu_s"] / 60, 1)
        row["wall_min"] = round(times[row["part"]]["wall_s"] / 60, 1)
        log_px = "n/a" if row["test_log_px"] is None else f"{row['test_log_px']:.1f}"
        print(f"{row['method']:<28} accuracy {row['accuracy']:.4f}  NMI {row['nmi']:.4f}  "
              f"test log p(x) {log_px}  {row['cpu_min']} CPU min")
    if "m2" in results:
        print(f"M2, {10 * args.labels_per_class} labels: test error {results['m2']['test_error']:.4f}")
    written = write_metrics(out / "metrics.json", {"config": vars(args), "table": table,
                                                   "times": times, **results})
    print(f"wrote {out}/metrics.json and the pictures of the parts run")
    return written


if __name__ == "__main__":
    main()
