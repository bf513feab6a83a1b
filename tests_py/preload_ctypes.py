#!/usr/bin/env python3
"""LD_PRELOAD mode from Python ctypes, run with LD_PRELOAD=libnrt_async_sendrecv.so.

The vendor library (here the stand-in) is loaded as users do, CDLL(path, RTLD_GLOBAL), and gives
the tensors. The send/receive functions are looked up in the process's global scope, CDLL(None),
where the preloaded library comes first. (A lookup through the vendor's own handle would find the
vendor's functions: dlsym on a library handle searches that library and its dependencies only,
which this test also checks.) DEVICE tensors (no host address) move through our staging path.
Usage: preload_ctypes.py VENDOR_LIB"""
import ctypes, sys, time

vendor = ctypes.CDLL(sys.argv[1], ctypes.RTLD_GLOBAL)
g = ctypes.CDLL(None)
P = ctypes.c_void_p
for lib in (vendor, g):
    for f in ("nrt_async_sendrecv_init", "nrt_async_sendrecv_close", "nrt_async_sendrecv_connect", "nrt_async_sendrecv_accept",
              "nrt_async_sendrecv_test_comm", "nrt_async_sendrecv_send_tensor", "nrt_async_sendrecv_recv_tensor",
              "nrt_async_sendrecv_test_request", "nrt_async_sendrecv_flush"):
        getattr(lib, f).restype = ctypes.c_int
g.nrt_async_sendrecv_send_tensor.argtypes = [P, ctypes.c_size_t, ctypes.c_size_t, P, P]
g.nrt_async_sendrecv_recv_tensor.argtypes = g.nrt_async_sendrecv_send_tensor.argtypes
g.nrt_async_sendrecv_test_request.argtypes = [P, P, P]
g.nrt_async_sendrecv_test_comm.argtypes = [P, P]
vendor.nrt_tensor_allocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_char_p, P]
vendor.nrt_tensor_read.argtypes = [P, P, ctypes.c_size_t, ctypes.c_size_t]
vendor.nrt_tensor_write.argtypes = vendor.nrt_tensor_read.argtypes


def ok(what, st):
    if st != 0:
        sys.exit(f"FAIL preload ctypes: {what} returned {st}")


assert vendor.nrt_async_sendrecv_init(5) == 1, "the vendor handle should reach the stand-in's own (failing) function"
ok("nrt_init", vendor.nrt_init(1, b"1.0", b"1.0"))
ok("init 0", g.nrt_async_sendrecv_init(0))
ok("init 1", g.nrt_async_sendrecv_init(1))
s, r = P(), P()
ok("connect", g.nrt_async_sendrecv_connect(b"127.0.0.1", 1, 0, ctypes.byref(s)))
ok("accept", g.nrt_async_sendrecv_accept(b"127.0.0.1", 0, 1, ctypes.byref(r)))
end = time.time() + 20
for c in (s, r):
    d = ctypes.c_bool(False)
    while not d.value:
        ok("test_comm", g.nrt_async_sendrecv_test_comm(c, ctypes.byref(d)))
        if time.time() > end:
            sys.exit("FAIL preload ctypes: not connected in 20 s")
for n in (1, 4095, (3 << 20) + 1):
    ts, tr = P(), P()
    ok("alloc", vendor.nrt_tensor_allocate(0, 0, n, b"s", ctypes.byref(ts)))
    ok("alloc", vendor.nrt_tensor_allocate(0, 0, n, b"r", ctypes.byref(tr)))
    data = bytes((i * 131 + n) & 0xFF for i in range(n))
    ok("write", vendor.nrt_tensor_write(ts, data, 0, n))
    rq, sq = P(), P()
    ok("recv", g.nrt_async_sendrecv_recv_tensor(tr, 0, n, r, ctypes.byref(rq)))
    ok("send", g.nrt_async_sendrecv_send_tensor(ts, 0, n, s, ctypes.byref(sq)))
    for q in (sq, rq):
        d, z = ctypes.c_bool(False), ctypes.c_size_t(0)
        end = time.time() + 30
        while not d.value:
            ok("test_request", g.nrt_async_sendrecv_test_request(q, ctypes.byref(d), ctypes.byref(z)))
            if time.time() > end:
                sys.exit("FAIL preload ctypes: request not done in 30 s")
        assert z.value == n, (z.value, n)
    ok("flush", g.nrt_async_sendrecv_flush(1))
    buf = ctypes.create_string_buffer(n)
    ok("read", vendor.nrt_tensor_read(tr, buf, 0, n))
    if buf.raw != data:
        sys.exit(f"FAIL preload ctypes: {n}-byte device transfer corrupted at byte {next(i for i in range(n) if buf.raw[i] != data[i])}")
ok("close 0", g.nrt_async_sendrecv_close(0))
ok("close 1", g.nrt_async_sendrecv_close(1))
print("PASS preload ctypes: device tensors of the vendor library moved by the preloaded send/receive")
