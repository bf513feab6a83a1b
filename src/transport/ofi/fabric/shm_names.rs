//! The regions libfabric's shm provider keeps in /dev/shm for this process's open endpoints.
//!
//! Closing an endpoint removes its region, and so does libfabric's own handler for SIGINT,
//! SIGTERM and the like; but a process that exits with an endpoint still open (it did not call
//! `nrt_async_sendrecv_close`, or a failed communicator kept its endpoints) leaves its regions
//! behind (libfabric 1.17 to 2.x), 16 MiB each, in a file system held in memory. So the names of
//! open regions are kept here, and removed at exit (`atexit`) by the process that opened them (a
//! forked child that exits leaves its parent's alone). A process killed by SIGKILL still leaves
//! its own; libfabric reuses such a region when a later process with the same id needs its name
//! (see `FabricRail::open` for the case where it refuses).

use parking_lot::Mutex;
use std::ffi::CString;
use std::sync::Once;

/// (process id that opened it, region name as shm_open takes it).
static OPEN: Mutex<Vec<(u32, CString)>> = Mutex::new(Vec::new());
static AT_EXIT: Once = Once::new();

/// The region's name for an shm endpoint name ("fi_shm://<pid>:<uid>:<n>", NUL-terminated):
/// the part after the prefix, as libfabric gives it to shm_open.
pub fn region_name(endpoint: &[u8]) -> Option<CString> {
    let end = endpoint.iter().position(|&b| b == 0).unwrap_or(endpoint.len());
    let name = &endpoint[..end];
    let name = name.strip_prefix(b"fi_shm://").unwrap_or(name);
    if name.is_empty() || name.contains(&b'/') {
        return None;
    }
    CString::new(name).ok()
}

/// An shm endpoint was enabled: its region is removed at exit unless it closes first.
pub fn opened(endpoint: &[u8]) {
    let Some(name) = region_name(endpoint) else { return };
    AT_EXIT.call_once(|| {
        // SAFETY: registers a function without arguments that touches only `OPEN`.
        if unsafe { libc::atexit(remove_open_regions) } != 0 {
            crate::log_warn!("libfabric shm: atexit failed; regions of endpoints open at exit stay in /dev/shm");
        }
    });
    OPEN.lock().push((std::process::id(), name));
}

/// The endpoint closed (libfabric removed its region).
pub fn closed(endpoint: &[u8]) {
    let Some(name) = region_name(endpoint) else { return };
    let mut open = OPEN.lock();
    if let Some(i) = open.iter().position(|(_, n)| *n == name) {
        open.swap_remove(i);
    }
}

extern "C" fn remove_open_regions() {
    // A thread that exits the process while another holds the lock must not hang: skip then.
    let Some(open) = OPEN.try_lock() else { return };
    let me = std::process::id();
    for (_, name) in open.iter().filter(|(pid, _)| *pid == me) {
        // SAFETY: a NUL-terminated name; shm_unlink only removes the name (mappings stay valid).
        unsafe { libc::shm_unlink(name.as_ptr()) };
    }
}
