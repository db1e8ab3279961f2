"""Guides of the missing-pixel model: ``q(z | x_obs)`` and the Bernoulli pixel posteriors.

**Pixel guides**, for :meth:`~pyro_lvm.models.missing.MissingPixelModel.model` (hidden
pixels latent), one family::

    q(z, x_hid | x_obs) = q(z | x_obs) prod_{i hidden} phi_i^x_i (1 - phi_i)^(1 - x_i)

whose members differ in ``phi`` (:class:`PixelGuide` holds the one guide body):

* :class:`MeanFieldPixelGuide`: ``phi = sigmoid(l)`` with ``l`` free per image and pixel
  (the seeds' factorised mean-field posterior; local parameters);
* :class:`AmortisedPixelGuide`: ``phi = sigmoid(g(x * observed, mask))`` from an MLP;
* :class:`ConditionalPixelGuide`: ``phi = sigmoid(decoder(z) + r(z, x * observed, mask))``
  with the residual ``r`` starting at zero.  At ``r = 0``, ``q(x_hid | z) = p(x_hid | z)``
  is the exact pixel posterior given z (the pixels of a VAE are independent given z), and
  each joint weight equals the summed-out weight of
  :meth:`~pyro_lvm.models.missing.MissingPixelModel.observed_model` exactly;

and in ``q(z | x_obs)``: an :class:`ObservedGuide` (``z_guide=``), or, where ``phi`` does
not depend on z, the VAE's own encoder fed the image completed with ``phi`` (the seeds'
choice, ``z_guide=None``).  The pixels are discrete, so they are trained by
score-function losses (``tracegraph``, ``vimco``); z is sampled before the pixels, so that
Pyro's ``TraceGraph_ELBO`` sees that pixel i only affects ``log p(x_i | z) - log q(x_i)``
and each pixel's learning signal stays local.  Only the guide's own parameters are
registered with Pyro (and its z part with ``learn_encoder``); the VAE stays the model's.

**z only**, for ``observed_model`` (MIWAE, Mattei & Frellsen 2019, sec. 2.2):
:class:`ObservedGuide`, ``q(z | x_obs) = N(mu, diag sigma^2)`` from an MLP on the zero-filled
image and the mask (zeros alone would be read as black pixels).

Every ``guide(x, mask, num_data=None)`` takes ``x`` ``(B, 784)`` and a boolean ``mask``
``(B, 784)`` (True = hidden), samples ``z`` (batch ``(B, 1)``: the pixel plate is dim -1)
and returns it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

import pyro
import pyro.distributions as dist
from pyro import poutine

from ..checks import check_data, check_size, check_values
from ..params import register, unique_name
from .common import check_local_rows, data_plate, gaussian_head, mlp
from .masks import check_mask
from .missing import check_bernoulli_vae
from .saving import Saveable
from .vae import VAE

__all__ = ["AmortisedPixelGuide", "ConditionalPixelGuide", "MeanFieldPixelGuide",
           "ObservedGuide", "PixelGuide"]


def _widths(name: str, dims) -> tuple:
    """Hidden-layer widths: a tuple or list of positive integers (a bare 400 is refused)."""
    if not isinstance(dims, (tuple, list)):
        raise ValueError(f"{name} must be a tuple of layer widths such as (400,), got {dims!r}")
    return tuple(check_size(f"{name}[{i}]", d) for i, d in enumerate(dims))


def _probabilities(init, shapes, dtype) -> torch.Tensor:
    """``init`` as a tensor of probabilities in [0, 1] of one of ``shapes``."""
    try:
        probs = torch.as_tensor(init, dtype=dtype)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"init must be probabilities (a tensor), got "
                         f"{type(init).__name__}") from err
    check_data(probs, "init", ndim=None, low=0.0, high=1.0)
    if tuple(probs.shape) not in shapes:
        raise ValueError(f"init must have shape {' or '.join(map(str, shapes))}, got "
                         f"{tuple(probs.shape)}")
    return probs


def _observed(x, mask) -> torch.Tensor:
    """``[x * observed, mask]``, ``(B, 2 * 784)``: the zero-filled image and its mask."""
    hidden = mask.to(x.dtype)
    return torch.cat([x * (1 - hidden), hidden], -1)


class ObservedGuide(Saveable):
    """``q(z | x_obs) = N(mu, diag sigma^2)`` from an MLP on ``[x * observed, mask]``
    (``2 * 784 -> hidden -> 2 z_dim``), for
    :meth:`~pyro_lvm.models.missing.MissingPixelModel.observed_model`, and the z part of
    the pixel guides.  A mask of zeros makes it an ordinary encoder of complete images.

    :param VAE vae: the Bernoulli VAE whose latent it infers.
    :param hidden_dims: widths of the hidden layers.
    :param str name: prefix of its parameters in Pyro's param store.
    :param bool init_from_vae: start from a copy of the VAE's trained encoder, applied to the
        zero-filled image (mask weights zero), so training on masked images begins at a
        working encoder; ``hidden_dims`` are then the VAE's.
    :raises ValueError: a non-Bernoulli VAE, or ``hidden_dims`` not positive integers.
    """

    def __init__(self, vae: VAE, hidden_dims=(400,), name: str | None = None,
                 init_from_vae: bool = False):
        super().__init__()
        self.vae = check_bernoulli_vae(vae, "ObservedGuide")
        hidden_dims = _widths("hidden_dims", hidden_dims)
        self.name = unique_name("observed_encoder", name)
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
            self.encoder = mlp((2 * vae.x_dim, *hidden_dims, 2 * vae.z_dim),
                               nn.Softplus).to(vae.encoder[0].weight)  # the VAE's device, dtype

    def check_inputs(self, x, mask, values: bool | None = None) -> None:
        """:func:`~pyro_lvm.models.masks.check_mask` with the VAE's width and dtype."""
        check_mask(x, mask, self.vae.x_dim, dtype=self.vae.encoder[0].weight.dtype,
                   values=check_values() if values is None else values)

    def encode(self, x, mask):
        """``(loc, scale)`` of ``q(z | x_obs)``, each ``(B, z_dim)``.

        :raises ValueError: as :func:`~pyro_lvm.models.masks.check_mask`."""
        self.check_inputs(x, mask, values=True)
        return self._encode(x, mask)

    def _encode(self, x, mask):
        return gaussian_head(self.encoder(_observed(x, mask)))

    def guide(self, x, mask, num_data=None):
        self.check_inputs(x, mask)  # the guide runs first: before any network
        register(self.name, self.encoder)
        loc, scale = self._encode(x, mask)
        with data_plate(x, num_data, dim=-2):
            return pyro.sample("z", dist.Normal(loc.unsqueeze(-2), scale.unsqueeze(-2)).to_event(1))


class PixelGuide(Saveable):
    """Base of the pixel guides (module docstring): the guide body, the input check and
    ``phi``; a member defines ``_logits(x, mask, z)``, the logits of ``phi``.

    :param VAE vae: the Bernoulli VAE of the model.
    :param pixels: the module holding ``phi``'s parameters (registered as ``name``), or None.
    :param z_guide: an :class:`ObservedGuide` (of ``vae``) for ``q(z | x_obs)``, or None for
        the VAE's encoder fed the image completed with ``phi`` (only where ``phi`` does not
        depend on z).
    :param bool learn_encoder: register the z part too, so SVI trains it.

    Every guide is built on the VAE's device and dtype.

    :raises ValueError: a non-Bernoulli VAE, or a ``z_guide`` that is not an
        :class:`ObservedGuide` of a VAE of ``vae``'s sizes.
    """

    #: Whether ``phi`` depends on z (then ``q(z | x_obs)`` is a ``z_guide``'s).
    conditional = False

    def __init__(self, vae: VAE, pixels: nn.Module | None, z_guide: ObservedGuide | None,
                 learn_encoder: bool, name: str):
        super().__init__()
        self.vae = check_bernoulli_vae(vae, type(self).__name__)
        if z_guide is not None and not isinstance(z_guide, ObservedGuide):
            raise ValueError(f"z_guide must be an ObservedGuide or None, got "
                             f"{type(z_guide).__name__}")
        sizes = (vae.x_dim, vae.z_dim)
        if z_guide is not None and (z_guide.vae.x_dim, z_guide.vae.z_dim) != sizes:
            raise ValueError(f"z_guide was built for a VAE with x_dim, z_dim = "
                             f"{z_guide.vae.x_dim}, {z_guide.vae.z_dim}; this guide's has "
                             f"{sizes[0]}, {sizes[1]}")
        if pixels is not None:
            pixels.to(vae.encoder[0].weight)  # the VAE's device and dtype
        self.pixels, self.z_guide = pixels, z_guide
        self.learn_encoder, self.name = learn_encoder, name

    def check_inputs(self, x, mask, values: bool | None = None) -> None:
        """:func:`~pyro_lvm.models.masks.check_mask` with the VAE's width and dtype."""
        check_mask(x, mask, self.vae.x_dim, dtype=self.vae.encoder[0].weight.dtype,
                   values=check_values() if values is None else values)

    def _logits(self, x, mask, z=None) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, x, mask, z=None) -> torch.Tensor:
        """Logits of ``phi``, ``(N, 784)``, or ``(..., N, 784)`` for ``z`` ``(..., N, z_dim)``
        (needed by :class:`ConditionalPixelGuide`, ignored by the others).

        :raises ValueError: as :meth:`check_inputs`; ``z`` missing or of the wrong shape
            where ``phi`` depends on it."""
        self.check_inputs(x, mask, values=True)
        if self.conditional and (not isinstance(z, torch.Tensor) or z.dim() < 2
                                 or z.shape[-2:] != (len(x), self.vae.z_dim)):
            raise ValueError(f"z must be a tensor (..., {len(x)}, {self.vae.z_dim}): phi of "
                             f"{type(self).__name__} depends on z, got "
                             f"{tuple(z.shape) if isinstance(z, torch.Tensor) else z!r}")
        return self._logits(x, mask, z)

    @torch.no_grad()
    def probs(self, x, mask, z=None) -> torch.Tensor:
        """``phi`` with the observed pixels of ``x`` passed through, shapes as :meth:`logits`.

        :raises ValueError: as :meth:`logits`."""
        return torch.where(mask, torch.sigmoid(self.logits(x, mask, z)), x)

    def _register(self):
        if self.pixels is not None:
            register(self.name, self.pixels)
        if self.learn_encoder and self.z_guide is None:
            register(f"{self.vae.name}_encoder", self.vae.encoder)
        elif self.learn_encoder:
            register(self.z_guide.name, self.z_guide.encoder)

    def guide(self, x, mask, num_data=None):
        self.check_inputs(x, mask)  # the guide runs first: before any network
        self._register()
        fixed = None if self.conditional else self._logits(x, mask)  # phi free of z
        if self.z_guide is not None:
            loc, scale = self.z_guide._encode(x, mask)
        else:  # the VAE's encoder on the image completed with probabilities
            loc, scale = self.vae.encode(torch.where(mask, torch.sigmoid(fixed), x))
        with data_plate(x, num_data, dim=-2):
            z = pyro.sample("z", dist.Normal(loc.unsqueeze(-2), scale.unsqueeze(-2)).to_event(1))
            logits = fixed if fixed is not None else self._logits(x, mask, z.squeeze(-2))
            with pyro.plate("pixels", self.vae.x_dim, dim=-1), poutine.mask(mask=mask):
                pyro.sample("x_unobserved", dist.Bernoulli(logits=logits))
        return z


class MeanFieldPixelGuide(PixelGuide):
    """``phi`` free per image and pixel: local parameters, so the guide must see all
    ``num_images`` images at every step, in order.

    :param int num_images: N.
    :param init: ``(N, 784)`` or ``(784,)`` initial probabilities (default 0.5).
    :param bool trainable: False makes ``phi`` a fixed proposal (e.g. 0.5, the uniform one).
    :param mask: the ``(N, 784)`` mask ``phi`` belongs to (set by
        :func:`pyro_lvm.imputation.inpaint`), or None; inputs with another mask are refused.
    :param z_guide, learn_encoder, name: as :class:`PixelGuide` (name default
        ``pixels_meanfield_<i>``).
    :raises ValueError: ``num_images`` not a positive integer, ``init`` not probabilities of
        those shapes, ``mask`` not a boolean ``(N, 784)`` tensor, or as :class:`PixelGuide`.
    """

    def __init__(self, vae: VAE, num_images: int, init=None, trainable: bool = True,
                 learn_encoder: bool = False, name: str | None = None, mask=None,
                 z_guide: ObservedGuide | None = None):
        vae = check_bernoulli_vae(vae, "MeanFieldPixelGuide")
        shape = (check_size("num_images", num_images), vae.x_dim)
        probs = torch.full(shape, 0.5) if init is None else \
            _probabilities(init, (shape, shape[1:]), torch.float32).expand(shape)
        if mask is not None and (not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool
                                 or tuple(mask.shape) != shape):
            raise ValueError(f"mask must be None or a boolean tensor {shape}, got "
                             f"{getattr(mask, 'dtype', type(mask).__name__)} "
                             f"{tuple(getattr(mask, 'shape', ()))}")
        logits = torch.logit(probs.clamp(1e-4, 1 - 1e-4)).contiguous()
        pixels = nn.Module()
        if trainable:
            pixels.logits = nn.Parameter(logits)
        else:
            pixels.register_buffer("logits", logits)
        super().__init__(vae, pixels, z_guide, learn_encoder, unique_name("pixels_meanfield", name))
        self.mask = mask
        self.num_local_rows = num_images  # local parameters: fit refuses DDP (Context.check_split)

    def check_inputs(self, x, mask, values: bool | None = None) -> None:
        """As :meth:`PixelGuide.check_inputs`, and all N rows; with values, the mask
        ``phi`` was fitted for (a device sync)."""
        super().check_inputs(x, mask, values)
        check_local_rows(x, self.pixels.logits.shape[0], "mean-field pixel")
        values = check_values() if values is None else values
        if values and self.mask is not None and not torch.equal(mask, self.mask.to(mask.device)):
            raise ValueError("mask is another mask than the one the mean-field pixel guide was "
                             "fitted for; phi of its hidden pixels does not describe this mask's")

    def _logits(self, x, mask, z=None):
        return self.pixels.logits


class AmortisedPixelGuide(PixelGuide):
    """``phi = sigmoid(g([x * observed, mask]))`` with ``g`` an MLP ``1568 -> hidden -> 784``.

    :param hidden_dims: widths of ``g``'s hidden layers.
    :param init: ``(784,)`` probabilities ``phi`` starts from for every image (e.g. the
        training pixel means); the output layer starts with zero weights and these logits as
        bias, so training begins at that baseline instead of at a random network's noise.
    :param z_guide, learn_encoder, name: as :class:`PixelGuide` (name default
        ``pixels_amortised_<i>``).
    :raises ValueError: ``hidden_dims`` not positive integers, ``init`` not ``(784,)``
        probabilities, or as :class:`PixelGuide`.
    """

    def __init__(self, vae: VAE, hidden_dims=(400,), init=None, learn_encoder: bool = False,
                 name: str | None = None, z_guide: ObservedGuide | None = None):
        x_dim = check_bernoulli_vae(vae, "AmortisedPixelGuide").x_dim
        net = mlp((2 * x_dim, *_widths("hidden_dims", hidden_dims), x_dim), nn.ReLU)
        if init is not None:
            probs = _probabilities(init, ((x_dim,),), torch.float32)
            with torch.no_grad():
                net[-1].weight.zero_()
                net[-1].bias.copy_(torch.logit(probs.clamp(1e-3, 1 - 1e-3)))
        super().__init__(vae, net, z_guide, learn_encoder, unique_name("pixels_amortised", name))

    def _logits(self, x, mask, z=None):
        return self.pixels(_observed(x, mask))


class ConditionalPixelGuide(PixelGuide):
    """``phi = sigmoid(decoder(z) + r(z, x * observed, mask))`` with ``r`` (``pixels``) an
    MLP ``z_dim + 1568 -> residual_dims -> 784`` whose output layer starts at zero
    (``residual_dims=None``: no ``r``), and ``q(z | x_obs)`` the ``z_guide``'s.

    The guide starts at ``q(x_hid | z) = p(x_hid | z)``; there each joint weight
    ``p(x_obs, x_hid, z) / q(z, x_hid)`` equals the summed-out weight ``p(x_obs, z) / q(z)``
    for every sampled completion, and the pixel part adds no variance.  Since that is also
    the exact pixel posterior given z, ``r = 0`` is optimal; ``r`` exists to measure that.

    :param ObservedGuide z_guide: ``q(z | x_obs)``; its VAE supplies the decoder.
    :param learn_encoder, name: as :class:`PixelGuide` (name default ``pixels_conditional_<i>``).
    :raises ValueError: ``z_guide`` not an :class:`ObservedGuide`, or ``residual_dims`` not
        None or positive integers.
    """

    conditional = True

    def __init__(self, z_guide: ObservedGuide, residual_dims=None, learn_encoder: bool = False,
                 name: str | None = None):
        if not isinstance(z_guide, ObservedGuide):
            raise ValueError(f"z_guide must be an ObservedGuide, got {type(z_guide).__name__}")
        vae, residual = z_guide.vae, None
        if residual_dims is not None:
            widths = _widths("residual_dims", residual_dims)
            residual = mlp((vae.z_dim + 2 * vae.x_dim, *widths, vae.x_dim), nn.ReLU)
            with torch.no_grad():
                residual[-1].weight.zero_()
                residual[-1].bias.zero_()
        super().__init__(vae, residual, z_guide, learn_encoder,
                         unique_name("pixels_conditional", name))

    def _logits(self, x, mask, z=None):
        base = self.vae.decoder(z)
        if self.pixels is None:
            return base
        observed = _observed(x, mask).expand(*z.shape[:-1], -1)
        return base + self.pixels(torch.cat([z, observed], -1))
