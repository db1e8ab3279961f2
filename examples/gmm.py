"""Gaussian mixture on MNIST's top principal components: EM vs SVI (enumeration, mean-field).

    python examples/gmm.py [--components 10] [--covariance-type full] [--pcs 10] [--train 10000]

Shows one model (:class:`pyro_lvm.models.gmm.GMM`) fitted three ways from the same k-means++
start: closed-form EM (:func:`~pyro_lvm.models.gmm.fit_em`), SVI with the assignments
enumerated out (TraceEnum_ELBO), and SVI with a mean-field guide over the assignments
(TraceGraph_ELBO), all with the covariances of --covariance-type (scikit-learn's types).
Log-likelihoods are exact (nats per image in PCA space); cluster agreement is with the digit
labels; the EM fit's BIC on the training images is printed beside them.

Writes metrics.json (what :func:`main` returns), table.md and mixture.png into --out.

Run time on a 2-core CPU, one thread: the defaults 94 s; ``--train 500 --pcs 3 --components 2
--svi-steps 2 --meanfield-steps 2`` (the test's) about 15 s.
"""

import argparse
import time
from pathlib import Path

import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

import pyro
from pyro_lvm.cli import nonnegative_int, positive_int
from pyro_lvm.compare import markdown_table
from pyro_lvm.data import load_mnist
from pyro_lvm.evaluate import cluster_accuracy
from pyro_lvm.models import gmm
from pyro_lvm.plots import plt
from pyro_lvm.report import write_metrics
from pyro_lvm.train import fit


def parse_args(argv=None) -> argparse.Namespace:
    """The command line; a bad value exits with status 2 before any work."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--components", type=positive_int, default=10)
    parser.add_argument("--covariance-type", choices=gmm.COVARIANCE_TYPES, default="full")
    parser.add_argument("--pcs", type=positive_int, default=10, help="principal components kept")
    parser.add_argument("--train", type=positive_int, default=10000)
    parser.add_argument("--svi-steps", type=positive_int, default=300, help="full-batch steps, enumeration")
    parser.add_argument("--meanfield-steps", type=positive_int, default=600, help="full-batch steps, mean-field")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="results/gmm")
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    return parser.parse_args(argv)


def pca_data(args):
    """The first --train training images and all test images on the training images' top
    --pcs principal axes, float64 ``(N, pcs)``, and the test labels."""
    images = load_mnist(args.data_dir, train=True)[0][: args.train].double()
    test_images, test_labels = load_mnist(args.data_dir, train=False)
    centre = images.mean(0)
    components = torch.linalg.svd(images - centre, full_matrices=False).Vh[: args.pcs].T  # (784, pcs)
    return (images - centre) @ components, (test_images.double() - centre) @ components, test_labels


def fit_three_ways(args, x) -> dict:
    """``{method: (params, seconds)}``: EM, SVI with enumeration, SVI with a mean-field guide;
    ``params`` hold the covariance type beside the parameters (``gmm.log_likelihood(x, **params)``)."""
    kind = {"covariance_type": args.covariance_type}
    init = gmm.initial_params(x, args.components, seed=args.seed, **kind)
    fitted = {}
    t0 = time.perf_counter()
    em = gmm.fit_em(x, args.components, init=init, max_iter=500, tol=1e-6, **kind)
    print(f"EM fit: BIC {em.bic(x):.1f} on the training images ({em.num_parameters()} parameters)")
    fitted[f"EM ({em.n_iter} iterations)"] = {**em.params(), **kind}, time.perf_counter() - t0

    model = gmm.GMM(**init, **kind)
    t0 = time.perf_counter()
    fit(model.enumerated_model, gmm.empty_guide, x, loss="enum", lr=0.05, num_epochs=args.svi_steps,
        batch_size=len(x), seed=args.seed, progress=False)
    fitted["SVI, z enumerated (TraceEnum_ELBO)"] = {**model.params(), **kind}, time.perf_counter() - t0
    pyro.clear_param_store()

    model = gmm.GMM(**init, **kind)
    guide = gmm.MeanFieldGuide(len(x), args.components, init=gmm.responsibilities(x, **init, **kind)).double()
    t0 = time.perf_counter()
    fit(model.model, guide.guide, x, loss="tracegraph", lr=0.05, num_epochs=args.meanfield_steps,
        batch_size=len(x), seed=args.seed, progress=False)
    fitted["SVI, mean-field q(z) (TraceGraph_ELBO)"] = {**model.params(), **kind}, time.perf_counter() - t0
    return fitted


def report(method, params, seconds, x, x_test, test_labels) -> dict:
    """Exact train/test log-likelihood and the test clusters' agreement with the labels."""
    ll = gmm.log_likelihood(x, **params).mean().item()
    ll_test = gmm.log_likelihood(x_test, **params).mean().item()
    clusters = gmm.responsibilities(x_test, **params).argmax(1).numpy()
    print(f"{method:<36} train log p(x) {ll:9.3f}  test {ll_test:9.3f}  {seconds:6.1f} s")
    return {"method": method, "train log p(x)": ll, "test log p(x)": ll_test,
            "test accuracy (matched)": cluster_accuracy(test_labels, clusters),
            "test ARI": adjusted_rand_score(test_labels.numpy(), clusters),
            "test NMI": normalized_mutual_info_score(test_labels.numpy(), clusters),
            "seconds": seconds}


def covariance_matrices(params) -> torch.Tensor:
    """``(K, D, D)`` covariance matrices from covariances of any ``covariance_type``."""
    covariances, kind, (k, d) = params["covariances"], params["covariance_type"], params["means"].shape
    if kind == "full":
        return covariances
    if kind == "tied":
        return covariances.expand(k, d, d)
    return torch.diag_embed(covariances if kind == "diag" else covariances[:, None].expand(k, d))


def plot_mixtures(fitted, x_test, path):
    """The fitted mixtures on the first two principal components: test points by cluster,
    2-sd ellipses, one panel per method."""
    fig, axes = plt.subplots(1, len(fitted), figsize=(5 * len(fitted), 4.6), sharex=True, sharey=True)
    angle = torch.linspace(0, 2 * torch.pi, 100, dtype=torch.float64)
    circle = torch.stack([angle.cos(), angle.sin()])
    for ax, (method, (params, _)) in zip(axes, fitted.items()):
        clusters = gmm.responsibilities(x_test, **params).argmax(1)
        ax.scatter(x_test[:3000, 0], x_test[:3000, 1], c=clusters[:3000], cmap="tab10", s=3, alpha=0.5)
        for j, covariance in enumerate(covariance_matrices(params)):
            chol = torch.linalg.cholesky(covariance[:2, :2])
            ellipse = params["means"][j, :2, None] + 2 * chol @ circle
            ax.plot(ellipse[0], ellipse[1], color=plt.cm.tab10(j), lw=1.5)
        ax.set_title(method, fontsize=9)
        ax.set_xlabel("PC 1")
    axes[0].set_ylabel("PC 2")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> dict:
    """Fit, score and write; returns what metrics.json holds."""
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x, x_test, test_labels = pca_data(args)
    fitted = fit_three_ways(args, x)
    rows = [report(method, params, seconds, x, x_test, test_labels)
            for method, (params, seconds) in fitted.items()]
    table = markdown_table(rows)
    (out / "table.md").write_text(table + "\n")
    written = write_metrics(out / "metrics.json", {"config": vars(args), "units": "nats per image (PCA space)",
                                                   "rows": rows})
    plot_mixtures(fitted, x_test, out / "mixture.png")
    print(table)
    print(f"wrote {out}/metrics.json, table.md, mixture.png")
    return written


if __name__ == "__main__":
    main()
