//! Finding and opening the RDMA device, port and GID that serve a local IP address.

use crate::status::{Error, NRT_STATUS, Result};
use parking_lot::Mutex;
use rdma_sys::*;
use std::ffi::CStr;
use std::net::IpAddr;
use std::sync::Arc;

/// An open device context and protection domain, bound to one port and source GID.
pub struct Device {
    pub name: String,
    pub ctx: *mut ibv_context,
    pub pd: *mut ibv_pd,
    pub port: u8,
    pub gid_index: u8,
    pub gid: [u8; 16],
    pub lid: u16,
    pub mtu: ibv_mtu::Type,
    /// The port's longest message (`max_msg_sz`: one RDMA write at most this long).
    pub max_msg: u64,
    /// The longest registration (`max_mr_size`).
    pub max_mr: u64,
    /// A software device (Soft-RoCE `rxe`, `siw`): the kernel on this host's CPUs does the NIC's
    /// work.
    pub software: bool,
}

// SAFETY: ibv_context and ibv_pd may be used from any thread (libibverbs is thread-safe).
unsafe impl Send for Device {}
// SAFETY: as above; the struct is never mutated after creation.
unsafe impl Sync for Device {}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} port {} gid index {}", self.name, self.port, self.gid_index)
    }
}

/// Opened devices, kept for the life of the process (contexts are costly to open).
static OPEN: Mutex<Vec<Arc<Device>>> = Mutex::new(Vec::new());

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn gid_for(ip: IpAddr) -> Option<[u8; 16]> {
    match ip {
        IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_unspecified() => Some(v4.to_ipv6_mapped().octets()),
        IpAddr::V6(v6) if !v6.is_loopback() && !v6.is_unspecified() => Some(v6.octets()),
        _ => None,
    }
}

/// "RoCE v2", "IB/RoCE v1" or nothing, from sysfs.
fn gid_type(dev: &str, port: u8, index: i32) -> String {
    std::fs::read_to_string(format!("/sys/class/infiniband/{dev}/ports/{port}/gid_attrs/types/{index}"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

struct Candidate {
    name: String,
    ctx: *mut ibv_context,
    port: u8,
    gid_index: u8,
    gid: [u8; 16],
    attr: ibv_port_attr,
}

/// A size in bytes from the environment (suffixes K, M, G), at least 4096; `None` when unset.
pub fn size_setting(name: &str) -> Result<Option<u64>> {
    let Some(v) = env(name) else { return Ok(None) };
    let t = v.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let (num, mult) = match t.as_bytes()[t.len() - 1].to_ascii_uppercase() {
        b'K' => (&t[..t.len() - 1], 1u64 << 10),
        b'M' => (&t[..t.len() - 1], 1 << 20),
        b'G' => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    match num.trim().parse::<u64>().ok().and_then(|n| n.checked_mul(mult)).filter(|&n| n >= 4096) {
        Some(n) => Ok(Some(n)),
        None => Err(Error::invalid(format!("{name}={v:?} is not a size of at least 4096 bytes"))),
    }
}

/// The device/port/GID whose GID is `ip` (RoCE v2 preferred), or the one the environment names.
/// `Ok(None)`: no RDMA device serves this address (the caller falls back to TCP or fails).
pub fn device_for_ip(ip: IpAddr) -> Result<Option<Arc<Device>>> {
    let want_dev = env("NEURON_RT_ASYNC_SENDRECV_RDMA_DEVICE");
    let want_gid: Option<i32> = match env("NEURON_RT_ASYNC_SENDRECV_RDMA_GID_INDEX") {
        Some(v) => {
            Some(v.trim().parse().map_err(|_| Error::invalid(format!("NEURON_RT_ASYNC_SENDRECV_RDMA_GID_INDEX={v:?} is not a number")))?)
        }
        None => None,
    };
    let max_reg = size_setting("NEURON_RT_ASYNC_SENDRECV_RDMA_MAX_REGISTRATION")?;
    let target = gid_for(ip);
    if target.is_none() && want_dev.is_none() {
        return Ok(None);
    }
    {
        let open = OPEN.lock();
        if let Some(d) = open.iter().find(|d| {
            want_dev.as_ref().is_none_or(|n| *n == d.name)
                && want_gid.is_none_or(|g| g == d.gid_index as i32)
                // By address; or, for a device named in the environment, whatever GID it was opened with.
                && (target == Some(d.gid) || want_dev.is_some())
        }) {
            return Ok(Some(d.clone()));
        }
    }
    let Some(c) = find(want_dev.as_deref(), want_gid, target)? else { return Ok(None) };
    // SAFETY: ctx is an open context; the PD lives as long as the Device (never freed).
    let pd = unsafe { ibv_alloc_pd(c.ctx) };
    if pd.is_null() {
        let e = std::io::Error::last_os_error();
        return Err(Error::io(NRT_STATUS::NRT_RESOURCE, &format!("ibv_alloc_pd on {}", c.name), &e));
    }
    // SAFETY: a zeroed attribute struct is a valid output buffer; ctx is open.
    let mut attr: ibv_device_attr = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let queried = unsafe { ibv_query_device(c.ctx, &mut attr) } == 0;
    let max_mr = if queried && attr.max_mr_size > 0 { attr.max_mr_size } else { u64::MAX };
    // NEURON_RT_ASYNC_SENDRECV_RDMA_MAX_REGISTRATION lowers it: longer memory is registered in
    // parts of that size (tests; the VM's devices allow 2^64 - 1).
    let max_mr = match max_reg {
        Some(m) if m < max_mr => {
            crate::log_info!(
                "verbs: registrations of at most {m} bytes on {} (NEURON_RT_ASYNC_SENDRECV_RDMA_MAX_REGISTRATION; it allows {max_mr})",
                c.name
            );
            m
        }
        _ => max_mr,
    };
    // The vendor ids the kernel's software drivers report: rxe 0xffffff, siw 0x626d74 ("bmt").
    let software = queried && (attr.vendor_id == 0xff_ffff || attr.vendor_id == 0x62_6d74);
    let d = Arc::new(Device {
        name: c.name,
        ctx: c.ctx,
        pd,
        port: c.port,
        gid_index: c.gid_index,
        gid: c.gid,
        lid: c.attr.lid,
        mtu: c.attr.active_mtu,
        max_msg: if c.attr.max_msg_sz == 0 { 1 << 30 } else { c.attr.max_msg_sz as u64 },
        max_mr,
        software,
    });
    // Soft-RoCE's (rxe) own go-back-N over UDP; siw runs over TCP, which puts packets in order.
    let rxe = queried && attr.vendor_id == 0xff_ffff;
    if rxe && let Some(advice) = super::sysfs::reorder_advice(std::path::Path::new("/sys"), &d.name, d.port, d.gid_index) {
        crate::log_info!("{advice}");
    }
    OPEN.lock().push(d.clone());
    Ok(Some(d))
}

fn find(want_dev: Option<&str>, want_gid: Option<i32>, target: Option<[u8; 16]>) -> Result<Option<Candidate>> {
    let mut n = 0;
    // SAFETY: the list is freed below; n receives its length.
    let list = unsafe { ibv_get_device_list(&mut n) };
    if list.is_null() {
        return Ok(None); // no rdma-core devices (or no provider): not an error
    }
    let mut found = None;
    let mut opened: Vec<*mut ibv_context> = Vec::new();
    'devices: for i in 0..n.max(0) as usize {
        // SAFETY: i < n entries of a valid list.
        let dev = unsafe { *list.add(i) };
        // SAFETY: dev is a valid device; the name is a NUL-terminated string inside it.
        let name = unsafe { CStr::from_ptr(ibv_get_device_name(dev)) }.to_string_lossy().into_owned();
        if want_dev.is_some_and(|w| w != name) {
            continue;
        }
        // SAFETY: valid device.
        let ctx = unsafe { ibv_open_device(dev) };
        if ctx.is_null() {
            continue;
        }
        opened.push(ctx);
        for port in 1..=2u8 {
            // SAFETY: zeroed port attributes are a valid output buffer.
            let mut attr: ibv_port_attr = unsafe { std::mem::zeroed() };
            // SAFETY: valid context and buffer; a port number beyond the device fails.
            if unsafe { ___ibv_query_port(ctx, port, &mut attr) } != 0 {
                break;
            }
            if attr.state != ibv_port_state::IBV_PORT_ACTIVE {
                continue;
            }
            let mut best: Option<(i32, [u8; 16], bool)> = None;
            // For a device named in the environment whose GIDs do not carry the address: its first
            // RoCE v2 GID, else its first GID.
            let mut fallback: Option<(i32, [u8; 16], bool)> = None;
            for idx in 0..attr.gid_tbl_len.min(256) {
                if want_gid.is_some_and(|g| g != idx) {
                    continue;
                }
                // SAFETY: zeroed gid is a valid output buffer.
                let mut gid: ibv_gid = unsafe { std::mem::zeroed() };
                // SAFETY: valid context, port and index within the table.
                if unsafe { ibv_query_gid(ctx, port, idx, &mut gid) } != 0 {
                    continue;
                }
                // SAFETY: every bit pattern is a valid [u8; 16].
                let raw = unsafe { gid.raw };
                if raw == [0; 16] {
                    continue;
                }
                let v2 = gid_type(&name, port, idx) == "RoCE v2";
                let matches = match target {
                    Some(t) => raw == t,
                    None => want_gid.is_some() || v2 || idx == 0,
                };
                if matches && best.as_ref().is_none_or(|b| !b.2 && v2) {
                    best = Some((idx, raw, v2));
                }
                if fallback.as_ref().is_none_or(|f| !f.2 && v2) {
                    fallback = Some((idx, raw, v2));
                }
            }
            if best.is_none() && want_dev.is_some() {
                best = fallback;
            }
            if let Some((idx, gid, _)) = best {
                found = Some(Candidate { name: name.clone(), ctx, port, gid_index: idx as u8, gid, attr });
                break 'devices;
            }
        }
    }
    for ctx in opened {
        if found.as_ref().is_none_or(|f| f.ctx != ctx) {
            // SAFETY: a context we opened and do not keep.
            unsafe { ibv_close_device(ctx) };
        }
    }
    // SAFETY: the list from ibv_get_device_list, freed once (opened contexts stay valid).
    unsafe { ibv_free_device_list(list) };
    Ok(found)
}
