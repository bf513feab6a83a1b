//! Memory registration: tensors we own are registered whole (in parts of `Device::max_mr` bytes
//! where longer), once, and stay registered until the tensor's memory is freed (a hook from
//! `tensor::Memory`'s drop); other memory is registered for one request. The cache is bounded by
//! the number of live tensors.

use super::device::Device;
use crate::status::{Error, NRT_STATUS, Result};
use crate::tensor::{Memory, Region};
use parking_lot::Mutex;
use rdma_sys::*;
use std::collections::HashMap;
use std::sync::{Arc, Once, Weak};

pub struct Mr(*mut ibv_mr);

// SAFETY: an MR handle may be used and deregistered from any thread.
unsafe impl Send for Mr {}
// SAFETY: as above; only its keys are read after creation.
unsafe impl Sync for Mr {}

impl Drop for Mr {
    fn drop(&mut self) {
        // SAFETY: registered by us, deregistered once.
        unsafe { ibv_dereg_mr(self.0) };
    }
}

/// (protection domain, memory base) → the memory's registrations (one, or consecutive parts of
/// `Device::max_mr` bytes where the memory is longer).
type Cache = HashMap<(usize, usize), (Weak<Memory>, Arc<[Arc<Mr>]>)>;
static CACHE: Mutex<Option<Cache>> = Mutex::new(None);
static HOOK: Once = Once::new();

fn forget(base: usize) {
    if let Some(c) = CACHE.lock().as_mut() {
        c.retain(|(_, b), _| *b != base);
    }
}

fn reg(dev: &Device, ptr: *mut u8, len: usize) -> Result<Arc<Mr>> {
    if len as u64 > dev.max_mr {
        return Err(Error::resource(format!(
            "memory of {len} bytes is longer than one registration may be on {dev} (max_mr_size {})",
            dev.max_mr
        )));
    }
    let access = (ibv_access_flags::IBV_ACCESS_LOCAL_WRITE | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE).0;
    // SAFETY: ptr..ptr+len is mapped memory that stays mapped while the MR lives (callers).
    let mr = unsafe { ibv_reg_mr(dev.pd, ptr.cast(), len, access as i32) };
    if mr.is_null() {
        let e = std::io::Error::last_os_error();
        return Err(Error::io(NRT_STATUS::NRT_RESOURCE, &format!("ibv_reg_mr of {len} bytes on {dev}"), &e));
    }
    Ok(Arc::new(Mr(mr)))
}

impl Mr {
    /// The registered length.
    pub fn len(&self) -> u64 {
        // SAFETY: the MR is valid while self lives.
        unsafe { (*self.0).length as u64 }
    }
    pub fn lkey(&self) -> u32 {
        // SAFETY: the MR is valid while self lives.
        unsafe { (*self.0).lkey }
    }
    pub fn rkey(&self) -> u32 {
        // SAFETY: as above.
        unsafe { (*self.0).rkey }
    }
}

/// Registers memory the transport owns (bounce buffers) for as long as the result lives.
pub fn register_raw(dev: &Device, ptr: *mut u8, len: usize) -> Result<Arc<Mr>> {
    reg(dev, ptr, len)
}

/// `len` bytes from `ptr` registered as parts of at most `Device::max_mr` bytes each.
fn reg_parts(dev: &Device, ptr: *mut u8, len: usize) -> Result<Vec<Arc<Mr>>> {
    let part = dev.max_mr.min(len as u64).max(1) as usize;
    (0..len.div_ceil(part))
        .map(|i| {
            // SAFETY: i * part < len: within the memory.
            let p = unsafe { ptr.add(i * part) };
            reg(dev, p, part.min(len - i * part))
        })
        .collect()
}

/// A region's registration: consecutive parts (address, length, its registration) covering it
/// from its first byte. Tensors we own are registered whole once (cached); other memory for
/// this request.
pub fn register(dev: &Device, region: &Region) -> Result<Vec<(u64, u64, Arc<Mr>)>> {
    if region.is_empty() {
        return Ok(Vec::new());
    }
    if region.staging().is_some() {
        return Err(Error::invalid("device memory without a host address cannot be registered for RDMA"));
    }
    HOOK.call_once(|| crate::tensor::set_free_hook(forget));
    let (base, mrs): (u64, Arc<[Arc<Mr>]>) = match region.memory() {
        None => (region.ptr() as u64, reg_parts(dev, region.ptr(), region.len())?.into()),
        Some(mem) => {
            let key = (dev.pd as usize, mem.base() as usize);
            let mut g = CACHE.lock();
            let c = g.get_or_insert_with(HashMap::new);
            match c.get(&key) {
                Some((w, mrs)) if w.upgrade().is_some_and(|m| Arc::ptr_eq(&m, mem)) => (mem.base() as u64, mrs.clone()),
                _ => {
                    let mrs: Arc<[Arc<Mr>]> = reg_parts(dev, mem.base(), mem.len())?.into();
                    c.insert(key, (Arc::downgrade(mem), mrs.clone()));
                    (mem.base() as u64, mrs)
                }
            }
        }
    };
    // The parts the region overlaps, cut to it.
    let (start, end) = (region.ptr() as u64, region.ptr() as u64 + region.len() as u64);
    let mut out = Vec::new();
    let mut at = base;
    for m in mrs.iter() {
        let len = m.len();
        let (lo, hi) = (at.max(start), (at + len).min(end));
        if lo < hi {
            out.push((lo, hi - lo, m.clone()));
        }
        at += len;
    }
    if out.iter().map(|p| p.1).sum::<u64>() != region.len() as u64 {
        return Err(Error::failure(format!("a region of {} bytes is not within its memory's registration", region.len())));
    }
    Ok(out)
}
