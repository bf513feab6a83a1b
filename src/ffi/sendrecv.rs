//! The eleven `nrt_async_sendrecv_*` functions.

use super::nrt_tensor_t;
use super::{c_str, guard, handle_id, id_handle, non_null};
use crate::comm::request::Kind;
use crate::comm::{COMMS, Comm};
use crate::config::{MAX_COMMS_PER_LNC, MAX_PENDING_PER_COMM};
use crate::status::{Error, NRT_STATUS, Result};
use std::ffi::{c_char, c_int};
use std::sync::Arc;

/// A communicator (opaque; the pointer is a checked handle).
#[allow(non_camel_case_types)]
pub struct nrt_async_sendrecv_comm {
    _opaque: [u8; 0],
}
#[allow(non_camel_case_types)]
pub type nrt_async_sendrecv_comm_t = nrt_async_sendrecv_comm;

/// A posted send or receive (opaque; the pointer is a checked handle).
#[allow(non_camel_case_types)]
pub struct nrt_async_sendrecv_request {
    _opaque: [u8; 0],
}
#[allow(non_camel_case_types)]
pub type nrt_async_sendrecv_request_t = nrt_async_sendrecv_request;

/// Calls `f` with the communicator of handle `p`, in place under its table slot (no reference
/// counting: every post goes through here); `f` must not look the same handle up again.
fn with_comm<R>(p: *const nrt_async_sendrecv_comm_t, f: impl FnOnce(&Arc<Comm>) -> Result<R>) -> Result<R> {
    if p.is_null() {
        return Err(Error::handle("communicator handle is NULL"));
    }
    COMMS
        .with(handle_id(p), f)
        .unwrap_or_else(|| Err(Error::handle(format!("communicator handle {p:p} is not a live communicator (closed, or never created)"))))
}

fn comm_of(p: *const nrt_async_sendrecv_comm_t) -> Result<Arc<Comm>> {
    with_comm(p, |c| Ok(c.clone()))
}

/// Writes `*out`, NULL-checked by the caller.
fn put<T>(out: *mut T, v: T) {
    // SAFETY: every caller checked `out` for NULL; it points to caller-owned storage for a T.
    unsafe { out.write(v) };
}

/// How many communicators one lnc may hold (connect and accept together, counted since init).
#[unsafe(no_mangle)]
pub extern "C" fn nrt_async_sendrecv_get_max_num_communicators_per_lnc(num: *mut c_int) -> NRT_STATUS {
    guard("nrt_async_sendrecv_get_max_num_communicators_per_lnc", || {
        non_null(num, "num")?;
        put(num, MAX_COMMS_PER_LNC as c_int);
        Ok(())
    })
}

/// How many requests one communicator may have posted and not yet reported done.
#[unsafe(no_mangle)]
pub extern "C" fn nrt_async_sendrecv_get_max_num_pending_request(num: *mut c_int) -> NRT_STATUS {
    guard("nrt_async_sendrecv_get_max_num_pending_request", || {
        non_null(num, "num")?;
        put(num, MAX_PENDING_PER_COMM as c_int);
        Ok(())
    })
}

/// Starts send/receive on logical core `lnc`: binds its port, starts its progress thread.
#[unsafe(no_mangle)]
pub extern "C" fn nrt_async_sendrecv_init(lnc: c_int) -> NRT_STATUS {
    guard("nrt_async_sendrecv_init", || crate::runtime::init(lnc))
}

/// Tears down every communicator and request of `lnc`; an error when some were unfinished.
#[unsafe(no_mangle)]
pub extern "C" fn nrt_async_sendrecv_close(lnc: c_int) -> NRT_STATUS {
    guard("nrt_async_sendrecv_close", || crate::runtime::close(lnc))
}

fn open_comm(peer_ip: *const c_char, out: *mut *mut nrt_async_sendrecv_comm_t, f: impl FnOnce(&str) -> Result<Arc<Comm>>) -> Result<()> {
    non_null(out, "communicator out-pointer")?;
    put(out, std::ptr::null_mut());
    // SAFETY: peer_ip is NULL or a C string by the API's contract.
    let ip = unsafe { c_str(peer_ip) }.ok_or_else(|| Error::invalid("peer_ip is NULL"))?;
    let comm = f(&ip)?;
    put(out, id_handle(comm.id));
    Ok(())
}

/// Creates a send communicator towards (`peer_ip`, `peer_lnc`); set-up runs in the background.
#[unsafe(no_mangle)]
pub extern "C" fn nrt_async_sendrecv_connect(
    peer_ip: *const c_char,
    peer_lnc: c_int,
    lnc: c_int,
    send_comm: *mut *mut nrt_async_sendrecv_comm_t,
) -> NRT_STATUS {
    guard("nrt_async_sendrecv_connect", || open_comm(peer_ip, send_comm, |ip| crate::runtime::connect(ip, peer_lnc, lnc)))
}

/// Creates the receive communicator matching the peer's connect; set-up runs in the background.
#[unsafe(no_mangle)]
pub extern "C" fn nrt_async_sendrecv_accept(
    peer_ip: *const c_char,
    peer_lnc: c_int,
    lnc: c_int,
    recv_comm: *mut *mut nrt_async_sendrecv_comm_t,
) -> NRT_STATUS {
    guard("nrt_async_sendrecv_accept", || open_comm(peer_ip, recv_comm, |ip| crate::runtime::accept(ip, peer_lnc, lnc)))
}

/// Polls connection set-up: `*done` becomes true once the communicator is connected.
#[unsafe(no_mangle)]
pub extern "C" fn nrt_async_sendrecv_test_comm(comm: *mut nrt_async_sendrecv_comm_t, done: *mut bool) -> NRT_STATUS {
    guard("nrt_async_sendrecv_test_comm", || {
        let c = comm_of(comm)?;
        non_null(done, "done")?;
        put(done, false);
        let ready = c.test()?;
        put(done, ready);
        Ok(())
    })
}

#[cfg(not(feature = "preload"))]
fn tensor_region(t: *const nrt_tensor_t, offset: usize, length: usize) -> Result<crate::tensor::Region> {
    super::tensor::with_handle(t, |t| t.region(offset, length))
}

#[cfg(feature = "preload")]
fn tensor_region(t: *const nrt_tensor_t, offset: usize, length: usize) -> Result<crate::tensor::Region> {
    crate::tensor::vendor::region(t as *mut std::ffi::c_void, offset, length)
}

fn post(
    kind: Kind,
    t: *const nrt_tensor_t,
    offset: usize,
    length: usize,
    comm: *mut nrt_async_sendrecv_comm_t,
    req: *mut *mut nrt_async_sendrecv_request_t,
) -> Result<()> {
    non_null(req, "request out-pointer")?;
    put(req, std::ptr::null_mut());
    let id = with_comm(comm, |c| {
        let region = tensor_region(t, offset, length).map_err(|e| Error::new(e.status, format!("{}: {}", c.describe(), e.msg)))?;
        c.post(kind, region)
    })?;
    put(req, id_handle(id));
    Ok(())
}

/// Posts a non-blocking send of `length` bytes at `offset` of `tensor`.
#[unsafe(no_mangle)]
pub extern "C" fn nrt_async_sendrecv_send_tensor(
    tensor: *mut nrt_tensor_t,
    offset: usize,
    length: usize,
    send_comm: *mut nrt_async_sendrecv_comm_t,
    request: *mut *mut nrt_async_sendrecv_request_t,
) -> NRT_STATUS {
    guard("nrt_async_sendrecv_send_tensor", || post(Kind::Send, tensor, offset, length, send_comm, request))
}

/// Posts a non-blocking receive of at most `length` bytes into `tensor` at `offset`.
#[unsafe(no_mangle)]
pub extern "C" fn nrt_async_sendrecv_recv_tensor(
    tensor: *mut nrt_tensor_t,
    offset: usize,
    length: usize,
    recv_comm: *mut nrt_async_sendrecv_comm_t,
    request: *mut *mut nrt_async_sendrecv_request_t,
) -> NRT_STATUS {
    guard("nrt_async_sendrecv_recv_tensor", || post(Kind::Recv, tensor, offset, length, recv_comm, request))
}

/// Polls a request. Once `*done` is true (success or failure) the request is freed.
#[unsafe(no_mangle)]
pub extern "C" fn nrt_async_sendrecv_test_request(
    request: *mut nrt_async_sendrecv_request_t,
    done: *mut bool,
    size: *mut usize,
) -> NRT_STATUS {
    guard("nrt_async_sendrecv_test_request", || {
        if request.is_null() {
            return Err(Error::handle("request handle is NULL"));
        }
        non_null(done, "done")?;
        non_null(size, "size")?;
        put(done, false);
        put(size, 0);
        match crate::comm::test_request(handle_id(request)) {
            Ok(None) => Ok(()),
            Ok(Some(n)) => {
                put(done, true);
                put(size, n as usize);
                Ok(())
            }
            Err(e) => {
                if e.status != NRT_STATUS::NRT_INVALID_HANDLE {
                    put(done, true);
                }
                Err(e)
            }
        }
    })
}

/// After it returns, every receive on `lnc` already reported done is fully in memory.
#[unsafe(no_mangle)]
pub extern "C" fn nrt_async_sendrecv_flush(lnc: c_int) -> NRT_STATUS {
    guard("nrt_async_sendrecv_flush", || crate::runtime::flush(lnc))
}
