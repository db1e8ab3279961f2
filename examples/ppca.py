"""Probabilistic PCA on real MNIST: closed form vs gradient vs SVI with each guide.

    python examples/ppca.py [--latent-dim 16] [--train 5000] [--steps 1500]

Every number is exact: log p(x) through the low-rank Gaussian marginal, the ELBO of a
Gaussian guide as log p(x) - KL(q || p(z|x)), both in nats per image.  Writes
metrics.json, table.md, components.png, reconstructions.png and latents_arviz.txt (az.summary
of the amortised guide's latents of three test images beside their exact posterior) into --out.
"""

import argparse
import time
from pathlib import Path

import torch

import pyro
from pyro_lvm.cli import nonnegative_int, positive_float, positive_int
from pyro_lvm.compare import markdown_table
from pyro_lvm.data import load_mnist
from pyro_lvm.diagnostics import import_arviz, to_inference_data
from pyro_lvm.models import ppca
from pyro_lvm.plots import save_image_grid
from pyro_lvm.report import write_metrics
from pyro_lvm.train import fit

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--latent-dim", type=positive_int, default=16)
parser.add_argument("--train", type=positive_int, default=2000, help="training images")
parser.add_argument("--steps", type=positive_int, default=1500, help="full-batch SVI steps per guide")
parser.add_argument("--lr", type=positive_float, default=0.01)
parser.add_argument("--data-dir", default=None)
parser.add_argument("--out", default="results/ppca")
parser.add_argument("--seed", type=nonnegative_int, default=0)
args = parser.parse_args()
az = import_arviz()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)

x = load_mnist(args.data_dir, train=True)[0][: args.train].double()
x_test = load_mnist(args.data_dir, train=False)[0][:1000].double()
n, d, q = len(x), x.shape[1], args.latent_dim
rows, models, fitted_guides = [], {}, {}


def report(method, model, seconds, guide=None):
    """Exact train/test log-likelihood at the model's parameters; exact ELBO and gap on train."""
    with torch.no_grad():
        ll = model.log_likelihood(x)
        row = {"method": method, "train log p(x)": ll.mean().item(),
               "test log p(x)": model.log_likelihood(x_test).mean().item()}
        if guide is not None:
            gap = ppca.kl_to_posterior(guide.distribution(x), x, model)
            row.update({"train ELBO": (ll - gap).mean().item(), "gap = KL(q||p(z|x))": gap.mean().item()})
        else:
            row.update({"train ELBO": row["train log p(x)"], "gap = KL(q||p(z|x))": 0.0})
    row["seconds"] = seconds
    rows.append(row)
    models[method] = model
    print(f"{method:<34} train log p(x) {row['train log p(x)']:9.2f}  gap {row['gap = KL(q||p(z|x))']:7.3f}  {seconds:6.1f} s")


t0 = time.perf_counter()
closed = ppca.fit_closed_form(x, q)
report("closed form (Tipping & Bishop)", ppca.PPCA(d, q, W=closed.W, mean=closed.mean,
                                                    noise_scale=closed.noise_scale).double(),
       time.perf_counter() - t0)
t0 = time.perf_counter()
grad = ppca.fit_gradient(x, q, seed=args.seed)
report("gradient (L-BFGS on exact log p)", ppca.PPCA(d, q, W=grad.W, mean=grad.mean,
                                                      noise_scale=grad.noise_scale).double(),
       time.perf_counter() - t0)

guides = {
    "SVI, exact-posterior guide": lambda model: None,
    "SVI, mean-field local guide": lambda model: ppca.MeanFieldGuide(n, q),
    "SVI, amortised linear (full cov)": lambda model: ppca.AmortisedLinearGuide(d, q, "full"),
    "SVI, amortised linear (diagonal)": lambda model: ppca.AmortisedLinearGuide(d, q, "diagonal"),
}
x32 = x.float()  # SVI runs in float32 (4x faster here); every reported number is float64
for method, make_guide in guides.items():
    torch.manual_seed(args.seed)
    model = ppca.PPCA(d, q, mean=x32.mean(0), noise_scale=0.3)
    guide = make_guide(model)
    t0 = time.perf_counter()
    with pyro.validation_enabled(False):
        fit(model.model, model.exact_guide if guide is None else guide.guide, x32, loss="elbo",
            lr=args.lr, num_epochs=args.steps, batch_size=n, seed=args.seed, progress=False)
    seconds = time.perf_counter() - t0
    report(method, model.double(), seconds, guide if guide is None else guide.double())
    fitted_guides[method] = guide
    pyro.clear_param_store()

# The amortised guide's latents of three test images as arviz InferenceData, beside the exact
# posterior at the same model parameters (a full-covariance linear guide can match it).
method = "SVI, amortised linear (full cov)"
idata = to_inference_data(models[method].model, fitted_guides[method].guide, x_test[:3], num_samples=4000)
summary = az.summary(idata, var_names=["z"], kind="stats")
loc, cov = models[method].posterior(x_test[:3])
summary["exact mean"] = loc.flatten().tolist()
summary["exact sd"] = cov.diagonal().sqrt().repeat(3).tolist()
(out / "latents_arviz.txt").write_text(summary.to_string() + "\n")
print(summary.head(6).to_string())

table = markdown_table(rows, digits=3)
(out / "table.md").write_text(table + "\n")
write_metrics(out / "metrics.json", {"config": vars(args), "units": "nats per image",
                                     "rows": rows})

# The learned components (columns of W, scaled to [0, 1]) and reconstructions W E[z|x] + mu.
components = []
for method in ("closed form (Tipping & Bishop)", "SVI, amortised linear (full cov)"):
    W = models[method].W.detach().T[:8]
    components.append((W - W.amin(1, keepdim=True)) / (W.amax(1, keepdim=True) - W.amin(1, keepdim=True)))
save_image_grid(torch.cat(components), out / "components.png", nrow=8)
recons = [x_test[:8]]
for method in ("closed form (Tipping & Bishop)", "SVI, amortised linear (full cov)"):
    model = models[method]
    loc, _ = model.posterior(x_test[:8])
    recons.append((loc @ model.W.detach().T + model.mean.detach()).clamp(0, 1))
save_image_grid(torch.cat(recons), out / "reconstructions.png", nrow=8)
print(table)
print(f"wrote {out}/metrics.json, table.md, components.png (rows: closed form, SVI amortised), "
      f"reconstructions.png (rows: test digits, closed form, SVI amortised)")
