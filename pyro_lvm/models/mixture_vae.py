"""A variational autoencoder whose prior is a Gaussian mixture: clusters from a deep latent
variable model (VaDE, Jiang, Zheng, Tan, Tang & Zhou 2017).

Generative model::

    y_n ~ Categorical(pi)                                   the cluster
    z_n | y_n ~ N(mu_{y_n}, diag sigma^2_{y_n})             the latent embedding
    x_n | z_n ~ Bernoulli(logits = f_theta(z_n))            the VAE's decoder

Guide: the amortised ``q_phi(z_n | x_n) = N(mu_phi(x_n), diag sigma^2_phi(x_n))`` of the VAE.
``y`` has no guide: it is summed out exactly.  :meth:`MixtureVAE.model` marks ``y`` for
parallel enumeration, so Pyro's ``TraceEnum_ELBO`` (``make_loss("enum")``) computes, per draw
``z_n ~ q(z_n | x_n)``::

    ELBO(x_n) = E_q [ log p(x_n | z_n) + log sum_y pi_y N(z_n | mu_y, sigma^2_y) - log q(z_n | x_n) ]

which is VaDE's bound with their cluster posterior ``q(y | x) = p(y | z)`` (the ``gamma`` of
the authors' code, computed from the drawn ``z``) exact for every draw.
:meth:`MixtureVAE.marginal_model` is the same density written with ``y`` already summed out
(``z ~ MixtureSameFamily``), for the losses that do not enumerate (``elbo``, ``tracegraph``);
:func:`pyro_lvm.evaluate.log_likelihood` takes either (the importance weights of
:mod:`pyro_lvm.infer.importance` sum the enumerated ``y`` out per point).

Initialisation as VaDE's (the authors' code, github.com/slim1017/VaDE, ``VaDE.py``: pre-trained
autoencoder weights, then a GMM with diagonal covariances fitted to the encoded means): a short
pre-training of the encoder and decoder (here as the VAE itself, :meth:`MixtureVAE.vae_model`,
prior ``N(0, I)``), then the mixture fitted by EM to the encoded means
(:meth:`MixtureVAE.init_prior`, :func:`~pyro_lvm.models.gmm.fit_em` with diagonal covariances);
then ``fit`` on :meth:`~MixtureVAE.model` with the ``enum`` loss.

Published figure: "the 94.46% clustering accuracy on the MNIST dataset" (the README of the
authors' code; networks 784-500-500-2000-10, 500 epochs on all 70,000 images, from pre-trained
autoencoder weights).

References: Z. Jiang, Y. Zheng, H. Tan, B. Tang, H. Zhou, "Variational Deep Embedding: An
Unsupervised and Generative Approach to Clustering", IJCAI 2017 (arXiv:1611.05148).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import constraints, transform_to

import pyro
import pyro.distributions as dist

from ..checks import check_generator, check_size
from ..params import register, unique_name
from .common import data_plate
from .gmm import fit_em
from .vae import VAE

__all__ = ["MixtureVAE"]


class MixturePrior(nn.Module):
    """The parameters of ``p(y) p(z | y)``, unconstrained: ``logits`` (K,) give the weights
    ``pi = softmax(logits)`` on the simplex, ``raw_scales`` (K, z_dim) the scales
    ``sigma = transform_to(positive)(raw_scales) > 0``.  Starts at uniform weights, unit
    scales and standard normal means (:meth:`MixtureVAE.init_prior` replaces them)."""

    def __init__(self, num_components: int, z_dim: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_components))
        self.locs = nn.Parameter(torch.randn(num_components, z_dim))
        self.raw_scales = nn.Parameter(torch.zeros(num_components, z_dim))

    @property
    def weights(self) -> torch.Tensor:
        """``pi``, ``(K,)``, on the simplex."""
        return torch.softmax(self.logits, -1)

    @property
    def scales(self) -> torch.Tensor:
        """``sigma``, ``(K, z_dim)``, positive."""
        return transform_to(constraints.positive)(self.raw_scales)

    def components(self) -> dist.Distribution:
        """``p(z | y)`` for every y: batch shape ``(K,)``, event shape ``(z_dim,)``."""
        return dist.Normal(self.locs, self.scales).to_event(1)

    def mixture(self) -> dist.Distribution:
        """``p(z) = sum_y pi_y p(z | y)``, event shape ``(z_dim,)``."""
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), self.components())


class MixtureVAE(VAE):
    """VAE with a Gaussian-mixture prior (VaDE): the VAE's encoder, decoder, likelihood and
    input checks, and a ``MixturePrior`` ``prior`` in place of ``N(0, I)``.

    :param int x_dim: pixels per data point, D.
    :param int z_dim: latent dimensions.
    :param int num_components: K, the clusters.
    :param hidden_dims: hidden widths of the encoder (the decoder mirrors them), as the VAE.
    :param str likelihood: ``"bernoulli"`` or ``"normal"``, as the VAE.
    :param activation: the hidden non-linearity (a ``nn.Module`` class).
    :param str name: prefix of the parameter names in Pyro's param store (default
        ``mixture_vae_0``, ``mixture_vae_1``, ...).
    :raises ValueError: ``num_components`` not a positive integer, or as
        :class:`~pyro_lvm.models.vae.VAE`.

    ``model``, ``marginal_model``, ``vae_model`` and ``guide`` take ``(x, num_data=None)``,
    ``x`` of shape ``(B, x_dim)``.  Sites: ``"y"`` (model only, enumerated: value ``(K, 1)``
    under ``TraceEnum_ELBO``), ``"z"`` ``(B, z_dim)``, ``"x"`` observed.
    """

    def __init__(self, x_dim: int = 784, z_dim: int = 10, num_components: int = 10,
                 hidden_dims=(500, 500), likelihood: str = "bernoulli", activation=nn.ReLU,
                 name: str | None = None):
        num_components = check_size("num_components", num_components)
        super().__init__(x_dim, z_dim, hidden_dims, likelihood, activation,
                         unique_name("mixture_vae", name))
        self.num_components = num_components
        self.prior = MixturePrior(num_components, self.z_dim)

    def model(self, x: torch.Tensor, num_data: int | None = None):
        """``y`` enumerated in parallel (``TraceEnum_ELBO`` sums it out), then ``z | y`` and
        ``x | z``; for the ``enum`` loss."""
        self.check_inputs(x)
        register(f"{self.name}_decoder", self.decoder)
        register(f"{self.name}_prior", self.prior)
        with data_plate(x, num_data):
            y = pyro.sample("y", dist.Categorical(logits=self.prior.logits),
                            infer={"enumerate": "parallel"})
            # y is (K, 1) under enumeration: one component per enumerated value, broadcast
            # against the data plate.
            z = pyro.sample("z", dist.Normal(self.prior.locs[y], self.prior.scales[y]).to_event(1))
            pyro.sample("x", self.likelihood_dist(z), obs=x)

    def marginal_model(self, x: torch.Tensor, num_data: int | None = None):
        """The same density with ``y`` summed out in ``p(z)`` (``MixtureSameFamily``), for every
        loss and for :mod:`pyro_lvm.evaluate`."""
        self.check_inputs(x)
        register(f"{self.name}_decoder", self.decoder)
        register(f"{self.name}_prior", self.prior)
        with data_plate(x, num_data):
            z = pyro.sample("z", self.prior.mixture())
            pyro.sample("x", self.likelihood_dist(z), obs=x)

    def vae_model(self, x: torch.Tensor, num_data: int | None = None):
        """The plain VAE (prior ``N(0, I)``, the prior parameters unused): VaDE's pre-training."""
        return VAE.model(self, x, num_data)

    @torch.no_grad()
    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """``p(y | z_n)`` at ``z_n`` the posterior mean of ``q(z | x_n)`` (VaDE's cluster posterior
        at the mean, not averaged over draws), ``(N, K)``, rows summing to 1.

        :raises ValueError: as :meth:`check_inputs` (values included)."""
        self.check_inputs(x, values=True)
        z = self.encode(x)[0]
        log_joint = self.prior.components().log_prob(z.unsqueeze(-2)) + self.prior.weights.log()
        return torch.softmax(log_joint, -1)

    def cluster(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable cluster ``argmax_y p(y | z_n)`` of each row, ``z_n`` the posterior
        mean of ``q(z | x_n)``: ``(N,)`` int64 in ``[0, K)``.

        :raises ValueError: as :meth:`check_inputs` (values included)."""
        return self.responsibilities(x).argmax(-1)

    @torch.no_grad()
    def init_prior(self, x: torch.Tensor, n_init: int = 10, seed: int = 0,
                   max_iter: int = 300) -> None:
        """Set ``pi``, ``mu`` and ``sigma`` to the maximum-likelihood mixture with diagonal
        covariances of the encoded means ``E_q[z | x_n]`` (EM in float64, the best of
        ``n_init`` k-means++ starts: :func:`~pyro_lvm.models.gmm.fit_em`), as VaDE initialises
        after pre-training.

        :param x: ``(N, x_dim)`` data, N >= K (e.g. the training set).
        :raises ValueError: as :meth:`check_inputs` (values included), or as ``fit_em``.
        """
        self.check_inputs(x, values=True)
        z = torch.cat([self.encode(rows)[0] for rows in x.split(10000)]).double()
        fit = fit_em(z, self.num_components, covariance_type="diag", n_init=n_init, seed=seed,
                     max_iter=max_iter)
        like = self.prior.locs
        self.prior.logits.copy_(fit.weights.log().to(like))
        self.prior.locs.copy_(fit.means.to(like))
        scales = fit.covariances.sqrt().to(like)
        self.prior.raw_scales.copy_(transform_to(constraints.positive).inv(scales))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None,
               component: int | None = None) -> torch.Tensor:
        """Means of ``p(x | z)`` for ``n`` draws ``y ~ pi, z ~ p(z | y)`` (or ``z`` from the one
        component ``component``), ``(n, x_dim)``.

        :raises ValueError: ``n`` not a positive integer, ``component`` not an integer in
            ``[0, K)``, ``generator`` not a ``torch.Generator`` on the model's device."""
        n, device = check_size("n", n), self.prior.locs.device
        check_generator(generator, device)
        if component is None:
            y = torch.multinomial(self.prior.weights, n, replacement=True, generator=generator)
        else:
            if check_size("component", component, 0) >= self.num_components:
                raise ValueError(f"component must be in [0, {self.num_components}), got {component}")
            y = torch.full((n,), component, device=device)
        eps = torch.randn(n, self.z_dim, device=device, generator=generator, dtype=self.prior.locs.dtype)
        return self.decode(self.prior.locs[y] + self.prior.scales[y] * eps)
