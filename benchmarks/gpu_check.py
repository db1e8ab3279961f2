"""Every CUDA claim of the library checked by one command on one GPU, within 9 minutes.

    python benchmarks/gpu_check.py --device cuda --out results/gpu_check   # make gpu-check
    python benchmarks/gpu_check.py --device cpu --smoke --out /tmp/check   # every part, tiny sizes

Runs its parts (``--help`` lists them with their budgets) in order, each as its own process
group under its own wall-time budget:
a part that fails, crashes or hangs is recorded (status, exit code, wall time, the tail of its
log) and the rest still run; a part past its budget gets SIGTERM, 5 s later its whole group
SIGKILL.  The figures of each part are read from what it writes (``metrics.json``,
``results.json``, a JUnit file) or prints (the step benchmarks' table, a JSON line).  Writes into
``--out``, after every part: ``gpu_check.json`` (machine, versions, each part's command,
status, wall time, figures, log tail on failure), ``gpu_check.md`` (the same as tables) and
``logs.tar.gz`` (every part's log and small outputs); the parts' own outputs go to ``--work``.

``--smoke`` runs every part on tiny sizes (a 512/200-image MNIST copy, one epoch, K = 2), two
at a time (``--jobs``), so the script and each path it drives keep working between leases of
a GPU; ``tests/test_gpu_check.py`` runs it on the CPU.  On the CPU each Python part is forked from one interpreter that has imported
torch, pyro and pyro_lvm already (``--preload``: seconds of imports per part on a small CPU);
on CUDA each part is a fresh interpreter, as a user runs it.

On the device machine (the workplace's run tool: one H200, Python 3.12 and torch 2.11 but
neither pyro nor arviz, and no network), from the repository root, after ``make gpu-carry``
here (it fills the ignored folder ``.gpu``: wheels of the six packages that image lacks and
MNIST gzipped, 14 MB), with ``carry: [".gpu"]`` and ``timeout_s: 600``::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
--target /tmp/site .gpu/wheels/*.whl && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 \
&& python3 benchmarks/gpu_check.py --device cuda --mnist-gz .gpu/mnist --data-dir /tmp/data \
--work /tmp/gpu_check --out $OUT

(one line; the install takes about 5 s there, an estimate: six pure-Python wheels from local
files, 4.6 s on the loaded 2-core CPU here; the whole call at most about 12 of the lease's 15
minutes, about 7 expected, also estimates: a minute or two to start the machine, at most 9 for
the check, about 4.5 expected).  Only ``--out``'s three files come back.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import runpy
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # this checkout's pyro_lvm, also run as a plain script
    sys.path.insert(0, str(ROOT))
from pyro_lvm.report import write_metrics  # noqa: E402

#: (name, budget on the GPU in seconds, what it checks); the budgets add up to 535 s < 9 min.
PLAN = [
    ("environment", 45, "versions, the GPU and its driver; MNIST in place (SHA-256 checked)"),
    ("cuda_tests", 75, "the CUDA tests: tests/ files that mention torch.cuda, -k 'cuda or gpu "
                       "or nccl' (tests/test_cuda.py, test_dlgm.py::test_dlgm_runs_on_cuda); "
                       "on CUDA a skipped one fails the part"),
    ("demo", 100, "examples/svi_vae.py, 10 epochs, K=5000: s/epoch, eval s, test ELBO, log p(x)"),
    ("demo_torchrun", 100, "the same demo under torchrun --standalone --nproc_per_node=1 (NCCL, "
                           "world size 1): s/epoch against the plain run (issue 13: <= 1.1x)"),
    ("vae_step", 40, "benchmarks/vae_step.py: SVI step / hand-written PyTorch step"),
    ("loss_step", 50, "benchmarks/loss_step.py: K=5 loss steps / Trace_ELBO step"),
    ("iwae_table", 70, "examples/iwae_table.py rows L1-vae-k1, L1-iwae-k5: 8 epochs (one per "
                       "stage) on 2000 images, test NLL at K=5000 on the 10,000 test images"),
    ("log_likelihood", 55, "benchmarks/log_likelihood.py: evaluate.log_likelihood, K=5000, "
                           "10,000 test images, the demo's model: seconds"),
]
TOTAL_BUDGET = 540  # seconds: the 9 minutes; a part never runs past what is left
SMOKE_BUDGET = 90  # seconds per part with --smoke (each takes a few)
#: Imported once by the interpreter the CPU parts are forked from (--preload): what at least
#: two parts import (a module only one part needs loads in that part, beside the others).
PRELOAD = ["torch", "torchvision", "pyro", "pyro_lvm.train", "pyro_lvm.evaluate",
           "pyro_lvm.models", "pyro_lvm.diagnostics", "pyro_lvm.plots", "pyro_lvm.report"]
IWAE_ROWS = ["L1-vae-k1", "L1-iwae-k5"]


class PartFailed(Exception):
    """A part exited 0 but its outputs do not hold what it should (the message says what)."""


@dataclass(frozen=True)
class Part:
    """One part of the check.

    :param command: its argv, or a function returning it when the part starts; ``"python"``
        first means the interpreter running this script.
    :param figures: ``(its folder, its log text) -> dict``, read after exit status 0;
        raises :class:`PartFailed` (or any error) when the outputs are not as they should be.
    :param headline: ``figures -> str``, the cell of the Markdown table.
    :param after: the parts that must have ended before this one starts (with ``--jobs`` > 1).
    """

    name: str
    budget: float
    command: Sequence[str] | Callable[[], Sequence[str]]
    figures: Callable[[Path, str], dict] = lambda folder, log: {}
    headline: Callable[[dict], str] = lambda figures: ""
    about: str = ""
    env: dict = field(default_factory=dict)
    after: tuple = ()


# ----------------------------------------------------------------------------- reading figures

def last_json_line(log: str) -> dict:
    """The last line of ``log`` that is a JSON object (what environment.py and
    log_likelihood.py print)."""
    for line in reversed(log.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise PartFailed("no JSON line in the output")


def pytest_figures(require_run: bool):
    """Counts from the JUnit file; with ``require_run`` (on CUDA) a skipped test fails the part."""

    def read(folder, log):
        root = ElementTree.parse(folder / "junit.xml").getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
        counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
        skipped = [f"{case.get('classname')}::{case.get('name')}: {case.find('skipped').get('message')}"
                   for case in suite.iter("testcase") if case.find("skipped") is not None]
        figures = {**counts, "skipped_tests": skipped}
        if counts["tests"] == 0:
            raise PartFailed("no CUDA test was collected")
        if require_run and skipped:
            raise PartFailed(f"{len(skipped)} CUDA tests skipped on a CUDA device: {skipped}")
        return figures

    return read


def demo_figures(folder, log):
    """From the demo's metrics.json; the median s/epoch leaves out the first epoch (warm-up)."""
    m = json.loads((folder / "metrics.json").read_text())
    seconds = m["seconds_per_epoch"]
    return {
        "epochs": len(seconds), "seconds_per_epoch": seconds,
        "seconds_per_epoch_median": statistics.median(seconds[1:] or seconds),
        "seconds_first_epoch": seconds[0], "eval_seconds": m["eval_seconds"],
        "test_elbo": m["test_elbo"][-1], "test_log_likelihood": m["test_log_likelihood"],
        "test_log_likelihood_stderr": m["test_log_likelihood_stderr"],
        "eval_samples": m["test_log_likelihood_num_samples"],
        "psis_khat_share_above_0.7": m["psis_khat_share_above_0.7"],
        "device": m["device"], "world_size": m["world_size"], "backend": m["backend"],
    }


def demo_headline(f):
    return (f"{f['seconds_per_epoch_median']:.2f} s/epoch (median after the first: "
            f"{f['seconds_first_epoch']:.2f} s), eval {f['eval_seconds']:.1f} s, test ELBO "
            f"{f['test_elbo']:.2f}, log p(x) {f['test_log_likelihood']:.2f} ± "
            f"{f['test_log_likelihood_stderr']:.2f} (K={f['eval_samples']}), {f['device']}, "
            f"world {f['world_size']} {f['backend'] or ''}".rstrip())


#: A row of benchmarks/common.compare's table: name, ms per step, ratio to the baseline.
STEP_ROW = re.compile(
    r"^(?P<name>\S.*?)\s+(?P<ms>[\d.]+) ms/step\s+(?P<ratio>[\d.]+)x (?P<baseline>.+)$")


def step_figures(folder, log):
    rows = [m for m in map(STEP_ROW.match, log.splitlines()) if m]
    if not rows:
        raise PartFailed("no 'ms/step' rows in the output")
    return {"baseline": rows[0]["baseline"],
            "steps": {m["name"]: {"ms_per_step": float(m["ms"]), "ratio": float(m["ratio"])}
                      for m in rows}}


def step_headline(f):
    others = [(name, s) for name, s in f["steps"].items() if name != f["baseline"]]
    return "; ".join(f"{name} {s['ratio']:.2f}x" for name, s in others) + f" (of {f['baseline']})"


def iwae_figures(folder, log):
    results = json.loads((folder / "results.json").read_text())
    missing = [row for row in IWAE_ROWS if row not in results]
    if missing:
        raise PartFailed(f"rows without a result: {missing}")
    keys = ("test_nll", "test_nll_se", "epochs", "train_seconds", "eval_seconds",
            "active_units", "eval_samples", "test_size", "device")
    return {row: {**{k: results[row][k] for k in keys},
                  "seconds_per_epoch": results[row]["train_seconds"] / results[row]["epochs"]}
            for row in IWAE_ROWS}


def iwae_headline(f):
    return "; ".join(f"{row}: NLL {r['test_nll']:.2f} ± {r['test_nll_se']:.2f} "
                     f"(K={r['eval_samples']}), {r['epochs']} epochs at "
                     f"{r['seconds_per_epoch']:.1f} s, eval {r['eval_seconds']:.1f} s"
                     for row, r in f.items())


def log_likelihood_headline(f):
    ways = [(k, v) for k, v in f.items() if isinstance(v, dict)]
    return "; ".join(f"{k}: {v['seconds']:.1f} s, log p(x) {v['log_px']:.2f}" for k, v in ways) + \
        f" (K={f['num_samples']}, {f['test_size']} images, {f['model']})"


def environment_headline(f):
    gpu = f.get("device_name") or "no CUDA device"
    return (f"{gpu}, driver {f.get('driver')}, torch {f['torch']} (CUDA {f['cuda']}), "
            f"pyro {f['pyro']}, Python {f['python']}")


def read_json_line(folder, log):
    return last_json_line(log)


#: Each part's (figures, headline); cuda_tests' figures depend on the device (:func:`plan`).
READING = {
    "environment": (read_json_line, environment_headline),
    "cuda_tests": (pytest_figures(require_run=True),
                   lambda f: f"{f['passed']} passed, {f['failures']} failed, {f['errors']} errors, "
                             f"{f['skipped']} skipped"),
    "demo": (demo_figures, demo_headline),
    "demo_torchrun": (demo_figures, demo_headline),
    "vae_step": (step_figures, step_headline),
    "loss_step": (step_figures, step_headline),
    "iwae_table": (iwae_figures, iwae_headline),
    "log_likelihood": (read_json_line, log_likelihood_headline),
}


# ----------------------------------------------------------------------------- the plan

#: The arguments that size each part: (on the GPU, the issue's figures; with --smoke).
SIZES = {
    "demo": (["--epochs", "10", "--eval-samples", "5000"],
             ["--epochs", "1", "--z-dim", "2", "--hidden", "8", "--eval-samples", "2"]),
    "vae_step": ([], ["--batch-size", "32", "--steps", "1", "--rounds", "1"]),
    "loss_step": ([], ["--batch-size", "32", "--steps", "1", "--rounds", "1", "--particles", "2"]),
    # --epochs-scale 1e-4: one epoch per stage of the paper's schedule, 8 in all.
    "iwae_table": (["--epochs-scale", "0.0001", "--train-size", "2000"],
                   ["--epochs-scale", "0.0001", "--train-size", "40", "--batch-size", "20",
                    "--test-size", "50", "--eval-samples", "2"]),
    "log_likelihood": (["--num-samples", "5000"], ["--num-samples", "2"]),
}


def cuda_test_files() -> list[str]:
    """The test files that mention ``torch.cuda``: where the CUDA tests live."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                  if "torch.cuda" in p.read_text())


def plan(args) -> list[Part]:
    """The parts for ``args.device`` at full (the GPU) or ``--smoke`` sizes."""
    work, smoke = Path(args.work), args.smoke
    data = str(work / "mnist-tiny") if smoke else args.data_dir  # what all but the tests read
    out = {name: str(work / name) for name, _, _ in PLAN}
    common = ["--device", args.device, "--data-dir", data]
    demo = [*SIZES["demo"][smoke], *common, "--no-download"]
    model = work / "demo" / "model.pt"
    commands = {
        "environment": ["python", "benchmarks/environment.py", "--data-dir", args.data_dir,
                        *(["--mnist-gz", args.mnist_gz] if args.mnist_gz else []),
                        *(["--tiny-copy", data] if smoke else [])],
        "cuda_tests": ["python", "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                       f"--junitxml={out['cuda_tests']}/junit.xml", *cuda_test_files(),
                       "-k", "cuda or gpu or nccl"],
        "demo": ["python", "examples/svi_vae.py", *demo, "--out", out["demo"]],
        "demo_torchrun": ["python", "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=1", "examples/svi_vae.py", *demo,
                          "--out", out["demo_torchrun"]],
        "vae_step": ["python", "benchmarks/vae_step.py", *common, *SIZES["vae_step"][smoke]],
        "loss_step": ["python", "benchmarks/loss_step.py", *common, *SIZES["loss_step"][smoke]],
        "iwae_table": ["python", "examples/iwae_table.py", "--rows", *IWAE_ROWS, *common,
                       "--out", out["iwae_table"], *SIZES["iwae_table"][smoke]],
        # The demo's trained model when it wrote one (else an untrained VAE: the time is the point).
        "log_likelihood": lambda: ["python", "benchmarks/log_likelihood.py", *common,
                                   *SIZES["log_likelihood"][smoke],
                                   *(["--model", str(model)] if model.exists() else [])],
    }
    reading = {**READING, "cuda_tests": (pytest_figures(require_run=args.device == "cuda"),
                                         READING["cuda_tests"][1])}
    # The tests read $PYRO_LVM_DATA: the real MNIST, also in the smoke run.
    env = {"PYRO_LVM_DATA": args.data_dir, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    after = {"environment": (), "log_likelihood": ("environment", "demo")}  # the data; its model
    return [Part(name, SMOKE_BUDGET if smoke else budget, commands[name], *reading[name],
                 about=about, env=env, after=after.get(name, ("environment",)))
            for name, budget, about in PLAN]


# ----------------------------------------------------------------------------- running parts

def stop_group(pid: int, wait: Callable[[float], object], grace: float = 5.0) -> None:
    """SIGTERM to the process group ``pid`` leads, then (after ``grace`` s unless the leader is
    gone) SIGKILL to what is left of it; a group already gone is fine."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        if sig == signal.SIGTERM:
            wait(grace)


def run_fresh(argv, log_path, env, timeout) -> int | None:
    """``argv`` as a new process group in a fresh interpreter; its exit code, None on timeout."""
    argv = [sys.executable, *argv[1:]] if argv[0] == "python" else list(argv)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

        def wait(seconds):
            try:
                proc.wait(seconds)
            except subprocess.TimeoutExpired:
                pass

        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_group(proc.pid, wait)
            proc.wait()
            return None
        finally:
            stop_group(proc.pid, wait, grace=0)  # what it left behind, e.g. a worker


def _forked_main(argv, log_path, env, cwd) -> None:
    """In the forked process: a session of its own, the log as stdout and stderr, then
    ``argv`` as ``python`` would run it (script, ``-m`` module or ``-c`` code) or exec'd."""
    import atexit

    os.setsid()
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    if sys.stdout is not None:
        sys.stdout.reconfigure(line_buffering=True)
    if argv[0] != "python":
        os.execvp(argv[0], list(argv))
    how, *rest = argv[1:]
    try:
        if how == "-m":
            sys.argv = rest
            sys.path.insert(0, cwd)
            runpy.run_module(rest[0], run_name="__main__", alter_sys=True)
        elif how == "-c":
            sys.argv = ["-c", *rest[1:]]
            exec(compile(rest[0], "<string>", "exec"), {"__name__": "__main__"})
        else:
            sys.argv = [how, *rest]
            sys.path.insert(0, str(Path(how).resolve().parent))
            runpy.run_path(how, run_name="__main__")
    finally:
        atexit._run_exitfuncs()  # as at an interpreter's exit: multiprocessing ends with _exit


class Preloaded:
    """Launch parts forked from one interpreter that has imported :data:`PRELOAD` already
    (multiprocessing's forkserver: a fresh, single-threaded server, so no lock or thread
    of this process is copied; it never touches CUDA)."""

    def __init__(self):
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(PRELOAD)
        warm = self.context.Process(target=os.getpid)  # the server starts and imports now,
        warm.start()                                   # outside every part's time
        warm.join()

    def __call__(self, argv, log_path, env, timeout) -> int | None:
        proc = self.context.Process(target=_forked_main,
                                    args=(list(argv), str(log_path), env, str(ROOT)))
        proc.start()
        proc.join(timeout)
        timed_out = proc.exitcode is None
        stop_group(proc.pid, proc.join, grace=5.0 if timed_out else 0)
        if proc.is_alive():  # stopped before it had a process group of its own
            proc.kill()
        proc.join()
        return None if timed_out else proc.exitcode


def tail(text: str, lines: int = 40, chars: int = 4000) -> str:
    return "\n".join(text.splitlines()[-lines:])[-chars:]


def run_part(part: Part, folder: Path, launch, timeout: float) -> dict:
    """Run one part in ``folder`` (emptied first) and return its record."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    argv = list(part.command() if callable(part.command) else part.command)
    record = {"name": part.name, "about": part.about, "command": shlex.join(argv),
              "budget_seconds": part.budget}
    t0 = time.monotonic()
    code = launch(argv, folder / "log.txt", {**os.environ, **part.env}, timeout)
    record["wall_seconds"] = round(time.monotonic() - t0, 2)
    record["exit_code"] = code
    log_path = folder / "log.txt"  # absent when the process died before it opened its log
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    if code is None:
        record["status"] = "timeout"
        record["error"] = f"stopped after {timeout:.0f} s"
    elif code != 0:
        record["status"] = "failed"
        record["error"] = f"exit status {code}" + (" (a signal)" if code < 0 else "")
    else:
        try:
            record["figures"] = part.figures(folder, log)
            record["headline"] = part.headline(record["figures"])
            record["status"] = "passed"
        except Exception as err:  # noqa: BLE001 - any unreadable output fails this part only
            record["status"] = "failed"
            record["error"] = f"its outputs: {type(err).__name__}: {err}"
    if record["status"] != "passed":
        record["log_tail"] = tail(log)
    return record


# ----------------------------------------------------------------------------- the report

def summary(records: dict) -> dict:
    """Figures across parts: torchrun against the plain demo (issue 13 owes <= 1.1x) and the
    demo's log p(x) against the benchmark's on the same model."""
    out = {}
    plain, ddp = records.get("demo", {}), records.get("demo_torchrun", {})
    if plain.get("status") == ddp.get("status") == "passed":
        ratio = (ddp["figures"]["seconds_per_epoch_median"]
                 / plain["figures"]["seconds_per_epoch_median"])
        out["torchrun_over_plain_seconds_per_epoch"] = ratio
        out["torchrun_within_1.1x"] = ratio <= 1.1
    ll = records.get("log_likelihood", {})
    if (plain.get("status") == ll.get("status") == "passed"
            and ll["figures"]["model"].endswith("model.pt")):
        out["log_px_benchmark_minus_demo"] = (ll["figures"]["library defaults"]["log_px"]
                                              - plain["figures"]["test_log_likelihood"])
    return out


def flat(figures: dict, prefix: str = "") -> list:
    """``[(dotted key, value)]`` of the scalar figures (lists shown as they are)."""
    rows = []
    for key, value in figures.items():
        if isinstance(value, dict):
            rows += flat(value, f"{prefix}{key}.")
        else:
            rows.append((prefix + key, value))
    return rows


def cell(value) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    else:
        text = json.dumps(value) if isinstance(value, list) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# gpu_check: {env.get('device_name') or report['device']}"
             f"{' (smoke)' if report['smoke'] else ''}", "",
             *(["Smoke run: tiny sizes, parts run side by side; the figures show the paths "
                "run, they measure nothing.", ""] if report["smoke"] else []),
             "| machine | |", "|---|---|"]
    for key in ("device_name", "driver", "torch", "cuda", "cudnn", "python", "pyro", "numpy",
                "cpu_count"):
        lines.append(f"| {key} | {cell(env.get(key, 'unknown'))} |")
    lines += [f"| started | {report['started']} |",
              f"| wall | {report['wall_seconds']:.0f} s (budget {report['total_budget_seconds']} s) |",
              "", "| part | status | wall s | budget s | figures |", "|---|---|---|---|---|"]
    for r in report["parts"]:
        lines.append(f"| {r['name']} | {r['status']} | {r['wall_seconds']:.1f} | "
                     f"{r['budget_seconds']:.0f} | {cell(r.get('headline') or r.get('error', ''))} |")
    if report["summary"]:
        lines += ["", "| across parts | |", "|---|---|"]
        lines += [f"| {k} | {cell(v)} |" for k, v in report["summary"].items()]
    for r in report["parts"]:
        lines += ["", f"## {r['name']}: {r['status']}", "", r["about"], "", f"`{r['command']}`", ""]
        if r["status"] == "passed":
            lines += ["| figure | value |", "|---|---|"]
            lines += [f"| {k} | {cell(v)} |" for k, v in flat(r["figures"])]
        else:
            lines += [r.get("error", ""), "", "```", r["log_tail"], "```"]
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: Path, work: Path) -> None:
    write_metrics(out / "gpu_check.json", report)
    (out / "gpu_check.md").write_text(markdown(report))
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:  # logs and small text outputs
        for part in report["parts"]:
            for path in sorted((work / part["name"]).glob("*")):
                if path.suffix in (".txt", ".json", ".xml", ".md") and path.stat().st_size < 2**20:
                    tar.add(path, arcname=f"{part['name']}/{path.name}")


def not_run(part: Part, total_budget: float) -> dict:
    return {"name": part.name, "about": part.about, "command": "", "status": "not run",
            "budget_seconds": part.budget, "wall_seconds": 0.0, "exit_code": None,
            "error": f"the total budget of {total_budget} s was spent", "log_tail": ""}


def run_check(parts: Sequence[Part], out, work, launch=run_fresh, jobs: int = 1,
              total_budget: float = TOTAL_BUDGET, header=None) -> dict:
    """Run ``parts`` (in order, ``jobs`` at a time, each after its ``after``) with ``launch``;
    the report is written after each part ends.  Returns it.

    :param launch: ``(argv, log path, env, timeout) -> exit code or None`` (:func:`run_fresh`
        or a :class:`Preloaded`).
    :param total_budget: seconds for all parts; a part gets at most what is left, and none
        starts with less than a second left (recorded as ``not run``).
    """
    out, work = Path(out), Path(work)
    out.mkdir(parents=True, exist_ok=True)
    report = {"device": None, "smoke": None, **(header or {}), "jobs": jobs, "started":
              datetime.now(timezone.utc).isoformat(timespec="seconds"), "total_budget_seconds":
              total_budget, "wall_seconds": 0.0, "environment": {}, "parts": [], "summary": {}}
    t0, lock, records, futures = time.monotonic(), threading.Lock(), {}, {}

    def run(part):
        for name in part.after:  # submitted earlier, so running or done: no slot waits in vain
            if name in futures:
                futures[name].result()
        left = total_budget - (time.monotonic() - t0)
        if left < 1:
            record = not_run(part, total_budget)
        else:
            print(f"gpu_check: {part.name} (budget {min(part.budget, left):.0f} s)", flush=True)
            record = run_part(part, work / part.name, launch, min(part.budget, left))
            print(f"gpu_check: {part.name} {record['status']} in {record['wall_seconds']:.1f} s",
                  flush=True)
        with lock:
            records[part.name] = record
            report["parts"] = [records[p.name] for p in parts if p.name in records]
            if part.name == "environment" and record["status"] == "passed":
                report["environment"] = record["figures"]
            report["summary"] = summary(records)
            report["wall_seconds"] = time.monotonic() - t0
            write_report(report, out, work)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for part in parts:
            futures[part.name] = pool.submit(run, part)
    for future in futures.values():
        future.result()  # a bug of this script itself surfaces here
    return report


def parse_args(argv=None) -> argparse.Namespace:
    table = "\n".join(f"  {name:<15} {budget:>4} s  {about}" for name, budget, about in PLAN)
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"parts, in order, with their budgets on the GPU (--smoke: {SMOKE_BUDGET} s each; "
               f"at most {TOTAL_BUDGET} s in all):\n{table}\n\n" + __doc__.split("\n\n", 2)[2])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--smoke", action="store_true", help="every part on tiny sizes")
    parser.add_argument("--out", default="results/gpu_check", help="gpu_check.json, .md, logs.tar.gz")
    parser.add_argument("--work", default=None, help="the parts' own outputs (default OUT/parts)")
    parser.add_argument("--data-dir", default=os.environ.get("PYRO_LVM_DATA") or str(ROOT / "data"),
                        help="folder for MNIST/raw (default $PYRO_LVM_DATA, else ./data)")
    parser.add_argument("--mnist-gz", default=None, help="a folder of *-ubyte.gz files to take "
                        "MNIST from when --data-dir lacks it (benchmarks/environment.py)")
    parser.add_argument("--only", nargs="+", choices=[name for name, _, _ in PLAN], default=None,
                        metavar="PART",
                        help="run these parts only (e.g. to rerun the failed ones)")
    parser.add_argument("--jobs", type=int, default=None, help="parts run at once (default 1; "
                        "--smoke: 2, since only the paths matter there, not the times)")
    parser.add_argument("--preload", action=argparse.BooleanOptionalAction, default=None,
                        help="fork the parts from one interpreter with torch, pyro and pyro_lvm "
                             "imported (default: on for --device cpu, off for cuda)")
    args = parser.parse_args(argv)
    args.work = args.work or str(Path(args.out) / "parts")
    args.data_dir, args.work = str(Path(args.data_dir).resolve()), str(Path(args.work).resolve())
    if args.mnist_gz:
        args.mnist_gz = str(Path(args.mnist_gz).resolve())
    return args


def main(argv=None, parts=None) -> dict:
    """Run the check; returns what gpu_check.json holds.

    :param parts: the parts to run instead of :func:`plan`'s (the tests inject failing and
        hanging ones); the command line still says where to write and how to launch."""
    args = parse_args(argv)
    if parts is None:
        parts = [p for p in plan(args) if args.only is None or p.name in args.only]
    preload = args.device == "cpu" if args.preload is None else args.preload
    jobs = args.jobs or (2 if args.smoke else 1)
    report = run_check(parts, args.out, args.work, Preloaded() if preload else run_fresh, jobs,
                       header={"device": args.device, "smoke": args.smoke, "preload": preload})
    print(markdown(report).split("\n## ")[0])
    return report


if __name__ == "__main__":
    main()
