//! The process-wide state behind the C functions: whether `nrt_init` ran, and the live lncs.
//!
//! One mutex guards init/close/connect/accept bookkeeping (rare calls); the post/test path never
//! takes it: it goes through the handle tables only.

use crate::comm::{COMMS, Comm};
use crate::config::{Config, MAX_LNC};
use crate::engine::Lnc;
use crate::status::{Error, Result};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::Arc;

struct State {
    nrt_initialised: bool,
    lncs: BTreeMap<i32, Arc<Lnc>>,
    /// lncs whose last close returned an error: init refuses them until nrt_close/nrt_init.
    failed_close: BTreeSet<i32>,
}

static STATE: Mutex<State> = Mutex::new(State { nrt_initialised: false, lncs: BTreeMap::new(), failed_close: BTreeSet::new() });

fn check_lnc(what: &str, lnc: i32) -> Result<()> {
    if !(0..=MAX_LNC).contains(&lnc) {
        return Err(Error::invalid(format!("{what} {lnc} is outside 0..={MAX_LNC}")));
    }
    Ok(())
}

/// `nrt_init`: a second call while initialised succeeds and changes nothing.
pub fn nrt_init() {
    crate::log::reload();
    crate::sys::rlimit::raise_nofile_limit();
    let mut st = STATE.lock();
    if !st.nrt_initialised {
        st.nrt_initialised = true;
        st.failed_close.clear();
    }
}

/// `nrt_close`: closes every lnc still open. An lnc closed with communicators never connected or
/// requests in flight is logged (warn): `nrt_close` itself succeeds, as it is the end of the
/// runtime and there is nothing a caller could do about it, but the lost transfers are said.
pub fn nrt_close() {
    let lncs: Vec<Arc<Lnc>> = {
        let mut st = STATE.lock();
        st.nrt_initialised = false;
        st.failed_close.clear();
        std::mem::take(&mut st.lncs).into_values().collect()
    };
    // Every lnc counted before any shuts: shutting one fails its peers' requests on the others.
    let left: Vec<Unfinished> = lncs.iter().map(|l| unfinished(l)).collect();
    for (l, left) in lncs.iter().zip(left) {
        shut(l);
        if let Err(e) = left.check(l.id) {
            crate::log_warn!("nrt_close: {e}");
        }
    }
}

pub fn init(lnc: i32) -> Result<()> {
    init_with(lnc, None)
}

/// `init` with settings given rather than read from the environment (tests).
pub fn init_with(lnc: i32, cfg: Option<Config>) -> Result<()> {
    check_lnc("lnc", lnc)?;
    let mut st = STATE.lock();
    // In preload mode nrt_init is the vendor's: whether it ran is the vendor's to check.
    if !st.nrt_initialised && !cfg!(feature = "preload") {
        return Err(Error::uninit(format!("lnc {lnc}: nrt_init has not been called")));
    }
    if st.lncs.contains_key(&lnc) {
        return Err(Error::invalid(format!("lnc {lnc} is already initialised")));
    }
    if st.failed_close.contains(&lnc) {
        return Err(Error::failure(format!("lnc {lnc}: its previous close failed; call nrt_close and nrt_init first")));
    }
    let cfg = match cfg {
        Some(c) => c,
        None => Config::from_env().map_err(|m| Error::invalid(format!("lnc {lnc}: {m}")))?,
    };
    let l = Lnc::start(lnc, cfg)?;
    st.lncs.insert(lnc, l);
    Ok(())
}

/// Stops the lnc and frees every communicator and request; the error says what was unfinished.
fn teardown(l: &Arc<Lnc>) -> Result<()> {
    let left = unfinished(l);
    shut(l);
    left.check(l.id)
}

/// What an lnc leaves unfinished when it closes.
struct Unfinished {
    unconnected: usize,
    in_flight: usize,
}

impl Unfinished {
    /// The close's error when something was unfinished.
    fn check(&self, lnc: i32) -> Result<()> {
        let Unfinished { unconnected, in_flight } = *self;
        if unconnected > 0 || in_flight > 0 {
            return Err(Error::failure(format!(
                "lnc {lnc}: closed with {unconnected} communicator(s) never connected and {in_flight} request(s) in flight; all freed"
            )));
        }
        Ok(())
    }
}

/// Counts what the lnc would leave unfinished, before it shuts (shutting fails every pending
/// request).
fn unfinished(l: &Lnc) -> Unfinished {
    let comms = l.comms();
    // Read what already arrived (a TCP send's Ack is otherwise read only by its test).
    for c in &comms {
        if !c.is_connecting() {
            c.progress();
        }
    }
    Unfinished {
        unconnected: comms.iter().filter(|c| !c.ever_ready()).count(),
        in_flight: comms.iter().map(|c| c.reqs.count_where(|r| r.is_pending())).sum(),
    }
}

/// Stops the lnc and frees every communicator and request.
fn shut(l: &Lnc) {
    for c in &l.shutdown() {
        // Requests hold their communicator: taken out (and the retired ones kept for reuse
        // dropped), they let it go. (Not under the io lock: a test pinning one of them may be
        // waiting for that lock. `clear` is: posts claim slots under it; none does any more, the
        // communicator is closed.)
        drop(c.reqs.take_all(|_| true));
        let retired = {
            let _io = c.io.lock();
            c.reqs.clear()
        };
        drop(retired);
        COMMS.remove(c.id);
    }
}

pub fn close(lnc: i32) -> Result<()> {
    check_lnc("lnc", lnc)?;
    let l = {
        let mut st = STATE.lock();
        let l = st.lncs.remove(&lnc).ok_or_else(|| Error::uninit(format!("lnc {lnc} is not initialised")))?;
        // Marked before teardown so an init racing with this close cannot slip in unmarked.
        st.failed_close.insert(lnc);
        l
    };
    let r = teardown(&l);
    if r.is_ok() {
        STATE.lock().failed_close.remove(&lnc);
    }
    r
}

pub(crate) fn lookup(lnc: i32) -> Result<Arc<Lnc>> {
    check_lnc("lnc", lnc)?;
    STATE
        .lock()
        .lncs
        .get(&lnc)
        .cloned()
        .ok_or_else(|| Error::uninit(format!("lnc {lnc} is not initialised (call nrt_async_sendrecv_init)")))
}

/// An IP literal (with or without brackets, IPv6 zone ids unsupported) or a host name.
pub fn parse_peer(s: &str) -> Result<IpAddr> {
    let t = s.trim();
    let lit = t.strip_prefix('[').and_then(|x| x.strip_suffix(']')).unwrap_or(t);
    if let Ok(ip) = lit.parse::<IpAddr>() {
        return Ok(ip);
    }
    if t.is_empty() || t.len() > 253 || !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
        return Err(Error::invalid(format!("peer_ip {s:?} is not an IP address or host name")));
    }
    (t, 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .map(|a| a.ip())
        .ok_or_else(|| Error::invalid(format!("peer_ip {s:?} does not resolve")))
}

pub fn connect(peer_ip: &str, peer_lnc: i32, lnc: i32) -> Result<Arc<Comm>> {
    check_lnc("peer lnc", peer_lnc)?;
    let l = lookup(lnc)?;
    let ip = parse_peer(peer_ip)?;
    l.connect(ip, peer_lnc)
}

pub fn accept(peer_ip: &str, peer_lnc: i32, lnc: i32) -> Result<Arc<Comm>> {
    check_lnc("peer lnc", peer_lnc)?;
    let l = lookup(lnc)?;
    let ip = parse_peer(peer_ip)?;
    l.accept(ip, peer_lnc)
}

/// `flush`: receives complete only after their last byte was written into the tensor by `recv`
/// on this host, and the Release/Acquire pair on the request state orders those writes before
/// `test_request`'s answer; a full fence covers callers that read through other threads.
pub fn flush(lnc: i32) -> Result<()> {
    let _l = lookup(lnc)?;
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    // The caller is done with its receives: Acks it left queued go out (their senders wait).
    crate::comm::flush_deferred();
    Ok(())
}

#[cfg(test)]
mod auth_tests;
#[cfg_attr(feature = "preload", allow(dead_code))]
pub mod cores;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod kernel_tests;
#[cfg(test)]
mod random_tests;
#[cfg(test)]
mod shm_tests;
#[cfg(test)]
mod tests;
