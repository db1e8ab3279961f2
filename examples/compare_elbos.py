"""Compare ELBO variants side by side: on PPCA (exact answers alongside) and on the MNIST VAE.

    python examples/compare_elbos.py [--draws 50] [--ppca-steps 300] [--vae-epochs 2]

Shows what each loss of :func:`pyro_lvm.infer.make_loss` costs and buys
(:func:`pyro_lvm.compare.compare_losses`): the bound (nats per image) and its standard error
at fixed parameters, the gradient estimator's variance and signal-to-noise ratio for guide and
model parameters over repeated draws, milliseconds per step, and the test log-likelihood after
training from the same start.  "SF" rows draw the guide's latents without a pathwise gradient
(``score_function_guide``), so they use score-function gradients.

Writes table_ppca.md, table_vae.md, compare_ppca.png, compare_vae.png and metrics.json (what
:func:`main` returns) into --out.

Run time on a 2-core CPU, one thread: the defaults
26 min; ``--particles 2 --draws 2 --ppca-steps 1 --vae-epochs 1`` 4 to 5.5 min (eight losses,
each trained and evaluated).
"""

import argparse
from pathlib import Path

import torch

import pyro
from pyro_lvm.cli import int_at_least, nonnegative_int, positive_int
from pyro_lvm.compare import compare_losses, markdown_table, plot_comparison
from pyro_lvm.data import binarize, fixed_binarization, load_mnist
from pyro_lvm.infer import make_loss, score_function_guide
from pyro_lvm.models import VAE, ppca
from pyro_lvm.report import write_metrics
from pyro_lvm.train import fit


def parse_args(argv=None) -> argparse.Namespace:
    """The command line; a bad value exits with status 2 before any work."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--particles", type=int_at_least(2), default=5, help="K for iwae, dreg and vimco")
    parser.add_argument("--draws", type=int_at_least(2), default=50, help="gradient draws per loss")
    parser.add_argument("--ppca-steps", type=positive_int, default=300, help="full-batch training steps, PPCA")
    parser.add_argument("--vae-epochs", type=positive_int, default=2, help="training epochs, VAE")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="results/compare_elbos")
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    return parser.parse_args(argv)


def losses(guide, k: int) -> dict:
    """The rows of the comparison, ``{label: loss or (loss, guide)}``."""
    sf = score_function_guide(guide)
    return {
        "elbo": make_loss("elbo"),
        "meanfield": make_loss("meanfield"),
        "tracegraph SF, no baseline": (make_loss("tracegraph", baseline="none"), sf),
        "tracegraph SF, avg baseline": (make_loss("tracegraph", baseline="decaying_avg"), sf),
        f"iwae K={k}": make_loss("iwae", k),
        f"dreg K={k}": make_loss("dreg", k),
        f"iwae SF K={k}": (make_loss("iwae", k), sf),
        f"vimco SF K={k}": (make_loss("vimco", k), sf),
    }


def compare_ppca(args, images, test_images):
    """PPCA on 1000 MNIST images, q = 10, from the ML model and a diagonal linear guide at
    zero; returns the exact log p(x) and ELBO at the start, and the rows."""
    x, x_test = images[:1000], test_images[:1000]
    torch.manual_seed(args.seed)  # the guide's initial weights
    closed = ppca.fit_closed_form(x, 10)
    model = ppca.PPCA(784, 10, W=closed.W, mean=closed.mean, noise_scale=closed.noise_scale)
    guide = ppca.AmortisedLinearGuide(784, 10, "diagonal")
    exact = {"log p(x) at start": model.log_likelihood(x).mean().item(),
             "ELBO at start (closed form)": (model.log_likelihood(x)
                                             - ppca.kl_to_posterior(guide.distribution(x), x, model)).mean().item()}
    rows = compare_losses(model.model, guide.guide, x, losses(guide.guide, args.particles),
                          num_draws=args.draws, train_steps=args.ppca_steps, lr=0.01, test_data=x_test,
                          exact_log_likelihood=model.log_likelihood, seed=args.seed)
    for row in rows:
        row["test log p(x) (exact)"] = row.pop("test_log_likelihood")
    pyro.clear_param_store()
    return exact, rows


def compare_vae(args, images, test_images):
    """The VAE (z = 20, one hidden layer of 200) after one epoch of pre-training on 10,000
    images; statistics on 256 of them, then --vae-epochs of training with each loss."""
    torch.manual_seed(args.seed)
    vae = VAE(z_dim=20, hidden_dims=(200,))
    x_train = images[:10000]
    with pyro.validation_enabled(False):  # fit and compare_losses check the data at their doors
        fit(vae.model, vae.guide, x_train, num_epochs=1, batch_size=128, lr=2e-3, transform=binarize,
            seed=args.seed, progress=False)
        rows = compare_losses(vae.model, vae.guide, fixed_binarization(images[:256], seed=1),
                              losses(vae.guide, args.particles), num_draws=args.draws,
                              train_steps=args.vae_epochs, train_data=x_train, batch_size=128, lr=1e-3,
                              transform=binarize, test_data=fixed_binarization(test_images[:1000]),
                              eval_samples=200, seed=args.seed)
    for row in rows:
        row["test log p(x) (K=200)"] = row.pop("test_log_likelihood")
    return rows


def main(argv=None) -> dict:
    """Both comparisons, their tables and plots; returns what metrics.json holds."""
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = load_mnist(args.data_dir, train=True)[0]
    test_images = load_mnist(args.data_dir, train=False)[0]

    exact, rows_ppca = compare_ppca(args, images, test_images)
    table_ppca = markdown_table(rows_ppca)
    (out / "table_ppca.md").write_text(
        f"Exact at the start: log p(x) = {exact['log p(x) at start']:.3f}, "
        f"ELBO = {exact['ELBO at start (closed form)']:.3f} nats/image.\n\n{table_ppca}\n")
    plot_comparison(rows_ppca, out / "compare_ppca.png", "PPCA on MNIST (q=10)")
    print("PPCA (exact at start: log p(x) %.3f, ELBO %.3f)" % tuple(exact.values()))
    print(table_ppca)

    rows_vae = compare_vae(args, images, test_images)
    table_vae = markdown_table(rows_vae)
    (out / "table_vae.md").write_text(table_vae + "\n")
    plot_comparison(rows_vae, out / "compare_vae.png", "VAE on MNIST (z=20)")
    print(f"VAE (statistics on 256 training images; training: {args.vae_epochs} epochs on 10,000)")
    print(table_vae)

    written = write_metrics(out / "metrics.json", {"config": vars(args), "units": "nats per image",
                                                   "ppca_exact": exact, "ppca": rows_ppca, "vae": rows_vae})
    print(f"wrote {out}/table_ppca.md, table_vae.md, compare_ppca.png, compare_vae.png, metrics.json")
    return written


if __name__ == "__main__":
    main()
