"""load_mnist(download=True) against a local mirror: an http.server in a thread serving
gzipped copies of the shared MNIST files, with torchvision's mirror list pointed at it."""

import functools
import gzip
import hashlib
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from torchvision.datasets import MNIST

from pyro_lvm.data import DATA_ENV, download_mnist, load_mnist

SHARED = Path(os.environ[DATA_ENV])


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """Serve ``tmp_path/www`` on a free local port; MNIST.mirrors lists only it."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(type("Quiet", (SimpleHTTPRequestHandler,),
                                     {"log_message": lambda *a: None}), directory=str(www))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(MNIST, "mirrors", [f"http://127.0.0.1:{server.server_address[1]}/"])
    monkeypatch.delenv("PYRO_LVM_MNIST_MIRROR", raising=False)
    yield www
    server.shutdown()
    server.server_close()


def _sha256sums():
    lines = (SHARED / "MNIST" / "SHA256SUMS").read_text().split("\n")
    return {Path(name).name: digest for digest, name in (line.split() for line in lines if line)}


def test_download_fills_an_empty_folder_and_checksums_match(mirror, tmp_path):
    for f in (SHARED / "MNIST" / "raw").iterdir():
        (mirror / f"{f.name}.gz").write_bytes(gzip.compress(f.read_bytes(), compresslevel=1))
    cache = tmp_path / "cache"
    images, labels = load_mnist(cache, train=False, download=True)
    sums = _sha256sums()
    raw = cache / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(sums)  # the .gz files are removed
    for name, digest in sums.items():
        assert hashlib.sha256((raw / name).read_bytes()).hexdigest() == digest
    expected = load_mnist(SHARED, train=False)
    assert torch.equal(images, expected[0]) and torch.equal(labels, expected[1])


def test_bad_or_missing_mirror_files_give_a_clear_error(mirror, tmp_path):
    # A mirror holding a wrong file under the right name, and none of the others.
    (mirror / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"not mnist"))
    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match="Put the four") as err:
        load_mnist(cache, train=True, download=True)
    assert "SHA-256 of train-images-idx3-ubyte" in str(err.value)
    assert not (cache / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()  # removed


def test_offline_error_says_where_to_put_the_files(tmp_path, monkeypatch):
    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])  # the discard port: refused
    monkeypatch.delenv("PYRO_LVM_MNIST_MIRROR", raising=False)
    with pytest.raises(FileNotFoundError, match="MNIST/raw and pass root") as err:
        load_mnist(tmp_path / "cache", download=True)
    assert "could not download" in str(err.value)


def test_a_file_mirror_is_read_from_its_folder_and_a_bad_archive_leaves_nothing(tmp_path):
    raw = tmp_path / "cache" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):  # cached: not fetched
        (raw / name).write_bytes((SHARED / "MNIST" / "raw" / name).read_bytes())
    src = tmp_path / "local mirror"
    src.mkdir()
    (src / "t10k-images-idx3-ubyte.gz").write_bytes(b"not a gzip file")
    with pytest.raises(OSError, match="could not download t10k-images-idx3-ubyte: file://"):
        download_mnist(tmp_path / "cache", mirrors=[src.as_uri()])
    assert sorted(p.name for p in raw.iterdir()) == ["train-images-idx3-ubyte",
                                                     "train-labels-idx1-ubyte"]
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (src / f"{name}.gz").write_bytes(
            gzip.compress((SHARED / "MNIST" / "raw" / name).read_bytes(), compresslevel=1))
    assert download_mnist(tmp_path / "cache", mirrors=[src.as_uri()]) == raw
    sums = _sha256sums()
    assert sorted(p.name for p in raw.iterdir()) == sorted(sums)
    for name, digest in sums.items():
        assert hashlib.sha256((raw / name).read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in src.iterdir()) == ["t10k-images-idx3-ubyte.gz",
                                                     "t10k-labels-idx1-ubyte.gz"]
