"""Trained models that reload: ``model.save(path)`` and ``ModelClass.load(path, device=...)``.

A model file holds what rebuilds the module without the code that made it: the class, the
constructor arguments (recorded when the object was built), the library version, a format
version and the weights as a plain ``state_dict``.  Everything in it is a tensor, a number, a
string or a container of those, so ``torch.load(path, weights_only=True)`` reads it and loading
a file runs no pickled code.  Classes named in a file are imported only from ``pyro_lvm`` and
``torch``, or are the class ``load`` is called on: ``MyModel.load(path)`` rebuilds a user's own
``Saveable`` subclass ``MyModel`` (the caller has imported it), while any other class a file
names outside those packages is refused.

Why not ``torch.save(module)``: pickling the module ties the file to the source tree and needs
``weights_only=False``; a bare ``state_dict`` needs the architecture rebuilt by hand.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import io
from pathlib import Path

import torch
from torch import nn

from ..files import write_atomically

__all__ = ["FORMAT", "FORMAT_VERSION", "Saveable"]

#: The ``format`` field of every model file.
FORMAT = "pyro-lvm-model"
#: Bumped when the layout changes; files newer than this are refused with a clear error.
FORMAT_VERSION = 1
_IMPORTABLE = ("pyro_lvm.", "torch.")


def _class_path(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _import(path: str, what: str, own=None):
    """The class at ``path``: ``own`` (the class ``load`` is called on) when it is that class,
    else imported from ``pyro_lvm`` or ``torch`` only."""
    if own is not None and path == _class_path(own):
        return own
    module, _, name = path.rpartition(".")
    if not path.startswith(_IMPORTABLE):
        raise ValueError(f"the model file names {what} {path!r}, outside {_IMPORTABLE}; refused "
                         f"(a class of your own loads as {name}.load(path), called on that class)")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"the model file names {what} {path!r}, which this pyro-lvm lacks") from err


def _encode(value, where: str):
    if isinstance(value, Saveable):
        return {"__model__": value.spec()}
    if isinstance(value, type):
        return {"__class__": _class_path(value)}
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_encode(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, dict):
        return {str(k): _encode(v, f"{where}[{k!r}]") for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"cannot save constructor argument {where} of type {type(value).__name__}")


def _decode(value, own=None):
    if isinstance(value, dict) and set(value) == {"__model__"}:
        return _build(value["__model__"], own)
    if isinstance(value, dict) and set(value) == {"__class__"}:
        return _import(value["__class__"], "class", own)
    if isinstance(value, (tuple, list)):
        return type(value)(_decode(v, own) for v in value)
    if isinstance(value, dict):
        return {k: _decode(v, own) for k, v in value.items()}
    return value


def _build(spec: dict, own=None) -> "Saveable":
    cls = _import(spec["class"], "model class", own)
    if not (isinstance(cls, type) and issubclass(cls, Saveable)):
        raise ValueError(f"{spec['class']} is not a pyro-lvm model class")
    return cls(**_decode(spec["args"], own))


class Saveable(nn.Module):
    """Base of every model and guide module: records its constructor arguments and adds
    :meth:`save` / :meth:`load`.  Subclasses need nothing more."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            return
        init, signature = cls.__init__, inspect.signature(cls.__init__)

        @functools.wraps(init)
        def recording_init(self, *args, **kw):
            init(self, *args, **kw)
            bound = signature.bind(self, *args, **kw)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            arguments.pop(next(iter(signature.parameters)))  # self
            # The outermost __init__ finishes last, so the concrete class's arguments win.
            self.__dict__["_init_args"] = arguments

        cls.__init__ = recording_init

    def spec(self) -> dict:
        """``{"class": ..., "args": ...}``: what rebuilds this module, weights aside."""
        return {"class": _class_path(type(self)),
                "args": _encode(self.__dict__["_init_args"], _class_path(type(self)))}

    def save(self, path) -> None:
        """Write the class, constructor arguments, library and format versions and the
        weights (``state_dict``, on the CPU) to ``path``, atomically.

        :raises ValueError: a constructor argument that cannot be stored (not a tensor, number,
            string, class, model module or container of those).
        :raises OSError: the file could not be written (:func:`~pyro_lvm.files.write_atomically`).
        """
        from .. import __version__

        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        payload = {"format": FORMAT, "format_version": FORMAT_VERSION,
                   "library_version": __version__, "model": self.spec(), "state_dict": state}
        # A plain torch.save file (checkpoints carry a header; this must stay loadable by
        # torch.load alone), written as checkpoints are: a crash leaves the old one.
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        write_atomically(path, buffer.getvalue())

    @classmethod
    def load(cls, path, device="cpu"):
        """Rebuild the module saved at ``path`` on ``device``.  ``Saveable.load`` loads any
        model class of the library; ``VAE.load`` also checks that the file holds a VAE; a
        user's own subclass ``MyModel`` loads by ``MyModel.load(path)`` (the file's class must
        then be ``MyModel`` itself: still read with ``weights_only=True``).

        :returns: the module with the saved weights, in training mode.
        :raises FileNotFoundError: no file at ``path``.
        :raises ValueError: not a readable pyro-lvm model file (corrupt, truncated, or e.g. a
            ``checkpoint.pt``), a newer format, another model class, a class outside
            ``pyro_lvm``/``torch`` other than ``cls``, or weights that do not fit the
            architecture built from the saved arguments.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no model file at {path.resolve()}")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for damaged files
            raise ValueError(f"{path} is not a readable pyro-lvm model file (corrupt or "
                             f"truncated?; checkpoints are read by pyro_lvm.train."
                             f"load_checkpoint): {type(err).__name__}: {err}") from err
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError(f"{path} is not a pyro-lvm model file (no format {FORMAT!r})")
        if payload["format_version"] > FORMAT_VERSION:
            raise ValueError(f"{path} was written by pyro-lvm {payload['library_version']} in "
                             f"model format {payload['format_version']}; this pyro-lvm reads "
                             f"formats up to {FORMAT_VERSION}: upgrade pyro-lvm")
        saved = payload["model"]["class"]
        module = _build(payload["model"], cls if cls is not Saveable else None)
        if not isinstance(module, cls):
            raise ValueError(f"{path} holds a {saved}, not a {_class_path(cls)}")
        try:
            # assign: the saved tensors themselves, so their dtype (e.g. float64 PPCA) is kept
            module.load_state_dict(payload["state_dict"], assign=True)
        except RuntimeError as err:
            raise ValueError(f"the weights in {path} do not fit the {saved} built from its saved "
                             f"arguments: {err}") from err
        return module.to(device)
