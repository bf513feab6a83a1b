"""The memory behind a Python object, without copying it.

Two ways in, tried in this order:

- the buffer protocol (bytes, bytearray, memoryview, array.array, numpy arrays, ctypes arrays,
  mmap ...): ``PyObject_GetBuffer``, held until ``release()``; while it is held a bytearray cannot
  be resized and a numpy array cannot be resized or freed;
- DLPack (``__dlpack__``/``__dlpack_device__``: torch tensors, JAX/CuPy CPU arrays ...): the
  capsule is kept unconsumed until ``release()``; dropping it then runs the producer's deleter.

Only contiguous memory is accepted (C or Fortran order: one run of bytes, sent in memory order).
"""

from __future__ import annotations

import ctypes
from ctypes import POINTER, Structure, c_char, c_char_p, c_int, c_int32, c_int64, c_uint8, c_uint16, c_uint64, c_void_p
from typing import Any, Optional

_ssize = ctypes.c_ssize_t


class _PyBuffer(Structure):
    # Py_buffer (Include/pybuffer.h), stable since CPython 3.3.
    _fields_ = [
        ("buf", c_void_p),
        ("obj", c_void_p),
        ("len", _ssize),
        ("itemsize", _ssize),
        ("readonly", c_int),
        ("ndim", c_int),
        ("format", c_char_p),
        ("shape", POINTER(_ssize)),
        ("strides", POINTER(_ssize)),
        ("suboffsets", POINTER(_ssize)),
        ("internal", c_void_p),
    ]


_PyBUF_FORMAT = 0x0004
_PyBUF_STRIDES = 0x0010 | 0x0008  # with PyBUF_ND
_FLAGS = _PyBUF_STRIDES | _PyBUF_FORMAT  # PyBUF_RECORDS_RO: any layout, we check contiguity

_api = ctypes.pythonapi
_GetBuffer = _api.PyObject_GetBuffer
_GetBuffer.argtypes = [ctypes.py_object, POINTER(_PyBuffer), c_int]
_GetBuffer.restype = c_int
_Release = _api.PyBuffer_Release
_Release.argtypes = [POINTER(_PyBuffer)]
_Release.restype = None
_IsContiguous = _api.PyBuffer_IsContiguous
_IsContiguous.argtypes = [POINTER(_PyBuffer), c_char]
_IsContiguous.restype = c_int
_CheckBuffer = getattr(_api, "PyObject_CheckBuffer", None)  # a macro before 3.9, a function since
if _CheckBuffer is not None:
    _CheckBuffer.argtypes = [ctypes.py_object]
    _CheckBuffer.restype = c_int
_CapsuleGetPointer = _api.PyCapsule_GetPointer
_CapsuleGetPointer.argtypes = [ctypes.py_object, c_char_p]
_CapsuleGetPointer.restype = c_void_p


class _DLDevice(Structure):
    _fields_ = [("device_type", c_int32), ("device_id", c_int32)]


class _DLDataType(Structure):
    _fields_ = [("code", c_uint8), ("bits", c_uint8), ("lanes", c_uint16)]


class _DLTensor(Structure):
    _fields_ = [
        ("data", c_void_p),
        ("device", _DLDevice),
        ("ndim", c_int32),
        ("dtype", _DLDataType),
        ("shape", POINTER(c_int64)),
        ("strides", POINTER(c_int64)),
        ("byte_offset", c_uint64),
    ]


class _DLManagedTensor(Structure):
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", c_void_p), ("deleter", c_void_p)]


_DL_CPU, _DL_CUDA_HOST, _DL_ROCM_HOST = 1, 3, 11


def describe(obj: Any) -> str:
    """A short description of a buffer's owner for messages: type, and shape/dtype if it has them."""
    t = type(obj)
    name = t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    parts = [name]
    for attr in ("dtype", "shape"):
        v = getattr(obj, attr, None)
        if v is not None and not callable(v):
            parts.append(f"{attr} {tuple(v) if attr == 'shape' else v}")
    return ", ".join(parts)


class Export:
    """A held view of an object's memory: ``address``, ``nbytes``, ``readonly``; ``release()``
    gives it back (idempotent). Keeps the object alive meanwhile."""

    __slots__ = ("obj", "address", "nbytes", "readonly", "kind", "_view", "_capsule")

    def __init__(self, obj: Any, address: int, nbytes: int, readonly: bool, kind: str) -> None:
        self.obj: Any = obj
        self.address = address
        self.nbytes = nbytes
        self.readonly = readonly
        self.kind = kind  # "buffer" or "dlpack"
        self._view: Optional[_PyBuffer] = None
        self._capsule: Any = None

    def release(self) -> None:
        view, self._view = self._view, None
        if view is not None:
            _Release(ctypes.byref(view))
        self._capsule = None
        self.obj = None

    def __del__(self) -> None:
        # A Request always releases before it drops its Export; this is a fallback for exports
        # that were never posted (an error between export and post).
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _not_contiguous(obj: Any, view: _PyBuffer, purpose: str) -> ValueError:
    nd = view.ndim
    shape = tuple(view.shape[i] for i in range(nd)) if view.shape else ()
    strides = tuple(view.strides[i] for i in range(nd)) if view.strides else ()
    return ValueError(
        f"nrt_sendrecv: cannot {purpose} a non-contiguous buffer ({describe(obj)}; shape {shape}, "
        f"strides {strides} bytes): the library moves one run of bytes. Pass a contiguous copy "
        "(numpy.ascontiguousarray(x), x.copy(), tensor.contiguous()) or a contiguous slice."
    )


def _has_buffer(obj: Any) -> bool:
    if _CheckBuffer is not None:
        return bool(_CheckBuffer(obj))
    try:
        memoryview(obj).release()
        return True
    except TypeError:
        return False


def export(obj: Any, writable: bool, purpose: str) -> Export:
    """The contiguous memory of `obj`, held until the Export is released.

    Raises TypeError when `obj` has neither the buffer protocol nor DLPack, or when a writable
    buffer is needed and `obj` is read-only; ValueError when it is not contiguous or not in host
    memory.
    """
    if isinstance(obj, Export):
        raise TypeError("nrt_sendrecv: pass the buffer itself, not an Export")
    if _has_buffer(obj):
        view = _PyBuffer()
        _GetBuffer(obj, ctypes.byref(view), _FLAGS)  # raises the exporter's error, if any
        try:
            if view.suboffsets or not _IsContiguous(ctypes.byref(view), b"A"):
                raise _not_contiguous(obj, view, purpose)
            if writable and view.readonly:
                raise TypeError(
                    f"nrt_sendrecv: cannot {purpose} a read-only buffer ({describe(obj)}): a receive writes "
                    "into it; pass a bytearray, a writable memoryview or a writable array"
                )
        except BaseException:
            _Release(ctypes.byref(view))
            raise
        e = Export(obj, view.buf or 0, view.len, bool(view.readonly), "buffer")
        e._view = view
        return e
    if hasattr(obj, "__dlpack__"):
        return _export_dlpack(obj, purpose)
    raise TypeError(
        f"nrt_sendrecv: cannot {purpose} a {describe(obj)}: it has neither the buffer protocol nor "
        "__dlpack__ (pass bytes, bytearray, memoryview, a numpy array, or a CPU torch tensor)"
    )


def _export_dlpack(obj: Any, purpose: str) -> Export:
    dev = getattr(obj, "__dlpack_device__", None)
    if dev is not None:
        dtype_, _id = dev()
        if int(dtype_) not in (_DL_CPU, _DL_CUDA_HOST, _DL_ROCM_HOST):
            raise ValueError(
                f"nrt_sendrecv: cannot {purpose} a {describe(obj)} on DLPack device type {int(dtype_)}: only host "
                "(CPU) memory can be sent or received; copy it to the CPU first (tensor.cpu())"
            )
    capsule = obj.__dlpack__()
    ptr = _CapsuleGetPointer(capsule, b"dltensor")
    m = _DLManagedTensor.from_address(ptr)
    t = m.dl_tensor
    if t.device.device_type not in (_DL_CPU, _DL_CUDA_HOST, _DL_ROCM_HOST):
        raise ValueError(f"nrt_sendrecv: cannot {purpose} a {describe(obj)}: DLPack device type {t.device.device_type} is not host memory")
    nd = t.ndim
    shape = [t.shape[i] for i in range(nd)]
    itembytes = (t.dtype.bits * t.dtype.lanes + 7) // 8
    count = 1
    for s in shape:
        count *= s
    if t.strides and count > 1:
        strides = [t.strides[i] for i in range(nd)]
        if not (_compact(shape, strides, reversed(range(nd))) or _compact(shape, strides, range(nd))):
            raise ValueError(
                f"nrt_sendrecv: cannot {purpose} a non-contiguous buffer ({describe(obj)}; shape {tuple(shape)}, strides "
                f"{tuple(strides)} elements): the library moves one run of bytes. Pass a contiguous copy "
                "(tensor.contiguous(), numpy.ascontiguousarray(x))."
            )
    address = (t.data or 0) + t.byte_offset
    e = Export(obj, address, count * itembytes, False, "dlpack")
    e._capsule = capsule  # unconsumed: its destructor calls the producer's deleter when dropped
    return e


def _compact(shape: list[int], strides: list[int], order: Any) -> bool:
    """Whether strides (in elements) describe a dense layout, dimensions taken in `order` (innermost first)."""
    expect = 1
    for i in order:
        if shape[i] != 1 and strides[i] != expect:
            return False
        expect *= shape[i]
    return True
