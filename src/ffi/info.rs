//! What a program asks of the runtime besides tensors and transfers: status names, the version,
//! and core counts. All of them work before `nrt_init`.

use super::guard;
use crate::status::{Error, NRT_STATUS};
use std::ffi::{c_char, c_int};

/// The status argument as it arrives: any int a caller passes is safe to receive.
/// (Exported as `NRT_STATUS` in the header.)
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct StatusArg(pub c_int);

/// The name of each status (as in `nrt_status.h`), NUL-terminated.
fn status_name(v: c_int) -> &'static [u8] {
    match v {
        0 => b"NRT_SUCCESS\0",
        1 => b"NRT_FAILURE\0",
        2 => b"NRT_INVALID\0",
        3 => b"NRT_INVALID_HANDLE\0",
        4 => b"NRT_RESOURCE\0",
        5 => b"NRT_TIMEOUT\0",
        6 => b"NRT_HW_ERROR\0",
        7 => b"NRT_QUEUE_FULL\0",
        9 => b"NRT_LOAD_NOT_ENOUGH_NC\0",
        10 => b"NRT_UNSUPPORTED_NEFF_VERSION\0",
        11 => b"NRT_FAIL_HOST_MEM_ALLOC\0",
        13 => b"NRT_UNINITIALIZED\0",
        14 => b"NRT_CLOSED\0",
        15 => b"NRT_QUEUE_EMPTY\0",
        101 => b"NRT_EXEC_UNIT_UNRECOVERABLE\0",
        1002 => b"NRT_EXEC_BAD_INPUT\0",
        1003 => b"NRT_EXEC_COMPLETED_WITH_NUM_ERR\0",
        1004 => b"NRT_EXEC_COMPLETED_WITH_ERR\0",
        1005 => b"NRT_EXEC_NC_BUSY\0",
        1006 => b"NRT_EXEC_OOB\0",
        1100 => b"NRT_COLL_PENDING\0",
        1200 => b"NRT_EXEC_HW_ERR_COLLECTIVES\0",
        1201 => b"NRT_EXEC_HW_ERR_HBM_UE\0",
        1202 => b"NRT_EXEC_HW_ERR_NC_UE\0",
        1203 => b"NRT_EXEC_HW_ERR_DMA_ABORT\0",
        1204 => b"NRT_EXEC_SW_NQ_OVERFLOW\0",
        1205 => b"NRT_EXEC_HW_ERR_REPAIRABLE_HBM_UE\0",
        1206 => b"NRT_NETWORK_PROXY_FAILURE\0",
        _ => b"NRT_UNKNOWN_STATUS\0",
    }
}

/// The name of a status code, e.g. `"NRT_TIMEOUT"` for 5: a static string, never freed by the
/// caller. A value that is not an `NRT_STATUS` gives `"NRT_UNKNOWN_STATUS"`; never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn nrt_get_status_as_str(status: StatusArg) -> *const c_char {
    status_name(status.0).as_ptr().cast()
}

/// The length of `nrt_version_t::rt_detail`.
pub const RT_VERSION_DETAIL_LEN: usize = 128;
/// The length of `nrt_version_t::git_hash`.
pub const GIT_HASH_LEN: usize = 64;

/// The runtime's version (`nrt/nrt_version.h`).
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy)]
pub struct nrt_version {
    pub rt_major: u64,
    pub rt_minor: u64,
    pub rt_patch: u64,
    pub rt_maintenance: u64,
    pub rt_detail: [c_char; RT_VERSION_DETAIL_LEN],
    pub git_hash: [c_char; GIT_HASH_LEN],
}
#[allow(non_camel_case_types)]
pub type nrt_version_t = nrt_version;

/// This library's version.
fn version() -> nrt_version_t {
    let n = |s: &str| s.parse::<u64>().unwrap_or(0);
    let mut v = nrt_version_t {
        rt_major: n(env!("CARGO_PKG_VERSION_MAJOR")),
        rt_minor: n(env!("CARGO_PKG_VERSION_MINOR")),
        rt_patch: n(env!("CARGO_PKG_VERSION_PATCH")),
        rt_maintenance: 0,
        rt_detail: [0; RT_VERSION_DETAIL_LEN],
        git_hash: [0; GIT_HASH_LEN],
    };
    let detail = format!(
        "nrt-sendrecv {} (nrt_async_sendrecv_* and host tensors over TCP, shared memory, verbs, libfabric; not the Neuron runtime)",
        env!("CARGO_PKG_VERSION")
    );
    for (d, b) in v.rt_detail.iter_mut().zip(detail.bytes().take(RT_VERSION_DETAIL_LEN - 1)) {
        *d = b as c_char;
    }
    v
}

/// Fills `*ver` with this library's version, `size` bytes of it at most (a caller built against
/// a shorter `nrt_version_t` passes its own size; more than `sizeof(nrt_version_t)` fills the
/// whole struct and leaves the rest alone). `rt_major.rt_minor.rt_patch` is nrt-sendrecv's own
/// version (not the Neuron runtime's), `rt_maintenance` 0, `rt_detail` says what the library is,
/// and `git_hash` is empty (not recorded at build time).
///
/// Returns:
/// - `NRT_SUCCESS`: filled.
/// - `NRT_INVALID`: `ver` is NULL or `size` is 0.
#[unsafe(no_mangle)]
pub extern "C" fn nrt_get_version(ver: *mut nrt_version_t, size: usize) -> NRT_STATUS {
    guard("nrt_get_version", || {
        super::non_null(ver, "ver")?;
        if size == 0 {
            return Err(Error::invalid("size is 0"));
        }
        let v = version();
        let n = size.min(std::mem::size_of::<nrt_version_t>());
        // SAFETY: the caller provides `size` writable bytes at `ver` (the vendor's contract);
        // we write at most that many, from a local of the full size.
        unsafe { std::ptr::copy_nonoverlapping((&raw const v).cast::<u8>(), ver.cast::<u8>(), n) };
        Ok(())
    })
}

/// Writes one of the core counts to `*out`.
fn count(func: &str, out: *mut u32, pick: impl FnOnce(crate::runtime::cores::Cores) -> u32) -> NRT_STATUS {
    guard(func, || {
        super::non_null(out, "nc_count")?;
        let c = crate::runtime::cores::current()?;
        // SAFETY: checked non-NULL; the caller's u32.
        unsafe { out.write(pick(c)) };
        Ok(())
    })
}

/// The number of physical cores on this host: without Neuron devices, the total of logical
/// cores (`nrt_get_total_vnc_count`) times `NEURON_LOGICAL_NC_CONFIG` (1 or 2, default 1). See
/// `nrt_get_visible_vnc_count` for where the numbers come from.
///
/// Returns:
/// - `NRT_SUCCESS`: written.
/// - `NRT_INVALID`: `nc_count` is NULL, or a core variable is malformed (logged, naming it).
#[unsafe(no_mangle)]
pub extern "C" fn nrt_get_total_nc_count(nc_count: *mut u32) -> NRT_STATUS {
    count("nrt_get_total_nc_count", nc_count, |c| c.total * c.per_logical)
}

/// The number of physical cores this process may use: the visible logical cores times
/// `NEURON_LOGICAL_NC_CONFIG`.
///
/// Returns:
/// - `NRT_SUCCESS`: written.
/// - `NRT_INVALID`: `nc_count` is NULL, or a core variable is malformed (logged, naming it).
#[unsafe(no_mangle)]
pub extern "C" fn nrt_get_visible_nc_count(nc_count: *mut u32) -> NRT_STATUS {
    count("nrt_get_visible_nc_count", nc_count, |c| c.visible * c.per_logical)
}

/// The number of logical cores on this host: the highest core of `NEURON_RT_VISIBLE_CORES` + 1,
/// else `NEURON_RT_NUM_CORES`, else 1.
///
/// Returns:
/// - `NRT_SUCCESS`: written.
/// - `NRT_INVALID`: `nc_count` is NULL, or a core variable is malformed (logged, naming it).
#[unsafe(no_mangle)]
pub extern "C" fn nrt_get_total_vnc_count(nc_count: *mut u32) -> NRT_STATUS {
    count("nrt_get_total_vnc_count", nc_count, |c| c.total)
}

/// The number of logical cores this process may use (the lncs it would pass to
/// `nrt_async_sendrecv_init`). Without Neuron devices it comes from the vendor's variables, read
/// at each call: `NEURON_RT_VISIBLE_CORES` (a list of cores and inclusive ranges, e.g. `0-3` or
/// `1,3,8-11`, each 0 to 1023: the distinct cores listed), else `NEURON_RT_NUM_CORES` (a count,
/// 1 to 1024), else 1.
///
/// Returns:
/// - `NRT_SUCCESS`: written.
/// - `NRT_INVALID`: `nc_count` is NULL, or a core variable is malformed (logged, naming it).
#[unsafe(no_mangle)]
pub extern "C" fn nrt_get_visible_vnc_count(nc_count: *mut u32) -> NRT_STATUS {
    count("nrt_get_visible_vnc_count", nc_count, |c| c.visible)
}
