//! FUSE over io_uring (`io_uring=` option): the kernel hands each request
//! to a queue of the CPU that made it, and a server thread pinned to that
//! CPU answers it, so that a round trip is two context switches on one CPU
//! instead of two wake-ups across CPUs (an IPI and, in a VM, an exit each).
//! Each CPU's queue is served by `io_uring_q_depth` threads with one ring
//! entry each ([`start`]), and grows by a thread when a request that may
//! take long arrives while no other entry of its queue waits (up to
//! [`MOST_THREADS`]).
//! See the kernel's `Documentation/filesystems/fuse/fuse-io-uring.rst`.
//!
//! fuser still reads `/dev/fuse`: `INIT`, `FORGET` and `INTERRUPT` come
//! that way, and so does everything until every CPU's queue is registered.
//! The requests themselves are decoded and answered by the file system
//! through [`Serve`].

pub(crate) mod abi;
mod queue;

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Weak};

use log::{info, warn};
use nix::errno::Errno;

/// The kernel's switch for new connections (`Y`/`N`).
pub const ENABLE_PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

/// Requests served at once per CPU when `io_uring_q_depth` is not given.
pub const DEFAULT_DEPTH: u32 = 4;

/// The most threads a CPU's queue grows to (unless `io_uring_q_depth`
/// starts it with more). Each holds an io_uring descriptor.
pub const MOST_THREADS: usize = 16;

/// The most io_uring descriptors the queues of a server with `depth`
/// threads per CPU may hold.
pub fn most_ring_fds(depth: u32) -> u64 {
    let cpus = crate::sys::possible_cpus().unwrap_or(1) as u64;
    cpus * (depth as u64).max(MOST_THREADS as u64)
}

/// The largest payload a request or reply carries: what the server tells
/// the kernel in `INIT` as `max_write` (the kernel's default `max_pages`,
/// 256 pages, is the same size).
pub const MAX_PAYLOAD: usize = 1 << 20;

/// One request as a ring entry delivers it.
#[derive(Debug)]
pub struct Incoming<'a> {
    /// `fuse_in_header`.
    pub header: abi::InHeader,
    /// The opcode's own header (`FUSE_URING_OP_IN_OUT_SZ` bytes; the
    /// opcode's structure is at its start).
    pub op: &'a [u8],
    /// The rest of the request: names, written data, ioctl input.
    pub payload: &'a [u8],
}

/// What answers requests that come over io_uring.
pub trait Serve: Send + Sync + 'static {
    /// Runs `req` and writes its reply's arguments into `out` (at least
    /// [`MAX_PAYLOAD`] bytes), returning their length, or the errno.
    fn serve(&self, req: &Incoming<'_>, out: &mut [u8]) -> Result<usize, Errno>;
}

/// Whether the kernel offers FUSE over io_uring to new connections.
pub fn kernel_enabled() -> bool {
    std::fs::read_to_string(ENABLE_PARAM).is_ok_and(|v| v.trim() == "Y")
}

/// Set when this server turned the kernel's switch on.
static TURNED_ON: AtomicBool = AtomicBool::new(false);

/// Turns the kernel's switch on (root). It gates only connections made
/// after it; existing mounts keep their transport.
pub fn enable_in_kernel() -> io::Result<()> {
    std::fs::write(ENABLE_PARAM, "Y")?;
    TURNED_ON.store(true, Ordering::SeqCst);
    Ok(())
}

/// Turns the kernel's switch back off when this server turned it on, as
/// the server leaves: connections made meanwhile (other msharefs mounts
/// included) keep io_uring; new ones find the machine as it was.
pub fn restore_kernel_switch() {
    if TURNED_ON.swap(false, Ordering::SeqCst) {
        match std::fs::write(ENABLE_PARAM, "N") {
            Ok(()) => info!("turned {ENABLE_PARAM} back off"),
            Err(e) => warn!("cannot turn {ENABLE_PARAM} back off: {e}"),
        }
    }
}

/// Queues made and waiting for the connection's descriptor
/// ([`Starter::go`]); dropping it ends them.
#[derive(Debug)]
pub struct Starter {
    go: Vec<Sender<Arc<OwnedFd>>>,
}

impl Starter {
    /// Lets every queue register its entries on the connection behind
    /// `dev`. Until they have, requests on a connection that took
    /// `FUSE_OVER_IO_URING` wait.
    pub fn go(self, dev: &OwnedFd) -> io::Result<()> {
        // One descriptor for all threads: a queue that grows adds no more.
        let dev = Arc::new(dev.try_clone()?);
        for g in &self.go {
            let _ = g.send(dev.clone());
        }
        Ok(())
    }
}

/// Makes one queue per possible CPU, each served by `depth` threads pinned
/// to that CPU with one ring entry each, for the connection being
/// initialized. The kernel hands a request to an entry that is waiting and
/// queues it while none is, so a thread that takes a request which may
/// take long (allocating or freeing gigabytes, writing the state journal)
/// while no other entry of its queue waits first starts one more thread
/// for the queue (up to [`MOST_THREADS`]): slow requests of some users
/// never leave the others' `open` and `close` waiting. Call it while
/// answering `INIT`, and offer `FUSE_OVER_IO_URING` only if it succeeds,
/// because once the connection has it, every request waits until all
/// queues are registered. The queues register when [`Starter::go`] gives
/// them the connection's descriptor (the kernel takes registrations once
/// the `INIT` reply is in). They hold `serve` weakly: once the session has
/// dropped the file system, requests are answered `ENOTCONN` until the
/// connection ends.
pub fn start(serve: Weak<dyn Serve>, depth: u32) -> io::Result<Starter> {
    let cpus = crate::sys::possible_cpus()?;
    let threads = cpus * depth as usize;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut go = Vec::with_capacity(threads);
    for qid in 0..cpus {
        let crew = Arc::new(queue::Crew::new(qid as u16, serve.clone(), depth as usize));
        for n in 0..depth {
            let crew = crew.clone();
            let tx = tx.clone();
            let (go_tx, go_rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name(format!("fuse-uring-{qid}.{n}"))
                .spawn(move || queue::run(crew, (tx, go_rx)))?;
            go.push(go_tx);
        }
    }
    drop(tx);
    // Every queue must exist before any registers: a connection with some
    // queues and not others would never become ready.
    let made: io::Result<Vec<()>> = rx.iter().take(threads).collect();
    match made {
        Ok(v) if v.len() == threads => {
            info!("FUSE over io_uring: {cpus} queues, one per CPU, each served by {depth} threads");
            Ok(Starter { go })
        }
        Ok(_) => Err(io::Error::other(
            "a queue thread ended before its ring was made",
        )),
        Err(e) => {
            warn!("FUSE over io_uring: {e}; requests are read from /dev/fuse");
            Err(e)
        }
    }
}
