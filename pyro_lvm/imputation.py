"""Procedures on the missing-pixel model: infer, impute and score hidden pixels.

For a :class:`~pyro_lvm.models.missing.MissingPixelModel` and images ``x`` ``(N, 784)``
whose pixels under a boolean ``mask`` (True = hidden) are not observed:

* :func:`inpaint`: fit a pixel guide (:mod:`~pyro_lvm.models.pixel_guides`) to the images
  by SVI and read its pixel probabilities ``phi``;
* :func:`estimate_log_marginal`: ``log p(x_obs)`` by importance sampling with a pixel guide,
  the prior or the uniform proposal, the same estimator for all;
* :func:`impute`: single imputation ``E[x_hid | x_obs] ~= sum_k w~_k p(x_hid = 1 | z_k)`` by
  self-normalised importance weights, multiple imputation by sampling importance
  resampling (MIWAE: Mattei & Frellsen 2019, sec. 3);
* :func:`conditional_log_likelihood`: ``log p(x_hid | x_obs) = log p(x) - log p(x_obs)``
  (as in VAEAC, Ivanov, Figurnov & Vetrov 2019);
* :func:`pixel_log_prob`, :func:`pixel_scores`: pixel probabilities scored against the
  true hidden pixels (log-likelihood, accuracy, Brier score, reliability curve).

Importance weights come from :mod:`pyro_lvm.evaluate` (the summed-out weights
``p(x_obs, z) / q(z | x_obs)`` of ``observed_model`` for imputation); training from
:func:`pyro_lvm.train.fit`.
"""

from __future__ import annotations

import math

import torch

import pyro.distributions as dist

from . import evaluate
from .checks import check_choice, check_data, check_positive, check_size
from .models.masks import check_mask
from .models.missing import MissingPixelModel
from .models.pixel_guides import (AmortisedPixelGuide, MeanFieldPixelGuide, ObservedGuide,
                                  PixelGuide)
from .params import isolated_param_store
from .train import fit

__all__ = ["conditional_log_likelihood", "estimate_log_marginal", "impute", "inpaint",
           "pixel_log_prob", "pixel_scores"]

#: Rows per pass of the importance weights with an amortised ``q(z | x_obs)``: a small block
#: leaves room for many particles per pass, so the encoder runs rarely
#: (:func:`pyro_lvm.evaluate.log_likelihood`).
_ROWS_PER_PASS = 100


def _check_model(model, x, mask, *, truth: bool = False) -> MissingPixelModel:
    """The door's check of the model and its images: values included, and with ``truth``
    every pixel binary (``x`` holds the true hidden pixels)."""
    if not isinstance(model, MissingPixelModel):
        raise ValueError(f"model must be a MissingPixelModel, got {type(model).__name__}")
    check_mask(x, mask, model.vae.x_dim, dtype=model.vae.encoder[0].weight.dtype, truth=truth)
    return model


def _z_guide(model: MissingPixelModel, guide, name: str = "guide") -> ObservedGuide:
    """The ``q(z | x_obs)`` of a guide for the summed-out weights, checked against the model."""
    z_guide = guide.z_guide if isinstance(guide, PixelGuide) else guide
    if not isinstance(z_guide, ObservedGuide):
        raise ValueError(f"{name} must be an ObservedGuide or a pixel guide with one "
                         f"(ConditionalPixelGuide, z_guide=...), got {type(guide).__name__}")
    if z_guide.vae.decoder is not model.vae.decoder:
        raise ValueError(f"{name} was built for another VAE than the model's; its weights "
                         "would not be this model's")
    return z_guide


def inpaint(model: MissingPixelModel, x, mask, guide="meanfield", steps: int = 500,
            lr: float = 0.05, loss="tracegraph", num_particles: int = 1, num_samples: int = 4,
            seed: int = 0):
    """Infer the hidden pixels of ``x`` ``(N, 784)`` under ``mask`` with a pixel guide whose
    ``phi`` does not depend on z.

    :param guide: ``"meanfield"`` (a :class:`~pyro_lvm.models.pixel_guides.MeanFieldPixelGuide`,
        phi per image, fitted by SVI for ``steps`` full-batch steps), ``"amortised"`` (a fresh
        :class:`~pyro_lvm.models.pixel_guides.AmortisedPixelGuide` fitted on these images),
        or a trained mean-field or amortised pixel guide (applied as it is).
    :param loss: a score-function loss name or object (``tracegraph``, ``vimco``).
    :returns: ``(phi (N, 784), samples (num_samples, N, 784), guide)``; observed pixels
        are passed through in both.  Training runs on a param store of its own.
    :raises ValueError: bad images or mask (:func:`~pyro_lvm.models.masks.check_mask`), an
        unknown guide or one whose phi depends on z, sizes that are not positive integers,
        a step size that is not positive and finite, or a negative seed.
    """
    _check_model(model, x, mask)
    steps, num_samples = check_size("steps", steps), check_size("num_samples", num_samples)
    num_particles, seed = check_size("num_particles", num_particles), check_size("seed", seed, 0)
    lr = check_positive("lr", lr)
    if isinstance(guide, PixelGuide) and not guide.conditional:
        guide.check_inputs(x, mask, values=True)  # a trained pixel guide is applied as it is
    elif isinstance(guide, str) and guide in ("meanfield", "amortised"):
        guide = (MeanFieldPixelGuide(model.vae, len(x), mask=mask) if guide == "meanfield"
                 else AmortisedPixelGuide(model.vae))
        with isolated_param_store():  # the caller's param store stays as it was
            fit(model.model, guide.guide, (x, mask), loss=loss, num_particles=num_particles,
                lr=lr, num_epochs=steps, batch_size=len(x), seed=seed, progress=False)
    else:
        raise ValueError(f"guide must be 'meanfield', 'amortised' or a trained mean-field or "
                         f"amortised pixel guide (phi of a ConditionalPixelGuide depends on z: "
                         f"use impute), got {guide!r}")
    phi = guide.probs(x, mask)
    samples = torch.where(mask, torch.bernoulli(phi.expand(num_samples, *phi.shape)), x)
    return phi, samples, guide


def estimate_log_marginal(model: MissingPixelModel, x, mask, proposal="guide", guide=None,
                          num_samples: int = 100) -> torch.Tensor:
    """Importance-sampling estimate of ``log p(x_observed)`` per image, nats, ``(N,)``::

        log (1/K) sum_k p(x_obs, x_hid_k, z_k) / r(x_hid_k, z_k | x_obs)

    :param proposal: ``"guide"`` (``guide``, a trained pixel guide), ``"prior"``
        (``z ~ p(z)``, ``x_hid ~ p(x_hid | z)``), or ``"uniform"`` (hidden pixels uniform,
        phi = 0.5, z from the encoder), so naive Monte Carlo and importance sampling
        compare on equal terms (the same estimator, :func:`pyro_lvm.evaluate.log_likelihood`).
    :raises ValueError: bad images or mask, an unknown proposal, ``"guide"`` without a pixel
        guide (or with one that does not take these images), or ``num_samples`` not a
        positive integer.
    """
    _check_model(model, x, mask)
    check_choice("proposal", proposal, ("guide", "prior", "uniform"))
    num_samples = check_size("num_samples", num_samples)
    if proposal == "guide" and not isinstance(guide, PixelGuide):
        raise ValueError(f"guide must be a trained pixel guide for proposal='guide', got "
                         f"{type(guide).__name__}")
    if proposal == "guide":
        guide.check_inputs(x, mask, values=True)
    elif proposal == "uniform":
        guide = MeanFieldPixelGuide(model.vae, len(x), trainable=False)
    guide_fn = model.prior_guide if proposal == "prior" else guide.guide
    # Local parameters (phi per image) need every row in each pass.
    rows = len(x) if isinstance(guide, MeanFieldPixelGuide) else None
    return evaluate.log_likelihood(model.model, guide_fn, x, mask, num_samples=num_samples,
                                   batch_size=rows)


@torch.no_grad()
def impute(model: MissingPixelModel, guide, x, mask, num_samples: int = 1000,
           method: str = "mean", num_imputations: int = 1,
           max_elements: int = evaluate.MAX_ELEMENTS) -> torch.Tensor:
    """Impute the hidden pixels of ``x`` ``(N, 784)`` by self-normalised importance sampling
    (MIWAE, Mattei & Frellsen 2019, sec. 3.2-3.3).

    With ``z_k ~ q(z | x_obs)`` (``num_samples`` = K per image) and the summed-out weights
    ``w_k = p(x_obs, z_k) / q(z_k | x_obs)``, ``w~_k = w_k / sum_j w_j``:

    * ``method="mean"``: single imputation by the conditional mean
      ``E[x_hid | x_obs] ~= sum_k w~_k sigmoid(decoder(z_k))``, ``(N, 784)`` probabilities
      (consistent as K grows; bias O(1/K));
    * ``method="sample"``: multiple imputation by sampling importance resampling: per
      imputation draw ``k ~ Categorical(w~)``, then ``x_hid ~ p(x_hid | z_k)``;
      ``(num_imputations, N, 784)`` binary images.

    Observed pixels are passed through.  The weights and draws come chunk by chunk from
    :func:`pyro_lvm.evaluate.log_weight_chunks` on
    :meth:`~pyro_lvm.models.missing.MissingPixelModel.observed_model`.

    :param guide: an :class:`~pyro_lvm.models.pixel_guides.ObservedGuide`, or a pixel guide
        with one (:class:`~pyro_lvm.models.pixel_guides.ConditionalPixelGuide`): its z guide
        is used, since given z the exact hidden-pixel posterior is the decoder's.
    :param int max_elements: bound on particles x images x pixels per pass, as in
        :func:`pyro_lvm.evaluate.log_likelihood`; the estimate combines the passes exactly.
    :raises ValueError: bad images or mask (:func:`~pyro_lvm.models.masks.check_mask`), a
        guide of another type or built for another VAE, ``num_samples`` or
        ``num_imputations`` not a positive integer, an unknown method, ``max_elements`` as
        :func:`pyro_lvm.evaluate.log_likelihood`, or an image whose importance weights in a
        pass are all zero or not finite.
    """
    _check_model(model, x, mask)
    z_guide = _z_guide(model, guide)
    check_choice("method", method, ("mean", "sample"))
    num_samples = check_size("num_samples", num_samples)
    num_imputations = check_size("num_imputations", num_imputations)
    chunks = evaluate.log_weight_chunks(model.observed_model, z_guide.guide, x, mask,
                                        num_samples=num_samples, batch_size=_ROWS_PER_PASS,
                                        max_elements=max_elements, return_sites=("z",))
    log_total = x.new_full((len(x),), -math.inf)  # log sum_k w_k of the chunks so far
    result = x.new_zeros(x.shape if method == "mean" else (num_imputations, *x.shape))
    for rows, log_w, values in chunks:
        probs = torch.sigmoid(model.vae.decoder(values["z"].squeeze(-2)))  # (k, B, 784)
        chunk_total = torch.logsumexp(log_w, 0)  # (B,)
        _check_total(chunk_total, rows, len(log_w))
        total = torch.logaddexp(log_total[rows], chunk_total)
        if method == "mean":  # the running weighted mean, rescaled to the new total
            result[rows] = (result[rows] * torch.exp(log_total[rows] - total)[:, None]
                            + torch.einsum("kb,kbd->bd", torch.exp(log_w - total), probs))
        else:
            result[:, rows] = _resample(result[:, rows], probs, log_w, chunk_total - total)
        log_total[rows] = total
    return torch.where(mask, result if method == "mean" else torch.bernoulli(result), x)


def _check_total(log_total, rows, k):
    """Name the images of a chunk whose weights cannot be normalised (``log sum_k w_k`` not
    finite); one device sync per chunk of ``k`` particles."""
    bad = ~torch.isfinite(log_total)
    if bool(bad.any()):
        images = (bad.nonzero().flatten() + rows.start).tolist()
        cause = ("all zero: under every z drawn, the model gives their observed pixels "
                 "probability zero" if bool(torch.isneginf(log_total[bad]).all())
                 else "NaN or infinite: the model's or the guide's densities are not finite there")
        raise ValueError(f"the importance weights of image(s) {images} in a pass of {k} "
                         f"particles are {cause}")


def _resample(chosen, probs, log_w, log_share):
    """Sampling importance resampling over particle chunks (weighted reservoir sampling):
    each imputation draws a particle of this chunk by its weights, and takes it over the
    earlier chunks' with probability ``exp(log_share)``, this chunk's share of the weight so
    far.  ``chosen`` ``(M, B, 784)``, ``probs`` ``(k, B, 784)``, ``log_w`` ``(k, B)``."""
    pick = torch.multinomial(torch.softmax(log_w, 0).T, len(chosen), replacement=True).T  # (M, B)
    drawn = probs[pick, torch.arange(probs.shape[1], device=probs.device)]  # (M, B, 784)
    take = torch.rand(pick.shape, device=probs.device) < torch.exp(log_share)
    return torch.where(take[..., None], drawn, chosen)


def _log_marginal_and_se(model, z_guide, x, mask, num_samples):
    """``log (1/K) sum_k w_k`` per image and its Monte Carlo standard error by the delta
    method, ``sd(w) / (sqrt(K) mean(w))``; both ``(N,)``, nats."""
    log_w = evaluate.log_weights(model.observed_model, z_guide.guide, x, mask,
                                 num_samples=num_samples, batch_size=_ROWS_PER_PASS)
    top = log_w.max(0).values
    w = torch.exp(log_w - top)
    mean = w.mean(0)
    if num_samples == 1:
        return top + mean.log(), torch.full_like(mean, math.inf)
    return top + mean.log(), w.std(0) / (math.sqrt(num_samples) * mean)


@torch.no_grad()
def conditional_log_likelihood(model: MissingPixelModel, guide, x, mask, num_samples: int = 1000,
                               complete_guide=None):
    """``log p(x_hid | x_obs) = log p(x) - log p(x_obs)`` per image, nats, by importance
    sampling of each term on :meth:`~pyro_lvm.models.missing.MissingPixelModel.observed_model`
    (the metric of VAEAC, Ivanov et al. 2019, sec. 5; ``x`` holds the true hidden pixels).

    Each term is an IWAE estimate with K = ``num_samples`` (consistent, biased low by
    O(1/K)); their difference is neither a lower nor an upper bound.

    :param guide: for ``q(z | x_obs)``, as in :func:`impute`; ``complete_guide`` proposes z
        for the complete images (default: the same guide with no pixel hidden).
    :returns: ``(estimate, standard_error)``, both ``(N,)`` nats; the standard error is the
        delta-method Monte Carlo error of the two terms added in quadrature.
    :raises ValueError: as :func:`impute`; ``x`` must be binary everywhere.
    """
    _check_model(model, x, mask, truth=True)
    z_guide = _z_guide(model, guide)
    full_guide = z_guide if complete_guide is None else _z_guide(model, complete_guide,
                                                                 "complete_guide")
    num_samples = check_size("num_samples", num_samples)
    log_px, se_x = _log_marginal_and_se(model, full_guide, x, torch.zeros_like(mask), num_samples)
    log_pobs, se_obs = _log_marginal_and_se(model, z_guide, x, mask, num_samples)
    return log_px - log_pobs, torch.sqrt(se_x**2 + se_obs**2)


def _check_scored(probs, x, mask) -> None:
    """Pixel probabilities ``(N, D)`` in [0, 1] of the true binary images ``x``."""
    check_data(probs, "probs", low=0.0, high=1.0)
    check_mask(x, mask, truth=True)
    if probs.shape != x.shape:
        raise ValueError(f"probs, x and mask must share one shape, got probs "
                         f"{tuple(probs.shape)} and x {tuple(x.shape)}")


def _log_prob(probs, x, mask):
    return (dist.Bernoulli(probs=probs.clamp(1e-6, 1 - 1e-6)).log_prob(x) * mask).sum(-1)


def pixel_log_prob(probs: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``log q(x_hidden)`` under independent Bernoulli(probs) pixels, summed over the hidden
    pixels of each image: nats per image, ``(N,)``.  Probabilities are clamped to
    [1e-6, 1 - 1e-6] so that a confident wrong pixel costs at most 13.8 nats.

    :param probs: ``(N, D)`` probabilities; ``x`` ``(N, D)`` the true binary images.
    :raises ValueError: ``probs`` not in [0, 1] or not of ``x``'s shape, or ``x`` and
        ``mask`` as :func:`~pyro_lvm.models.masks.check_mask` with ``truth=True``."""
    _check_scored(probs, x, mask)
    return _log_prob(probs, x, mask)


def pixel_scores(probs: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, bins: int = 10) -> dict:
    """Scores of pixel probabilities ``probs`` ``(N, D)`` against the truth ``x`` on the
    hidden pixels only: ``log_q`` (:func:`pixel_log_prob`, mean nats per image), ``accuracy``
    of ``probs > 0.5``, ``brier`` (mean squared error of the probabilities, Brier 1950) and
    the reliability curve (``bins`` equal-width bins of probs: ``predicted`` mean probability
    and ``observed`` frequency of ones per non-empty bin, as scikit-learn's
    ``calibration_curve`` with ``strategy="uniform"``).

    :raises ValueError: as :func:`pixel_log_prob`, ``bins`` not a positive integer, or a
        mask hiding no pixel at all.
    """
    bins = check_size("bins", bins)
    _check_scored(probs, x, mask)
    p, truth = probs[mask].double(), x[mask].double()
    if p.numel() == 0:
        raise ValueError("mask hides no pixel: nothing to score")
    which = torch.clamp((p * bins).long(), max=bins - 1)
    count = torch.bincount(which, minlength=bins)
    keep = count > 0
    predicted = torch.bincount(which, p, minlength=bins)[keep] / count[keep]
    observed = torch.bincount(which, truth, minlength=bins)[keep] / count[keep]
    return {"log_q": _log_prob(probs, x, mask).mean().item(),
            "accuracy": ((p > 0.5).double() == truth).double().mean().item(),
            "brier": (p - truth).pow(2).mean().item(),
            "predicted": predicted.tolist(), "observed": observed.tolist()}
