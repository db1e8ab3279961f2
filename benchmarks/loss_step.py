"""Step cost of the K-particle losses on the MNIST VAE, relative to a single-particle ELBO step.

    python benchmarks/loss_step.py [--particles 5] [--batch-size 256] [--device auto]
                                   [--steps 20] [--rounds 3]

Target (issue: ELBO variants): iwae and dreg with K=5 at <= 3x a Trace_ELBO step; Pyro's own
RenyiELBO(alpha=0, K=5, vectorize_particles=True) is timed in the same run for reference.
"""

import argparse

import torch

import pyro
import pyro.optim
from pyro.infer import SVI, RenyiELBO
from pyro_lvm.data import fixed_binarization, load_mnist, resolve_device
from pyro_lvm.infer import make_loss
from pyro_lvm.models import VAE

from common import compare

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--particles", type=int, default=5)
parser.add_argument("--batch-size", type=int, default=256)
parser.add_argument("--device", default="auto")
parser.add_argument("--data-dir", default=None)
parser.add_argument("--steps", type=int, default=20, help="timed steps per block (7 blocks a round)")
parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every contender")
args = parser.parse_args()
device = resolve_device(args.device)
x = fixed_binarization(load_mnist(args.data_dir, train=True, device=device)[0][:10240])
batches = list(x.split(args.batch_size))
n, k = len(x), args.particles

torch.manual_seed(0)
vae = VAE().to(device)


def svi_step(loss):
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-4}), loss)
    return lambda b: svi.step(b, num_data=n)


with pyro.validation_enabled(False):
    compare({
        "elbo K=1 (Trace_ELBO)": svi_step(make_loss("elbo")),
        f"iwae K={k}": svi_step(make_loss("iwae", k)),
        f"dreg K={k}": svi_step(make_loss("dreg", k)),
        f"vimco K={k}": svi_step(make_loss("vimco", k)),
        f"elbo K={k} (Trace_ELBO, vectorized)": svi_step(make_loss("elbo", k)),
        f"Pyro RenyiELBO(alpha=0) K={k}, vectorized": svi_step(
            RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True)),
    }, batches, baseline="elbo K=1 (Trace_ELBO)", rounds=args.rounds, steps=args.steps)
print(f"device {device}, batch {args.batch_size}, K={k}")
