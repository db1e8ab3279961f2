"""Argument checks: the one home of the library's input checks.

The contract, followed by every module:

* **Once, at the door.** Every public entry point (``fit``, ``evaluate.*``,
  ``compare_losses``, ``testing.*``, ``diagnostics.*``, the model and guide
  constructors, the closed forms of ``models.gmm``/``models.ppca``, the data helpers)
  checks all its arguments before any work: type, dtype, shape, emptiness, NaN/inf,
  range and integer counts.  A bad argument raises a ``ValueError`` (a missing file a
  ``FileNotFoundError``) whose message names the argument, what was expected and what
  was got, so nothing reaches torch or Pyro whose messages name neither.
* **A model declares what it takes.** A model or guide class states its data once, in a
  method ``check_inputs(*data, values=...)``; the doors of ``fit``, ``evaluate`` and the
  comparisons call it through :func:`check_model_inputs` with the values included
  (:func:`check_model_data` does both steps, reading each tensor's values once), then
  run their work inside :func:`checked_values`.
* **Bodies check only what is free.** ``model``/``guide`` bodies run at every step; they
  check shapes and dtypes (free) always, and values (a device sync) only when
  :func:`check_values` says so: under Pyro's validation switch, and never inside a door
  that has already checked the same data.
* **Degenerate inputs name their cause** (constant data given to PPCA, covariances that
  overflow in float32, importance weights that are all zero, MNIST files whose bytes
  differ from their known SHA-256): the function that meets them says what they are,
  never returns a silently wrong number.

scikit-learn's ``sklearn/utils/validation.py`` plays this part for arrays; torch and Pyro
have no equivalent for argument checks (Pyro's validation checks distribution
parameters, inside the model, at every step), hence this module.
"""

from __future__ import annotations

import contextvars
import math
import numbers
from contextlib import contextmanager

import torch

from pyro.infer.util import is_validation_enabled

__all__ = [
    "check_callable",
    "check_choice",
    "check_data",
    "check_generator",
    "check_model_data",
    "check_model_inputs",
    "check_positive",
    "check_size",
    "check_sizes",
    "check_tensors",
    "check_values",
    "checked_values",
]

# True inside a door that has checked its data's values (see checked_values).
_VALUES_CHECKED = contextvars.ContextVar("pyro_lvm_values_checked", default=False)


def check_data(
    x: torch.Tensor,
    name: str = "x",
    *,
    ndim: int | None = 2,
    size: int | None = None,
    low: float | None = None,
    high: float | None = None,
    min_rows: int = 1,
    dtype: torch.dtype | None = None,
    values: bool = True,
) -> torch.Tensor:
    """Reject a floating data tensor a function cannot take, with a message saying what
    was expected.

    :param x: a tensor, usually ``(N, D)``.
    :param name: how the message names it.
    :param ndim: required number of dimensions, or None for any.
    :param size: required size of the last dimension, or None for any.
    :param low, high: allowed closed range of the values, or None.
    :param min_rows: least number of rows (data points).
    :param dtype: the floating dtype required (that of the model's parameters), or
        None for any floating dtype.
    :param bool values: also check the values (finite, in range); these checks read
        the data and cost a host sync, so per-step callers skip them.
    :returns: ``x`` unchanged.
    :raises ValueError: not a floating tensor (or not ``dtype``; the message says
        what to convert to), empty, wrong rank or size, too few rows, NaN/inf, or
        values out of range.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x) or dtype is not None and x.dtype != dtype:
        want = dtype if dtype is not None else torch.get_default_dtype()
        kind = "" if torch.is_floating_point(x) else "a floating tensor of "
        raise ValueError(f"{name} must be {kind}dtype {want}, got dtype {x.dtype}; "
                         f"convert it with {name}.to({want})")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if x.dim() >= 1 and x.shape[0] < min_rows:
        raise ValueError(f"{name} must have at least {min_rows} rows, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty, got shape {tuple(x.shape)}")
    if size is not None and x.shape[-1] != size:
        raise ValueError(
            f"{name} must have {size} columns (last dimension), got shape {tuple(x.shape)}"
        )
    if not values:
        return x
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf values")
    if low is not None and bool((x < low).any()) or high is not None and bool((x > high).any()):
        raise ValueError(
            f"{name} must lie in [{low}, {high}], got values in "
            f"[{x.min().item():.4g}, {x.max().item():.4g}]"
        )
    return x


def check_size(name: str, value, minimum: int = 1) -> int:
    """Reject a size (a count of epochs, particles, rows, ...) that is not an integer
    ``>= minimum``: floats such as 2.5 (or even 2.0: a float size is a mistake
    somewhere, as in scikit-learn), bools, negatives.

    :returns: ``value`` as a Python int.
    :raises ValueError: naming ``name``, what was expected and what was got.
    """
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        want = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {want}, got {value!r}")
    return int(value)


def check_sizes(name: str, value, *, allow_empty: bool = True) -> tuple[int, ...]:
    """Reject layer widths (``hidden_dims``, ``z_dims``) that are not a sequence (tuple or
    list) of positive integers: a bare integer (``400`` for ``(400,)``), a string, a float
    width; an empty one unless ``allow_empty``.

    :returns: the widths as a tuple of Python ints.
    :raises ValueError: naming ``name`` (or the element ``name[i]``) and what was got.
    """
    if not isinstance(value, (tuple, list)) or not (value or allow_empty):
        kind = "sequence" if allow_empty else "non-empty sequence"
        raise ValueError(f"{name} must be a {kind} (tuple or list) of positive integers, "
                         f"got {value!r}")
    return tuple(check_size(f"{name}[{i}]", v) for i, v in enumerate(value))


def check_generator(generator, device: torch.device | None = None):
    """Reject a ``generator`` that is neither None nor a ``torch.Generator`` (on the type of
    ``device`` when given: torch draws on a device only from a generator there).

    :raises ValueError: naming ``generator``, what was expected and what was got.
    """
    if generator is None:
        return generator
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if device is not None and generator.device.type != torch.device(device).type:
        raise ValueError(f"generator must be a torch.Generator on {torch.device(device).type}, "
                         f"got one on {generator.device}")
    return generator


def check_positive(name: str, value, *, allow_zero: bool = False) -> float:
    """Reject a real parameter (a step size, a scale, a tolerance) that is not a finite
    number ``> 0`` (``>= 0`` with ``allow_zero``): NaN, inf, negatives, strings, bools.

    :returns: ``value`` as a Python float.
    :raises ValueError: naming ``name`` and what was got.
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) \
        and (value >= 0 if allow_zero else value > 0)
    if not ok:
        want = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ValueError(f"{name} must be {want}, got {value!r}")
    return float(value)


def check_choice(name: str, value, choices) -> str:
    """Reject an option that is not one of ``choices``.

    :raises ValueError: naming ``name``, the choices and what was got.
    """
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_callable(name: str, value, *, optional: bool = False):
    """Reject a ``model``, ``guide``, ``transform`` or ``callback`` that cannot be called
    (``None`` is allowed when ``optional``).

    :raises ValueError: naming ``name`` and the type got.
    """
    if value is None and optional:
        return value
    if not callable(value):
        raise ValueError(f"{name} must be callable, got {type(value).__name__}")
    return value


def check_tensors(data, name: str = "data", *, values: bool = True) -> tuple:
    """The data of a model/guide pair as a tuple of tensors sharing their first (data)
    dimension N: one tensor ``(N, ...)`` or a tuple of them (e.g. ``(x, mask)`` or
    ``(x, labels)``).

    Floating tensors are checked by :func:`check_data` (values when ``values``), integer
    and boolean ones for emptiness.  A list is refused: a list of per-point tensors would
    otherwise be read as many data tensors.

    :returns: the tuple of tensors.
    :raises ValueError: not a tensor or a non-empty tuple of tensors, a tensor without a
        data dimension (0-dim), tensors of different N, empty tensors, NaN/inf.
    """
    if isinstance(data, list):
        raise ValueError(f"{name} must be a tensor (N, ...) or a tuple of tensors sharing N, got "
                         f"a list; pass torch.stack({name}) for one tensor of rows or "
                         f"tuple({name}) for several data tensors")
    tensors = (data,) if isinstance(data, torch.Tensor) else data
    if not isinstance(tensors, tuple) or not tensors:
        raise ValueError(f"{name} must be a tensor (N, ...) or a non-empty tuple of tensors "
                         f"sharing N, got {type(data).__name__}")
    labels = [name] if len(tensors) == 1 else [f"{name}[{i}]" for i in range(len(tensors))]
    for label, t in zip(labels, tensors):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{label} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() < 1:
            raise ValueError(f"{label} must have a leading data dimension (N, ...), got a "
                             "0-dim tensor")
    shapes = [tuple(t.shape) for t in tensors]
    if any(s[0] != shapes[0][0] for s in shapes):
        raise ValueError(f"the tensors of {name} must share their first dimension N, got {shapes}")
    for label, t in zip(labels, tensors):
        if torch.is_floating_point(t):
            check_data(t, label, ndim=None, values=values)
        elif t.numel() == 0:
            raise ValueError(f"{label} is empty, got shape {tuple(t.shape)}")
    return tensors


def _declared_check(model):
    """The ``check_inputs`` of the module ``model`` is a method of, or None."""
    check = getattr(getattr(model, "__self__", None), "check_inputs", None)
    return check if callable(check) else None


def check_model_inputs(model, tensors: tuple) -> None:
    """Check ``tensors`` against what ``model`` declares it takes, values included: the
    ``check_inputs(*tensors, values=True)`` of the module ``model`` is a method of, if it
    has one.  Plain functions declare nothing.

    :raises ValueError: as the module's ``check_inputs``.
    """
    check = _declared_check(model)
    if check is not None:
        check(*tensors, values=True)


def check_model_data(model, data, name: str = "data") -> tuple:
    """The door's check of the data given to a model/guide pair: :func:`check_tensors`
    for their structure, then :func:`check_model_inputs`; each tensor's values are read
    once, by the model's ``check_inputs`` when it declares one, else by
    :func:`check_tensors`.

    :returns: the tuple of tensors.
    :raises ValueError: as :func:`check_tensors` and the model's ``check_inputs``.
    """
    declared = _declared_check(model) is not None
    tensors = check_tensors(data, name, values=not declared)
    try:
        check_model_inputs(model, tensors)
    except ValueError as err:  # the model names its own argument: say which one it was given
        if str(err).startswith(name):
            raise
        raise ValueError(f"{name}: {err}") from err
    return tensors


@contextmanager
def checked_values():
    """The block runs on data whose values a door has checked: model and guide bodies
    inside it skip their value checks (:func:`check_values` is False)."""
    token = _VALUES_CHECKED.set(True)
    try:
        yield
    finally:
        _VALUES_CHECKED.reset(token)


def check_values() -> bool:
    """Whether a model or guide body checks its data's values (NaN/inf, range) when
    called: under Pyro's validation switch (``pyro.enable_validation``), except inside
    :func:`checked_values`.  Shapes and dtypes are checked on every call (free)."""
    return is_validation_enabled() and not _VALUES_CHECKED.get()
