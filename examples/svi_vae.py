"""Train a VAE on dynamically binarized MNIST with Pyro's SVI and report honest numbers.

    python examples/svi_vae.py                       # the demo (make demo)
    python examples/svi_vae.py --loss dreg --num-particles 5 --eval-samples 5000
    torchrun --nproc_per_node=2 examples/svi_vae.py   # the same run on 2 processes (DDP)

Shows the whole workflow of the library on its main job: :func:`pyro_lvm.train.fit` with a
checkpoint and a per-epoch test ELBO, then the test log-likelihood by importance sampling
(:func:`pyro_lvm.evaluate.log_weights`) and the PSIS diagnostic of those weights (Pareto
k-hat per test image, arviz): can the guide be trusted as a proposal?  Test numbers use one
fixed-seed binarization of the 10,000 test images, so they compare across runs.

Writes into --out: metrics.json (what :func:`main` returns), samples.png,
reconstructions.png, elbo.png, model.pt (the trained VAE: ``VAE.load(path)``) and
checkpoint.pt (resume with --resume).  Without the MNIST files it downloads them into
$PYRO_LVM_DATA, else ./data (--no-download: don't).

Run time on a 2-core CPU, one thread: the defaults (60 epochs, K = 1000) about 6 min (217 s of
training, 122 s of evaluation); ``--epochs 1 --eval-samples 10`` 89 s (34 s of training, 21 s
of evaluation).
"""

import argparse
import time
from pathlib import Path

import torch

import pyro
import pyro.util
from pyro_lvm import distributed, evaluate
from pyro_lvm.cli import int_at_least, nonnegative_int, positive_float, positive_int
from pyro_lvm.data import binarize, fixed_binarization, load_mnist, resolve_device
from pyro_lvm.diagnostics import psis_from_log_weights
from pyro_lvm.infer import LOSSES, log_mean_exp, make_loss
from pyro_lvm.models import VAE
from pyro_lvm.plots import plot_curves, save_image_grid
from pyro_lvm.report import write_metrics
from pyro_lvm.train import decaying_adam, fit

#: The settings --resume cannot change: fit refuses a checkpoint made with other values.
RUN_CONFIG = ("epochs", "batch_size", "lr", "lr_final", "z_dim", "hidden", "loss",
              "num_particles", "seed")


def parse_args(argv=None) -> argparse.Namespace:
    """The command line; a bad value exits with status 2 before any work."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=positive_int, default=60)
    parser.add_argument("--batch-size", type=positive_int, default=256)
    parser.add_argument("--lr", type=positive_float, default=3e-3, help="initial Adam step size")
    parser.add_argument("--lr-final", type=positive_float, default=3e-4,
                        help="step size of the last epoch (geometric decay per epoch)")
    parser.add_argument("--z-dim", type=positive_int, default=50)
    parser.add_argument("--hidden", type=positive_int, nargs="+", default=[400], help="hidden layer widths")
    parser.add_argument("--loss", default="meanfield", choices=sorted(LOSSES))
    parser.add_argument("--num-particles", type=positive_int, default=1)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--data-dir", default=None, help="folder with MNIST/raw (default $PYRO_LVM_DATA)")
    parser.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                        help="download MNIST when absent (default: yes)")
    parser.add_argument("--out", default="results/svi_vae")
    parser.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.pt")
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--eval-samples", type=int_at_least(2), default=1000,
                        help="importance samples K per test image for log p(x)")
    args = parser.parse_args(argv)
    if args.loss == "vimco" and args.num_particles < 2:  # its leave-one-out baselines need two
        parser.error("argument --num-particles: --loss vimco needs an integer >= 2")
    return args


def load_data(args, device, ctx):
    """The training grey levels (fit binarizes each batch afresh) and the test images
    binarized once, with a fixed seed."""
    with distributed.main_first(ctx):  # rank 0 downloads (if need be) before the others read
        x_train, _ = load_mnist(args.data_dir, train=True, device=device, download=args.download)
        x_test, _ = load_mnist(args.data_dir, train=False, device=device, download=args.download)
    return x_train, fixed_binarization(x_test)


def train(args, vae, x_train, x_test, out):
    """:func:`fit` with a checkpoint per epoch and the test ELBO after each."""
    device = x_test.device

    def test_elbo(epoch, history):
        # The same seed every epoch (common random numbers, training's RNG untouched): the curve
        # moves only with the parameters, and a reloaded model.pt reproduces the last value.
        state = pyro.util.get_rng_state()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            pyro.set_rng_seed(args.seed)
            value = evaluate.elbo(vae.model, vae.guide, x_test).mean().item()
        pyro.util.set_rng_state(state)
        return {"test_elbo": value}

    return fit(vae.model, vae.guide, x_train, loss=make_loss(args.loss, args.num_particles),
               optim=decaying_adam(args.lr, args.lr_final, args.epochs), num_epochs=args.epochs,
               batch_size=args.batch_size, transform=binarize, seed=args.seed,
               checkpoint=out / "checkpoint.pt", resume=args.resume,
               config={key: getattr(args, key) for key in RUN_CONFIG}, callback=test_elbo)


def evaluate_test_set(vae, x_test, num_samples: int) -> dict:
    """Importance-sampled log p(x) per test image (nats), and PSIS on the same weights."""
    t0 = time.perf_counter()
    # Blocks of 100 images with many particles each: the encoder runs once per block.
    log_w = evaluate.log_weights(vae.model, vae.guide, x_test, num_samples=num_samples,
                                 batch_size=100)
    log_px = log_mean_exp(log_w, 0)
    psis = psis_from_log_weights(log_w)  # can these weights (and the guide) be trusted?
    return {
        "test_log_likelihood": log_px.mean().item(),
        "test_log_likelihood_stderr": (log_px.std() / len(log_px) ** 0.5).item(),
        "test_log_likelihood_num_samples": num_samples,
        "psis_khat_share_above_0.7": psis.share_above,
        "psis_khat_median": psis.khat.median().item(),
        "psis_ess_median": psis.ess.median().item(),
        "eval_seconds": time.perf_counter() - t0,
    }


def save_pictures(vae, x_test, metrics, out, loss):
    """samples.png, reconstructions.png (each test digit beside its reconstruction), elbo.png."""
    with torch.no_grad():
        save_image_grid(vae.sample(64), out / "samples.png")
        pairs = torch.stack([x_test[:32], vae.reconstruct(x_test[:32])], 1).reshape(64, -1)
        save_image_grid(pairs, out / "reconstructions.png")
    plot_curves({"train ELBO": (metrics["epochs"], metrics["train_elbo"]),
                 "test ELBO": (metrics["epochs"], metrics["test_elbo"])}, out / "elbo.png",
                title=f"VAE on MNIST, loss={loss}")


def main(argv=None) -> dict:
    """Train, evaluate and write; returns what metrics.json holds (``{}`` on ranks > 0)."""
    args = parse_args(argv)
    device = distributed.local_device(resolve_device(args.device))  # under torchrun: this rank's GPU
    ctx = distributed.init(device)  # one process, or this rank of torchrun's
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pyro.set_rng_seed(args.seed)
    x_train, x_test = load_data(args, device, ctx)
    vae = VAE(z_dim=args.z_dim, hidden_dims=args.hidden).to(device)
    # Pyro's per-site checks cost a host sync each; fit and evaluate check the data at their doors.
    with pyro.validation_enabled(False):
        history = train(args, vae, x_train, x_test, out)
        if not ctx.is_main:  # distributed: evaluation and files are rank 0's
            return {}
        evaluation = evaluate_test_set(vae, x_test, args.eval_samples)
    metrics = {
        "config": vars(args), "device": str(device), "world_size": ctx.world_size,
        "backend": ctx.backend, "epochs": history.epoch, "train_elbo": [-v for v in history.loss],
        "test_elbo": [m["test_elbo"] for m in history.metrics], "seconds_per_epoch": history.seconds,
        **evaluation, "units": "nats per image",
    }
    written = write_metrics(out / "metrics.json", metrics)
    vae.save(out / "model.pt")
    save_pictures(vae, x_test, metrics, out, args.loss)
    print(f"test ELBO {metrics['test_elbo'][-1]:.2f}, test log p(x) {metrics['test_log_likelihood']:.2f} "
          f"nats/image (K={args.eval_samples}), PSIS k-hat > 0.7 for "
          f"{100 * metrics['psis_khat_share_above_0.7']:.1f}% of test images, "
          f"{sum(history.seconds):.0f} s training on {device}; "
          f"wrote {out}/metrics.json, model.pt, samples.png, reconstructions.png, elbo.png, checkpoint.pt")
    return written


if __name__ == "__main__":
    main()
