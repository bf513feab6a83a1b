//! One RC queue pair on libibverbs, as the protocol (`proto.rs`) uses it: its completion
//! channel and CQ, posting and polling work requests, registrations.

use super::device::Device;
use super::mr;
use super::proto::{Keys, Nic, Op, Part, RecvWr, Reg, SendWr, Wc};
use crate::status::{Error, NRT_STATUS, Result};
use crate::tensor::Region;
use rdma_sys::*;
use std::os::fd::RawFd;
use std::sync::Arc;

fn os_err(what: &str) -> Error {
    let e = std::io::Error::last_os_error();
    Error::io(NRT_STATUS::NRT_FAILURE, what, &e)
}

/// `ibv_post_send` and `ibv_post_recv` return the error number itself.
fn post_err(what: &str, rc: i32) -> Error {
    Error::io(NRT_STATUS::NRT_FAILURE, what, &std::io::Error::from_raw_os_error(rc))
}

/// Bytes asked for inline SENDs.
const INLINE_WANTED: u32 = 256;

pub struct Qp {
    dev: Arc<Device>,
    channel: *mut ibv_comp_channel,
    cq: *mut ibv_cq,
    qp: *mut ibv_qp,
    pub psn: u32,
    max_write: u64,
    /// What the queue pair takes inline (0 where the device takes nothing).
    max_inline: u32,
}

// SAFETY: the verbs objects are used only under the communicator's io lock (one thread at a
// time); libibverbs allows their use from any thread.
unsafe impl Send for Qp {}

impl Qp {
    /// Creates the completion channel, the CQ and the RC queue pair (moved to INIT).
    pub fn new(dev: Arc<Device>, send_depth: usize, recv_depth: usize, max_write: u64) -> Result<Qp> {
        let psn = crate::sys::random::random_u64()
            .map_err(|e| Error::io(NRT_STATUS::NRT_FAILURE, "no random first packet number from the kernel (getrandom)", &e))?;
        // SAFETY: dev.ctx is an open device context for the device's lifetime (Arc held).
        let channel = unsafe { ibv_create_comp_channel(dev.ctx) };
        if channel.is_null() {
            return Err(os_err("ibv_create_comp_channel"));
        }
        let mut q = Qp {
            dev,
            channel,
            cq: std::ptr::null_mut(),
            qp: std::ptr::null_mut(),
            psn: (psn & 0xff_ffff) as u32,
            max_write,
            max_inline: 0,
        };
        // From here on Drop releases whatever was created.
        // SAFETY: the channel fd is ours; making it non-blocking only changes how reads behave.
        unsafe {
            let fd = (*q.channel).fd;
            let fl = libc::fcntl(fd, libc::F_GETFL);
            if fl < 0 || libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
                return Err(os_err("fcntl(O_NONBLOCK) on the completion channel"));
            }
        }
        // SAFETY: valid context and channel; the CQ holds every send and receive request.
        q.cq = unsafe { ibv_create_cq(q.dev.ctx, (send_depth + recv_depth) as i32, std::ptr::null_mut(), q.channel, 0) };
        if q.cq.is_null() {
            return Err(os_err("ibv_create_cq"));
        }
        // SAFETY: a zeroed ibv_qp_init_attr is valid; the fields we need are set below.
        let mut init: ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        init.send_cq = q.cq;
        init.recv_cq = q.cq;
        init.qp_type = ibv_qp_type::IBV_QPT_RC;
        init.cap.max_send_wr = send_depth as u32;
        init.cap.max_recv_wr = recv_depth as u32;
        init.cap.max_send_sge = 1;
        init.cap.max_recv_sge = 1;
        // Small SENDs (eager messages, control batches) inline where the device takes them: the
        // NIC then reads no memory for them. A device that refuses is asked for none.
        init.cap.max_inline_data = INLINE_WANTED;
        // SAFETY: pd and attributes are valid.
        q.qp = unsafe { ibv_create_qp(q.dev.pd, &mut init) };
        if q.qp.is_null() {
            init.cap.max_inline_data = 0;
            // SAFETY: as above.
            q.qp = unsafe { ibv_create_qp(q.dev.pd, &mut init) };
        }
        if q.qp.is_null() {
            return Err(os_err("ibv_create_qp"));
        }
        // ibv_create_qp wrote back what the queue pair takes.
        q.max_inline = init.cap.max_inline_data;
        // SAFETY: a zeroed ibv_qp_attr is valid; INIT needs state, pkey, port and access.
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ibv_qp_state::IBV_QPS_INIT;
        a.pkey_index = 0;
        a.port_num = q.dev.port;
        a.qp_access_flags = (ibv_access_flags::IBV_ACCESS_REMOTE_WRITE | ibv_access_flags::IBV_ACCESS_LOCAL_WRITE).0;
        let mask = ibv_qp_attr_mask::IBV_QP_STATE
            | ibv_qp_attr_mask::IBV_QP_PKEY_INDEX
            | ibv_qp_attr_mask::IBV_QP_PORT
            | ibv_qp_attr_mask::IBV_QP_ACCESS_FLAGS;
        // SAFETY: qp and attr are valid.
        if unsafe { ibv_modify_qp(q.qp, &mut a, mask.0 as i32) } != 0 {
            return Err(os_err("ibv_modify_qp(INIT)"));
        }
        q.arm()?;
        Ok(q)
    }

    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// This queue pair's number.
    pub fn qpn(&self) -> u32 {
        // SAFETY: qp is valid; qp_num is plain data.
        unsafe { (*self.qp).qp_num }
    }

    /// The completion channel's descriptor, for the lnc's epoll.
    pub fn fd(&self) -> RawFd {
        // SAFETY: channel is valid for self's lifetime.
        unsafe { (*self.channel).fd }
    }

    fn arm(&mut self) -> Result<()> {
        // SAFETY: valid CQ.
        if unsafe { ibv_req_notify_cq(self.cq, 0) } != 0 {
            return Err(os_err("ibv_req_notify_cq"));
        }
        Ok(())
    }

    /// Takes the completion channel's events and arms the CQ again (the progress thread's path,
    /// before it polls the CQ: a completion after this makes a new event).
    pub fn rearm(&mut self) -> Result<()> {
        let mut n_events = 0u32;
        loop {
            let mut cq: *mut ibv_cq = std::ptr::null_mut();
            let mut ctx: *mut std::ffi::c_void = std::ptr::null_mut();
            // SAFETY: valid channel (non-blocking); out-pointers are live.
            if unsafe { ibv_get_cq_event(self.channel, &mut cq, &mut ctx) } != 0 {
                break;
            }
            n_events += 1;
        }
        if n_events > 0 {
            // SAFETY: acknowledges exactly the events we took from this CQ.
            unsafe { ibv_ack_cq_events(self.cq, n_events) };
            self.arm()?;
        }
        Ok(())
    }

    /// The peer's address: to RTR and RTS.
    pub fn connect(&mut self, qpn: u32, psn: u32, gid: [u8; 16], lid: u16) -> Result<()> {
        // SAFETY: zeroed attrs are valid; every field RTR needs is set.
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ibv_qp_state::IBV_QPS_RTR;
        a.path_mtu = self.dev.mtu;
        a.dest_qp_num = qpn;
        a.rq_psn = psn;
        a.max_dest_rd_atomic = 1;
        a.min_rnr_timer = 12;
        a.ah_attr.is_global = 1;
        a.ah_attr.dlid = lid;
        a.ah_attr.port_num = self.dev.port;
        a.ah_attr.grh.dgid = ibv_gid { raw: gid };
        a.ah_attr.grh.sgid_index = self.dev.gid_index;
        a.ah_attr.grh.hop_limit = 64;
        let mask = ibv_qp_attr_mask::IBV_QP_STATE
            | ibv_qp_attr_mask::IBV_QP_AV
            | ibv_qp_attr_mask::IBV_QP_PATH_MTU
            | ibv_qp_attr_mask::IBV_QP_DEST_QPN
            | ibv_qp_attr_mask::IBV_QP_RQ_PSN
            | ibv_qp_attr_mask::IBV_QP_MAX_DEST_RD_ATOMIC
            | ibv_qp_attr_mask::IBV_QP_MIN_RNR_TIMER;
        // SAFETY: valid qp and attributes.
        if unsafe { ibv_modify_qp(self.qp, &mut a, mask.0 as i32) } != 0 {
            return Err(os_err("ibv_modify_qp(RTR)"));
        }
        // SAFETY: as above.
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ibv_qp_state::IBV_QPS_RTS;
        a.sq_psn = self.psn;
        a.timeout = 14; // 4.096 us * 2^14 ≈ 67 ms per try
        a.retry_cnt = 7;
        // The credits keep a receive posted for every SEND: a receiver-not-ready wait means
        // something is wrong, so it is retried a few times, not forever.
        a.rnr_retry = 6;
        a.max_rd_atomic = 1;
        let mask = ibv_qp_attr_mask::IBV_QP_STATE
            | ibv_qp_attr_mask::IBV_QP_SQ_PSN
            | ibv_qp_attr_mask::IBV_QP_TIMEOUT
            | ibv_qp_attr_mask::IBV_QP_RETRY_CNT
            | ibv_qp_attr_mask::IBV_QP_RNR_RETRY
            | ibv_qp_attr_mask::IBV_QP_MAX_QP_RD_ATOMIC;
        // SAFETY: valid qp and attributes.
        if unsafe { ibv_modify_qp(self.qp, &mut a, mask.0 as i32) } != 0 {
            return Err(os_err("ibv_modify_qp(RTS)"));
        }
        Ok(())
    }
}

impl Nic for Qp {
    fn register(&mut self, region: &Region) -> Result<Reg> {
        let parts = mr::register(&self.dev, region)?;
        Ok(Reg {
            parts: parts.iter().map(|(addr, len, m)| Part { addr: *addr, len: *len, lkey: m.lkey(), rkey: m.rkey() }).collect(),
            _hold: parts.into_iter().map(|(_, _, m)| m as Arc<dyn std::any::Any + Send + Sync>).collect(),
        })
    }

    fn register_raw(&mut self, ptr: *mut u8, len: usize) -> Result<Keys> {
        let m = mr::register_raw(&self.dev, ptr, len)?;
        Ok(Keys { lkey: m.lkey(), _hold: Some(m) })
    }

    fn post_send(&mut self, w: &SendWr) -> Result<()> {
        let mut sge = ibv_sge { addr: w.addr, length: w.len, lkey: w.lkey };
        // SAFETY: a zeroed send WR is valid; fields set below.
        let mut wr: ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = w.id;
        wr.sg_list = &mut sge;
        wr.num_sge = if w.len > 0 { 1 } else { 0 };
        wr.send_flags = 0;
        if w.signaled {
            wr.send_flags |= ibv_send_flags::IBV_SEND_SIGNALED.0;
        }
        if w.inline {
            wr.send_flags |= ibv_send_flags::IBV_SEND_INLINE.0;
        }
        let imm = match w.op {
            Op::Send { imm } => {
                wr.opcode = if imm.is_some() { ibv_wr_opcode::IBV_WR_SEND_WITH_IMM } else { ibv_wr_opcode::IBV_WR_SEND };
                imm
            }
            Op::Write { addr, rkey, imm } => {
                wr.opcode = if imm.is_some() { ibv_wr_opcode::IBV_WR_RDMA_WRITE_WITH_IMM } else { ibv_wr_opcode::IBV_WR_RDMA_WRITE };
                wr.wr.rdma.remote_addr = addr;
                wr.wr.rdma.rkey = rkey;
                imm
            }
        };
        if let Some(imm) = imm {
            wr.imm_data_invalidated_rkey_union.imm_data = imm.to_be();
        }
        let mut bad: *mut ibv_send_wr = std::ptr::null_mut();
        // SAFETY: valid qp; sge and wr live across the call; the memory is registered (the
        // protocol holds the registration until the completion).
        let rc = unsafe { ibv_post_send(self.qp, &mut wr, &mut bad) };
        if rc != 0 {
            return Err(post_err("ibv_post_send", rc));
        }
        Ok(())
    }

    fn post_recv(&mut self, w: &RecvWr) -> Result<()> {
        let mut sge = ibv_sge { addr: w.addr, length: w.len, lkey: w.lkey };
        // SAFETY: a zeroed recv WR is valid; fields set below.
        let mut wr: ibv_recv_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = w.id;
        wr.sg_list = &mut sge;
        wr.num_sge = 1;
        let mut bad: *mut ibv_recv_wr = std::ptr::null_mut();
        // SAFETY: valid qp, WR and out-pointer; the buffer is registered memory of the protocol's.
        let rc = unsafe { ibv_post_recv(self.qp, &mut wr, &mut bad) };
        if rc != 0 {
            return Err(post_err("ibv_post_recv", rc));
        }
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<Wc>) -> Result<()> {
        // SAFETY: zeroed work completions are valid output buffers.
        let mut wc: [ibv_wc; 16] = unsafe { std::mem::zeroed() };
        // SAFETY: valid CQ and a buffer of 16 entries.
        let n = unsafe { ibv_poll_cq(self.cq, 16, wc.as_mut_ptr()) };
        if n < 0 {
            return Err(Error::failure("ibv_poll_cq failed"));
        }
        for w in &wc[..n as usize] {
            // SAFETY: the immediate data is read only where the flags say there is some.
            let imm = (w.wc_flags & ibv_wc_flags::IBV_WC_WITH_IMM.0 != 0)
                .then(|| u32::from_be(unsafe { w.imm_data_invalidated_rkey_union.imm_data }));
            out.push(if w.status != ibv_wc_status::IBV_WC_SUCCESS {
                // SAFETY: ibv_wc_status_str returns a static string for any status.
                let what = unsafe { std::ffi::CStr::from_ptr(ibv_wc_status_str(w.status)) }.to_string_lossy();
                Wc::Failed { id: w.wr_id, what: format!("status {} ({what}, vendor error {:#x})", w.status, w.vendor_err) }
            } else {
                match w.opcode {
                    ibv_wc_opcode::IBV_WC_RECV => Wc::Recv { id: w.wr_id, len: w.byte_len, imm },
                    ibv_wc_opcode::IBV_WC_RECV_RDMA_WITH_IMM => Wc::Written { id: w.wr_id, len: w.byte_len, imm: imm.unwrap_or(0) },
                    ibv_wc_opcode::IBV_WC_SEND | ibv_wc_opcode::IBV_WC_RDMA_WRITE => Wc::Sent { id: w.wr_id },
                    op => Wc::Failed { id: w.wr_id, what: format!("unexpected completion opcode {op}") },
                }
            });
        }
        Ok(())
    }

    fn max_write(&self) -> u64 {
        self.max_write
    }

    fn max_inline(&self) -> u32 {
        self.max_inline
    }
}

impl Drop for Qp {
    fn drop(&mut self) {
        // SAFETY: each object was created by us and is destroyed once, QP before CQ before channel.
        unsafe {
            if !self.qp.is_null() {
                ibv_destroy_qp(self.qp);
            }
            if !self.cq.is_null() {
                ibv_destroy_cq(self.cq);
            }
            if !self.channel.is_null() {
                ibv_destroy_comp_channel(self.channel);
            }
        }
    }
}
