"""Two processes (this one lnc 0, peer.py lnc 1) over TCP and over shared memory."""

from __future__ import annotations

import array
import gc
import time
import weakref
from typing import Any

import numpy as np
import pytest

import nrt_sendrecv as nrt
from _common import SPECS, filled, first_difference, nbytes_of, pattern, raw_bytes

IP, PEER = "127.0.0.1", 1
W = 30.0  # bound of every wait


def library_empty(shape: Any, dtype: Any, order: Any) -> np.ndarray:
    return nrt.empty(shape, dtype, order)


def numpy_empty(shape: Any, dtype: Any, order: Any) -> np.ndarray:
    return np.empty(shape, dtype, order)


@pytest.mark.parametrize("memory", ["numpy", "library"])
def test_echo_dtypes_and_shapes(rt: nrt.Runtime, transport: str, port_base: int, peer: Any, memory: str) -> None:
    """Each spec goes to the peer (which checks every byte) and comes back (checked here)."""
    specs = [list(s) for s in SPECS]
    p = peer("echo", specs=specs, seed=10)
    alloc = numpy_empty if memory == "numpy" else library_empty
    with rt.lnc(0) as lnc:
        tx = lnc.connect(IP, PEER).wait_ready(W)
        rx = lnc.accept(IP, PEER).wait_ready(W)
        for i, spec in enumerate(SPECS):
            a = filled(spec, 10 + i, alloc)
            back = alloc(spec[1], dtype=spec[0], order=spec[2])
            raw_bytes(back)[...] = 0xEE
            s = tx.send(a)
            r = rx.recv(back)
            assert s.memory == ("library" if memory == "library" and a.size else "attached")
            assert s.address == a.ctypes.data and r.address == back.ctypes.data  # the arrays themselves: no copy
            n = nbytes_of(spec)
            assert s.wait(W) == n and r.wait(W) == n
            assert s.error is None and r.error is None and s.size == n
            assert first_difference(raw_bytes(back), pattern(n, 10 + i)) == ""
            assert back.dtype == np.dtype(spec[0]) and back.shape == spec[1]
        assert lnc.close() is True
    res = p.result()
    assert res["checked"] == len(SPECS) and res["sizes"] == [nbytes_of(s) for s in SPECS] and res["clean_close"] is True


def test_bytes_like_objects(rt: nrt.Runtime, transport: str, port_base: int, peer: Any) -> None:
    """bytes, bytearray, memoryview (a slice), array.array and ctypes out; bytearray, memoryview
    and array.array in; the peer checks and echoes every message."""
    lengths = [5000, 65536, 3000, 8 * 1024]
    p = peer("echo", specs=[["uint8", [n], "C"] for n in lengths], seed=20)
    sends = [
        pattern(lengths[0], 20).tobytes(),  # bytes (read-only: fine to send)
        bytearray(pattern(lengths[1], 21).tobytes()),
        memoryview(bytearray(b"\0" * 7) + pattern(lengths[2], 22).tobytes())[7:],  # a slice at an odd address
        array.array("Q", pattern(lengths[3], 23).tobytes()),
    ]
    outs = [bytearray(lengths[0]), memoryview(bytearray(lengths[1] + 9))[9:], bytearray(lengths[2]), array.array("Q", bytes(lengths[3]))]
    with rt.lnc(0) as lnc:
        tx = lnc.connect(IP, PEER).wait_ready(W)
        rx = lnc.accept(IP, PEER).wait_ready(W)
        for i, (obj, out) in enumerate(zip(sends, outs)):
            r = rx.recv(out)
            assert tx.send(obj).wait(W) == lengths[i]
            assert r.wait(W) == lengths[i]
            assert bytes(out) == pattern(lengths[i], 20 + i).tobytes(), f"message {i}"
    assert p.result()["checked"] == 4


def test_short_receive_fails_both_then_longer_one_completes(rt: nrt.Runtime, transport: str, port_base: int, peer: Any) -> None:
    """1 MiB into a 512 KiB receive: both NrtFailure (status 1), nothing written; the
    communicator goes on: 4 KiB into a 1 MiB receive completes with size 4096."""
    p = peer("recv_sizes", lengths=[512 * 1024, 1 << 20], seed=30)
    with rt.lnc(0) as lnc:
        tx = lnc.connect(IP, PEER).wait_ready(W)
        with pytest.raises(nrt.NrtFailure) as ei:
            tx.send(pattern(1 << 20, 99)).wait(W)
        assert ei.value.status == 1 and ei.value.status_name == "NRT_FAILURE"
        assert "nrt_async_sendrecv_test_request" in str(ei.value)
        assert tx.send(pattern(4096, 31)).wait(W) == 4096
    res = p.result()["results"]
    assert res[0] == {"status": 1, "error": "NrtFailure", "untouched": True}
    assert res[1] == {"size": 4096, "bytes_ok": True}


def test_wait_timeout_leaves_request_pending(rt: nrt.Runtime, transport: str, port_base: int, peer: Any) -> None:
    """wait(timeout) running out raises WaitTimeout (not an NrtError); the request goes on."""
    p = peer("send_sizes", lengths=[100_000], seed=40, delay=1.0)
    with rt.lnc(0) as lnc:
        rx = lnc.accept(IP, PEER).wait_ready(W)
        out = np.zeros(100_000, np.uint8)
        r = rx.recv(out)
        t0 = time.monotonic()
        with pytest.raises(nrt.WaitTimeout) as ei:
            r.wait(timeout=0.2)
        assert 0.2 <= time.monotonic() - t0 < 0.9
        assert isinstance(ei.value, TimeoutError) and not isinstance(ei.value, nrt.NrtError)
        assert not r.done() and r.size is None
        with pytest.raises(nrt.WaitTimeout):
            r.wait(timeout=0)
        assert r.wait(W) == 100_000
        assert first_difference(out, pattern(100_000, 40)) == ""
    assert p.result()["results"] == [{"size": 100_000}]


def test_library_request_deadline(rt: nrt.Runtime, port_base: int, peer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """NEURON_RT_ASYNC_SENDRECV_REQUEST_TIMEOUT_MS: a receive nobody sends to ends with
    NrtTimeout (status 5); the communicator has failed, so the next post is NrtFailure (1)."""
    monkeypatch.setenv("NEURON_RT_ASYNC_SENDRECV_REQUEST_TIMEOUT_MS", "400")
    p = peer("idle", side="connect")
    with rt.lnc(0) as lnc:
        rx = lnc.accept(IP, PEER).wait_ready(W)
        buf = bytearray(64)
        r = rx.recv(buf)
        t0 = time.monotonic()
        with pytest.raises(nrt.NrtTimeout) as ei:
            r.wait(W)
        assert 0.3 < time.monotonic() - t0 < 10
        assert ei.value.status == 5 and isinstance(ei.value, TimeoutError)
        assert r.done() and r.error is ei.value and r.buffer is None
        buf.extend(b"x")  # given back: resizable again
        with pytest.raises(nrt.NrtFailure) as ei2:
            rx.recv(bytearray(64))
        assert ei2.value.status == 1 and "failed earlier" in str(ei2.value)
    assert p.result()["idle"] is True


def test_request_keeps_buffer_alive_and_locked(rt: nrt.Runtime, transport: str, port_base: int, peer: Any) -> None:
    """A posted array stays alive after the caller drops it, and a bytearray cannot be resized,
    until the request ends; then both are let go."""
    p = peer("recv_sizes", lengths=[1 << 20, 1000], seed=50, delay=0.5)
    with rt.lnc(0) as lnc:
        tx = lnc.connect(IP, PEER).wait_ready(W)
        a = pattern(1 << 20, 50)
        ref = weakref.ref(a)
        r = tx.send(a)
        del a
        gc.collect()
        assert ref() is not None and r.buffer is ref()  # the peer has not posted its receive yet
        ba = bytearray(pattern(1000, 51).tobytes())
        r2 = tx.send(ba)
        with pytest.raises(BufferError):
            ba.extend(b"more")
        assert nrt.wait_all([r, r2], timeout=W) == [1 << 20, 1000]
        gc.collect()
        assert ref() is None and r.buffer is None
        ba.extend(b"more")
    assert p.result()["results"] == [{"size": 1 << 20, "bytes_ok": True}, {"size": 1000, "bytes_ok": True}]


def test_closed_lnc(rt: nrt.Runtime, transport: str, port_base: int, peer: Any) -> None:
    """Closing the lnc with a receive pending: close() reports it (False: NRT_FAILURE, freed
    all the same), the request ends with NrtInvalidHandle (3) and lets its buffer go, and the
    communicator is stale (NrtInvalidHandle at the next post)."""
    p = peer("idle", side="connect")
    lnc = rt.lnc(0)
    rx = lnc.accept(IP, PEER).wait_ready(W)
    buf = bytearray(4096)
    r = rx.recv(buf)
    assert rx.pending == 1
    assert lnc.close() is False
    assert lnc.closed and lnc.close() is True  # twice: nothing
    assert r.done()
    with pytest.raises(nrt.NrtInvalidHandle) as ei:
        r.wait(W)
    assert ei.value.status == 3 and "closed before it completed" in str(ei.value)
    buf.extend(b"x")
    with pytest.raises(nrt.NrtInvalidHandle) as ei2:
        rx.recv(bytearray(16))
    assert ei2.value.status == 3 and "lnc was closed" in str(ei2.value)
    assert p.result()["idle"] is True


def test_peer_closes(rt: nrt.Runtime, transport: str, port_base: int, peer: Any) -> None:
    """The peer closes its lnc and exits: our pending receive ends with NrtFailure (1) at once,
    and the communicator has failed (NrtFailure at the next post)."""
    p = peer("idle", side="connect", close_after=0.3)
    with rt.lnc(0) as lnc:
        rx = lnc.accept(IP, PEER).wait_ready(W)
        r = rx.recv(bytearray(1 << 16))
        t0 = time.monotonic()
        with pytest.raises(nrt.NrtFailure) as ei:
            r.wait(W)
        assert ei.value.status == 1 and time.monotonic() - t0 < 10
        with pytest.raises(nrt.NrtFailure) as ei2:
            rx.recv(bytearray(16))
        assert ei2.value.status == 1
    assert p.result()["closed"] is True


def test_wrong_direction_and_pending_limit(rt: nrt.Runtime, port_base: int, peer: Any) -> None:
    """recv on a send communicator: NrtInvalid (2) saying why; the 129th pending send:
    NrtResource (4)."""
    p = peer("idle", side="accept")
    with rt.lnc(0) as lnc:
        tx = lnc.connect(IP, PEER).wait_ready(W)
        with pytest.raises(nrt.NrtInvalid) as ei:
            tx.recv(bytearray(8))
        assert ei.value.status == 2 and "only sends" in str(ei.value)
        limit = nrt.max_pending_requests()
        assert limit == 128
        reqs = [tx.send(b"12345678") for _ in range(limit)]
        with pytest.raises(nrt.NrtResource) as ei2:
            tx.send(b"12345678")
        assert ei2.value.status == 4 and "128 requests" in str(ei2.value)
        assert all(not r.done() for r in reqs[:4])
        assert lnc.close() is False  # sends pending: the peer never received
        assert all(isinstance(r.error, nrt.NrtInvalidHandle) for r in reqs)
    assert p.result()["idle"] is True


def test_wait_all_and_as_completed(rt: nrt.Runtime, transport: str, port_base: int, peer: Any) -> None:
    """16 messages in flight at once, seen end by end with as_completed, then 8 with wait_all."""
    lengths = [(i * 37_003) % 300_000 + 1 for i in range(24)]
    p = peer("send_sizes", lengths=lengths, seed=60, batch=True)
    with rt.lnc(0) as lnc:
        rx = lnc.accept(IP, PEER).wait_ready(W)
        outs = [np.zeros(n, np.uint8) for n in lengths]
        first = [rx.recv(o) for o in outs[:16]]
        seen = []
        for r in nrt.as_completed(first, timeout=W):
            seen.append(first.index(r))
            assert r.wait(0) == lengths[seen[-1]]
        assert sorted(seen) == list(range(16))
        sizes = nrt.wait_all([rx.recv(o) for o in outs[16:]], timeout=W)
        assert sizes == lengths[16:]
        for i, (o, n) in enumerate(zip(outs, lengths)):
            assert first_difference(o, pattern(n, 60 + i)) == "", f"message {i}"
    assert p.result()["results"] == [{"size": n} for n in lengths]


def test_non_contiguous_and_read_only_refused(rt: nrt.Runtime, port_base: int) -> None:
    """Refused before anything is posted, with a message saying what to do."""
    with rt.lnc(0) as lnc:
        rx = lnc.accept(IP, PEER)  # no peer: never ready, and never needed
        tx = lnc.connect(IP, PEER)
        a = np.zeros((8, 8), np.float64)
        for bad in (a[:, ::2], a.T[::2], a[::2]):
            with pytest.raises(ValueError, match="non-contiguous.*ascontiguousarray"):
                tx.send(bad)
            with pytest.raises(ValueError, match="non-contiguous"):
                rx.recv(bad)
        with pytest.raises(TypeError, match="read-only"):
            rx.recv(b"immutable")
        ro = np.zeros(4)
        ro.flags.writeable = False
        with pytest.raises(TypeError, match="read-only"):
            rx.recv(ro)
        with pytest.raises(TypeError, match="neither the buffer protocol nor __dlpack__"):
            tx.send([1, 2, 3])
        with pytest.raises(nrt.NrtInvalid) as ei:  # set-up not finished
            rx.recv(bytearray(8))
        assert ei.value.status == 2 and "wait_ready" in str(ei.value)
        assert rx.pending == 0 and tx.pending == 0
        assert lnc.close() is False  # two communicators never finished their set-up
