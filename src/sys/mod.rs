//! The system calls under everything else, behind safe wrappers where they can be: epoll and
//! eventfd, clocks, random numbers, process limits, memfds and mappings, reading another
//! process's memory, copies steered around slow distances, what an address says about the
//! host, and which kernel this is (its boot id). Nothing here knows about communicators,
//! requests or transports.

pub mod boot;
pub mod clock;
pub mod copy;
pub mod epoll;
pub mod memfd;
pub mod net;
pub mod random;
pub mod rlimit;
pub mod stamp;
pub mod vm;
