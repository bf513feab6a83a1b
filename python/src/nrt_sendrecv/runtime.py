"""Runtime, logical cores, communicators and requests over libnrt.so.1's C API."""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import os
import threading
import time
from types import TracebackType
from typing import Any, Iterable, Iterator, Optional

from . import _buffer, _lib, memory
from .errors import (
    FAILURE,
    INVALID,
    INVALID_HANDLE,
    RESOURCE,
    SUCCESS,
    NrtError,
    NrtInvalidHandle,
    WaitTimeout,
    check,
    error_for,
)

FRAMEWORK_NO_FW = 1

# How waits poll (Request.wait, wait_all, as_completed): spin on test_request for SPIN_S, then
# give the CPU away (sched_yield) between polls. The library moves bytes on the polling thread,
# so a waiter that sleeps would slow the transfer; one that yields costs nothing when the CPU
# is free.
SPIN_S = 0.002
# asyncio: the longest sleep between polls of an awaited request (the first polls only yield to
# the event loop).
ASYNC_MAX_INTERVAL_S = 0.001


def _deadline(timeout: Optional[float]) -> Optional[float]:
    if timeout is None:
        return None
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0 or None, not {timeout}")
    return time.monotonic() + timeout


class _TensorPool:
    """Empty tensors (``nrt_tensor_allocate_empty``) that attached buffers are given to; reused."""

    MAX_KEPT = 1024

    def __init__(self) -> None:
        self._free: list[int] = []

    def attach(self, address: int, nbytes: int) -> int:
        lib = _lib.lib()
        try:
            h = self._free.pop()
        except IndexError:
            t = ctypes.c_void_p()
            check(lib.nrt_tensor_allocate_empty(b"nrt_sendrecv", ctypes.byref(t)), "nrt_tensor_allocate_empty")
            assert t.value is not None
            h = t.value
        st = lib.nrt_tensor_attach_buffer(h, address or None, nbytes)
        if st != SUCCESS:
            self.give_back(h)
            check(st, "nrt_tensor_attach_buffer", f"{nbytes} bytes at {address:#x}")
        return h

    def give_back(self, handle: int) -> None:
        if len(self._free) < self.MAX_KEPT:
            self._free.append(handle)
        else:
            h = ctypes.c_void_p(handle)
            _lib.lib().nrt_tensor_free(ctypes.byref(h))


_pool = _TensorPool()


class Request:
    """A posted send or receive. Keeps its buffer (exported, so alive and not resizable) until
    it completes, fails, or its lnc is closed.

    ``done()`` polls once; ``wait(timeout)`` returns the bytes moved (for a receive: the length
    of the matching send) or raises the request's NrtError; ``await request`` does the same
    without blocking the event loop. Any thread may poll; the first to see the end records it.
    """

    __slots__ = (
        "comm",
        "kind",
        "nbytes",
        "address",
        "memory",
        "_handle",
        "_export",
        "_attached",
        "_lock",
        "_finished",
        "_size",
        "_error",
        "_done_c",
        "_size_c",
        "_args",
        "__weakref__",
    )

    def __init__(self, comm: Communicator, kind: str, export: _buffer.Export, attached: Optional[int], handle: int, memory_kind: str) -> None:
        self.comm = comm
        self.kind = kind  # "send" or "recv"
        self.nbytes = export.nbytes  # bytes posted
        self.address = export.address  # where the bytes are: the caller's own memory, no copy
        self.memory = memory_kind  # "library" (nrt_sendrecv.empty/alloc) or "attached"
        self._handle = handle
        self._export: Optional[_buffer.Export] = export
        self._attached = attached
        self._lock = threading.Lock()
        self._finished = False
        self._size: Optional[int] = None
        self._error: Optional[NrtError] = None
        self._done_c = ctypes.c_bool(False)
        self._size_c = ctypes.c_size_t(0)
        self._args = (handle, ctypes.byref(self._done_c), ctypes.byref(self._size_c))

    def __repr__(self) -> str:
        state = "pending" if not self._finished else (f"failed {self._error.status_name}" if self._error else f"done {self._size} B")
        return f"<nrt_sendrecv.Request {self.kind} {self.nbytes} B on lnc {self.comm.lnc.id} {state}>"

    @property
    def buffer(self) -> Any:
        """The object posted (None once the request has ended and let it go)."""
        e = self._export
        return e.obj if e is not None else None

    @property
    def size(self) -> Optional[int]:
        """Bytes moved, once the request completed successfully; None before."""
        return self._size

    @property
    def error(self) -> Optional[NrtError]:
        """The request's error once it ended with one; None otherwise."""
        return self._error

    def _end(self, size: int, error: Optional[NrtError]) -> None:
        # Under self._lock. The library no longer touches the memory: give the buffer back.
        self._finished = True
        self._size = size if error is None else None
        self._error = error
        export, self._export = self._export, None
        if export is not None:
            export.release()
        if self._attached is not None:
            _pool.give_back(self._attached)
            self._attached = None
        self.comm._pending.discard(self)
        if error is None and self.kind == "recv":
            # Every thread sees the bytes, and acknowledgements the polls left queued go out.
            _lib.lib().nrt_async_sendrecv_flush(self.comm.lnc.id)

    def _test(self) -> bool:
        """One poll; True once the request has ended (success or failure)."""
        if self._finished:
            return True
        with self._lock:
            if self._finished:
                return True
            st = _lib.lib().nrt_async_sendrecv_test_request(*self._args)
            if st == SUCCESS:
                if self._done_c.value:
                    self._end(self._size_c.value, None)
                    return True
                return False
            if self._done_c.value:
                self._end(0, error_for(st, "nrt_async_sendrecv_test_request", self._describe(st)))
                return True
            if st == INVALID_HANDLE:
                # Freed by the library without a report: its lnc (or the runtime) was closed.
                self._end(0, error_for(st, "nrt_async_sendrecv_test_request", f"{self.kind} request: its lnc was closed before it completed"))
                return True
            raise error_for(st, "nrt_async_sendrecv_test_request", f"{self.kind} request (internal error; it stays pending)")

    def _describe(self, st: int) -> str:
        what = f"{self.kind} of {self.nbytes} bytes on lnc {self.comm.lnc.id} ({self.comm.peer_ip} lnc {self.comm.peer_lnc})"
        if st == FAILURE:
            hint = "the peer went away or broke the protocol, the receive was shorter than its send, or the communicator failed"
            return f"{what}: {hint}"
        return what

    def done(self) -> bool:
        """Polls once: True when the request has ended, with success or an error (``wait`` tells)."""
        return self._finished or self._test()

    def _outcome(self) -> int:
        if self._error is not None:
            raise self._error
        assert self._size is not None
        return self._size

    def wait(self, timeout: Optional[float] = None) -> int:
        """Waits for the end; returns the bytes moved, or raises the request's NrtError.

        `timeout` in seconds (None: no limit besides the library's request deadline); when it
        passes first, WaitTimeout is raised and the request stays pending.
        """
        if self._finished or self._test():
            return self._outcome()
        deadline = _deadline(timeout)
        start = time.monotonic()
        test = self._test
        polls = 0
        while not test():
            polls += 1
            if polls & 15 == 0:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    raise WaitTimeout(repr(self), timeout)
                if now - start > SPIN_S:
                    os.sched_yield()
        return self._outcome()

    result = wait

    async def wait_async(self, timeout: Optional[float] = None) -> int:
        """Like ``wait``, for asyncio: polls between turns of the event loop, never blocking it."""
        deadline = _deadline(timeout)
        delay = 0.0
        polls = 0
        while not self.done():
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(repr(self), timeout)
            await asyncio.sleep(delay)
            polls += 1
            if polls > 16:
                delay = min(ASYNC_MAX_INTERVAL_S, max(delay * 2, 50e-6))
        return self._outcome()

    def __await__(self) -> Any:
        return self.wait_async().__await__()


class Communicator:
    """One direction between this lnc and a peer's: ``send`` on one made by ``Lnc.connect``,
    ``recv`` on one made by ``Lnc.accept``. Sends pair with the peer's receives in posting order."""

    def __init__(self, lnc: Lnc, direction: str, peer_ip: str, peer_lnc: int, handle: int) -> None:
        self.lnc = lnc
        self.direction = direction  # "send" (connect) or "recv" (accept)
        self.peer_ip = peer_ip
        self.peer_lnc = peer_lnc
        self._handle = handle
        self._ready = False
        self._pending: set[Request] = set()

    def __repr__(self) -> str:
        state = "ready" if self._ready else "setting up"
        return f"<nrt_sendrecv.Communicator {self.direction} lnc {self.lnc.id} <-> {self.peer_ip} lnc {self.peer_lnc}, {state}>"

    @property
    def pending(self) -> int:
        """Requests posted here that have not been seen to end."""
        return len(self._pending)

    def ready(self) -> bool:
        """Polls the connection set-up once: True once connected; raises NrtTimeout (no peer
        within the connect deadline), NrtFailure (the handshake failed), NrtResource."""
        if self._ready:
            return True
        done = ctypes.c_bool(False)
        st = _lib.lib().nrt_async_sendrecv_test_comm(self._handle, ctypes.byref(done))
        check(st, "nrt_async_sendrecv_test_comm", f"{self!r}")
        self._ready = bool(done.value)
        return self._ready

    def wait_ready(self, timeout: Optional[float] = None) -> Communicator:
        """Waits until connected and returns self. `timeout` (s) passing first raises
        WaitTimeout (set-up goes on); the library's connect deadline raises NrtTimeout."""
        deadline = _deadline(timeout)
        delay = 50e-6
        while not self.ready():
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(repr(self), timeout)
            time.sleep(delay)
            delay = min(delay * 2, 0.002)
        return self

    async def wait_ready_async(self, timeout: Optional[float] = None) -> Communicator:
        """``wait_ready`` for asyncio."""
        deadline = _deadline(timeout)
        delay = 50e-6
        while not self.ready():
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(repr(self), timeout)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.002)
        return self

    def send(self, buf: Any) -> Request:
        """Posts a send of every byte of `buf` (any contiguous buffer: bytes, bytearray,
        memoryview, numpy array, CPU torch tensor); no copy. Do not write to `buf` until the
        request has ended."""
        return self._post(buf, "send")

    def recv(self, out: Any) -> Request:
        """Posts a receive into `out` (a writable contiguous buffer) of at most its size; no
        copy. The request's size is the length of the matching send; a send longer than `out`
        fails both sides (NrtFailure) and writes nothing. Do not touch `out` until the request
        has ended."""
        return self._post(out, "recv")

    def _post(self, obj: Any, kind: str) -> Request:
        export = _buffer.export(obj, writable=kind == "recv", purpose=kind)
        attached: Optional[int] = None
        try:
            if not self._ready:
                self.ready()  # raises the set-up's failure; not ready yet: the library says NRT_INVALID
            found = memory.lookup(export.address, export.nbytes)
            if found is not None:
                tensor, offset = found
                memory_kind = "library"
            else:
                attached = tensor = _pool.attach(export.address, export.nbytes)
                offset, memory_kind = 0, "attached"
            lib = _lib.lib()
            fn = lib.nrt_async_sendrecv_send_tensor if kind == "send" else lib.nrt_async_sendrecv_recv_tensor
            req = ctypes.c_void_p()
            st = fn(tensor, offset, export.nbytes, self._handle, ctypes.byref(req))
            if st == RESOURCE and self._pending:
                # Requests nobody waited on still hold slots: poll them once each and retry.
                for r in list(self._pending):
                    r._test()
                st = fn(tensor, offset, export.nbytes, self._handle, ctypes.byref(req))
            if st != SUCCESS:
                call = f"nrt_async_sendrecv_{kind}_tensor"
                raise error_for(st, call, self._post_hint(st, kind, export.nbytes))
        except BaseException:
            if attached is not None:
                _pool.give_back(attached)
            export.release()
            raise
        assert req.value is not None
        r = Request(self, kind, export, attached, req.value, memory_kind)
        self._pending.add(r)
        return r

    def _post_hint(self, st: int, kind: str, nbytes: int) -> str:
        what = f"{kind} of {nbytes} bytes on {self!r}"
        if st == INVALID:
            if kind != self.direction:
                why = f"this communicator only {self.direction}s ({'connect' if kind == 'send' else 'accept'} makes one that {kind}s)"
            elif not self._ready:
                why = "its set-up has not finished: call wait_ready() first"
            else:
                why = "the length exceeds the transport's message limit"
            return f"{what}: {why}"
        if st == INVALID_HANDLE:
            return f"{what}: the communicator's lnc was closed"
        if st == FAILURE:
            return f"{what}: the communicator failed earlier (set-up failed, the peer went away, or a request timed out)"
        if st == RESOURCE:
            return f"{what}: {self.pending} requests of this communicator are pending (the library allows {max_pending_requests()}): wait on some first"
        return what


class Lnc:
    """A logical core: ``nrt_async_sendrecv_init`` when made (``Runtime.lnc``), listening on TCP
    port NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT (31000) + id; ``close`` (or leaving the
    ``with`` block) frees every communicator and request of it."""

    def __init__(self, runtime: Runtime, lnc: int) -> None:
        self.runtime = runtime
        self.id = lnc
        self._comms: list[Communicator] = []
        self._closed = False
        check(_lib.lib().nrt_async_sendrecv_init(lnc), "nrt_async_sendrecv_init", f"lnc {lnc}{self._port_hint()}")

    def _port_hint(self) -> str:
        base = os.environ.get("NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT", "31000")
        try:
            return f" (TCP port {int(base) + self.id}; the library's log names the cause)"
        except ValueError:
            return ""

    def __repr__(self) -> str:
        return f"<nrt_sendrecv.Lnc {self.id}{' closed' if self._closed else ''}>"

    @property
    def closed(self) -> bool:
        return self._closed

    def _open(self, kind: str, peer_ip: str, peer_lnc: int) -> Communicator:
        lib = _lib.lib()
        fn = lib.nrt_async_sendrecv_connect if kind == "send" else lib.nrt_async_sendrecv_accept
        h = ctypes.c_void_p()
        call = "nrt_async_sendrecv_connect" if kind == "send" else "nrt_async_sendrecv_accept"
        check(fn(peer_ip.encode(), peer_lnc, self.id, ctypes.byref(h)), call, f"lnc {self.id} with {peer_ip} lnc {peer_lnc}")
        assert h.value is not None
        c = Communicator(self, kind, peer_ip, peer_lnc, h.value)
        self._comms.append(c)
        return c

    def connect(self, peer_ip: str, peer_lnc: int) -> Communicator:
        """A send communicator to (`peer_ip`, `peer_lnc`); set-up runs in the background
        (``wait_ready``). The k-th connect to a peer lnc pairs with its k-th accept."""
        return self._open("send", peer_ip, peer_lnc)

    def accept(self, peer_ip: str, peer_lnc: int) -> Communicator:
        """A receive communicator for the connection from (`peer_ip`, `peer_lnc`)."""
        return self._open("recv", peer_ip, peer_lnc)

    def flush(self) -> None:
        """``nrt_async_sendrecv_flush``: bytes of receives already reported done are visible to
        every thread (``Request`` does this after each receive)."""
        check(_lib.lib().nrt_async_sendrecv_flush(self.id), "nrt_async_sendrecv_flush", f"lnc {self.id}")

    def close(self, strict: bool = False) -> bool:
        """Closes the lnc: every communicator and request of it is freed, pending requests end
        with NrtInvalidHandle and give their buffers back. Returns True when everything had
        finished; False when a communicator had not finished its set-up or a request was pending
        (NRT_FAILURE from the library; freed all the same; raised as NrtFailure if `strict`).
        Closing twice does nothing."""
        if self._closed:
            return True
        self._closed = True
        self.runtime._lncs.pop(self.id, None)
        st = _lib.lib().nrt_async_sendrecv_close(self.id)
        for c in self._comms:
            for r in list(c._pending):
                with r._lock:
                    if not r._finished:
                        detail = f"{r.kind} request: lnc {self.id} was closed before it completed"
                        r._end(0, NrtInvalidHandle(INVALID_HANDLE, "nrt_async_sendrecv_close", detail))
        if st == FAILURE and not strict:
            return False
        check(st, "nrt_async_sendrecv_close", f"lnc {self.id}: a communicator had not finished its set-up or a request was pending")
        return True

    def __enter__(self) -> Lnc:
        return self

    def __exit__(self, t: Optional[type[BaseException]], e: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.close()


class Runtime:
    """``nrt_init`` when made, ``nrt_close`` at ``close`` (or the end of the ``with`` block),
    which closes every lnc still open. One open Runtime per process."""

    _current: Optional[Runtime] = None
    _guard = threading.Lock()

    def __init__(self, framework: int = FRAMEWORK_NO_FW) -> None:
        with Runtime._guard:
            if Runtime._current is not None:
                raise RuntimeError("nrt_sendrecv: a Runtime is already open in this process (close it first)")
            check(_lib.lib().nrt_init(framework, b"1.0", b"1.0"), "nrt_init")
            Runtime._current = self
        self._lncs: dict[int, Lnc] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"<nrt_sendrecv.Runtime lncs {sorted(self._lncs)}{' closed' if self._closed else ''}>"

    def lnc(self, lnc: int) -> Lnc:
        """Initialises logical core `lnc` (0..1023) and returns it."""
        if self._closed:
            raise RuntimeError("nrt_sendrecv: this Runtime is closed")
        core = Lnc(self, lnc)
        self._lncs[lnc] = core
        return core

    def close(self) -> None:
        """Closes every open lnc, then the runtime. Closing twice does nothing."""
        if self._closed:
            return
        for core in list(self._lncs.values()):
            core.close()
        self._closed = True
        with Runtime._guard:
            Runtime._current = None
        check(_lib.lib().nrt_close(), "nrt_close")

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, t: Optional[type[BaseException]], e: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.close()


@atexit.register
def _close_at_exit() -> None:
    # The library must stop writing into Python objects before the interpreter frees them.
    rt = Runtime._current
    if rt is not None:
        try:
            rt.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def max_pending_requests() -> int:
    """Requests one communicator may have posted and not yet seen end (128)."""
    n = ctypes.c_int()
    check(_lib.lib().nrt_async_sendrecv_get_max_num_pending_request(ctypes.byref(n)), "nrt_async_sendrecv_get_max_num_pending_request")
    return n.value


def max_communicators_per_lnc() -> int:
    """Communicators (connect and accept together) one lnc may hold (128)."""
    n = ctypes.c_int()
    check(
        _lib.lib().nrt_async_sendrecv_get_max_num_communicators_per_lnc(ctypes.byref(n)),
        "nrt_async_sendrecv_get_max_num_communicators_per_lnc",
    )
    return n.value


def wait_all(requests: Iterable[Request], timeout: Optional[float] = None) -> list[int]:
    """Waits until every request has ended; returns their sizes in order. If any failed, raises
    the first failure (in the given order) once all have ended. WaitTimeout if `timeout` (s)
    passes first (the rest stay pending)."""
    reqs = list(requests)
    for _ in as_completed(reqs, timeout):
        pass
    return [r._outcome() for r in reqs]


def as_completed(requests: Iterable[Request], timeout: Optional[float] = None) -> Iterator[Request]:
    """Yields each request as it ends (success or failure: its ``wait()`` then returns the size
    or raises). WaitTimeout if `timeout` (s) passes before all have ended."""
    pending = list(dict.fromkeys(requests))
    deadline = _deadline(timeout)
    start = time.monotonic()
    while pending:
        still = []
        for r in pending:
            if r._test():
                yield r
            else:
                still.append(r)
        pending = still
        if pending:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise WaitTimeout(f"{len(pending)} request(s)", timeout, len(pending))
            if now - start > SPIN_S:
                os.sched_yield()
