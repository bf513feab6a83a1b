//! One rail of the libfabric transport: an RDM endpoint (with its completion queue and address
//! vector) on one domain of the chosen provider, talking to one peer endpoint. The protocol
//! (`proto.rs`) sees rails only through [`Rail`], so that a fake provider can feed it
//! completions in any order (tests), and the real one (`fabric/`) is libfabric.

use crate::status::Result;
use std::os::fd::RawFd;

/// What the provider offers, read from `fi_info` (never assumed).
#[derive(Clone, Debug)]
pub struct Limits {
    /// "tcp;ofi_rxm", "shm", "efa", "verbs;ofi_rxm" ...
    pub provider: String,
    pub fabric: String,
    pub domain: String,
    /// Largest message one operation moves (`ep_attr->max_msg_size`).
    pub max_msg: u64,
    /// Largest `fi_tinject` (`tx_attr->inject_size`).
    pub inject: usize,
    /// RMA write with remote CQ data is offered (`FI_RMA` caps and `cq_data_size >= 4`: the
    /// protocol's CQ data is 32 bits); else the receiver reads (`fi_read`).
    pub write_data: bool,
    /// Every buffer given to an operation must be registered (`FI_MR_LOCAL`).
    pub mr_local: bool,
    /// Device memory may be registered (`FI_HMEM`, asked for only as an option): large messages
    /// in device memory then go by RMA straight from and to it (`Rail::register_device`).
    pub hmem: bool,
}

/// A registered memory region: its descriptor for local operations and the key a peer uses
/// (`FI_MR_PROV_KEY`: chosen by the provider), and the address the peer writes to (the virtual
/// address with `FI_MR_VIRT_ADDR`, else the offset in the region).
#[derive(Clone, Copy, Debug)]
pub struct Mr {
    pub desc: usize,
    pub key: u64,
    /// What a peer passes as the remote address for this region's first byte.
    pub remote_base: u64,
}

/// An operation the provider did not take now (`-FI_EAGAIN`): try again after progress.
#[derive(Debug, PartialEq, Eq)]
pub enum Posted {
    Ok,
    Again,
}

/// What completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CqKind {
    Send,
    Recv,
    Write,
    Read,
    /// A peer's write with remote CQ data landed here.
    RemoteWrite,
}

/// One completion.
#[derive(Clone, Debug)]
pub struct Cqe {
    /// The context the operation was posted with (0 for remote writes).
    pub ctx: u64,
    pub kind: CqKind,
    /// Bytes received (receives), or written (remote writes, where the provider says: may be 0).
    pub len: usize,
    /// The tag of a received message.
    pub tag: u64,
    /// Remote CQ data (remote writes).
    pub data: u64,
    /// The operation failed: the provider's reason.
    pub err: Option<String>,
}

/// One endpoint to one peer. Buffers passed to the `unsafe` operations must stay valid (and,
/// for receives and reads, untouched) until the operation's completion is reported.
pub trait Rail: Send {
    fn limits(&self) -> &Limits;
    /// This endpoint's address (`fi_getname`), for the peer.
    fn name(&self) -> Vec<u8>;
    /// The peer's endpoint address (`fi_av_insert`); operations go to it from now on.
    fn connect(&mut self, peer: &[u8]) -> Result<()>;
    /// Registers `len` bytes at `ptr` (local access, and remote write/read access when `remote`).
    fn register(&mut self, ptr: *const u8, len: usize, remote: bool) -> Result<Mr>;
    /// Registers `len` bytes of Neuron device memory (HBM mapped) at `ptr`, like `register`
    /// (`fi_mr_regattr` with `iface` `FI_HMEM_NEURON` and `device.neuron` `device`). Only where
    /// `Limits::hmem`; the provider may still refuse (no Neuron support): an error then. The
    /// memory may only be given to RMA operations (a provider cannot copy out of it).
    fn register_device(&mut self, ptr: *const u8, len: usize, remote: bool, device: i32) -> Result<Mr>;
    /// Releases a registration (`register`'s `key`).
    fn deregister(&mut self, mr: &Mr);
    /// # Safety
    /// `buf` is valid for `len` bytes until the completion.
    unsafe fn tsend(&mut self, buf: *const u8, len: usize, mr: Option<&Mr>, tag: u64, ctx: u64) -> Result<Posted>;
    /// # Safety
    /// `buf` is valid for `len` bytes of writes until the completion.
    unsafe fn trecv(&mut self, buf: *mut u8, len: usize, mr: Option<&Mr>, tag: u64, ignore: u64, ctx: u64) -> Result<Posted>;
    /// RMA write of `len` bytes to the peer's `raddr` (key `rkey`) with remote CQ data `data`.
    ///
    /// # Safety
    /// `buf` is valid for `len` bytes until the completion.
    #[allow(clippy::too_many_arguments)]
    unsafe fn write_data(
        &mut self,
        buf: *const u8,
        len: usize,
        mr: Option<&Mr>,
        data: u64,
        raddr: u64,
        rkey: u64,
        ctx: u64,
    ) -> Result<Posted>;
    /// RMA read of `len` bytes from the peer's `raddr` (key `rkey`).
    ///
    /// # Safety
    /// `buf` is valid for `len` bytes of writes until the completion.
    unsafe fn read(&mut self, buf: *mut u8, len: usize, mr: Option<&Mr>, raddr: u64, rkey: u64, ctx: u64) -> Result<Posted>;
    /// Appends what completed since the last call (drives the provider's progress too).
    fn poll(&mut self, out: &mut Vec<Cqe>) -> Result<()>;
    /// A descriptor that becomes readable when a completion waits (`FI_WAIT_FD`), where the
    /// provider has one.
    fn wait_fd(&self) -> Option<RawFd>;
    /// The communicator goes: cancel what is still posted, let it come back, and close the
    /// endpoint, before the buffers and registrations those operations use are released.
    fn quiesce(&mut self) {}
}
