"""Argument types for the command lines of ``examples/``: a bad value exits at parse time.

``argparse`` calls each ``type`` on the string given; an :class:`argparse.ArgumentTypeError`
becomes its usage error (exit status 2) naming the flag, before any data are loaded or
any training starts.  The library's own checks (:func:`pyro_lvm.checks.check_size`) would
catch the same values later, but only after minutes of work.
"""

from __future__ import annotations

import argparse
import math

__all__ = ["int_at_least", "positive_int", "nonnegative_int", "positive_float"]


def int_at_least(minimum: int):
    """A type accepting integers ``>= minimum`` (``"2.5"``, ``"0"`` below 1, ``"nan"`` refused)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"int_at_least_{minimum}"
    return parse


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)


def positive_float(text: str) -> float:
    """A finite float > 0 (``"0"``, ``"-1"``, ``"inf"``, ``"nan"`` refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return value

