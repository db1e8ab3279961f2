"""Gaussian mixture on MNIST's top principal components: EM vs SVI (enumeration, mean-field).

    python examples/gmm.py [--components 10] [--pcs 10] [--train 10000]

All three fit the same model from the same k-means++ start; log-likelihoods are exact
(nats per image in PCA space), cluster agreement is with the digit labels.  Writes
metrics.json, table.md and mixture.png into --out.
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

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--components", type=positive_int, default=10)
parser.add_argument("--pcs", type=positive_int, default=10, help="principal components kept")
parser.add_argument("--train", type=positive_int, default=10000)
parser.add_argument("--svi-steps", type=positive_int, default=300, help="full-batch steps, enumeration")
parser.add_argument("--meanfield-steps", type=positive_int, default=600, help="full-batch steps, mean-field")
parser.add_argument("--data-dir", default=None)
parser.add_argument("--out", default="results/gmm")
parser.add_argument("--seed", type=nonnegative_int, default=0)
args = parser.parse_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)

images, labels = load_mnist(args.data_dir, train=True)
images, labels = images[: args.train].double(), labels[: args.train]
test_images, test_labels = load_mnist(args.data_dir, train=False)
centre = images.mean(0)
components = torch.linalg.svd(images - centre, full_matrices=False).Vh[: args.pcs].T  # (784, pcs)
x = (images - centre) @ components
x_test = (test_images.double() - centre) @ components
k = args.components


rows, fitted = [], {}


def report(method, params, seconds):
    ll = gmm.log_likelihood(x, **params).mean().item()
    ll_test = gmm.log_likelihood(x_test, **params).mean().item()
    clusters = gmm.responsibilities(x_test, **params).argmax(1).numpy()
    rows.append({"method": method, "train log p(x)": ll, "test log p(x)": ll_test,
                 "test accuracy (matched)": cluster_accuracy(test_labels, clusters),
                 "test ARI": adjusted_rand_score(test_labels.numpy(), clusters),
                 "test NMI": normalized_mutual_info_score(test_labels.numpy(), clusters),
                 "seconds": seconds})
    fitted[method] = params
    print(f"{method:<36} train log p(x) {ll:9.3f}  test {ll_test:9.3f}  {seconds:6.1f} s")


init = gmm.initial_params(x, k, seed=args.seed)
t0 = time.perf_counter()
em = gmm.fit_em(x, k, init=init, max_iter=500, tol=1e-6)
report(f"EM ({em.n_iter} iterations)", em.params(), time.perf_counter() - t0)

model = gmm.GMM(**init)
t0 = time.perf_counter()
fit(model.enumerated_model, gmm.empty_guide, x, loss="enum", lr=0.05, num_epochs=args.svi_steps,
    batch_size=len(x), seed=args.seed, progress=False)
report("SVI, z enumerated (TraceEnum_ELBO)", model.params(), time.perf_counter() - t0)
pyro.clear_param_store()

model = gmm.GMM(**init)
guide = gmm.MeanFieldGuide(len(x), k, init=gmm.responsibilities(x, **init)).double()
t0 = time.perf_counter()
fit(model.model, guide.guide, x, loss="tracegraph", lr=0.05, num_epochs=args.meanfield_steps,
    batch_size=len(x), seed=args.seed, progress=False)
report("SVI, mean-field q(z) (TraceGraph_ELBO)", model.params(), time.perf_counter() - t0)

table = markdown_table(rows)
(out / "table.md").write_text(table + "\n")
write_metrics(out / "metrics.json", {"config": vars(args), "units": "nats per image (PCA space)",
                                     "rows": rows})

# The fitted mixtures on the first two principal components: test points by cluster, 2-sd ellipses.
fig, axes = plt.subplots(1, len(fitted), figsize=(5 * len(fitted), 4.6), sharex=True, sharey=True)
angle = torch.linspace(0, 2 * torch.pi, 100, dtype=torch.float64)
circle = torch.stack([angle.cos(), angle.sin()])
for ax, (method, params) in zip(axes, fitted.items()):
    clusters = gmm.responsibilities(x_test, **params).argmax(1)
    ax.scatter(x_test[:3000, 0], x_test[:3000, 1], c=clusters[:3000], cmap="tab10", s=3, alpha=0.5)
    for j in range(k):
        chol = torch.linalg.cholesky(params["covariances"][j, :2, :2])
        ellipse = params["means"][j, :2, None] + 2 * chol @ circle
        ax.plot(ellipse[0], ellipse[1], color=plt.cm.tab10(j), lw=1.5)
    ax.set_title(method, fontsize=9)
    ax.set_xlabel("PC 1")
axes[0].set_ylabel("PC 2")
fig.tight_layout()
fig.savefig(out / "mixture.png", dpi=110)
print(table)
print(f"wrote {out}/metrics.json, table.md, mixture.png")
