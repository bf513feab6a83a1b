#!/usr/bin/env python3
"""The vendor's Python ctypes usage pattern (docs/semantics.md), run against build/lib/libnrt.so.1.

Two processes: the receiver (lnc 1) and the sender (lnc 0) exchange nothing but the library's
own traffic over 127.0.0.1; DEVICE tensors of 1 MiB and 8 MiB + 5, one request at a time,
busy-polled; the receiver checks every byte and flushes. Exit 0 on success."""
import ctypes, os, sys, time

os.environ.setdefault("NEURON_RT_ASYNC_SENDRECV_LISTEN_ADDR", "127.0.0.1")  # tests listen on loopback only

LIB = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "build", "lib", "libnrt.so.1")
SIZES = [1 << 20, (8 << 20) + 5]
NO_FW, DEVICE, SUCCESS = 1, 0, 0


def load():
    nrt = ctypes.CDLL(LIB, ctypes.RTLD_GLOBAL)
    for f in ("nrt_init", "nrt_async_sendrecv_init", "nrt_async_sendrecv_close", "nrt_async_sendrecv_connect",
              "nrt_async_sendrecv_accept", "nrt_async_sendrecv_test_comm", "nrt_async_sendrecv_send_tensor",
              "nrt_async_sendrecv_recv_tensor", "nrt_async_sendrecv_test_request", "nrt_async_sendrecv_flush",
              "nrt_tensor_allocate", "nrt_tensor_read", "nrt_tensor_write"):
        getattr(nrt, f).restype = ctypes.c_int
    nrt.nrt_async_sendrecv_send_tensor.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p]
    nrt.nrt_async_sendrecv_recv_tensor.argtypes = nrt.nrt_async_sendrecv_send_tensor.argtypes
    nrt.nrt_async_sendrecv_test_request.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    nrt.nrt_async_sendrecv_test_comm.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    nrt.nrt_tensor_allocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
    nrt.nrt_tensor_read.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    nrt.nrt_tensor_write.argtypes = nrt.nrt_tensor_read.argtypes
    return nrt


def check(what, st):
    if st != SUCCESS:
        raise SystemExit(f"{os.getpid()}: {what} returned {st}")


def pattern(n, seed):
    return bytes((i * 7 + seed) & 0xFF for i in range(256)) * (n // 256) + bytes((i * 7 + seed) & 0xFF for i in range(n % 256))


def run(role):
    nrt = load()
    check("nrt_init", nrt.nrt_init(NO_FW, b"1.0", b"1.0"))
    ncomm, npend = ctypes.c_int(), ctypes.c_int()
    check("max comms", nrt.nrt_async_sendrecv_get_max_num_communicators_per_lnc(ctypes.byref(ncomm)))
    check("max pending", nrt.nrt_async_sendrecv_get_max_num_pending_request(ctypes.byref(npend)))
    assert ncomm.value == 128 and npend.value == 128, (ncomm.value, npend.value)
    lnc, peer = (1, 0) if role == "recv" else (0, 1)
    check("init", nrt.nrt_async_sendrecv_init(lnc))
    comm = ctypes.c_void_p()
    if role == "recv":
        check("accept", nrt.nrt_async_sendrecv_accept(b"127.0.0.1", peer, lnc, ctypes.byref(comm)))
    else:
        check("connect", nrt.nrt_async_sendrecv_connect(b"127.0.0.1", peer, lnc, ctypes.byref(comm)))
    done = ctypes.c_bool(False)
    deadline = time.time() + 30
    while not done.value:
        check("test_comm", nrt.nrt_async_sendrecv_test_comm(comm, ctypes.byref(done)))
        if time.time() > deadline:
            raise SystemExit("test_comm: not connected within 30 s")
    for i, n in enumerate(SIZES):
        t = ctypes.c_void_p()
        check("tensor_allocate", nrt.nrt_tensor_allocate(DEVICE, 0, n, b"t", ctypes.byref(t)))
        want = pattern(n, i)
        if role == "send":
            check("tensor_write", nrt.nrt_tensor_write(t, want, 0, n))
        req = ctypes.c_void_p()
        post = nrt.nrt_async_sendrecv_recv_tensor if role == "recv" else nrt.nrt_async_sendrecv_send_tensor
        check("post", post(t, 0, n, comm, ctypes.byref(req)))
        done, size = ctypes.c_bool(False), ctypes.c_size_t(0)
        deadline = time.time() + 60
        while not done.value:
            check("test_request", nrt.nrt_async_sendrecv_test_request(req, ctypes.byref(done), ctypes.byref(size)))
            if time.time() > deadline:
                raise SystemExit("test_request: not done within 60 s")
        assert size.value == n, (size.value, n)
        if role == "recv":
            check("flush", nrt.nrt_async_sendrecv_flush(lnc))
            got = ctypes.create_string_buffer(n)
            check("tensor_read", nrt.nrt_tensor_read(t, got, 0, n))
            if got.raw != want:
                bad = next(k for k in range(n) if got.raw[k] != want[k])
                raise SystemExit(f"byte {bad} of message {i} differs")
    check("close", nrt.nrt_async_sendrecv_close(lnc))
    check("nrt_close", nrt.nrt_close())


if __name__ == "__main__":
    if len(sys.argv) > 2:
        run(sys.argv[2])
        sys.exit(0)
    pid = os.fork()
    if pid == 0:
        try:
            run("recv")
            os._exit(0)
        except BaseException as e:  # noqa: BLE001 - report and exit the child
            print(f"receiver: {e}", file=sys.stderr)
            os._exit(1)
    try:
        run("send")
        ok = True
    except BaseException as e:  # noqa: BLE001
        print(f"sender: {e}", file=sys.stderr)
        ok = False
    _, status = os.waitpid(pid, 0)
    ok = ok and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    print("PASS python ctypes pattern" if ok else "FAIL python ctypes pattern")
    sys.exit(0 if ok else 1)
