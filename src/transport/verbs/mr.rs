//! Memory registration: tensors we own are registered whole, once, and stay registered until
//! the tensor's memory is freed (a hook from `tensor::Memory`'s drop); other memory is
//! registered for one request. The cache is bounded by the number of live tensors.

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

/// What a request holds while its memory must stay registered.
#[derive(Clone)]
pub struct Registration(Option<Arc<Mr>>);

impl Registration {
    pub fn lkey(&self) -> u32 {
        // SAFETY: the MR stays valid while the Arc lives.
        self.0.as_ref().map_or(0, |m| unsafe { (*m.0).lkey })
    }
    pub fn rkey(&self) -> u32 {
        // SAFETY: as above.
        self.0.as_ref().map_or(0, |m| unsafe { (*m.0).rkey })
    }
    /// What keeps the registration alive.
    pub fn hold(self) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        self.0.map(|m| m as Arc<dyn std::any::Any + Send + Sync>)
    }
}

/// (protection domain, memory base) → the memory's registration.
type Cache = HashMap<(usize, usize), (Weak<Memory>, Arc<Mr>)>;
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

pub fn register(dev: &Device, region: &Region) -> Result<Registration> {
    if region.is_empty() {
        return Ok(Registration(None));
    }
    if region.staging().is_some() {
        return Err(Error::invalid("device memory without a host address cannot be registered for RDMA"));
    }
    HOOK.call_once(|| crate::tensor::set_free_hook(forget));
    let Some(mem) = region.memory() else {
        return Ok(Registration(Some(reg(dev, region.ptr(), region.len())?)));
    };
    let key = (dev.pd as usize, mem.base() as usize);
    let mut g = CACHE.lock();
    let c = g.get_or_insert_with(HashMap::new);
    if let Some((w, mr)) = c.get(&key)
        && w.upgrade().is_some_and(|m| Arc::ptr_eq(&m, mem))
    {
        return Ok(Registration(Some(mr.clone())));
    }
    let mr = reg(dev, mem.base(), mem.len())?;
    c.insert(key, (Arc::downgrade(mem), mr.clone()));
    Ok(Registration(Some(mr)))
}
