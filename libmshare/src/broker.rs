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

use std::io::{IoSliceMut, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    getsockopt, recvmsg, sockopt::PeerCredentials, ControlMessageOwned, MsgFlags,
};

use mshare_uapi::{broker_socket_path, MshareToken};

/// Why an exchange failed, and the errno to report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{why} ({errno})", errno = errno.desc())]
pub struct BrokerError {
    /// What went wrong.
    pub why: String,
    /// The errno.
    pub errno: Errno,
}

impl BrokerError {
    fn new(why: impl Into<String>, errno: Errno) -> Self {
        BrokerError {
            why: why.into(),
            errno,
        }
    }
}

/// Connects to the broker of `token.server_pid`, checks that the peer is
/// that process, presents the token and receives the descriptor.
pub fn exchange(token: &MshareToken) -> Result<OwnedFd, BrokerError> {
    let io = |what: &str, e: std::io::Error| {
        BrokerError::new(format!("{what}: {e}"), crate::errno_of(&e))
    };
    let path = broker_socket_path(token.server_pid);
    let name = path.display();
    let mut sock =
        UnixStream::connect(&path).map_err(|e| io(&format!("connecting to {name}"), e))?;
    let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
    let peer =
        getsockopt(&sock, PeerCredentials).map_err(|e| BrokerError::new("SO_PEERCRED", e))?;
    if peer.pid() != token.server_pid as i32 {
        return Err(BrokerError::new(
            format!("{name} is held by pid {}, not the server", peer.pid()),
            Errno::EACCES,
        ));
    }
    sock.write_all(&token.token.to_bytes())
        .map_err(|e| io("sending the token", e))?;
    receive(&sock)
}

/// Reads the broker's answer on a connected socket: an `i32` status and, on 0, one descriptor.
pub fn receive(sock: &UnixStream) -> Result<OwnedFd, BrokerError> {
    let answer_err = |e| BrokerError::new("reading the answer", e);
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
        return Err(BrokerError::new(
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
