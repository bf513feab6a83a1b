"""Finding and loading libnrt.so.1, and the C prototypes of its 30 functions.

Search order (the first that exists is loaded; the error names every place tried):

1. ``NRT_SENDRECV_LIBRARY``: a path to the library. When it is set, nothing else is tried.
2. ``libnrt.so.1`` beside this package (``pip install ./python`` after ``make`` copies
   ``build/lib/libnrt.so.1`` there).
3. ``libnrt.so.1`` on the dynamic loader's path (``LD_LIBRARY_PATH``, ``/etc/ld.so.cache``,
   e.g. after ``make install``).
"""

from __future__ import annotations

import ctypes
import os
import threading
from ctypes import POINTER, c_bool, c_char, c_char_p, c_int, c_size_t, c_uint32, c_uint64, c_void_p
from pathlib import Path
from typing import Any, Optional

ENV_VAR = "NRT_SENDRECV_LIBRARY"
SONAME = "libnrt.so.1"


class LibraryNotFound(OSError):
    """libnrt.so.1 could not be loaded; the message lists every place tried and why each failed."""

    def __init__(self, tried: list[tuple[str, str]]) -> None:
        self.tried = tried
        lines = [f"nrt_sendrecv: cannot load {SONAME}; tried:"]
        lines += [f"  - {where}: {why}" for where, why in tried]
        lines.append(
            f"Build it with `make` in the nrt-sendrecv checkout and either set {ENV_VAR}=<checkout>/build/lib/{SONAME}, "
            "reinstall the package (`pip install ./python` copies the library beside it), or `make install`."
        )
        super().__init__("\n".join(lines))


class NrtVersion(ctypes.Structure):
    """``nrt_version_t`` of ``nrt/nrt_version.h``."""

    _fields_ = [
        ("rt_major", c_uint64),
        ("rt_minor", c_uint64),
        ("rt_patch", c_uint64),
        ("rt_maintenance", c_uint64),
        ("rt_detail", c_char * 128),
        ("git_hash", c_char * 64),
    ]


_H = c_void_p
_PH = POINTER(c_void_p)
# name: (restype, argtypes), exactly the 30 exports of libnrt.so.1 (src/ffi/libnrt.map).
PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    "nrt_init": (c_int, [c_int, c_char_p, c_char_p]),
    "nrt_close": (c_int, []),
    "nrt_get_status_as_str": (c_char_p, [c_int]),
    "nrt_get_version": (c_int, [POINTER(NrtVersion), c_size_t]),
    "nrt_get_total_nc_count": (c_int, [POINTER(c_uint32)]),
    "nrt_get_visible_nc_count": (c_int, [POINTER(c_uint32)]),
    "nrt_get_total_vnc_count": (c_int, [POINTER(c_uint32)]),
    "nrt_get_visible_vnc_count": (c_int, [POINTER(c_uint32)]),
    "nrt_tensor_allocate": (c_int, [c_int, c_int, c_size_t, c_char_p, _PH]),
    "nrt_tensor_allocate_empty": (c_int, [c_char_p, _PH]),
    "nrt_tensor_attach_buffer": (c_int, [_H, c_void_p, c_size_t]),
    "nrt_tensor_allocate_slice": (c_int, [_H, c_size_t, c_size_t, c_char_p, _PH]),
    "nrt_tensor_free": (None, [_PH]),
    "nrt_tensor_read": (c_int, [_H, c_void_p, c_size_t, c_size_t]),
    "nrt_tensor_write": (c_int, [_H, c_void_p, c_size_t, c_size_t]),
    "nrt_tensor_get_size": (c_size_t, [_H]),
    "nrt_tensor_get_va": (c_void_p, [_H]),
    "nrt_tensor_copy": (c_int, [_H, c_size_t, _H, c_size_t, c_size_t]),
    "nrt_tensor_memset": (c_int, [_H, c_uint64, c_int, c_size_t]),
    "nrt_async_sendrecv_get_max_num_communicators_per_lnc": (c_int, [POINTER(c_int)]),
    "nrt_async_sendrecv_get_max_num_pending_request": (c_int, [POINTER(c_int)]),
    "nrt_async_sendrecv_init": (c_int, [c_int]),
    "nrt_async_sendrecv_close": (c_int, [c_int]),
    "nrt_async_sendrecv_connect": (c_int, [c_char_p, c_int, c_int, _PH]),
    "nrt_async_sendrecv_accept": (c_int, [c_char_p, c_int, c_int, _PH]),
    "nrt_async_sendrecv_test_comm": (c_int, [_H, POINTER(c_bool)]),
    "nrt_async_sendrecv_send_tensor": (c_int, [_H, c_size_t, c_size_t, _H, _PH]),
    "nrt_async_sendrecv_recv_tensor": (c_int, [_H, c_size_t, c_size_t, _H, _PH]),
    "nrt_async_sendrecv_test_request": (c_int, [_H, POINTER(c_bool), POINTER(c_size_t)]),
    "nrt_async_sendrecv_flush": (c_int, [c_int]),
}


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    missing = [name for name in PROTOTYPES if not hasattr(lib, name)]
    if missing:
        raise OSError(f"{lib._name} lacks {', '.join(missing)} (not an nrt_async_sendrecv runtime)")
    for name, (restype, argtypes) in PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


def find_and_load(env: Optional[str], package_dir: Path, soname: str = SONAME) -> tuple[ctypes.CDLL, str]:
    """Loads the library from the first place of the search order that works.

    Returns the library and a description of where it came from; raises LibraryNotFound naming
    every place tried. ``env`` is the value of NRT_SENDRECV_LIBRARY (None or empty: unset).
    """
    tried: list[tuple[str, str]] = []
    if env:
        try:
            return _declare(ctypes.CDLL(env)), os.path.abspath(env)
        except OSError as e:
            tried.append((f"{ENV_VAR}={env}", str(e)))
            raise LibraryNotFound(tried) from None
    tried.append((ENV_VAR, "not set"))
    beside = package_dir / soname
    if beside.exists():
        try:
            return _declare(ctypes.CDLL(str(beside))), str(beside)
        except OSError as e:
            tried.append((str(beside), str(e)))
    else:
        tried.append((str(beside), "no such file"))
    try:
        lib = _declare(ctypes.CDLL(soname))
    except OSError as e:
        ld = os.environ.get("LD_LIBRARY_PATH")
        tried.append((f"{soname} on the loader's path (LD_LIBRARY_PATH={ld or 'unset'}, ld.so.cache)", str(e)))
        raise LibraryNotFound(tried) from None
    return lib, _loaded_path(soname) or f"{soname} (loader's path)"


def _loaded_path(soname: str) -> Optional[str]:
    """The file the loader mapped for `soname` (from /proc/self/maps), if it can tell."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split(maxsplit=5)[-1].strip()
                if path.endswith("/" + soname):
                    return path
    except OSError:
        pass
    return None


_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_path: Optional[str] = None


def lib() -> ctypes.CDLL:
    """The loaded library (loaded at the first call)."""
    global _lib, _path
    if _lib is None:
        with _lock:
            if _lib is None:
                loaded, where = find_and_load(os.environ.get(ENV_VAR), Path(__file__).resolve().parent)
                _path = where
                _lib = loaded
    return _lib


def path() -> str:
    """Where the loaded library came from."""
    lib()
    assert _path is not None
    return _path
