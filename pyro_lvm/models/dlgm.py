"""Deep latent Gaussian model with L stochastic layers (Rezende, Mohamed & Wierstra 2014, eq. 3;
Burda, Grosse & Salakhutdinov 2016, sec. 2) as a Pyro model/guide pair.

Generative model, top down, and guide, bottom up::

    z_L ~ N(0, I)                                       q(z_1 | x)   = N(mu(x), diag sigma^2(x))
    z_l | z_{l+1} ~ N(mu(z_{l+1}), diag sigma^2(z_{l+1}))  q(z_{l+1} | z_l) = N(mu(z_l), diag sigma^2(z_l))
    x | z_1 ~ Bernoulli(logits = f(z_1))

Every ``mu``/``sigma`` is an MLP; each stochastic layer ``l`` has its own hidden widths, used by
the guide's network ``z_{l-1} -> z_l`` (``z_0 = x``) and mirrored by the model's ``z_l -> z_{l-1}``.
All latent sites ``z1 .. zL`` sit in the data plate, so the importance-weighted losses,
:func:`pyro_lvm.evaluate.log_likelihood` and the diagnostics apply unchanged.

:class:`DLGM` extends :class:`~pyro_lvm.models.vae.VAE`: the bottom layer (``x <-> z_1``: encoder,
decoder, likelihood, input checks) is the VAE's; the layers above add one network pair each.
With one layer it is the VAE (its single site named ``z1``).

Architectures of Burda et al.'s MNIST experiments (:data:`BURDA_ARCHITECTURES`; the paper's
sec. 5.1, arXiv:1509.00519v4, and the authors' code, github.com/yburda/iwae ``experiments.py``):
one stochastic layer of 50 units with two deterministic tanh layers of 200 between it and ``x``
(784-200-200-50); two stochastic layers of 100 and 50 units, two tanh layers of 200 between ``x``
and ``z_1`` and two of 100 between ``z_1`` and ``z_2``; the model mirrors the guide.  They apply
an exp non-linearity to the predicted variances; here ``softplus(linear) + MIN_SCALE`` (:func:`~.common.gaussian_head`) predicts the
standard deviations, as in the VAE (the same family, with a bounded gradient).
"""

from __future__ import annotations

import torch
from torch import nn

import pyro
import pyro.distributions as dist
from pyro.poutine.util import site_is_subsample

from ..checks import (check_callable, check_data, check_generator, check_positive, check_size,
                      check_sizes)
from ..params import isolated_param_store, register, unique_name
from .common import data_plate, gaussian_head, mlp
from .vae import VAE

__all__ = ["BURDA_ARCHITECTURES", "DLGM", "active_units"]

#: ``{layers: (z_dims, hidden_dims)}``, bottom layer first, of Burda et al. (2016), sec. 5.1
#: (the same sizes in the authors' code, experiments.py).
BURDA_ARCHITECTURES = {
    1: ((50,), ((200, 200),)),
    2: ((100, 50), ((200, 200), (100, 100))),
}


def _gaussian(net: nn.Module, inputs: torch.Tensor) -> dist.Distribution:
    return dist.Normal(*gaussian_head(net(inputs))).to_event(1)


class DLGM(VAE):
    """Deep latent Gaussian model with ``L = len(z_dims)`` stochastic layers and a bottom-up guide.

    :param int x_dim: pixels per data point, D.
    :param z_dims: widths of the stochastic layers, bottom (``z_1``, next to ``x``) first.
    :param hidden_dims: one tuple of hidden widths per stochastic layer: layer ``l``'s tuple
        is used by ``q(z_l | z_{l-1})`` (``z_0 = x``) and reversed by ``p(z_{l-1} | z_l)``.
    :param str likelihood: ``"bernoulli"`` (binary pixels) or ``"normal"``, as in the VAE.
    :param activation: hidden non-linearity (``nn.Tanh`` in Burda et al.).
    :param str name: prefix of the parameter names in Pyro's param store (default ``dlgm_0``,
        ``dlgm_1``, ... one per instance: :func:`pyro_lvm.params.unique_name`).
    :raises ValueError: no layer, a ``hidden_dims`` that is not one sequence of positive
        integers per layer of ``z_dims``, a size that is not a positive integer, or as
        :class:`~pyro_lvm.models.vae.VAE` (likelihood, activation, name).

    ``model(x, num_data=None)`` and ``guide(x, num_data=None)`` take ``x`` of shape
    ``(B, x_dim)``; latent sites ``"z1" .. "zL"`` have shapes ``(B, z_dims[l-1])`` (with K
    vectorised particles ``(K, B, z_dims[l-1])``); the observed site ``"x"`` is ``(B, x_dim)``.
    """

    def __init__(self, x_dim: int = 784, z_dims=(50,), hidden_dims=((200, 200),),
                 likelihood: str = "bernoulli", activation=nn.Tanh, name: str | None = None):
        z_dims = check_sizes("z_dims", z_dims, allow_empty=False)
        if not isinstance(hidden_dims, (tuple, list)) or len(hidden_dims) != len(z_dims):
            raise ValueError(f"need one tuple of hidden_dims per stochastic layer, such as "
                             f"((200, 200),) for one layer: z_dims {z_dims} needs {len(z_dims)}, "
                             f"got hidden_dims={hidden_dims!r}")
        hidden_dims = tuple(check_sizes(f"hidden_dims[{l}]", h) for l, h in enumerate(hidden_dims))
        super().__init__(x_dim, z_dims[0], hidden_dims[0], likelihood, activation,
                         unique_name("dlgm", name))
        self.z_dims = z_dims
        # up[i]: q(z_{i+2} | z_{i+1}); down[i]: p(z_{i+1} | z_{i+2}).
        self.up = nn.ModuleList(mlp((z_in, *h, 2 * z_out), activation)
                                for z_in, z_out, h in zip(z_dims, z_dims[1:], hidden_dims[1:]))
        self.down = nn.ModuleList(mlp((z_out, *reversed(h), 2 * z_in), activation)
                                  for z_in, z_out, h in zip(z_dims, z_dims[1:], hidden_dims[1:]))

    @classmethod
    def burda(cls, num_layers: int = 1, **kwargs) -> "DLGM":
        """The MNIST architecture of Burda et al. (2016) with 1 or 2 stochastic layers, tanh
        hidden units, Glorot-uniform weights and zero biases.

        :raises ValueError: another number of layers.
        """
        if check_size("num_layers", num_layers) not in BURDA_ARCHITECTURES:
            raise ValueError(f"Burda et al. use 1 or 2 stochastic layers, got {num_layers}")
        z_dims, hidden_dims = BURDA_ARCHITECTURES[num_layers]
        model = cls(z_dims=z_dims, hidden_dims=hidden_dims, **kwargs)
        for layer in model.modules():  # "the heuristic of Glorot & Bengio (2010)", their sec. 5.1
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        return model

    @property
    def sites(self) -> list[str]:
        """Names of the latent sites, bottom layer first: ``["z1", ..., "zL"]``."""
        return [f"z{l}" for l in range(1, len(self.z_dims) + 1)]

    @torch.no_grad()
    def init_output_bias(self, x_mean: torch.Tensor) -> None:
        """Set the decoder's output bias to ``logit(x_mean)`` (clamped to [1e-3, 1 - 1e-3]), so
        training starts at the pixel marginals, as Burda et al.'s code does
        (``datasets.get_train_bias_np``).  ``x_mean``: ``(x_dim,)`` mean training image.

        :raises ValueError: not the Bernoulli likelihood, or ``x_mean`` not a tensor
            ``(x_dim,)`` of the model's dtype with values in [0, 1].
        """
        if self.likelihood != "bernoulli":
            raise ValueError(f"init_output_bias needs the bernoulli likelihood, got {self.likelihood!r}")
        if isinstance(x_mean, torch.Tensor) and x_mean.shape != (self.x_dim,):
            raise ValueError(f"init_output_bias needs x_mean of shape ({self.x_dim},) (the mean "
                             f"training image), got {tuple(x_mean.shape)}")
        check_data(x_mean, "x_mean", ndim=1, low=0.0, high=1.0, dtype=self.decoder[-1].bias.dtype)
        self.decoder[-1].bias.copy_(torch.logit(x_mean.clamp(1e-3, 1 - 1e-3)))

    def model(self, x: torch.Tensor, num_data: int | None = None):
        self.check_inputs(x)
        register(f"{self.name}_decoder", self.decoder)
        if len(self.down):
            register(f"{self.name}_down", self.down)
        top = self.z_dims[-1]
        prior = dist.Normal(x.new_zeros(top), x.new_ones(top)).to_event(1)
        with data_plate(x, num_data):
            z = pyro.sample(self.sites[-1], prior)
            for site, net in zip(reversed(self.sites[:-1]), reversed(self.down)):
                z = pyro.sample(site, _gaussian(net, z))
            pyro.sample("x", self.likelihood_dist(z), obs=x)

    def guide(self, x: torch.Tensor, num_data: int | None = None):
        self.check_inputs(x)  # the guide runs first: bad data must not reach the encoder
        register(f"{self.name}_encoder", self.encoder)
        if len(self.up):
            register(f"{self.name}_up", self.up)
        # The encoder runs once per batch; particles broadcast from z_1 upwards.
        loc, scale = self.encode(x)
        with data_plate(x, num_data):
            z = pyro.sample(self.sites[0], dist.Normal(loc, scale).to_event(1))
            for site, net in zip(self.sites[1:], self.up):
                z = pyro.sample(site, _gaussian(net, z))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Means of p(x | z_1) for ``n`` ancestral draws ``z_L -> .. -> z_1``, ``(n, x_dim)``.

        :raises ValueError: ``n`` not a positive integer, ``generator`` not a
            ``torch.Generator`` on the model's device."""
        n, device = check_size("n", n), next(self.parameters()).device
        check_generator(generator, device)
        z = torch.randn(n, self.z_dims[-1], device=device, generator=generator)
        for net in reversed(self.down):
            d = _gaussian(net, z).base_dist
            z = d.loc + d.scale * torch.randn(d.loc.shape, device=device, generator=generator)
        return self.decode(z)


@torch.no_grad()
def active_units(guide, x: torch.Tensor, num_samples: int = 100, threshold: float = 1e-2,
                 batch_size: int = 1000, **kwargs) -> dict:
    """Active latent units (Burda et al. 2016, sec. 5.2): unit ``u`` is active when
    ``A_u = Cov_x(E_{q(u | x)}[u]) > threshold`` (1e-2 in the paper).

    ``E_q[u | x]`` is the mean of the guide's distribution at ``u``'s site, averaged over
    ``num_samples`` draws of the sites below it (exact for sites whose parents are all
    observed, as ``z_1``); the variance across the rows of ``x`` divides by N (as the
    authors' ``np.var``).  Any guide whose sites sit in one data plate at ``dim=-1``.
    Sampling means of the parents, not the unit's own draws, keeps the Monte Carlo noise
    far below the threshold.

    :param guide: a Pyro guide called as ``guide(x, **kwargs)``.
    :param x: ``(N, D)`` data, N >= 2 (the paper: the test set).
    :param int num_samples: particles for the expectations over lower layers.
    :param int batch_size: rows per pass (bounds memory).
    :returns: ``{site: (A_u, active)}`` with ``A_u`` ``(D_site,)`` variances and ``active``
        the boolean mask ``A_u > threshold``; ``int(active.sum())`` counts the active units.
    :raises ValueError: ``guide`` not callable; ``x`` empty, NaN/inf, with fewer than two rows
        or not what the guide takes (its body's checks); ``num_samples`` or
        ``batch_size`` not a positive integer; a negative or infinite ``threshold``.
    """
    check_callable("guide", guide)
    if isinstance(x, torch.Tensor) and x.dim() == 0:
        raise ValueError("x must have a leading data dimension (N, ...), got a 0-dim tensor")
    check_data(x, "x", ndim=None, min_rows=2)  # a variance across rows needs two
    num_samples, batch_size = check_size("num_samples", num_samples), check_size("batch_size", batch_size)
    threshold = check_positive("threshold", threshold, allow_zero=True)
    means = {}
    for start in range(0, x.shape[0], batch_size):
        rows = x[start:start + batch_size]
        # A store of its own: the guide's modules are read, not a namesake's in the store.
        with isolated_param_store(), pyro.plate("active_units_particles", num_samples, dim=-2):
            trace = pyro.poutine.trace(guide).get_trace(rows, **kwargs)
        for name, site in trace.nodes.items():
            if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site):
                mean = site["fn"].mean.expand(site["value"].shape)  # (K, B, D_site)
                means.setdefault(name, []).append(mean.mean(0))
    out = {}
    for name, chunks in means.items():
        a_u = torch.cat(chunks).var(0, correction=0)
        out[name] = (a_u, a_u > threshold)
    return out
