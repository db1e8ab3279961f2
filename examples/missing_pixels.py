"""Missing-pixel MNIST: the top half of each test digit as latent Bernoulli pixels.

    python examples/missing_pixels.py [--test-images 1000] [--epochs 10]

1. Trains the joint (a VAE) on complete binarized training images.
2. Hides the top half of the first --test-images test digits and infers Bernoulli pixel
   posteriors phi: per image (mean-field, SVI with score-function gradients) and amortised
   (a network trained on training images with their tops hidden); baselines phi = 0.5 and
   phi = training-set pixel means.  Metrics: mean log q(x_top_true) in nats per image and
   the accuracy of round(phi) on the hidden pixels.
3. Estimates log p(x_bottom) with the guides, the prior and the uniform proposal at the
   same K, 10 times each: mean and spread across repeats.
4. Learns from incomplete images: models trained with 0%, 50% and 90% of top halves
   missing, against training on the complete images alone (same number of steps); test
   log-likelihood of full images.
Writes metrics.json and inpainting.png into --out.
"""

import argparse
import copy
import time
from pathlib import Path

import torch

import pyro
from pyro_lvm import evaluate
from pyro_lvm.data import binarize, fixed_binarization, load_mnist
from pyro_lvm.infer import make_loss
from pyro_lvm.models import VAE
from pyro_lvm.models.missing import (AmortisedPixelGuide, MeanFieldPixelGuide, MissingPixelModel,
                                     estimate_log_marginal, inpaint, pixel_log_prob, top_half_mask)
from pyro_lvm.plots import save_image_grid
from pyro_lvm.report import write_metrics
from pyro_lvm.train import decaying_adam, fit

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--test-images", type=int, default=1000)
parser.add_argument("--epochs", type=int, default=10, help="epochs for the joint VAE")
parser.add_argument("--meanfield-steps", type=int, default=1000)
parser.add_argument("--amortised-epochs", type=int, default=10, help="on the 60,000 training images")
parser.add_argument("--samples", type=int, default=100, help="K for log p(x_bottom)")
parser.add_argument("--learning-steps", type=int, default=470, help="SVI steps per missing-data run")
parser.add_argument("--data-dir", default=None)
parser.add_argument("--out", default="results/missing_pixels")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
pyro.set_rng_seed(args.seed)
started = time.perf_counter()

images = load_mnist(args.data_dir, train=True)[0]
test_full = fixed_binarization(load_mnist(args.data_dir, train=False)[0])
x, mask = test_full[: args.test_images], top_half_mask(args.test_images)
metrics = {"config": vars(args), "units": "nats per image"}


# 1. The joint.
torch.manual_seed(args.seed)
vae = VAE(z_dim=20)
with pyro.validation_enabled(False):
    fit(vae.model, vae.guide, images, loss=make_loss("meanfield"),
        optim=decaying_adam(3e-3, 3e-4, args.epochs), num_epochs=args.epochs, batch_size=256,
        transform=binarize, seed=args.seed, progress=False)
model = MissingPixelModel(vae)

# 2. Pixel posteriors for the hidden tops.
t0 = time.perf_counter()
phi_meanfield, samples_meanfield, meanfield = inpaint(model, x, mask, "meanfield",
                                                      steps=args.meanfield_steps, lr=0.05)
metrics["meanfield_seconds"] = time.perf_counter() - t0
# phi starts at the training pixel means; the guide trains its own copy of the z encoder
# (it sees half-completed images, unlike the joint's encoder).
pixel_means = images.mean(0)
amortised = AmortisedPixelGuide(copy.deepcopy(vae), init=pixel_means, learn_encoder=True)
t0 = time.perf_counter()
with pyro.validation_enabled(False):
    fit(model.model, amortised.guide, (images, top_half_mask(len(images))), loss="tracegraph",
        optim=decaying_adam(3e-3, 3e-4, args.amortised_epochs), num_epochs=args.amortised_epochs,
        batch_size=256, transform=binarize, seed=args.seed, progress=False)
metrics["amortised_training_seconds"] = time.perf_counter() - t0
phi_amortised, samples_amortised, _ = inpaint(model, x, mask, amortised)

candidates = {"meanfield": phi_meanfield, "amortised": phi_amortised,
              "phi = 0.5": torch.full_like(x, 0.5),
              "phi = training pixel means": pixel_means.expand_as(x)}
metrics["inference"] = {
    name: {"log_q_true_top": pixel_log_prob(phi, x, mask).mean().item(),
           "pixel_accuracy": ((phi.round() == x) & mask).sum().item() / mask.sum().item()}
    for name, phi in candidates.items()}
for name, m in metrics["inference"].items():
    print(f"{name:<28} log q(x_top) {m['log_q_true_top']:8.2f} nats/image, "
          f"pixel accuracy {m['pixel_accuracy']:.4f}")

# 3. log p(x_bottom) by importance sampling, 10 repeats per proposal at the same K.
n_est = min(200, args.test_images)  # images for the repeated estimates
subset = (x[:n_est], mask[:n_est])
proposals = {
    "guide (mean-field phi)": ("guide", MeanFieldPixelGuide(vae, n_est, init=phi_meanfield[:n_est], trainable=False)),
    "guide (amortised)": ("guide", amortised),
    "prior": ("prior", None),
    "uniform (phi = 0.5)": ("uniform", None),
}
metrics["log_p_bottom"] = {}
with torch.no_grad():
    for name, (proposal, guide) in proposals.items():
        runs = torch.stack([estimate_log_marginal(model, *subset, proposal, guide=guide,
                                                  num_samples=args.samples) for _ in range(10)])
        metrics["log_p_bottom"][name] = {"mean": runs.mean().item(),
                                         "spread_sd_across_repeats": runs.std(0).mean().item()}
        print(f"log p(x_bottom), {name:<24} mean {runs.mean():9.2f}, sd across 10 repeats "
              f"{runs.std(0).mean():.3f} (K={args.samples}, {n_est} images)")

# 4. Learning with missing data: full-image test log-likelihood.
metrics["learning"] = {}
train_y = images[:20000]
for fraction in (0.0, 0.5, 0.9):
    complete = int(round((1 - fraction) * len(train_y)))
    hidden = top_half_mask(len(train_y))
    hidden[:complete] = False  # the first (1 - fraction) of the images stay complete
    runs = {f"{int(100 * fraction)}% tops missing, all images": (train_y, hidden)}
    if fraction > 0:
        runs[f"{int(100 * fraction)}% tops missing, complete images only"] = (
            train_y[:complete], hidden[:complete])
    for name, (data, data_mask) in runs.items():
        torch.manual_seed(args.seed)
        learner = VAE(z_dim=20)
        epochs = max(1, round(args.learning_steps / (len(data) // 256)))
        with pyro.validation_enabled(False):
            fit(MissingPixelModel(learner, learn=True).model,
                AmortisedPixelGuide(learner, init=pixel_means, learn_encoder=True).guide,
                (data, data_mask), loss="tracegraph", optim=decaying_adam(3e-3, 3e-4, epochs),
                num_epochs=epochs, batch_size=256, transform=binarize, seed=args.seed,
                progress=False)
            ll = evaluate.log_likelihood(learner.model, learner.guide, test_full[:1000], num_samples=100)
        metrics["learning"][name] = {"test_log_likelihood": ll.mean().item(), "epochs": epochs,
                                     "images": len(data)}
        print(f"{name:<44} test log p(x) {ll.mean():8.2f} nats/image (K=100), {epochs} epochs")
        pyro.clear_param_store()

# Pictures: observed (hidden shown grey), truth, phi and a sample for each guide.
cols = 10
observed = torch.where(mask[:cols], torch.full_like(x[:cols], 0.5), x[:cols])
rows = [observed, x[:cols], phi_meanfield[:cols], samples_meanfield[0, :cols],
        phi_amortised[:cols], samples_amortised[0, :cols]]
save_image_grid(torch.cat(rows), out / "inpainting.png", nrow=cols)
metrics["seconds"] = time.perf_counter() - started
write_metrics(out / "metrics.json", metrics)
print(f"wrote {out}/metrics.json, inpainting.png (rows: observed bottom half, true image, "
      f"mean-field phi, mean-field sample, amortised phi, amortised sample); "
      f"{metrics['seconds']:.0f} s in all")
