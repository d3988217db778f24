//! The descriptor broker: hands a region's backing file descriptor to a
//! process that holds an open region file, and to nobody else.
//!
//! 1. `MSHAREFS_GET_TOKEN` on an open region file makes a [`Grant`]: a
//!    random 128-bit token bound to that open handle, to the calling
//!    process (its thread-group id) and to the access the open allowed.
//! 2. The process connects to the abstract Unix socket
//!    [`broker_socket_name`] and sends the token. The broker takes the
//!    token out of the table (it is good for one try), checks its age and
//!    that the peer's `SO_PEERCRED` pid is the bound process, and sends a new
//!    descriptor of the backing file opened with the same access
//!    (`O_RDONLY` or `O_RDWR`) by `SCM_RIGHTS`.
//!
//! Closing a descriptor of the handle revokes the closing process's grants
//! on it; releasing the handle revokes all of them. See
//! `Documentation/libmshare.md` for the client side.

use std::collections::HashMap;
use std::io::{IoSlice, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, warn};
use mshare_uapi::{broker_socket_name, Token, TOKEN_TTL_SECS};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::socket::{getsockopt, sendmsg, sockopt::PeerCredentials, ControlMessage, MsgFlags};
use nix::sys::stat::Mode;
use parking_lot::Mutex;

use fuser::FileHandle;

use crate::fail::{ensure, Fail};
use crate::region::Access;

/// Connections served on threads of their own at once.
const MAX_CONNECTIONS: usize = 64;

/// What a token buys.
#[derive(Debug)]
struct Grant {
    /// The open handle it was issued on.
    fh: FileHandle,
    /// Thread-group id of the process that asked.
    tgid: i32,
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
    /// Connections being served.
    active: AtomicUsize,
    /// Whether the socket is listening.
    listening: bool,
}

fn random_token() -> Result<Token, Fail> {
    let mut b = [0u8; Token::SIZE];
    getrandom::fill(&mut b)
        .map_err(|e| Fail::with(Errno::EAGAIN, format!("no random bytes: {e}")))?;
    Ok(Token::from_bytes(b))
}

/// The thread-group id of thread `tid` (FUSE requests carry the thread id).
fn tgid_of(tid: u32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:")?.trim().parse().ok())
}

impl Broker {
    /// Starts the broker on its abstract socket. If the socket cannot be
    /// bound, the broker refuses every token request (`EOPNOTSUPP`), and the
    /// log says why.
    pub fn start() -> Arc<Broker> {
        let name = broker_socket_name(std::process::id());
        let listener = SocketAddr::from_abstract_name(name.as_bytes())
            .and_then(|a| UnixListener::bind_addr(&a));
        let broker = Arc::new(Broker {
            grants: Mutex::new(HashMap::new()),
            active: AtomicUsize::new(0),
            listening: listener.is_ok(),
        });
        match listener {
            Ok(listener) => {
                let b = broker.clone();
                std::thread::Builder::new()
                    .name("broker".into())
                    .spawn(move || b.accept_loop(listener))
                    .expect("spawn the broker thread");
                debug!("broker listening on @{name}");
            }
            Err(e) => {
                warn!("cannot listen on @{name} ({e}): libmshare cannot get backing descriptors")
            }
        }
        broker
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
            self.listening,
            Errno::EOPNOTSUPP,
            "the broker socket is not listening",
        )?;
        let tgid = tgid_of(tid).ok_or(Fail::new(
            Errno::EPERM,
            "caller is not in the server's pid namespace",
        ))?;
        let token = random_token()?;
        let mut grants = self.grants.lock();
        grants.retain(|_, g| g.issued.elapsed() < Duration::from_secs(TOKEN_TTL_SECS));
        grants.insert(
            token,
            Grant {
                fh,
                tgid,
                file,
                access,
                issued: Instant::now(),
            },
        );
        Ok(token)
    }

    /// Forgets the grants of handle `fh` held for the process of thread
    /// `tid`: it closed a descriptor of that handle (FUSE `flush`, which
    /// `close(2)` waits for, unlike the later `release`).
    /// Every close of a region file gets here, so /proc is read only when
    /// the handle has a grant at all.
    pub fn revoke_for_closer(&self, fh: FileHandle, tid: u32) {
        if !self.grants.lock().values().any(|g| g.fh == fh) {
            return;
        }
        let tgid = tgid_of(tid);
        self.grants
            .lock()
            .retain(|_, g| !(g.fh == fh && Some(g.tgid) == tgid));
    }

    /// Forgets the grants of a released handle.
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
            grant.tgid == pid,
            Errno::EACCES,
            "token presented by another process",
        )?;
        Ok((grant.file, grant.access))
    }

    /// Serves each connection on a thread of its own, up to
    /// [`MAX_CONNECTIONS`] at once; beyond that the accepting thread serves
    /// it itself, which slows new connections down (they wait in the
    /// listen backlog) but never drops one: a burst of attaching clients is
    /// the normal case.
    fn accept_loop(self: Arc<Self>, listener: UnixListener) {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            if self.active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                self.serve(conn);
                self.active.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
            let b = self.clone();
            let spawned = std::thread::Builder::new()
                .name("broker-conn".into())
                .spawn(move || {
                    b.serve(conn);
                    b.active.fetch_sub(1, Ordering::AcqRel);
                });
            if let Err(e) = spawned {
                // The closure (and the connection) came back in the error
                // only as a drop; count it as finished.
                debug!("broker: cannot start a thread ({e})");
                self.active.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    fn serve(&self, mut conn: UnixStream) {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
        let answer = (|| {
            let cred = getsockopt(&conn, PeerCredentials).map_err(Fail::from)?;
            let mut buf = [0u8; Token::SIZE];
            conn.read_exact(&mut buf)
                .map_err(|_| Fail::new(Errno::EPROTO, "short token"))?;
            let (file, access) = self.redeem(Token::from_bytes(buf), cred.pid())?;
            let access = if access.writes() {
                OFlag::O_RDWR
            } else {
                OFlag::O_RDONLY
            };
            let path = format!("/proc/self/fd/{}", file.as_raw_fd());
            let fd = nix::fcntl::open(path.as_str(), access | OFlag::O_CLOEXEC, Mode::empty())?;
            Ok::<_, Fail>((fd, cred.pid()))
        })();
        match answer {
            Ok((fd, pid)) => {
                let status = 0i32.to_ne_bytes();
                let fds = [fd.as_fd().as_raw_fd()];
                let sent = sendmsg::<()>(
                    conn.as_raw_fd(),
                    &[IoSlice::new(&status)],
                    &[ControlMessage::ScmRights(&fds)],
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                );
                match sent {
                    Ok(_) => debug!("broker: backing descriptor sent to pid {pid}"),
                    Err(e) => debug!("broker: sending to pid {pid} failed: {e}"),
                }
            }
            Err(f) => {
                debug!("broker: refused: {f}");
                let status = (f.errno as i32).to_ne_bytes();
                let _ = sendmsg::<()>(
                    conn.as_raw_fd(),
                    &[IoSlice::new(&status)],
                    &[],
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                );
            }
        }
    }
}
