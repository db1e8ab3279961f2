"""The checkpoint file of :func:`pyro_lvm.train.fit`: its format, its verification on
reading, the checks that a resumed run is the run that wrote it, and the RNG state it keeps.

A checkpoint file is :data:`CHECKPOINT_MAGIC`, a line ``sha256 <hex digest of the
payload>`` and the ``torch.save`` payload, written with
:func:`~pyro_lvm.files.write_atomically`.  ``torch.save`` alone has neither a header nor a
checksum: a truncated or altered file loads as garbage or fails inside pickle, naming
neither the file nor the cause.  What ``fit`` saves (:data:`FIT_KEYS`):

* ``epoch``: the last completed epoch; ``history``: ``dataclasses.asdict`` of its History;
* ``param_store``: ``pyro.get_param_store().get_state()``; ``optim``: the optimizer's state;
* ``rng``: :func:`rng_state` of rank 0, and under ``torchrun`` ``rng_per_rank`` (every rank's);
* ``config``: the run's settings, compared on resume by :func:`check_resumable`.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch

import pyro.util

from .files import write_atomically

__all__ = ["CHECKPOINT_MAGIC", "FIT_KEYS", "check_resumable", "load_checkpoint",
           "resume_differences", "rng_state", "save_checkpoint", "set_rng_state"]

#: First line of every checkpoint file; the second is ``sha256 <hex digest of the payload>``.
CHECKPOINT_MAGIC = b"pyro-lvm checkpoint 1\n"

#: What :func:`~pyro_lvm.train.fit` saves and needs to resume.
FIT_KEYS = frozenset({"epoch", "param_store", "optim", "history", "rng"})


def save_checkpoint(path, state: dict) -> None:
    """Write ``state`` with :func:`~pyro_lvm.files.write_atomically`: :data:`CHECKPOINT_MAGIC`,
    a line ``sha256 <digest>`` and the ``torch.save`` payload.

    :raises OSError: as :func:`~pyro_lvm.files.write_atomically`.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    header = CHECKPOINT_MAGIC + b"sha256 " + hashlib.sha256(payload).hexdigest().encode() + b"\n"
    write_atomically(path, header, payload)


def _payload(path: Path) -> bytes:
    """The verified payload of the checkpoint file at ``path`` (header and checksum)."""
    raw = path.read_bytes()
    if not raw:
        raise ValueError(f"the checkpoint {path} is empty")
    if not raw.startswith(CHECKPOINT_MAGIC):
        raise ValueError(f"{path} is not a pyro-lvm checkpoint: its first line is not "
                         f"{CHECKPOINT_MAGIC!r} (another file, an older format, or damaged)")
    line, sep, payload = raw[len(CHECKPOINT_MAGIC):].partition(b"\n")
    if not sep or not line.startswith(b"sha256 ") or len(line) != 71:
        raise ValueError(f"the checkpoint {path} is damaged: its checksum line is missing or malformed")
    if hashlib.sha256(payload).hexdigest().encode() != line[7:]:
        raise ValueError(f"the checkpoint {path} is damaged: its contents do not match the sha256 "
                         "checksum written with them (truncated or altered since)")
    return payload


def load_checkpoint(path, device="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (or :func:`~pyro_lvm.train.fit`),
    verify it and put its parameters on ``device``.

    :raises FileNotFoundError: no file at ``path``.
    :raises ValueError: naming the file, when it is empty, not a pyro-lvm checkpoint (no
        :data:`CHECKPOINT_MAGIC` header), truncated or altered (sha256 mismatch), unreadable,
        or holds non-finite parameters.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path.resolve()} to resume from")
    payload = _payload(path)
    try:
        # weights_only=False: the param store state holds constraint objects; the checksum
        # says the bytes are the ones save_checkpoint wrote.
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises pickle, zip and EOF errors of many kinds
        raise ValueError(f"the checkpoint {path} cannot be read: {type(e).__name__}: {e}") from e
    if isinstance(state, dict) and "param_store" in state:
        params = state["param_store"]["params"]
        bad = [k for k, v in params.items() if not torch.isfinite(v).all()]
        if bad:
            raise ValueError(f"the checkpoint {path} holds non-finite parameters: {bad}")
        state["param_store"]["params"] = {k: v.to(device) for k, v in params.items()}
    return state


def resume_differences(state: dict, config: dict, shapes: dict) -> list:
    """Every way the run asked for differs from the one that saved ``state``: each
    ``config`` entry that changed, and each parameter (``{name: shape}`` as the model and
    guide register them now) that the checkpoint lacks or holds in another shape.

    :returns: one line per difference; empty when the run may resume.
    """
    saved_config = state.get("config", {})
    saved = {k: tuple(v.shape) for k, v in state["param_store"]["params"].items()}
    diffs = [f"{key}: checkpoint {saved_config.get(key, '(absent)')!r}, now {config.get(key, '(absent)')!r}"
             for key in sorted(set(saved_config) | set(config), key=str)
             if saved_config.get(key, "(absent)") != config.get(key, "(absent)")]
    for name, shape in shapes.items():
        if name not in saved:
            diffs.append(f"parameter {name} {shape} is not in the checkpoint")
        elif saved[name] != shape:
            diffs.append(f"parameter {name}: checkpoint shape {saved[name]}, now {shape}")
    if any(name not in saved for name in shapes):
        diffs.append(f"the checkpoint holds {sorted(set(saved) - set(shapes))} instead (models are "
                     "named per instance, vae_0, vae_1, ...: build them in the same order, or pass name=)")
    return diffs


def check_resumable(state, path, config: dict, shapes: dict) -> None:
    """Refuse to resume from ``state`` (read from ``path``) unless ``fit`` wrote it
    (:data:`FIT_KEYS`) for this run: the same ``config`` and parameter shapes.

    :raises ValueError: naming ``path`` and what it lacks, or listing every
        :func:`resume_differences`.
    """
    if not isinstance(state, dict) or not FIT_KEYS <= set(state):
        raise ValueError(f"{path} is a checkpoint file but not one of fit (it lacks "
                         f"{sorted(FIT_KEYS - set(state if isinstance(state, dict) else ()))})")
    diffs = resume_differences(state, config, shapes)
    if diffs:
        raise ValueError(f"cannot resume from {path}: it was made by another run:\n  "
                         + "\n  ".join(diffs))


def rng_state(device: torch.device) -> dict:
    """This process's random state: Pyro's (Python, NumPy, torch CPU) and ``device``'s CUDA one."""
    state = {"pyro": pyro.util.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device, rank: int = 0) -> None:
    """Continue the random stream a checkpoint ``state`` saved for ``rank``: its entry of
    ``rng_per_rank``, or rank 0's ``rng`` for a rank it has none for (a run resumed on more
    processes, or a one-process checkpoint)."""
    rngs = state.get("rng_per_rank", [state["rng"]])
    rng = rngs[rank] if rank < len(rngs) else rngs[0]
    pyro.util.set_rng_state(rng["pyro"])
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], device)
