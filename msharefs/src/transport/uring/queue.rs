//! A thread serving one CPU's queue: pinned to the CPU, with an io_uring of
//! 128-byte SQEs and its ring entries (a header buffer and a payload
//! buffer each; [`super::start`] gives each thread one) registered with
//! the connection. Each completion is a request;
//! the thread answers it in place and commits the answer with the command
//! that also fetches the entry's next request. The threads of one queue
//! share a [`Crew`], which counts the queue's waiting entries so that a
//! thread about to serve a request that may take long can start another
//! when none waits.
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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Weak};

use io_uring::squeue::Entry128;
use io_uring::{cqueue, opcode, types, IoUring};
use log::{debug, error, info, warn};
use memmap2::MmapMut;
use nix::errno::Errno;
use zerocopy::{FromBytes, IntoBytes};

use super::abi::{
    op, InHeader, OutHeader, RingCmdReq, RingReqHeader, CMD_COMMIT_AND_FETCH, CMD_REGISTER,
    RING_HEADER_SZ,
};
use super::{Incoming, Serve, MAX_PAYLOAD, MOST_THREADS};

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
    /// The connection's descriptor, once given (shared by the queues).
    dev: Option<Arc<OwnedFd>>,
    /// `depth` header buffers, then `depth` payload buffers.
    buffers: MmapMut,
    depth: usize,
    /// The iovec pairs the register commands point at.
    iovs: Vec<[libc::iovec; 2]>,
    /// Which entries have delivered a request (and so are registered).
    serving: Vec<bool>,
}

/// What the threads serving one CPU's queue share.
pub struct Crew {
    qid: u16,
    serve: Weak<dyn Serve>,
    /// Entries of the queue handed to the kernel and not yet given back
    /// with a request: those a new request can go to at once.
    waiting: AtomicUsize,
    /// Threads serving the queue, started or starting.
    threads: AtomicUsize,
    /// The most threads the queue grows to.
    most: usize,
    /// Set when starting a thread failed (no memory, no descriptor): the
    /// queue stays as it is rather than try again at every slow request.
    stuck: AtomicBool,
}

impl Crew {
    /// The crew of queue `qid`, started with `depth` threads.
    pub fn new(qid: u16, serve: Weak<dyn Serve>, depth: usize) -> Self {
        Crew {
            qid,
            serve,
            waiting: AtomicUsize::new(0),
            threads: AtomicUsize::new(depth),
            most: depth.max(MOST_THREADS),
            stuck: AtomicBool::new(false),
        }
    }

    /// Starts one more thread for the queue on `dev` when none of its
    /// entries waits and it has fewer than its most threads.
    fn grow(self: &Arc<Self>, dev: &Option<Arc<OwnedFd>>) {
        if self.waiting.load(Ordering::SeqCst) > 0 || self.stuck.load(Ordering::SeqCst) {
            return;
        }
        let more = self
            .threads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.most).then_some(n + 1)
            });
        let Ok(n) = more else { return };
        let Some(dev) = dev.clone() else {
            self.threads.fetch_sub(1, Ordering::SeqCst);
            return;
        };
        let crew = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("fuse-uring-{}.{n}", self.qid))
            .spawn(move || {
                pin(crew.qid);
                match Queue::new(crew.qid, ENTRIES) {
                    Ok(mut queue) => {
                        queue.dev = Some(dev);
                        queue.run(&crew);
                    }
                    Err(e) => crew.cannot_grow(&e),
                }
                crew.threads.fetch_sub(1, Ordering::SeqCst);
            });
        match spawned {
            Ok(_) => info!(
                "io_uring queue {}: a request that may take long came while every entry was busy; now {} threads",
                self.qid,
                n + 1
            ),
            Err(e) => {
                self.cannot_grow(&e);
                self.threads.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Stops growing, and says so once; called before the thread that
    /// could not start is taken off the count.
    fn cannot_grow(&self, e: &io::Error) {
        if !self.stuck.swap(true, Ordering::SeqCst) {
            warn!(
                "io_uring queue {}: cannot start one more thread: {e}; it stays at {} threads",
                self.qid,
                self.threads.load(Ordering::SeqCst).saturating_sub(1)
            );
        }
    }
}

/// Whether a request may take long: it allocates or frees memory
/// (gigabytes, for a big region) or changes what the state journal keeps.
fn may_take_long(opcode: u32) -> bool {
    matches!(
        opcode,
        op::SETATTR
            | op::SYMLINK
            | op::MKNOD
            | op::MKDIR
            | op::UNLINK
            | op::RMDIR
            | op::RENAME
            | op::LINK
            | op::WRITE
            | op::FSYNC
            | op::SETXATTR
            | op::REMOVEXATTR
            | op::CREATE
            | op::IOCTL
            | op::FALLOCATE
            | op::RENAME2
    )
}

/// Pins the calling thread to CPU `qid`, where the queue's requests come
/// from.
fn pin(qid: u16) {
    let mut cpus = nix::sched::CpuSet::new();
    if cpus.set(qid as usize).is_ok() {
        if let Err(e) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus) {
            debug!("queue {qid}: cannot pin to CPU {qid}: {e}");
        }
    }
}

/// Runs one of the first threads of `crew`'s queue: reports on `made`
/// whether its ring and buffers exist, waits for the connection's
/// descriptor on `go`, then registers its entries and serves until the
/// connection ends.
pub fn run(crew: Arc<Crew>, (made, go): (Sender<io::Result<()>>, Receiver<Arc<OwnedFd>>)) {
    pin(crew.qid);
    let built = Queue::new(crew.qid, ENTRIES);
    let _ = made.send(
        built
            .as_ref()
            .map(drop)
            .map_err(|e| io::Error::new(e.kind(), e.to_string())),
    );
    let Ok(mut queue) = built else { return };
    let Ok(dev) = go.recv() else { return };
    queue.dev = Some(dev);
    queue.run(&crew);
}

/// Whether a completion's error says the connection is gone.
fn ended(res: i32) -> bool {
    res == -libc::ENOTCONN || res == -libc::ECONNABORTED
}

/// The 128-byte SQE of a FUSE ring command for entry `ent`.
fn command(
    dev: &Option<Arc<OwnedFd>>,
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

    /// Registers the entries and serves until the connection ends.
    fn run(&mut self, crew: &Arc<Crew>) {
        let qid = self.qid;
        let res = (0..self.depth)
            .try_for_each(|ent| self.register(ent, crew))
            .and_then(|()| self.serve(crew));
        match res {
            Ok(why) => debug!("io_uring queue {qid}: {why}"),
            Err(e) => error!("io_uring queue {qid} stopped: {e}"),
        }
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
    fn register(&mut self, ent: usize, crew: &Crew) -> io::Result<()> {
        let iov = self.iovs[ent].as_ptr() as u64;
        let sqe = command(&self.dev, CMD_REGISTER, ent, self.cmd_req(0), Some(iov));
        self.push(&sqe, crew)
    }

    /// Queues `sqe`, which hands an entry to the kernel.
    fn push(&mut self, sqe: &Entry128, crew: &Crew) -> io::Result<()> {
        // SAFETY: the buffers and iovecs the command points at live as long
        // as `self`, which outlives the ring's use of them (the ring is
        // dropped with `self`, cancelling what is in flight).
        unsafe { self.ring.submission().push(sqe) }
            .map_err(|_| io::Error::other("submission queue full"))?;
        crew.waiting.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Serves until the connection ends; returns why.
    fn serve(&mut self, crew: &Arc<Crew>) -> io::Result<String> {
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
                crew.waiting.fetch_sub(1, Ordering::SeqCst);
                if ent >= self.depth {
                    return Err(io::Error::other(format!(
                        "completion for unknown entry {ent}"
                    )));
                }
                if res == -libc::EAGAIN && !self.serving[ent] {
                    // Not initialized yet: INIT's reply is being written.
                    std::thread::sleep(std::time::Duration::from_micros(200));
                    self.register(ent, crew)?;
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
                let commit_id = self.answer(ent, crew, &mut scratch);
                let sqe = command(
                    &self.dev,
                    CMD_COMMIT_AND_FETCH,
                    ent,
                    self.cmd_req(commit_id),
                    None,
                );
                self.push(&sqe, crew)?;
            }
        }
    }

    /// Answers the request in entry `ent`, in place, first growing the
    /// crew if the request may take long; returns its commit id.
    fn answer(&mut self, ent: usize, crew: &Arc<Crew>, scratch: &mut Vec<u8>) -> u64 {
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
        if may_take_long(inh.opcode) {
            crew.grow(&self.dev);
        }
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
        let res = catch_unwind(AssertUnwindSafe(|| match crew.serve.upgrade() {
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
