"""nrt_sendrecv: Python over libnrt.so.1's asynchronous tensor send/receive (``nrt_async_sendrecv_*``).

::

    import numpy as np, nrt_sendrecv as nrt

    with nrt.Runtime() as rt, rt.lnc(0) as lnc:
        comm = lnc.connect("10.0.0.2", 1).wait_ready(timeout=30)
        comm.send(np.arange(1 << 20, dtype=np.float32)).wait(timeout=30)

Buffers are sent and received where they are (no copy); see docs/python.md for the rest.
"""

from __future__ import annotations

from . import _lib
from ._lib import LibraryNotFound
from .errors import (
    NrtClosed,
    NrtError,
    NrtFailure,
    NrtHostMemAlloc,
    NrtInvalid,
    NrtInvalidHandle,
    NrtResource,
    NrtTimeout,
    NrtUninitialized,
    WaitTimeout,
    status_name,
)
from .memory import alloc, empty, empty_like, zeros
from .runtime import (
    Communicator,
    Lnc,
    Request,
    Runtime,
    as_completed,
    max_communicators_per_lnc,
    max_pending_requests,
    wait_all,
)

__version__ = "0.1.0"

_lib.lib()  # find the library now: an import that succeeds has one (LibraryNotFound otherwise)


def library_path() -> str:
    """The libnrt.so.1 this package loaded."""
    return _lib.path()


def library_version() -> str:
    """The loaded library's version and description (``nrt_get_version``)."""
    import ctypes

    v = _lib.NrtVersion()
    st = _lib.lib().nrt_get_version(ctypes.byref(v), ctypes.sizeof(v))
    if st != 0:
        raise NrtError(st, "nrt_get_version")
    return f"{v.rt_major}.{v.rt_minor}.{v.rt_patch} ({v.rt_detail.decode(errors='replace')})"


__all__ = [
    "Communicator",
    "LibraryNotFound",
    "Lnc",
    "NrtClosed",
    "NrtError",
    "NrtFailure",
    "NrtHostMemAlloc",
    "NrtInvalid",
    "NrtInvalidHandle",
    "NrtResource",
    "NrtTimeout",
    "NrtUninitialized",
    "Request",
    "Runtime",
    "WaitTimeout",
    "alloc",
    "as_completed",
    "empty",
    "empty_like",
    "library_path",
    "library_version",
    "max_communicators_per_lnc",
    "max_pending_requests",
    "status_name",
    "wait_all",
    "zeros",
]
