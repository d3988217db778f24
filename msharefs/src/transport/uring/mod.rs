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
//! A request's bytes are decoded into the server's [`Op`](crate::request::Op)
//! ([`decode`]), answered by [`MshareFs::handle`] and its [`Reply`]
//! encoded as the kernel's structures ([`encode`]): the file system is
//! the same as over fuser, only the bytes are this module's.

pub(crate) mod abi;
mod decode;
mod encode;
mod queue;

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Weak};

use log::{debug, info, warn};
use nix::errno::Errno;

use crate::fs::MshareFs;
use crate::request::{Caller, DirEntry, Reply};

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

impl Serve for MshareFs {
    fn serve(&self, req: &Incoming<'_>, buf: &mut [u8]) -> Result<usize, Errno> {
        let h = &req.header;
        let who = Caller {
            uid: h.uid,
            gid: h.gid,
            pid: h.pid,
        };
        let limit = decode::readdir_limit(req);
        let mut out = encode::Out::new(buf);
        let res: Result<Reply, Errno> = {
            let mut add = |e: DirEntry<'_>| !out.dirent(limit, e);
            match decode::op(req, &mut add) {
                Ok(op) => self.handle(who, decode::ino(req), op).map_err(|f| f.errno),
                Err(f) => {
                    debug!("request {} on inode {}: {f}", h.opcode, h.nodeid);
                    Err(f.errno)
                }
            }
        };
        out.reply(res?).map_err(|f| {
            debug!("reply to request {} on inode {}: {f}", h.opcode, h.nodeid);
            f.errno
        })?;
        Ok(out.len())
    }
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

/// Puts the kernel's switch back as the server leaves, however it leaves
/// ([`restore_kernel_switch`]; a stop that exits the process calls that
/// itself).
#[derive(Debug)]
#[must_use = "dropping it turns the switch back off at once"]
pub struct KernelSwitch(());

impl Drop for KernelSwitch {
    fn drop(&mut self) {
        restore_kernel_switch();
    }
}

/// Makes sure the kernel offers FUSE over io_uring to the coming mount:
/// `auto` and `on` turn `fuse.enable_uring` on (which lets connections
/// that ask for io_uring have it, and changes nothing for the others);
/// `auto` goes on with `/dev/fuse` where that fails, `on` fails the mount.
pub fn prepare(mode: crate::options::Uring) -> Result<KernelSwitch, String> {
    use crate::options::Uring;
    if mode == Uring::Off || kernel_enabled() {
        return Ok(KernelSwitch(()));
    }
    match enable_in_kernel() {
        Ok(()) => {
            info!("io_uring: turned on {ENABLE_PARAM}");
            Ok(KernelSwitch(()))
        }
        Err(e) if mode == Uring::Auto => {
            info!("io_uring=auto: cannot turn on {ENABLE_PARAM} ({e}); requests are read from /dev/fuse");
            Ok(KernelSwitch(()))
        }
        Err(e) => Err(format!("io_uring=on: cannot turn on {ENABLE_PARAM}: {e}")),
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
