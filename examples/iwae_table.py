"""Reproduce Table 1 (MNIST) of Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders"
(ICLR 2016, arXiv:1509.00519): test NLL of VAE and IWAE trained with k = 1, 5, 50 samples, with one
and two stochastic layers, beside the published figures.

    python examples/iwae_table.py --rows L1-iwae-k50 --epochs-scale 0.01 --max-minutes 9 --resume

Shows how close the library's model and loop come to the published table: each row
(``L<layers>-<vae|iwae>-k<k>``) trains :class:`pyro_lvm.models.DLGM` with
:func:`pyro_lvm.train.fit` and is evaluated by :func:`pyro_lvm.evaluate.log_likelihood` (test NLL,
K = ``--eval-samples``, 5000 in the paper) and :func:`pyro_lvm.models.dlgm.active_units`
(Cov_x(E_q[u]) > 1e-2).

Writes into ``--out``: ``table.md``, ``elbo.png`` (test ELBO per epoch on
1000 test images, every row), ``results.json`` (what :func:`main` returns) and per row a folder with ``checkpoint.pt``
(after every epoch, with the settings it was made with) and ``result.json``.  ``--max-minutes`` stops training
between epochs in time; ``--resume`` continues every row from its checkpoint and skips finished
rows, so a row survives any number of time-limited commands.

What is reproduced, and from where (figures in nats per test image).  "The paper" is the text of
arXiv:1509.00519v4; "the code" is the authors'
github.com/yburda/iwae (commit 8e601aa):

* Published figures (``PUBLISHED``): the paper's Table 1, MNIST columns, all confirmed:
  test NLL one layer VAE 86.76 / 86.47 / 86.35, IWAE 86.76 / 85.54 / 84.78; two layers VAE 85.33 /
  85.01 / 84.78, IWAE 85.33 / 83.89 / 82.90 (k = 1, 5, 50); active units one layer VAE 19 / 20 /
  20, IWAE 19 / 22 / 25; two layers VAE 16+5 / 17+5 / 17+5, IWAE 16+5 / 21+5 / 26+7.  NLL = mean
  of L_5000 on the test set (sec. 5.1); active unit: Cov_x(E_q(u|x)[u]) > 1e-2 (sec. 5.2).
* Architecture (sec. 5.1; the code's experiments.py): :meth:`pyro_lvm.models.DLGM.burda`, tanh,
  Glorot initialisation.  Output bias at the logit of the mean training image (the code).
* Optimizer and schedule (sec. 5.1): Adam, beta1 = 0.9, beta2 = 0.999, epsilon = 1e-4,
  minibatches of 20, 3^i passes at learning rate 0.001 * 10^(-i/7) for i = 0..7 (3280 passes).
  The code rounds the rates to two digits (used here) and sets beta1 = 0.99 (``--beta1``).
* Binarization: dynamic.  The paper (footnote 2) follows Salakhutdinov & Murray (2008): binary
  observations sampled with expectations equal to the grey levels; the code draws a fresh sample
  every time an image is used, and its README says 59,600 training images were used (the last
  400 held out).  The same here: a fresh draw for every training batch, the first 59,600 images,
  and one fixed-seed draw of the 10,000 test images (the code also draws the test images once).
* VAE and IWAE with k = 1 are the same objective and gradient ("the two algorithms are identical
  for k = 1", sec. 5.1): one run serves both rows.
* Differences left: torch's Adam starts its second moments at 0 (the code: at 1); standard
  deviations are softplus(linear) + 1e-3 (the paper: exp on the variances).

The full schedule is 3280 epochs x 2980 steps of batch 20 per row, about 18 h per row on a GPU at
this library's step speed (about 6.6 ms per step), so ``--epochs-scale s`` runs
max(1, round(3^i s)) epochs of stage i at the paper's learning rate (at least 8 epochs, the whole
decay); the table states the epochs run.  Steps of batch 20 are latency-bound, so the rows run
best as parallel processes on one GPU.  GPU command lines for 15 minutes of one GPU
(machine start included; each command under 10 minutes; 10 distinct runs, the k = 1 IWAE rows
reuse the VAE runs); scale 1/729 gives 10 epochs per row (stages of 1,1,1,1,1,1,1,3 epochs),
about 3.5 min per row at 6.6 ms per step if the processes do not slow each other (an estimate,
not measured)::

    mkdir -p results/iwae_table; export OMP_NUM_THREADS=1
    R="L1-vae-k1 L1-vae-k5 L1-vae-k50 L1-iwae-k5 L1-iwae-k50 L2-vae-k1 L2-vae-k5 L2-vae-k50 L2-iwae-k5 L2-iwae-k50"
    for r in $R; do python examples/iwae_table.py --rows $r --epochs-scale 0.00137 --max-minutes 8.5 \
        --resume --device cuda --out results/iwae_table > results/iwae_table/$r.log 2>&1 & done; wait
    python examples/iwae_table.py --table-only --out results/iwae_table; cat results/iwae_table/table.md

Rows that ran out of time say so in their log and in the table; the same loop again continues them
from their checkpoints.  With more device time, raise the scale in a fresh ``--out`` (a run
refuses to resume with other settings): 0.0041 = 1/243 gives 18 epochs, 0.0123 = 1/81 44 epochs.

Run time on a 2-core CPU: only a smoke run fits, ``--rows L1-vae-k1 --epochs-scale 0.0001
--train-size 200 --test-size 100 --eval-samples 2 --device cpu`` (8 epochs of 10 steps), 30 s.
"""

import argparse
import json
import math
import time
from pathlib import Path

import torch

import pyro
import pyro.optim
from pyro_lvm import evaluate
from pyro_lvm.checkpoint import load_checkpoint
from pyro_lvm.cli import int_at_least, nonnegative_int, positive_float, positive_int
from pyro_lvm.data import binarize, fixed_binarization, load_mnist, resolve_device
from pyro_lvm.infer import make_loss
from pyro_lvm.models import DLGM
from pyro_lvm.models.dlgm import active_units
from pyro_lvm.plots import plot_curves
from pyro_lvm.report import write_metrics
from pyro_lvm.train import fit

#: Burda et al. (2016), Table 1, MNIST (arXiv:1509.00519v4): (test NLL in nats, active units per
#: stochastic layer).  Keys: (layers, objective, k).
PUBLISHED = {
    (1, "vae", 1): (86.76, "19"), (1, "vae", 5): (86.47, "20"), (1, "vae", 50): (86.35, "20"),
    (1, "iwae", 1): (86.76, "19"), (1, "iwae", 5): (85.54, "22"), (1, "iwae", 50): (84.78, "25"),
    (2, "vae", 1): (85.33, "16+5"), (2, "vae", 5): (85.01, "17+5"), (2, "vae", 50): (84.78, "17+5"),
    (2, "iwae", 1): (85.33, "16+5"), (2, "iwae", 5): (83.89, "21+5"), (2, "iwae", 50): (82.90, "26+7"),
}
#: The training loss behind each objective: the k-sample ELBO (VAE) or the IWAE bound.
OBJECTIVES = {"vae": "elbo", "iwae": "iwae"}
ROWS = [f"L{layers}-{loss}-k{k}" for (layers, loss, k) in PUBLISHED]
#: The paper's stages, 3^i epochs at 0.001 * 10^(-i/7), i = 0..7 (sec. 5.1), with the rates
#: rounded as in the authors' experiments.py: 1e-4 * round(10^(1 - i/7), 1).
STAGES = [(3**i, 1e-4 * round(10 ** (1 - i / 7), 1)) for i in range(8)]
PAPER_EPOCHS = sum(e for e, _ in STAGES)  # 3280
TRAIN_SIZE = 59_600  # the authors hold out the last 400 training images
MNIST_TRAIN_SIZE = 60_000
CONFIG_KEYS = ("epochs_scale", "batch_size", "train_size", "seed", "beta1")


def parse_row(name):
    """``"L2-iwae-k50"`` -> ``(2, "iwae", 50)``."""
    try:
        layers, loss, k = name.split("-")
        key = (int(layers[1:]), loss, int(k[1:]))
    except ValueError:
        key = None
    if key not in PUBLISHED:
        raise ValueError(f"unknown row {name!r}; rows are {', '.join(ROWS)}")
    return key


def run_name(key):
    """The run behind a row: IWAE with k = 1 is the VAE with k = 1 (the same objective)."""
    layers, loss, k = key
    return f"L{layers}-{'vae' if k == 1 else loss}-k{k}"


def schedule(scale):
    """Learning rate of every epoch: max(1, round(3^i * scale)) epochs of stage i."""
    if scale <= 0:
        raise ValueError(f"--epochs-scale must be positive, got {scale}")
    return [lr for epochs, lr in STAGES for _ in range(max(1, round(epochs * scale)))]


def staged_adam(lrs, beta1):
    """Adam (beta2 0.999, eps 1e-4: the paper's sec. 5.1) whose step size follows ``lrs`` per epoch."""
    return pyro.optim.LambdaLR({
        "optimizer": torch.optim.Adam,
        "optim_args": {"lr": lrs[0], "betas": (beta1, 0.999), "eps": 1e-4},
        "lr_lambda": lambda epoch: lrs[min(epoch, len(lrs) - 1)] / lrs[0]})


def train_run(name, args, x_train, x_test, device, deadline):
    """Train one run up to its last epoch or the deadline; returns the model when done."""
    layers, loss, k = parse_row(name)
    folder = Path(args.out) / name
    ckpt = folder / "checkpoint.pt"
    # fit refuses to resume a checkpoint made with other settings.
    config = {key: getattr(args, key) for key in CONFIG_KEYS}
    if ckpt.exists() and not args.resume:
        raise SystemExit(f"{ckpt} exists: pass --resume to continue it, or another --out")
    lrs = schedule(args.epochs_scale)
    torch.manual_seed(args.seed)
    model = DLGM.burda(layers, name=name).to(device)  # Glorot initialisation, seeded above
    model.init_output_bias(x_train.mean(0))
    test_subset = x_test[:1000]

    def test_elbo(epoch, history):
        return {"test_elbo": evaluate.elbo(model.model, model.guide, test_subset).mean().item()}

    done = load_checkpoint(ckpt)["epoch"] if ckpt.exists() else 0
    per_epoch = None  # seconds, the slowest epoch of the last call
    while done < len(lrs):
        left = deadline - time.time() - 60 * args.eval_minutes  # the evaluation's time kept
        if per_epoch is None and left > 0:  # one epoch first to time it, unless no deadline
            more = len(lrs) - done if math.isinf(left) else 1
        elif per_epoch is None or left < 1.2 * per_epoch:
            print(f"{name}: stopped at epoch {done}/{len(lrs)} for --max-minutes; rerun with --resume")
            return None
        else:
            more = min(len(lrs) - done, max(1, int(left / (1.2 * per_epoch))))
        history = fit(model.model, model.guide, x_train, loss=make_loss(OBJECTIVES[loss], k),
                      optim=staged_adam(lrs, args.beta1), num_epochs=done + more,
                      batch_size=args.batch_size, transform=binarize, seed=args.seed,
                      checkpoint=ckpt, resume=done > 0, config=config, callback=test_elbo,
                      progress=args.progress)
        per_epoch, done = max(history.seconds[-more:]), history.epoch[-1]
    if time.time() > deadline - 30 * args.eval_minutes:
        print(f"{name}: trained, but less than --eval-minutes left; rerun with --resume to evaluate")
        return None
    # The trained parameters: the param store as checkpointed, copied into the networks by one
    # model/guide call (evaluation reads the networks, never the store).
    pyro.clear_param_store()
    pyro.get_param_store().set_state(load_checkpoint(ckpt, device)["param_store"])
    model.guide(test_subset[:1])
    model.model(test_subset[:1])
    return model


def evaluate_run(name, model, args, x_test, device):
    """Test NLL (K = --eval-samples), its standard error and the active units of one run."""
    history = load_checkpoint(Path(args.out) / name / "checkpoint.pt")["history"]
    t0 = time.perf_counter()
    big = device.type == "cuda"  # the GPU takes far larger passes than the CPU default
    log_px = evaluate.log_likelihood(model.model, model.guide, x_test, num_samples=args.eval_samples,
                                     batch_size=50 if big else 100,
                                     max_elements=2**28 if big else evaluate.MAX_ELEMENTS)
    units = active_units(model.guide, x_test, num_samples=100)
    if device.type == "cuda":
        torch.cuda.synchronize()
    result = {
        "test_nll": -log_px.mean().item(),
        "test_nll_se": (log_px.std() / len(log_px) ** 0.5).item(),
        "active_units": {site: int(mask.sum()) for site, (_, mask) in units.items()},
        "epochs": history["epoch"][-1],
        "train_seconds": sum(history["seconds"]),
        "eval_seconds": time.perf_counter() - t0,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "eval_samples": args.eval_samples,
        "test_size": len(x_test),
        **{key: getattr(args, key) for key in CONFIG_KEYS},
    }
    write_metrics(Path(args.out) / name / "result.json", result)
    return result


def write_outputs(out) -> dict:
    """table.md, results.json and elbo.png from every run found under ``out``; prints the
    table and returns what results.json holds."""
    out = Path(out)
    results = {name: json.loads((out / name / "result.json").read_text())
               for name in ROWS if (out / name / "result.json").exists()}
    lines = ["| layers | objective | k | test NLL (ours) | published | ours - published "
             "| active units (ours) | (published) | epochs (paper: 3280) | train min | eval min "
             "| device |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in ROWS:
        key = parse_row(name)
        res = results.get(run_name(key))
        cells = [str(key[0]), key[1].upper(), str(key[2])]
        nll, units = PUBLISHED[key]
        if res is None:
            ckpt = out / run_name(key) / "checkpoint.pt"
            status = f"unfinished, epoch {load_checkpoint(ckpt)['epoch']}" if ckpt.exists() else "not run"
            cells += [status, f"{nll:.2f}", "-", "-", units] + ["-"] * 4
        else:
            alias = " (VAE k=1 run)" if run_name(key) != name else ""
            cells += [f"{res['test_nll']:.2f} ± {res['test_nll_se']:.2f}{alias}",
                      f"{nll:.2f}", f"{res['test_nll'] - nll:+.2f}",
                      "+".join(str(v) for v in res["active_units"].values()), units,
                      str(res["epochs"]), f"{res['train_seconds'] / 60:.1f}",
                      f"{res['eval_seconds'] / 60:.1f}", res["device"]]
        lines.append("| " + " | ".join(cells) + " |")
    settings = sorted({(r["epochs_scale"], r["batch_size"], r["train_size"], r["eval_samples"],
                        r["test_size"]) for r in results.values()})
    notes = [
        "",
        "Test NLL in nats per image (± one standard error over test images), K importance samples "
        "per image; active units per stochastic layer (z1+z2), Cov_x(E_q[u]) > 1e-2 on the test "
        "images.",
        "Settings (epochs scale, batch, training images, K, test images): "
        + "; ".join(str(s) for s in settings) + ". The paper: 3280 epochs, batch 20, 59600, "
        "K = 5000, 10000. Fewer epochs than 3280 mean a shortened schedule (stages of "
        "max(1, round(3^i x scale)) epochs at the paper's learning rates): expect higher NLL.",
        "Binarization: dynamic (a fresh draw per training batch; one fixed-seed draw of the test "
        "set), as in the authors' code and README (github.com/yburda/iwae).",
        "Published: Burda et al. (2016), Table 1 (arXiv:1509.00519v4), MNIST. IWAE k=1 rows "
        "reuse the VAE k=1 run (the same objective, as the paper notes).",
    ]
    (out / "table.md").write_text("\n".join(lines + notes) + "\n")
    written = write_metrics(out / "results.json", results)
    curves = {}
    for name in ROWS:
        if name == run_name(parse_row(name)) and (out / name / "checkpoint.pt").exists():
            history = load_checkpoint(out / name / "checkpoint.pt")["history"]
            curves[name] = (history["epoch"], [m["test_elbo"] for m in history["metrics"]])
    if curves:
        plot_curves(curves, out / "elbo.png", ylabel="test ELBO, nats per image (1000 images)",
                    title="DLGM, dynamically binarized MNIST")
    print("\n".join(lines))
    return written


def parse_args(argv=None) -> argparse.Namespace:
    """The command line; a bad value exits with status 2 before any work."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", nargs="+", default=["all"], help=f"'all' or some of: {' '.join(ROWS)}")
    parser.add_argument("--epochs-scale", type=positive_float, default=1.0,
                        help="fraction of the paper's 3^i epochs per stage (1: 3280 epochs)")
    parser.add_argument("--batch-size", type=positive_int, default=20, help="the paper's 20")
    parser.add_argument("--train-size", type=positive_int, default=TRAIN_SIZE,
                        help="first N training images (the authors': 59600)")
    parser.add_argument("--test-size", type=positive_int, default=10_000, help="first N test images")
    parser.add_argument("--eval-samples", type=int_at_least(2), default=5000, help="K for the test NLL")
    parser.add_argument("--beta1", type=float, default=0.9,
                        help="Adam beta1: the paper's 0.9 (the authors' code: 0.99)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--data-dir", default=None, help="folder with MNIST/raw (default $PYRO_LVM_DATA)")
    parser.add_argument("--out", default="results/iwae_table")
    parser.add_argument("--resume", action="store_true",
                        help="continue every row from its checkpoint; skip finished rows")
    parser.add_argument("--max-minutes", type=positive_float, default=math.inf,
                        help="stop training (between epochs) after this long; finish with --resume")
    parser.add_argument("--eval-minutes", type=positive_float, default=2.0,
                        help="time kept for the evaluation under --max-minutes")
    parser.add_argument("--table-only", action="store_true", help="only rebuild table.md and elbo.png")
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--progress", action="store_true", help="tqdm bars per epoch")
    args = parser.parse_args(argv)
    if not 0 <= args.beta1 < 1:
        parser.error(f"argument --beta1: must be in [0, 1), got {args.beta1}")
    if args.train_size > MNIST_TRAIN_SIZE:
        parser.error(f"--train-size must be in [1, {MNIST_TRAIN_SIZE}], got {args.train_size}")
    try:
        runs_of(args.rows)
        schedule(args.epochs_scale)
    except ValueError as err:
        parser.error(str(err))
    return args


def runs_of(rows) -> list:
    """The runs behind the rows asked for (``["all"]``: every row), each once."""
    names = ROWS if rows == ["all"] else rows
    return list(dict.fromkeys(run_name(parse_row(name)) for name in names))


def main(argv=None) -> dict:
    """Train and evaluate the runs asked for, rebuild the table; returns what results.json
    holds (every finished run's result)."""
    args = parse_args(argv)
    if args.table_only:
        return write_outputs(args.out)
    deadline = time.time() + 60 * args.max_minutes
    device = resolve_device(args.device)
    x_train = load_mnist(args.data_dir, train=True, device=device)[0][:args.train_size]
    x_test = fixed_binarization(load_mnist(args.data_dir, train=False, device=device)[0][:args.test_size])
    for name in runs_of(args.rows):
        if args.resume and (Path(args.out) / name / "result.json").exists():
            print(f"{name}: finished earlier, skipped")
            continue
        with pyro.validation_enabled(False):  # Pyro's per-site checks sync; fit checks the data
            model = train_run(name, args, x_train, x_test, device, deadline)
            if model is None:
                continue
            result = evaluate_run(name, model, args, x_test, device)
        print(f"{name}: test NLL {result['test_nll']:.2f} ± {result['test_nll_se']:.2f} nats "
              f"(K={args.eval_samples}), active units {result['active_units']}, "
              f"{result['epochs']} epochs, {result['train_seconds'] / 60:.1f} min training")
    return write_outputs(args.out)


if __name__ == "__main__":
    main()
