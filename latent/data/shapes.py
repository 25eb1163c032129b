"""The one rounding rule for padded sizes: batch widths, length buckets, a batch's step axis and
a vocabulary table all round up to a multiple, so a run compiles for a few shapes, not one per
length."""

from __future__ import annotations


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that is >= n (n itself when it is one already)."""
    if multiple < 1:
        raise ValueError(f"round_up: multiple must be >= 1; got {multiple}")
    return -(-n // multiple) * multiple
