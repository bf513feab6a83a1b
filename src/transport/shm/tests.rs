//! The channel's set-up checks, process_vm_readv at every distance, memfd tensors.

use super::channel::CHANNEL_SIZE;
use super::ring::*;
use crate::sys::memfd::{describe_fd, memfd, memfd_name, my_pid};
use crate::sys::vm::vm_read;
use crate::transport::Kind;
use crate::wire::{Frame, ack};
use std::os::fd::AsRawFd;

#[test]
fn a_channel_that_cannot_be_reached_falls_back_or_fails() {
    // pid 1's descriptors are not ours to open (or not a channel): TCP, told to the peer.
    let mut io = ShmIo::new(Kind::Recv, false, true).unwrap();
    match io.on_info(1, 0, 42, 0x1000, CHANNEL_SIZE as u64).unwrap() {
        Setup::Fallback(q) => assert!(q.is_empty()),
        Setup::Ok => panic!("pid 1's fd 0 is not a channel"),
    }
    assert_eq!(io.out, vec![Frame::ShmReady { status: ack::REFUSED }]);
    // A wrong size is refused before anything is opened; with shm required, an error.
    let mut io = ShmIo::new(Kind::Recv, true, true).unwrap();
    assert!(io.on_info(my_pid(), 0, 42, 0x1000, 4096).is_err());
    // Our own channel, but the wrong token: refused.
    let tx = ShmIo::new(Kind::Send, false, true).unwrap();
    let Frame::ShmInfo { pid, fd, token, addr, size } = tx.out[0] else { panic!("no ShmInfo") };
    let mut io = ShmIo::new(Kind::Recv, false, true).unwrap();
    assert!(matches!(io.on_info(pid, fd, token ^ 1, addr, size).unwrap(), Setup::Fallback(_)));
    // The right one: mapped.
    let mut io = ShmIo::new(Kind::Recv, false, true).unwrap();
    assert!(matches!(io.on_info(pid, fd, token, addr, size).unwrap(), Setup::Ok));
    assert!(io.is_active());
}

#[test]
fn vm_read_moves_every_byte_at_every_distance() {
    use crate::sys::copy::{ALIAS as PAGE, BOUNCE, slow_distance};
    // Our own memory through process_vm_readv: distances 0-70 and around the page (the
    // slow ones go through the bounce buffer), lengths below, at and across its pieces.
    let src: Vec<u8> = (0..(BOUNCE * 2 + 3 * PAGE)).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut dst = vec![0u8; src.len() + 2 * PAGE];
    let s0 = src.as_ptr() as usize;
    let mut bounced = 0;
    for dist in (0..70).chain([PAGE - 1, PAGE - 32, PAGE + 8]) {
        for (soff, len) in [(0usize, PAGE), (5, 3 * PAGE + 17), (64, BOUNCE), (1000, BOUNCE * 2 + 100), (3, 100)] {
            // dst index d with (dst + d) - (src + soff) = dist (mod PAGE).
            let d = (s0 + soff + dist).wrapping_sub(dst.as_ptr() as usize) % PAGE;
            dst.fill(0);
            let local = dst[d..].as_mut_ptr();
            bounced += slow_distance(local as usize, s0 + soff, len) as usize;
            // SAFETY: d + len <= dst.len() (d < PAGE, len <= src.len() - soff).
            unsafe { vm_read(my_pid(), local, (s0 + soff) as u64, len) }.unwrap();
            assert_eq!(&dst[d..d + len], &src[soff..soff + len], "distance {dist}, offset {soff}, {len} bytes");
            assert!(dst[..d].iter().all(|&b| b == 0) && dst[d + len..].iter().all(|&b| b == 0), "wrote outside");
        }
    }
    // Distances 1-31 and PAGE + 8, at the four lengths of at least a page, took the bounce path.
    assert_eq!(bounced, 32 * 4);
}

#[test]
fn memfd_tensors_are_sealed_and_named() {
    let fd = memfd(&memfd_name(77), 1 << 20).unwrap();
    let (name, size, seals) = describe_fd(&fd).unwrap();
    assert!(name.starts_with("/memfd:nrt-sr-77"), "{name}");
    assert_eq!(size, 1 << 20);
    assert!(seals & libc::F_SEAL_SHRINK != 0 && seals & libc::F_SEAL_GROW != 0);
    // SAFETY: plain system call on our descriptor; it must fail (sealed).
    assert!(unsafe { libc::ftruncate(fd.as_raw_fd(), 4096) } < 0);
}
