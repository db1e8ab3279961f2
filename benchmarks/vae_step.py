"""One SVI step of the project's VAE vs a hand-written PyTorch VAE step with identical networks.

    python benchmarks/vae_step.py [--batch-size 256] [--device auto] [--steps 20] [--rounds 3]

Both train the same architecture (784-400-2x50 encoder, 50-400-784 decoder, softplus, the
library's defaults) on batches of real binarized MNIST with Adam; the hand-written step
computes the same single-sample ELBO (Bernoulli log-likelihood + Gaussian log-densities of
one z draw).  Prints both times per step and their ratio, measured in the same run.
"""

import argparse
import copy

import torch
import torch.nn.functional as F

import pyro
import pyro.optim
from pyro.infer import SVI, Trace_ELBO
from pyro_lvm.data import fixed_binarization, load_mnist, resolve_device
from pyro_lvm.models import VAE

from common import compare

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--batch-size", type=int, default=256)
parser.add_argument("--device", default="auto")
parser.add_argument("--data-dir", default=None)
parser.add_argument("--steps", type=int, default=20, help="timed steps per block (7 blocks a round)")
parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every contender")
args = parser.parse_args()
device = resolve_device(args.device)
x = fixed_binarization(load_mnist(args.data_dir, train=True, device=device)[0][:10240])
batches = list(x.split(args.batch_size))
n = len(x)

torch.manual_seed(0)
vae = VAE().to(device)
svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())

hand = copy.deepcopy(vae)  # identical networks, own parameters
optimizer = torch.optim.Adam(hand.parameters(), lr=1e-3)
prior = torch.distributions.Normal(torch.zeros((), device=device), torch.ones((), device=device))


def hand_step(batch):
    loc, scale = hand.encode(batch)
    z = loc + scale * torch.randn_like(loc)
    log_lik = -F.binary_cross_entropy_with_logits(hand.decoder(z), batch, reduction="none").sum(-1)
    log_q = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
    loss = -(n / len(batch)) * (log_lik + prior.log_prob(z).sum(-1) - log_q).sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()  # the same one host sync per step as SVI.step


def validated_step(batch):
    with pyro.validation_enabled(True):  # Pyro's default: checks every distribution's arguments
        return svi.step(batch, num_data=n)


with pyro.validation_enabled(False):
    medians = compare({
        "hand-written PyTorch VAE step": hand_step,
        "pyro_lvm VAE, SVI + Trace_ELBO": lambda b: svi.step(b, num_data=n),
        "pyro_lvm VAE, SVI + Trace_ELBO, validation on": validated_step,
    }, batches, baseline="hand-written PyTorch VAE step", rounds=args.rounds, steps=args.steps)
hand_ms = medians["hand-written PyTorch VAE step"]
print(f"device {device}, batch {args.batch_size}: pyro_lvm/hand-written = "
      f"{medians['pyro_lvm VAE, SVI + Trace_ELBO'] / hand_ms:.2f}x "
      f"(validation on: {medians['pyro_lvm VAE, SVI + Trace_ELBO, validation on'] / hand_ms:.2f}x)")
