"""Annealed importance sampling (AIS) with Hamiltonian Monte Carlo transitions, forward
and reverse: the machinery behind :func:`pyro_lvm.evaluate.ais_log_likelihood` and
:func:`pyro_lvm.evaluate.bdmc`.

**The path.**  For one data point x, the guide's ``q(z | x)`` (normalised) is bridged to
the unnormalised posterior ``p(x, z)`` along the geometric path (Neal 2001)::

    f_t(z) = q(z | x)^(1 - beta_t) p(x, z)^beta_t,      0 = beta_0 < beta_1 < ... < beta_T = 1

with ``T = num_steps`` and the sigmoidal schedule of Grosse, Ghahramani & Adams (2015)
(as in the authors' code, radius ``delta = 4``)::

    gamma_t = sigmoid(delta (2 t / T - 1)),      beta_t = (gamma_t - gamma_0) / (gamma_T - gamma_0)

which places more of the T steps near beta = 0 and 1, or the linear one ``beta_t = t / T``.

**Forward AIS** draws ``z_0 ~ q(z | x)``, moves ``z_t ~ T_t(. | z_{t-1})`` by a Markov
transition that leaves ``f_t`` invariant (for t = 1 .. T-1), and accumulates::

    log w = sum_{t=1}^T [log f_t(z_{t-1}) - log f_{t-1}(z_{t-1})]
          = sum_{t=1}^T (beta_t - beta_{t-1}) [log p(x, z_{t-1}) - log q(z_{t-1} | x)]

``E[w] = Z_T / Z_0 = p(x)`` (Neal 2001), so the log-mean-exp over C independent chains is
a stochastic lower bound: ``E[log w_hat] <= log p(x)`` by Jensen, and ``log w_hat``
exceeds ``log p(x) + b`` with probability below ``exp(-b)`` by Markov's inequality
(Grosse et al. 2015).  With ``T = 1`` there is no transition: it is importance sampling
with K = C.  The importance weight is exact for any transitions that leave their
``f_t`` invariant; better transitions and more steps only lower its variance.

**Reverse AIS** (bidirectional Monte Carlo, Grosse et al. 2015) runs the same path
backwards, ``beta`` from 1 to 0, from an *exact* posterior sample ``z_T ~ p(z | x)``,
which is known only for data simulated from the model, ``(z, x) ~ p(z) p(x | z)``.  Its
weight ``w_rev = prod_t f_{t-1}(z_t) / f_t(z_t)`` has ``E[w_rev] = Z_0 / Z_T = 1 /
p(x)``, so ``-log mean_c w_rev`` is a stochastic *upper* bound on ``log p(x)``.  For one
chain each way and the same kernels, the expected gap between the bounds is
``KL(Q || P) + KL(P || Q)``, Q and P the laws of the forward and the reverse chain on the
extended space ``(z_0, ..., z_{T-1})``: each bound is off by at most the gap (in
expectation), and a small gap certifies both on such simulated data.

**Transitions.**  One HMC step per intermediate distribution (Neal 2011): momenta ``r ~
N(0, I)``, ``num_leapfrog`` leapfrog steps of Pyro's
:func:`pyro.ops.integrator.velocity_verlet` on the potential ``-log f_t``, a Metropolis
test on the Hamiltonian.  The leapfrog multiplies by the step size elementwise, so one
tensor of step sizes ``(B, 1)`` against latents flattened to ``(C, B, P)`` gives every
data point its own step; the potential returns the sum over points and chains (whose
gradient is every point's own) and keeps the per-point densities of its last call for
the Metropolis test.  After each transition the step size of each point follows the
Robbins-Monro rule on its logarithm (Andrieu & Thoms 2008)::

    log eps <- log eps + (a_bar - target_accept)

``a_bar`` the mean acceptance probability of the point's chains, within a factor of 100 of
the initial ``step_size``.  (Wu, Burda, Salakhutdinov & Grosse 2017 adapt one step size for
all points by factors 1.02 and 0.98 towards the same target; from a poor initial value that
takes a hundred steps, most of a short run.)  Each transition leaves its ``f_t`` invariant
for the step size it is given; but the step size depends on the chains' own past, which
the textbook proof of ``E[w] = p(x)`` (kernels fixed in advance) does not cover, so
adapted runs are unbiased only approximately, as are Wu et al.'s (no bias is detectable in
the tests, against PPCA's exact value); ``target_accept=None`` keeps every step size fixed
and the estimator exactly unbiased.

**What works.**  Densities come from Pyro traces through
:func:`pyro_lvm.infer.importance.log_weights_at`, the library's one place for per-point
importance weights, so any pair whose latents are real-valued (continuous,
unconstrained support) and sit in one vectorised data plate works; reparameterised
sampling is not needed (the chain moves ``z`` itself and uses only ``grad_z log p``
and ``grad_z log q``, by autograd).  A discrete or constrained latent (e.g. a
``LogNormal`` scale), a latent outside the data plate (a global latent) or a pair
without per-point weights gets a ``ValueError`` naming the site.

References: Neal, "Annealed importance sampling", Statistics and Computing 2001;
Neal, "MCMC using Hamiltonian dynamics", Handbook of MCMC 2011; Grosse, Ghahramani &
Adams, "Sandwiching the marginal likelihood using bidirectional Monte Carlo",
arXiv:1511.02543, 2015; Wu, Burda, Salakhutdinov & Grosse, "On the quantitative analysis
of decoder-based generative models", ICLR 2017.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch

import pyro
from pyro import poutine
from pyro.ops.integrator import velocity_verlet
from pyro.poutine.util import prune_subsample_sites

from .checks import check_choice, check_positive, check_size
from .infer.importance import ImportanceWeightedLoss, log_weights_at, plates_by_site

__all__ = ["AISOptions", "AISResult", "AnnealingPath", "BDMCResult", "SCHEDULES", "anneal",
           "check_options", "forward", "sandwich", "schedule", "simulate"]

#: Annealing schedules of :func:`schedule`.
SCHEDULES = ("sigmoid", "linear")
#: Radius delta of the sigmoidal schedule (Grosse et al. 2015, and their code).
SIGMOID_RADIUS = 4.0
#: Step-size adaptation: the gain of the Robbins-Monro update of the log step size, and the
#: bound on the step relative to its initial value.
_ADAPT_RATE, _ADAPT_RANGE = 1.0, 100.0


class AISOptions(NamedTuple):
    """Settings of one AIS run, as checked by :func:`check_options`."""

    num_steps: int
    num_chains: int
    num_leapfrog: int
    step_size: float
    target_accept: float | None
    schedule: str


def check_options(num_steps, num_chains, num_leapfrog, step_size, target_accept,
                  schedule) -> AISOptions:
    """The AIS settings checked at the door.

    :raises ValueError: ``num_steps``, ``num_chains`` or ``num_leapfrog`` not a positive
        integer, ``step_size`` not a finite number > 0, ``target_accept`` neither None nor
        in (0, 1), or ``schedule`` not one of :data:`SCHEDULES`.
    """
    if target_accept is not None:
        if isinstance(target_accept, bool) or not isinstance(target_accept, numbers.Real) \
                or not 0 < target_accept < 1:  # NaN fails the comparison too
            raise ValueError(f"target_accept must lie in (0, 1) or be None, got {target_accept!r}")
        target_accept = float(target_accept)
    return AISOptions(check_size("num_steps", num_steps), check_size("num_chains", num_chains),
                      check_size("num_leapfrog", num_leapfrog),
                      check_positive("step_size", step_size), target_accept,
                      check_choice("schedule", schedule, SCHEDULES))


def schedule(name: str, num_steps: int) -> list:
    """``[beta_0 = 0, ..., beta_T = 1]``, T = ``num_steps``, as Python floats (module
    docstring: ``"sigmoid"`` of Grosse et al. 2015 with delta = 4, or ``"linear"``)."""
    ts = [t / num_steps for t in range(num_steps + 1)]
    if name == "linear":
        return ts
    gammas = [1 / (1 + math.exp(-SIGMOID_RADIUS * (2 * t - 1))) for t in ts]
    return [(g - gammas[0]) / (gammas[-1] - gammas[0]) for g in gammas]


class AISResult(NamedTuple):
    """Per-point results of AIS, every tensor ``(B,)``.

    :ivar log_likelihood: the estimate of ``log p(x_n)``, nats: the log-mean-exp of the
        forward weights over chains (a stochastic lower bound), or minus that of the
        reverse weights (a stochastic upper bound).
    :ivar stderr: its Monte Carlo standard error across chains by the delta method,
        ``sd_c(w) / (sqrt(C) mean_c(w))``, nats (inf for one chain).
    :ivar acceptance_rate: mean HMC acceptance probability over chains and transitions.
    :ivar step_size: the leapfrog step sizes at the end of the run.
    """

    log_likelihood: torch.Tensor
    stderr: torch.Tensor
    acceptance_rate: torch.Tensor
    step_size: torch.Tensor


class BDMCResult(NamedTuple):
    """The bidirectional Monte Carlo sandwich on simulated data (module docstring).

    :ivar lower: forward AIS, a stochastic lower bound on ``log p(x_n)``, nats, ``(N,)``.
    :ivar upper: reverse AIS from the exact latent draw, a stochastic upper bound, ``(N,)``.
    :ivar data: the simulated data, in the form the data were given (a tensor or a tuple).
    :ivar forward, reverse: the two runs' :class:`AISResult` (standard errors, acceptance
        rates, step sizes).
    """

    lower: torch.Tensor
    upper: torch.Tensor
    data: object
    forward: AISResult
    reverse: AISResult

    @property
    def gap(self) -> torch.Tensor:
        """Mean of ``upper - lower`` over the data points, nats (0-dim)."""
        return (self.upper - self.lower).mean()


def _latent_sites(trace) -> list:
    return [s for s in trace.nodes.values() if s["type"] == "sample" and not s["is_observed"]]


def _refuse(model_trace, guide_trace, data_dim):
    """The ValueError for the first latent site AIS cannot move, or for a pair without
    per-point weights."""
    latents = _latent_sites(guide_trace)
    for site in latents:
        support = site["fn"].support
        while isinstance(support, torch.distributions.constraints.independent):
            support = support.base_constraint
        if support is not torch.distributions.constraints.real:
            kind = "discrete" if site["fn"].support.is_discrete else "constrained"
            raise ValueError(f"AIS moves the latents by Hamiltonian Monte Carlo, which needs "
                             f"real-valued latents; guide site '{site['name']}' is {kind} "
                             f"(support {site['fn'].support})")
    observed = [s for s in model_trace.nodes.values() if s["type"] == "sample" and s["is_observed"]]
    data_plates = set.intersection(*(set(p) for p in plates_by_site(observed).values())) \
        if observed else set()
    for name, plates in plates_by_site(latents).items():
        if not data_plates & set(plates):
            raise ValueError(f"latent site '{name}' is outside the data plate (a global latent): "
                             "AIS estimates log p(x_n) per data point, which needs every latent "
                             "inside one vectorised plate over the data points")
    if data_dim is None:
        raise ValueError("this model/guide pair has no per-point importance weights (sites with "
                         "different scales or plates; pyro_lvm.infer.importance): AIS needs them")


class _Layout:
    """Where the latent sites' values sit in one flat tensor ``(C, B, P)``: chains, data
    points, and every latent element of a point."""

    def __init__(self, sites, num_plates: int, data_dim: int):
        self.num_plates, self.data_axis = num_plates, num_plates + data_dim
        self.sites = []
        for site in sites:
            shape, event_dim = tuple(site["value"].shape), site["fn"].event_dim
            moved = self._moved(torch.empty(shape, device="meta"), event_dim).shape
            self.sites.append((site["name"], shape, event_dim, moved))

    def _moved(self, value, event_dim):
        """``value`` with its batch dims padded to the plates and the data dim second."""
        padded = (1,) * (self.num_plates - value.dim() + event_dim) + tuple(value.shape)
        return value.reshape(padded).movedim(self.data_axis, 1)

    def flatten(self, values: dict) -> torch.Tensor:
        """``(C, B, P)`` (``(1, B, P)`` for values without the particle dim)."""
        return torch.cat([self._moved(values[name], event_dim).flatten(2)
                          for name, _, event_dim, _ in self.sites], -1)

    def unflatten(self, flat: torch.Tensor) -> dict:
        """``{site name: value}`` in the shapes of the guide's draw, from ``(C, B, P)``."""
        values, start = {}, 0
        for name, shape, _, moved in self.sites:
            size = math.prod(moved[2:])
            part = flat[..., start:start + size].reshape(moved)
            values[name] = part.movedim(1, self.data_axis).reshape(shape)
            start += size
        return values


class AnnealingPath:
    """The two ends of the path for one block of data: ``num_chains`` draws per point from
    the guide (the prior when ``guide`` is None), ``draw`` ``(C, B, P)`` with their
    ``draw_log_p``, ``draw_log_q`` ``(C, B)``, and, called on any flat latents ``(C, B, P)``,
    ``(log p(x, z), log q(z | x))`` per chain and point.

    :param args, kwargs: the block's data and keyword arguments of model and guide.
    :raises ValueError: a pair AIS cannot move (module docstring), naming the site, or
        as :func:`~pyro_lvm.infer.importance.log_weights_from_traces`.
    """

    def __init__(self, model, guide, args, kwargs, num_chains: int):
        if guide is None:  # the prior as proposal: the model without its observed sites
            guide = poutine.block(model, hide_fn=lambda msg: msg["is_observed"])
        self.model, self.guide, self.args, self.kwargs = model, guide, args, kwargs
        self.num_chains = num_chains
        model_rec, guide_rec = poutine.trace(model), poutine.trace(guide)
        with torch.no_grad():
            weights = ImportanceWeightedLoss(num_chains).log_weights(model_rec, guide_rec, *args,
                                                                     **kwargs)
        model_trace, guide_trace = (prune_subsample_sites(r.trace) for r in (model_rec, guide_rec))
        _refuse(model_trace, guide_trace, weights.data_dim)
        latents = _latent_sites(guide_trace)
        self.nesting = weights.num_plates - 1
        self.layout = _Layout(latents, weights.num_plates, weights.data_dim)
        self.draw = self.layout.flatten({s["name"]: s["value"].detach() for s in latents})
        self.draw_log_p, self.draw_log_q = weights.log_p.detach(), weights.log_q.detach()

    def __call__(self, flat: torch.Tensor):
        """``(log p(x, z), log q(z | x))``, each ``(C, B)``, differentiable in ``flat``."""
        weights = log_weights_at(self.layout.unflatten(flat), self.model, self.guide, *self.args,
                                 num_particles=self.num_chains, max_plate_nesting=self.nesting,
                                 **self.kwargs)
        return weights.log_p, weights.log_q


def _kinetic_grad(r):
    return r  # unit mass matrix: K(r) = |r|^2 / 2


def _hmc(path, z, log_p, log_q, beta: float, step_size, num_leapfrog: int):
    """One HMC transition leaving ``f_beta`` invariant, every chain and point at once.

    :param z: ``(C, B, P)``; ``log_p``, ``log_q``: ``(C, B)`` at ``z``.
    :param step_size: ``(B, 1)``, one leapfrog step per data point.
    :returns: ``(z, log_p, log_q, acceptance probability (C, B))``.
    """
    last = {}

    def potential(state):
        lp, lq = path(state["z"])
        last["log_p"], last["log_q"] = lp.detach(), lq.detach()
        return -(beta * lp + (1 - beta) * lq).sum()

    r = torch.randn_like(z)
    proposal, r_new, _, _ = velocity_verlet({"z": z}, {"z": r}, potential, _kinetic_grad,
                                            step_size, num_leapfrog)

    def hamiltonian(lp, lq, momentum):
        return -(beta * lp + (1 - beta) * lq) + 0.5 * momentum.pow(2).sum(-1)

    log_ratio = hamiltonian(log_p, log_q, r) - hamiltonian(last["log_p"], last["log_q"], r_new["z"])
    prob = log_ratio.clamp(max=0).exp().nan_to_num(0.0)  # a NaN energy (overflow) is rejected
    accept = torch.rand_like(prob) < prob
    z = torch.where(accept.unsqueeze(-1), proposal["z"].detach(), z)
    return (z, torch.where(accept, last["log_p"], log_p), torch.where(accept, last["log_q"], log_q),
            prob)


def anneal(path: AnnealingPath, options: AISOptions,
           start: torch.Tensor | None = None) -> AISResult:
    """Run AIS on ``path``: forward from the guide's draws (``start=None``), or reverse,
    beta from 1 to 0, from ``start`` ``(C, B, P)`` (exact posterior samples).

    No host sync inside the loop; Pyro's validation is off in it (the first draw ran
    with it).  :returns: :class:`AISResult`.
    """
    betas = schedule(options.schedule, options.num_steps)
    if start is None:
        z, log_p, log_q = path.draw, path.draw_log_p, path.draw_log_q
    else:
        betas = betas[::-1]
        with torch.no_grad():
            log_p, log_q = (t.detach() for t in path(start))
        z = start
    b = z.shape[1]
    step = z.new_full((b, 1), options.step_size)
    low, high = options.step_size / _ADAPT_RANGE, options.step_size * _ADAPT_RANGE
    accepted = z.new_zeros(b)
    log_w = (betas[1] - betas[0]) * (log_p - log_q)
    with torch.enable_grad(), pyro.validation_enabled(False):
        for t in range(1, options.num_steps):  # a transition at each of beta_1 .. beta_{T-1}
            z, log_p, log_q, prob = _hmc(path, z, log_p, log_q, betas[t], step,
                                         options.num_leapfrog)
            log_w = log_w + (betas[t + 1] - betas[t]) * (log_p - log_q)
            accepted = accepted + prob.mean(0)
            if options.target_accept is not None:  # Robbins-Monro on log step (docstring)
                error = prob.mean(0).unsqueeze(-1) - options.target_accept
                step = (step * torch.exp(_ADAPT_RATE * error)).clamp(low, high)
    estimate, stderr = _log_mean_exp_and_stderr(log_w)
    if start is not None:  # log_w estimates log (1 / p(x)): the upper bound is minus it
        estimate = -estimate
    return AISResult(estimate, stderr, accepted / max(1, options.num_steps - 1), step.squeeze(-1))


def forward(model, guide, args: tuple, kwargs: dict, options: AISOptions) -> AISResult:
    """Forward AIS on one block of data ``args``: the estimate of ``log p(x_n)`` per point."""
    return anneal(AnnealingPath(model, guide, args, kwargs, options.num_chains), options)


def sandwich(model, guide, args: tuple, kwargs: dict, options: AISOptions) -> tuple:
    """BDMC on one block: data simulated in the shape of ``args`` (:func:`simulate`), then
    forward AIS and reverse AIS from the simulated latents on them.

    :returns: ``(forward, reverse, simulated data)``, two :class:`AISResult` and a tuple."""
    simulated, latents = simulate(model, args, kwargs)
    path = AnnealingPath(model, guide, simulated, kwargs, options.num_chains)
    start = path.layout.flatten(latents).expand_as(path.draw).clone()
    return anneal(path, options), anneal(path, options, start), simulated


def _log_mean_exp_and_stderr(log_w):
    """``log mean_c w`` and its delta-method standard error ``sd(w) / (sqrt(C) mean(w))``,
    each ``(B,)``, from ``log_w`` ``(C, B)``."""
    top = log_w.max(0).values
    w = torch.exp(log_w - top)
    mean = w.mean(0)
    c = log_w.shape[0]
    stderr = w.std(0) / (math.sqrt(c) * mean) if c > 1 else torch.full_like(mean, math.inf)
    return top + mean.log(), stderr


def simulate(model, args: tuple, kwargs: dict):
    """One joint draw ``(z, x) ~ p(z) p(x | z)`` per data point of ``args`` from the model
    itself (``poutine.uncondition``): the data ``args`` with every tensor that an observed
    site observes (``obs=`` that very tensor) replaced by the draw, and the latent values
    ``{site name: tensor}`` (without particle dims).

    :raises ValueError: no observed site observes one of the data tensors, or its draw
        has another shape.
    """
    with torch.no_grad():
        trace = poutine.trace(poutine.uncondition(model)).get_trace(*args, **kwargs)
    trace = prune_subsample_sites(trace)
    data, replaced = list(args), False
    for site in trace.nodes.values():
        if site["type"] != "sample" or not site["infer"].get("was_observed"):
            continue
        for i, tensor in enumerate(args):
            if site["infer"]["obs"] is tensor:
                if site["value"].shape != tensor.shape:
                    raise ValueError(f"the model's draw of site '{site['name']}' has shape "
                                     f"{tuple(site['value'].shape)}, not that of the data "
                                     f"{tuple(tensor.shape)}")
                data[i], replaced = site["value"].detach(), True
    if not replaced:
        raise ValueError("bdmc simulates the data by sampling the model's observed sites, but "
                         "none of them observes one of the data tensors itself (obs=x)")
    latents = {name: site["value"].detach() for name, site in trace.nodes.items()
               if site["type"] == "sample" and not site["infer"].get("was_observed")
               and not site["is_observed"]}
    return tuple(data), latents
