"""Writing results: ``metrics.json`` as strict JSON.

Python's ``json`` writes NaN and infinity as the bare words ``NaN``/``Infinity``, which
are not JSON (RFC 8259) and break strict readers (``jq``, browsers, ``json.loads`` of
other languages).  :func:`write_metrics` writes ``null`` for them and says which and why.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

__all__ = ["write_metrics"]


def _plain(value, where: str, nulls: dict):
    """``value`` with tensors/numpy scalars as Python numbers and non-finite floats as None
    (recorded in ``nulls`` under their path, e.g. ``test_elbo[3]``)."""
    if isinstance(value, dict):
        return {k: _plain(v, f"{where}.{k}" if where else str(k), nulls) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]", nulls) for i, v in enumerate(value)]
    if isinstance(value, torch.Tensor) or type(value).__module__ == "numpy":
        return _plain(value.tolist(), where, nulls)  # tensors, numpy arrays and scalars
    if isinstance(value, float) and not math.isfinite(value):
        nulls[where] = repr(value)
        return None
    return value


def write_metrics(path, metrics: dict) -> dict:
    """Write ``metrics`` to ``path`` as strict JSON (indented), NaN/inf written as ``null``.

    When any value was not finite, the file gets a key ``"null_values"``:
    ``{"reason": ..., "values": {"<key path>": "nan" | "inf" | "-inf"}}``, so a reader
    can tell a diverged estimate from a missing one.

    :param metrics: a dict of numbers, strings, lists, dicts, tensors or numpy scalars.
    :returns: what was written (after the replacement).
    :raises ValueError: ``metrics`` is not a dict, or holds values JSON cannot represent.
    """
    if not isinstance(metrics, dict):
        raise ValueError(f"metrics must be a dict, got {type(metrics).__name__}")
    nulls: dict = {}
    plain = _plain(metrics, "", nulls)
    if nulls:
        plain["null_values"] = {
            "reason": "these values were NaN or infinite (a diverged run or estimate); JSON has "
                      "no such numbers, so they are written as null",
            "values": nulls,
        }
    try:
        text = json.dumps(plain, indent=2, allow_nan=False)
    except TypeError as e:
        raise ValueError(f"metrics hold a value JSON cannot represent: {e}") from e
    Path(path).write_text(text + "\n")
    return plain
