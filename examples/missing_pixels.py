"""Missing-pixel MNIST: learn from incomplete images, impute with calibrated pixel posteriors.

    python examples/missing_pixels.py [--test-images 1000] [--epochs 30] [--threads 1]

Shows three uses of a VAE on images with missing pixels:

1. Imputation of hidden top halves (test split).  A VAE trained on complete binarized
   training images; an encoder q(z | x_obs) for incomplete images (zero-filled image plus
   mask, MIWAE), started from the VAE's encoder and trained with the decoder fixed by DReG,
   K=5, on training images with their tops hidden (a quarter left complete).
   Hidden pixels are imputed by self-normalised importance sampling (conditional mean) and
   sampling importance resampling (multiple imputations).  Table: conditional
   log-likelihood log p(x_hid | x_obs) (nats per image, by importance sampling, with
   standard errors), log q(x_true) of the pixel probabilities, pixel accuracy and Brier
   score on the hidden pixels, for: the z-dependent pixel posterior (ours), the seeds'
   factorised mean-field phi, training pixel means, and k nearest neighbours among the
   60,000 training images (KNNImputer's rule; its agreement with KNNImputer is measured).
2. What each pixel guide costs: log p(x_obs) by importance sampling with the factorised
   phi, the z-conditional guide at the decoder, and the prior, at the same K.
3. Learning from incomplete images: half of --train-images training images get a top-half,
   MCAR 50% or MCAR 90% mask.  Models trained on: all images complete (reference), the
   complete half only (discarding), the incomplete ones zero-filled as if complete, and
   the MIWAE bound (hidden pixels summed out; DReG, K=5); every run the same number of
   epochs over its own data.  Test log p(x) of complete test images (K=--eval-samples),
   with the standard error of each model's mean and of its paired difference to discarding.

Writes metrics.json (what :func:`main` returns), inpainting.png and calibration.png into --out.

Run time on a 2-core CPU, one thread: the defaults about 7 min (412 s).
"""

import argparse
import math
import time
from pathlib import Path

import torch

import pyro
from pyro_lvm import evaluate
from pyro_lvm.cli import int_at_least, nonnegative_int, positive_int
from pyro_lvm.data import binarize, fixed_binarization, load_mnist
from pyro_lvm.imputation import (conditional_log_likelihood, estimate_log_marginal, impute, inpaint,
                                 pixel_log_prob, pixel_scores)
from pyro_lvm.models import VAE
from pyro_lvm.models.masks import make_mask, top_half_mask
from pyro_lvm.models.missing import MissingPixelModel
from pyro_lvm.models.pixel_guides import ConditionalPixelGuide, ObservedGuide
from pyro_lvm.plots import plt, save_image_grid
from pyro_lvm.report import write_metrics
from pyro_lvm.train import decaying_adam, fit

OURS = "z-dependent posterior (SNIS, ours)"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--test-images", type=positive_int, default=1000)
    parser.add_argument("--epochs", type=positive_int, default=30, help="epochs of the VAE on 60,000 images")
    parser.add_argument("--guide-images", type=positive_int, default=60000,
                        help="masked training images for one epoch of q(z | x_obs)")
    parser.add_argument("--impute-samples", type=positive_int, default=3000, help="K for imputation")
    parser.add_argument("--samples", type=positive_int, default=500, help="K for log p(x_hid | x_obs)")
    parser.add_argument("--meanfield-steps", type=positive_int, default=300)
    parser.add_argument("--meanfield-images", type=positive_int, default=100,
                        help="test images the factorised phi is fitted to (it costs SVI per image)")
    parser.add_argument("--knn-train", type=positive_int, default=60000, help="training images the KNN baseline searches")
    parser.add_argument("--train-images", type=positive_int, default=1000, help="for the learning comparison")
    parser.add_argument("--learning-epochs", type=positive_int, default=12)
    parser.add_argument("--eval-samples", type=int_at_least(2), default=100, help="K for test log p(x)")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="torch threads (1 is fastest on a CPU shared with other jobs)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="results/missing_pixels")
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    return parser.parse_args(argv)


def say(line):
    print(line, flush=True)


def train_joint(args, images, clock):
    """1a-1b. A VAE on complete images, then q(z | x_obs) for the masks it will meet, decoder
    fixed, starting from the VAE's encoder on zero-filled images: top halves hidden, and a
    quarter of the images complete (for the log p(x) term of the conditional log-likelihood)."""
    torch.manual_seed(args.seed)
    vae = VAE(z_dim=20, hidden_dims=(400,))
    with pyro.validation_enabled(False):
        fit(vae.model, vae.guide, images, loss="meanfield", optim=decaying_adam(3e-3, 3e-4, args.epochs),
            num_epochs=args.epochs, batch_size=100, transform=binarize, seed=args.seed, progress=False)
    model = MissingPixelModel(vae)
    say(f"[{clock()} s] VAE trained")
    guide_images = images[: args.guide_images]
    train_mask = top_half_mask(len(guide_images))
    train_mask[torch.rand(len(guide_images), generator=torch.Generator().manual_seed(args.seed + 1)) < 0.25] = False
    observed = ObservedGuide(vae, init_from_vae=True)
    with pyro.validation_enabled(False):
        fit(model.observed_model, observed.guide, (guide_images, train_mask), loss="dreg",
            num_particles=5, optim=decaying_adam(1e-3, 1e-3, 1), num_epochs=1, batch_size=100,
            transform=binarize, seed=args.seed, progress=False)
    say(f"[{clock()} s] q(z | x_obs) trained")
    return model, observed


def knn_imputation(args, images, x, mask, metrics, clock):
    """k nearest neighbours among the training images, KNNImputer's rule.

    KNNImputer (nan-Euclidean distance over the observed pixels, mean of k=5 donors) loops over
    hidden columns and needs ~0.2 s per test image per 10,000 donors here.  With one mask shared
    by every test image and complete donors, its distance is the Euclidean distance on the
    observed pixels times a constant, so KNeighborsRegressor on those pixels gives the same
    imputation on all 60,000 training images in seconds; agreement is measured on a subset."""
    from sklearn.impute import KNNImputer  # scikit-learn only for the baseline
    from sklearn.neighbors import KNeighborsRegressor

    knn_train = fixed_binarization(images[: args.knn_train], seed=args.seed + 2)
    seen = ~mask[0]
    t0 = time.perf_counter()
    knn = KNeighborsRegressor(n_neighbors=5).fit(knn_train[:, seen].numpy(), knn_train[:, ~seen].numpy())
    phi_knn = x.clone()
    phi_knn[:, ~seen] = torch.as_tensor(knn.predict(x[:, seen].numpy()), dtype=x.dtype)
    metrics["knn_seconds"] = time.perf_counter() - t0
    donors = knn_train[:2000]
    reference = KNNImputer(n_neighbors=5).fit(donors.numpy()).transform(
        torch.where(mask[:20], float("nan"), x[:20]).numpy())
    check = KNeighborsRegressor(n_neighbors=5).fit(donors[:, seen].numpy(), donors[:, ~seen].numpy())
    same = (torch.as_tensor(reference[:, ~seen.numpy()])
            - torch.as_tensor(check.predict(x[:20, seen].numpy()))).abs() < 1e-6
    metrics["knn_agreement_with_KNNImputer"] = same.double().mean().item()  # ties may order differently
    say(f"[{clock()} s] KNN done; hidden pixels equal to KNNImputer's (2,000 donors, 20 images): "
        f"{metrics['knn_agreement_with_KNNImputer']:.4f}")
    return phi_knn, len(knn_train)


def score_table(candidates, x, mask, cll, k, metrics):
    """Pixel scores of every candidate on the hidden pixels, and ours' conditional
    log-likelihood log p(x) - log p(x_obs), each by IS; printed as a table."""
    table = {}
    for name, phi in candidates.items():
        rows = slice(0, len(phi))
        scores = pixel_scores(phi, x[rows], mask[rows])
        log_q = pixel_log_prob(phi, x[rows], mask[rows])
        scores["log_q_se"] = (log_q.std() / math.sqrt(len(phi))).item()
        table[name] = scores
    estimate, se = cll
    n_img = len(x)
    table[OURS]["conditional_log_likelihood"] = estimate.mean().item()
    table[OURS]["conditional_log_likelihood_se"] = (estimate.std() / math.sqrt(n_img)).item()
    table[OURS]["conditional_log_likelihood_mc_se"] = (se.pow(2).mean().sqrt() / math.sqrt(n_img)).item()
    metrics["imputation_top_half"] = table
    print(f"\nTop halves hidden, {n_img} test images; log p(x_hid | x_obs) of ours = "
          f"{estimate.mean():.2f} +- {estimate.std() / math.sqrt(n_img):.2f} (across images; Monte Carlo "
          f"{table[OURS]['conditional_log_likelihood_mc_se']:.3f}), K={k}")
    print("| pixel posterior | log q(x_hid true) nats/image | pixel accuracy | Brier |")
    print("|---|---|---|---|")
    for name, s in table.items():
        print(f"| {name} | {s['log_q']:.2f} +- {s['log_q_se']:.2f} | {s['accuracy']:.4f} | {s['brier']:.4f} |")
    return table


def plot_calibration(table, path):
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    for name, s in table.items():
        ax.plot(s["predicted"], s["observed"], marker="o", markersize=3, label=f"{name}: Brier {s['brier']:.4f}")
    ax.set_xlabel("predicted P(pixel = 1), 10 equal-width bins")
    ax.set_ylabel("observed frequency of ones")
    ax.set_title("Hidden top halves: reliability of the pixel probabilities", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def impute_top_halves(args, model, observed, images, x, mask, metrics, clock):
    """1c. Imputation of the hidden tops by ours, KNN, pixel means and the mean-field phi."""
    with torch.no_grad():
        phi_ours = impute(model, observed, x, mask, num_samples=args.impute_samples)
        imputations = impute(model, observed, x[:10], mask[:10], num_samples=args.impute_samples,
                             method="sample", num_imputations=4)  # for the picture
        cll = conditional_log_likelihood(model, observed, x, mask, num_samples=args.samples)
    say(f"[{clock()} s] imputed")
    n_mf = min(args.meanfield_images, len(x))
    phi_meanfield, _, meanfield = inpaint(model, x[:n_mf], mask[:n_mf], "meanfield",
                                          steps=args.meanfield_steps, lr=0.05)
    say(f"[{clock()} s] mean-field phi fitted")
    phi_knn, n_knn = knn_imputation(args, images, x, mask, metrics, clock)
    candidates = {OURS: phi_ours,
                  f"k nearest neighbours (KNNImputer's rule, k=5, {n_knn} images)": phi_knn,
                  "training pixel means": images.mean(0).expand_as(x),  # P(pixel = 1), dynamic binarization
                  f"factorised mean-field phi (seeds), first {n_mf} images": phi_meanfield,
                  f"z-dependent posterior (ours), the same {n_mf} images": phi_ours[:n_mf]}
    table = score_table(candidates, x, mask, cll, args.samples, metrics)

    def per_image_accuracy(phi):
        return (((phi > 0.5).to(x.dtype) == x) & mask).sum(1) / mask.sum(1)

    gain = per_image_accuracy(phi_ours) - per_image_accuracy(phi_knn)  # paired, per test image
    metrics["accuracy_ours_minus_knn"] = {"mean": gain.mean().item(),
                                          "se": (gain.std() / math.sqrt(len(x))).item()}
    print(f"pixel accuracy, ours minus KNN, paired over images: {gain.mean():+.4f} +- "
          f"{gain.std() / math.sqrt(len(x)):.4f}")
    plot_calibration(table, Path(args.out) / "calibration.png")
    return {"ours": phi_ours, "imputations": imputations, "meanfield": phi_meanfield,
            "knn": phi_knn, "meanfield_guide": meanfield}


def compare_proposals(model, observed, meanfield, x, mask, metrics, clock):
    """2. What each pixel guide costs: log p(x_obs) by each proposal, 3 repeats at the same K."""
    k_est, n_mf = 50, meanfield.pixels.logits.shape[0]  # the images its phi was fitted to
    sub = (x[:n_mf], mask[:n_mf])
    proposals = {"factorised phi (mean-field)": ("guide", meanfield),
                 "z-conditional at the decoder": ("guide", ConditionalPixelGuide(observed)),
                 "prior": ("prior", None)}
    metrics["log_p_observed"] = {}
    print(f"\nlog p(x_bottom) by importance sampling, K={k_est}, {len(sub[0])} images, 3 repeats")
    print("| proposal | mean nats/image | sd across repeats |")
    print("|---|---|---|")
    with torch.no_grad():
        for name, (proposal, guide) in proposals.items():
            runs = torch.stack([estimate_log_marginal(model, *sub, proposal, guide=guide,
                                                      num_samples=k_est) for _ in range(3)])
            metrics["log_p_observed"][name] = {"mean": runs.mean().item(), "sd": runs.std(0).mean().item()}
            print(f"| {name} | {runs.mean():.2f} | {runs.std(0).mean():.3f} |")
    say(f"[{clock()} s]")


def learn(args, train_x, train_mask, test_x):
    """A fresh VAE and q(z | x_obs) trained on the MIWAE bound (DReG, K=5); test log p(x)."""
    torch.manual_seed(args.seed)
    learner = VAE(z_dim=20, hidden_dims=(200,))
    joint, guide = MissingPixelModel(learner, learn=True), ObservedGuide(learner, hidden_dims=(200,))
    with pyro.validation_enabled(False):
        fit(joint.observed_model, guide.guide, (train_x, train_mask), loss="dreg", num_particles=5,
            optim=decaying_adam(3e-3, 1e-3, args.learning_epochs), num_epochs=args.learning_epochs,
            batch_size=100, seed=args.seed, progress=False)
        return evaluate.log_likelihood(joint.observed_model, guide.guide, test_x,
                                       torch.zeros_like(test_x, dtype=torch.bool),
                                       num_samples=args.eval_samples, batch_size=50)


def learning_comparison(args, images, test_x, metrics, clock):
    """3. Learning from incomplete images: all complete, discarding, zero-filling, MIWAE."""
    n_train = args.train_images
    data = fixed_binarization(images[:n_train], seed=args.seed + 3)
    incomplete = torch.zeros(n_train, dtype=torch.bool)
    incomplete[torch.randperm(n_train, generator=torch.Generator().manual_seed(args.seed))[: n_train // 2]] = True
    complete = torch.zeros_like(data, dtype=torch.bool)
    results = {"all images complete (reference)": learn(args, data, complete, test_x)}
    results["discard incomplete images"] = learn(args, data[~incomplete], complete[~incomplete], test_x)
    for kind in ("top_half", "mcar50", "mcar90"):
        hidden = make_mask(kind, n_train, torch.Generator().manual_seed(args.seed + 4)) & incomplete[:, None]
        results[f"{kind}: zero-filled as if complete"] = learn(args, torch.where(hidden, 0.0, data),
                                                               torch.zeros_like(hidden), test_x)
        results[f"{kind}: MIWAE bound, hidden summed out"] = learn(args, data, hidden, test_x)
        say(f"[{clock()} s] learning with {kind} masks done")
    base = results["discard incomplete images"]
    metrics["learning"] = {}
    print(f"\nLearning from {n_train} training images, half incomplete; test log p(x) of "
          f"{len(test_x)} complete test images (K={args.eval_samples}), {args.learning_epochs} epochs each")
    print("| training data | test log p(x) nats/image | minus discarding (paired) |")
    print("|---|---|---|")
    for name, ll in results.items():
        diff = ll - base
        entry = {"test_log_likelihood": ll.mean().item(), "se": (ll.std() / math.sqrt(len(ll))).item(),
                 "minus_discarding": diff.mean().item(),
                 "minus_discarding_se": (diff.std() / math.sqrt(len(ll))).item()}
        metrics["learning"][name] = entry
        print(f"| {name} | {entry['test_log_likelihood']:.2f} +- {entry['se']:.2f} | "
              f"{entry['minus_discarding']:+.2f} +- {entry['minus_discarding_se']:.2f} |")


def main(argv=None) -> dict:
    """Run the three parts; returns what it writes to metrics.json."""
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    pyro.set_rng_seed(args.seed)
    started = time.perf_counter()

    def clock():
        return round(time.perf_counter() - started)

    metrics = {"config": vars(args), "units": "nats per image; accuracy and Brier per hidden pixel"}
    images = load_mnist(args.data_dir, train=True)[0]
    test_full = fixed_binarization(load_mnist(args.data_dir, train=False)[0])
    x, mask = test_full[: args.test_images], top_half_mask(args.test_images)
    model, observed = train_joint(args, images, clock)
    phi = impute_top_halves(args, model, observed, images, x, mask, metrics, clock)
    compare_proposals(model, observed, phi["meanfield_guide"], x, mask, metrics, clock)
    learning_comparison(args, images, x, metrics, clock)
    # Pictures: observed (hidden grey), truth, conditional mean, 4 multiple imputations,
    # mean-field phi, KNN.
    cols = min(10, len(phi["meanfield"]))
    shown = torch.where(mask[:cols], torch.full_like(x[:cols], 0.5), x[:cols])
    pictures = [shown, x[:cols], phi["ours"][:cols], *phi["imputations"][:, :cols],
                phi["meanfield"][:cols], phi["knn"][:cols]]
    save_image_grid(torch.cat(pictures), out / "inpainting.png", nrow=cols)
    metrics["seconds"] = time.perf_counter() - started
    write_metrics(out / "metrics.json", metrics)
    print(f"\nwrote {out}/metrics.json, inpainting.png (rows: observed bottom half, truth, conditional "
          f"mean, 4 multiple imputations, mean-field phi, KNN), calibration.png; "
          f"{metrics['seconds']:.0f} s in all")
    return metrics


if __name__ == "__main__":
    main()
