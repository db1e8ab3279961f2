"""benchmarks/gpu_check.py on the CPU: the smoke run of every part, and its runner on injected
parts that fail or hang (benchmarks/environment.py's MNIST-from-.gz path too)."""

import gzip
import hashlib
import json
import os
import tarfile
import time
from pathlib import Path

import pytest

from pyro_lvm.data import DATA_ENV, MNIST_SHA256

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SHARED_RAW = Path(os.environ[DATA_ENV]) / "MNIST" / "raw"


@pytest.fixture
def bench(monkeypatch):
    """The benchmarks folder importable (also by the interpreter --preload forks from)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import environment
    import gpu_check

    return gpu_check, environment


def gone(pid, within=5.0) -> bool:
    """Whether process ``pid`` has ended (a zombie counts) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_smoke_run_records_every_part_with_its_figures(bench, tmp_path):
    gpu_check, _ = bench
    report = gpu_check.main(["--device", "cpu", "--smoke", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["parts"] == report["parts"]
    assert [p["name"] for p in saved["parts"]] == [name for name, _, _ in gpu_check.PLAN]
    failed = {p["name"]: (p["status"], p.get("error"), p.get("log_tail")) for p in saved["parts"]
              if p["status"] != "passed"}
    assert not failed
    figures = {p["name"]: p["figures"] for p in saved["parts"]}
    assert figures["environment"]["torch"] == saved["environment"]["torch"]
    cuda_tests = figures["cuda_tests"]
    assert cuda_tests["tests"] >= 2  # found in test_cuda.py and test_dlgm.py
    assert cuda_tests["passed"] + cuda_tests["skipped"] == cuda_tests["tests"]  # skipped without CUDA
    assert figures["demo"]["epochs"] == 1 and figures["demo"]["world_size"] == 1
    assert figures["demo_torchrun"]["world_size"] == 1 and figures["demo_torchrun"]["backend"] == "gloo"
    # torchrun with one process runs the same seeded run: the same test ELBO to round-off.
    assert figures["demo_torchrun"]["test_elbo"] == pytest.approx(figures["demo"]["test_elbo"],
                                                                   abs=1e-3)
    assert "pyro_lvm VAE, SVI + Trace_ELBO" in figures["vae_step"]["steps"]
    assert {"iwae K=2", "dreg K=2", "vimco K=2"} <= set(figures["loss_step"]["steps"])
    assert set(figures["iwae_table"]) == set(gpu_check.IWAE_ROWS)
    assert figures["log_likelihood"]["model"].endswith("demo/model.pt")
    # The benchmark scored the demo's model: K=2 estimates on the same 200 images differ by
    # Monte Carlo noise (per image a few nats, so well under 1 nat in the mean), whereas an
    # untrained VAE scores about 784 log 2 = 543 nats, more than 20 nats away from this one.
    assert abs(saved["summary"]["log_px_benchmark_minus_demo"]) < 5
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert all(f"| {name} | passed |" in markdown for name, _, _ in gpu_check.PLAN)
    with tarfile.open(tmp_path / "logs.tar.gz") as tar:
        assert {f"{name}/log.txt" for name, _, _ in gpu_check.PLAN} <= set(tar.getnames())


def test_a_failing_part_is_recorded_and_the_rest_still_run(bench, tmp_path):
    gpu_check, _ = bench
    Part, read_json = gpu_check.Part, lambda folder, log: gpu_check.last_json_line(log)
    parts = [Part("first", 30, ["python", "-c", "print('fine')"]),
             Part("exits_3", 30, ["sh", "-c", "echo boom >&2; exit 3"]),
             Part("no_figures", 30, ["python", "-c", "print('no JSON here')"], figures=read_json),
             Part("last", 30, ["python", "-c", "print('{\"x\": 1}')"], figures=read_json)]
    report = gpu_check.main(["--device", "cpu", "--no-preload", "--out", str(tmp_path)], parts=parts)
    first, exits_3, no_figures, last = report["parts"]
    assert [p["status"] for p in report["parts"]] == ["passed", "failed", "failed", "passed"]
    assert exits_3["exit_code"] == 3 and "boom" in exits_3["log_tail"]
    assert "no JSON line" in no_figures["error"] and "no JSON here" in no_figures["log_tail"]
    assert last["figures"] == {"x": 1}
    assert json.loads((tmp_path / "gpu_check.json").read_text())["parts"] == report["parts"]
    assert "| exits_3 | failed |" in (tmp_path / "gpu_check.md").read_text()


@pytest.mark.parametrize("launch", ["--no-preload", "--preload"])
def test_a_part_past_its_budget_is_stopped_with_its_children(bench, tmp_path, launch):
    gpu_check, _ = bench
    pid_file = tmp_path / "grandchild.pid"
    hang = ("import subprocess, time; p = subprocess.Popen(['sleep', '60']); "
            f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    parts = [gpu_check.Part("hangs", 1.5, ["python", "-c", hang]),
             gpu_check.Part("after", 30, ["python", "-c", "pass"])]
    t0 = time.monotonic()
    report = gpu_check.main(["--device", "cpu", launch, "--out", str(tmp_path)], parts=parts)
    hangs, after = report["parts"]
    assert hangs["status"] == "timeout" and hangs["exit_code"] is None
    assert 1.5 <= hangs["wall_seconds"] < 1.5 + 5  # SIGTERM ends it at once; 5 s is the grace
    assert after["status"] == "passed"
    assert gone(int(pid_file.read_text()))  # the whole process group went
    assert time.monotonic() - t0 < 60


def test_environment_takes_mnist_from_gz_files_and_writes_a_tiny_copy(bench, tmp_path):
    _, environment = bench
    raw, gz = tmp_path / "data" / "MNIST" / "raw", tmp_path / "gz"
    raw.mkdir(parents=True)
    gz.mkdir()
    for name in MNIST_SHA256:  # the training files in place, the test files only as .gz
        if name.startswith("train"):
            (raw / name).symlink_to(SHARED_RAW / name)
        else:
            (gz / f"{name}.gz").write_bytes(gzip.compress((SHARED_RAW / name).read_bytes(), 1))
    assert environment.fetch_mnist(tmp_path / "data", gz) == str(raw)
    for name, digest in MNIST_SHA256.items():
        assert hashlib.sha256((raw / name).read_bytes()).hexdigest() == digest
    tiny = Path(environment.write_tiny_copy(raw, tmp_path / "tiny"))
    images = (tiny / "t10k-images-idx3-ubyte").read_bytes()
    assert int.from_bytes(images[4:8], "big") == 200 and len(images) == 16 + 200 * 784
    assert images[16:] == (raw / "t10k-images-idx3-ubyte").read_bytes()[16:16 + 200 * 784]
    with pytest.raises(FileNotFoundError, match="no \\*-ubyte.gz files"):
        environment.fetch_mnist(tmp_path / "elsewhere", tmp_path / "tiny")
