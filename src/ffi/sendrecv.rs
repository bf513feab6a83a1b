//! The eleven `nrt_async_sendrecv_*` functions.

use super::nrt_tensor_t;
use super::{c_str, guard, handle_id, id_handle, non_null};
use crate::comm::request::Kind;
use crate::comm::{COMMS, Comm};
use crate::config::{MAX_COMMS_PER_LNC, MAX_PENDING_PER_COMM};
use crate::status::{Error, NRT_STATUS, Result};
use std::ffi::{c_char, c_int};
use std::sync::Arc;

/// A communicator (opaque; the pointer is a checked handle, never dereferenced).
///
/// Made by `nrt_async_sendrecv_connect` or `nrt_async_sendrecv_accept` and owned by the library:
/// there is no call that frees one alone. Its handle stays valid, also after the connection
/// failed, until `nrt_async_sendrecv_close` of its lnc or `nrt_close`; after that it is stale and
/// every call given it returns `NRT_INVALID_HANDLE`.
#[allow(non_camel_case_types)]
pub struct nrt_async_sendrecv_comm {
    _opaque: [u8; 0],
}
#[allow(non_camel_case_types)]
pub type nrt_async_sendrecv_comm_t = nrt_async_sendrecv_comm;

/// A posted send or receive (opaque; the pointer is a checked handle, never dereferenced).
///
/// Made by `nrt_async_sendrecv_send_tensor` or `nrt_async_sendrecv_recv_tensor` and owned by the
/// library: it is freed when `nrt_async_sendrecv_test_request` reports its end (`*done` true,
/// success or failure), or by `nrt_async_sendrecv_close` of its lnc or `nrt_close`. After that
/// the handle is stale (`NRT_INVALID_HANDLE`). There is no call that cancels a request.
#[allow(non_camel_case_types)]
pub struct nrt_async_sendrecv_request {
    _opaque: [u8; 0],
}
#[allow(non_camel_case_types)]
pub type nrt_async_sendrecv_request_t = nrt_async_sendrecv_request;

impl super::HandleKind for nrt_async_sendrecv_comm {
    const KIND: u64 = 2;
    const NAME: &'static str = "communicator";
}

impl super::HandleKind for nrt_async_sendrecv_request {
    const KIND: u64 = 3;
    const NAME: &'static str = "request";
}

/// Calls `f` with the communicator of handle `p`, in place under its table slot (no reference
/// counting: every post goes through here); `f` must not look the same handle up again.
fn with_comm<R>(p: *const nrt_async_sendrecv_comm_t, f: impl FnOnce(&Arc<Comm>) -> Result<R>) -> Result<R> {
    if p.is_null() {
        return Err(Error::handle("communicator handle is NULL"));
    }
    COMMS
        .with(handle_id(p)?, f)
        .unwrap_or_else(|| Err(Error::handle(format!("communicator handle {p:p} is not a live communicator (closed, or never created)"))))
}

fn comm_of(p: *const nrt_async_sendrecv_comm_t) -> Result<Arc<Comm>> {
    with_comm(p, |c| Ok(c.clone()))
}

/// Writes `v` to the caller's out-pointer `out` (the previous contents are not read or dropped).
///
/// # Safety
/// `out` must be non-NULL (callers check it with `non_null` first), aligned for `T`, and valid
/// for a write of one `T` for the duration of the call. For the C caller's out-pointers the last
/// two are the API's contract (a non-NULL out-pointer points to writable storage of its type),
/// which the library cannot check.
unsafe fn put<T>(out: *mut T, v: T) {
    // SAFETY: non-NULL, aligned and valid for writes by this function's contract.
    unsafe { out.write(v) };
}

/// Writes to `*num` how many communicators one lnc may hold: 128, `connect` and `accept`
/// together, counted since the lnc's `nrt_async_sendrecv_init` (a failed communicator keeps its
/// place until the lnc is closed). Needs no initialisation.
///
/// Returns:
/// - `NRT_SUCCESS`: `*num` is written.
/// - `NRT_INVALID`: `num` is NULL.
/// - `NRT_FAILURE`: an internal error (logged).
///
/// `num` must be NULL or point to writable storage for one int; it is not kept.
#[unsafe(no_mangle)]
// The C ABI hands us the caller's pointer; it is NULL-checked before it is written.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub extern "C" fn nrt_async_sendrecv_get_max_num_communicators_per_lnc(num: *mut c_int) -> NRT_STATUS {
    guard("nrt_async_sendrecv_get_max_num_communicators_per_lnc", || {
        non_null(num, "num")?;
        // SAFETY: `num` is non-NULL (checked above) and, by the API's contract, points to
        // writable storage for an int.
        unsafe { put(num, MAX_COMMS_PER_LNC as c_int) };
        Ok(())
    })
}

/// Writes to `*num` how many requests one communicator may have posted and not yet reported
/// done by `nrt_async_sendrecv_test_request`: 128. Needs no initialisation.
///
/// Returns:
/// - `NRT_SUCCESS`: `*num` is written.
/// - `NRT_INVALID`: `num` is NULL.
/// - `NRT_FAILURE`: an internal error (logged).
///
/// `num` must be NULL or point to writable storage for one int; it is not kept.
#[unsafe(no_mangle)]
// The C ABI hands us the caller's pointer; it is NULL-checked before it is written.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub extern "C" fn nrt_async_sendrecv_get_max_num_pending_request(num: *mut c_int) -> NRT_STATUS {
    guard("nrt_async_sendrecv_get_max_num_pending_request", || {
        non_null(num, "num")?;
        // SAFETY: `num` is non-NULL (checked above) and, by the API's contract, points to
        // writable storage for an int.
        unsafe { put(num, MAX_PENDING_PER_COMM as c_int) };
        Ok(())
    })
}

/// Starts send/receive on logical core `lnc`: reads the `NEURON_RT_ASYNC_SENDRECV_*` settings
/// from the environment, listens on TCP port `NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT` + `lnc`
/// and starts the lnc's progress thread.
///
/// Returns:
/// - `NRT_SUCCESS`: the lnc is ready for `connect` and `accept`.
/// - `NRT_INVALID`: `lnc` is outside 0..=1023; the lnc is already initialised; an environment
///   setting is malformed (named in the log); the port number would exceed 65535.
/// - `NRT_UNINITIALIZED`: `nrt_init` has not been called (not checked by the LD_PRELOAD
///   library, where `nrt_init` is the vendor's).
/// - `NRT_RESOURCE`: the port is taken (named in the log); no epoll/eventfd descriptor or
///   thread could be created.
/// - `NRT_FAILURE`: the previous `nrt_async_sendrecv_close` of this lnc returned an error (until
///   `nrt_close` and `nrt_init`); listening failed for another reason; the kernel gave no random
///   numbers (`getrandom` refused); an internal error (logged).
#[unsafe(no_mangle)]
pub extern "C" fn nrt_async_sendrecv_init(lnc: c_int) -> NRT_STATUS {
    guard("nrt_async_sendrecv_init", || crate::runtime::init(lnc))
}

/// Closes logical core `lnc`: stops its progress thread and closes and frees every communicator
/// and request of it, finished or not. Their handles become stale (`NRT_INVALID_HANDLE`); the
/// pending requests are abandoned without a report, and once this returns the library no longer
/// touches their tensors' memory. Tensors themselves are not freed.
///
/// Returns:
/// - `NRT_SUCCESS`: closed; everything had finished.
/// - `NRT_FAILURE`: closed and freed all the same, but a communicator had never finished its
///   set-up or a request was not complete (counts in the log); until `nrt_close` and `nrt_init`,
///   `nrt_async_sendrecv_init` of this lnc then returns `NRT_FAILURE`. Also an internal error.
/// - `NRT_INVALID`: `lnc` is outside 0..=1023.
/// - `NRT_UNINITIALIZED`: the lnc is not initialised (also a second close); nothing happens.
#[unsafe(no_mangle)]
pub extern "C" fn nrt_async_sendrecv_close(lnc: c_int) -> NRT_STATUS {
    guard("nrt_async_sendrecv_close", || crate::runtime::close(lnc))
}

fn open_comm(peer_ip: *const c_char, out: *mut *mut nrt_async_sendrecv_comm_t, f: impl FnOnce(&str) -> Result<Arc<Comm>>) -> Result<()> {
    non_null(out, "communicator out-pointer")?;
    // SAFETY: `out` is non-NULL (checked above) and, by the API's contract, points to writable
    // storage for a communicator pointer.
    unsafe { put(out, std::ptr::null_mut()) };
    // SAFETY: peer_ip is NULL or a C string by the API's contract.
    let ip = unsafe { c_str(peer_ip) }.ok_or_else(|| Error::invalid("peer_ip is NULL"))?;
    let comm = f(&ip)?;
    // SAFETY: as for the first write.
    unsafe { put(out, id_handle(comm.id)) };
    Ok(())
}

/// Creates a send communicator from `lnc` to (`peer_ip`, `peer_lnc`) and writes its handle to
/// `*send_comm`. Returns at once: the connection is set up in the background; poll
/// `nrt_async_sendrecv_test_comm` until `*done`, which also reports set-up failures. The k-th
/// `connect` of one lnc to a peer lnc pairs with that peer's k-th matching `accept`.
///
/// `peer_ip`: an IPv4 or IPv6 address (brackets allowed) or a host name, resolved here (which
/// may block); the string is read during the call only.
///
/// Returns:
/// - `NRT_SUCCESS`: `*send_comm` is the new communicator (set-up still running).
/// - `NRT_INVALID`: `send_comm` or `peer_ip` is NULL; `lnc` or `peer_lnc` is outside 0..=1023;
///   `peer_ip` is not an address and does not resolve; the peer's port would exceed 65535.
/// - `NRT_UNINITIALIZED`: `lnc` is not initialised.
/// - `NRT_RESOURCE`: the lnc already holds 128 communicators; a handle table is full.
/// - `NRT_FAILURE`: an internal error (logged).
///
/// When `send_comm` is not NULL, `*send_comm` is NULL after any failure. The communicator
/// belongs to the library (see `nrt_async_sendrecv_comm`): valid until its lnc is closed.
#[unsafe(no_mangle)]
pub extern "C" fn nrt_async_sendrecv_connect(
    peer_ip: *const c_char,
    peer_lnc: c_int,
    lnc: c_int,
    send_comm: *mut *mut nrt_async_sendrecv_comm_t,
) -> NRT_STATUS {
    guard("nrt_async_sendrecv_connect", || open_comm(peer_ip, send_comm, |ip| crate::runtime::connect(ip, peer_lnc, lnc)))
}

/// Creates a receive communicator on `lnc` for the connection from (`peer_ip`, `peer_lnc`) and
/// writes its handle to `*recv_comm`. Returns at once: the peer's matching `connect` (the k-th
/// `accept` pairs with the peer's k-th `connect` to this lnc), earlier or later, completes it in
/// the background; poll `nrt_async_sendrecv_test_comm` until `*done`.
///
/// `peer_ip`: the address the connection must come from, as an IPv4 or IPv6 address (brackets
/// allowed) or a host name, resolved here (which may block); read during the call only.
/// Connections from elsewhere never pair (the accept then ends in `NRT_TIMEOUT`).
///
/// Returns:
/// - `NRT_SUCCESS`: `*recv_comm` is the new communicator (set-up still running).
/// - `NRT_INVALID`: `recv_comm` or `peer_ip` is NULL; `lnc` or `peer_lnc` is outside 0..=1023;
///   `peer_ip` is not an address and does not resolve.
/// - `NRT_UNINITIALIZED`: `lnc` is not initialised.
/// - `NRT_RESOURCE`: the lnc already holds 128 communicators; a handle table is full.
/// - `NRT_FAILURE`: an internal error (logged).
///
/// When `recv_comm` is not NULL, `*recv_comm` is NULL after any failure. The communicator
/// belongs to the library (see `nrt_async_sendrecv_comm`): valid until its lnc is closed.
#[unsafe(no_mangle)]
pub extern "C" fn nrt_async_sendrecv_accept(
    peer_ip: *const c_char,
    peer_lnc: c_int,
    lnc: c_int,
    recv_comm: *mut *mut nrt_async_sendrecv_comm_t,
) -> NRT_STATUS {
    guard("nrt_async_sendrecv_accept", || open_comm(peer_ip, recv_comm, |ip| crate::runtime::accept(ip, peer_lnc, lnc)))
}

/// Polls a communicator's connection set-up: `*done` becomes true once it is connected, and
/// then stays true (a connection that fails later shows it on posts and requests).
///
/// Returns:
/// - `NRT_SUCCESS`: `*done` is true when connected, false while set-up is still running.
/// - `NRT_INVALID_HANDLE`: `comm` is NULL, stale (its lnc was closed) or forged; `*done` is
///   not written.
/// - `NRT_INVALID`: `done` is NULL.
/// - `NRT_TIMEOUT`: no connection within `NEURON_RT_ASYNC_SENDRECV_CONNECT_TIMEOUT_MS` (no
///   matching peer call, or a connection from another address); every later call says so again.
/// - `NRT_FAILURE`: set-up failed (the peer refused the handshake: wrong lnc, other protocol
///   version, authentication, a required transport unavailable; with
///   `NEURON_RT_ASYNC_SENDRECV_AUTH_SECRET`, the peer did not prove the secret, or one side has
///   none; the connection broke; the kernel gave no random numbers); every later call says so
///   again. Also an internal error (logged).
/// - `NRT_RESOURCE`: set-up ran out of a resource (a thread, a shared-memory channel, RDMA
///   device resources); every later call says so again.
///
/// On a failure `*done` is false when `done` is not NULL. A failed communicator stays valid
/// until its lnc is closed (its place among the lnc's 128 too).
#[unsafe(no_mangle)]
// The C ABI hands us the caller's pointer; it is NULL-checked before it is written.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub extern "C" fn nrt_async_sendrecv_test_comm(comm: *mut nrt_async_sendrecv_comm_t, done: *mut bool) -> NRT_STATUS {
    guard("nrt_async_sendrecv_test_comm", || {
        let c = comm_of(comm)?;
        non_null(done, "done")?;
        // SAFETY: `done` is non-NULL (checked above) and, by the API's contract, points to
        // writable storage for a bool.
        unsafe { put(done, false) };
        let ready = c.test()?;
        // SAFETY: as above.
        unsafe { put(done, ready) };
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
    // SAFETY: `req` is non-NULL (checked above) and, by the API's contract, points to writable
    // storage for a request pointer.
    unsafe { put(req, std::ptr::null_mut()) };
    let id = with_comm(comm, |c| {
        let region = tensor_region(t, offset, length).map_err(|e| Error::new(e.status, format!("{}: {}", c.describe(), e.msg)))?;
        c.post(kind, region)
    })?;
    // SAFETY: as for the first write.
    unsafe { put(req, id_handle(id)) };
    Ok(())
}

/// Posts a non-blocking send of the `length` bytes at `offset` of `tensor` on `send_comm` and
/// writes the request's handle to `*request`; poll it with `nrt_async_sendrecv_test_request`.
/// Sends pair with the peer's receives in posting order, per communicator. `length` 0 is a
/// valid message.
///
/// Returns:
/// - `NRT_SUCCESS`: posted; `*request` is the new request. (A transport error while posting
///   fails the communicator; the request then reports it.)
/// - `NRT_INVALID`: `request` is NULL; `offset` + `length` is beyond the tensor's size
///   (overflow-checked; a tensor without memory has size 0); `send_comm` is a receive
///   communicator; its set-up has not finished (poll `nrt_async_sendrecv_test_comm`); `length`
///   exceeds the transport's message limit (2^48 bytes; 512 GiB over libfabric).
/// - `NRT_INVALID_HANDLE`: `send_comm` or `tensor` is NULL, stale or forged.
/// - `NRT_RESOURCE`: 128 requests of this communicator are posted and not yet reported done.
/// - `NRT_FAILURE`: the communicator failed earlier (set-up failed, the peer went away, a
///   request timed out); in the LD_PRELOAD library, the vendor's `nrt_tensor_*` functions
///   were not found; an internal error (logged).
///
/// When `request` is not NULL, `*request` is NULL after any failure. The tensor stays the
/// caller's; the library keeps memory it allocated alive until the request ends, even if the
/// tensor is freed meanwhile, but a buffer given by `nrt_tensor_attach_buffer` (or, with the
/// LD_PRELOAD library, the vendor's tensor) must stay valid, and the range must not be
/// written, until `nrt_async_sendrecv_test_request` reports the request's end (or the lnc is
/// closed). The request belongs to the library (see `nrt_async_sendrecv_request`).
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

/// Posts a non-blocking receive of at most `length` bytes into `tensor` at `offset` on
/// `recv_comm` and writes the request's handle to `*request`; poll it with
/// `nrt_async_sendrecv_test_request`, whose `*size` gives the bytes received. Receives pair with
/// the peer's sends in posting order, per communicator; a receive shorter than its send fails
/// (both requests end with `NRT_FAILURE`, nothing is written).
///
/// Returns:
/// - `NRT_SUCCESS`: posted; `*request` is the new request. (A transport error while posting
///   fails the communicator; the request then reports it.)
/// - `NRT_INVALID`: `request` is NULL; `offset` + `length` is beyond the tensor's size
///   (overflow-checked; a tensor without memory has size 0); `recv_comm` is a send
///   communicator; its set-up has not finished (poll `nrt_async_sendrecv_test_comm`); `length`
///   exceeds the transport's message limit (2^48 bytes; 512 GiB over libfabric).
/// - `NRT_INVALID_HANDLE`: `recv_comm` or `tensor` is NULL, stale or forged.
/// - `NRT_RESOURCE`: 128 requests of this communicator are posted and not yet reported done.
/// - `NRT_FAILURE`: the communicator failed earlier (set-up failed, the peer went away, a
///   request timed out); in the LD_PRELOAD library, the vendor's `nrt_tensor_*` functions
///   were not found; an internal error (logged).
///
/// When `request` is not NULL, `*request` is NULL after any failure. The tensor stays the
/// caller's; the library keeps memory it allocated alive until the request ends, even if the
/// tensor is freed meanwhile, but a buffer given by `nrt_tensor_attach_buffer` (or, with the
/// LD_PRELOAD library, the vendor's tensor) must stay valid, and the range must not be read or
/// written, until `nrt_async_sendrecv_test_request` reports the request's end (or the lnc is
/// closed). The request belongs to the library (see `nrt_async_sendrecv_request`).
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

/// Polls a request (and moves its bytes on the caller's thread). Once it reports the request's
/// end, `*done` true with success or failure, the request is freed and its handle is stale:
/// testing it again returns `NRT_INVALID_HANDLE`.
///
/// Returns:
/// - `NRT_SUCCESS`: `*done` false: still pending (`*size` 0). `*done` true: complete, `*size`
///   is the bytes moved (for a receive, the length of the matching send).
/// - `NRT_INVALID_HANDLE`: `request` is NULL (nothing written), stale (already reported, or
///   its lnc closed) or forged (`*done` false, `*size` 0).
/// - `NRT_INVALID`: `done` or `size` is NULL; the request is not tested, nothing written.
/// - `NRT_FAILURE`, with `*done` true: the request failed: the peer went away or broke the
///   protocol, a receive was shorter than its matching send (both fail), the communicator
///   failed. With `*done` false: an internal error (logged); the request stays valid.
/// - `NRT_TIMEOUT`, with `*done` true: the request was not complete within
///   `NEURON_RT_ASYNC_SENDRECV_REQUEST_TIMEOUT_MS` of its posting (0: no deadline); the
///   communicator fails (FIFO pairing is lost): its other pending requests end with
///   `NRT_TIMEOUT` too, later posts on it return `NRT_FAILURE`.
/// - `NRT_RESOURCE`, with `*done` true: the transport found no memory for it (a shared-memory
///   staging buffer; an RDMA memory registration, which fails the communicator too).
/// - `NRT_CLOSED`, with `*done` true: its lnc was being closed at the same time.
/// - with `*done` true, any other status that failed the request's communicator (e.g.
///   `NRT_INVALID` for an RDMA registration of device memory, in the LD_PRELOAD library).
///
/// A request that ended with an error has `*done` true and `*size` 0 and is freed like a
/// successful one. Once `*done` is true the tensor range may be used and freed again.
#[unsafe(no_mangle)]
// The C ABI hands us the caller's pointers; they are NULL-checked before they are written.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
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
        // SAFETY: `done` and `size` are non-NULL (checked above) and, by the API's contract,
        // point to writable storage for a bool and a size_t (so for the writes below too).
        unsafe {
            put(done, false);
            put(size, 0);
        }
        match crate::comm::test_request(handle_id(request)?) {
            Ok(None) => Ok(()),
            Ok(Some(n)) => {
                // SAFETY: as above.
                unsafe {
                    put(done, true);
                    put(size, n as usize);
                }
                Ok(())
            }
            Err(e) => {
                if e.status != NRT_STATUS::NRT_INVALID_HANDLE {
                    // SAFETY: as above.
                    unsafe { put(done, true) };
                }
                Err(e)
            }
        }
    })
}

/// After it returns, the bytes of every receive on `lnc` that `nrt_async_sendrecv_test_request`
/// already reported done are visible to every thread (a full fence), and acknowledgements the
/// caller's polls left queued are sent. It does not wait for pending requests.
///
/// Returns:
/// - `NRT_SUCCESS`.
/// - `NRT_INVALID`: `lnc` is outside 0..=1023.
/// - `NRT_UNINITIALIZED`: `lnc` is not initialised.
/// - `NRT_FAILURE`: an internal error (logged).
#[unsafe(no_mangle)]
pub extern "C" fn nrt_async_sendrecv_flush(lnc: c_int) -> NRT_STATUS {
    guard("nrt_async_sendrecv_flush", || crate::runtime::flush(lnc))
}
