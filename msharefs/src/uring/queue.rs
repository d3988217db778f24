//! A thread serving one CPU's queue: pinned to the CPU, with an io_uring of
//! 128-byte SQEs and its ring entries (a header buffer and a payload
//! buffer each; [`super::start`] gives each thread one) registered with
//! the connection. Each completion is a request;
//! the thread answers it in place and commits the answer with the command
//! that also fetches the entry's next request.
//!
//! # Safety
//!
//! The kernel reads and writes an entry's buffers between the command that
//! hands the entry over and the completion that gives it back; the buffers
//! live in a mapping owned by the [`Queue`], which drops its ring (and so
//! cancels every command in flight) before the mapping. The one SQE field
//! the io-uring builder lacks (`len`) is set through the SQE's bytes.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Weak;

use io_uring::squeue::Entry128;
use io_uring::{cqueue, opcode, types, IoUring};
use log::{debug, error};
use memmap2::MmapMut;
use nix::errno::Errno;
use zerocopy::{FromBytes, IntoBytes};

use super::abi::{
    InHeader, OutHeader, RingCmdReq, RingReqHeader, CMD_COMMIT_AND_FETCH, CMD_REGISTER,
    RING_HEADER_SZ,
};
use super::{Incoming, Serve, MAX_PAYLOAD};

/// Ring entries per thread: one, so that a thread busy with a request
/// has no other request waiting for it.
const ENTRIES: usize = 1;

/// Bytes from one entry's header buffer to the next (a page, so that the
/// payload buffers after them stay page-aligned).
const HEADER_STRIDE: usize = 4096;

/// A queue's ring and buffers.
struct Queue {
    /// First, so that it is dropped (cancelling the commands) before the
    /// buffers.
    ring: IoUring<Entry128, cqueue::Entry>,
    qid: u16,
    /// The connection's descriptor, once given.
    dev: Option<OwnedFd>,
    /// `depth` header buffers, then `depth` payload buffers.
    buffers: MmapMut,
    depth: usize,
    /// The iovec pairs the register commands point at.
    iovs: Vec<[libc::iovec; 2]>,
    /// Which entries have delivered a request (and so are registered).
    serving: Vec<bool>,
}

/// Runs queue `qid`: reports on `made` whether its ring and buffers exist,
/// waits for the connection's descriptor on `go`, then registers its
/// entries and serves until the connection ends.
pub fn run(
    qid: u16,
    serve: Weak<dyn Serve>,
    (made, go): (Sender<io::Result<()>>, Receiver<OwnedFd>),
) {
    let mut cpus = nix::sched::CpuSet::new();
    if cpus.set(qid as usize).is_ok() {
        if let Err(e) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus) {
            debug!("queue {qid}: cannot pin to CPU {qid}: {e}");
        }
    }
    let built = Queue::new(qid, ENTRIES);
    let _ = made.send(
        built
            .as_ref()
            .map(drop)
            .map_err(|e| io::Error::new(e.kind(), e.to_string())),
    );
    let Ok(mut queue) = built else { return };
    let Ok(dev) = go.recv() else { return };
    queue.dev = Some(dev);
    let res = (0..queue.depth)
        .try_for_each(|ent| queue.register(ent))
        .and_then(|()| queue.serve(&serve));
    match res {
        Ok(why) => debug!("io_uring queue {qid}: {why}"),
        Err(e) => error!("io_uring queue {qid} stopped: {e}"),
    }
}

/// Whether a completion's error says the connection is gone.
fn ended(res: i32) -> bool {
    res == -libc::ENOTCONN || res == -libc::ECONNABORTED
}

/// The 128-byte SQE of a FUSE ring command for entry `ent`.
fn command(
    dev: &Option<OwnedFd>,
    cmd: u32,
    ent: usize,
    req: RingCmdReq,
    iov: Option<u64>,
) -> Entry128 {
    let mut area = [0u8; 80];
    area[..size_of::<RingCmdReq>()].copy_from_slice(req.as_bytes());
    let fd = dev.as_ref().map_or(-1, |d| d.as_raw_fd());
    let mut b = opcode::UringCmd80::new(types::Fd(fd), cmd).cmd(area);
    if let Some(addr) = iov {
        b = b.addr(Some(addr));
    }
    let sqe = b.build().user_data(ent as u64);
    if iov.is_none() {
        return sqe;
    }
    // The register command's `len` is the iovec count (2), a field the
    // builder does not set.
    // SAFETY: `Entry128` is `repr(C)`: a 64-byte `io_uring_sqe` followed by
    // 64 bytes of command data, all plain integers, so every bit pattern is
    // valid; `len` is the `u32` at offset 24 of `io_uring_sqe`.
    let mut raw: [u8; 128] = unsafe { std::mem::transmute::<Entry128, [u8; 128]>(sqe) };
    raw[24..28].copy_from_slice(&2u32.to_ne_bytes());
    // SAFETY: as above, back to the type it came from.
    unsafe { std::mem::transmute::<[u8; 128], Entry128>(raw) }
}

impl Queue {
    fn new(qid: u16, depth: usize) -> io::Result<Self> {
        let ring = IoUring::<Entry128, cqueue::Entry>::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(depth.next_power_of_two() as u32)?;
        let mut buffers = MmapMut::map_anon(depth * (HEADER_STRIDE + MAX_PAYLOAD))?;
        let (headers, payloads) = buffers.split_at_mut(depth * HEADER_STRIDE);
        let iovs = headers
            .chunks_exact_mut(HEADER_STRIDE)
            .zip(payloads.chunks_exact_mut(MAX_PAYLOAD))
            .map(|(h, p)| {
                [
                    libc::iovec {
                        iov_base: h.as_mut_ptr().cast(),
                        iov_len: size_of::<RingReqHeader>(),
                    },
                    libc::iovec {
                        iov_base: p.as_mut_ptr().cast(),
                        iov_len: MAX_PAYLOAD,
                    },
                ]
            })
            .collect();
        Ok(Queue {
            ring,
            qid,
            dev: None,
            buffers,
            depth,
            iovs,
            serving: vec![false; depth],
        })
    }

    fn cmd_req(&self, commit_id: u64) -> RingCmdReq {
        RingCmdReq {
            flags: 0,
            commit_id,
            qid: self.qid,
            padding: [0; 6],
        }
    }

    /// Hands entry `ent` to the kernel to be registered. The kernel answers
    /// EAGAIN until the connection's `INIT` reply is in (the entry is then
    /// handed over again), a refusal (a payload buffer smaller than the
    /// largest request, io_uring turned off) with its errno, after which
    /// the kernel serves the connection from `/dev/fuse`; a registered
    /// entry completes only with a request.
    fn register(&mut self, ent: usize) -> io::Result<()> {
        let iov = self.iovs[ent].as_ptr() as u64;
        let sqe = command(&self.dev, CMD_REGISTER, ent, self.cmd_req(0), Some(iov));
        self.push(&sqe)
    }

    fn push(&mut self, sqe: &Entry128) -> io::Result<()> {
        // SAFETY: the buffers and iovecs the command points at live as long
        // as `self`, which outlives the ring's use of them (the ring is
        // dropped with `self`, cancelling what is in flight).
        unsafe { self.ring.submission().push(sqe) }
            .map_err(|_| io::Error::other("submission queue full"))
    }

    /// Serves until the connection ends; returns why.
    fn serve(&mut self, serve: &Weak<dyn Serve>) -> io::Result<String> {
        let mut done: Vec<(usize, i32)> = Vec::with_capacity(self.depth);
        let mut scratch = Vec::new();
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
            done.clear();
            done.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data() as usize, c.result())),
            );
            for &(ent, res) in &done {
                if ent >= self.depth {
                    return Err(io::Error::other(format!(
                        "completion for unknown entry {ent}"
                    )));
                }
                if res == -libc::EAGAIN && !self.serving[ent] {
                    // Not initialized yet: INIT's reply is being written.
                    std::thread::sleep(std::time::Duration::from_micros(200));
                    self.register(ent)?;
                    continue;
                }
                if res < 0 && !self.serving[ent] && ended(res) {
                    return Ok(format!(
                        "the connection ended before registration ({})",
                        Errno::from_raw(-res)
                    ));
                }
                if res < 0 && !self.serving[ent] {
                    return Err(io::Error::other(format!(
                        "the kernel refused to register an entry: {}; requests are read from /dev/fuse",
                        Errno::from_raw(-res)
                    )));
                }
                if res < 0 {
                    return Ok(format!("the connection ended ({})", Errno::from_raw(-res)));
                }
                self.serving[ent] = true;
                let commit_id = self.answer(ent, serve, &mut scratch);
                let sqe = command(
                    &self.dev,
                    CMD_COMMIT_AND_FETCH,
                    ent,
                    self.cmd_req(commit_id),
                    None,
                );
                self.push(&sqe)?;
            }
        }
    }

    /// Answers the request in entry `ent`, in place; returns its commit id.
    fn answer(&mut self, ent: usize, serve: &Weak<dyn Serve>, scratch: &mut Vec<u8>) -> u64 {
        let depth = self.depth;
        let (headers, payloads) = self.buffers.split_at_mut(depth * HEADER_STRIDE);
        let header = &mut headers[ent * HEADER_STRIDE..][..size_of::<RingReqHeader>()];
        let payload = &mut payloads[ent * MAX_PAYLOAD..][..MAX_PAYLOAD];
        // The kernel filled this entry before posting its completion and
        // leaves it alone until the commit below.
        let Ok(h) = RingReqHeader::mut_from_bytes(header) else {
            unreachable!("the header buffer has the header's size and alignment");
        };
        let Ok((inh, _)) = InHeader::read_from_prefix(&h.in_out) else {
            unreachable!("in_out holds 128 bytes");
        };
        let commit_id = h.ring_ent_in_out.commit_id;
        let size = (h.ring_ent_in_out.payload_sz as usize).min(MAX_PAYLOAD);
        scratch.clear();
        scratch.extend_from_slice(&payload[..size]);
        let op: [u8; RING_HEADER_SZ] = h.op_in;
        let req = Incoming {
            header: inh,
            op: &op,
            payload: scratch,
        };
        let res = catch_unwind(AssertUnwindSafe(|| match serve.upgrade() {
            Some(fs) => fs.serve(&req, payload),
            None => Err(Errno::ENOTCONN),
        }));
        let (error, len) = match res {
            Ok(Ok(len)) => (0, len.min(MAX_PAYLOAD)),
            Ok(Err(e)) => (-(e as i32), 0),
            Err(_) => {
                error!(
                    "request {} (opcode {}) panicked; answered EIO",
                    inh.unique, inh.opcode
                );
                (-libc::EIO, 0)
            }
        };
        let out = OutHeader {
            len: (size_of::<OutHeader>() + len) as u32,
            error,
            unique: inh.unique,
        };
        h.in_out[..size_of::<OutHeader>()].copy_from_slice(out.as_bytes());
        h.ring_ent_in_out.payload_sz = len as u32;
        commit_id
    }
}
