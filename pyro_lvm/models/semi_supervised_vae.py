"""The semi-supervised VAE "M2" (Kingma, Rezende, Mohamed & Welling 2014) as one Pyro model/guide
pair for labelled and unlabelled rows alike.

Generative model (their sec. 2.2, eq. 2), a class ``y`` and a style ``z``::

    y_n ~ Categorical(1/K),   z_n ~ N(0, I),   x_n | y_n, z_n ~ Bernoulli(logits = f_theta(y_n, z_n))

Guide (their eq. 4): a classifier ``q_phi(y_n | x_n) = Categorical(softmax(g_phi(x_n)))`` and the
amortised ``q_phi(z_n | x_n, y_n) = N(mu_phi(x_n, y_n), diag sigma^2_phi(x_n, y_n))``.

Data: ``(x, y, labelled)``, with ``labelled`` a boolean mask and ``y`` the labels (any value
where unlabelled).  The guide's ``y`` is the point mass at the label for labelled rows and the
classifier for the others; it is marked for parallel enumeration, so Pyro's ``TraceEnum_ELBO``
(``make_loss("enum")``) gives, per row, exactly the two bounds of the paper:

* labelled (their eq. 6): ``-L(x, y) = E_q(z|x,y)[log p(x | y, z) + log p(y) + log p(z)
  - log q(z | x, y)]``, the enumerated values of probability 0 dropping out of the sum
  (Pyro's ``Dice`` skips them);
* unlabelled (their eq. 7): ``-U(x) = sum_y q(y | x) (-L(x, y)) + H[q(y | x)]``, the sum over
  the K classes computed exactly, with one draw of ``z`` per class.

The classification term (their eq. 9): ``J^alpha = J + alpha E_{p~_l(x, y)}[-log q_phi(y | x)]``
with ``alpha = 0.1 N`` (N data points) in their experiments.  The bounds alone never train
``q(y | x)`` on the labelled rows, so the model adds the term itself, as
``pyro.factor("classification", alpha_l * log q_phi(y_n | x_n))`` on each labelled row, with
``alpha_l = alpha / N_l`` per labelled point (the constructor's ``alpha``); in the model, a factor
adds to the objective (a guide's would be read as part of ``log q``), so ``fit`` trains the
classifier with everything else in one loss, whose value is then ``J^alpha``, not an ELBO.  The
paper's ``alpha = 0.1 N`` over ``N_l`` labelled points is ``alpha = 0.1 N / N_l`` here (60 for
100 labels among 60,000 images), the weight the authors' code gives each labelled row
(github.com/dpkingma/nips14-ssl, ``learn_yz_x_ss.py``: ``beta = alpha * n_tot / n_labeled``
with ``alpha = 0.1``).

Published figure: 11.97% (+- 1.71) test error on MNIST with 100 labels for M2 (the paper's
Table 1, as quoted by replications).

References: D. P. Kingma, D. J. Rezende, S. Mohamed, M. Welling, "Semi-supervised Learning with
Deep Generative Models", NeurIPS 2014 (arXiv:1406.5298).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import pyro
import pyro.distributions as dist
from pyro import poutine

from ..checks import check_data, check_generator, check_positive, check_size, check_sizes, check_values
from ..params import register, unique_name
from .common import data_plate, gaussian_head, mlp
from .saving import Saveable

__all__ = ["SemiSupervisedVAE"]


def _with_label(net: nn.Sequential, features: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``net`` applied to ``[features, onehot(y)]``, its first layer computed as
    ``W_f features + W_y[:, y] + b``: with ``y`` enumerated (``(K, 1)``) the K classes share one
    product with ``features`` (``(B, F)``, the 784 pixels for the encoder), where the
    concatenation would repeat it K times.  Returns ``(*broadcast(y, features rows), out)``."""
    first = net[0]
    width = features.shape[-1]
    hidden = F.linear(features, first.weight[:, :width], first.bias) + first.weight[:, width:].T[y]
    return net[1:](hidden)


class SemiSupervisedVAE(Saveable):
    """M2: ``p(y) p(z) p(x | y, z)`` with the guide ``q(y | x) q(z | x, y)``, Bernoulli pixels.

    :param int x_dim: pixels per data point, D.
    :param int z_dim: style dimensions (50 in the paper).
    :param int num_classes: K.
    :param hidden_dims: hidden widths of the encoder ``q(z | x, y)``; the decoder mirrors them.
    :param classifier_dims: hidden widths of the classifier ``q(y | x)``.
    :param float alpha: weight of each labelled row's ``log q(y_n | x_n)`` in the objective,
        ``>= 0`` (the paper's ``alpha / N_l``: module docstring).
    :param activation: the hidden non-linearity (a ``nn.Module`` class; softplus in the paper).
    :param str name: prefix of the parameter names in Pyro's param store (default
        ``semi_supervised_vae_0``, ...).
    :raises ValueError: a size that is not a positive integer, widths that are not a sequence of
        them, ``alpha`` negative or not finite, a bad activation or name.

    ``model(x, y, labelled, num_data=None)`` and ``guide(...)`` take ``x`` ``(B, x_dim)``
    floating in [0, 1], ``y`` ``(B,)`` int64 and ``labelled`` ``(B,)`` bool; sites ``"y"`` (value
    ``(K, 1)`` under ``TraceEnum_ELBO``, else ``(B,)``), ``"z"`` ``(B, z_dim)`` (``(K, B, z_dim)``
    enumerated), ``"x"`` and the factor ``"classification"``.
    """

    def __init__(self, x_dim: int = 784, z_dim: int = 50, num_classes: int = 10,
                 hidden_dims=(500,), classifier_dims=(500,), alpha: float = 0.0,
                 activation=nn.Softplus, name: str | None = None):
        super().__init__()
        x_dim, z_dim = check_size("x_dim", x_dim), check_size("z_dim", z_dim)
        num_classes = check_size("num_classes", num_classes)
        hidden_dims = check_sizes("hidden_dims", hidden_dims)
        classifier_dims = check_sizes("classifier_dims", classifier_dims)
        self.alpha = check_positive("alpha", alpha, allow_zero=True)
        self.x_dim, self.z_dim, self.num_classes = x_dim, z_dim, num_classes
        self.name = unique_name("semi_supervised_vae", name)
        self.classifier = mlp((x_dim, *classifier_dims, num_classes), activation)
        self.encoder = mlp((x_dim + num_classes, *hidden_dims, 2 * z_dim), activation)
        self.decoder = mlp((z_dim + num_classes, *reversed(hidden_dims), x_dim), activation)

    def check_inputs(self, x: torch.Tensor, y: torch.Tensor | None = None,
                     labelled: torch.Tensor | None = None, values: bool | None = None) -> None:
        """Reject data the model cannot take: ``x`` not ``(B, x_dim)`` of the parameters'
        dtype, ``y`` not ``(B,)`` int64, ``labelled`` not ``(B,)`` bool (shapes and dtypes on
        every call); NaN/inf or values outside [0, 1] in ``x`` and labels outside
        ``[0, num_classes)`` on labelled rows when ``values`` (by default as
        :func:`~pyro_lvm.checks.check_values` says).  ``y`` and ``labelled`` come together or
        not at all (:meth:`classify` takes ``x`` alone).

        :raises ValueError: naming the argument and what was expected.
        """
        values = check_values() if values is None else values
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[-1] != self.x_dim:
            got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (B, {self.x_dim}), got {got}")
        check_data(x, "x", low=0.0, high=1.0, dtype=self.classifier[0].weight.dtype, values=values)
        if (y is None) != (labelled is None):
            raise ValueError("y and labelled come together: pass both (labels and the boolean "
                             "mask of labelled rows) or neither")
        if y is None:
            return
        for arg, t, want, dtype in (("y", y, "int64 labels", torch.int64),
                                    ("labelled", labelled, "a boolean mask", torch.bool)):
            if not isinstance(t, torch.Tensor) or t.shape != x.shape[:1] or t.dtype != dtype:
                got = (f"shape {tuple(t.shape)}, dtype {t.dtype}" if isinstance(t, torch.Tensor)
                       else type(t).__name__)
                raise ValueError(f"{arg} must be {want} of shape ({x.shape[0]},) (one per row of "
                                 f"x) and dtype {dtype}, got {got}")
        if not values:
            return
        out_of_range = labelled & ((y < 0) | (y >= self.num_classes))
        if bool(out_of_range.any()):
            raise ValueError(f"labels y of labelled rows must lie in [0, {self.num_classes}), got "
                             f"values such as {y[out_of_range][:5].tolist()}")

    def _guide_logits(self, x, y, labelled) -> torch.Tensor:
        """``(B, K)`` logits of the guide's ``y``: the point mass at the label (0 there, -inf
        elsewhere) on labelled rows, the classifier's on the others."""
        known = torch.full((x.shape[0], self.num_classes), -torch.inf, dtype=x.dtype, device=x.device)
        known.scatter_(-1, torch.where(labelled, y, 0).unsqueeze(-1), 0.0)
        return torch.where(labelled.unsqueeze(-1), known, self.classifier(x))

    def _check_labels(self, y: torch.Tensor) -> None:
        if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or not y.numel() or \
                bool(((y < 0) | (y >= self.num_classes)).any()):
            raise ValueError(f"y must be a non-empty int64 tensor of labels in "
                             f"[0, {self.num_classes}), got {y!r}")

    def encode(self, x: torch.Tensor, y: torch.Tensor):
        """Parameters ``(loc, scale)`` of ``q(z | x, y)``, each ``(..., z_dim)`` for ``x``
        ``(B, x_dim)`` and integer labels ``y`` broadcasting with ``(B,)``.

        :raises ValueError: ``x`` as :meth:`check_inputs` (values included), ``y`` not a
            non-empty int64 tensor of labels in ``[0, num_classes)``."""
        self.check_inputs(x, values=True)
        self._check_labels(y)
        return self._encode(x, y)

    def _encode(self, x, y):
        return gaussian_head(_with_label(self.encoder, x, y))

    def likelihood_dist(self, y: torch.Tensor, z: torch.Tensor) -> dist.Distribution:
        """``p(x | y, z)``, event shape ``(x_dim,)``, for integer ``y`` broadcasting with the batch
        shape of ``z`` ``(..., z_dim)``."""
        # validate_args=False: grey levels in [0, 1] are allowed as soft targets.
        return dist.Bernoulli(logits=_with_label(self.decoder, z, y), validate_args=False).to_event(1)

    def decode(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Mean of ``p(x | y, z)``: pixel probabilities, ``(..., x_dim)``, for integer ``y``
        broadcasting with the batch shape of ``z`` ``(..., z_dim)``.

        :raises ValueError: ``y`` not a non-empty int64 tensor of labels in
            ``[0, num_classes)``, ``z`` not a finite tensor ``(..., z_dim)`` of the parameters'
            dtype."""
        self._check_labels(y)
        check_data(z, "z", ndim=None, size=self.z_dim, dtype=self.decoder[0].weight.dtype)
        return self.likelihood_dist(y, z).mean

    def model(self, x, y, labelled, num_data: int | None = None):
        self.check_inputs(x, y, labelled)
        register(f"{self.name}_decoder", self.decoder)
        register(f"{self.name}_classifier", self.classifier)
        uniform = x.new_zeros(self.num_classes)
        with data_plate(x, num_data):
            label = pyro.sample("y", dist.Categorical(logits=uniform))
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("x", self.likelihood_dist(label, z), obs=x)
            if self.alpha > 0:
                log_q = dist.Categorical(logits=self.classifier(x)).log_prob(torch.where(labelled, y, 0))
                with poutine.mask(mask=labelled):
                    pyro.factor("classification", self.alpha * log_q)

    def guide(self, x, y, labelled, num_data: int | None = None):
        self.check_inputs(x, y, labelled)  # the guide runs first: bad data must not reach a network
        register(f"{self.name}_encoder", self.encoder)
        register(f"{self.name}_classifier", self.classifier)
        logits = self._guide_logits(x, y, labelled)
        with data_plate(x, num_data):
            label = pyro.sample("y", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})
            pyro.sample("z", dist.Normal(*self._encode(x, label)).to_event(1))

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """``argmax_y q(y | x_n)`` per row, ``(N,)`` int64.

        :raises ValueError: as :meth:`check_inputs` (values included)."""
        self.check_inputs(x, values=True)
        return self.classifier(x).argmax(-1)

    @torch.no_grad()
    def sample(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Means of ``p(x | y_i, z_i)`` for the labels ``y`` ``(n,)`` and ``z_i ~ N(0, I)``,
        ``(n, x_dim)``.

        :raises ValueError: ``y`` not a non-empty int64 tensor ``(n,)`` of labels in
            ``[0, num_classes)``, ``generator`` not a ``torch.Generator`` on the model's device."""
        device = self.decoder[0].weight.device
        self._check_labels(y)
        if y.dim() != 1:
            raise ValueError(f"y must have shape (n,), got shape {tuple(y.shape)}")
        check_generator(generator, device)
        z = torch.randn(y.shape[0], self.z_dim, device=device, generator=generator,
                        dtype=self.decoder[0].weight.dtype)
        return self.likelihood_dist(y.to(device), z).mean
