"""Importance-weighted losses (IWAE, DReG, VIMCO) and the score-function ELBO with baselines.

All K-particle losses here read their weights ``log w_nk`` (``(K, B)``, see
:mod:`pyro_lvm.infer.importance`) and differ only in the gradient estimator
they build from them.  With ``L_n = log (1/K) sum_k w_nk`` and the plate's
subsample scale ``s = N / B``, each returns the loss ``-s * sum_n L_n``.
"""

from __future__ import annotations

import torch

from pyro import poutine
from pyro.infer import TraceGraph_ELBO
from pyro.distributions import TorchDistribution
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from ..checks import check_size
from ..params import register, unique_name
from .importance import ImportanceWeightedLoss, LogWeights, log_mean_exp

__all__ = ["IWAE", "DReG", "VIMCO", "TraceGraph", "score_function_guide"]


class IWAE(ImportanceWeightedLoss):
    r"""The importance-weighted bound (Burda, Grosse & Salakhutdinov 2016, eq. 8)::

        L_K(x_n) = E_{z_1..K ~ q(.|x_n)} [ log (1/K) sum_k p(x_n, z_k) / q(z_k | x_n) ]

    A lower bound on ``log p(x_n)`` for every K, non-decreasing in K (their
    Theorem 1), equal to the ELBO at K = 1 and tending to ``log p(x_n)`` as K grows.

    Gradient: the reparameterised gradient of ``L_K`` (their eq. 14) through
    reparameterisable guide sites; for guide sites that cannot be reparameterised
    (discrete), the K-sample score-function term ``sum_k L_n grad log q(z_k)`` is
    added (Mnih & Rezende 2016, eq. 5), unbiased but without a baseline
    (:class:`VIMCO` adds one).  Any guide works.
    """

    def learning_signal(self, log_w: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
        """Per-particle multiplier of ``grad log q(z_k)`` for discrete sites, ``(K, B)``."""
        return bound.expand_as(log_w)

    def surrogate(self, weights: LogWeights):
        log_w = weights.log_w
        bound = log_mean_exp(log_w, 0)  # (B,)
        loss = -weights.scale * bound.sum()
        surrogate = loss
        if weights.log_q_score.requires_grad:
            signal = self.learning_signal(log_w.detach(), bound.detach())
            surrogate = surrogate - weights.scale * (signal * weights.log_q_score).sum()
        return loss, surrogate


class VIMCO(IWAE):
    r"""Variational inference for Monte Carlo objectives (Mnih & Rezende 2016, eqs. 9-10).

    The same bound as :class:`IWAE`; for discrete guide sites, each particle's
    learning signal gets a leave-one-out baseline::

        signal_k = L_n - log (1/K) ( sum_{j != k} w_j + exp(mean_{j != k} log w_j) )

    which keeps the estimator unbiased (the baseline of particle k does not
    depend on z_k) and removes most of its variance.  Reparameterisable sites
    get the pathwise gradient.  Needs K >= 2.

    :raises ValueError: ``num_particles`` < 2.
    """

    def __init__(self, num_particles: int = 2, max_plate_nesting=float("inf")):
        num_particles = check_size("num_particles", num_particles)
        if num_particles < 2:  # each particle's baseline is built from the others
            raise ValueError(f"vimco needs num_particles >= 2 for its baselines, got {num_particles}")
        super().__init__(num_particles, max_plate_nesting)

    def learning_signal(self, log_w, bound):
        k = log_w.shape[0]
        # leave_out[k, j] = log w_j, with the diagonal replaced by the mean of the others.
        mean_others = (log_w.sum(0, keepdim=True) - log_w) / (k - 1)  # (K, B)
        leave_out = log_w.unsqueeze(0).expand(k, *log_w.shape).clone()
        eye = torch.eye(k, dtype=torch.bool, device=log_w.device)
        leave_out[eye] = mean_others
        return bound - log_mean_exp(leave_out, 1)


class DReG(ImportanceWeightedLoss):
    r"""The importance-weighted bound with doubly reparameterised guide gradients
    (Tucker, Lawson, Gu & Maddison 2019, eq. 5)::

        grad_phi L_K = E[ sum_k  w~_k^2  (d log w_k / d z_k) (d z_k / d phi) ],
        w~_k = w_k / sum_j w_j

    with ``log q`` evaluated at detached guide parameters, so only the path
    through ``z_k`` remains.  Model parameters get the ordinary IWAE gradient
    ``sum_k w~_k grad_theta log w_k``.  Same value and bound as :class:`IWAE`; the
    guide gradient is unbiased and exactly zero when q is the exact posterior.

    Lower variance is a property *near the posterior*, not everywhere: there IWAE's guide
    gradient keeps a zero-mean score-function term ``-sum_k w~_k grad_phi log q(z_k)``,
    whose noise makes its signal-to-noise ratio fall as K grows (Rainforth et al. 2018),
    while DReG's estimator has no such term and tends to zero (Tucker et al. 2019, sec. 4).
    Far from the posterior nothing is promised: on the factor model of the own-pair guide
    (``docs/guides/own_pair.rst``), at K = 5 and K = 50, the encoder-gradient variance
    (mean over elements, 200 draws) was 1.0 and 1.1 times IWAE's at initialisation, and
    0.11 and 0.016 times IWAE's after 100 epochs of training.  Needs every guide site
    reparameterisable.

    Implementation: one pass; the surrogate ``-s sum w~_k log w_k`` gives the
    model gradient, and a hook on each guide sample multiplies the pathwise
    gradient reaching particle k by ``w~_k``, turning ``w~_k`` into ``w~_k^2``.
    """

    detach_guide_params = True

    def surrogate(self, weights: LogWeights):
        log_w = weights.log_w
        loss = -weights.scale * log_mean_exp(log_w, 0).sum()
        normalized = torch.softmax(log_w.detach(), 0)
        # With one particle w~ = 1 and there is no particle dim to align with.
        for site in weights.reparam_sites if log_w.shape[0] > 1 else ():
            if site["value"].requires_grad:
                # Batch dims of a site inside the particle plate are exactly the plate dims.
                shape = [1] * (weights.num_plates + site["fn"].event_dim)
                shape[0] = normalized.shape[0]
                if weights.data_dim is not None:  # per point; else one weight per particle
                    shape[weights.num_plates + weights.data_dim] = normalized.shape[1]
                factor = normalized.reshape(shape)
                site["value"].register_hook(lambda grad, factor=factor: grad * factor)
        return loss, -weights.scale * (normalized * log_w).sum()


class TraceGraph(TraceGraph_ELBO):
    """Pyro's score-function ELBO (``TraceGraph_ELBO``) with its baselines as a loss option.

    Pyro configures baselines per guide site; this sets them on every
    non-reparameterisable guide site, so a loss name picks the variance reduction.
    Gradient: ``E[(log p - log q - b) grad log q] + pathwise terms`` (Ranganath,
    Gerrish & Blei 2014; Pyro's SVI Part III tutorial); unbiased for any
    baseline b that does not depend on the sampled value.

    :param int num_particles: samples per step, drawn in one vectorised pass (a
        particle plate, as Pyro's ``vectorize_particles``) except with the neural
        baseline, whose network gives one value per data point, not per particle.
    :param str baseline: ``"none"``, ``"decaying_avg"`` (exponential moving
        average of the downstream cost, factor ``baseline_beta``; one average per
        particle slot, so a particle's baseline never depends on its own draw), or
        ``"neural"`` (``baseline_net(x)`` with ``x`` the first argument of model and
        guide, trained on the squared error of the cost).
    :param max_plate_nesting: the model's plates, guessed when left at infinity.
    :raises ValueError: an unknown baseline, or ``"neural"`` without a network.
    """

    BASELINES = ("none", "decaying_avg", "neural")

    def __init__(self, num_particles: int = 1, baseline: str = "decaying_avg",
                 baseline_beta: float = 0.9, baseline_net: torch.nn.Module | None = None,
                 max_plate_nesting=float("inf")):
        if baseline not in self.BASELINES:
            raise ValueError(f"baseline must be one of {self.BASELINES}, got {baseline!r}")
        if baseline == "neural" and baseline_net is None:
            raise ValueError("baseline='neural' needs baseline_net, a module mapping x to (B,)")
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=num_particles > 1 and baseline != "neural")
        self.baseline, self.baseline_beta, self.baseline_net = baseline, baseline_beta, baseline_net
        self.baseline_name = unique_name("tracegraph_baseline")

    def _guide(self, guide):
        if self.baseline == "none":
            return guide

        def with_baselines(*args, **kwargs):
            if self.baseline_net is not None:
                register(self.baseline_name, self.baseline_net)

            def config(msg):
                if msg["type"] != "sample" or msg["is_observed"] or msg["fn"].has_rsample:
                    return {}
                if self.baseline == "neural":
                    return {"baseline": {"nn_baseline": self.baseline_net,
                                         "nn_baseline_input": args[0]}}
                return {"baseline": {"use_decaying_avg_baseline": True,
                                     "baseline_beta": self.baseline_beta}}

            return poutine.infer_config(guide, config)(*args, **kwargs)

        return with_baselines

    def loss(self, model, guide, *args, **kwargs):
        return super().loss(model, self._guide(guide), *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        return super().loss_and_grads(model, self._guide(guide), *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """The loss's value with the score-function surrogate's gradient (Pyro's
        ``TraceGraph_ELBO`` lacks this method; built from its own surrogate)."""
        elbo, surrogate = self._loss_and_surrogate_loss(model, self._guide(guide), args, kwargs)
        # Pyro returns the float 0.0 for a model and guide without sample sites.
        elbo, surrogate = torch.as_tensor(elbo), torch.as_tensor(surrogate)
        return -elbo.detach() + (surrogate - surrogate.detach())


class _ScoreFunctionOnly(TorchDistribution):
    """``base`` with ``has_rsample = False``, kept through plate broadcasting (``expand``);
    Pyro's ``has_rsample_(False)`` is lost there for ``Independent`` distributions."""

    has_rsample = False

    def __init__(self, base):
        self.base = base
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    @property
    def support(self):
        return self.base.support

    def sample(self, sample_shape=torch.Size()):
        return self.base.sample(sample_shape)

    def log_prob(self, value):
        return self.base.log_prob(value)

    def expand(self, batch_shape, _instance=None):
        return _ScoreFunctionOnly(self.base.expand(batch_shape))


class _NoPathwiseGradient(Messenger):
    def _pyro_sample(self, msg):
        if not msg["is_observed"] and not site_is_subsample(msg):
            msg["fn"] = _ScoreFunctionOnly(msg["fn"])


def score_function_guide(guide):
    """The same guide with every latent drawn without a pathwise gradient, so each
    loss falls back to its score-function estimator; for comparing the two
    estimators on one guide."""
    return _NoPathwiseGradient()(guide)
