//! Registrations of the messages' memory on every rail. Tensor memory (a `Region` that lies in a
//! `tensor::Memory`) is registered whole, once per communicator, and the registration is kept
//! while the memory lives, keyed by the memory's id (unique in the process, so a later mapping
//! at the same address never meets a stale key). An entry counts the messages using it: one in
//! use is never released; one whose memory was freed is deregistered at the next miss; when
//! `CACHE_MAX` entries are live, the least recently used idle one goes. Other memory (borrowed
//! buffers), or any memory while the cache is full of entries in use, is registered for its
//! message alone and deregistered when the message is done. Device memory (a region with a
//! device address, on rails with `FI_HMEM`) is registered for its message alone too, as device
//! memory (`Rail::register_device`, `device.neuron` = `NEURON_DEVICE`): its vendor tensor may be
//! freed and another mapped at the same address without our knowing.

use crate::status::{Error, Result};
use crate::tensor::{Memory, Region};
use crate::transport::ofi::rail::{Mr, Rail};
use std::collections::HashMap;
use std::sync::Weak;

/// Tensor memories one communicator keeps registered.
const CACHE_MAX: usize = 64;

/// `device.neuron` of device registrations. The vendor API names no device id for a tensor
/// (`nrt_tensor_get_device_allocation_info` gives an HBM index), libfabric's Neuron support and
/// the `efa` provider do not use the field, and -1 (no device) is what other libfabric users on
/// Neuron pass: a provider that did use it would fail the registration (and the message would be
/// staged) rather than act on a wrong device.
pub const NEURON_DEVICE: i32 = -1;

/// A message's memory, registered on every rail: what local operations pass (`desc`) and what
/// the peer uses to reach its first byte (`raddr`, `key`).
pub struct RegionMr {
    mrs: Vec<Mr>,
    /// The region's offset in the registered range.
    off: u64,
    /// The cache entry (memory id) it came from, or None: deregister when done.
    cached: Option<u64>,
}

impl RegionMr {
    pub fn desc(&self, rail: usize) -> Option<&Mr> {
        Some(&self.mrs[rail])
    }
    pub fn raddr(&self, rail: usize) -> u64 {
        self.mrs[rail].remote_base + self.off
    }
    pub fn key(&self, rail: usize) -> u64 {
        self.mrs[rail].key
    }
    /// (address, key) per rail, for a clear-to-send or ready-to-send.
    pub fn remote(&self) -> Vec<(u64, u64)> {
        (0..self.mrs.len()).map(|r| (self.raddr(r), self.key(r))).collect()
    }
}

struct Entry {
    mem: Weak<Memory>,
    mrs: Vec<Mr>,
    users: usize,
    used: u64,
}

#[derive(Default)]
pub struct MrCache {
    entries: HashMap<u64, Entry>,
    clock: u64,
}

/// Registers `len` bytes at `ptr` on every rail (all or none).
pub fn register_all(rails: &mut [Box<dyn Rail>], ptr: *const u8, len: usize, remote: bool) -> Result<Vec<Mr>> {
    register_each(rails, |r| r.register(ptr, len, remote))
}

/// `reg` on every rail (all or none).
fn register_each(rails: &mut [Box<dyn Rail>], mut reg: impl FnMut(&mut dyn Rail) -> Result<Mr>) -> Result<Vec<Mr>> {
    let mut mrs = Vec::with_capacity(rails.len());
    let mut failed = None;
    for rail in rails.iter_mut() {
        match reg(rail.as_mut()) {
            Ok(m) => mrs.push(m),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    match failed {
        None => Ok(mrs),
        Some(e) => {
            deregister_all(rails, &mrs);
            Err(e)
        }
    }
}

pub fn deregister_all(rails: &mut [Box<dyn Rail>], mrs: &[Mr]) {
    for (rail, mr) in rails.iter_mut().zip(mrs) {
        rail.deregister(mr);
    }
}

impl MrCache {
    /// The registration of `region` on every rail (with remote access, so that either end may
    /// write or read it); None for an empty region. Device memory is registered as such, at its
    /// device address (the caller checked that the rails offer `FI_HMEM`).
    pub fn register(&mut self, rails: &mut [Box<dyn Rail>], region: &Region) -> Result<Option<RegionMr>> {
        if region.is_empty() {
            return Ok(None);
        }
        if let Some(dev) = region.device_addr() {
            // The address is only handed to the provider, never dereferenced here.
            let va = std::ptr::with_exposed_provenance::<u8>(dev.va);
            let mrs = register_each(rails, |r| r.register_device(va, region.len(), true, NEURON_DEVICE))?;
            return Ok(Some(RegionMr { mrs, off: 0, cached: None }));
        }
        if region.staging().is_some() {
            return Err(Error::invalid("device memory without a host address cannot be registered with libfabric"));
        }
        let Some(mem) = region.memory() else {
            let mrs = register_all(rails, region.ptr(), region.len(), true)?;
            return Ok(Some(RegionMr { mrs, off: 0, cached: None }));
        };
        let off = (region.ptr() as usize - mem.base() as usize) as u64;
        self.clock += 1;
        let id = mem.id();
        if let Some(e) = self.entries.get_mut(&id)
            && e.mem.strong_count() > 0
        {
            e.users += 1;
            e.used = self.clock;
            return Ok(Some(RegionMr { mrs: e.mrs.clone(), off, cached: Some(id) }));
        }
        self.make_room(rails);
        if self.entries.len() >= CACHE_MAX {
            let mrs = register_all(rails, region.ptr(), region.len(), true)?;
            return Ok(Some(RegionMr { mrs, off: 0, cached: None }));
        }
        let mrs = register_all(rails, mem.base(), mem.len(), true)?;
        self.entries.insert(id, Entry { mem: std::sync::Arc::downgrade(mem), mrs: mrs.clone(), users: 1, used: self.clock });
        Ok(Some(RegionMr { mrs, off, cached: Some(id) }))
    }

    /// Drops the entries of freed memory, and when the cache is still full, the least recently
    /// used one not in use.
    fn make_room(&mut self, rails: &mut [Box<dyn Rail>]) {
        let dead: Vec<u64> = self.entries.iter().filter(|(_, e)| e.users == 0 && e.mem.strong_count() == 0).map(|(k, _)| *k).collect();
        for k in dead {
            let e = self.entries.remove(&k).expect("listed");
            deregister_all(rails, &e.mrs);
        }
        if self.entries.len() >= CACHE_MAX
            && let Some(k) = self.entries.iter().filter(|(_, e)| e.users == 0).min_by_key(|(_, e)| e.used).map(|(k, _)| *k)
        {
            let e = self.entries.remove(&k).expect("found");
            deregister_all(rails, &e.mrs);
        }
    }

    /// A message is done with its registration.
    pub fn release(&mut self, rails: &mut [Box<dyn Rail>], r: Option<RegionMr>) {
        let Some(r) = r else { return };
        match r.cached {
            Some(id) => {
                if let Some(e) = self.entries.get_mut(&id) {
                    e.users = e.users.saturating_sub(1);
                }
            }
            None => deregister_all(rails, &r.mrs),
        }
    }

    /// Deregisters every entry (the communicator goes).
    pub fn clear(&mut self, rails: &mut [Box<dyn Rail>]) {
        for (_, e) in self.entries.drain() {
            deregister_all(rails, &e.mrs);
        }
    }

    /// Live entries (tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}
