"""The deep latent Gaussian model (variational autoencoder) as a Pyro model/guide pair.

Generative model (Kingma & Welling 2014, sec. 3; Rezende, Mohamed & Wierstra 2014)::

    z_n ~ N(0, I_{z_dim})
    x_n | z_n ~ Bernoulli(logits = f_theta(z_n))                     likelihood="bernoulli"
    x_n | z_n ~ N(mu_theta(z_n), diag sigma^2_theta(z_n))            likelihood="normal"

Amortised guide: ``q_phi(z_n | x_n) = N(mu_phi(x_n), diag sigma^2_phi(x_n))`` from an
MLP encoder.  ``z`` is the only latent site and sits in the data plate, so every
loss and estimator of :mod:`pyro_lvm.infer` and :mod:`pyro_lvm.evaluate` applies.
"""

from __future__ import annotations

import torch
from torch import nn

import pyro
import pyro.distributions as dist

from ..checks import check_choice, check_data, check_generator, check_size, check_sizes, check_values
from ..params import register, unique_name
from .common import data_plate, gaussian_head, mlp
from .saving import Saveable

__all__ = ["VAE"]

_LIKELIHOODS = ("bernoulli", "normal")


class VAE(Saveable):
    """Deep latent Gaussian model with an amortised Gaussian guide.

    :param int x_dim: pixels (features) per data point, D.
    :param int z_dim: latent dimensions.
    :param hidden_dims: widths of the hidden layers of both MLPs (the decoder
        mirrors the encoder).
    :param str likelihood: ``"bernoulli"`` for data in [0, 1] (binary pixels,
        or grey levels read as probabilities), ``"normal"`` for real data.
    :param activation: the hidden-layer non-linearity (a ``nn.Module`` class).
    :param str name: prefix of the parameter names in Pyro's param store (default
        ``vae_0``, ``vae_1``, ... one per instance: :func:`pyro_lvm.params.unique_name`).
    :raises ValueError: a size that is not a positive integer, ``hidden_dims`` not a
        sequence of them, an unknown likelihood, an activation that is not an ``nn.Module``
        class, or a name that is not a non-empty string.

    ``model(x, num_data=None)`` and ``guide(x, num_data=None)`` take ``x`` of
    shape ``(B, x_dim)``; ``num_data`` is the full data set size when ``x`` is a
    minibatch (the plate then scales the likelihood by ``num_data / B``).  Both
    raise ``ValueError`` (:meth:`check_inputs`) for ``x`` of another shape or dtype than
    the parameters', and for NaN/inf or (Bernoulli) values outside [0, 1] when Pyro's
    validation is on (the doors of ``fit`` and ``evaluate`` check the values once).
    """

    def __init__(
        self,
        x_dim: int = 784,
        z_dim: int = 50,
        hidden_dims=(400,),
        likelihood: str = "bernoulli",
        activation=nn.Softplus,
        name: str | None = None,
    ):
        super().__init__()
        x_dim, z_dim = check_size("x_dim", x_dim), check_size("z_dim", z_dim)
        hidden_dims = check_sizes("hidden_dims", hidden_dims)
        self.likelihood = check_choice("likelihood", likelihood, _LIKELIHOODS)
        self.x_dim, self.z_dim, self.name = x_dim, z_dim, unique_name("vae", name)
        out = x_dim if likelihood == "bernoulli" else 2 * x_dim
        self.encoder = mlp((x_dim, *hidden_dims, 2 * z_dim), activation)
        self.decoder = mlp((z_dim, *reversed(hidden_dims), out), activation)

    def check_inputs(self, x: torch.Tensor, values: bool | None = None) -> None:
        """Reject ``x`` the model cannot take: shape and dtype on every call, values
        (NaN/inf, Bernoulli range) when ``values``, by default as
        :func:`~pyro_lvm.checks.check_values` says (the doors of ``fit`` and ``evaluate``
        ask for them once).

        :raises ValueError: naming ``x`` and what was expected.
        """
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[-1] != self.x_dim:
            got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (B, {self.x_dim}), got {got}")
        low, high = (0.0, 1.0) if self.likelihood == "bernoulli" else (None, None)
        check_data(x, "x", low=low, high=high, dtype=self.encoder[0].weight.dtype,
                   values=check_values() if values is None else values)

    def encode(self, x: torch.Tensor):
        """Parameters of the guide: ``(loc, scale)``, each ``(..., z_dim)``."""
        return gaussian_head(self.encoder(x))

    def likelihood_dist(self, z: torch.Tensor) -> dist.Distribution:
        """p(x | z) for ``z`` of shape ``(..., z_dim)``, with event shape ``(x_dim,)``."""
        out = self.decoder(z)
        if self.likelihood == "bernoulli":
            # validate_args=False: grey levels in [0, 1] are allowed as soft targets.
            return dist.Bernoulli(logits=out, validate_args=False).to_event(1)
        return dist.Normal(*gaussian_head(out)).to_event(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mean of p(x | z): pixel probabilities or Gaussian means, ``(..., x_dim)``."""
        return self.likelihood_dist(z).mean

    def model(self, x: torch.Tensor, num_data: int | None = None):
        self.check_inputs(x)
        register(f"{self.name}_decoder", self.decoder)
        prior = dist.Normal(x.new_zeros(self.z_dim), x.new_ones(self.z_dim)).to_event(1)
        with data_plate(x, num_data):
            z = pyro.sample("z", prior)
            pyro.sample("x", self.likelihood_dist(z), obs=x)

    def guide(self, x: torch.Tensor, num_data: int | None = None):
        self.check_inputs(x)  # the guide runs first: bad data must not reach the encoder
        register(f"{self.name}_encoder", self.encoder)
        # The encoder runs once per batch; a particle plate around the guide
        # broadcasts the Normal, so K particles cost one encoder pass.
        loc, scale = self.encode(x)
        with data_plate(x, num_data):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of p(x | z = posterior mean), ``(N, x_dim)``.

        :raises ValueError: as :meth:`check_inputs` (values included)."""
        self.check_inputs(x, values=True)
        return self.decode(self.encode(x)[0])

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Means of p(x | z) for ``n`` prior draws of z, ``(n, x_dim)``.

        :raises ValueError: ``n`` not a positive integer, ``generator`` not a
            ``torch.Generator`` on the model's device."""
        n, device = check_size("n", n), next(self.parameters()).device
        check_generator(generator, device)
        return self.decode(torch.randn(n, self.z_dim, device=device, generator=generator))
