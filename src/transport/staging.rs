//! Device memory a transport cannot reach as it is (the LD_PRELOAD library's vendor tensors
//! without a mapping the NIC may use) goes through host memory of ours: a send's bytes are copied
//! in when it is posted, a receive's copied out before it is reported. The libfabric and verbs
//! transports stage this way; TCP and shared memory read and write device memory in pieces
//! themselves.

use super::{Completions, Done, Kind, Msg};
use crate::status::Result;
use crate::tensor::{Region, StagedMemory, Tensor};
use std::sync::Arc;

#[derive(Default)]
pub struct Staging {
    /// Receives staged and not reported: (seq, host region, device memory).
    pending: Vec<(u64, Region, Arc<dyn StagedMemory>)>,
    /// Messages staged so far (the log's first line, and the transports' tests).
    pub count: u64,
}

impl Staging {
    /// `m`, whose memory is `mem`, as a message over host memory of ours.
    pub fn stage(&mut self, kind: Kind, m: Msg, mem: Arc<dyn StagedMemory>) -> Result<Msg> {
        let len = m.region.len();
        let host = Tensor::allocate(len.max(1), "nrt-sr-stage".into())?.region(0, len)?;
        if kind == Kind::Send {
            // SAFETY: `host` is `len` bytes of memory of ours that nothing else uses yet.
            mem.read(0, unsafe { std::slice::from_raw_parts_mut(host.ptr(), len) })?;
        } else {
            self.pending.push((m.seq, host.clone(), mem));
        }
        self.count += 1;
        Ok(Msg { seq: m.seq, region: host })
    }

    /// `f` (the transport's work), with the staged receives it reports copied out first.
    pub fn with<R>(&mut self, done: &mut Completions<'_>, f: impl FnOnce(&mut Completions<'_>) -> Result<R>) -> Result<R> {
        if self.pending.is_empty() {
            return f(done);
        }
        let pending = &mut self.pending;
        let watch = done.watch();
        let mut apply = |d: Done| {
            let Some(pos) = pending.iter().position(|s| s.0 == d.seq()) else { return done.push(d) };
            let (seq, host, mem) = pending.swap_remove(pos);
            let d = match d {
                Done::Ok { bytes, .. } => {
                    // SAFETY: the host region is memory of ours, `bytes` <= its length (the
                    // transport checked the receive's capacity), and nothing uses it any more.
                    let landed = unsafe { std::slice::from_raw_parts(host.ptr(), bytes as usize) };
                    match mem.write(0, landed) {
                        Ok(()) => Done::Ok { seq, bytes },
                        Err(e) => Done::Failed { seq, err: e },
                    }
                }
                failed => failed,
            };
            done.push(d);
        };
        f(&mut Completions::new(&mut apply, watch))
    }
}
