"""argparse `type=` helpers that check ranges, so a bad value is a usage error (exit 2) with the
option's name, not a traceback from deep inside the engine."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_range(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{value} is out of range ({_bounds(lo, hi)})")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def float_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False
                ) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value != value or (lo is not None and (value <= lo if lo_open else value < lo)) \
                or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{value:g} is out of range ({_bounds(lo, hi, lo_open)})")
        return value

    parse.__name__ = "number"
    return parse


def _bounds(lo, hi, lo_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f"{lo} {'<' if lo_open else '<='} value <= {hi}"
    if lo is not None:
        return f"must be {'>' if lo_open else '>='} {lo}"
    return f"must be <= {hi}"


positive_int = int_range(1)
non_negative_int = int_range(0)
