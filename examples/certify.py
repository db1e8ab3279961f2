"""Certify the demo VAE's test log-likelihood: importance sampling beside annealed importance
sampling, and the bidirectional Monte Carlo sandwich that says how far AIS can be trusted.

    python examples/certify.py [--model results/svi_vae/model.pt] [--steps 10 100 1000]
    python examples/certify.py --device cuda --ais-images 1000 --sim-images 100 --chains 16

Shows, on the demo's trained VAE (``--model``, default ``results/svi_vae/model.pt`` from
``examples/svi_vae.py``; when absent a VAE is trained here for ``--train-epochs`` epochs and
saved as ``--out/model.pt``) and the demo's fixed binarization of the MNIST test images:

* importance sampling with the guide as proposal (:func:`pyro_lvm.evaluate.log_likelihood`)
  at K = ``--is-samples`` on the first ``--images`` test images;
* AIS (:func:`pyro_lvm.evaluate.ais_log_likelihood`) at each of ``--steps`` on the first
  ``--ais-images`` of them, from the guide, ``--chains`` chains of ``--leapfrog``-step HMC;
* BDMC (:func:`pyro_lvm.evaluate.bdmc`) on ``--sim-images`` images simulated from the VAE
  at each of ``--steps``: the gap between reverse (upper) and forward (lower) AIS bounds the
  error of AIS at that setting on data from the model; a power law ``gap = a T^-b`` through
  the settings around a gap of 1 nat (fitted to all of them, and extrapolated, when even the
  largest leaves more) gives the steps that precision takes.

Costs are decoder evaluations per image (AIS's each with a backward pass: about
``chains * (1 + (steps - 1) * (leapfrog + 1))``) and seconds.

Writes metrics.json (what :func:`main` returns), table.md and certify.png (estimate against
cost on test images; the sandwich against steps on simulated images) into ``--out``.

Run time on a 2-core CPU, one thread: the defaults (AIS on 100 test images with 4 chains,
``--steps 10 100 1000``, BDMC on 50 simulated images; 1.0e7 decoder evaluations with
gradients and 6e6 without) 1330 s of CPU time, 22 min.  The second command line, with
``--steps 100 1000 10000 --block 500`` (Wu et al.'s scale: 1,000 images, 16 chains), costs
about 2.3e9 decoder evaluations with gradients, some 50 hours of one CPU core (76-110
microseconds each): a GPU's job.
"""

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import pyro
from pyro_lvm import evaluate
from pyro_lvm.cli import int_at_least, nonnegative_int, positive_float, positive_int
from pyro_lvm.data import binarize, fixed_binarization, load_mnist, resolve_device
from pyro_lvm.models import VAE
from pyro_lvm.plots import plt
from pyro_lvm.report import write_metrics
from pyro_lvm.train import decaying_adam, fit

#: The precision BDMC is asked to certify, nats per image.
TARGET_GAP = 1.0


def parse_args(argv=None) -> argparse.Namespace:
    """The command line; a bad value exits with status 2 before any work."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="results/svi_vae/model.pt", help="a saved VAE")
    parser.add_argument("--train-epochs", type=positive_int, default=5,
                        help="epochs of a VAE trained here when --model is absent")
    parser.add_argument("--images", type=positive_int, default=1000, help="test images for IS")
    parser.add_argument("--is-samples", type=int_at_least(2), nargs="+", default=[1000, 5000])
    parser.add_argument("--ais-images", type=positive_int, default=100,
                        help="test images for AIS (the first of --images)")
    parser.add_argument("--sim-images", type=positive_int, default=50,
                        help="images simulated from the VAE for BDMC")
    parser.add_argument("--steps", type=positive_int, nargs="+", default=[10, 100, 1000],
                        help="AIS num_steps settings")
    parser.add_argument("--chains", type=positive_int, default=4)
    parser.add_argument("--leapfrog", type=positive_int, default=10)
    parser.add_argument("--step-size", type=positive_float, default=0.05)
    parser.add_argument("--block", type=positive_int, default=50, help="images per AIS call")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--data-dir", default=None, help="folder with MNIST/raw")
    parser.add_argument("--out", default="results/certify")
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    args = parser.parse_args(argv)
    if args.ais_images > args.images:
        parser.error("argument --ais-images: must not exceed --images")
    return args


def load_or_train(args, device, out: Path) -> VAE:
    """The saved VAE, or the demo's recipe trained for ``--train-epochs`` epochs."""
    if Path(args.model).exists():
        return VAE.load(args.model, device=device).eval()
    print(f"{args.model} not found: training a VAE for {args.train_epochs} epochs")
    x_train = load_mnist(args.data_dir, train=True, device=device)[0]
    vae = VAE().to(device)
    with pyro.validation_enabled(False):
        fit(vae.model, vae.guide, x_train, loss="meanfield", num_epochs=args.train_epochs,
            batch_size=256, optim=decaying_adam(3e-3, 3e-4, args.train_epochs),
            transform=binarize, seed=args.seed)
    vae.save(out / "model.pt")
    return vae.eval()


def ais_cost(steps: int, args) -> int:
    """Decoder evaluations (each with a backward pass) per image of one AIS run."""
    return args.chains * (1 + (steps - 1) * (args.leapfrog + 1))


def importance_sampling(vae, x, args) -> list:
    """One row per K: IS estimate per image, seconds, cost."""
    rows = []
    for k in args.is_samples:
        pyro.set_rng_seed(args.seed)
        t0 = time.perf_counter()
        per_image = evaluate.log_likelihood(vae.model, vae.guide, x, num_samples=k, batch_size=50)
        rows.append({"method": f"IS K={k}", "K": k, "per_image": per_image.cpu(),
                     "seconds": time.perf_counter() - t0, "evaluations": k})
    return rows


def _blocks(x, args, desc):
    """Starts of the blocks of ``--block`` images, each seeded by its index: the same images
    are simulated, and the same guide draws start the chains, at every setting."""
    for i, start in enumerate(tqdm(range(0, len(x), args.block), desc=desc, unit="block",
                                   leave=False)):
        pyro.set_rng_seed(args.seed + i)
        yield start


def annealed(vae, x, args) -> list:
    """One row per num_steps: the AIS estimate per image of ``x`` and its diagnostics."""
    rows = []
    for steps in args.steps:
        t0, parts = time.perf_counter(), []
        for start in _blocks(x, args, f"AIS {steps} steps"):
            parts.append(evaluate.ais_log_likelihood(
                vae.model, vae.guide, x[start:start + args.block], num_steps=steps,
                num_chains=args.chains, num_leapfrog=args.leapfrog, step_size=args.step_size,
                return_diagnostics=True))
        rows.append({"method": f"AIS {steps} steps", "steps": steps,
                     "per_image": torch.cat([p.log_likelihood for p in parts]).cpu(),
                     "stderr": torch.cat([p.stderr for p in parts]).cpu(),
                     "acceptance": torch.cat([p.acceptance_rate for p in parts]).mean().item(),
                     "seconds": time.perf_counter() - t0, "evaluations": ais_cost(steps, args)})
    return rows


def sandwich(vae, shape_like, args) -> list:
    """One row per num_steps: BDMC lower and upper bounds on simulated images."""
    rows = []
    for steps in args.steps:
        t0, lower, upper = time.perf_counter(), [], []
        for start in _blocks(shape_like, args, f"BDMC {steps} steps"):
            result = evaluate.bdmc(vae.model, vae.guide, shape_like[start:start + args.block],
                                   num_steps=steps, num_chains=args.chains,
                                   num_leapfrog=args.leapfrog, step_size=args.step_size)
            lower.append(result.lower)
            upper.append(result.upper)
        lower, upper = torch.cat(lower).cpu(), torch.cat(upper).cpu()
        gap = upper - lower
        rows.append({"steps": steps, "lower": lower.mean().item(), "upper": upper.mean().item(),
                     "gap": gap.mean().item(),
                     "gap_stderr": (gap.std() / math.sqrt(len(gap))).item(),
                     "seconds": time.perf_counter() - t0, "evaluations": 2 * ais_cost(steps, args)})
    return rows


def steps_for_gap(rows, target: float = TARGET_GAP) -> dict:
    """Steps for a mean BDMC gap below ``target``: the power law ``gap = a T^-b`` through
    the two settings around the crossing (log-log interpolation), or, when no setting
    reaches it, fitted by least squares in log-log to all positive gaps and extrapolated;
    ``measured`` is the fewest measured steps below ``target`` (None when none is)."""
    rows = sorted(rows, key=lambda r: r["steps"])
    below = [r for r in rows if r["gap"] < target]
    points = [(r["steps"], r["gap"]) for r in rows if r["gap"] > 0]
    if below and below[0] is not rows[0]:
        pair = rows[rows.index(below[0]) - 1], below[0]
        points = [(r["steps"], r["gap"]) for r in pair if r["gap"] > 0]
    result = {"measured": below[0]["steps"] if below else None, "steps": None}
    if below and below[0] is rows[0] or len(points) < 2:
        return result
    slope, intercept = np.polyfit(np.log([p[0] for p in points]), np.log([p[1] for p in points]), 1)
    if slope < 0:
        result.update(steps=int(math.ceil(math.exp((math.log(target) - intercept) / slope))),
                      exponent=float(-slope), prefactor=float(math.exp(intercept)))
    return result


def table(is_rows, ais_rows, bdmc_rows, n_ais) -> str:
    """table.md: estimates on test images (mean over images) and BDMC gaps."""
    lines = ["| method | images | log p(x) | same 100 | evaluations/image | seconds | BDMC gap |",
             "|---|---|---|---|---|---|---|"]
    for r in is_rows:
        lines.append(f"| {r['method']} | {len(r['per_image'])} | {r['per_image'].mean():.2f} | "
                     f"{r['per_image'][:n_ais].mean():.2f} | {r['evaluations']} | "
                     f"{r['seconds']:.0f} | |")
    for r, b in zip(ais_rows, bdmc_rows):
        lines.append(f"| {r['method']} | {len(r['per_image'])} | | {r['per_image'].mean():.2f} | "
                     f"{r['evaluations']} | {r['seconds']:.0f} | {b['gap']:.2f} +- "
                     f"{b['gap_stderr']:.2f} ({b['seconds']:.0f} s) |")
    return "\n".join(lines).replace("same 100", f"first {n_ais}") + "\n"


def draw(is_rows, ais_rows, bdmc_rows, n_ais, path: Path):
    """certify.png: estimate against cost (test images), and the sandwich (simulated)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.plot([r["evaluations"] for r in is_rows], [r["per_image"][:n_ais].mean() for r in is_rows],
              "o-", label="importance sampling (guide)")
    left.plot([r["evaluations"] for r in ais_rows], [r["per_image"].mean() for r in ais_rows],
              "s-", label="AIS (HMC from the guide)")
    left.set(xscale="log", xlabel="decoder evaluations per image",
             ylabel=f"log p(x), nats per image ({n_ais} test images)",
             title="estimates on test images")
    steps = [b["steps"] for b in bdmc_rows]
    right.plot(steps, [b["upper"] for b in bdmc_rows], "v-", label="reverse AIS (upper bound)")
    right.plot(steps, [b["lower"] for b in bdmc_rows], "^-", label="forward AIS (lower bound)")
    right.set(xscale="log", xlabel="AIS steps", ylabel="log p(x), nats per image (simulated)",
              title="BDMC sandwich on simulated images")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    """Run every estimator, write metrics.json, table.md and certify.png; returns the metrics."""
    args = parse_args(argv)
    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    vae = load_or_train(args, device, out)
    x_test = fixed_binarization(load_mnist(args.data_dir, train=False, device=device)[0])
    x = x_test[: args.images]
    with pyro.validation_enabled(False):  # the doors check the data once
        is_rows = importance_sampling(vae, x, args)
        ais_rows = annealed(vae, x[: args.ais_images], args)
        bdmc_rows = sandwich(vae, x_test[: args.sim_images], args)
    needed = steps_for_gap(bdmc_rows)
    (out / "table.md").write_text(table(is_rows, ais_rows, bdmc_rows, args.ais_images))
    draw(is_rows, ais_rows, bdmc_rows, args.ais_images, out / "certify.png")
    metrics = {
        "config": vars(args), "device": str(device), "units": "nats per image",
        "importance_sampling": [
            {"K": r["K"], "images": len(r["per_image"]),
             "log_likelihood": r["per_image"].mean().item(),
             "log_likelihood_ais_images": r["per_image"][: args.ais_images].mean().item(),
             "seconds": r["seconds"], "evaluations_per_image": r["evaluations"]}
            for r in is_rows],
        "ais": [{"steps": r["steps"], "images": len(r["per_image"]),
                 "log_likelihood": r["per_image"].mean().item(),
                 "stderr_chains": (r["stderr"].pow(2).sum().sqrt() / len(r["stderr"])).item(),
                 "acceptance_rate": r["acceptance"], "seconds": r["seconds"],
                 "evaluations_per_image": r["evaluations"]} for r in ais_rows],
        "bdmc": [{**b, "images": args.sim_images} for b in bdmc_rows],
        "steps_for_gap_below_1_nat": needed,
    }
    metrics = write_metrics(out / "metrics.json", metrics)
    print(table(is_rows, ais_rows, bdmc_rows, args.ais_images))
    print(f"steps for a BDMC gap below {TARGET_GAP} nat: {needed}; wrote {out}/metrics.json, "
          "table.md, certify.png")
    return metrics


if __name__ == "__main__":
    main()
