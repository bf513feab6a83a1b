"""Exceptions: one class per NRT_STATUS the send/receive API returns, each carrying the code."""

from __future__ import annotations

from typing import Optional

# NRT_STATUS values (include/nrt/nrt_status.h; fixed by the vendor ABI).
SUCCESS = 0
FAILURE = 1
INVALID = 2
INVALID_HANDLE = 3
RESOURCE = 4
TIMEOUT = 5
HW_ERROR = 6
QUEUE_FULL = 7
FAIL_HOST_MEM_ALLOC = 11
UNINITIALIZED = 13
CLOSED = 14

_NAMES = {
    0: "NRT_SUCCESS",
    1: "NRT_FAILURE",
    2: "NRT_INVALID",
    3: "NRT_INVALID_HANDLE",
    4: "NRT_RESOURCE",
    5: "NRT_TIMEOUT",
    6: "NRT_HW_ERROR",
    7: "NRT_QUEUE_FULL",
    9: "NRT_LOAD_NOT_ENOUGH_NC",
    10: "NRT_UNSUPPORTED_NEFF_VERSION",
    11: "NRT_FAIL_HOST_MEM_ALLOC",
    13: "NRT_UNINITIALIZED",
    14: "NRT_CLOSED",
    15: "NRT_QUEUE_EMPTY",
}


def status_name(status: int) -> str:
    """The NRT_STATUS name of a code ("NRT_TIMEOUT" for 5), "NRT_UNKNOWN_STATUS" otherwise."""
    return _NAMES.get(status, "NRT_UNKNOWN_STATUS")


class NrtError(Exception):
    """A call into libnrt returned a status other than NRT_SUCCESS.

    Attributes: ``status`` (the NRT_STATUS code), ``status_name`` ("NRT_TIMEOUT"), ``call``
    (the C function that returned it) and ``detail`` (what the package was doing).
    """

    status: int = -1

    def __init__(self, status: int, call: str, detail: str = "") -> None:
        self.status = status
        self.status_name = status_name(status)
        self.call = call
        self.detail = detail
        msg = f"{call} returned {self.status_name} ({status})"
        super().__init__(f"{msg}: {detail}" if detail else msg)

    def __reduce__(self):  # type: ignore[no-untyped-def]  # picklable across processes
        return (error_for, (self.status, self.call, self.detail))


class NrtFailure(NrtError):
    """NRT_FAILURE (1): the peer went away, a receive was shorter than its send, the communicator failed."""

    status = FAILURE


class NrtInvalid(NrtError):
    """NRT_INVALID (2): an argument the library refused (lnc out of range, set-up not finished, ...)."""

    status = INVALID


class NrtInvalidHandle(NrtError):
    """NRT_INVALID_HANDLE (3): a stale handle (its lnc was closed, the request already reported)."""

    status = INVALID_HANDLE


class NrtResource(NrtError):
    """NRT_RESOURCE (4): a limit (128 communicators per lnc, 128 pending requests) or a port taken."""

    status = RESOURCE


class NrtTimeout(NrtError, TimeoutError):
    """NRT_TIMEOUT (5): the library's connect or request deadline passed (the communicator failed)."""

    status = TIMEOUT


class NrtHostMemAlloc(NrtError, MemoryError):
    """NRT_FAIL_HOST_MEM_ALLOC (11): tensor memory could not be mapped."""

    status = FAIL_HOST_MEM_ALLOC


class NrtUninitialized(NrtError):
    """NRT_UNINITIALIZED (13): the lnc (or the runtime) is not initialised."""

    status = UNINITIALIZED


class NrtClosed(NrtError):
    """NRT_CLOSED (14): the request's lnc was being closed at the same time."""

    status = CLOSED


_CLASSES: dict[int, type[NrtError]] = {
    c.status: c
    for c in (NrtFailure, NrtInvalid, NrtInvalidHandle, NrtResource, NrtTimeout, NrtHostMemAlloc, NrtUninitialized, NrtClosed)
}


def error_for(status: int, call: str, detail: str = "") -> NrtError:
    """The exception for `status` (its own class where there is one, else NrtError)."""
    return _CLASSES.get(status, NrtError)(status, call, detail)


def check(status: int, call: str, detail: str = "") -> None:
    """Raises the exception for `status` unless it is NRT_SUCCESS."""
    if status != SUCCESS:
        raise error_for(status, call, detail)


class WaitTimeout(TimeoutError):
    """A wait with a ``timeout`` ran out on the caller's side; the request (or communicator) is
    still pending and may be waited on again. Not a library status: the library's own deadlines
    raise NrtTimeout."""

    def __init__(self, what: str, timeout: Optional[float], pending: int = 1) -> None:
        self.timeout = timeout
        self.pending = pending
        super().__init__(f"{what}: not done within {timeout} s ({pending} still pending)")
