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
from .checks import (check_callable, check_model_data, check_positive, check_size, check_tensors,
                     checked_values)
from .infer import resolve_loss
from .params import isolated_param_store, traced_params
from .plots import plt
from .testing import gradient_draws
from .train import fit

__all__ = ["compare_losses", "gradient_statistics", "markdown_table", "plot_comparison"]


def gradient_statistics(loss, model, guide, args: tuple, num_draws: int = 50) -> dict:
    """Per group of parameters (``guide``, ``model``; shared ones count as the guide's):
    ``variance`` and ``snr`` of the gradient estimator (module docstring) over
    ``num_draws`` draws of :func:`~pyro_lvm.testing.gradient_draws`.

    :param tuple args: the data tensors, as the model and guide take them.
    :returns: ``{"groups": {group: {"variance", "snr"}}, "values": (num_draws,)}``, the
        values being the draws' losses (negative bounds, nats for the whole data set).
    :raises ValueError: as :func:`~pyro_lvm.testing.gradient_draws`, or ``args`` not a tuple.
    """
    if not isinstance(args, tuple):
        raise ValueError(f"args must be a tuple of the data tensors, got {type(args).__name__}")
    draws = gradient_draws(loss, model, guide, *args, num_draws=num_draws)
    with isolated_param_store(copy=True):  # the groups, without registering in the caller's
        groups = traced_params(model, guide, *args)
    stats = {}
    for group, params in groups.items():
        if not params:
            continue
        flat = torch.cat([draws.grads[n].reshape(num_draws, -1) for n in sorted(params)], 1)
        var = flat.var(0)  # (P,) over the draws
        snr = flat.mean(0).abs() / var.sqrt()
        stats[group] = {"variance": var.mean().item(), "snr": snr[var > 0].mean().item()}
    return {"groups": stats, "values": -draws.values}


def _check_losses(losses, num_particles, guide) -> dict:
    """``{label: (loss, guide)}`` from the ``losses`` argument of :func:`compare_losses`."""
    if isinstance(losses, (list, tuple)) and losses and all(isinstance(v, str) for v in losses):
        losses = {name: name for name in losses}
    if not isinstance(losses, dict) or not losses:
        raise ValueError(f"losses must be a non-empty list of loss names or a dict {{label: "
                         f"loss}}, got {losses!r}")
    return {label: resolve_loss(v, num_particles, guide, name=f"losses[{label!r}]")
            for label, v in losses.items()}


def _checked(model, guide, data, losses, train_data, test_data, transform, **counts):
    """The door of :func:`compare_losses`: ``(tensors, {label: (loss, guide)}, counts)``,
    every argument checked (data values once) before any work."""
    check_callable("model", model)
    check_callable("guide", guide)
    check_callable("transform", transform, optional=True)
    minimum = {"num_draws": 2, "train_steps": 0, "seed": 0}  # a variance needs two draws
    counts = {name: value if name == "batch_size" and value is None  # None: all rows
              else check_size(name, value, minimum.get(name, 1)) for name, value in counts.items()}
    tensors = check_model_data(model, data, "data")
    if train_data is not None and transform is not None:  # the model sees transform's output
        check_tensors(train_data, "train_data")
    elif train_data is not None:
        check_model_data(model, train_data, "train_data")
    if test_data is not None:
        check_model_data(model, test_data, "test_data")
    return tensors, _check_losses(losses, counts["num_particles"], guide), counts


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
        Everything runs on a param store of its own (:mod:`pyro_lvm.params`): the modules'
        tensors and copies of the bare ``pyro.param`` sites, so the caller's store is left
        as it was and the modules get their starting values back.
    :param data: the training data ``(N, ...)``, or a tuple of tensors sharing N (as
        :func:`~pyro_lvm.train.fit` takes, integer labels included); statistics use the
        whole of it as one batch (pass a subset for large data).
    :param int train_steps: epochs of :func:`~pyro_lvm.train.fit` per loss, from the
        same start (0: no training).
    :param train_data: what training uses (default ``data``), in batches of ``batch_size``.
    :param transform: passed to :func:`~pyro_lvm.train.fit` for training only: applied to the
        **first** tensor of each training batch (e.g. :func:`pyro_lvm.data.binarize` of ``x``
        in ``(x, labels)``); ``data`` and ``test_data`` are used as given.
    :param test_data: held-out data for the log-likelihood after training.
    :param exact_log_likelihood: optional ``callable(test_data) -> (N,)`` exact
        ``log p(x)`` at the current parameters (used instead of importance sampling).
    :returns: one dict per loss: ``loss``, ``bound``, ``bound_se`` (nats per point),
        ``ms_per_step``, ``{group}_variance``, ``{group}_snr``, and ``test_log_likelihood``.
    :raises ValueError: bad model, guide, data (:func:`~pyro_lvm.checks.check_tensors` and
        the model's declared inputs), losses (:func:`~pyro_lvm.infer.resolve_loss`),
        counts that are not integers (``num_draws`` >= 2, ``train_steps`` >= 0), a
        non-positive ``lr``, or ``transform``/``exact_log_likelihood`` not callable.
    """
    args, losses, counts = _checked(
        model, guide, data, losses, train_data, test_data, transform,
        num_particles=num_particles, num_draws=num_draws, train_steps=train_steps,
        timing_steps=timing_steps, eval_samples=eval_samples, batch_size=batch_size, seed=seed)
    lr = check_positive("lr", lr)
    check_callable("exact_log_likelihood", exact_log_likelihood, optional=True)
    pyro.set_rng_seed(seed)
    with isolated_param_store(copy=True):  # the caller's store is left as it was
        return _rows(model, guide, data, args, losses, counts, lr, transform, train_data,
                     test_data, exact_log_likelihood)


def _rows(model, guide, data, args, losses, counts, lr, transform, train_data, test_data,
          exact_log_likelihood) -> list:
    """The rows of :func:`compare_losses`, on the param store it opened: every row from the
    same start (the modules' tensors, copies of the bare parameters)."""
    n = args[0].shape[0]
    with checked_values():
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
    for label, (loss, row_guide) in losses.items():
        restore()
        pyro.set_rng_seed(counts["seed"])
        rows.append({"loss": label, **_measure(loss, model, row_guide, args, n, counts)})
        if counts["train_steps"]:
            restore()
            rows[-1].update(_train_and_test(loss, model, row_guide, data, train_data, test_data,
                                            counts, lr, transform, exact_log_likelihood))
    restore()
    return rows


def _measure(loss, model, guide, args, n, counts) -> dict:
    """Bound (nats per point), gradient statistics per group and ms per step of one loss
    at the current parameters."""
    with checked_values():  # the data were checked at the door
        stats = gradient_statistics(loss, model, guide, args, counts["num_draws"])
        values = -stats["values"] / n
        row = {"bound": values.mean().item(), "bound_se": (values.std() / len(values) ** 0.5).item()}
        for group, s in stats["groups"].items():
            row[f"{group}_variance"], row[f"{group}_snr"] = s["variance"], s["snr"]
        t0 = time.perf_counter()
        for _ in range(counts["timing_steps"]):
            loss.loss_and_grads(model, guide, *args)
        row["ms_per_step"] = 1e3 * (time.perf_counter() - t0) / counts["timing_steps"]
    for p in pyro.get_param_store().values():
        p.unconstrained().grad = None
    return row


def _train_and_test(loss, model, guide, data, train_data, test_data, counts, lr, transform,
                    exact_log_likelihood) -> dict:
    """``train_steps`` epochs of :func:`~pyro_lvm.train.fit`, then the test log-likelihood."""
    train_data = data if train_data is None else train_data
    rows_train = (train_data[0] if isinstance(train_data, tuple) else train_data).shape[0]
    fit(model, guide, train_data, loss=loss, lr=lr, num_epochs=counts["train_steps"],
        batch_size=counts["batch_size"] or rows_train, transform=transform, seed=counts["seed"],
        progress=False)
    if test_data is None:
        return {}
    with torch.no_grad():
        ll = (exact_log_likelihood(test_data) if exact_log_likelihood else
              evaluate.log_likelihood(model, guide, test_data, num_samples=counts["eval_samples"]))
    return {"test_log_likelihood": ll.mean().item()}


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
