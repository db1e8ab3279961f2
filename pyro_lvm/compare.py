"""Compare losses on one model/guide pair: bound, gradient noise, cost, and what training gives.

For each loss, at the same fixed parameters:

* the bound's value, nats per point (mean of ``num_draws`` draws, with its standard error);
* the gradient estimator's variance and signal-to-noise ratio per parameter
  group (``guide`` and ``model`` parameters), over ``num_draws`` independent draws:
  ``variance`` is the mean over parameter elements of ``Var[g_i]`` and ``snr`` the
  mean of ``|E g_i| / sd(g_i)`` (Rainforth et al. 2018 use the same SNR);
* milliseconds per step (``loss_and_grads``);

and after ``train_steps`` epochs of :func:`pyro_lvm.train.fit` from the same
start, the test log-likelihood (:func:`pyro_lvm.evaluate.log_likelihood`, or the
exact one when ``exact_log_likelihood`` is given).
"""

from __future__ import annotations

import time

import torch

import pyro

from . import evaluate
from .checks import check_data, check_size
from .infer import make_loss
from .params import traced_params
from .plots import plt
from .train import fit

__all__ = ["compare_losses", "markdown_table", "plot_comparison"]


def _param_groups(model, guide, args):
    """Names of the parameters each of guide and model touches (shared ones count as guide)."""
    return {group: sorted(params) for group, params in traced_params(model, guide, *args).items()}


def gradient_statistics(loss, model, guide, args, num_draws: int = 50) -> dict:
    """Per group: ``variance`` and ``snr`` of the gradient estimator over ``num_draws``
    draws (each one ``loss.loss_and_grads``, as SVI takes it), plus the draws' loss values."""
    groups = _param_groups(model, guide, args)
    store = pyro.get_param_store()
    params = {g: [store.get_param(n).unconstrained() for n in names] for g, names in groups.items()}
    grads = {g: [] for g in groups}
    values = []
    for _ in range(num_draws):
        for ps in params.values():
            for p in ps:
                p.grad = None
        values.append(float(loss.loss_and_grads(model, guide, *args)))
        for g, ps in params.items():
            if ps:
                grads[g].append(torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1)
                                           for p in ps]))
    for ps in params.values():
        for p in ps:
            p.grad = None
    stats = {}
    for g, draws in grads.items():
        if not draws:
            continue
        draws = torch.stack(draws)  # (num_draws, P)
        var = draws.var(0)
        snr = draws.mean(0).abs() / var.sqrt()
        stats[g] = {"variance": var.mean().item(), "snr": snr[var > 0].mean().item()}
    return {"groups": stats, "values": torch.tensor(values)}


def compare_losses(model, guide, data, losses, *, num_particles: int = 1, num_draws: int = 50,
                   train_steps: int = 0, train_data=None, batch_size: int | None = None,
                   lr: float = 1e-2, transform=None, test_data=None, eval_samples: int = 1000,
                   exact_log_likelihood=None, timing_steps: int = 10, seed: int = 0) -> list[dict]:
    """Measure each loss in ``losses`` on ``model``/``guide``.

    :param losses: loss names (``["elbo", "iwae"]``, built by
        :func:`~pyro_lvm.infer.make_loss` with ``num_particles``), or ``{label: loss}``
        with a loss object or name, or ``{label: (loss, guide)}`` where a row needs
        another guide (e.g. :func:`~pyro_lvm.infer.score_function_guide` of the same one).
        Parameters a row creates (Pyro's baseline averages) are removed before the next.
    :param data: the training data ``(N, ...)``, or a tuple of tensors sharing N (as
        :func:`~pyro_lvm.train.fit` takes); statistics use the whole of it as one batch
        (pass a subset for large data).
    :param int train_steps: epochs of :func:`~pyro_lvm.train.fit` per loss, from the
        same start (0: no training).
    :param train_data: what training uses (default ``data``), in batches of ``batch_size``.
    :param test_data: held-out data for the log-likelihood after training.
    :param exact_log_likelihood: optional ``callable(test_data) -> (N,)`` exact
        ``log p(x)`` at the current parameters (used instead of importance sampling).
    :returns: one dict per loss: ``loss``, ``bound``, ``bound_se`` (nats per point),
        ``ms_per_step``, ``{group}_variance``, ``{group}_snr``, and ``test_log_likelihood``.
    :raises ValueError: bad data (:func:`~pyro_lvm.data.check_data`), counts that are not
        integers (``num_draws`` >= 2), or no losses.
    """
    args = tuple(data) if isinstance(data, (tuple, list)) else (data,)
    for i, t in enumerate(args):
        check_data(t, "data" if len(args) == 1 else f"data[{i}]", ndim=None)
    num_particles = check_size("num_particles", num_particles)
    num_draws = check_size("num_draws", num_draws, 2)  # a variance needs two draws
    train_steps, timing_steps = check_size("train_steps", train_steps, 0), check_size("timing_steps", timing_steps)
    eval_samples = check_size("eval_samples", eval_samples)
    if batch_size is not None:
        batch_size = check_size("batch_size", batch_size)
    if not isinstance(losses, (dict, list, tuple)) or not losses:
        raise ValueError(f"losses must be a non-empty list of names or dict {{label: loss}}, got {losses!r}")
    for d, label in ((train_data, "train_data"), (test_data, "test_data")):
        for i, t in enumerate(d if isinstance(d, (tuple, list)) else () if d is None else (d,)):
            check_data(t, label if not isinstance(d, (tuple, list)) else f"{label}[{i}]", ndim=None)
    n = args[0].shape[0]
    pyro.set_rng_seed(seed)
    if not isinstance(losses, dict):
        losses = {name: name for name in losses}
    losses = {k: v if isinstance(v, tuple) else (v, guide) for k, v in losses.items()}
    losses = {k: (make_loss(loss, num_particles) if isinstance(loss, str) else loss, g)
              for k, (loss, g) in losses.items()}
    for loss, row_guide in losses.values():
        loss.loss(model, row_guide, *args)  # registers every parameter in the param store
    store = pyro.get_param_store()
    start = {name: p.detach().clone() for name, p in store.named_parameters()}

    def restore():
        for name in list(store.keys()):
            if name not in start:  # e.g. TraceGraph's baseline averages: another row's shapes
                del store[name]
        for name, p in store.named_parameters():
            with torch.no_grad():
                p.copy_(start[name])

    rows = []
    for label, (loss, guide) in losses.items():
        restore()
        pyro.set_rng_seed(seed)
        stats = gradient_statistics(loss, model, guide, args, num_draws)
        values = -stats["values"] / n
        row = {"loss": label, "bound": values.mean().item(),
               "bound_se": (values.std() / len(values) ** 0.5).item()}
        for group, s in stats["groups"].items():
            row[f"{group}_variance"], row[f"{group}_snr"] = s["variance"], s["snr"]
        restore()
        t0 = time.perf_counter()
        for _ in range(timing_steps):
            loss.loss_and_grads(model, guide, *args)
        row["ms_per_step"] = 1e3 * (time.perf_counter() - t0) / timing_steps
        for p in pyro.get_param_store().values():
            p.unconstrained().grad = None
        if train_steps:
            restore()
            train_data = data if train_data is None else train_data
            rows_train = (train_data[0] if isinstance(train_data, (tuple, list)) else train_data).shape[0]
            fit(model, guide, train_data, loss=loss, lr=lr, num_epochs=train_steps,
                batch_size=batch_size or rows_train, transform=transform, seed=seed, progress=False)
            if test_data is not None:
                with torch.no_grad():
                    ll = (exact_log_likelihood(test_data) if exact_log_likelihood else
                          evaluate.log_likelihood(model, guide, test_data, num_samples=eval_samples))
                row["test_log_likelihood"] = ll.mean().item()
        rows.append(row)
    restore()
    return rows


def markdown_table(rows: list[dict], digits: int = 3) -> str:
    """The rows as a GitHub Markdown table (columns in first-seen order)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.{digits}g}" if abs(v) < 1e-2 or abs(v) >= 1e5 else f"{v:.{digits}f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def plot_comparison(rows: list[dict], path, title: str = "") -> None:
    """Bars of the bound, the guide-gradient SNR and the cost per step, one bar per loss."""
    panels = [("bound", "bound (nats/point)", False), ("guide_snr", "guide gradient SNR", True),
              ("ms_per_step", "ms per step", False)]
    panels = [p for p in panels if any(p[0] in r for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    labels = [r["loss"] for r in rows]
    for ax, (key, name, log) in zip(axes, panels):
        ax.bar(range(len(rows)), [r.get(key, float("nan")) for r in rows], color="tab:blue")
        ax.set_xticks(range(len(rows)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_title(name, fontsize=10)
        if log:
            ax.set_yscale("log")
        if key == "bound":
            lo = min(r["bound"] for r in rows)
            hi = max(r["bound"] for r in rows)
            ax.set_ylim(lo - 0.1 * (hi - lo + 1), hi + 0.1 * (hi - lo + 1))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
