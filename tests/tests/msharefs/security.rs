//! Only a process holding an open region file gets the backing descriptor,
//! and only with the access its open allowed.

use std::io::Write;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};

use libmshare::broker;
use mshare_uapi::{broker_socket_name, MshareToken, Token};
use msharefs_tests::*;
use nix::errno::Errno;

use crate::common::*;

fn redeem(token: &MshareToken) -> Result<std::os::fd::OwnedFd, Errno> {
    broker::exchange(token).map_err(|e| e.errno)
}

#[test]
fn tokens_are_one_time_bound_to_the_process_and_unforgeable() {
    let m = Server::mount("");
    let fd = create_mapped_region(&m, "r", 4 * GIB, GIB);
    let token = ioctl::get_token(&fd).unwrap();
    assert_eq!(token.server_pid, m.pid().as_raw() as u32);
    assert!(redeem(&token).is_ok(), "the holder gets the descriptor");
    assert_eq!(redeem(&token).err(), Some(Errno::EACCES), "replayed token");

    let forged = MshareToken {
        token: Token([token.token.0[0] ^ 1, token.token.0[1]]),
        ..token
    };
    assert_eq!(redeem(&forged).err(), Some(Errno::EACCES), "wrong token");

    // A token presented by another process is refused, and burned.
    let stolen = ioctl::get_token(&fd).unwrap();
    let code = in_child(|| i32::from(redeem(&stolen).err() != Some(Errno::EACCES)));
    assert_eq!(code, 0, "token from another pid");
    assert_eq!(
        redeem(&stolen).err(),
        Some(Errno::EACCES),
        "a token is good for one try"
    );

    // No token at all: the broker answers EPROTO and sends no descriptor.
    let addr =
        SocketAddr::from_abstract_name(broker_socket_name(token.server_pid).as_bytes()).unwrap();
    let sock = UnixStream::connect_addr(&addr).unwrap();
    sock.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(
        broker::receive(&sock).err().map(|e| e.errno),
        Some(Errno::EPROTO)
    );
    let mut short = UnixStream::connect_addr(&addr).unwrap();
    short.write_all(&[1, 2, 3]).unwrap();
    short.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(
        broker::receive(&short).err().map(|e| e.errno),
        Some(Errno::EPROTO)
    );

    // Closing the region file revokes its tokens.
    let pending = ioctl::get_token(&fd).unwrap();
    drop(fd);
    assert_eq!(
        redeem(&pending).err(),
        Some(Errno::EACCES),
        "token of a closed file"
    );
    let mut m = m;
    assert!(m.server_alive());
}

#[test]
fn a_process_without_read_access_gets_nothing() {
    let m = Server::mount("");
    let fd = create_mapped_region(&m, "private", 4 * GIB, GIB);
    let token = ioctl::get_token(&fd).unwrap();
    let path = m.path("private");
    let code = in_child(|| {
        nix::unistd::setgid(nix::unistd::Gid::from_raw(65534)).unwrap();
        nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).unwrap();
        let no_open = open(&path, libc::O_RDONLY).err() == Some(Errno::EACCES);
        let lib = libmshare::Mount::find(Some(path.parent().unwrap()))
            .unwrap()
            .open("private", true);
        let no_lib = lib.err().map(|e| e.errno()) == Some(Errno::EACCES);
        // Even holding root's token (e.g. leaked), the pid check refuses.
        let no_token = redeem(&token).err() == Some(Errno::EACCES);
        i32::from(!(no_open && no_lib && no_token))
    });
    assert_eq!(
        code, 0,
        "uid 65534: EACCES from open, the library and the broker"
    );
}
