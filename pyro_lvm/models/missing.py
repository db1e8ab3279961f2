"""Missing-pixel MNIST: hidden pixels as latent Bernoulli variables of the VAE joint.

Joint (the library's :class:`~pyro_lvm.models.vae.VAE`), for an image ``x`` whose pixels
under a boolean ``mask`` (True = hidden; :mod:`~pyro_lvm.models.masks`) are not observed::

    z ~ N(0, I),     x_i | z ~ Bernoulli(logits = f_theta(z)_i)      for all 784 pixels

:meth:`MissingPixelModel.model` makes the hidden pixels latent sample sites through Pyro's
``obs_mask`` (sites ``x_observed`` and ``x_unobserved`` inside a plate over pixels), so
``p(x_observed) = sum over completions of p(x_observed, x_hidden)`` is what every ELBO and
importance-sampling estimate bounds or estimates; its guides are the pixel guides of
:mod:`~pyro_lvm.models.pixel_guides`.

:meth:`MissingPixelModel.observed_model` is the same joint with the hidden pixels summed
out (MIWAE, Mattei & Frellsen 2019, eq. 4).  In a VAE the pixels are independent given z,
so ``sum_{x_hid} p(x_hid | z) = 1`` and ``p(x_obs) = int p(z) prod_{i observed} p(x_i | z)
dz``: ``z`` is the only latent site, and every IWAE/DReG bound with a guide
``q(z | x_obs)`` (:class:`~pyro_lvm.models.pixel_guides.ObservedGuide`) is the MIWAE bound
on ``log p(x_obs)``.

Data plate at ``dim=-2`` (``z`` has batch shape ``(B, 1)``), pixel plate at ``dim=-1``.
"""

from __future__ import annotations

from contextlib import contextmanager

import pyro
import pyro.distributions as dist
from pyro import poutine

from ..checks import check_values
from ..params import register
from .common import data_plate
from .masks import check_mask
from .saving import Saveable
from .vae import VAE

__all__ = ["MissingPixelModel", "check_bernoulli_vae"]


def check_bernoulli_vae(vae, who: str) -> VAE:
    """Reject a ``vae`` that is not a :class:`~pyro_lvm.models.vae.VAE` with Bernoulli
    pixels, the joint every module of the missing-pixel family is built on.

    :param who: how the message names the module being built.
    :raises ValueError: naming ``vae``, what was expected and what was got.
    """
    if not isinstance(vae, VAE):
        raise ValueError(f"vae of {who} must be a pyro_lvm.models.VAE, got {type(vae).__name__}")
    if vae.likelihood != "bernoulli":
        raise ValueError(f"vae of {who} must have Bernoulli pixels (likelihood='bernoulli'), "
                         f"got likelihood={vae.likelihood!r}")
    return vae


class MissingPixelModel(Saveable):
    """The VAE's joint with masked pixels latent (:meth:`model`) or summed out
    (:meth:`observed_model`).  Each takes ``(x, mask, num_data=None)``: ``x`` ``(B, 784)``
    binary images (the values under ``mask`` are not observed), ``mask`` ``(B, 784)``
    boolean, True = hidden.

    :param VAE vae: a Bernoulli VAE (its decoder defines ``p(x | z)``).
    :param bool learn: register the decoder's parameters, so SVI trains them
        (learning from incomplete images); False keeps the trained joint fixed (inference).
    :raises ValueError: ``vae`` not a Bernoulli VAE.
    """

    def __init__(self, vae: VAE, learn: bool = False):
        super().__init__()
        self.vae, self.learn = check_bernoulli_vae(vae, "MissingPixelModel"), bool(learn)

    def check_inputs(self, x, mask, values: bool | None = None) -> None:
        """:func:`~pyro_lvm.models.masks.check_mask` with the VAE's width and dtype; values
        when ``values``, or (None) when :func:`~pyro_lvm.checks.check_values` says so."""
        check_mask(x, mask, self.vae.x_dim, dtype=self.vae.encoder[0].weight.dtype,
                   values=check_values() if values is None else values)

    @contextmanager
    def _pixel_plate(self, x, mask, num_data, learn: bool):
        """The body every site of this module shares: ``z ~ N(0, I)`` per image, then the
        plate over pixels; the block receives the decoder's logits ``(..., B, 784)`` and
        samples its pixel site inside the plate."""
        self.check_inputs(x, mask)
        if learn:
            register(f"{self.vae.name}_decoder", self.vae.decoder)
        prior = dist.Normal(x.new_zeros(self.vae.z_dim), 1.0).to_event(1)
        with data_plate(x, num_data, dim=-2):
            z = pyro.sample("z", prior)  # batch (B, 1): the pixel plate is dim -1
            with pyro.plate("pixels", self.vae.x_dim, dim=-1):
                yield self.vae.decoder(z).squeeze(-2)

    def model(self, x, mask, num_data=None):
        """``p(z) prod_i p(x_i | z)`` over all pixels, the hidden ones latent (``obs_mask``)."""
        with self._pixel_plate(x, mask, num_data, self.learn) as logits:
            pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False), obs=x,
                        obs_mask=~mask)

    def observed_model(self, x, mask, num_data=None):
        """The joint with the hidden pixels summed out, ``p(x_obs, z) = p(z) prod_{i:
        ~mask_i} p(x_i | z)`` (MIWAE, Mattei & Frellsen 2019, eq. 4): ``z`` is the only
        latent site, so any z-only guide and every loss apply."""
        with self._pixel_plate(x, mask, num_data, self.learn) as logits, \
                poutine.mask(mask=~mask):
            pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False), obs=x)

    def prior_guide(self, x, mask, num_data=None):
        """The model's own prior as proposal for :meth:`model`: ``z ~ p(z)``, hidden pixels
        ``~ p(x_i | z)``; the importance weight is then ``p(x_observed | z)``.  Registers
        nothing: the prior has no parameters of its own."""
        with self._pixel_plate(x, mask, num_data, learn=False) as logits, \
                poutine.mask(mask=mask):
            pyro.sample("x_unobserved", dist.Bernoulli(logits=logits, validate_args=False))
