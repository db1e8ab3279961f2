"""Run by tests/test_distributed.py under ``torchrun --nproc_per_node=2``: trains a small VAE
with :func:`pyro_lvm.train.fit` and records what each rank saw under ``<out>/ranks-<resume>/``:
``grads<r>.txt`` (a digest of the optimizer's gradients, one line per step, written as it
goes so that a killed run leaves its record) and ``rank<r>.pt`` (history, parameters, writes).

argv: data.pt out_dir num_epochs resume(0/1) [kill_rank kill_at_step]
"""

import hashlib
import os
import signal
import sys

import torch

import pyro
import pyro.optim
from pyro_lvm import checkpoint, train
from pyro_lvm.data import binarize
from pyro_lvm.models import VAE

data, out, num_epochs, resume = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
kill_rank, kill_at = (int(sys.argv[5]), int(sys.argv[6])) if len(sys.argv) > 6 else (-1, -1)
rank = int(os.environ["RANK"])
x = torch.load(data)
writes, steps = [], [0]
record = os.path.join(out, f"ranks-{int(resume)}")
os.makedirs(record, exist_ok=True)
grads = open(os.path.join(record, f"grads{rank}.txt"), "w")


class RecordingAdam(pyro.optim.PyroOptim):
    """Adam that keeps a digest of the gradients it is handed at each step."""

    def __call__(self, params, *args, **kwargs):
        store = pyro.get_param_store()
        flat = torch.cat([p.grad.flatten() for p in sorted(params, key=store.param_name)])
        grads.write(hashlib.sha256(flat.numpy().tobytes()).hexdigest() + "\n")
        grads.flush()
        super().__call__(params, *args, **kwargs)


def transform(batch):
    steps[0] += torch.is_grad_enabled()  # a step's batch, not the door's trace of the pair
    if rank == kill_rank and steps[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)  # a process dying mid-epoch
    return binarize(batch)


real_write = checkpoint.write_atomically  # what save_checkpoint writes with: counts the writes
checkpoint.write_atomically = lambda path, *chunks: (writes.append(rank), real_write(path, *chunks))
torch.manual_seed(0)
vae = VAE(z_dim=8, hidden_dims=(64,))
history = train.fit(vae.model, vae.guide, x, num_epochs=num_epochs, batch_size=100, seed=0,
                    optim=RecordingAdam(torch.optim.Adam, {"lr": 3e-3}), transform=transform,
                    checkpoint=os.path.join(out, "checkpoint.pt"), resume=resume)
torch.save({"loss": history.loss, "epoch": history.epoch, "writes": writes,
            "params": torch.cat([p.detach().flatten() for p in vae.parameters()])},
           os.path.join(record, f"rank{rank}.pt"))

# A guide with local (per-row) parameters cannot be split across processes.
from pyro_lvm.models import ppca  # noqa: E402

pca = ppca.PPCA(784, 2)
try:
    train.fit(pca.model, ppca.MeanFieldGuide(len(x), 2).guide, x, batch_size=len(x), num_epochs=1,
              progress=False)
    local_error = None
except ValueError as err:
    local_error = str(err)
if rank == 0:
    with open(os.path.join(record, "local_error.txt"), "w") as f:
        f.write(str(local_error))
