//! The status codes and out-pointer rules the exported functions document, on the paths that need
//! no lnc (the runtime's tests, running on other threads, own the lncs and `nrt_init`/`nrt_close`).

use super::sendrecv::*;
use super::tensor::*;
use super::*;
use crate::status::NRT_STATUS::*;
use std::ffi::{c_int, c_void};
use std::ptr::{null, null_mut};

/// A handle no table has handed out (generation 0x7fff_fff0 of slot 0x00ff_fff0).
const FORGED: usize = 0x7fff_fff0_00ff_fff0;

fn tensor(size: usize) -> *mut nrt_tensor_t {
    let mut t = null_mut();
    assert_eq!(nrt_tensor_allocate(PlacementArg(1), 0, size, c"t".as_ptr(), &mut t), NRT_SUCCESS);
    assert!(!t.is_null());
    t
}

#[test]
fn limits_and_null_out_pointers() {
    let mut n: c_int = 0;
    assert_eq!(nrt_async_sendrecv_get_max_num_communicators_per_lnc(&mut n), NRT_SUCCESS);
    assert_eq!(n, 128);
    n = 0;
    assert_eq!(nrt_async_sendrecv_get_max_num_pending_request(&mut n), NRT_SUCCESS);
    assert_eq!(n, 128);
    assert_eq!(nrt_async_sendrecv_get_max_num_communicators_per_lnc(null_mut()), NRT_INVALID);
    assert_eq!(nrt_async_sendrecv_get_max_num_pending_request(null_mut()), NRT_INVALID);
}

#[test]
fn lnc_out_of_range_is_invalid() {
    for lnc in [-1, 1024, c_int::MAX] {
        assert_eq!(nrt_async_sendrecv_init(lnc), NRT_INVALID);
        assert_eq!(nrt_async_sendrecv_close(lnc), NRT_INVALID);
        assert_eq!(nrt_async_sendrecv_flush(lnc), NRT_INVALID);
    }
    let mut c = FORGED as *mut nrt_async_sendrecv_comm_t;
    assert_eq!(nrt_async_sendrecv_connect(c"127.0.0.1".as_ptr(), 0, -1, &mut c), NRT_INVALID);
    assert!(c.is_null(), "*send_comm is NULL after a failure");
    c = FORGED as *mut _;
    assert_eq!(nrt_async_sendrecv_accept(c"127.0.0.1".as_ptr(), 2048, 0, &mut c), NRT_INVALID);
    assert!(c.is_null(), "*recv_comm is NULL after a failure");
}

#[test]
fn connect_and_accept_check_their_pointers() {
    assert_eq!(nrt_async_sendrecv_connect(c"127.0.0.1".as_ptr(), 0, 0, null_mut()), NRT_INVALID);
    assert_eq!(nrt_async_sendrecv_accept(c"127.0.0.1".as_ptr(), 0, 0, null_mut()), NRT_INVALID);
    let mut c = FORGED as *mut nrt_async_sendrecv_comm_t;
    assert_eq!(nrt_async_sendrecv_connect(null(), 0, 0, &mut c), NRT_INVALID);
    assert!(c.is_null());
    c = FORGED as *mut _;
    assert_eq!(nrt_async_sendrecv_accept(null(), 0, 0, &mut c), NRT_INVALID);
    assert!(c.is_null());
}

#[test]
fn test_comm_bad_handles() {
    let mut done = true;
    assert_eq!(nrt_async_sendrecv_test_comm(null_mut(), &mut done), NRT_INVALID_HANDLE);
    assert_eq!(nrt_async_sendrecv_test_comm(FORGED as *mut _, &mut done), NRT_INVALID_HANDLE);
    assert!(done, "*done is not written for a bad handle");
    assert_eq!(nrt_async_sendrecv_test_comm(FORGED as *mut _, null_mut()), NRT_INVALID_HANDLE, "the handle is checked first");
}

#[test]
fn test_request_bad_handles_and_pointers() {
    let (mut done, mut size) = (true, 7usize);
    assert_eq!(nrt_async_sendrecv_test_request(null_mut(), &mut done, &mut size), NRT_INVALID_HANDLE);
    assert_eq!((done, size), (true, 7), "NULL request: nothing written");
    assert_eq!(nrt_async_sendrecv_test_request(FORGED as *mut _, null_mut(), &mut size), NRT_INVALID);
    assert_eq!(nrt_async_sendrecv_test_request(FORGED as *mut _, &mut done, null_mut()), NRT_INVALID);
    assert_eq!((done, size), (true, 7), "NULL done or size: nothing written");
    assert_eq!(nrt_async_sendrecv_test_request(FORGED as *mut _, &mut done, &mut size), NRT_INVALID_HANDLE);
    assert_eq!((done, size), (false, 0), "a forged request: *done false, *size 0");
}

#[test]
fn posts_check_request_pointer_then_handles() {
    let t = tensor(64);
    let mut r = FORGED as *mut nrt_async_sendrecv_request_t;
    assert_eq!(nrt_async_sendrecv_send_tensor(t, 0, 8, null_mut(), null_mut()), NRT_INVALID);
    assert_eq!(nrt_async_sendrecv_send_tensor(t, 0, 8, null_mut(), &mut r), NRT_INVALID_HANDLE);
    assert!(r.is_null(), "*request is NULL after a failure");
    r = FORGED as *mut _;
    assert_eq!(nrt_async_sendrecv_recv_tensor(t, 0, 8, FORGED as *mut _, &mut r), NRT_INVALID_HANDLE);
    assert!(r.is_null());
    let mut t2 = t;
    nrt_tensor_free(&mut t2);
}

#[test]
fn tensor_allocation_statuses() {
    let mut t = FORGED as *mut nrt_tensor_t;
    assert_eq!(nrt_tensor_allocate(PlacementArg(3), 0, 8, null(), &mut t), NRT_INVALID);
    assert_eq!(nrt_tensor_allocate(PlacementArg(-1), 0, 8, null(), &mut t), NRT_INVALID);
    assert_eq!(t as usize, FORGED, "*tensor is left as it was after a failure");
    assert_eq!(nrt_tensor_allocate(PlacementArg(0), 0, 8, null(), null_mut()), NRT_INVALID);
    assert_eq!(nrt_tensor_allocate_empty(null(), null_mut()), NRT_INVALID);
    assert_eq!(nrt_tensor_allocate_slice(FORGED as *const _, 0, 0, null(), &mut t), NRT_INVALID_HANDLE);
    assert_eq!(nrt_tensor_allocate_slice(null(), 0, 0, null(), &mut t), NRT_INVALID_HANDLE);
    assert_eq!(t as usize, FORGED);

    let mut a = tensor(16);
    assert_eq!(nrt_tensor_get_size(a), 16);
    assert!(!nrt_tensor_get_va(a).is_null());
    assert_eq!(nrt_tensor_allocate_slice(a, 0, 8, null(), null_mut()), NRT_INVALID);
    assert_eq!(nrt_tensor_allocate_slice(a, 8, 9, null(), &mut t), NRT_INVALID);
    assert_eq!(nrt_tensor_allocate_slice(a, usize::MAX, 2, null(), &mut t), NRT_INVALID);
    assert_eq!(t as usize, FORGED);
    let mut s = null_mut();
    assert_eq!(nrt_tensor_allocate_slice(a, 8, 8, null(), &mut s), NRT_SUCCESS);
    assert_eq!(nrt_tensor_memset(a, 0, 0x1ab, 16), NRT_SUCCESS);
    // Freed: the handle is stale, the slice keeps the memory.
    let stale = a;
    nrt_tensor_free(&mut a);
    assert!(a.is_null());
    assert_eq!(nrt_tensor_get_size(stale), 0);
    assert!(nrt_tensor_get_va(stale).is_null());
    let mut buf = [0u8; 8];
    assert_eq!(nrt_tensor_read(stale, buf.as_mut_ptr().cast(), 0, 8), NRT_INVALID_HANDLE);
    assert_eq!(nrt_tensor_read(s, buf.as_mut_ptr().cast(), 0, 8), NRT_SUCCESS);
    assert_eq!(buf, [0xab; 8]);
    let mut again = stale;
    nrt_tensor_free(&mut again);
    assert!(again.is_null(), "a stale handle is set to NULL too");
    nrt_tensor_free(&mut again);
    nrt_tensor_free(null_mut());

    // Empty tensor: size 0, no address; attach gives it the caller's buffer.
    let mut e = null_mut();
    assert_eq!(nrt_tensor_allocate_empty(null(), &mut e), NRT_SUCCESS);
    assert_eq!(nrt_tensor_get_size(e), 0);
    assert!(nrt_tensor_get_va(e).is_null());
    assert_eq!(nrt_tensor_allocate_slice(e, 0, 0, null(), &mut t), NRT_INVALID, "no memory to slice");
    assert_eq!(nrt_tensor_read(e, buf.as_mut_ptr().cast(), 0, 1), NRT_INVALID);
    assert_eq!(nrt_tensor_attach_buffer(e, null_mut(), 4), NRT_INVALID);
    assert_eq!(nrt_tensor_attach_buffer(FORGED as *mut _, buf.as_mut_ptr().cast(), 8), NRT_INVALID_HANDLE);
    assert_eq!(nrt_tensor_attach_buffer(e, buf.as_mut_ptr().cast(), 8), NRT_SUCCESS);
    assert_eq!(nrt_tensor_get_va(e), buf.as_mut_ptr().cast::<c_void>());
    assert_eq!(nrt_tensor_get_size(e), 8);

    // Reads, writes, copies and memsets: NULL buffers and ranges.
    assert_eq!(nrt_tensor_read(s, null_mut(), 0, 1), NRT_INVALID);
    assert_eq!(nrt_tensor_read(s, null_mut(), 0, 0), NRT_SUCCESS);
    assert_eq!(nrt_tensor_write(s, null(), 0, 1), NRT_INVALID);
    assert_eq!(nrt_tensor_write(s, buf.as_ptr().cast(), 1, 8), NRT_INVALID);
    assert_eq!(nrt_tensor_write(null_mut(), buf.as_ptr().cast(), 0, 1), NRT_INVALID_HANDLE);
    assert_eq!(nrt_tensor_copy(s, 0, e, 0, 8), NRT_SUCCESS);
    assert_eq!(nrt_tensor_copy(s, 0, stale, 0, 8), NRT_INVALID_HANDLE);
    assert_eq!(nrt_tensor_copy(null(), 0, e, 0, 8), NRT_INVALID_HANDLE);
    assert_eq!(nrt_tensor_copy(s, 1, e, 0, 8), NRT_INVALID);
    assert_eq!(nrt_tensor_copy(s, 0, e, usize::MAX, 2), NRT_INVALID);
    assert_eq!(nrt_tensor_memset(s, 8, 0, 1), NRT_INVALID);
    assert_eq!(nrt_tensor_memset(s, u64::MAX, 0, 1), NRT_INVALID);
    assert_eq!(nrt_tensor_memset(stale, 0, 0, 1), NRT_INVALID_HANDLE);
    nrt_tensor_free(&mut e);
    nrt_tensor_free(&mut s);
    assert_eq!(buf, [0xab; 8], "the attached buffer is the caller's: copied into, never freed");
}
