"""Writing files atomically: checkpoints (:mod:`pyro_lvm.checkpoint`) and model files
(:meth:`pyro_lvm.models.saving.Saveable.save`) go through :func:`write_atomically`.

Python and torch have no atomic writer (``torch.save`` writes in place, so a crash
mid-write leaves a truncated file where the last good one was).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_atomically"]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove_stale_temporaries(path: Path) -> None:
    """Remove ``.<name>.tmp<pid>`` files that processes killed mid-write left behind."""
    prefix = f".{path.name}.tmp"
    for tmp in path.parent.glob(prefix + "*"):
        pid = tmp.name[len(prefix):]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def write_atomically(path, *chunks: bytes) -> None:
    """Write ``chunks`` to ``path`` atomically: a temporary file in the same folder, flushed
    to disk (``fsync``), then renamed over ``path``, so a crash or a full disk mid-write
    leaves the previous file intact.  Temporary files of dead processes are removed first.

    :raises OSError: the file could not be written (e.g. "No space left on device"); the
        message names the file and says the previous one is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise OSError(e.errno, f"could not write {path}: {e.strerror or e}; the previous file "
                               "there (if any) is untouched") from e
    finally:
        tmp.unlink(missing_ok=True)
