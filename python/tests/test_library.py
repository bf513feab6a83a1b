"""The package alone (one process, no peer): finding the library, errors, memory, exports."""

from __future__ import annotations

import ctypes.util
import gc
import os
import pickle
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nrt_sendrecv as nrt
from nrt_sendrecv import _buffer, _lib, errors

IP = "127.0.0.1"
PKG = Path(nrt.__file__).resolve().parent


def _clean_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop(_lib.ENV_VAR, None)
    env.pop("LD_LIBRARY_PATH", None)
    return env


def test_import_finds_the_bundled_library(tmp_path: Path) -> None:
    """`pip install ./python` after `make` puts libnrt.so.1 beside the package; a plain import
    (no NRT_SENDRECV_LIBRARY, no LD_LIBRARY_PATH) loads it."""
    if not (PKG / _lib.SONAME).exists():
        if os.environ.get("NRT_PY_TEST_REQUIRE_BUNDLED") == "1":  # make test: it must be there
            pytest.fail(f"{PKG / _lib.SONAME} missing: pip install ./python did not bundle build/lib/libnrt.so.1")
        pytest.skip(f"installed without a bundled library ({PKG / _lib.SONAME} missing: NRT_SENDRECV_BUNDLE=0?)")
    out = subprocess.run(
        [sys.executable, "-c", "import nrt_sendrecv as n; print(n.library_path()); print(n.library_version())"],
        env=_clean_env(), capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    path, version = out.stdout.splitlines()
    assert path == str(PKG / _lib.SONAME)
    assert "nrt-sendrecv" in version


def test_env_var_is_used_and_only_it(tmp_path: Path) -> None:
    """NRT_SENDRECV_LIBRARY names the file; when it cannot be loaded nothing else is tried."""
    lib, where = _lib.find_and_load(nrt.library_path(), PKG)
    assert where == os.path.abspath(nrt.library_path()) and hasattr(lib, "nrt_async_sendrecv_init")
    missing = str(tmp_path / "libnrt.so.1")
    with pytest.raises(nrt.LibraryNotFound) as ei:
        _lib.find_and_load(missing, PKG)
    assert ei.value.tried[0][0] == f"NRT_SENDRECV_LIBRARY={missing}" and len(ei.value.tried) == 1
    assert missing in str(ei.value) and isinstance(ei.value, OSError)


def test_not_found_names_every_place_tried(tmp_path: Path) -> None:
    with pytest.raises(nrt.LibraryNotFound) as ei:
        _lib.find_and_load(None, tmp_path, soname="libnrt-no-such.so.1")
    places = [w for w, _ in ei.value.tried]
    assert places[0] == "NRT_SENDRECV_LIBRARY" and places[1] == str(tmp_path / "libnrt-no-such.so.1")
    assert places[2].startswith("libnrt-no-such.so.1 on the loader's path")
    msg = str(ei.value)
    assert "not set" in msg and "no such file" in msg and "make" in msg


def test_import_error_in_a_fresh_process(tmp_path: Path) -> None:
    env = _clean_env()
    env[_lib.ENV_VAR] = str(tmp_path / "missing.so")
    out = subprocess.run([sys.executable, "-c", "import nrt_sendrecv"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "LibraryNotFound" in out.stderr and str(tmp_path / "missing.so") in out.stderr


def test_a_library_without_the_api_is_refused(tmp_path: Path) -> None:
    libc = ctypes.util.find_library("c")
    assert libc
    with pytest.raises(nrt.LibraryNotFound, match="lacks nrt_init"):
        _lib.find_and_load(libc, tmp_path)


def test_version_and_limits() -> None:
    assert nrt.library_version().startswith("0.1.0 (nrt-sendrecv")
    assert nrt.max_pending_requests() == 128
    assert nrt.max_communicators_per_lnc() == 128


@pytest.mark.parametrize(
    "status,cls",
    [(1, nrt.NrtFailure), (2, nrt.NrtInvalid), (3, nrt.NrtInvalidHandle), (4, nrt.NrtResource), (5, nrt.NrtTimeout),
     (11, nrt.NrtHostMemAlloc), (13, nrt.NrtUninitialized), (14, nrt.NrtClosed), (1206, nrt.NrtError)],
)
def test_one_exception_per_status(status: int, cls: type) -> None:
    e = errors.error_for(status, "nrt_x", "detail")
    assert type(e) is cls and e.status == status and e.call == "nrt_x"
    lib_name = _lib.lib().nrt_get_status_as_str(status).decode()
    assert e.status_name == lib_name or (status == 1206 and e.status_name == "NRT_UNKNOWN_STATUS")
    assert f"({status})" in str(e) and "detail" in str(e)
    again = pickle.loads(pickle.dumps(e))
    assert type(again) is cls and again.status == status and str(again) == str(e)
    assert isinstance(errors.error_for(5, "x"), TimeoutError)
    errors.check(0, "nrt_x")  # success raises nothing


def test_lnc_errors_carry_the_library_status(rt: nrt.Runtime, port_base: int) -> None:
    with pytest.raises(nrt.NrtInvalid) as ei:
        rt.lnc(1024)
    assert ei.value.status == 2 and ei.value.call == "nrt_async_sendrecv_init"
    lnc = rt.lnc(0)
    with pytest.raises(nrt.NrtInvalid):  # already initialised
        rt.lnc(0)
    with pytest.raises(nrt.NrtInvalid) as ei2:
        lnc.connect("not an address.invalid", 1)
    assert ei2.value.status == 2 and ei2.value.call == "nrt_async_sendrecv_connect"
    assert lnc.close() is True
    with pytest.raises(nrt.NrtUninitialized) as ei3:  # through the C API directly: the lnc is closed
        lnc.flush()
    assert ei3.value.status == 13


def test_port_taken_is_nrt_resource(rt: nrt.Runtime, port_base: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port_base + 2))
        s.listen()
        with pytest.raises(nrt.NrtResource) as ei:
            rt.lnc(2)
        assert ei.value.status == 4 and str(port_base + 2) in str(ei.value)


def test_one_runtime_at_a_time(rt: nrt.Runtime) -> None:
    with pytest.raises(RuntimeError, match="already open"):
        nrt.Runtime()
    rt.close()
    rt.close()  # twice: nothing
    assert rt.closed
    with pytest.raises(RuntimeError, match="closed"):
        rt.lnc(0)
    with nrt.Runtime() as again:
        assert not again.closed


def test_connect_deadline_is_nrt_timeout(rt: nrt.Runtime, port_base: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """No peer: wait_ready(timeout) runs out first (WaitTimeout, set-up goes on), then the
    library's connect deadline: NrtTimeout (5), again at every later poll."""
    monkeypatch.setenv("NEURON_RT_ASYNC_SENDRECV_CONNECT_TIMEOUT_MS", "500")
    with rt.lnc(0) as lnc:
        c = lnc.accept(IP, 1)
        with pytest.raises(nrt.WaitTimeout):
            c.wait_ready(timeout=0.05)
        t0 = time.monotonic()
        with pytest.raises(nrt.NrtTimeout) as ei:
            c.wait_ready(timeout=20)
        assert ei.value.status == 5 and ei.value.call == "nrt_async_sendrecv_test_comm"
        assert 0.2 < time.monotonic() - t0 < 10
        with pytest.raises(nrt.NrtTimeout):
            c.ready()
        with pytest.raises(nrt.NrtTimeout):  # posting on it reports the set-up's failure
            c.recv(bytearray(8))
        assert lnc.close() is False


def test_library_memory_arrays() -> None:
    before = nrt.memory.live_regions()
    a = nrt.empty((3, 4), np.float32)
    assert a.shape == (3, 4) and a.dtype == np.float32 and a.flags.writeable and a.flags.c_contiguous
    assert not a.any()  # zero-filled
    assert a.ctypes.data % 4096 == 0  # page-aligned
    f = nrt.zeros((5, 6), "int16", order="F")
    assert f.flags.f_contiguous and not f.flags.c_contiguous
    assert nrt.memory.live_regions() == before + 2
    found = nrt.memory.lookup(a.ctypes.data + 8, 16)
    assert found is not None and found[1] == 8
    assert nrt.memory.lookup(a.ctypes.data + 40, 16) is None  # runs past the end
    view = a[1:]
    del a
    gc.collect()
    assert nrt.memory.live_regions() == before + 2  # a view keeps it
    del view, f, found
    gc.collect()
    assert nrt.memory.live_regions() == before
    m = nrt.alloc(10)
    assert m.nbytes == 10 and m.format == "B" and bytes(m) == bytes(10)
    assert nrt.alloc(0).nbytes == 0 and nrt.empty((0, 3)).size == 0
    like = nrt.empty_like(np.zeros((2, 3), np.complex64, order="F"))
    assert like.shape == (2, 3) and like.dtype == np.complex64 and like.flags.f_contiguous
    assert nrt.memory.lookup(like.ctypes.data, like.nbytes) is not None
    with pytest.raises(ValueError, match="order"):
        nrt.empty(4, order="K")  # type: ignore[arg-type]


class DLPackOnly:
    """Only __dlpack__/__dlpack_device__ (no buffer protocol), like a torch tensor."""

    def __init__(self, a: Any) -> None:
        self.a = a

    def __dlpack__(self, stream: Any = None) -> Any:
        return self.a.__dlpack__()

    def __dlpack_device__(self) -> Any:
        return self.a.__dlpack_device__()


def test_dlpack_export_is_the_memory_itself() -> None:
    a = np.arange(24, dtype=np.int32).reshape(4, 6)
    e = _buffer.export(DLPackOnly(a), writable=True, purpose="recv")
    assert (e.kind, e.address, e.nbytes) == ("dlpack", a.ctypes.data, a.nbytes)
    e.release()
    e.release()  # twice: nothing
    f = np.asfortranarray(a)
    e = _buffer.export(DLPackOnly(f), writable=False, purpose="send")
    assert e.address == f.ctypes.data and e.nbytes == f.nbytes
    e.release()
    with pytest.raises(ValueError, match="non-contiguous"):
        _buffer.export(DLPackOnly(a[:, ::2]), writable=False, purpose="send")


def test_dlpack_device_other_than_cpu_refused() -> None:
    class OnGpu(DLPackOnly):
        def __dlpack_device__(self) -> Any:
            return (2, 0)  # kDLCUDA

    with pytest.raises(ValueError, match="only host"):
        _buffer.export(OnGpu(np.zeros(4)), writable=False, purpose="send")


def test_torch_tensors_if_installed() -> None:
    torch = pytest.importorskip("torch")
    t = torch.arange(1000, dtype=torch.float32)
    e = _buffer.export(t, writable=True, purpose="recv")
    assert (e.address, e.nbytes) == (t.data_ptr(), 4000)
    e.release()
    with pytest.raises(ValueError, match="non-contiguous"):
        _buffer.export(t.reshape(10, 100).t(), writable=False, purpose="send")
