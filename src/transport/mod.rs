//! Transports and the system calls under them: the only place (with `tensor` and `ffi`) that
//! holds unsafe code.

pub mod shm;
pub mod tcp;
#[cfg(feature = "verbs")]
pub mod verbs;

/// The RDMA device a verbs communicator uses (uninhabited in builds without verbs).
#[cfg(feature = "verbs")]
pub type RdmaDevice = verbs::Device;
#[cfg(not(feature = "verbs"))]
pub enum RdmaDevice {}

/// The RDMA device that serves local address `ip`, if this build and host have one.
pub fn rdma_device_for(ip: std::net::IpAddr) -> crate::status::Result<Option<std::sync::Arc<RdmaDevice>>> {
    #[cfg(feature = "verbs")]
    {
        verbs::device_for_ip(ip)
    }
    #[cfg(not(feature = "verbs"))]
    {
        let _ = ip;
        Ok(None)
    }
}
