"""The checkpoint file of fit (pyro_lvm/checkpoint.py): header and checksum, refusal of
damaged or foreign files naming the file, non-finite parameters, resume differences, RNG state."""

import os

import pytest
import torch

import pyro

from pyro_lvm.checkpoint import (CHECKPOINT_MAGIC, FIT_KEYS, check_resumable, load_checkpoint,
                                 resume_differences, rng_state, save_checkpoint, set_rng_state)
from pyro_lvm.data import binarize
from pyro_lvm.models import VAE
from pyro_lvm.train import fit


def _vae(name="v"):
    torch.manual_seed(0)
    return VAE(z_dim=4, hidden_dims=(16,), name=name)


def _x(n=32):
    return torch.rand(n, 784, generator=torch.Generator().manual_seed(1))


def _fit(vae, x, **kwargs):
    kwargs = {"num_epochs": 1, "batch_size": 32, "lr": 1e-2, "transform": binarize, "progress": False,
              **kwargs}
    return fit(vae.model, vae.guide, x, **kwargs)


def _saved(tmp_path):
    x, path = _x(32), tmp_path / "ckpt.pt"
    _fit(_vae(), x, checkpoint=path)
    return path


def test_checkpoint_write_is_atomic(tmp_path):
    path = tmp_path / "state.pt"
    save_checkpoint(path, {"epoch": 1})
    with pytest.raises(Exception):
        save_checkpoint(path, {"epoch": 2, "unpicklable": lambda: None})
    assert load_checkpoint(path)["epoch"] == 1  # the old file is intact
    assert os.listdir(tmp_path) == ["state.pt"]  # and the half-written temp file is gone


def test_the_file_is_the_header_a_checksum_line_and_the_torch_payload(tmp_path):
    import hashlib

    path = tmp_path / "state.pt"
    save_checkpoint(path, {"epoch": 3, "w": torch.arange(4.0)})
    raw = path.read_bytes()
    assert raw.startswith(CHECKPOINT_MAGIC)
    line, payload = raw[len(CHECKPOINT_MAGIC):].split(b"\n", 1)
    assert line == b"sha256 " + hashlib.sha256(payload).hexdigest().encode()
    state = load_checkpoint(path)
    assert state["epoch"] == 3 and torch.equal(state["w"], torch.arange(4.0))


def _flip_64_bytes(raw):
    raw = bytearray(raw)
    for i in range(len(raw) // 2, len(raw) // 2 + 64):
        raw[i] ^= 0xFF
    return bytes(raw)


@pytest.mark.parametrize("damage, words", [
    (lambda raw: b"", "empty"),
    (lambda raw: b"\x80\x02garbage" * 100, "not a pyro-lvm checkpoint"),
    (lambda raw: raw[: len(raw) // 2], "do not match"),  # truncated
    (_flip_64_bytes, "do not match"),
    (lambda raw: raw.split(b"\n", 2)[2], "not a pyro-lvm checkpoint"),  # a bare torch.save file
])
def test_damaged_checkpoints_are_refused_naming_the_file(tmp_path, damage, words):
    # Before: raw UnpicklingError/EOFError/zip errors, and flipped bytes loaded silently.
    path = _saved(tmp_path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=words) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)
    vae = _vae()
    with pytest.raises(ValueError, match=words):
        _fit(vae, _x(32), num_epochs=2, checkpoint=path, resume=True)


def test_a_malformed_checksum_line_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "state.pt"
    path.write_bytes(CHECKPOINT_MAGIC + b"md5 0123\n" + b"payload")
    with pytest.raises(ValueError, match="checksum line is missing or malformed") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_a_missing_checkpoint_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "absent.pt")


def test_a_checkpoint_with_non_finite_parameters_is_refused(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"param_store": {"params": {"w": torch.tensor([1.0, float("nan")])},
                                           "constraints": {}}})
    with pytest.raises(ValueError, match=r"non-finite parameters: \['w'\]"):
        load_checkpoint(path)


def test_a_checkpoint_file_that_fit_did_not_write_cannot_be_resumed(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"epoch": 1})
    with pytest.raises(ValueError, match=r"not one of fit \(it lacks \['history', 'optim'"):
        check_resumable(load_checkpoint(path), path, {}, {})
    with pytest.raises(ValueError, match="not one of fit"):
        _fit(_vae(), _x(32), checkpoint=path, resume=True)


def test_resume_differences_list_config_changes_and_parameter_shapes():
    state = {"config": {"lr": 0.01, "z_dim": 4},
             "param_store": {"params": {"a": torch.zeros(2, 3), "b": torch.zeros(5)}}}
    assert resume_differences(state, {"lr": 0.01, "z_dim": 4}, {"a": (2, 3), "b": (5,)}) == []
    diffs = resume_differences(state, {"lr": 0.02, "hidden": [8]}, {"a": (3, 3), "c": (1,)})
    assert diffs == ["hidden: checkpoint '(absent)', now [8]", "lr: checkpoint 0.01, now 0.02",
                     "z_dim: checkpoint 4, now '(absent)'",
                     "parameter a: checkpoint shape (2, 3), now (3, 3)",
                     "parameter c (1,) is not in the checkpoint", diffs[-1]]
    assert "the checkpoint holds ['b'] instead" in diffs[-1]
    full = {**state, **{k: None for k in FIT_KEYS - set(state)}}
    with pytest.raises(ValueError, match="made by another run:\n  hidden: "):
        check_resumable(full, "ckpt.pt", {"lr": 0.02, "hidden": [8], "z_dim": 4}, {"a": (2, 3)})


def test_rng_state_round_trip_continues_the_same_stream_per_rank():
    pyro.set_rng_seed(3)
    state = {"rng": rng_state(torch.device("cpu"))}
    expected = torch.rand(5)
    torch.rand(100)  # move on
    set_rng_state(state, torch.device("cpu"))
    assert torch.equal(torch.rand(5), expected)
    pyro.set_rng_seed(4)
    other = rng_state(torch.device("cpu"))
    after_other = torch.rand(5)
    state["rng_per_rank"] = [state["rng"], other]
    set_rng_state(state, torch.device("cpu"), rank=1)  # rank 1 continues its own stream
    assert torch.equal(torch.rand(5), after_other)
    set_rng_state(state, torch.device("cpu"), rank=2)  # a rank it has no stream for: rank 0's
    assert torch.equal(torch.rand(5), expected)
