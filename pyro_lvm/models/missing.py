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

Learning from incomplete images and imputation (MIWAE: Mattei & Frellsen 2019, eqs. 4-5
and sec. 3; conditional log-likelihoods as in VAEAC, Ivanov, Figurnov & Vetrov 2019):

* :meth:`MissingPixelModel.observed_model`: the joint with the hidden pixels summed out.
  In a VAE the pixels are independent given z, so ``sum_{x_hid} p(x_hid | z) = 1`` and
  ``p(x_obs) = int p(z) prod_{i observed} p(x_i | z) dz``: every IWAE/DReG bound with
  :class:`ObservedGuide` is the MIWAE bound on ``log p(x_obs)``;
* :class:`ObservedGuide`: ``q(z | x_obs) = N(mu(x * observed, mask), sigma(...))``, the
  encoder fed the zero-filled image and the mask (zeros alone would be read as black pixels);
* :class:`ConditionalPixelGuide`: ``q(z, x_hid | x_obs) = q(z | x_obs) q(x_hid | z, x_obs)``
  with ``phi = sigmoid(decoder(z) + r(z, x_obs))`` and the residual ``r`` starting at zero.
  At ``r = 0``, ``q(x_hid | z) = p(x_hid | z)`` is the exact pixel posterior given z (pixels are
  independent given z), and its joint weights equal the summed-out weights exactly;
* :func:`impute`: single imputation ``E[x_hid | x_obs] ~= sum_k w~_k p(x_hid = 1 | z_k)`` by
  self-normalised importance weights, multiple imputation by sampling importance resampling;
* :func:`conditional_log_likelihood`: ``log p(x_hid | x_obs) = log p(x) - log p(x_obs)``.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

import pyro
import pyro.distributions as dist
from pyro import poutine

from .. import evaluate
from ..checks import check_data, check_size, check_values
from ..data import MNIST_SHAPE
from ..infer import IWAE
from ..params import isolated_param_store, register, unique_name
from ..train import fit
from .common import check_local_rows, data_plate, gaussian_head, mlp
from .saving import Saveable
from .vae import VAE

__all__ = [
    "MissingPixelModel", "MeanFieldPixelGuide", "AmortisedPixelGuide", "top_half_mask",
    "check_mask", "inpaint", "estimate_log_marginal", "pixel_log_prob", "MASK_KINDS", "make_mask",
    "ObservedGuide", "ConditionalPixelGuide", "impute", "conditional_log_likelihood", "pixel_scores",
]


def top_half_mask(n: int, device="cpu") -> torch.Tensor:
    """``(n, 784)`` boolean mask hiding the top 14 of 28 rows of every image."""
    n = check_size("n", n)
    height, width = MNIST_SHAPE
    one = torch.zeros(height, width, dtype=torch.bool, device=device)
    one[: height // 2] = True
    return one.reshape(1, -1).expand(n, -1).clone()


#: Mask kinds of :func:`make_mask`: the seeds' top half, pixels missing completely at random
#: (MCAR) at 50% and 90%, and a per-image mix of the three.
MASK_KINDS = ("top_half", "mcar50", "mcar90", "mix")


def make_mask(kind: str, n: int, generator: torch.Generator | None = None,
              device="cpu") -> torch.Tensor:
    """``(n, 784)`` boolean mask (True = hidden) of one of :data:`MASK_KINDS`.

    ``"mcar50"``/``"mcar90"`` hide each pixel independently with probability 0.5/0.9;
    ``"mix"`` gives each image one of ``top_half``, ``mcar50``, ``mcar90`` uniformly.  Draws
    use ``generator`` (CPU) or the global RNG; an MCAR image hiding all 784 pixels
    (probability 0.9^784) would be rejected by :func:`check_mask`.

    :raises ValueError: an unknown kind or ``n`` < 1.
    """
    if kind not in MASK_KINDS:
        raise ValueError(f"mask kind must be one of {MASK_KINDS}, got {kind!r}")
    n = check_size("n", n)
    x_dim = MNIST_SHAPE[0] * MNIST_SHAPE[1]
    uniform = torch.rand(n, x_dim, generator=generator)
    kinds = {"top_half": top_half_mask(n), "mcar50": uniform < 0.5, "mcar90": uniform < 0.9}
    if kind == "mix":
        pick = torch.randint(3, (n, 1), generator=generator)
        mask = torch.where(pick == 0, kinds["top_half"], torch.where(pick == 1, kinds["mcar50"],
                                                                     kinds["mcar90"]))
    else:
        mask = kinds[kind]
    return mask.to(device)


def check_mask(x: torch.Tensor, mask: torch.Tensor, x_dim: int, *, dtype=None,
               values: bool = True) -> None:
    """Reject what the missing-pixel model cannot take.

    :param dtype: the floating dtype ``x`` must have (the VAE's), or None for any.
    :param bool values: also check the values (a device sync; see
        :func:`~pyro_lvm.models.common.check_values`), not only shapes and dtypes.
    :raises ValueError: ``x`` not ``(N, x_dim)``, non-binary observed pixels, NaN/inf,
        a mask of another shape or not boolean, or an image with every pixel hidden.
    """
    check_data(x, "x", size=x_dim, dtype=dtype, values=values)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a boolean tensor (True = hidden), got "
                         f"{getattr(mask, 'dtype', type(mask).__name__)}; convert it with "
                         "mask.bool()")
    if mask.shape != x.shape:
        raise ValueError(f"mask must have the shape of x {tuple(x.shape)}, got {tuple(mask.shape)}")
    if not values:
        return
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

    def check_inputs(self, x, mask, values: bool | None = None) -> None:
        """:func:`check_mask` with the VAE's width and dtype; values as ``VAE.check_inputs``."""
        check_mask(x, mask, self.vae.x_dim, dtype=self.vae.encoder[0].weight.dtype,
                   values=check_values() if values is None else values)

    def model(self, x, mask, num_data=None):
        self.check_inputs(x, mask)
        if self.learn:
            register(f"{self.vae.name}_decoder", self.vae.decoder)
        prior = dist.Normal(x.new_zeros(self.vae.z_dim), 1.0).to_event(1)
        with data_plate(x, num_data, dim=-2):
            z = pyro.sample("z", prior)  # batch (B, 1): the pixel plate is dim -1
            logits = self.vae.decoder(z).squeeze(-2)
            with pyro.plate("pixels", self.vae.x_dim, dim=-1):
                pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False), obs=x,
                            obs_mask=~mask)

    def observed_model(self, x, mask, num_data=None):
        """The joint with the hidden pixels summed out (MIWAE, Mattei & Frellsen 2019, eq. 4):
        only observed pixels enter the likelihood, ``p(x_obs, z) = p(z) prod_{i: ~mask_i}
        p(x_i | z)``, since the hidden ones sum to one given z.  ``z`` is the only latent
        site, so any z-only guide (:class:`ObservedGuide`) and every loss apply; the values
        of ``x`` under ``mask`` are ignored."""
        if x.dim() != 2 or x.shape != mask.shape or x.shape[-1] != self.vae.x_dim:
            raise ValueError(f"x and mask must both be (B, {self.vae.x_dim}), got "
                             f"{tuple(x.shape)} and {tuple(mask.shape)}")
        if self.learn:
            register(f"{self.vae.name}_decoder", self.vae.decoder)
        prior = dist.Normal(x.new_zeros(self.vae.z_dim), 1.0).to_event(1)
        with data_plate(x, num_data, dim=-2):
            z = pyro.sample("z", prior)
            logits = self.vae.decoder(z).squeeze(-2)
            with pyro.plate("pixels", self.vae.x_dim, dim=-1), poutine.mask(mask=~mask):
                pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False), obs=x)

    def prior_guide(self, x, mask, num_data=None):
        """The model's own prior as proposal: ``z ~ p(z)``, hidden pixels ``~ p(x_i | z)``;
        the importance weight is then ``p(x_observed | z)``."""
        self.check_inputs(x, mask)
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
        check_mask(x, mask, self.vae.x_dim, dtype=self.vae.encoder[0].weight.dtype,
                   values=check_values())  # the guide runs first: before any network
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
    ``mask``: the ``(N, 784)`` mask phi belongs to (set by :func:`inpaint`); another mask
    raises ``ValueError``.

    With ``trainable=False`` it is a fixed proposal (e.g. phi = 0.5, the uniform one)."""

    def __init__(self, vae: VAE, num_images: int, init=None, trainable: bool = True,
                 learn_encoder: bool = False, name: str | None = None, mask=None):
        probs = torch.full((num_images, vae.x_dim), 0.5) if init is None else \
            torch.as_tensor(init, dtype=torch.float32).expand(num_images, vae.x_dim)
        logits = torch.logit(probs.clamp(1e-4, 1 - 1e-4)).contiguous()
        pixels = nn.Module()
        if trainable:
            pixels.logits = nn.Parameter(logits)
        else:
            pixels.register_buffer("logits", logits)
        super().__init__(vae, pixels, learn_encoder, unique_name("pixels_meanfield", name))
        self.mask = mask

    def logits(self, x, mask):
        logits = self.pixels.logits
        check_local_rows(x, logits.shape[0], "mean-field pixel")
        if self.mask is not None and not torch.equal(mask, self.mask.to(mask.device)):
            raise ValueError("the mean-field pixel guide was fitted for another mask; phi of "
                             "its hidden pixels does not describe this mask's hidden pixels")
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
    [1e-6, 1 - 1e-6] so that a confident wrong pixel costs at most 13.8 nats.

    :raises ValueError: as :func:`check_mask`, or ``probs`` not in [0, 1] of ``x``'s shape."""
    check_mask(x, mask, x.shape[-1] if isinstance(x, torch.Tensor) else 0)
    check_data(probs, "probs", size=x.shape[-1], low=0.0, high=1.0)
    if probs.shape[-2:] != x.shape:
        raise ValueError(f"probs must have the shape of x {tuple(x.shape)}, got {tuple(probs.shape)}")
    lp = dist.Bernoulli(probs=probs.clamp(1e-6, 1 - 1e-6)).log_prob(x)
    return (lp * mask).sum(-1)


def inpaint(model: MissingPixelModel, x, mask, guide="meanfield", steps: int = 500,
            lr: float = 0.05, loss="tracegraph", num_particles: int = 1, num_samples: int = 4,
            seed: int = 0):
    """Infer the hidden pixels of ``x`` ``(N, 784)`` under ``mask``.

    :param guide: ``"meanfield"`` (phi per image, fitted by SVI for ``steps`` full-batch
        steps), ``"amortised"`` (a fresh :class:`AmortisedPixelGuide` fitted on these
        images), or an already trained :class:`AmortisedPixelGuide` (applied as it is).
    :param loss: a score-function loss name or object (``tracegraph``, ``vimco``).
    :returns: ``(phi (N, 784), samples (num_samples, N, 784), guide)``; observed pixels
        are passed through in both.
    :raises ValueError: bad images or mask (:func:`check_mask`), an unknown guide, sizes
        that are not positive integers, or a step size that is not positive and finite.
    """
    check_mask(x, mask, model.vae.x_dim, dtype=model.vae.encoder[0].weight.dtype)
    steps, num_samples = check_size("steps", steps), check_size("num_samples", num_samples)
    num_particles = check_size("num_particles", num_particles)
    if not 0 < lr < float("inf"):
        raise ValueError(f"lr must be positive and finite, got {lr}")
    if not isinstance(guide, _PixelGuide):  # a trained pixel guide is applied as it is
        if guide == "meanfield":
            guide = MeanFieldPixelGuide(model.vae, len(x), mask=mask).to(x.device)
        elif guide == "amortised":
            guide = AmortisedPixelGuide(model.vae).to(x.device)
        else:
            raise ValueError(f"guide must be 'meanfield', 'amortised' (British spelling) or a "
                             f"pixel guide, got {guide!r}")
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
    :raises ValueError: bad images or mask, an unknown proposal, ``"guide"`` without one,
        or ``num_samples`` not a positive integer.
    """
    check_mask(x, mask, model.vae.x_dim, dtype=model.vae.encoder[0].weight.dtype)
    num_samples = check_size("num_samples", num_samples)
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


class ObservedGuide(Saveable):
    """``q(z | x_obs) = N(mu, diag sigma^2)`` from an MLP on ``[x * observed, mask]``
    (``2 * 784 -> hidden -> 2 z_dim``), for :meth:`MissingPixelModel.observed_model`.

    MIWAE (Mattei & Frellsen 2019, sec. 2.2) feeds the encoder the zero-filled image; the
    mask is appended here so that a hidden pixel is not read as a black one.  A mask of
    zeros makes it an ordinary encoder of complete images.  ``guide(x, mask, num_data=None)``
    samples ``z`` (batch ``(B, 1)``, the pixel plate's place) and returns it.

    :param VAE vae: the Bernoulli VAE whose latent it infers.
    :param bool init_from_vae: start from a copy of the VAE's trained encoder, applied to the
        zero-filled image (mask weights zero), so training on masked images begins at a
        working encoder; ``hidden_dims`` are then the VAE's.
    :raises ValueError: a non-Bernoulli VAE.
    """

    def __init__(self, vae: VAE, hidden_dims=(400,), name: str | None = None,
                 init_from_vae: bool = False):
        super().__init__()
        if vae.likelihood != "bernoulli":
            raise ValueError("the observed-pixel guide needs a Bernoulli VAE")
        self.vae, self.name = vae, unique_name("observed_encoder", name)
        if init_from_vae:
            self.encoder = copy.deepcopy(vae.encoder)
            first = self.encoder[0]
            wide = nn.Linear(2 * vae.x_dim, first.out_features).to(first.weight)
            with torch.no_grad():
                wide.weight.zero_()
                wide.weight[:, : vae.x_dim] = first.weight
                wide.bias.copy_(first.bias)
            self.encoder[0] = wide
        else:
            self.encoder = mlp((2 * vae.x_dim, *hidden_dims, 2 * vae.z_dim), nn.Softplus)

    def encode(self, x, mask):
        """``(loc, scale)``, each ``(B, z_dim)``."""
        _check_pair(x, mask, self.vae.x_dim)
        hidden = mask.to(x.dtype)
        return gaussian_head(self.encoder(torch.cat([x * (1 - hidden), hidden], -1)))

    def guide(self, x, mask, num_data=None):
        register(self.name, self.encoder)
        loc, scale = self.encode(x, mask)
        with data_plate(x, num_data, dim=-2):
            return pyro.sample("z", dist.Normal(loc.unsqueeze(-2), scale.unsqueeze(-2)).to_event(1))


class ConditionalPixelGuide(Saveable):
    """``q(z, x_hid | x_obs) = q(z | x_obs) prod_{i hidden} Bernoulli(x_i | phi_i(z, x_obs))``
    with ``phi = sigmoid(decoder(z) + r(z, x * observed, mask))``, for
    :meth:`MissingPixelModel.model` (hidden pixels as latent sites).

    ``r`` is an MLP whose output layer starts at zero (``residual_dims=None``: no ``r``), so
    the guide starts at ``q(x_hid | z) = p(x_hid | z)``; there each joint weight
    ``p(x_obs, x_hid, z) / q(z, x_hid)`` equals the summed-out weight ``p(x_obs, z) / q(z)``
    for every sampled completion, and the pixel part adds no variance.  Given z the pixels of
    a VAE are independent, so ``p(x_hid | z)`` is also the exact pixel posterior given z
    and ``r`` = 0 is optimal; ``r`` exists to measure that.  Only ``r`` (and the z guide,
    with ``learn_encoder``) is registered with Pyro; the decoder stays the model's.

    :param ObservedGuide z_guide: ``q(z | x_obs)``; its VAE supplies the decoder.
    :returns from ``guide``: ``z``.
    """

    def __init__(self, z_guide: ObservedGuide, residual_dims=None, learn_encoder: bool = False,
                 name: str | None = None):
        super().__init__()
        self.z_guide, self.vae, self.learn_encoder = z_guide, z_guide.vae, learn_encoder
        self.name = unique_name("pixels_conditional", name)
        self.residual = None
        if residual_dims is not None:
            d, zd = self.vae.x_dim, self.vae.z_dim
            self.residual = mlp((zd + 2 * d, *residual_dims, d), nn.ReLU)
            with torch.no_grad():
                self.residual[-1].weight.zero_()
                self.residual[-1].bias.zero_()

    def logits(self, z, x, mask):
        """``g(z, x_obs)``, ``(..., B, 784)`` for ``z`` of shape ``(..., B, z_dim)``."""
        base = self.vae.decoder(z)
        if self.residual is None:
            return base
        hidden = mask.to(x.dtype)
        obs = torch.cat([x * (1 - hidden), hidden], -1).expand(*z.shape[:-1], -1)
        return base + self.residual(torch.cat([z, obs], -1))

    def guide(self, x, mask, num_data=None):
        if self.residual is not None:
            register(self.name, self.residual)
        if self.learn_encoder:
            register(self.z_guide.name, self.z_guide.encoder)
        loc, scale = self.z_guide.encode(x, mask)
        with data_plate(x, num_data, dim=-2):
            z = pyro.sample("z", dist.Normal(loc.unsqueeze(-2), scale.unsqueeze(-2)).to_event(1))
            logits = self.logits(z.squeeze(-2), x, mask)
            with pyro.plate("pixels", self.vae.x_dim, dim=-1), poutine.mask(mask=mask):
                pyro.sample("x_unobserved", dist.Bernoulli(logits=logits))
        return z


def _check_pair(x, mask, x_dim):
    """Shapes and dtype only (cheap, no device sync): what a guide expects of its inputs."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a boolean tensor (True = hidden), got "
                         f"{getattr(mask, 'dtype', type(mask).__name__)}")
    if x.dim() != 2 or x.shape[-1] != x_dim or mask.shape != x.shape:
        raise ValueError(f"x and mask must both be (B, {x_dim}), got {tuple(x.shape)} and "
                         f"{tuple(mask.shape)}")


def _z_guide(model: MissingPixelModel, guide) -> ObservedGuide:
    """The ``q(z | x_obs)`` of a guide for the summed-out weights, checked against the model."""
    z_guide = guide.z_guide if isinstance(guide, ConditionalPixelGuide) else guide
    if not isinstance(z_guide, ObservedGuide):
        raise ValueError(f"guide must be an ObservedGuide or a ConditionalPixelGuide, got "
                         f"{type(guide).__name__}")
    if z_guide.vae.decoder is not model.vae.decoder:
        raise ValueError("the guide was built for another VAE than the model's; its weights "
                         "would not be this model's")
    return z_guide


def _rows_per_pass(num_samples, x_dim):
    return max(1, evaluate.MAX_ELEMENTS // (num_samples * x_dim))


@torch.no_grad()
def impute(model: MissingPixelModel, guide, x, mask, num_samples: int = 1000,
           method: str = "mean", num_imputations: int = 1):
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

    Observed pixels are passed through.  The weights come from
    :meth:`pyro_lvm.infer.IWAE.log_weights` on :meth:`MissingPixelModel.observed_model`.

    :param guide: an :class:`ObservedGuide`, or a :class:`ConditionalPixelGuide` (its z guide
        is used: given z the exact hidden-pixel posterior is the decoder's).
    :raises ValueError: bad images or mask (:func:`check_mask`), a guide of another type or
        built for another VAE, ``num_samples`` or ``num_imputations`` < 1, an unknown method.
    """
    check_mask(x, mask, model.vae.x_dim)
    z_guide = _z_guide(model, guide)
    if method not in ("mean", "sample"):
        raise ValueError(f"method must be 'mean' or 'sample', got {method!r}")
    num_samples = check_size("num_samples", num_samples)
    num_imputations = check_size("num_imputations", num_imputations)
    estimator = IWAE(num_particles=num_samples, max_plate_nesting=2)
    captured = {}

    def recording_guide(*args, **kwargs):
        captured["z"] = z_guide.guide(*args, **kwargs)

    out, step = [], _rows_per_pass(num_samples, model.vae.x_dim)
    for start in range(0, len(x), step):
        rows = slice(start, start + step)
        log_w = estimator.log_weights(model.observed_model, recording_guide, x[rows],
                                      mask[rows]).log_w  # (K, B)
        probs = torch.sigmoid(model.vae.decoder(captured["z"].squeeze(-2)))  # (K, B, D)
        weights = torch.softmax(log_w, 0)
        if method == "mean":
            out.append(torch.einsum("kb,kbd->bd", weights, probs))
        else:
            pick = torch.multinomial(weights.T, num_imputations, replacement=True).T  # (M, B)
            chosen = probs[pick, torch.arange(probs.shape[1], device=x.device)]  # (M, B, D)
            out.append(torch.bernoulli(chosen))
    result = torch.cat(out, -2)
    return torch.where(mask, result, x)


def _log_marginal_and_se(model_fn, guide_fn, x, mask, num_samples):
    """``log (1/K) sum_k w_k`` per image and its Monte Carlo standard error by the delta
    method, ``sd(w) / (sqrt(K) mean(w))``; both ``(N,)``, nats."""
    log_w = evaluate.log_weights(model_fn, guide_fn, (x, mask), num_samples=num_samples,
                                 batch_size=_rows_per_pass(num_samples, x.shape[-1]))
    top = log_w.max(0).values
    w = torch.exp(log_w - top)
    mean = w.mean(0)
    se = w.std(0) / (math.sqrt(num_samples) * mean) if num_samples > 1 else torch.full_like(mean, math.inf)
    return top + mean.log(), se


@torch.no_grad()
def conditional_log_likelihood(model: MissingPixelModel, guide, x, mask, num_samples: int = 1000,
                               complete_guide=None):
    """``log p(x_hid | x_obs) = log p(x) - log p(x_obs)`` per image, nats, by importance
    sampling of each term on :meth:`MissingPixelModel.observed_model` (the metric of VAEAC,
    Ivanov et al. 2019, sec. 5; ``x`` holds the true hidden pixels).

    Each term is an IWAE estimate with K = ``num_samples`` (consistent, biased low by
    O(1/K)); their difference is neither a lower nor an upper bound.

    :param guide: :class:`ObservedGuide` (or a :class:`ConditionalPixelGuide`) for
        ``q(z | x_obs)``; ``complete_guide`` proposes z for the complete images (default:
        the same guide with no pixel hidden).
    :returns: ``(estimate, standard_error)``, both ``(N,)`` nats; the standard error is the
        delta-method Monte Carlo error of the two terms added in quadrature.
    :raises ValueError: as :func:`impute`; ``x`` must be binary everywhere.
    """
    check_mask(x, mask, model.vae.x_dim)
    check_mask(x, torch.zeros_like(mask), model.vae.x_dim)  # the truth must be binary too
    z_guide = _z_guide(model, guide)
    full_guide = z_guide if complete_guide is None else _z_guide(model, complete_guide)
    num_samples = check_size("num_samples", num_samples)
    log_px, se_x = _log_marginal_and_se(model.observed_model, full_guide.guide, x,
                                        torch.zeros_like(mask), num_samples)
    log_pobs, se_obs = _log_marginal_and_se(model.observed_model, z_guide.guide, x, mask,
                                            num_samples)
    return log_px - log_pobs, torch.sqrt(se_x**2 + se_obs**2)


def pixel_scores(probs: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, bins: int = 10) -> dict:
    """Scores of pixel probabilities ``probs`` ``(N, 784)`` against the truth ``x`` on the
    hidden pixels only: ``log_q`` (:func:`pixel_log_prob`, mean nats per image), ``accuracy``
    of ``probs > 0.5``, ``brier`` (mean squared error of the probabilities, Brier 1950) and
    the reliability curve (``bins`` equal-width bins of probs: ``predicted`` mean probability
    and ``observed`` frequency of ones per non-empty bin, as scikit-learn's
    ``calibration_curve`` with ``strategy="uniform"``).

    :raises ValueError: shapes that differ, probabilities outside [0, 1] or NaN, ``bins`` not
        a positive integer, or a mask hiding no pixel at all.
    """
    check_data(probs, "probs", ndim=None, low=0.0, high=1.0)
    bins = check_size("bins", bins)
    if probs.shape != x.shape or mask.shape != x.shape or mask.dtype != torch.bool:
        raise ValueError(f"probs, x and a boolean mask must share one shape, got "
                         f"{tuple(probs.shape)}, {tuple(x.shape)}, {tuple(mask.shape)} {mask.dtype}")
    p, truth = probs[mask].double(), x[mask].double()
    if p.numel() == 0:
        raise ValueError("the mask hides no pixel: nothing to score")
    which = torch.clamp((p * bins).long(), max=bins - 1)
    count = torch.bincount(which, minlength=bins)
    keep = count > 0
    predicted = torch.bincount(which, p, minlength=bins)[keep] / count[keep]
    observed = torch.bincount(which, truth, minlength=bins)[keep] / count[keep]
    return {"log_q": pixel_log_prob(probs, x, mask).mean().item(),
            "accuracy": ((p > 0.5).double() == truth).double().mean().item(),
            "brier": (p - truth).pow(2).mean().item(),
            "predicted": predicted.tolist(), "observed": observed.tolist()}
