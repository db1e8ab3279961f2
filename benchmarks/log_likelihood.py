"""Seconds of ``evaluate.log_likelihood`` at K importance samples per MNIST test image.

    python benchmarks/log_likelihood.py [--model results/svi_vae/model.pt] [--num-samples 5000]
                                        [--test-size 10000] [--device auto]

Times :func:`pyro_lvm.evaluate.log_likelihood` of a VAE (``--model``: a saved one, e.g. the
demo's ``model.pt``; else the default VAE, untrained, seed 0: the time hardly depends on the
weights) on the fixed-seed binarization of the first ``--test-size`` test images, cut into
passes two ways: the library's defaults (``batch_size=None``, ``max_elements=2**23``) and the
GPU-sized passes ``examples/iwae_table.py`` evaluates with (``batch_size=50``,
``max_elements=2**28``).  Prints one JSON object: per way, seconds (synchronized), the mean
log p(x) and its standard error in nats per image, and on CUDA the peak memory in GiB.
"""

import argparse
import json
import time

import torch

import pyro
from pyro_lvm import evaluate
from pyro_lvm.cli import int_at_least, positive_int
from pyro_lvm.data import fixed_binarization, load_mnist, resolve_device
from pyro_lvm.models import VAE

#: The two ways of cutting K x N into passes: (batch_size, max_elements).
PASSES = {"library defaults": (None, evaluate.MAX_ELEMENTS), "batch 50, 2**28 elements": (50, 2**28)}


def timed(vae, x, num_samples, batch_size, max_elements, device) -> dict:
    """One synchronized call of ``log_likelihood``: seconds, mean and standard error of log p(x)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    log_px = evaluate.log_likelihood(vae.model, vae.guide, x, num_samples=num_samples,
                                     batch_size=batch_size, max_elements=max_elements)
    mean, se = log_px.mean().item(), (log_px.std() / len(log_px) ** 0.5).item()  # .item() syncs
    result = {"seconds": time.perf_counter() - t0, "log_px": mean, "log_px_se": se,
              "batch_size": batch_size, "max_elements": max_elements}
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="a saved VAE (VAE.save); default: untrained")
    parser.add_argument("--num-samples", type=int_at_least(2), default=5000, help="K per image")
    parser.add_argument("--test-size", type=positive_int, default=10_000, help="first N test images")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--data-dir", default=None,
                        help="folder with MNIST/raw (default $PYRO_LVM_DATA)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    x = fixed_binarization(load_mnist(args.data_dir, train=False, device=device)[0][:args.test_size])
    pyro.set_rng_seed(0)
    vae = (VAE.load(args.model, device=device) if args.model else VAE().to(device))
    result = {"model": args.model or "untrained VAE (seed 0)", "device": str(device),
              "num_samples": args.num_samples, "test_size": len(x)}
    for name, (batch_size, max_elements) in PASSES.items():
        result[name] = timed(vae, x, args.num_samples, batch_size, max_elements, device)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
