//! Rails over libfabric: `open_rails` asks `fi_getinfo` for RDM endpoints of a provider and
//! opens one rail per chosen domain (fabric, domain, completion queue, address vector, endpoint);
//! `FabricRail` implements [`Rail`] on them.
//!
//! What the provider returns is honoured, never assumed: descriptors are passed only with
//! `FI_MR_LOCAL`, a peer's region is addressed by virtual address only with `FI_MR_VIRT_ADDR`
//! (else by offset), keys are the provider's with `FI_MR_PROV_KEY` (else ours), RMA is used only
//! when `FI_RMA` is offered, and the completion queue has a file descriptor only when asked for
//! (`wait_fd_wanted`) and where the provider accepts `FI_WAIT_FD`. Device memory (`FI_HMEM`) is asked for only by a caller that
//! may have some (the LD_PRELOAD library), and only as an option: a rail whose provider offers it
//! for its domain registers device memory (`register_device`, `FI_HMEM_NEURON`); every other
//! rail is opened exactly as without it.
//!
//! The `u64` context the protocol gives each operation maps to a slot of the rail's own slab of
//! `fi_context2` (`FI_CONTEXT`/`FI_CONTEXT2` mode: the provider owns that memory until the
//! completion), which stays put until the completion is read; the completion gives the `u64` back.

mod contexts;
mod fi;
mod info;
mod shm_names;
#[cfg(test)]
mod tests;

use super::rail::{CqKind, Cqe, Limits, Mr, Posted, Rail};
use super::sys;
use crate::status::{Error, Result};
use contexts::Contexts;
use fi::*;
use info::{domain_name, getinfo, provider_name, with_hmem};
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void};
use std::os::fd::RawFd;
use std::ptr::null_mut;

/// Which domains of the provider become rails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RailsWanted {
    /// Every domain the provider offers (one rail each).
    All,
    /// The first `n` domains, in the provider's order.
    Count(usize),
    /// These domains (`fi_info -v`'s `domain_attr.name`: "lo", "eth0", "rdmap0s6", "shm" ...).
    Domains(Vec<String>),
}

/// Completions read per `fi_cq_read`.
const BATCH: usize = 32;
/// `fi_cq_read` calls per `poll` at most (it stops earlier when the queue is empty).
const MAX_READS: usize = 16;

/// Opens one rail per domain `rails` asks for, of `provider` ("tcp", "shm", "efa", "verbs" ...;
/// `None`: libfabric's first choice, which `FI_PROVIDER` narrows). RMA (`FI_RMA`) is asked for
/// first, and done without where the provider has none. The domains are chosen as if device
/// memory were not asked for; then, with `hmem` and RMA, each chosen domain that the provider
/// also offers with `FI_HMEM` (a second `fi_getinfo`) is opened with that offer instead (which
/// may differ in more than `FI_HMEM`: `shm`'s has no inject size, for one; hence only callers
/// with device memory ask).
pub fn open_rails(provider: Option<&str>, rails: RailsWanted, hmem: bool) -> Result<Vec<FabricRail>> {
    let (list, rma) = match getinfo(provider, true, false)? {
        Some(l) => (l, true),
        None => (
            getinfo(provider, false, false)?.ok_or_else(|| {
                let env = std::env::var("FI_PROVIDER").map(|v| format!(" (FI_PROVIDER={v})")).unwrap_or_default();
                Error::failure(format!(
                    "libfabric offers no RDM endpoint with tagged messages from provider {}{env}",
                    provider.unwrap_or("(any)")
                ))
            })?,
            false,
        ),
    };
    // One candidate per domain name, in the provider's order (tcp lists a NIC once per address
    // family and endpoint flavour; the first is taken), all of one provider: libfabric's first
    // choice when none is named (rails of different providers could not talk to one peer).
    let mut domains: Vec<(String, *mut sys::fi_info)> = Vec::new();
    let mut first_provider: Option<String> = None;
    let mut p = list.0;
    while !p.is_null() {
        // SAFETY: p is an element of the list, alive until `list` drops at the end.
        let i = unsafe { &*p };
        // SAFETY: as above.
        let (name, prov) = unsafe { (domain_name(i), provider_name(i)) };
        let same = *first_provider.get_or_insert_with(|| prov.clone()) == prov;
        if same && !domains.iter().any(|(n, _)| *n == name) {
            domains.push((name, p));
        }
        p = i.next;
    }
    let offered = || domains.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ");
    let chosen: Vec<*mut sys::fi_info> = match &rails {
        RailsWanted::All => domains.iter().map(|(_, p)| *p).collect(),
        RailsWanted::Count(n) => {
            if domains.len() < *n {
                return Err(Error::invalid(format!(
                    "{n} libfabric rails asked for; the provider offers {} ({})",
                    domains.len(),
                    offered()
                )));
            }
            domains.iter().take(*n).map(|(_, p)| *p).collect()
        }
        RailsWanted::Domains(names) => names
            .iter()
            .map(|want| {
                domains
                    .iter()
                    .find(|(n, _)| n == want)
                    .map(|(_, p)| *p)
                    .ok_or_else(|| Error::invalid(format!("libfabric domain {want:?} is not offered (offered: {})", offered())))
            })
            .collect::<Result<_>>()?,
    };
    if chosen.is_empty() {
        return Err(Error::invalid("no libfabric rails asked for"));
    }
    // Device memory, optional: where it cannot be had, the rails are those chosen above.
    let hmem_list = if rma && hmem {
        getinfo(provider, true, true).unwrap_or_else(|e| {
            crate::log_debug!("libfabric: fi_getinfo with FI_HMEM: {e}; device memory is staged");
            None
        })
    } else {
        None
    };
    let chosen: Vec<*mut sys::fi_info> = match &hmem_list {
        // SAFETY: elements of `list` and `hmem_list`, alive until the end of this function.
        Some(h) => chosen.into_iter().map(|p| unsafe { with_hmem(p, h) }).collect(),
        None => chosen,
    };
    chosen
        .into_iter()
        // SAFETY: each is an element of `list`, alive during the calls.
        .map(|p| unsafe { FabricRail::open(p) })
        .collect()
}

/// `NEURON_RT_ASYNC_SENDRECV_OFI_WAIT_FD=1`: completion queues get a file descriptor
/// (FI_WAIT_FD) that wakes the lnc's progress thread. Off by default: the provider then writes
/// to that descriptor at every completion, a system call on the path of each message (8-byte
/// half round trip over `tcp;ofi_rxm`: 8.2-8.5 µs with it, 7.1-7.2 without), and the providers
/// progress manually anyway, so the progress thread polls libfabric communicators every tick.
fn wait_fd_wanted() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    WAIT_FD_FOR_TESTS.load(std::sync::atomic::Ordering::Relaxed)
        || *ON.get_or_init(|| std::env::var("NEURON_RT_ASYNC_SENDRECV_OFI_WAIT_FD").is_ok_and(|v| v.trim() == "1"))
}

/// Set by the tests of the wait descriptor.
static WAIT_FD_FOR_TESTS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// One RDM endpoint on one domain, to one peer.
pub struct FabricRail {
    limits: Limits,
    fabric: *mut sys::fid_fabric,
    domain: *mut sys::fid_domain,
    cq: *mut sys::fid_cq,
    av: *mut sys::fid_av,
    ep: *mut sys::fid_ep,
    /// What the provider returned (after the hints).
    caps: u64,
    mode: u64,
    mr_mode: c_int,
    cq_data_size: usize,
    addr_format: u32,
    /// The completion queue's descriptor (FI_WAIT_FD), and how the wait object was settled.
    wait_fd: Option<RawFd>,
    wait_note: String,
    name: Vec<u8>,
    peer: Option<sys::fi_addr_t>,
    /// Registrations by key (a list: keys are unique per domain, but nothing here relies on it).
    mrs: HashMap<u64, Vec<*mut sys::fid_mr>>,
    /// Our keys, without FI_MR_PROV_KEY.
    next_key: u64,
    ctxs: Contexts,
}

// SAFETY: a rail is used by one thread at a time (&mut self for everything that touches
// libfabric); libfabric objects may be used from any thread, whatever the domain's threading
// model, as long as calls on them do not overlap.
unsafe impl Send for FabricRail {}

impl FabricRail {
    /// Opens fabric, domain, completion queue, address vector and endpoint for one info.
    ///
    /// # Safety
    /// `info` is an element of a live list from `fi_getinfo`.
    unsafe fn open(info: *mut sys::fi_info) -> Result<FabricRail> {
        // SAFETY: the caller's contract.
        let i = unsafe { &*info };
        if i.ep_attr.is_null() || i.domain_attr.is_null() || i.fabric_attr.is_null() || i.tx_attr.is_null() || i.rx_attr.is_null() {
            return Err(Error::failure("fi_getinfo returned an info without its attributes"));
        }
        // SAFETY: non-null (checked), filled by fi_getinfo, alive with the list.
        let (ep_attr, dom, fab, tx, rx) = unsafe { (&*i.ep_attr, &*i.domain_attr, &*i.fabric_attr, &*i.tx_attr, &*i.rx_attr) };
        let rma = i.caps & sys::FI_RMA != 0;
        let limits = Limits {
            // SAFETY: NUL-terminated strings of the info (or null).
            provider: unsafe { text(fab.prov_name) },
            // SAFETY: as above.
            fabric: unsafe { text(fab.name) },
            // SAFETY: as above.
            domain: unsafe { text(dom.name) },
            max_msg: ep_attr.max_msg_size as u64,
            inject: tx.inject_size,
            // The protocol's remote CQ data is 32 bits (a message's seq): EFA and verbs offer 4 bytes.
            write_data: rma && dom.cq_data_size >= 4,
            mr_local: dom.mr_mode & sys::FI_MR_LOCAL != 0,
            hmem: rma && i.caps & sys::FI_HMEM != 0,
        };
        let mut r = FabricRail {
            limits,
            fabric: null_mut(),
            domain: null_mut(),
            cq: null_mut(),
            av: null_mut(),
            ep: null_mut(),
            caps: i.caps,
            mode: i.mode,
            mr_mode: dom.mr_mode,
            cq_data_size: dom.cq_data_size,
            addr_format: i.addr_format,
            wait_fd: None,
            wait_note: String::new(),
            name: Vec::new(),
            peer: None,
            mrs: HashMap::new(),
            next_key: 0,
            ctxs: Contexts::new(),
        };
        // From here on, drop closes whatever was opened.
        // SAFETY: the info's fabric attributes; r.fabric receives the fabric.
        let ret = unsafe { sys::fi_fabric(i.fabric_attr, &mut r.fabric, null_mut()) };
        r.check(ret, "fi_fabric")?;
        // SAFETY: an open fabric and the info it was opened from.
        let ret = unsafe { sys::nrt_fi_domain(r.fabric, info, &mut r.domain, null_mut()) };
        r.check(ret, "fi_domain")?;
        r.open_cq(tx.size.saturating_add(rx.size))?;
        let mut av_attr = sys::fi_av_attr { type_: sys::FI_AV_TABLE, count: 4, ..Default::default() };
        // SAFETY: an open domain; the attributes are read during the call.
        let ret = unsafe { sys::nrt_fi_av_open(r.domain, &mut av_attr, &mut r.av, null_mut()) };
        r.check(ret, "fi_av_open (FI_AV_TABLE)")?;
        // SAFETY: an open domain and the info it was opened from.
        let ret = unsafe { sys::nrt_fi_endpoint(r.domain, info, &mut r.ep, null_mut()) };
        r.check(ret, "fi_endpoint")?;
        // SAFETY: an endpoint and a completion queue of the same domain.
        let ret = unsafe { sys::nrt_fi_ep_bind(r.ep, fid(r.cq), sys::FI_TRANSMIT | sys::FI_RECV) };
        r.check(ret, "fi_ep_bind (completion queue)")?;
        // SAFETY: an endpoint and an address vector of the same domain.
        let ret = unsafe { sys::nrt_fi_ep_bind(r.ep, fid(r.av), 0) };
        r.check(ret, "fi_ep_bind (address vector)")?;
        // SAFETY: a bound endpoint.
        let mut ret = unsafe { sys::nrt_fi_enable(r.ep) };
        if ret == -(libc::EBUSY) && r.limits.provider == "shm" {
            // libfabric's shm names a region after the process id. A region left in /dev/shm by
            // a dead process that had our id (killed, or exited with an endpoint open) counts
            // as in use, since /proc/<id> exists: ours. It removes that region as it refuses
            // (libfabric 1.17 to 2.x), so a second try creates a fresh one.
            crate::log_info!("fi_enable on shm: a stale region of a dead process with this process id was in the way; enabling again");
            // SAFETY: the same bound endpoint, whose failed enable created nothing.
            ret = unsafe { sys::nrt_fi_enable(r.ep) };
        }
        r.check(ret, "fi_enable")?;
        r.name = r.getname()?;
        if r.limits.provider == "shm" {
            shm_names::opened(&r.name);
        }
        Ok(r)
    }

    fn check(&self, ret: c_int, what: &str) -> Result<()> {
        if ret == 0 { Ok(()) } else { Err(self.error(what, ret.into())) }
    }

    fn error(&self, what: &str, ret: i64) -> Error {
        fi_error(&format!("{what} on {} domain {}", self.limits.provider, self.limits.domain), ret)
    }

    /// The completion queue: tagged entries; no wait object, or (`wait_fd_wanted`) a file
    /// descriptor to wait on where the provider accepts FI_WAIT_FD (and gives it with
    /// FI_GETWAIT).
    fn open_cq(&mut self, size: usize) -> Result<()> {
        if !wait_fd_wanted() {
            self.wait_note = "FI_WAIT_NONE".into();
            let mut attr = sys::fi_cq_attr { size, format: sys::FI_CQ_FORMAT_TAGGED, wait_obj: sys::FI_WAIT_NONE, ..Default::default() };
            // SAFETY: an open domain; the attributes are read during the call.
            let ret = unsafe { sys::nrt_fi_cq_open(self.domain, &mut attr, &mut self.cq, null_mut()) };
            return self.check(ret, "fi_cq_open (FI_CQ_FORMAT_TAGGED)");
        }
        let mut attr = sys::fi_cq_attr { size, format: sys::FI_CQ_FORMAT_TAGGED, wait_obj: sys::FI_WAIT_FD, ..Default::default() };
        // SAFETY: an open domain; the attributes are read during the call.
        let ret = unsafe { sys::nrt_fi_cq_open(self.domain, &mut attr, &mut self.cq, null_mut()) };
        if ret == 0 {
            let mut fd: c_int = -1;
            // SAFETY: FI_GETWAIT on an FI_WAIT_FD queue writes one int.
            let got = unsafe { sys::nrt_fi_control(fid(self.cq), sys::FI_GETWAIT as c_int, (&raw mut fd).cast()) };
            if got == 0 && fd >= 0 {
                self.wait_fd = Some(fd);
                self.wait_note = "FI_WAIT_FD".into();
                return Ok(());
            }
            self.wait_note = format!("FI_WAIT_NONE (FI_GETWAIT: {})", strerror(got.into()));
            close(&mut self.cq, "completion queue");
        } else {
            self.wait_note = format!("FI_WAIT_NONE (FI_WAIT_FD refused: {})", strerror(ret.into()));
        }
        let mut attr = sys::fi_cq_attr { size, format: sys::FI_CQ_FORMAT_TAGGED, wait_obj: sys::FI_WAIT_NONE, ..Default::default() };
        // SAFETY: as above.
        let ret = unsafe { sys::nrt_fi_cq_open(self.domain, &mut attr, &mut self.cq, null_mut()) };
        self.check(ret, "fi_cq_open (FI_CQ_FORMAT_TAGGED)")
    }

    fn getname(&self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; 64];
        let mut len = buf.len();
        // SAFETY: an enabled endpoint; buf holds len bytes, len receives the name's length.
        let mut ret = unsafe { sys::nrt_fi_getname(fid(self.ep), buf.as_mut_ptr().cast(), &mut len) };
        if ret == -(sys::FI_ETOOSMALL as c_int) && len > buf.len() {
            buf.resize(len, 0);
            // SAFETY: as above, with the length the provider asked for.
            ret = unsafe { sys::nrt_fi_getname(fid(self.ep), buf.as_mut_ptr().cast(), &mut len) };
        }
        self.check(ret, "fi_getname")?;
        buf.truncate(len);
        Ok(buf)
    }

    /// FI_RMA is offered (`read`; `write_data` also needs remote CQ data: `Limits::write_data`).
    pub fn rma(&self) -> bool {
        self.caps & sys::FI_RMA != 0
    }

    /// Whether the caller may block on `wait_fd` now (`fi_trywait`): false when completions
    /// wait (poll first) or the queue has no descriptor. (The progress thread polls libfabric
    /// communicators every tick instead, so nothing calls it yet.)
    #[allow(dead_code)]
    pub fn trywait(&mut self) -> bool {
        if self.wait_fd.is_none() {
            return false;
        }
        let mut fids = [fid(self.cq)];
        // SAFETY: the rail's fabric and one of its objects, read during the call.
        unsafe { sys::nrt_fi_trywait(self.fabric, fids.as_mut_ptr(), 1) == 0 }
    }

    /// What the provider returned, for logs: capabilities, modes, limits, wait object.
    pub fn describe(&self) -> String {
        format!(
            "{} fabric {} domain {}: caps {} mode {} mr_mode {} max_msg_size {} inject_size {} cq_data_size {} \
             write_data {} device memory {} wait {}",
            self.limits.provider,
            self.limits.fabric,
            self.limits.domain,
            names(self.caps, &CAP_NAMES),
            names(self.mode, &MODE_NAMES),
            names(self.mr_mode, &MR_MODE_NAMES),
            self.limits.max_msg,
            self.limits.inject,
            self.cq_data_size,
            self.limits.write_data,
            if self.limits.hmem { "FI_HMEM" } else { "staged" },
            self.wait_note
        )
    }

    /// The descriptor to pass for `mr`: only with FI_MR_LOCAL, or FI_MR_HMEM (device memory's
    /// descriptor is needed then; the protocol passes one for every buffer it registered).
    fn desc(&self, mr: Option<&Mr>, len: usize, what: &str) -> Result<*mut c_void> {
        let hmem = self.mr_mode & sys::FI_MR_HMEM != 0;
        match mr {
            Some(m) if self.limits.mr_local || hmem => Ok(std::ptr::with_exposed_provenance_mut(m.desc)),
            None if self.limits.mr_local && len > 0 => Err(Error::invalid(format!(
                "{what} of {len} bytes without a registration: {} needs registered buffers (FI_MR_LOCAL)",
                self.limits.provider
            ))),
            _ => Ok(null_mut()),
        }
    }

    fn peer(&self, what: &str) -> Result<sys::fi_addr_t> {
        self.peer.ok_or_else(|| Error::invalid(format!("{what}: the rail has no peer yet (connect first)")))
    }

    fn need_rma(&self, what: &str, data: bool) -> Result<()> {
        if !self.rma() || (data && !self.limits.write_data) {
            return Err(Error::invalid(format!(
                "{what}: {} domain {} offers no {}",
                self.limits.provider,
                self.limits.domain,
                if data { "RMA write with remote CQ data" } else { "RMA" }
            )));
        }
        Ok(())
    }

    /// What a post's return means; the slot goes back unless the operation was taken.
    fn posted(&mut self, ret: isize, slot: usize, what: &str) -> Result<Posted> {
        let ret = ret as i64;
        if ret == 0 {
            return Ok(Posted::Ok);
        }
        self.ctxs.release(slot);
        if ret == eagain() { Ok(Posted::Again) } else { Err(self.error(what, ret)) }
    }

    /// A completion for the operation whose context is `op`, or a peer's write.
    fn complete(&mut self, op: *mut c_void, flags: u64, len: usize, tag: u64, data: u64, err: Option<String>) -> Result<Cqe> {
        let data = if flags & sys::FI_REMOTE_CQ_DATA != 0 { data } else { 0 };
        if let Some(i) = self.ctxs.index(op) {
            let s = self.ctxs.release(i);
            let recv = s.kind == CqKind::Recv;
            return Ok(Cqe { ctx: s.user, kind: s.kind, len: if recv { len } else { s.len }, tag: if recv { tag } else { 0 }, data, err });
        }
        if flags & (sys::FI_REMOTE_WRITE | sys::FI_REMOTE_CQ_DATA) != 0 {
            return Ok(Cqe { ctx: 0, kind: CqKind::RemoteWrite, len, tag: 0, data, err });
        }
        Err(Error::failure(format!(
            "{} domain {}: a completion (context {op:p}, flags {flags:#x}) for nothing this rail posted{}",
            self.limits.provider,
            self.limits.domain,
            err.map(|e| format!(": {e}")).unwrap_or_default()
        )))
    }

    /// The error completion waiting at the head of the queue (`-FI_EAVAIL`).
    fn read_error(&mut self, out: &mut Vec<Cqe>) -> Result<()> {
        let mut e = sys::fi_cq_err_entry::default();
        // SAFETY: an open queue; `e` is one error entry, err_data_size 0 so the provider keeps
        // err_data (valid until the next read).
        let n = unsafe { sys::nrt_fi_cq_readerr(self.cq, &mut e, 0) };
        let n = n as i64;
        if n == eagain() {
            return Ok(());
        }
        if n < 0 {
            return Err(self.error("fi_cq_readerr", n));
        }
        let mut buf: [c_char; 256] = [0; 256];
        // SAFETY: the entry just read (its err_data still valid); buf holds its length; the
        // result is buf or a string of the provider's.
        let prov = unsafe { text(sys::nrt_fi_cq_strerror(self.cq, e.prov_errno, e.err_data, buf.as_mut_ptr(), buf.len())) };
        let mut msg = format!("{} (error {}; provider {}: {prov})", strerror(e.err.into()), e.err, e.prov_errno);
        if e.olen > 0 {
            msg.push_str(&format!("; {} bytes did not fit", e.olen));
        }
        let c = self.complete(e.op_context, e.flags, e.len, e.tag, e.data, Some(msg))?;
        out.push(c);
        Ok(())
    }
}

impl Rail for FabricRail {
    fn limits(&self) -> &Limits {
        &self.limits
    }

    fn name(&self) -> Vec<u8> {
        self.name.clone()
    }

    fn connect(&mut self, peer: &[u8]) -> Result<()> {
        if peer.is_empty() {
            return Err(Error::invalid("libfabric connect: empty peer address"));
        }
        // The provider reads an address of its own format's size (or a string for FI_ADDR_STR):
        // never past what we hand it.
        let mut addr = peer.to_vec();
        if addr.len() < self.name.len() {
            addr.resize(self.name.len(), 0);
        }
        if self.addr_format == sys::FI_ADDR_STR && !addr.contains(&0) {
            addr.push(0);
        }
        let mut fi_addr: sys::fi_addr_t = sys::ADDR_UNSPEC;
        // SAFETY: an open address vector; addr holds one address of at least the provider's
        // size (NUL-terminated for strings); fi_addr receives its handle.
        let ret = unsafe { sys::nrt_fi_av_insert(self.av, addr.as_ptr().cast(), 1, &mut fi_addr, 0, null_mut()) };
        if ret != 1 {
            return Err(if ret < 0 {
                self.error("fi_av_insert", ret.into())
            } else {
                Error::invalid(format!(
                    "fi_av_insert on {} domain {}: the peer address was refused",
                    self.limits.provider, self.limits.domain
                ))
            });
        }
        self.peer = Some(fi_addr);
        Ok(())
    }

    fn register(&mut self, ptr: *const u8, len: usize, remote: bool) -> Result<Mr> {
        self.reg(ptr, len, remote, None)
    }

    fn register_device(&mut self, ptr: *const u8, len: usize, remote: bool, device: i32) -> Result<Mr> {
        if !self.limits.hmem {
            return Err(Error::invalid(format!(
                "registering device memory: {} domain {} offers no FI_HMEM",
                self.limits.provider, self.limits.domain
            )));
        }
        self.reg(ptr, len, remote, Some((sys::FI_HMEM_NEURON, device)))
    }

    fn deregister(&mut self, mr: &Mr) {
        let Some(list) = self.mrs.get_mut(&mr.key) else {
            crate::log_warn!("libfabric: deregistering key {:#x}, which this rail did not register", mr.key);
            return;
        };
        // SAFETY: registrations of this rail, alive until closed below.
        let pos = list.iter().position(|&m| unsafe { sys::nrt_fi_mr_desc(m) }.addr() == mr.desc).unwrap_or(0);
        let mut m = list.swap_remove(pos);
        if list.is_empty() {
            self.mrs.remove(&mr.key);
        }
        close(&mut m, "memory registration");
    }

    unsafe fn tsend(&mut self, buf: *const u8, len: usize, mr: Option<&Mr>, tag: u64, ctx: u64) -> Result<Posted> {
        let desc = self.desc(mr, len, "fi_tsend")?;
        let dest = self.peer("fi_tsend")?;
        let slot = self.ctxs.take(ctx, len, CqKind::Send);
        // SAFETY: buf is valid for len bytes until the completion (the caller's contract); the
        // context is a slot that stays put until its completion is read.
        let ret = unsafe { sys::nrt_fi_tsend(self.ep, buf.cast(), len, desc, dest, tag, self.ctxs.ptr(slot)) };
        self.posted(ret, slot, "fi_tsend")
    }

    unsafe fn trecv(&mut self, buf: *mut u8, len: usize, mr: Option<&Mr>, tag: u64, ignore: u64, ctx: u64) -> Result<Posted> {
        let desc = self.desc(mr, len, "fi_trecv")?;
        let src = self.peer("fi_trecv")?;
        let slot = self.ctxs.take(ctx, len, CqKind::Recv);
        // SAFETY: buf is valid for len bytes of writes until the completion (the caller's
        // contract); the context stays put until its completion is read.
        let ret = unsafe { sys::nrt_fi_trecv(self.ep, buf.cast(), len, desc, src, tag, ignore, self.ctxs.ptr(slot)) };
        self.posted(ret, slot, "fi_trecv")
    }

    unsafe fn write_data(
        &mut self,
        buf: *const u8,
        len: usize,
        mr: Option<&Mr>,
        data: u64,
        raddr: u64,
        rkey: u64,
        ctx: u64,
    ) -> Result<Posted> {
        self.need_rma("fi_writedata", true)?;
        let desc = self.desc(mr, len, "fi_writedata")?;
        let dest = self.peer("fi_writedata")?;
        let slot = self.ctxs.take(ctx, len, CqKind::Write);
        // SAFETY: buf is valid for len bytes until the completion (the caller's contract); the
        // context stays put until its completion is read; the peer checks raddr/rkey.
        let ret = unsafe { sys::nrt_fi_writedata(self.ep, buf.cast(), len, desc, data, dest, raddr, rkey, self.ctxs.ptr(slot)) };
        self.posted(ret, slot, "fi_writedata")
    }

    unsafe fn read(&mut self, buf: *mut u8, len: usize, mr: Option<&Mr>, raddr: u64, rkey: u64, ctx: u64) -> Result<Posted> {
        self.need_rma("fi_read", false)?;
        let desc = self.desc(mr, len, "fi_read")?;
        let src = self.peer("fi_read")?;
        let slot = self.ctxs.take(ctx, len, CqKind::Read);
        // SAFETY: buf is valid for len bytes of writes until the completion (the caller's
        // contract); the context stays put until its completion is read.
        let ret = unsafe { sys::nrt_fi_read(self.ep, buf.cast(), len, desc, src, raddr, rkey, self.ctxs.ptr(slot)) };
        self.posted(ret, slot, "fi_read")
    }

    fn poll(&mut self, out: &mut Vec<Cqe>) -> Result<()> {
        let mut batch = [sys::fi_cq_tagged_entry::default(); BATCH];
        for _ in 0..MAX_READS {
            // SAFETY: an open queue of FI_CQ_FORMAT_TAGGED; batch holds BATCH such entries.
            let n = unsafe { sys::nrt_fi_cq_read(self.cq, batch.as_mut_ptr().cast(), BATCH) };
            let n = n as i64;
            if n > 0 {
                for e in &batch[..n as usize] {
                    let c = self.complete(e.op_context, e.flags, e.len, e.tag, e.data, None)?;
                    out.push(c);
                }
                if (n as usize) < BATCH {
                    // The queue had no more: another read would only run the provider's
                    // progress again (a system call over tcp) before these are handled.
                    return Ok(());
                }
            } else if n == eagain() {
                return Ok(());
            } else if n == -i64::from(sys::FI_EAVAIL) {
                self.read_error(out)?;
            } else {
                return Err(self.error("fi_cq_read", n));
            }
        }
        Ok(())
    }

    fn wait_fd(&self) -> Option<RawFd> {
        self.wait_fd
    }

    fn quiesce(&mut self) {
        self.quiesce_endpoint();
    }
}

impl FabricRail {
    /// Registers `len` bytes at `ptr`: host memory (`fi_mr_reg`), or with `device` = (iface,
    /// id) through `fi_mr_regattr` (`FI_HMEM_NEURON`: Neuron device memory, `device.neuron` =
    /// id; the tests also pass `FI_HMEM_SYSTEM`, host memory, to run this path on providers
    /// without FI_HMEM).
    fn reg(&mut self, ptr: *const u8, len: usize, remote: bool, device: Option<(sys::fi_hmem_iface, i32)>) -> Result<Mr> {
        if remote {
            self.need_rma("fi_mr_reg for remote access", false)?;
        }
        let mut access = sys::FI_SEND | sys::FI_RECV;
        if self.rma() {
            access |= sys::FI_READ | sys::FI_WRITE;
        }
        if remote {
            access |= sys::FI_REMOTE_READ | sys::FI_REMOTE_WRITE;
        }
        let requested_key = if self.mr_mode & sys::FI_MR_PROV_KEY != 0 {
            0
        } else {
            self.next_key += 1;
            self.next_key
        };
        let mut mr = null_mut();
        let ret = match device {
            // SAFETY: an open domain; the provider records (and may pin) ptr..ptr+len, which the
            // caller keeps mapped until it deregisters; mr receives the registration.
            None => unsafe { sys::nrt_fi_mr_reg(self.domain, ptr.cast(), len, access, 0, requested_key, 0, &mut mr, null_mut()) },
            Some((iface, dev)) => {
                let iov = sys::iovec { iov_base: ptr.cast_mut().cast(), iov_len: len };
                let mut attr = sys::fi_mr_attr { mr_iov: &iov, iov_count: 1, access, requested_key, iface, ..Default::default() };
                if iface == sys::FI_HMEM_NEURON {
                    attr.device.neuron = dev;
                }
                // SAFETY: an open domain; the attributes and the iovec they point to are read
                // during the call; the provider records (and may pin) the device memory at
                // ptr..ptr+len, which the caller keeps mapped until it deregisters.
                unsafe { sys::nrt_fi_mr_regattr(self.domain, &attr, 0, &mut mr) }
            }
        };
        let what = match device {
            Some((sys::FI_HMEM_NEURON, _)) => "fi_mr_regattr (FI_HMEM_NEURON)",
            Some(_) => "fi_mr_regattr",
            None => "fi_mr_reg",
        };
        self.check(ret, &format!("{what} of {len} bytes"))?;
        // SAFETY: a registration just made.
        let (desc, key) = unsafe { (sys::nrt_fi_mr_desc(mr), sys::nrt_fi_mr_key(mr)) };
        self.mrs.entry(key).or_default().push(mr);
        let remote_base = if self.mr_mode & sys::FI_MR_VIRT_ADDR != 0 { ptr.addr() as u64 } else { 0 };
        Ok(Mr { desc: desc.expose_provenance(), key, remote_base })
    }

    /// Cancels every operation still posted (`fi_cancel`), reads the queue until they have come
    /// back (cancelled or done, within 500 ms), then closes the endpoint. Closing an endpoint
    /// with receives still posted crashed `tcp;ofi_rxm` (1.17) now and then, inside `fi_close`.
    fn quiesce_endpoint(&mut self) {
        if self.ep.is_null() {
            return;
        }
        for ctx in self.ctxs.busy() {
            // SAFETY: an open endpoint and the context of an operation posted on it; a context
            // that already completed is ignored by the provider.
            unsafe { sys::nrt_fi_cancel(fid(self.ep), ctx) };
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
        let mut out = Vec::new();
        while self.ctxs.in_use() > 0 && std::time::Instant::now() < deadline {
            out.clear();
            if self.poll(&mut out).is_err() || out.is_empty() {
                std::thread::yield_now();
            }
        }
        close(&mut self.ep, "endpoint");
    }
}

impl Drop for FabricRail {
    fn drop(&mut self) {
        // The endpoint first (it uses all the rest), the registrations before their domain.
        self.quiesce_endpoint();
        close(&mut self.av, "address vector");
        close(&mut self.cq, "completion queue");
        for (_, list) in self.mrs.drain() {
            for mut m in list {
                close(&mut m, "memory registration");
            }
        }
        close(&mut self.domain, "domain");
        close(&mut self.fabric, "fabric");
        if self.limits.provider == "shm" && !self.name.is_empty() {
            shm_names::closed(&self.name);
        }
        if self.ctxs.in_use() > 0 {
            crate::log_debug!("libfabric: {} operations were in flight when the rail closed", self.ctxs.in_use());
        }
    }
}
