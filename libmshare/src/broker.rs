//! Client side of the server's descriptor broker (`Documentation/libmshare.md`):
//! trade a one-time token from `MSHAREFS_GET_TOKEN` for the region's backing
//! file descriptor. [`Region::backing_fd`](crate::Region::backing_fd) does
//! both steps; [`exchange`] is the second step alone, for clients that get
//! the token themselves.
//!
//! # Safety
//!
//! One block takes ownership of the descriptors `SCM_RIGHTS` installed.
#![allow(unsafe_code)]

use std::io::{ErrorKind, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    getsockopt, recvmsg, send, sockopt::PeerCredentials, ControlMessageOwned, MsgFlags,
};

use mshare_uapi::{broker_cpu_socket_path, broker_socket_path, MshareToken};

/// Why an exchange failed, and the errno to report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{why} ({errno})", errno = errno.desc())]
pub struct BrokerError {
    /// What went wrong.
    pub why: String,
    /// The errno.
    pub errno: Errno,
    /// The broker closed the connection without answering (the token was
    /// not used up): worth another try.
    unanswered: bool,
}

impl BrokerError {
    fn new(why: impl Into<String>, errno: Errno) -> Self {
        BrokerError {
            why: why.into(),
            errno,
            unanswered: false,
        }
    }

    fn unanswered(why: impl Into<String>, errno: Errno) -> Self {
        BrokerError {
            unanswered: true,
            ..Self::new(why, errno)
        }
    }
}

/// How often [`exchange`] tries when the broker closed the connection
/// without reading the token (it sheds connections under load; the token
/// is used up only once read).
const TRIES: u32 = 10;

/// Connects to the broker of `token.server_pid`, checks that the peer is
/// that process, presents the token and receives the descriptor. A
/// connection the broker closed unanswered (under a burst of attaches, or
/// a flood by another user) is tried again, up to 10 times over about
/// half a second.
pub fn exchange(token: &MshareToken) -> Result<OwnedFd, BrokerError> {
    let mut wait = Duration::from_millis(1);
    for _ in 1..TRIES {
        match exchange_once(token) {
            Err(e) if e.unanswered => {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(100));
            }
            other => return other,
        }
    }
    exchange_once(token)
}

/// Connects to the broker socket of the CPU this thread runs on (served on
/// that CPU), or to the main socket where there is none (a server from
/// before per-CPU sockets, a CPU it did not count).
fn connect(server_pid: u32) -> (std::path::PathBuf, std::io::Result<UnixStream>) {
    if let Ok(cpu) = nix::sched::sched_getcpu() {
        let path = broker_cpu_socket_path(server_pid, cpu as u32);
        match UnixStream::connect(&path) {
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {}
            res => return (path, res),
        }
    }
    let path = broker_socket_path(server_pid);
    let res = UnixStream::connect(&path);
    (path, res)
}

fn exchange_once(token: &MshareToken) -> Result<OwnedFd, BrokerError> {
    let io = |what: &str, e: std::io::Error| {
        BrokerError::new(format!("{what}: {e}"), crate::errno_of(&e))
    };
    let (path, sock) = connect(token.server_pid);
    let name = path.display();
    let sock = sock.map_err(|e| io(&format!("connecting to {name}"), e))?;
    let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
    let peer =
        getsockopt(&sock, PeerCredentials).map_err(|e| BrokerError::new("SO_PEERCRED", e))?;
    if peer.pid() != token.server_pid as i32 {
        return Err(BrokerError::new(
            format!("{name} is held by pid {}, not the server", peer.pid()),
            Errno::EACCES,
        ));
    }
    // MSG_NOSIGNAL: a C program linking libmshare must not die of SIGPIPE
    // when the broker has closed the connection.
    let bytes = token.token.to_bytes();
    let sent = send(sock.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL).map_err(|e| match e {
        Errno::ECONNRESET | Errno::EPIPE => BrokerError::unanswered("sending the token", e),
        e => BrokerError::new("sending the token", e),
    })?;
    if sent != bytes.len() {
        return Err(BrokerError::new(
            "sending the token: short write",
            Errno::EPROTO,
        ));
    }
    receive(&sock)
}

/// Reads the broker's answer on a connected socket: an `i32` status and, on 0, one descriptor.
pub fn receive(sock: &UnixStream) -> Result<OwnedFd, BrokerError> {
    let answer_err = |e| match e {
        Errno::ECONNRESET | Errno::EPIPE => BrokerError::unanswered("reading the answer", e),
        e => BrokerError::new("reading the answer", e),
    };
    let mut status = [0u8; 4];
    let mut iov = [IoSliceMut::new(&mut status)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_fd().as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(answer_err)?;
    let mut fd = None;
    for cmsg in msg.cmsgs().map_err(answer_err)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for raw in fds {
                // SAFETY: SCM_RIGHTS installed `raw` in this process as a new
                // descriptor that nothing else owns.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                fd.get_or_insert(owned);
            }
        }
    }
    let n = msg.bytes;
    if n != 4 {
        return Err(BrokerError::unanswered(
            "the broker closed the connection without an answer",
            Errno::EPROTO,
        ));
    }
    match i32::from_ne_bytes(status) {
        0 => fd.ok_or(BrokerError::new(
            "no descriptor in the answer",
            Errno::EPROTO,
        )),
        e => Err(BrokerError::new(
            "the broker refused the token",
            Errno::from_raw(e),
        )),
    }
}
