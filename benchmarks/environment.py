"""The machine the benchmarks run on, as one JSON line, with the MNIST files put in place.

    python benchmarks/environment.py [--data-dir DIR] [--mnist-gz DIR] [--tiny-copy DIR]

Makes sure that ``--data-dir/MNIST/raw`` holds the four MNIST files with the right SHA-256
through :func:`pyro_lvm.data.download_mnist`; with ``--mnist-gz`` the ``*-ubyte.gz`` files of
a local folder are its mirror, served on a free local port (a machine without internet gets
MNIST this way, through the library's own checked download path).  ``--tiny-copy DIR`` also
writes the first 512 training and 200 test images as idx files under ``DIR/MNIST/raw``,
a small MNIST that every example and benchmark reads like the real one (the smoke run of
``benchmarks/gpu_check.py``).  Then prints the versions of Python, torch (and the CUDA and
cuDNN it was built with), pyro, torchvision, arviz, numpy, scikit-learn and pytest, the
accelerator torch sees (name, compute capability, memory) and the driver ``nvidia-smi``
reports.
"""

import argparse
import functools
import json
import os
import platform
import shutil
import subprocess
import threading
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path


@contextmanager
def local_mirror(folder):
    """Serve ``folder`` over HTTP on 127.0.0.1 (a free port) while the block runs; yields its URL."""
    quiet = type("Quiet", (SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(quiet, directory=str(folder)))
    # torchvision opens each URL once to follow redirects and drops it: a reset, not an error.
    server.handle_error = lambda request, address: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def fetch_mnist(root, gz_folder=None) -> str:
    """Check (and where missing, download) the MNIST files under ``root``; returns their folder."""
    from pyro_lvm.data import download_mnist

    if gz_folder is None:
        return str(download_mnist(root))  # $PYRO_LVM_MNIST_MIRROR, then torchvision's mirrors
    if not sorted(Path(gz_folder).glob("*-ubyte.gz")):
        raise FileNotFoundError(f"--mnist-gz {gz_folder}: no *-ubyte.gz files there")
    with local_mirror(gz_folder) as url:
        return str(download_mnist(root, mirrors=[url]))


#: Images per split in a --tiny-copy: enough for the smallest batches and evaluations.
TINY = {"train": 512, "t10k": 200}


def write_tiny_copy(raw, root, sizes=TINY) -> str:
    """The first ``sizes[split]`` images and labels of each split in ``raw`` as idx files under
    ``root/MNIST/raw`` (the header's count rewritten; :func:`pyro_lvm.data.load_mnist` reads
    any count); returns that folder."""
    from pyro_lvm.data import MNIST_SHAPE

    out = Path(root) / "MNIST" / "raw"
    out.mkdir(parents=True, exist_ok=True)
    for prefix, n in sizes.items():
        for kind, ndim, width in (("images", 3, MNIST_SHAPE[0] * MNIST_SHAPE[1]), ("labels", 1, 1)):
            name = f"{prefix}-{kind}-idx{ndim}-ubyte"
            with open(Path(raw) / name, "rb") as f:
                header, body = f.read(4 * (1 + ndim)), f.read(n * width)
            (out / name).write_bytes(header[:4] + n.to_bytes(4, "big") + header[8:] + body)
    return str(out)


def driver() -> dict:
    """Name, driver version and memory of each GPU as ``nvidia-smi`` reports them (none: {})."""
    if shutil.which("nvidia-smi") is None:
        return {}
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    try:
        lines = subprocess.run(query, capture_output=True, text=True, timeout=10).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired) as err:  # the versions still count
        return {"driver": None, "nvidia_smi_error": f"{type(err).__name__}: {err}"}
    rows = [[cell.strip() for cell in line.split(",")] for line in lines if line.strip()]
    return {"nvidia_smi": [dict(zip(("name", "driver", "memory"), row)) for row in rows],
            "driver": rows[0][1] if rows else None}


#: The packages whose installed versions are reported: key -> distribution name (as pip has it).
PACKAGES = {"pyro": "pyro-ppl", "torchvision": "torchvision", "arviz": "arviz", "numpy": "numpy",
            "scikit_learn": "scikit-learn", "pytest": "pytest"}


def versions() -> dict:
    """Python, torch with its CUDA and cuDNN, the device torch sees, and the installed version
    of each of :data:`PACKAGES` (None: not installed), read without importing them."""
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "cpu_count": os.cpu_count(), "cuda_available": torch.cuda.is_available()}
    for key, name in PACKAGES.items():
        try:
            info[key] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[key] = None
    if info["cuda_available"]:
        props = torch.cuda.get_device_properties(0)
        info.update(device_name=props.name, device_count=torch.cuda.device_count(),
                    capability=f"{props.major}.{props.minor}",
                    device_memory_gib=round(props.total_memory / 2**30, 1))
    return info


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("PYRO_LVM_DATA") or "data",
                        help="folder for MNIST/raw (default $PYRO_LVM_DATA, else ./data)")
    parser.add_argument("--mnist-gz", default=None,
                        help="a folder of *-ubyte.gz files to take MNIST from")
    parser.add_argument("--tiny-copy", default=None, help="also write a small MNIST under this folder")
    args = parser.parse_args(argv)
    info = {"mnist": fetch_mnist(args.data_dir, args.mnist_gz)}  # first: every other part needs it
    if args.tiny_copy:
        info["mnist_tiny"] = write_tiny_copy(info["mnist"], args.tiny_copy)
    info.update(versions())
    info.update(driver())
    print(json.dumps(info))
    return info


if __name__ == "__main__":
    main()
