//! The descriptor broker: hands a region's backing file descriptor to a
//! process that holds an open region file, and to nobody else.
//!
//! 1. `MSHAREFS_GET_TOKEN` on an open region file makes a [`Grant`]: a
//!    random 128-bit token bound to that open handle, to the calling
//!    process (its thread-group id) and to the access the open allowed.
//! 2. The process connects to the Unix socket [`broker_socket_path`] and
//!    sends the token. The broker takes the token out of the table (it is
//!    good for one try), checks its age and that the peer's `SO_PEERCRED`
//!    pid is the bound process, and sends a new descriptor of the backing
//!    file opened with the same access (`O_RDONLY` or `O_RDWR`) by
//!    `SCM_RIGHTS`.
//!
//! The socket lives in [`BROKER_DIR`], a directory that the server makes
//! owned by itself and writable by nobody else, so no other user can take
//! its name first. Beside it, one socket per CPU is served by a thread
//! pinned to that CPU, and libmshare connects to the one of the CPU it runs
//! on. Each thread serves its connections from an epoll loop:
//! an idle connection costs a table entry, never a thread or a wait for
//! the others. Only connections idle for [`STALE_AFTER`] are ever closed to
//! make room, so a burst of attaches is never cut off: a uid holding
//! [`MAX_PER_UID`] loses its oldest stale one for a new one, a full table
//! (what [`crate::limits`] allows) loses the oldest stale one of the uid
//! holding the most, and a uid at [`HARD_PER_UID`] or a full table with
//! nothing stale refuses the newcomer, which libmshare retries. None lives
//! past [`CONN_DEADLINE`].
//!
//! Closing a descriptor of the handle revokes the closing process's grants
//! on it; releasing the handle revokes all of them. See
//! `Documentation/libmshare.md` for the client side.

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, IoSlice, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::FileHandle;
use log::{debug, info, warn};
use mshare_uapi::{
    broker_cpu_socket_path, broker_socket_path, broker_socket_pid, Token, BROKER_DIR,
    TOKEN_TTL_SECS,
};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{getsockopt, sendmsg, sockopt::PeerCredentials, ControlMessage, MsgFlags};
use nix::sys::stat::Mode;
use parking_lot::Mutex;

use crate::fail::{ensure, errno_of, Fail};
use crate::region::Access;

/// Connections one uid may hold once they are stale: beyond it, a new
/// connection of that uid closes its oldest stale one.
pub const MAX_PER_UID: usize = 32;
/// Connections one uid may hold at all: beyond it, new ones are refused
/// (libmshare tries again), so no uid fills the table.
pub const HARD_PER_UID: usize = 256;
/// Age from which a connection that has not sent its token is stale: a
/// client sends it right after connecting, so only an idle peer gets here.
pub const STALE_AFTER: Duration = Duration::from_millis(250);
/// How long a connection may take to send its token.
pub const CONN_DEADLINE: Duration = Duration::from_secs(2);

/// What a token buys.
#[derive(Debug)]
struct Grant {
    /// The open handle it was issued on.
    fh: FileHandle,
    /// The thread that asked (FUSE requests carry the thread id); its
    /// process is the one that may redeem the token.
    tid: u32,
    /// The backing file.
    file: Arc<OwnedFd>,
    /// What the open allowed.
    access: Access,
    /// Issue time.
    issued: Instant,
}

/// Outstanding tokens and the listening socket.
#[derive(Debug)]
pub struct Broker {
    /// Grants by token.
    grants: Mutex<HashMap<Token, Grant>>,
    /// The main socket's path, while it is listening.
    socket: Option<PathBuf>,
    /// Every socket listening: the main one and one per CPU.
    sockets: Vec<PathBuf>,
}

/// Pins the calling thread to `cpu` (logged at debug level if it cannot).
fn pin_to(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    let res = set
        .set(cpu)
        .and_then(|()| nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set));
    if let Err(e) = res {
        debug!("broker: cannot pin to CPU {cpu}: {e}");
    }
}

fn random_token() -> Result<Token, Fail> {
    let mut b = [0u8; Token::SIZE];
    getrandom::fill(&mut b)
        .map_err(|e| Fail::with(Errno::EAGAIN, format!("no random bytes: {e}")))?;
    Ok(Token::from_bytes(b))
}

/// Whether thread `tid` belongs to process `tgid` (checked when a token
/// is redeemed, not when it is issued, so that an attach that never asks the
/// broker, as a thp region's does, reads nothing in /proc).
fn thread_of(tid: u32, tgid: i32) -> bool {
    tid as i32 == tgid || Path::new(&format!("/proc/{tgid}/task/{tid}")).exists()
}

/// Removes the sockets of servers that are gone.
fn remove_stale_sockets(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let pid = e.file_name().to_str().and_then(broker_socket_pid);
        if let Some(pid) = pid {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            if nix::sys::signal::kill(pid, None) == Err(Errno::ESRCH) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// A listening socket at `path` that every user may connect to, and an
/// epoll set watching it.
fn listen(path: &Path) -> Result<(UnixListener, Epoll), String> {
    let _ = std::fs::remove_file(path); // ours: only this user writes here
    let fail = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let listener = UnixListener::bind(path).map_err(|e| fail(&e))?;
    // Every user may connect: the token, not the socket, is the check.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(|e| fail(&e))?;
    listener.set_nonblocking(true).map_err(|e| fail(&e))?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| fail(&e))?;
    epoll
        .add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))
        .map_err(|e| fail(&e))?;
    Ok((listener, epoll))
}

impl Broker {
    /// Starts the broker: one thread on [`broker_socket_path`], and one
    /// pinned to each CPU on [`broker_cpu_socket_path`] (libmshare connects
    /// to its CPU's, so that an exchange is two context switches on that
    /// CPU rather than a wake-up of another CPU and back). `max_conns` is
    /// shared out between them. If it cannot listen (a server that may not
    /// write [`BROKER_DIR`]), every token request is refused (`EOPNOTSUPP`)
    /// and the log says why.
    pub fn start(max_conns: usize) -> Arc<Broker> {
        let dir = Path::new(BROKER_DIR);
        let main = crate::sys::private_dir(dir, 0o755).and_then(|()| {
            remove_stale_sockets(dir);
            let path = broker_socket_path(std::process::id());
            listen(&path).map(|l| (path, l))
        });
        let (main_path, main) = match main {
            Ok((path, l)) => (Some(path), Some(l)),
            Err(e) => {
                warn!("no descriptor broker ({e}): libmshare cannot map regions of this mount");
                (None, None)
            }
        };
        let cpus = match main {
            Some(_) => crate::sys::possible_cpus().unwrap_or(1),
            None => 0,
        };
        let per_thread = max_conns.div_ceil(cpus + 1);
        let mut listening = Vec::new();
        let mut sockets = Vec::new();
        for cpu in 0..cpus {
            let path = broker_cpu_socket_path(std::process::id(), cpu as u32);
            match listen(&path) {
                Ok(l) => {
                    sockets.push(path);
                    listening.push((Some(cpu), l));
                }
                Err(e) => warn!("broker for CPU {cpu}: {e}; its callers use the main socket"),
            }
        }
        listening.extend(main.map(|l| (None, l)));
        sockets.extend(main_path.clone());
        let broker = Arc::new(Broker {
            grants: Mutex::new(HashMap::new()),
            socket: main_path,
            sockets,
        });
        for (cpu, (listener, epoll)) in listening {
            let b = broker.clone();
            let name = cpu.map_or("broker".to_string(), |c| format!("broker-cpu{c}"));
            std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    if let Some(c) = cpu {
                        pin_to(c);
                    }
                    Server::new(listener, epoll, per_thread).run(&b)
                })
                .expect("spawn a broker thread");
        }
        if let Some(p) = broker.socket_path() {
            info!(
                "broker listening on {} (and one socket per CPU beside it)",
                p.display()
            );
        }
        broker
    }

    /// The socket's path, if it listens.
    pub fn socket_path(&self) -> Option<&Path> {
        self.socket.as_deref()
    }

    /// Removes the sockets (the server is exiting).
    pub fn remove_socket(&self) {
        for p in &self.sockets {
            let _ = std::fs::remove_file(p);
        }
    }

    /// `MSHAREFS_GET_TOKEN`: a token for handle `fh` of thread `tid`.
    pub fn issue(
        &self,
        fh: FileHandle,
        tid: u32,
        file: Arc<OwnedFd>,
        access: Access,
    ) -> Result<Token, Fail> {
        ensure(
            self.socket.is_some(),
            Errno::EOPNOTSUPP,
            "the broker socket is not listening",
        )?;
        // A caller outside the server's pid namespace has no pid here.
        ensure(
            tid != 0,
            Errno::EPERM,
            "caller is not in the server's pid namespace",
        )?;
        let token = random_token()?;
        let mut grants = self.grants.lock();
        grants.retain(|_, g| g.issued.elapsed() < Duration::from_secs(TOKEN_TTL_SECS));
        grants.insert(
            token,
            Grant {
                fh,
                tid,
                file,
                access,
                issued: Instant::now(),
            },
        );
        Ok(token)
    }

    /// Forgets the grants of a released handle (the last close of its
    /// open file description; region opens ask for no `flush`).
    pub fn revoke_handle(&self, fh: FileHandle) {
        self.grants.lock().retain(|_, g| g.fh != fh);
    }

    /// Takes the grant of `token` (one try) if `pid` may have it.
    fn redeem(&self, token: Token, pid: i32) -> Result<(Arc<OwnedFd>, Access), Fail> {
        let grant = self
            .grants
            .lock()
            .remove(&token)
            .ok_or(Fail::new(Errno::EACCES, "unknown or used token"))?;
        ensure(
            grant.issued.elapsed() < Duration::from_secs(TOKEN_TTL_SECS),
            Errno::EACCES,
            "token expired",
        )?;
        ensure(
            thread_of(grant.tid, pid),
            Errno::EACCES,
            "token presented by another process",
        )?;
        Ok((grant.file, grant.access))
    }

    /// The answer to a complete token from `pid`: a new descriptor of the
    /// backing file with the grant's access.
    fn answer(&self, token: Token, pid: i32) -> Result<OwnedFd, Fail> {
        let (file, access) = self.redeem(token, pid)?;
        let flags = if access.writes() {
            OFlag::O_RDWR
        } else {
            OFlag::O_RDONLY
        };
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        Ok(nix::fcntl::open(
            path.as_str(),
            flags | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?)
    }
}

/// The epoll data of the listening socket.
const LISTENER: u64 = u64::MAX;
/// Connections accepted per wake-up.
const ACCEPT_BATCH: usize = 64;

/// A connection waiting for its token.
struct Conn {
    stream: UnixStream,
    /// The peer's pid and uid (`SO_PEERCRED`, taken at connect).
    pid: i32,
    uid: u32,
    /// The token bytes read so far.
    buf: [u8; Token::SIZE],
    got: usize,
    /// When it was accepted.
    since: Instant,
}

/// The broker thread's state: the listener and the connections.
struct Server {
    listener: UnixListener,
    epoll: Epoll,
    conns: HashMap<RawFd, Conn>,
    /// The most connections held at once.
    max_conns: usize,
    /// A spare descriptor, given up to accept-and-close one connection
    /// when the process is out of descriptors (so the listener does not
    /// stay readable and spin).
    spare: Option<File>,
    /// When the last "out of descriptors" warning was logged.
    warned: Option<Instant>,
}

impl Server {
    fn new(listener: UnixListener, epoll: Epoll, max_conns: usize) -> Self {
        Server {
            listener,
            epoll,
            conns: HashMap::new(),
            max_conns,
            spare: File::open("/dev/null").ok(),
            warned: None,
        }
    }

    fn run(mut self, broker: &Broker) {
        let mut events = vec![EpollEvent::empty(); 64];
        loop {
            let timeout = self
                .conns
                .values()
                .map(|c| (c.since + CONN_DEADLINE).saturating_duration_since(Instant::now()))
                .min()
                .map_or(EpollTimeout::NONE, |d| {
                    EpollTimeout::try_from(d + Duration::from_millis(1))
                        .unwrap_or(EpollTimeout::MAX)
                });
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    warn!("broker: epoll_wait: {e}; the broker stops");
                    return;
                }
            };
            for ev in &events[..n] {
                match ev.data() {
                    LISTENER => self.accept_all(broker),
                    fd => self.readable(broker, fd as RawFd),
                }
            }
            self.expire();
        }
    }

    /// Accepts pending connections, at most [`ACCEPT_BATCH`] at a time so
    /// that the connections already accepted are read in between (the
    /// listener stays readable while more wait).
    /// A client sends its token right after connecting, so a new
    /// connection is read at once: most answers need no second wake-up.
    fn accept_all(&mut self, broker: &Broker) {
        for _ in 0..ACCEPT_BATCH {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Some(fd) = self.admit(stream) {
                        self.readable(broker, fd);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if matches!(errno_of(&e), Errno::EMFILE | Errno::ENFILE) => {
                    self.shed_one(&e);
                    return;
                }
                Err(e) => {
                    debug!("broker: accept: {e}");
                    return;
                }
            }
        }
    }

    /// Out of descriptors: accept one connection on the spare descriptor
    /// and close it, so the backlog drains instead of spinning.
    fn shed_one(&mut self, e: &std::io::Error) {
        if self
            .warned
            .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
        {
            warn!("broker: {e}: refusing connections until descriptors are free");
            self.warned = Some(Instant::now());
        }
        drop(self.spare.take());
        drop(self.listener.accept());
        self.spare = File::open("/dev/null").ok();
    }

    /// Takes a new connection into the table (unless limits refuse it);
    /// its descriptor.
    fn admit(&mut self, stream: UnixStream) -> Option<RawFd> {
        let cred = getsockopt(&stream, PeerCredentials).ok()?;
        stream.set_nonblocking(true).ok()?;
        let uid = cred.uid();
        let of_uid = self.conns.values().filter(|c| c.uid == uid).count();
        if of_uid >= MAX_PER_UID
            && !self.close_oldest_stale(|c| c.uid == uid)
            && of_uid >= HARD_PER_UID
        {
            debug!("broker: uid {uid} holds {of_uid} connections; refused one");
            return None;
        }
        if self.conns.len() >= self.max_conns {
            let heaviest = self.heaviest_uid();
            if !self.close_oldest_stale(|c| Some(c.uid) == heaviest)
                && !self.close_oldest_stale(|_| true)
            {
                debug!(
                    "broker: {} connections, none stale; refused one",
                    self.conns.len()
                );
                return None;
            }
        }
        let fd = stream.as_raw_fd();
        if self
            .epoll
            .add(&stream, EpollEvent::new(EpollFlags::EPOLLIN, fd as u64))
            .is_err()
        {
            return None;
        }
        self.conns.insert(
            fd,
            Conn {
                stream,
                pid: cred.pid(),
                uid,
                buf: [0; Token::SIZE],
                got: 0,
                since: Instant::now(),
            },
        );
        Some(fd)
    }

    fn heaviest_uid(&self) -> Option<u32> {
        let mut counts: HashMap<u32, usize> = HashMap::new();
        for c in self.conns.values() {
            *counts.entry(c.uid).or_default() += 1;
        }
        counts
            .into_iter()
            .max_by_key(|&(_, n)| n)
            .map(|(uid, _)| uid)
    }

    /// Closes the oldest stale connection that `which` selects; whether
    /// there was one.
    fn close_oldest_stale(&mut self, which: impl Fn(&Conn) -> bool) -> bool {
        let oldest = self
            .conns
            .iter()
            .filter(|(_, c)| which(c) && c.since.elapsed() >= STALE_AFTER)
            .min_by_key(|(_, c)| c.since)
            .map(|(fd, _)| *fd);
        match oldest.and_then(|fd| self.close(fd)) {
            Some(c) => {
                debug!("broker: dropped an idle connection of uid {}", c.uid);
                true
            }
            None => false,
        }
    }

    fn close(&mut self, fd: RawFd) -> Option<Conn> {
        let c = self.conns.remove(&fd)?;
        let _ = self.epoll.delete(&c.stream);
        Some(c)
    }

    /// Reads what connection `fd` sent; answers once the token is whole.
    fn readable(&mut self, broker: &Broker, fd: RawFd) {
        let Some(c) = self.conns.get_mut(&fd) else {
            return;
        };
        let outcome = loop {
            match c.stream.read(&mut c.buf[c.got..]) {
                Ok(0) => break Some(Err(Fail::new(Errno::EPROTO, "short token"))),
                Ok(n) => {
                    c.got += n;
                    if c.got == Token::SIZE {
                        let token = Token::from_bytes(c.buf);
                        break Some(broker.answer(token, c.pid));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break None,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => break Some(Err(e.into())),
            }
        };
        if let Some(outcome) = outcome {
            if let Some(c) = self.close(fd) {
                reply(&c, outcome);
            }
        }
    }

    /// Closes connections past their deadline.
    fn expire(&mut self) {
        let late: Vec<RawFd> = self
            .conns
            .iter()
            .filter(|(_, c)| c.since.elapsed() >= CONN_DEADLINE)
            .map(|(fd, _)| *fd)
            .collect();
        for fd in late {
            if let Some(c) = self.close(fd) {
                debug!("broker: connection of pid {} sent no token in time", c.pid);
            }
        }
    }
}

/// Sends the status (and the descriptor) to a connection; never blocks.
fn reply(c: &Conn, outcome: Result<OwnedFd, Fail>) {
    let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
    let sock = c.stream.as_raw_fd();
    match outcome {
        Ok(fd) => {
            let status = 0i32.to_ne_bytes();
            let fds = [fd.as_fd().as_raw_fd()];
            let rights = [ControlMessage::ScmRights(&fds)];
            match sendmsg::<()>(sock, &[IoSlice::new(&status)], &rights, flags, None) {
                Ok(_) => debug!("broker: backing descriptor sent to pid {}", c.pid),
                Err(e) => debug!("broker: sending to pid {} failed: {e}", c.pid),
            }
        }
        Err(f) => {
            debug!("broker: refused pid {}: {f}", c.pid);
            let status = (f.errno as i32).to_ne_bytes();
            let _ = sendmsg::<()>(sock, &[IoSlice::new(&status)], &[], flags, None);
        }
    }
}
