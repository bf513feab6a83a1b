//! Every `unsafe` of the tool lives here: the `extern "C"` declarations of the public
//! nrt / nrt_async_sendrecv API (checked against include/nrt/*.h), safe wrappers around them,
//! and the few libc calls the tool needs (getrusage, prctl, getppid, sysconf, setenv).
//!
//! The wrappers never hand out Rust references into tensor memory: tensor contents are written
//! and read through `nrt_tensor_write`/`nrt_tensor_read`/`nrt_tensor_memset`, so memory that the
//! library may be filling in the background is never aliased by a Rust slice. Handles are opaque
//! ids in this library (stale ones give NRT_INVALID_HANDLE, never undefined behaviour), and a
//! tensor freed while a transfer uses it stays mapped until the transfer ends (docs/semantics.md).

use std::ffi::{CString, c_char, c_int, c_void};
use std::fmt;
use std::marker::{PhantomData, PhantomPinned};
use std::ptr;

/// `NRT_STATUS` is an int-sized C enum; 0 is NRT_SUCCESS.
type NrtStatus = c_int;

const NRT_SUCCESS: NrtStatus = 0;
/// `NRT_FRAMEWORK_TYPE_NO_FW`
const FRAMEWORK_NO_FW: c_int = 1;
/// `NRT_TENSOR_PLACEMENT_HOST`
const PLACEMENT_HOST: c_int = 1;

#[repr(C)]
struct RawComm {
    _data: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

#[repr(C)]
struct RawRequest {
    _data: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

#[repr(C)]
struct RawTensor {
    _data: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

// Linked against libnrt.so.1 by build.rs (`-l:libnrt.so.1`).
unsafe extern "C" {
    fn nrt_init(framework: c_int, fw_version: *const c_char, fal_version: *const c_char) -> NrtStatus;
    fn nrt_close() -> NrtStatus;

    fn nrt_tensor_allocate(
        placement: c_int,
        vnc: c_int,
        size: usize,
        name: *const c_char,
        tensor: *mut *mut RawTensor,
    ) -> NrtStatus;
    fn nrt_tensor_free(tensor: *mut *mut RawTensor);
    fn nrt_tensor_read(tensor: *const RawTensor, buf: *mut c_void, offset: usize, size: usize) -> NrtStatus;
    fn nrt_tensor_write(tensor: *mut RawTensor, buf: *const c_void, offset: usize, size: usize) -> NrtStatus;
    fn nrt_tensor_get_size(tensor: *const RawTensor) -> usize;
    fn nrt_tensor_memset(tensor: *mut RawTensor, offset: u64, value: c_int, size: usize) -> NrtStatus;

    fn nrt_async_sendrecv_get_max_num_communicators_per_lnc(num: *mut c_int) -> NrtStatus;
    fn nrt_async_sendrecv_get_max_num_pending_request(num: *mut c_int) -> NrtStatus;
    fn nrt_tensor_allocate_empty(name: *const c_char, tensor: *mut *mut RawTensor) -> NrtStatus;
    fn nrt_tensor_attach_buffer(tensor: *mut RawTensor, buffer: *mut c_void, size: usize) -> NrtStatus;
    fn nrt_async_sendrecv_init(lnc: c_int) -> NrtStatus;
    fn nrt_async_sendrecv_close(lnc: c_int) -> NrtStatus;
    fn nrt_async_sendrecv_connect(
        peer_ip: *const c_char,
        peer_lnc: c_int,
        lnc: c_int,
        send_comm: *mut *mut RawComm,
    ) -> NrtStatus;
    fn nrt_async_sendrecv_accept(
        peer_ip: *const c_char,
        peer_lnc: c_int,
        lnc: c_int,
        recv_comm: *mut *mut RawComm,
    ) -> NrtStatus;
    fn nrt_async_sendrecv_test_comm(comm: *mut RawComm, done: *mut bool) -> NrtStatus;
    fn nrt_async_sendrecv_send_tensor(
        tensor: *mut RawTensor,
        offset: usize,
        length: usize,
        send_comm: *mut RawComm,
        request: *mut *mut RawRequest,
    ) -> NrtStatus;
    fn nrt_async_sendrecv_recv_tensor(
        tensor: *mut RawTensor,
        offset: usize,
        length: usize,
        recv_comm: *mut RawComm,
        request: *mut *mut RawRequest,
    ) -> NrtStatus;
    fn nrt_async_sendrecv_test_request(request: *mut RawRequest, done: *mut bool, size: *mut usize) -> NrtStatus;
    fn nrt_async_sendrecv_flush(lnc: c_int) -> NrtStatus;
}

/// A non-success status returned by a named API function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NrtError {
    pub func: &'static str,
    pub status: i32,
}

impl fmt::Display for NrtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed with status {} ({})", self.func, self.status, status_name(self.status))
    }
}

impl std::error::Error for NrtError {}

/// The `NRT_STATUS` enumerator name of a code (nrt/nrt_status.h).
/// connect and accept share a signature, and so do send_tensor and recv_tensor.
type OpenComm = unsafe extern "C" fn(*const c_char, c_int, c_int, *mut *mut RawComm) -> NrtStatus;
type PostTensor = unsafe extern "C" fn(*mut RawTensor, usize, usize, *mut RawComm, *mut *mut RawRequest) -> NrtStatus;

pub fn status_name(code: i32) -> &'static str {
    match code {
        0 => "NRT_SUCCESS",
        1 => "NRT_FAILURE",
        2 => "NRT_INVALID",
        3 => "NRT_INVALID_HANDLE",
        4 => "NRT_RESOURCE",
        5 => "NRT_TIMEOUT",
        6 => "NRT_HW_ERROR",
        7 => "NRT_QUEUE_FULL",
        9 => "NRT_LOAD_NOT_ENOUGH_NC",
        10 => "NRT_UNSUPPORTED_NEFF_VERSION",
        11 => "NRT_FAIL_HOST_MEM_ALLOC",
        13 => "NRT_UNINITIALIZED",
        14 => "NRT_CLOSED",
        15 => "NRT_QUEUE_EMPTY",
        101 => "NRT_EXEC_UNIT_UNRECOVERABLE",
        1002 => "NRT_EXEC_BAD_INPUT",
        1003 => "NRT_EXEC_COMPLETED_WITH_NUM_ERR",
        1004 => "NRT_EXEC_COMPLETED_WITH_ERR",
        1005 => "NRT_EXEC_NC_BUSY",
        1006 => "NRT_EXEC_OOB",
        1100 => "NRT_COLL_PENDING",
        1200 => "NRT_EXEC_HW_ERR_COLLECTIVES",
        1201 => "NRT_EXEC_HW_ERR_HBM_UE",
        1202 => "NRT_EXEC_HW_ERR_NC_UE",
        1203 => "NRT_EXEC_HW_ERR_DMA_ABORT",
        1204 => "NRT_EXEC_SW_NQ_OVERFLOW",
        1205 => "NRT_EXEC_HW_ERR_REPAIRABLE_HBM_UE",
        1206 => "NRT_NETWORK_PROXY_FAILURE",
        _ => "unknown status",
    }
}

fn check(func: &'static str, status: NrtStatus) -> Result<(), NrtError> {
    if status == NRT_SUCCESS { Ok(()) } else { Err(NrtError { func, status }) }
}

fn c_string(func: &'static str, s: &str) -> Result<CString, NrtError> {
    // An interior NUL cannot be passed to C; report it as the API would (NRT_INVALID).
    CString::new(s).map_err(|_| NrtError { func, status: 2 })
}

/// `nrt_init` on creation; `nrt_close` when closed or dropped.
pub struct Runtime {
    open: bool,
}

impl Runtime {
    pub fn init() -> Result<Runtime, NrtError> {
        // SAFETY: the version strings are NUL-terminated literals that outlive the call; the
        // framework value is a valid nrt_framework_type_t.
        let st = unsafe { nrt_init(FRAMEWORK_NO_FW, c"1.0".as_ptr(), c"1.0".as_ptr()) };
        check("nrt_init", st)?;
        Ok(Runtime { open: true })
    }

    pub fn max_communicators_per_lnc(&self) -> Result<i32, NrtError> {
        let mut n: c_int = 0;
        // SAFETY: `n` is a valid, writable int for the duration of the call.
        let st = unsafe { nrt_async_sendrecv_get_max_num_communicators_per_lnc(&mut n) };
        check("nrt_async_sendrecv_get_max_num_communicators_per_lnc", st)?;
        Ok(n)
    }

    pub fn max_pending_requests(&self) -> Result<i32, NrtError> {
        let mut n: c_int = 0;
        // SAFETY: `n` is a valid, writable int for the duration of the call.
        let st = unsafe { nrt_async_sendrecv_get_max_num_pending_request(&mut n) };
        check("nrt_async_sendrecv_get_max_num_pending_request", st)?;
        Ok(n)
    }

    pub fn close(mut self) -> Result<(), NrtError> {
        self.open = false;
        // SAFETY: no arguments; the runtime was initialised by `init`.
        check("nrt_close", unsafe { nrt_close() })
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if self.open {
            // SAFETY: no arguments; best-effort tear-down on an error path (status ignored).
            let _ = unsafe { nrt_close() };
        }
    }
}

/// An initialised logical core: `nrt_async_sendrecv_init` on creation, `..._close` when
/// closed or dropped.
pub struct Lnc {
    id: i32,
    open: bool,
}

impl Lnc {
    pub fn init(_rt: &Runtime, id: i32) -> Result<Lnc, NrtError> {
        // SAFETY: plain integer argument.
        check("nrt_async_sendrecv_init", unsafe { nrt_async_sendrecv_init(id) })?;
        Ok(Lnc { id, open: true })
    }

    pub fn connect(&self, peer_ip: &str, peer_lnc: i32) -> Result<Comm, NrtError> {
        self.open_comm("nrt_async_sendrecv_connect", nrt_async_sendrecv_connect, peer_ip, peer_lnc)
    }

    pub fn accept(&self, peer_ip: &str, peer_lnc: i32) -> Result<Comm, NrtError> {
        self.open_comm("nrt_async_sendrecv_accept", nrt_async_sendrecv_accept, peer_ip, peer_lnc)
    }

    /// connect or accept (`open`, named `func`): the same arguments, a communicator out.
    fn open_comm(&self, func: &'static str, open: OpenComm, peer_ip: &str, peer_lnc: i32) -> Result<Comm, NrtError> {
        let ip = c_string(func, peer_ip)?;
        let mut raw: *mut RawComm = ptr::null_mut();
        // SAFETY: `open` is connect or accept; `ip` is a NUL-terminated string alive for the
        // call; `raw` is a valid out-pointer.
        let st = unsafe { open(ip.as_ptr(), peer_lnc, self.id, &mut raw) };
        check(func, st)?;
        Ok(Comm { raw })
    }

    pub fn flush(&self) -> Result<(), NrtError> {
        // SAFETY: plain integer argument.
        check("nrt_async_sendrecv_flush", unsafe { nrt_async_sendrecv_flush(self.id) })
    }

    pub fn close(mut self) -> Result<(), NrtError> {
        self.open = false;
        // SAFETY: plain integer argument; every handle of this lnc is dead afterwards and the
        // `Comm`s borrowed nothing from `self`, but they are no longer used by the caller.
        check("nrt_async_sendrecv_close", unsafe { nrt_async_sendrecv_close(self.id) })
    }
}

impl Drop for Lnc {
    fn drop(&mut self) {
        if self.open {
            // SAFETY: plain integer argument; best-effort tear-down on an error path.
            let _ = unsafe { nrt_async_sendrecv_close(self.id) };
        }
    }
}

/// A communicator handle (owned by its lnc; freed by `nrt_async_sendrecv_close`).
pub struct Comm {
    raw: *mut RawComm,
}

impl Comm {
    /// Polls connection set-up; `true` once connected.
    pub fn test(&self) -> Result<bool, NrtError> {
        let mut done = false;
        // SAFETY: `raw` came from connect/accept (a checked handle; a stale one is reported as
        // NRT_INVALID_HANDLE); `done` is a valid out-pointer.
        let st = unsafe { nrt_async_sendrecv_test_comm(self.raw, &mut done) };
        check("nrt_async_sendrecv_test_comm", st)?;
        Ok(done)
    }

    /// Posts a send of `len` bytes at `offset` of `t`.
    pub fn send(&self, t: &Tensor, offset: usize, len: usize) -> Result<Request, NrtError> {
        self.post("nrt_async_sendrecv_send_tensor", nrt_async_sendrecv_send_tensor, t, offset, len)
    }

    /// Posts a receive of at most `len` bytes into `t` at `offset`.
    pub fn recv(&self, t: &Tensor, offset: usize, len: usize) -> Result<Request, NrtError> {
        self.post("nrt_async_sendrecv_recv_tensor", nrt_async_sendrecv_recv_tensor, t, offset, len)
    }

    /// send_tensor or recv_tensor (`post`, named `func`).
    fn post(
        &self,
        func: &'static str,
        post: PostTensor,
        t: &Tensor,
        offset: usize,
        len: usize,
    ) -> Result<Request, NrtError> {
        let mut raw: *mut RawRequest = ptr::null_mut();
        // SAFETY: `post` is send_tensor or recv_tensor; handles come from the library (checked
        // ids); `raw` is a valid out-pointer. The library keeps the tensor's memory alive for the
        // transfer even if `t` is freed, and writes into `t` only through its own mapping (this
        // tool never holds a Rust reference into tensor memory).
        let st = unsafe { post(t.raw, offset, len, self.raw, &mut raw) };
        check(func, st)?;
        Ok(Request { raw, finished: false })
    }
}

/// A posted send or receive. `test` reports completion once; the library frees the request then.
pub struct Request {
    raw: *mut RawRequest,
    finished: bool,
}

impl Request {
    /// `Ok(Some(bytes))` once done, `Ok(None)` while in flight.
    #[inline]
    pub fn test(&mut self) -> Result<Option<usize>, NrtError> {
        const F: &str = "nrt_async_sendrecv_test_request";
        if self.finished {
            // Never test a finished request again (docs/semantics.md): report it as the library would.
            return Err(NrtError { func: F, status: 3 });
        }
        let mut done = false;
        let mut size: usize = 0;
        // SAFETY: `raw` came from send/recv and has not been reported done (checked above);
        // `done` and `size` are valid out-pointers; one thread tests one request at a time.
        let st = unsafe { nrt_async_sendrecv_test_request(self.raw, &mut done, &mut size) };
        if done {
            // Once done (success or failure) the request is gone.
            self.finished = true;
        }
        check(F, st)?;
        Ok(if done { Some(size) } else { None })
    }
}

/// A host tensor (`nrt_tensor_allocate`, HOST placement, or an empty one with a buffer of ours
/// attached), freed on drop.
pub struct Tensor {
    raw: *mut RawTensor,
    size: usize,
    /// The attached buffer (posix_memalign), freed after the tensor; null for allocated ones.
    buf: *mut c_void,
}

impl Tensor {
    pub fn allocate(size: usize, name: &str) -> Result<Tensor, NrtError> {
        const F: &str = "nrt_tensor_allocate";
        let cname = c_string(F, name)?;
        let mut raw: *mut RawTensor = ptr::null_mut();
        // SAFETY: `cname` is NUL-terminated and alive for the call; `raw` is a valid out-pointer.
        let st = unsafe { nrt_tensor_allocate(PLACEMENT_HOST, 0, size, cname.as_ptr(), &mut raw) };
        check(F, st)?;
        let t = Tensor { raw, size, buf: ptr::null_mut() };
        // SAFETY: `raw` is the handle just returned.
        let got = unsafe { nrt_tensor_get_size(t.raw) };
        if got != size {
            // Reported as the API's "bad handle" answer would be.
            return Err(NrtError { func: "nrt_tensor_get_size", status: 1 });
        }
        Ok(t)
    }

    /// An empty tensor with a page-aligned buffer of `size` bytes from this program attached.
    pub fn attached(size: usize, name: &str) -> Result<Tensor, NrtError> {
        const F: &str = "nrt_tensor_allocate_empty";
        let cname = c_string(F, name)?;
        let mut raw: *mut RawTensor = ptr::null_mut();
        // SAFETY: `cname` is NUL-terminated and alive for the call; `raw` is a valid out-pointer.
        check(F, unsafe { nrt_tensor_allocate_empty(cname.as_ptr(), &mut raw) })?;
        let mut t = Tensor { raw, size, buf: ptr::null_mut() };
        let mut buf: *mut c_void = ptr::null_mut();
        // SAFETY: `buf` is a valid out-pointer; the alignment is a power of two.
        if unsafe { libc::posix_memalign(&mut buf, 4096, size.max(1)) } != 0 {
            // Reported as the API's allocation failure would be.
            return Err(NrtError { func: "posix_memalign", status: 4 });
        }
        t.buf = buf;
        // SAFETY: `buf` holds `size` bytes and outlives the tensor (freed after it, in drop).
        check("nrt_tensor_attach_buffer", unsafe { nrt_tensor_attach_buffer(t.raw, buf, size) })?;
        Ok(t)
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Copies `buf` into the tensor at `offset`.
    pub fn write(&self, offset: usize, buf: &[u8]) -> Result<(), NrtError> {
        // SAFETY: `buf` is valid for `buf.len()` bytes of reading for the call; the library
        // checks the range against the tensor's size.
        let st = unsafe { nrt_tensor_write(self.raw, buf.as_ptr().cast(), offset, buf.len()) };
        check("nrt_tensor_write", st)
    }

    /// Copies `buf.len()` bytes of the tensor at `offset` into `buf`.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), NrtError> {
        // SAFETY: `buf` is valid for `buf.len()` bytes of writing for the call; the library
        // checks the range against the tensor's size.
        let st = unsafe { nrt_tensor_read(self.raw, buf.as_mut_ptr().cast(), offset, buf.len()) };
        check("nrt_tensor_read", st)
    }

    /// Sets `len` bytes at `offset` to `value` (touches the pages).
    pub fn memset(&self, offset: usize, value: u8, len: usize) -> Result<(), NrtError> {
        // SAFETY: plain values and a library handle; the library checks the range.
        let st = unsafe { nrt_tensor_memset(self.raw, offset as u64, c_int::from(value), len) };
        check("nrt_tensor_memset", st)
    }
}

impl Drop for Tensor {
    fn drop(&mut self) {
        // SAFETY: `self.raw` is a handle from nrt_tensor_allocate, freed exactly once here
        // (the library sets it to NULL; a stale handle would only be logged).
        unsafe { nrt_tensor_free(&mut self.raw) };
        if !self.buf.is_null() {
            // SAFETY: from posix_memalign, freed once, after the tensor that used it.
            unsafe { libc::free(self.buf) };
        }
    }
}

// ------------------------------------------------------------------ libc

/// User + system CPU seconds of this process so far (getrusage RUSAGE_SELF).
pub fn cpu_seconds() -> f64 {
    // SAFETY: `rusage` is plain old data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The page size in bytes (for /proc/self/statm).
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 { v as u64 } else { 4096 }
}

/// Asks the kernel to SIGKILL this process when its parent exits, then checks the parent is
/// still `parent_pid` (it may have died before the request). Returns false when it is not.
pub fn die_with_parent(parent_pid: u32) -> bool {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number; the remaining arguments are unused.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() };
    rc == 0 && ppid as u32 == parent_pid
}

/// Sets an environment variable. Call only while the process is single-threaded (before the
/// library is initialised and before any thread is spawned).
pub fn set_env(key: &str, value: &str) {
    // SAFETY: the caller runs this at start-up, before any other thread exists (the library's
    // progress threads start in nrt_async_sendrecv_init, later), so nothing reads the
    // environment concurrently.
    unsafe { std::env::set_var(key, value) };
}
