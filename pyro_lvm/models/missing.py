"""Missing-pixel MNIST: hidden pixels as latent Bernoulli variables of the VAE joint.

Joint (the library's :class:`~pyro_lvm.models.vae.VAE`), for an image ``x`` whose pixels
under a boolean ``mask`` (True = hidden; the top half by default) are not observed::

    z ~ N(0, I),     x_i | z ~ Bernoulli(logits = f_theta(z)_i)      for all 784 pixels

The hidden pixels are latent sample sites through Pyro's ``obs_mask`` (sites
``x_observed`` and ``x_unobserved`` inside a plate over pixels), so
``p(x_observed) = sum over completions of p(x_observed, x_hidden)`` is what every ELBO
and importance-sampling estimate of this module bounds or estimates.

Guides ``q(z, x_hidden | x_observed) = q(z | x_observed, phi) prod_i phi_i^x_i (1 - phi_i)^(1 - x_i)``
(the Bernoulli pixel posterior of the seeds; z independent of the sampled pixels):

* :class:`MeanFieldPixelGuide`: ``phi`` a free parameter per image and pixel;
* :class:`AmortisedPixelGuide`: ``phi = sigmoid(g(x * observed, mask))`` from an MLP;

both with the VAE's amortised encoder for z, fed the image completed with ``phi``.  The
pixels are discrete, so they are trained by score-function losses (``tracegraph``,
``vimco``); sampling z before the pixels keeps each pixel's learning signal local
(Pyro's ``TraceGraph_ELBO`` sees that pixel i only affects ``log p(x_i | z) - log q(x_i)``).
"""

from __future__ import annotations

import torch
from torch import nn

import pyro
import pyro.distributions as dist
from pyro import poutine

from .. import evaluate
from ..data import MNIST_SHAPE, check_data
from ..params import isolated_param_store, register, unique_name
from ..train import fit
from .common import check_local_rows, data_plate, mlp
from .saving import Saveable
from .vae import VAE

__all__ = [
    "MissingPixelModel", "MeanFieldPixelGuide", "AmortisedPixelGuide", "top_half_mask",
    "check_mask", "inpaint", "estimate_log_marginal", "pixel_log_prob",
]


def top_half_mask(n: int, device="cpu") -> torch.Tensor:
    """``(n, 784)`` boolean mask hiding the top 14 of 28 rows of every image."""
    height, width = MNIST_SHAPE
    one = torch.zeros(height, width, dtype=torch.bool, device=device)
    one[: height // 2] = True
    return one.reshape(1, -1).expand(n, -1).clone()


def check_mask(x: torch.Tensor, mask: torch.Tensor, x_dim: int) -> None:
    """Reject what the missing-pixel model cannot take.

    :raises ValueError: ``x`` not ``(N, x_dim)``, non-binary observed pixels, NaN/inf,
        a mask of another shape or not boolean, or an image with every pixel hidden.
    """
    check_data(x, "x", size=x_dim)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a boolean tensor (True = hidden), got "
                         f"{getattr(mask, 'dtype', type(mask).__name__)}")
    if mask.shape != x.shape:
        raise ValueError(f"mask must have the shape of x {tuple(x.shape)}, got {tuple(mask.shape)}")
    if bool(mask.all(1).any()):
        raise ValueError("a mask hides every pixel of an image: nothing is observed")
    if bool(((x != 0) & (x != 1) & ~mask).any()):
        raise ValueError("observed pixels must be binary (0 or 1); binarize the images first")


class MissingPixelModel(Saveable):
    """The VAE's joint with masked pixels latent.  ``model(x, mask, num_data=None)``.

    :param VAE vae: a Bernoulli VAE (its decoder defines ``p(x | z)``).
    :param bool learn: register the decoder's parameters, so SVI trains them
        (learning from incomplete images); False keeps the trained joint fixed (inference).
    """

    def __init__(self, vae: VAE, learn: bool = False):
        super().__init__()
        if vae.likelihood != "bernoulli":
            raise ValueError("the missing-pixel model needs a Bernoulli VAE")
        self.vae, self.learn = vae, learn

    def model(self, x, mask, num_data=None):
        if x.dim() != 2 or x.shape != mask.shape or x.shape[-1] != self.vae.x_dim:
            raise ValueError(f"x and mask must both be (B, {self.vae.x_dim}), got "
                             f"{tuple(x.shape)} and {tuple(mask.shape)}")
        if self.learn:
            register(f"{self.vae.name}_decoder", self.vae.decoder)
        prior = dist.Normal(x.new_zeros(self.vae.z_dim), 1.0).to_event(1)
        with data_plate(x, num_data, dim=-2):
            z = pyro.sample("z", prior)  # batch (B, 1): the pixel plate is dim -1
            logits = self.vae.decoder(z).squeeze(-2)
            with pyro.plate("pixels", self.vae.x_dim, dim=-1):
                pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False), obs=x,
                            obs_mask=~mask)

    def prior_guide(self, x, mask, num_data=None):
        """The model's own prior as proposal: ``z ~ p(z)``, hidden pixels ``~ p(x_i | z)``;
        the importance weight is then ``p(x_observed | z)``."""
        prior = dist.Normal(x.new_zeros(self.vae.z_dim), 1.0).to_event(1)
        with data_plate(x, num_data, dim=-2):
            z = pyro.sample("z", prior)
            with pyro.plate("pixels", self.vae.x_dim, dim=-1), poutine.mask(mask=mask):
                pyro.sample("x_unobserved", dist.Bernoulli(logits=self.vae.decoder(z).squeeze(-2),
                                                           validate_args=False))


class _PixelGuide(Saveable):
    """Shared by both pixel guides: z from the VAE encoder on the phi-completed image,
    then the hidden pixels from Bernoulli(phi).  Only ``self.pixels`` (phi's parameters)
    is registered with Pyro, and the encoder when ``learn_encoder``; the VAE stays fixed."""

    def __init__(self, vae: VAE, pixels: nn.Module, learn_encoder: bool, name: str):
        super().__init__()
        self.vae, self.pixels, self.learn_encoder, self.name = vae, pixels, learn_encoder, name

    def logits(self, x, mask) -> torch.Tensor:
        raise NotImplementedError

    def probs(self, x, mask) -> torch.Tensor:
        """``phi`` ``(N, 784)`` with observed pixels passed through."""
        with torch.no_grad():
            return torch.where(mask, torch.sigmoid(self.logits(x, mask)), x)

    def guide(self, x, mask, num_data=None):
        register(self.name, self.pixels)
        if self.learn_encoder:
            register(f"{self.vae.name}_encoder", self.vae.encoder)
        logits = self.logits(x, mask)
        soft = torch.where(mask, torch.sigmoid(logits), x)  # completed with probabilities
        loc, scale = self.vae.encode(soft)
        with data_plate(x, num_data, dim=-2):
            pyro.sample("z", dist.Normal(loc.unsqueeze(-2), scale.unsqueeze(-2)).to_event(1))
            with pyro.plate("pixels", self.vae.x_dim, dim=-1), poutine.mask(mask=mask):
                pyro.sample("x_unobserved", dist.Bernoulli(logits=logits))


class MeanFieldPixelGuide(_PixelGuide):
    """``phi`` free per image and pixel (local parameters: the guide must see all N images
    at every step).  ``init``: ``(N, 784)`` or ``(784,)`` initial probabilities (default 0.5).

    With ``trainable=False`` it is a fixed proposal (e.g. phi = 0.5, the uniform one)."""

    def __init__(self, vae: VAE, num_images: int, init=None, trainable: bool = True,
                 learn_encoder: bool = False, name: str | None = None):
        probs = torch.full((num_images, vae.x_dim), 0.5) if init is None else \
            torch.as_tensor(init, dtype=torch.float32).expand(num_images, vae.x_dim)
        logits = torch.logit(probs.clamp(1e-4, 1 - 1e-4)).contiguous()
        pixels = nn.Module()
        if trainable:
            pixels.logits = nn.Parameter(logits)
        else:
            pixels.register_buffer("logits", logits)
        super().__init__(vae, pixels, learn_encoder, unique_name("pixels_meanfield", name))

    def logits(self, x, mask):
        logits = self.pixels.logits
        check_local_rows(x, logits.shape[0], "mean-field pixel")
        return logits


class AmortisedPixelGuide(_PixelGuide):
    """``phi = sigmoid(g([x * observed, mask]))`` with ``g`` an MLP ``1568 -> hidden -> 784``.

    ``init``: ``(784,)`` probabilities phi starts from for every image (e.g. the training
    pixel means); the output layer starts with zero weights and these logits as bias, so
    training begins at that baseline instead of at a random network's noise.
    """

    def __init__(self, vae: VAE, hidden_dims=(400,), init=None, learn_encoder: bool = False,
                 name: str | None = None):
        net = mlp((2 * vae.x_dim, *hidden_dims, vae.x_dim), nn.ReLU)
        if init is not None:
            probs = torch.as_tensor(init, dtype=torch.float32).expand(vae.x_dim)
            with torch.no_grad():
                net[-1].weight.zero_()
                net[-1].bias.copy_(torch.logit(probs.clamp(1e-3, 1 - 1e-3)))
        super().__init__(vae, net, learn_encoder, unique_name("pixels_amortised", name))

    def logits(self, x, mask):
        mask = mask.to(x.dtype)
        return self.pixels(torch.cat([x * (1 - mask), mask], -1))


def pixel_log_prob(probs: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``log q(x_hidden)`` under independent Bernoulli(probs) pixels, summed over the hidden
    pixels of each image: nats per image, ``(N,)``.  Probabilities are clamped to
    [1e-6, 1 - 1e-6] so that a confident wrong pixel costs at most 13.8 nats."""
    lp = dist.Bernoulli(probs=probs.clamp(1e-6, 1 - 1e-6)).log_prob(x)
    return (lp * mask).sum(-1)


def inpaint(model: MissingPixelModel, x, mask, guide="meanfield", steps: int = 500,
            lr: float = 0.05, loss="tracegraph", num_particles: int = 1, num_samples: int = 4,
            seed: int = 0):
    """Infer the hidden pixels of ``x`` ``(N, 784)`` under ``mask``.

    :param guide: ``"meanfield"`` (phi per image, fitted by SVI for ``steps`` full-batch
        steps), ``"amortized"`` (a fresh :class:`AmortisedPixelGuide` fitted on these
        images), or an already trained :class:`AmortisedPixelGuide` (applied as it is).
    :param loss: a score-function loss name or object (``tracegraph``, ``vimco``).
    :returns: ``(phi (N, 784), samples (num_samples, N, 784), guide)``; observed pixels
        are passed through in both.
    :raises ValueError: bad images or mask (:func:`check_mask`), or an unknown guide.
    """
    check_mask(x, mask, model.vae.x_dim)
    if not isinstance(guide, _PixelGuide):  # a trained pixel guide is applied as it is
        if guide == "meanfield":
            guide = MeanFieldPixelGuide(model.vae, len(x)).to(x.device)
        elif guide in ("amortized", "amortised"):
            guide = AmortisedPixelGuide(model.vae).to(x.device)
        else:
            raise ValueError(f"guide must be 'meanfield', 'amortized' or a pixel guide, got {guide!r}")
        with isolated_param_store():  # the caller's param store stays as it was
            fit(model.model, guide.guide, (x, mask), loss=loss, num_particles=num_particles, lr=lr,
                num_epochs=steps, batch_size=len(x), seed=seed, progress=False)
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
    :raises ValueError: bad images or mask, an unknown proposal, or ``"guide"`` without one.
    """
    check_mask(x, mask, model.vae.x_dim)
    if proposal == "guide":
        if guide is None:
            raise ValueError("proposal='guide' needs a trained pixel guide")
        guide_fn = guide.guide
    elif proposal == "prior":
        guide_fn = model.prior_guide
    elif proposal == "uniform":
        guide_fn = MeanFieldPixelGuide(model.vae, len(x), trainable=False).to(x.device).guide
    else:
        raise ValueError(f"proposal must be 'guide', 'prior' or 'uniform', got {proposal!r}")
    return evaluate.log_likelihood(model.model, guide_fn, (x, mask), num_samples=num_samples)
