"""The atomic writer (pyro_lvm/files.py): whole files or none, temporaries of dead processes
removed, a full disk named as such with the previous file kept."""

import errno
import os

import pytest
import torch

from pyro_lvm.checkpoint import load_checkpoint, save_checkpoint
from pyro_lvm.files import write_atomically


def test_write_atomically_writes_the_chunks_in_order_and_replaces_the_file(tmp_path):
    path = tmp_path / "sub" / "out.bin"  # the folder is made
    write_atomically(path, b"first")
    write_atomically(path, b"abc", b"", b"def")
    assert path.read_bytes() == b"abcdef"
    assert [p.name for p in path.parent.iterdir()] == ["out.bin"]  # no temporary left


def _dead_pid():
    pid = 2**22 - 1
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path):
    path = tmp_path / "ckpt.pt"
    stale = tmp_path / f".ckpt.pt.tmp{_dead_pid()}"
    alive = tmp_path / f".ckpt.pt.tmp{os.getppid()}"  # a live writer's file stays
    stale.write_bytes(b"half a checkpoint")
    alive.write_bytes(b"being written")
    save_checkpoint(path, {"epoch": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ckpt.pt", alive.name])


class _FullDisk:
    """A file that takes 1000 bytes, then fails as a full disk does."""

    def __init__(self, f):
        self.f, self.written = f, 0

    def write(self, data):
        self.written += len(data)
        if self.written > 1000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_a_full_disk_says_so_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    # Before: torch reported "unexpected pos" (its zip writer's view of the failed write).
    import pyro_lvm.files

    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.zeros(1000)})
    monkeypatch.setattr(pyro_lvm.files, "open", lambda *a, **k: _FullDisk(open(*a, **k)), raising=False)
    with pytest.raises(OSError, match="No space left on device") as err:
        save_checkpoint(path, {"epoch": 2, "w": torch.ones(1000)})
    assert err.value.errno == errno.ENOSPC and str(path) in str(err.value)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]
