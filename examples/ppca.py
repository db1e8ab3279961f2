"""Probabilistic PCA on real MNIST: closed form vs gradient vs SVI with each guide.

    python examples/ppca.py [--latent-dim 16] [--train 5000] [--steps 1500]

Shows a model whose answers are all known in closed form (:mod:`pyro_lvm.models.ppca`):
every number is exact, log p(x) through the low-rank Gaussian marginal and the ELBO of a
Gaussian guide as log p(x) - KL(q || p(z|x)), both in nats per image, so the gap each guide
leaves is measured, not estimated.

Writes metrics.json (what :func:`main` returns), table.md, components.png,
reconstructions.png and latents_arviz.txt (az.summary of the amortised guide's latents of
three test images beside their exact posterior) into --out.

Run time on a 2-core CPU, one thread: the defaults
23 min (1500 full-batch SVI steps per guide: 3 to 8 min each); ``--train 200 --latent-dim 2
--steps 1`` 35 to 45 s, most of it importing arviz.
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

CLOSED_FORM, AMORTISED_FULL = "closed form (Tipping & Bishop)", "SVI, amortised linear (full cov)"


def parse_args(argv=None) -> argparse.Namespace:
    """The command line; a bad value exits with status 2 before any work."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latent-dim", type=positive_int, default=16)
    parser.add_argument("--train", type=positive_int, default=2000, help="training images")
    parser.add_argument("--steps", type=positive_int, default=1500, help="full-batch SVI steps per guide")
    parser.add_argument("--lr", type=positive_float, default=0.01)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="results/ppca")
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    return parser.parse_args(argv)


def report(method, model, seconds, x, x_test, guide=None) -> dict:
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
    print(f"{method:<34} train log p(x) {row['train log p(x)']:9.2f}  gap {row['gap = KL(q||p(z|x))']:7.3f}  {seconds:6.1f} s")
    return row


def fit_maximum_likelihood(x, q: int, seed: int) -> dict:
    """``{method: (model, seconds)}``: the closed form and L-BFGS on the exact log p(x)."""
    fits = {CLOSED_FORM: lambda: ppca.fit_closed_form(x, q),
            "gradient (L-BFGS on exact log p)": lambda: ppca.fit_gradient(x, q, seed=seed)}
    fitted = {}
    for method, fit_ml in fits.items():
        t0 = time.perf_counter()
        ml = fit_ml()
        model = ppca.PPCA(x.shape[1], q, W=ml.W, mean=ml.mean, noise_scale=ml.noise_scale).double()
        fitted[method] = model, time.perf_counter() - t0
    return fitted


def fit_svi(args, x) -> dict:
    """``{method: (model, guide, seconds)}``: SVI from the same start with each guide (None:
    the exact posterior), in float32 (4x faster here); the models and guides come back in
    float64, so every reported number is."""
    n, d, q = len(x), x.shape[1], args.latent_dim
    guides = {
        "SVI, exact-posterior guide": lambda: None,
        "SVI, mean-field local guide": lambda: ppca.MeanFieldGuide(n, q),
        AMORTISED_FULL: lambda: ppca.AmortisedLinearGuide(d, q, "full"),
        "SVI, amortised linear (diagonal)": lambda: ppca.AmortisedLinearGuide(d, q, "diagonal"),
    }
    x32, fitted = x.float(), {}
    for method, make_guide in guides.items():
        torch.manual_seed(args.seed)
        model = ppca.PPCA(d, q, mean=x32.mean(0), noise_scale=0.3)
        guide = make_guide()
        t0 = time.perf_counter()
        with pyro.validation_enabled(False):  # fit checks the data at its door
            fit(model.model, model.exact_guide if guide is None else guide.guide, x32, loss="elbo",
                lr=args.lr, num_epochs=args.steps, batch_size=n, seed=args.seed, progress=False)
        seconds = time.perf_counter() - t0
        fitted[method] = model.double(), guide if guide is None else guide.double(), seconds
        pyro.clear_param_store()
    return fitted


def latents_summary(model, guide, x):
    """az.summary of the guide's latents of ``x`` (arviz InferenceData) beside the exact
    posterior at the same model parameters (a full-covariance linear guide can match it)."""
    idata = to_inference_data(model.model, guide.guide, x, num_samples=4000)
    summary = import_arviz().summary(idata, var_names=["z"], kind="stats")
    loc, cov = model.posterior(x)
    summary["exact mean"] = loc.flatten().tolist()
    summary["exact sd"] = cov.diagonal().sqrt().repeat(len(x)).tolist()
    return summary


def draw_pictures(models: dict, x_test, out):
    """components.png: the learned components (columns of W, scaled to [0, 1]);
    reconstructions.png: test digits, then W E[z|x] + mu by each model."""
    components, recons = [], [x_test[:8]]
    for model in models:
        W = model.W.detach().T[:8]
        components.append((W - W.amin(1, keepdim=True)) / (W.amax(1, keepdim=True) - W.amin(1, keepdim=True)))
        loc, _ = model.posterior(x_test[:8])
        recons.append((loc @ model.W.detach().T + model.mean.detach()).clamp(0, 1))
    save_image_grid(torch.cat(components), out / "components.png", nrow=8)
    save_image_grid(torch.cat(recons), out / "reconstructions.png", nrow=8)


def main(argv=None) -> dict:
    """Fit every way, score exactly and write; returns what metrics.json holds."""
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x = load_mnist(args.data_dir, train=True)[0][: args.train].double()
    x_test = load_mnist(args.data_dir, train=False)[0][:1000].double()
    ml, svi = fit_maximum_likelihood(x, args.latent_dim, args.seed), fit_svi(args, x)
    rows = [report(method, model, seconds, x, x_test) for method, (model, seconds) in ml.items()]
    rows += [report(method, model, seconds, x, x_test, guide)
             for method, (model, guide, seconds) in svi.items()]

    summary = latents_summary(*svi[AMORTISED_FULL][:2], x_test[:3])
    (out / "latents_arviz.txt").write_text(summary.to_string() + "\n")
    print(summary.head(6).to_string())
    table = markdown_table(rows, digits=3)
    (out / "table.md").write_text(table + "\n")
    written = write_metrics(out / "metrics.json", {"config": vars(args), "units": "nats per image",
                                                   "rows": rows})
    draw_pictures([ml[CLOSED_FORM][0], svi[AMORTISED_FULL][0]], x_test, out)
    print(table)
    print(f"wrote {out}/metrics.json, table.md, components.png (rows: closed form, SVI amortised), "
          f"reconstructions.png (rows: test digits, closed form, SVI amortised)")
    return written


if __name__ == "__main__":
    main()
