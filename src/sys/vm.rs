//! Reading another process's memory (`process_vm_readv`), steered around slow copy distances.

use super::copy::{BOUNCE, slow_distance, with_bounce};
use std::io;

/// Copies `len` bytes at `remote` in process `pid` to `local`. At a distance the kernel copies
/// slowly the bytes go through a bounce buffer (sys/copy.rs, "Copy distance").
///
/// # Safety
/// `local` must be valid for `len` bytes of writes.
pub unsafe fn vm_read(pid: u32, local: *mut u8, remote: u64, len: usize) -> io::Result<()> {
    if !slow_distance(local as usize, remote as usize, len) {
        // SAFETY: the caller's promise, passed on.
        return unsafe { vm_read_direct(pid, local, remote, len) };
    }
    with_bounce(remote as usize, |at| {
        let mut done = 0usize;
        while done < len {
            let n = (len - done).min(BOUNCE);
            // SAFETY: at holds BOUNCE >= n bytes (with_bounce); the remote range is checked by
            // the kernel. Pieces of BOUNCE (a multiple of 4 KiB) keep at's place right.
            unsafe { vm_read_direct(pid, at, remote + done as u64, n)? };
            // SAFETY: local is valid for len >= done + n bytes of writes (the caller's promise);
            // the bounce buffer is ours, so the ranges do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(at, local.add(done), n) };
            done += n;
        }
        Ok(())
    })
}

/// [`vm_read`] in the kernel's copy, whatever the distance.
///
/// # Safety
/// `local` must be valid for `len` bytes of writes.
unsafe fn vm_read_direct(pid: u32, local: *mut u8, remote: u64, len: usize) -> io::Result<()> {
    let mut done = 0usize;
    while done < len {
        let l = libc::iovec { iov_base: local.wrapping_add(done).cast(), iov_len: len - done };
        let r = libc::iovec { iov_base: (remote as usize).wrapping_add(done) as *mut libc::c_void, iov_len: len - done };
        // SAFETY: the local iovec is within the caller's buffer; the kernel checks the remote one.
        let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &l, 1, &r, 1, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "process_vm_readv read nothing"));
        }
        done += n as usize;
    }
    Ok(())
}
