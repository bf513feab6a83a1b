"""Shared by the tests and their peer process: byte patterns and array specs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# (dtype, shape, order): several dtypes and shapes, one zero-size, one Fortran-ordered.
SPECS: list[tuple[str, tuple[int, ...], str]] = [
    ("uint8", (1000003,), "C"),
    ("float32", (64, 128), "C"),
    ("int64", (3, 5, 7), "C"),
    ("float64", (1 << 20,), "C"),  # 8 MiB
    ("complex64", (33, 17), "C"),
    ("bool", (4097,), "C"),
    ("float16", (2, 3, 4, 5), "C"),
    ("int16", (0,), "C"),
    ("float32", (31, 7), "F"),
    ("uint16", (3 << 20,), "C"),  # 6 MiB
]


def pattern(nbytes: int, seed: int) -> np.ndarray:
    """nbytes of a byte pattern that differs per seed and repeats with period 251 (not 256)."""
    return ((np.arange(nbytes, dtype=np.uint64) * 131 + seed * 7 + 1) % 251).astype(np.uint8)


def nbytes_of(spec: Any) -> int:
    dtype, shape, _ = spec
    return math.prod(shape) * np.dtype(dtype).itemsize


def filled(spec: Any, seed: int, alloc: Any = np.empty) -> np.ndarray:
    """An array of `spec` whose bytes are pattern(seed), allocated by `alloc(shape, dtype, order)`."""
    dtype, shape, order = spec
    a = alloc(shape, dtype=dtype, order=order)
    raw = a.reshape(-1, order="A").view(np.uint8) if a.size else np.empty(0, np.uint8)
    raw[...] = pattern(raw.size, seed)
    return a


def raw_bytes(a: np.ndarray) -> np.ndarray:
    """The array's bytes in memory order (C or Fortran contiguous)."""
    return a.reshape(-1, order="A").view(np.uint8) if a.size else np.empty(0, np.uint8)


def first_difference(got: np.ndarray, want: np.ndarray) -> str:
    if got.size != want.size:
        return f"sizes differ: {got.size} != {want.size}"
    bad = np.flatnonzero(got != want)
    if bad.size == 0:
        return ""
    i = int(bad[0])
    return f"{bad.size} bytes differ, first at {i}: got {got[i]:#04x}, want {want[i]:#04x}"
