//! RDMA verbs data path (libibverbs through `rdma-sys`): RoCE, InfiniBand, Soft-RoCE.
//!
//! A communicator moves its data and its control over one RC queue pair (`proto.rs`: eager
//! SENDs up to 4 KiB, RDMA writes with immediate data after a clear-to-send, control records as
//! SENDs, credit-counted). Its TCP streams carry the queue pair's address at set-up (QpInfo)
//! and afterwards only tell that the peer has gone. A caller polling `test_request` polls the
//! completion queue itself; the progress thread watches the completion channel meanwhile only
//! when no caller spins (see `comm/park.rs`).
//!
//! - `proto.rs`: the protocol, plain Rust over the [`proto::Nic`] interface, so that its tests
//!   run in every build (`fake.rs`: an in-memory queue pair; `tests.rs`);
//! - `ctrl.rs`: the control records' encoding;
//! - `sysfs.rs`: what sysfs says about a device's link (advice for Soft-RoCE over veth);
//! - `qp.rs`, `device.rs`, `mr.rs`, `transport.rs`: libibverbs (feature `verbs`).
#![cfg_attr(not(feature = "verbs"), allow(dead_code))]

mod ctrl;
#[cfg(feature = "verbs")]
mod device;
#[cfg(test)]
mod fake;
#[cfg(feature = "verbs")]
mod mr;
mod proto;
#[cfg(feature = "verbs")]
mod qp;
mod sysfs;
#[cfg(test)]
mod tests;
#[cfg(feature = "verbs")]
mod transport;

#[cfg(feature = "verbs")]
pub use device::{Device, device_for_ip};
#[cfg(feature = "verbs")]
pub use transport::VerbsTransport;
