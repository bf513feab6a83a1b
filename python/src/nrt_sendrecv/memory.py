"""Memory the library allocates (``nrt_tensor_allocate``), seen as memoryviews and numpy arrays.

A send or receive of memory from here names the library's own tensor (with an offset), no
``nrt_tensor_attach_buffer``. Between processes of one host the shared-memory transport then
reads a sender's tensor of 64 KiB or more through a mapping of its memfd, which is faster than
reading attached memory of another process (``process_vm_readv``); see docs/python.md. The memory
is zero-filled, page-aligned, and freed when the last array or view of it is gone (a request in
flight keeps it).
"""

from __future__ import annotations

import bisect
import ctypes
import math
import threading
import weakref
from typing import TYPE_CHECKING, Any, Literal, Optional, Sequence, Union

from . import _lib
from .errors import check

if TYPE_CHECKING:
    import numpy

_PLACEMENT_HOST = 1


class _Region:
    __slots__ = ("start", "end", "handle", "live", "__weakref__")

    def __init__(self, start: int, end: int, handle: int) -> None:
        self.start, self.end, self.handle, self.live = start, end, handle, True


_lock = threading.RLock()
_starts: list[int] = []
_regions: list[_Region] = []


def _free(region: _Region) -> None:
    # Runs when the last view is gone (possibly inside the garbage collector): only flips the
    # flag and frees the tensor; the registry drops dead regions under its lock later.
    region.live = False
    h = ctypes.c_void_p(region.handle)
    _lib.lib().nrt_tensor_free(ctypes.byref(h))


def _prune() -> None:
    if any(not r.live for r in _regions):
        keep = [r for r in _regions if r.live]
        _regions[:] = keep
        _starts[:] = [r.start for r in keep]


def lookup(address: int, nbytes: int) -> Optional[tuple[int, int]]:
    """(tensor handle, offset) when [address, address + nbytes) lies in memory from here."""
    if not _regions:
        return None
    with _lock:
        i = bisect.bisect_right(_starts, address) - 1
        while i >= 0:
            r = _regions[i]
            if r.live:  # live regions never overlap: the nearest live one below decides
                if address + nbytes <= r.end:
                    return r.handle, address - r.start
                return None
            i -= 1
    return None


def live_regions() -> int:
    """How many allocations from here are still alive (for tests and leak checks)."""
    with _lock:
        return sum(1 for r in _regions if r.live)


def alloc(nbytes: int, name: str = "nrt_sendrecv") -> memoryview:
    """A writable, zero-filled memoryview (format "B") of `nbytes` bytes of library memory."""
    if nbytes < 0:
        raise ValueError(f"nrt_sendrecv.alloc: negative size {nbytes}")
    if nbytes == 0:
        return memoryview(bytearray())
    lib = _lib.lib()
    t = ctypes.c_void_p()
    check(lib.nrt_tensor_allocate(_PLACEMENT_HOST, 0, nbytes, name.encode(), ctypes.byref(t)), "nrt_tensor_allocate", f"{nbytes} bytes")
    va = lib.nrt_tensor_get_va(t)
    if not va:
        h = ctypes.c_void_p(t.value)
        lib.nrt_tensor_free(ctypes.byref(h))
        raise MemoryError(f"nrt_sendrecv.alloc: the library's tensor of {nbytes} bytes has no address")
    assert t.value is not None
    region = _Region(va, va + nbytes, t.value)
    buf = (ctypes.c_char * nbytes).from_address(va)
    buf._nrt_region = region  # type: ignore[attr-defined]  # noqa: SLF001 - keeps the bookkeeping with the memory
    # Not at exit: arrays may still be in use while the interpreter shuts down, and the process
    # ends anyway.
    weakref.finalize(buf, _free, region).atexit = False
    with _lock:
        _prune()
        i = bisect.bisect_right(_starts, va)
        _starts.insert(i, va)
        _regions.insert(i, region)
    return memoryview(buf).cast("B")


ShapeLike = Union[int, Sequence[int]]


def empty(shape: ShapeLike, dtype: Any = "uint8", order: Literal["C", "F"] = "C") -> "numpy.ndarray":
    """A numpy array in library memory (zero-filled, so also ``zeros``). Needs numpy."""
    import numpy as np

    dt = np.dtype(dtype)
    dims = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
    count = math.prod(dims)
    if order not in ("C", "F"):
        raise ValueError(f"nrt_sendrecv.empty: order must be 'C' or 'F', not {order!r}")
    if count == 0:
        return np.zeros(dims, dtype=dt, order=order)
    flat: numpy.ndarray = np.frombuffer(alloc(count * dt.itemsize), dtype=dt)
    return flat.reshape(dims, order=order)


def empty_like(a: Any) -> "numpy.ndarray":
    """An array in library memory with the shape, dtype and (C or Fortran) order of `a`."""
    order: Literal["C", "F"] = "F" if getattr(a, "flags", None) is not None and a.flags.f_contiguous and not a.flags.c_contiguous else "C"
    return empty(a.shape, a.dtype, order)


zeros = empty
