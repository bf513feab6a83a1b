//! One RC queue pair: its completion channel and CQ, eager sends into pre-posted bounce buffers,
//! clear-to-send and RDMA writes with immediate data (the protocol is in `verbs/mod.rs`).

use super::device::Device;
use super::mr;
use crate::status::{Error, NRT_STATUS, Result};
use crate::transport::Kind;
use crate::transport::{Completions, Done, Msg, send_verdict, short_receive};
use crate::wire::{Frame, ack};
use rdma_sys::*;
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::Arc;

/// Send work requests a queue may hold (messages in flight are at most 128 per communicator).
const QUEUE_DEPTH: u32 = 512;
/// Receive work requests, each with a bounce buffer: every message consumes one (an eager SEND,
/// or a WRITE with immediate), and at most 128 messages per communicator are outstanding.
const RECV_DEPTH: usize = 160;
/// Messages up to this size may go eagerly (copied once, out of the bounce buffer).
pub const EAGER_MAX: usize = 4096;
/// Tags receive work requests (bounce slot in the low bits) apart from sends (seq).
const RECV_TAG: u64 = 1 << 63;
/// The largest single RDMA write; longer messages are refused at posting (README, "Limits").
pub const MAX_VERBS_MESSAGE: usize = 1 << 30;

fn os_err(what: &str) -> Error {
    let e = std::io::Error::last_os_error();
    Error::io(NRT_STATUS::NRT_FAILURE, what, &e)
}

/// One posted send waiting for its Clear-To-Send, or in flight.
struct SendItem {
    seq: u64,
    m: Msg,
    mr: mr::Registration,
    /// Sent eagerly: completes on the receiver's Ack, not on the local completion.
    eager: bool,
}

/// One posted receive, advertised (or to be advertised) to the sender.
struct RecvItem {
    seq: u64,
    m: Msg,
    _mr: mr::Registration,
    done: bool,
}

pub(super) struct VerbsIo {
    dev: Arc<Device>,
    channel: *mut ibv_comp_channel,
    cq: *mut ibv_cq,
    qp: *mut ibv_qp,
    psn: u32,
    kind: Kind,
    /// The peer's address arrived and the QP is ready to send (RTS).
    connected: bool,
    next_seq: u64,
    /// Sender: sends waiting for their CTS (FIFO) and the CTS that arrived before their send.
    waiting: VecDeque<SendItem>,
    cts: VecDeque<(u64, u64, u64, u32)>,
    /// Sender: writes posted, completing in order (RC).
    in_flight: VecDeque<SendItem>,
    /// Receiver: posted receives; CTS frames not yet sent (the QP was not ready).
    recvs: VecDeque<RecvItem>,
    unsent_cts: VecDeque<Frame>,
    /// Receiver: bounce buffers (RECV_DEPTH × EAGER_MAX, registered) and eager messages that
    /// arrived before their receive was posted: (seq, slot, length).
    bounce: Box<[u8]>,
    bounce_mr: Option<Arc<mr::Mr>>,
    unexpected: VecDeque<(u64, usize, usize)>,
    /// Sender: eager sends waiting for the receiver's verdict; seqs whose CTS is to be dropped.
    verdicts: VecDeque<(u64, u64, u64)>,
    eager_unmatched: VecDeque<u64>,
    /// Control frames for TCP stream 0, drained by the caller.
    pub out: Vec<Frame>,
}

// SAFETY: the verbs objects are used only under the communicator's io lock (one thread at a
// time); libibverbs allows their use from any thread.
unsafe impl Send for VerbsIo {}

impl VerbsIo {
    /// Creates the completion channel, CQ and RC queue pair (moved to INIT) and queues this
    /// side's QpInfo for the peer.
    pub fn new(dev: Arc<Device>, kind: Kind) -> Result<VerbsIo> {
        let psn = crate::sys::random::random_u64()
            .map_err(|e| Error::io(NRT_STATUS::NRT_FAILURE, "no random first packet number from the kernel (getrandom)", &e))?;
        // SAFETY: dev.ctx is an open device context for the device's lifetime (Arc held).
        let channel = unsafe { ibv_create_comp_channel(dev.ctx) };
        if channel.is_null() {
            return Err(os_err("ibv_create_comp_channel"));
        }
        let mut v = VerbsIo {
            dev,
            channel,
            cq: std::ptr::null_mut(),
            qp: std::ptr::null_mut(),
            psn: (psn & 0xff_ffff) as u32,
            kind,
            connected: false,
            next_seq: 0,
            waiting: VecDeque::new(),
            cts: VecDeque::new(),
            in_flight: VecDeque::new(),
            recvs: VecDeque::new(),
            unsent_cts: VecDeque::new(),
            bounce: Box::new([]),
            bounce_mr: None,
            unexpected: VecDeque::new(),
            verdicts: VecDeque::new(),
            eager_unmatched: VecDeque::new(),
            out: Vec::new(),
        };
        // From here on Drop releases whatever was created.
        // SAFETY: the channel fd is ours; making it non-blocking only changes how reads behave.
        unsafe {
            let fd = (*v.channel).fd;
            let fl = libc::fcntl(fd, libc::F_GETFL);
            if fl < 0 || libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
                return Err(os_err("fcntl(O_NONBLOCK) on the completion channel"));
            }
        }
        // SAFETY: valid context and channel; 2 * depth entries cover sends and receives.
        v.cq = unsafe { ibv_create_cq(v.dev.ctx, (2 * QUEUE_DEPTH) as i32, std::ptr::null_mut(), v.channel, 0) };
        if v.cq.is_null() {
            return Err(os_err("ibv_create_cq"));
        }
        // SAFETY: a zeroed ibv_qp_init_attr is valid; the fields we need are set below.
        let mut init: ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        init.send_cq = v.cq;
        init.recv_cq = v.cq;
        init.qp_type = ibv_qp_type::IBV_QPT_RC;
        init.cap.max_send_wr = QUEUE_DEPTH;
        init.cap.max_recv_wr = RECV_DEPTH as u32;
        init.cap.max_send_sge = 1;
        init.cap.max_recv_sge = 1;
        // SAFETY: pd and attributes are valid.
        v.qp = unsafe { ibv_create_qp(v.dev.pd, &mut init) };
        if v.qp.is_null() {
            return Err(os_err("ibv_create_qp"));
        }
        // SAFETY: a zeroed ibv_qp_attr is valid; INIT needs state, pkey, port and access.
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ibv_qp_state::IBV_QPS_INIT;
        a.pkey_index = 0;
        a.port_num = v.dev.port;
        a.qp_access_flags = (ibv_access_flags::IBV_ACCESS_REMOTE_WRITE | ibv_access_flags::IBV_ACCESS_LOCAL_WRITE).0;
        let mask = ibv_qp_attr_mask::IBV_QP_STATE
            | ibv_qp_attr_mask::IBV_QP_PKEY_INDEX
            | ibv_qp_attr_mask::IBV_QP_PORT
            | ibv_qp_attr_mask::IBV_QP_ACCESS_FLAGS;
        // SAFETY: qp and attr are valid.
        if unsafe { ibv_modify_qp(v.qp, &mut a, mask.0 as i32) } != 0 {
            return Err(os_err("ibv_modify_qp(INIT)"));
        }
        // Receive requests with bounce buffers: an eager SEND lands in one, a WRITE with immediate
        // only consumes one. The sending side receives nothing over verbs.
        if kind == Kind::Recv {
            v.bounce = vec![0u8; RECV_DEPTH * EAGER_MAX].into_boxed_slice();
            v.bounce_mr = Some(mr::register_raw(&v.dev, v.bounce.as_mut_ptr(), v.bounce.len())?);
            for slot in 0..RECV_DEPTH {
                v.post_credit(slot)?;
            }
        }
        // SAFETY: valid CQ; arm it before anything can complete.
        if unsafe { ibv_req_notify_cq(v.cq, 0) } != 0 {
            return Err(os_err("ibv_req_notify_cq"));
        }
        // SAFETY: qp is valid; qp_num is plain data.
        let qpn = unsafe { (*v.qp).qp_num };
        v.out.push(Frame::QpInfo { qpn, psn: v.psn, gid: v.dev.gid, lid: v.dev.lid });
        Ok(v)
    }

    /// The completion channel's descriptor, for the lnc's epoll.
    pub fn fd(&self) -> RawFd {
        // SAFETY: channel is valid for self's lifetime.
        unsafe { (*self.channel).fd }
    }

    /// Posts the receive request of bounce slot `slot`.
    fn post_credit(&mut self, slot: usize) -> Result<()> {
        let lkey = self.bounce_mr.as_ref().map_or(0, |m| m.lkey());
        let mut sge = ibv_sge { addr: self.bounce[slot * EAGER_MAX..].as_ptr() as u64, length: EAGER_MAX as u32, lkey };
        // SAFETY: a zeroed recv WR is valid; fields set below.
        let mut wr: ibv_recv_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = RECV_TAG | slot as u64;
        wr.sg_list = &mut sge;
        wr.num_sge = 1;
        let mut bad: *mut ibv_recv_wr = std::ptr::null_mut();
        // SAFETY: valid qp, WR and out-pointer; the slot lies in the registered bounce pool.
        if unsafe { ibv_post_recv(self.qp, &mut wr, &mut bad) } != 0 {
            return Err(os_err("ibv_post_recv"));
        }
        Ok(())
    }

    /// The peer's QpInfo: move the QP to RTR and RTS, then release what waited for it.
    pub fn on_qp_info(&mut self, qpn: u32, psn: u32, gid: [u8; 16], lid: u16, done: &mut Completions<'_>) -> Result<()> {
        if self.connected {
            return Err(Error::failure("second QpInfo from the peer"));
        }
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
        a.rnr_retry = 7;
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
        self.connected = true;
        self.out.extend(self.unsent_cts.drain(..));
        self.issue(done)
    }

    /// Queues a send or a receive.
    pub fn post(&mut self, m: Msg, done: &mut Completions<'_>) -> Result<()> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let len = m.region.len();
        // Comm::post refuses longer messages before they get a sequence number.
        debug_assert!(len <= MAX_VERBS_MESSAGE);
        let mr = mr::register(&self.dev, &m.region)?;
        match self.kind {
            Kind::Send => {
                self.waiting.push_back(SendItem { seq, m, mr, eager: false });
                self.issue(done)
            }
            Kind::Recv => {
                let cts = Frame::Cts { seq, addr: m.region.ptr() as u64, len: len as u64, rkey: mr.rkey() };
                if let Some(pos) = self.unexpected.iter().position(|u| u.0 == seq) {
                    // Its eager message is already here. The CTS still goes (the sender drops
                    // it): one CTS per receive, in order, keeps the sender's bookkeeping bounded.
                    let (_, slot, n) = self.unexpected.remove(pos).expect("position is in range");
                    let mut item = RecvItem { seq, m, _mr: mr, done: false };
                    self.deliver(&mut item, slot, n, done)?;
                    if self.connected {
                        self.out.push(cts);
                    } else {
                        self.unsent_cts.push_back(cts);
                    }
                    return Ok(());
                }
                self.recvs.push_back(RecvItem { seq, m, _mr: mr, done: false });
                if self.connected {
                    self.out.push(cts);
                } else {
                    self.unsent_cts.push_back(cts);
                }
                Ok(())
            }
        }
    }

    /// Sender: a CTS arrived.
    pub fn on_cts(&mut self, seq: u64, addr: u64, len: u64, rkey: u32, done: &mut Completions<'_>) -> Result<()> {
        if self.kind != Kind::Send {
            return Err(Error::failure("clear-to-send on a receive communicator"));
        }
        self.cts.push_back((seq, addr, len, rkey));
        self.issue(done)
    }

    /// Sender: pairs waiting sends with CTS in order and posts the writes; small sends whose
    /// CTS is not here yet go eagerly.
    fn issue(&mut self, done: &mut Completions<'_>) -> Result<()> {
        while self.connected {
            // A CTS for a message that already went eagerly is not needed. (The receiver sends
            // one CTS per receive, in order, so an eager seq below the first CTS has had its CTS.)
            loop {
                match (self.cts.front(), self.eager_unmatched.front()) {
                    (Some(c), Some(e)) if c.0 == *e => {
                        self.cts.pop_front();
                        self.eager_unmatched.pop_front();
                    }
                    (Some(c), Some(e)) if *e < c.0 => {
                        self.eager_unmatched.pop_front();
                    }
                    _ => break,
                }
            }
            let Some(front) = self.waiting.front() else { break };
            let have_cts = self.cts.front().is_some_and(|c| c.0 == front.seq);
            if !have_cts {
                if front.m.region.len() > EAGER_MAX {
                    break;
                }
                let item = self.waiting.pop_front().expect("checked");
                self.send_eager(item)?;
                continue;
            }
            let item = self.waiting.pop_front().expect("checked");
            let (seq, addr, cap, rkey) = self.cts.pop_front().expect("checked");
            if seq != item.seq {
                return Err(Error::failure(format!("clear-to-send for message {seq} while message {} is next", item.seq)));
            }
            let len = item.m.region.len() as u64;
            if len > cap {
                let err = Error::failure(format!("the peer's matching receive of {cap} bytes is shorter than this send of {len} bytes"));
                done.push(Done::Failed { seq: item.m.seq, err });
                self.out.push(Frame::Ack { seq, status: ack::TOO_LONG, size: 0 });
                continue;
            }
            let mut sge = ibv_sge { addr: item.m.region.ptr() as u64, length: len as u32, lkey: item.mr.lkey() };
            // SAFETY: zeroed send WR is valid; fields set below.
            let mut wr: ibv_send_wr = unsafe { std::mem::zeroed() };
            wr.wr_id = seq;
            wr.sg_list = &mut sge;
            wr.num_sge = if len > 0 { 1 } else { 0 };
            wr.opcode = ibv_wr_opcode::IBV_WR_RDMA_WRITE_WITH_IMM;
            wr.send_flags = ibv_send_flags::IBV_SEND_SIGNALED.0;
            wr.imm_data_invalidated_rkey_union.imm_data = (seq as u32).to_be();
            wr.wr.rdma.remote_addr = addr;
            wr.wr.rdma.rkey = rkey;
            let mut bad: *mut ibv_send_wr = std::ptr::null_mut();
            // SAFETY: valid qp; sge and wr live across the call; memory is registered (mr).
            if unsafe { ibv_post_send(self.qp, &mut wr, &mut bad) } != 0 {
                return Err(os_err("ibv_post_send(RDMA_WRITE_WITH_IMM)"));
            }
            self.in_flight.push_back(item);
        }
        Ok(())
    }

    fn send_eager(&mut self, mut item: SendItem) -> Result<()> {
        let len = item.m.region.len();
        let mut sge = ibv_sge { addr: item.m.region.ptr() as u64, length: len as u32, lkey: item.mr.lkey() };
        // SAFETY: zeroed send WR is valid; fields set below.
        let mut wr: ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = item.seq;
        wr.sg_list = &mut sge;
        wr.num_sge = if len > 0 { 1 } else { 0 };
        wr.opcode = ibv_wr_opcode::IBV_WR_SEND_WITH_IMM;
        wr.send_flags = ibv_send_flags::IBV_SEND_SIGNALED.0;
        wr.imm_data_invalidated_rkey_union.imm_data = (item.seq as u32).to_be();
        let mut bad: *mut ibv_send_wr = std::ptr::null_mut();
        // SAFETY: valid qp; sge and wr live across the call; the memory is registered.
        if unsafe { ibv_post_send(self.qp, &mut wr, &mut bad) } != 0 {
            return Err(os_err("ibv_post_send(SEND_WITH_IMM)"));
        }
        item.eager = true;
        self.eager_unmatched.push_back(item.seq);
        self.verdicts.push_back((item.seq, item.m.seq, len as u64));
        self.in_flight.push_back(item);
        Ok(())
    }

    /// Sender: the receiver's verdict on an eager message.
    pub fn on_verdict(&mut self, seq: u64, status: u16, size: u64, done: &mut Completions<'_>) -> Result<()> {
        let pos = self
            .verdicts
            .iter()
            .position(|v| v.0 == seq)
            .ok_or_else(|| Error::failure(format!("acknowledgement for unknown eager message {seq}")))?;
        let (_, id, len) = self.verdicts.remove(pos).expect("position is in range");
        done.push(send_verdict(id, len, status, size)?);
        Ok(())
    }

    /// Receiver: copies eager message bytes from bounce `slot` into `item`'s receive, answers the
    /// sender, and gives the slot back to the NIC.
    fn deliver(&mut self, item: &mut RecvItem, slot: usize, n: usize, done: &mut Completions<'_>) -> Result<()> {
        let cap = item.m.region.len();
        if n > cap {
            done.push(Done::Failed { seq: item.m.seq, err: short_receive(cap as u64, n as u64) });
            self.out.push(Frame::Ack { seq: item.seq, status: ack::TOO_LONG, size: 0 });
        } else {
            if n > 0 {
                // SAFETY: the slot holds n <= EAGER_MAX received bytes; the receive's region is
                // mapped for cap >= n bytes and kept alive by the request.
                unsafe { std::ptr::copy_nonoverlapping(self.bounce[slot * EAGER_MAX..].as_ptr(), item.m.region.ptr(), n) };
            }
            done.push(Done::Ok { seq: item.m.seq, bytes: n as u64 });
            self.out.push(Frame::Ack { seq: item.seq, status: ack::OK, size: n as u64 });
        }
        item.done = true;
        self.post_credit(slot)
    }

    /// Receiver: the sender refused message `seq` (our receive was too short).
    pub fn on_refused(&mut self, seq: u64, done: &mut Completions<'_>) -> Result<()> {
        let r = self
            .recvs
            .iter_mut()
            .find(|r| r.seq == seq && !r.done)
            .ok_or_else(|| Error::failure(format!("refusal for unknown message {seq}")))?;
        r.done = true;
        let err = Error::failure(format!("receive of {} bytes is shorter than the matching send", r.m.region.len()));
        done.push(Done::Failed { seq: r.m.seq, err });
        self.reap();
        Ok(())
    }

    fn reap(&mut self) {
        while self.recvs.front().is_some_and(|r| r.done) {
            self.recvs.pop_front();
        }
    }

    /// Drains the completion channel, re-arms the CQ and handles every completion.
    pub fn poll(&mut self, done: &mut Completions<'_>) -> Result<()> {
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
            // SAFETY: valid CQ.
            if unsafe { ibv_req_notify_cq(self.cq, 0) } != 0 {
                return Err(os_err("ibv_req_notify_cq"));
            }
        }
        loop {
            // SAFETY: zeroed work completions are valid output buffers.
            let mut wc: [ibv_wc; 16] = unsafe { std::mem::zeroed() };
            // SAFETY: valid CQ and buffer of 16 entries.
            let n = unsafe { ibv_poll_cq(self.cq, 16, wc.as_mut_ptr()) };
            if n < 0 {
                return Err(Error::failure("ibv_poll_cq failed"));
            }
            for w in &wc[..n as usize] {
                self.completion(w, done)?;
            }
            if n < 16 {
                break;
            }
        }
        Ok(())
    }

    fn completion(&mut self, w: &ibv_wc, done: &mut Completions<'_>) -> Result<()> {
        if w.status != ibv_wc_status::IBV_WC_SUCCESS {
            return Err(Error::failure(format!(
                "RDMA completion error: status {} (vendor error {:#x}) on {}",
                w.status,
                w.vendor_err,
                if w.wr_id & RECV_TAG != 0 { "a receive request".to_string() } else { format!("message {}", w.wr_id) }
            )));
        }
        match w.opcode {
            ibv_wc_opcode::IBV_WC_RDMA_WRITE | ibv_wc_opcode::IBV_WC_SEND => {
                let item = self.in_flight.pop_front().ok_or_else(|| Error::failure("send completion with nothing in flight"))?;
                if item.seq != w.wr_id {
                    return Err(Error::failure(format!("send completion for {} while {} was first", w.wr_id, item.seq)));
                }
                if !item.eager {
                    done.push(Done::Ok { seq: item.m.seq, bytes: item.m.region.len() as u64 });
                }
            }
            ibv_wc_opcode::IBV_WC_RECV => {
                // An eager message: immediate data = seq, bytes in the bounce slot.
                let slot = (w.wr_id & !RECV_TAG) as usize;
                if w.wr_id & RECV_TAG == 0 || slot >= RECV_DEPTH || w.byte_len as usize > EAGER_MAX {
                    return Err(Error::failure(format!("bad eager completion (wr {:#x}, {} bytes)", w.wr_id, w.byte_len)));
                }
                // SAFETY: the peer always sends eager messages with immediate data.
                let imm = u32::from_be(unsafe { w.imm_data_invalidated_rkey_union.imm_data });
                let n = w.byte_len as usize;
                match self.recvs.iter().position(|r| !r.done && r.seq as u32 == imm) {
                    Some(pos) => {
                        let mut item = self.recvs.remove(pos).expect("position is in range");
                        self.deliver(&mut item, slot, n, done)?;
                        self.reap();
                    }
                    None => {
                        // Not posted yet: its seq is the next one the receiver will assign.
                        let seq = self.next_seq + self.unexpected.len() as u64;
                        if seq as u32 != imm {
                            return Err(Error::failure(format!("eager message {imm} arrived out of order (expected {seq})")));
                        }
                        self.unexpected.push_back((seq, slot, n));
                    }
                }
            }
            ibv_wc_opcode::IBV_WC_RECV_RDMA_WITH_IMM => {
                self.post_credit((w.wr_id & !RECV_TAG) as usize)?;
                // SAFETY: the completion carries immediate data (opcode says so).
                let imm = u32::from_be(unsafe { w.imm_data_invalidated_rkey_union.imm_data });
                let r = self
                    .recvs
                    .iter_mut()
                    .find(|r| !r.done && r.seq as u32 == imm)
                    .ok_or_else(|| Error::failure(format!("data for unknown message {imm}")))?;
                r.done = true;
                done.push(Done::Ok { seq: r.m.seq, bytes: w.byte_len as u64 });
                self.reap();
            }
            op => return Err(Error::failure(format!("unexpected completion opcode {op}"))),
        }
        Ok(())
    }
}

impl Drop for VerbsIo {
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
