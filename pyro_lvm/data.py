"""Data: MNIST as whole-split tensors and binarization.

Every model in the library trains on one tensor per split held on the
training device and batched by permuted index (see :func:`pyro_lvm.train.fit`);
there is no per-sample ``DataLoader`` in the hot loop.
"""

from __future__ import annotations

import hashlib
import os
import urllib.parse
import urllib.request
from pathlib import Path

import torch

from .checks import check_data, check_generator, check_size, check_values

__all__ = [
    "DATA_ENV",
    "MIRROR_ENV",
    "MNIST_COUNTS",
    "MNIST_SHA256",
    "MNIST_SHAPE",
    "binarize",
    "download_mnist",
    "fixed_binarization",
    "load_mnist",
    "resolve_device",
    "verify_mnist_files",
]

#: Environment variable naming the folder that holds ``MNIST/raw/*-ubyte``.
DATA_ENV = "PYRO_LVM_DATA"
#: Height and width of one MNIST image; images are flattened to 784 pixels.
MNIST_SHAPE = (28, 28)
#: Environment variable naming a mirror (base URL) tried before torchvision's list.
MIRROR_ENV = "PYRO_LVM_MNIST_MIRROR"
#: Images (and labels) in the official files of each split.
MNIST_COUNTS = {"train": 60000, "t10k": 10000}
#: SHA-256 of the four uncompressed MNIST files.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` into CUDA when available, else CPU; pass others through.

    :raises ValueError: not a device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a
        ``torch.device``), or a CUDA device this machine does not have.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:  # "gpu", 3.5, None
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:<index>' or a "
                         f"torch.device, got {device!r}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was asked for, but torch.cuda.is_available() "
                         "is False")
    if device.type == "cuda" and device.index is not None and \
            device.index >= torch.cuda.device_count():
        raise ValueError(f"device {device} was asked for, but this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s)")
    return device


def _candidate_roots(root) -> list[Path]:
    if root is not None:
        return [Path(root)]
    roots = []
    if os.environ.get(DATA_ENV):
        roots.append(Path(os.environ[DATA_ENV]))
    roots.append(Path("data"))
    return roots


#: Magic numbers of the idx files (LeCun's MNIST page): unsigned bytes, 3 or 1 dimensions.
_IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}


def _read_idx_header(path: Path, kind: str) -> int:
    """Check one idx file's header and length; returns its number of items."""
    ndim = 3 if kind == "images" else 1
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"MNIST {kind} file {path} is empty")
    with open(path, "rb") as f:
        header = f.read(4 * (1 + ndim))
    if len(header) < 4 * (1 + ndim):
        raise ValueError(f"MNIST {kind} file {path} is truncated: {size} bytes, shorter "
                         f"than its {4 * (1 + ndim)}-byte header")
    magic, *dims = (int.from_bytes(header[i:i + 4], "big") for i in range(0, len(header), 4))
    if magic != _IDX_MAGIC[kind]:
        raise ValueError(f"MNIST {kind} file {path} has magic number {magic:#010x}, expected "
                         f"{_IDX_MAGIC[kind]:#010x}: not an idx {kind} file")
    if kind == "images" and tuple(dims[1:]) != MNIST_SHAPE:
        raise ValueError(f"MNIST images file {path} holds images of {dims[1]}x{dims[2]} "
                         f"pixels, expected {MNIST_SHAPE[0]}x{MNIST_SHAPE[1]}")
    expected = len(header) + dims[0] * (MNIST_SHAPE[0] * MNIST_SHAPE[1] if kind == "images" else 1)
    if size != expected:
        state = "truncated" if size < expected else "longer than its header says"
        raise ValueError(f"MNIST {kind} file {path} is {state}: its header announces {dims[0]} "
                         f"{kind} ({expected} bytes), the file has {size} bytes")
    return dims[0]


#: SHA-256 of files already read in this process, keyed by (path, size, mtime): loading
#: the same unchanged files again does not hash their 55 MB again.
_DIGESTS: dict = {}


def _sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def _check_sha256(path: Path) -> None:
    digest, expected = _sha256(path), MNIST_SHA256[path.name]
    if digest != expected:
        raise ValueError(
            f"MNIST file {path} is damaged or is not the official MNIST: its SHA-256 is "
            f"{digest}, the official {path.name} has {expected}. Delete it and get the file "
            "again (load_mnist(download=True) downloads and checks all four; or copy them "
            "from a copy whose SHA-256 matches pyro_lvm.data.MNIST_SHA256)")


def verify_mnist_files(raw, train: bool = True) -> bool:
    """Check the split's two idx files in ``raw`` (``<folder>/MNIST/raw``) before they
    are read: magic numbers, image size, lengths, that images and labels agree, and, for
    files announcing the official counts (:data:`MNIST_COUNTS`), their SHA-256 against
    :data:`MNIST_SHA256` (computed once per file, size and modification time in a
    process).  Files of the idx format announcing other counts are read as a subset of
    MNIST (a test fixture, a smoke run), without the checksum.

    torchvision reads them without these checks (a bad magic number is a bare
    ``AssertionError``, a truncated file is reported as not found, altered bytes are
    read as pixels).

    :returns: False when the files are absent (for the caller to report), else True.
    :raises ValueError: a damaged file or one that is not the official MNIST, named, or
        image and label counts that differ.
    """
    prefix = "train" if train else "t10k"
    paths = {"images": Path(raw) / f"{prefix}-images-idx3-ubyte",
             "labels": Path(raw) / f"{prefix}-labels-idx1-ubyte"}
    if not all(p.is_file() for p in paths.values()):
        return False
    counts = {kind: _read_idx_header(path, kind) for kind, path in paths.items()}
    if counts["images"] != counts["labels"]:
        raise ValueError(f"MNIST files disagree: {paths['images']} holds {counts['images']} "
                         f"images but {paths['labels']} holds {counts['labels']} labels "
                         "(files from different splits?)")
    if counts["images"] == MNIST_COUNTS[prefix]:  # after the headers: cheaper causes first
        for path in paths.values():
            _check_sha256(path)
    return True


def load_mnist(root=None, train: bool = True, device="cpu", download: bool = False):
    """Load one MNIST split as flat tensors, read with ``torchvision.datasets.MNIST``.

    The folder is ``root`` if given, else ``$PYRO_LVM_DATA``, else ``./data``;
    each must hold the torchvision layout ``MNIST/raw/*-ubyte``.

    :param root: folder holding ``MNIST/raw``, or None for the defaults above.
    :param bool train: the 60,000-image training split, else the 10,000 test images.
    :param device: where the tensors are put (``"cpu"``, ``"cuda"``, ``"auto"``).
    :param bool download: when the files are in none of the folders, download
        them into the first (``root``, else ``$PYRO_LVM_DATA``, else ``./data``) with
        :func:`download_mnist` (needs a network; off by default so that nothing
        downloads at test time).
    :returns: ``(images, labels)``: float32 ``(N, 784)`` grey levels in [0, 1]
        and int64 ``(N,)`` digit labels.
    :raises FileNotFoundError: the files are in none of the folders; the message
        names every path looked at and how to get the files.
    :raises ValueError: a bad ``root``, ``train``, ``device`` or ``download``; a file is
        damaged (empty, truncated, bad magic number, SHA-256 not the official one) or the
        image and label files disagree (:func:`verify_mnist_files`).
    """
    from torchvision.datasets import MNIST

    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise ValueError(f"root must be a folder (a str or path) or None, got {type(root).__name__}")
    for name, value in (("train", train), ("download", download)):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")
    device = resolve_device(device)
    looked, errors = [], []
    for path in _candidate_roots(root):
        looked.append(str((path / "MNIST" / "raw").resolve()))
        verify_mnist_files(path / "MNIST" / "raw", train)
        try:
            dataset = MNIST(str(path), train=train, download=False)
        except RuntimeError as err:  # torchvision: "Dataset not found" / download failed
            errors.append(f"{path}: {err}")
            continue
        except OSError as err:  # a download that could not reach the network
            errors.append(f"{path}: {err}")
            continue
        images = dataset.data.reshape(len(dataset.data), -1).to(torch.float32) / 255.0
        return images.to(device), dataset.targets.to(torch.int64).to(device)
    if download:
        cache = _candidate_roots(root)[0]
        try:
            download_mnist(cache)
            return load_mnist(cache, train=train, device=device)
        except OSError as err:  # offline, or no mirror had good files
            errors.append(f"download into {cache}: {err}")
    split = "train-*-idx?-ubyte" if train else "t10k-*-idx?-ubyte"
    raise FileNotFoundError(
        f"MNIST files ({split}) not found. Looked in: {', '.join(looked)}. "
        f"Put the four *-ubyte files under <folder>/MNIST/raw and pass root=<folder> "
        f"or set the environment variable {DATA_ENV}=<folder>; on a machine with "
        f"internet, load_mnist(download=True) fetches them with torchvision."
        + (f" Details: {'; '.join(errors)}" if errors else "")
    )


def download_mnist(root, mirrors=None) -> Path:
    """Download the four MNIST files into ``root/MNIST/raw`` (the torchvision layout) and
    check each uncompressed file against :data:`MNIST_SHA256`.

    Fetching and unpacking is torchvision's (``download_and_extract_archive``).  Its own
    check is an MD5 of the ``.gz`` file, which differs between mirrors that compress the same
    data differently, so the check here is of the uncompressed content instead.

    :param root: the cache folder; files already there with the right checksum are kept.
    :param mirrors: base URLs tried in order for each ``<name>.gz`` (``http(s)://``, or
        ``file://`` for a local folder); default ``$PYRO_LVM_MNIST_MIRROR`` (if set) then
        ``torchvision.datasets.MNIST.mirrors``.
    :returns: the ``MNIST/raw`` folder.
    :raises OSError: a file that no mirror delivered, or delivered with another checksum
        (the bad file and any partial download are removed).
    """
    from torchvision.datasets import MNIST

    if mirrors is None:
        mirrors = [os.environ[MIRROR_ENV]] if os.environ.get(MIRROR_ENV) else []
        mirrors += MNIST.mirrors
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, sha256 in MNIST_SHA256.items():
        target = raw / name
        if target.is_file() and _sha256(target) == sha256:
            continue
        failures = []
        for mirror in mirrors:
            url = f"{mirror.rstrip('/')}/{name}.gz"
            try:
                _fetch(url, raw, f"{name}.gz")
            except (OSError, RuntimeError, EOFError) as err:  # unreachable, HTTP error, bad archive
                for partial in (raw / f"{name}.gz", target):
                    partial.unlink(missing_ok=True)
                failures.append(f"{url}: {err}")
                continue
            if _sha256(target) == sha256:
                break
            target.unlink()
            failures.append(f"{url}: SHA-256 of {name} is not {sha256}")
        else:
            raise OSError(f"could not download {name}: {'; '.join(failures) or 'no mirror'}")
    return raw


def _fetch(url: str, raw: Path, filename: str) -> None:
    """torchvision's ``download_and_extract_archive``; a ``file://`` URL is extracted from
    where it lies (torchvision's downloader reads an HTTP response's length, which a local
    file's response lacks)."""
    from torchvision.datasets.utils import download_and_extract_archive, extract_archive

    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "file":
        download_and_extract_archive(url, str(raw), filename=filename, remove_finished=True)
        return
    source = Path(urllib.request.url2pathname(parsed.path))
    if not source.is_file():
        raise OSError(f"no file {source}")
    extract_archive(str(source), str(raw))  # into raw/<filename without .gz>


def binarize(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Dynamic binarization: one Bernoulli draw per pixel with p = the grey level.

    Called on each batch as it is drawn, so every epoch sees a fresh binary
    image (Salakhutdinov & Murray 2008, the convention of Burda et al. 2016).  As a
    per-batch step it costs no extra pass on the CPU, where ``torch.bernoulli`` checks
    the range itself (its error becomes the ``ValueError`` below); on other devices the
    values are checked as model bodies check theirs, when
    :func:`~pyro_lvm.checks.check_values` says so (a device sync).

    :param images: ``(..., D)`` grey levels in [0, 1], a floating tensor.
    :param generator: a ``torch.Generator`` on ``images.device``; None uses the
        global RNG seeded by ``pyro.set_rng_seed``.
    :returns: a float tensor of zeros and ones, same shape, dtype and device.
    :raises ValueError: ``images`` not a non-empty floating tensor or with values outside
        [0, 1] or NaN, or ``generator`` not a generator on its device.
    """
    check_data(images, "images", ndim=None, values=False)
    if images.device.type != "cpu" and check_values():
        check_data(images, "images", ndim=None, low=0.0, high=1.0)
    check_generator(generator, images.device)
    try:
        return torch.bernoulli(images, generator=generator)
    except RuntimeError:  # the CPU kernel's range check: "Expected p_in >= 0 && ..."
        check_data(images, "images", ndim=None, low=0.0, high=1.0)  # says what is wrong
        raise


def fixed_binarization(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """One fixed-seed binarization, drawn on the CPU so that it is the same on every
    device and every run; used for the evaluation split so numbers compare.

    :param images: ``(..., D)`` grey levels in [0, 1], a floating tensor.
    :param int seed: the generator's seed, an integer >= 0.
    :returns: zeros and ones, same shape, dtype and device as ``images``.
    :raises ValueError: ``images`` not a non-empty floating tensor of finite values in
        [0, 1], or ``seed`` not an integer >= 0.
    """
    check_data(images, "images", ndim=None, low=0.0, high=1.0)
    generator = torch.Generator().manual_seed(check_size("seed", seed, 0))
    return torch.bernoulli(images.detach().cpu(), generator=generator).to(images.device)
