//! Only a process holding an open region file gets the backing descriptor,
//! and only with the access its open allowed.

use std::io::Write;
use std::os::unix::net::UnixStream;

use libmshare::broker;
use mshare_uapi::{broker_socket_path, MshareToken, Token};
use std::os::fd::AsRawFd;

use libmshare::Backing;
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
    let addr = broker_socket_path(token.server_pid);
    let sock = UnixStream::connect(&addr).unwrap();
    sock.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(
        broker::receive(&sock).err().map(|e| e.errno),
        Some(Errno::EPROTO)
    );
    let mut short = UnixStream::connect(&addr).unwrap();
    short.write_all(&[1, 2, 3]).unwrap();
    short.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(
        broker::receive(&short).err().map(|e| e.errno),
        Some(Errno::EPROTO)
    );

    // Closing the region file revokes its tokens: at its release, which
    // the kernel sends without waiting (region opens ask for no flush).
    let pending = ioctl::get_token(&fd).unwrap();
    drop(fd);
    std::thread::sleep(std::time::Duration::from_millis(200));
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

/// The first byte of root's region `name`, read through libmshare.
fn first_byte(m: &Server, name: &str) -> u8 {
    let region = libmshare::Mount::find(Some(&m.dir))
        .unwrap()
        .open(name, true)
        .unwrap();
    let mut b = [0u8; 1];
    region.map().unwrap().read(0, &mut b);
    b[0]
}

fn proc_fd(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Issue 7, item 1: a read-only grant could be turned into a write by
/// reopening the memfd it carried (mode 0777) through /proc/self/fd.
#[test]
fn a_read_only_grant_cannot_become_writable() {
    let m = Server::mount("align=2M");
    let _pool = HugePool::reserve(&m, 2);
    for backing in Backing::ALL {
        let name = format!("ro-{backing}");
        root_region(&m, &name, Some(backing), 0o644);
        let dir = m.dir.clone();
        let n = name.clone();
        let code = as_user(65534, move || {
            let region = libmshare::Mount::find(Some(&dir))
                .unwrap()
                .open(&n, true)
                .unwrap();
            let fd = region.backing_fd().unwrap();
            let rw = libc::PROT_READ | libc::PROT_WRITE;
            let reopen = open(std::path::Path::new(&proc_fd(&fd)), libc::O_RDWR).err();
            let map_rw = Map::new(&fd, 1 << 42, MIB2, rw, 0).err();
            let map_ro = Map::new(&fd, 1 << 42, MIB2, libc::PROT_READ, 0).unwrap();
            // SAFETY: changes the protection of a mapping this child owns.
            let mprotect =
                unsafe { libc::mprotect(map_ro.addr() as *mut libc::c_void, MIB2 as usize, rw) };
            let map_files = format!(
                "/proc/self/map_files/{:x}-{:x}",
                map_ro.addr(),
                map_ro.addr() + MIB2
            );
            let via_map_files = open(std::path::Path::new(&map_files), libc::O_RDWR).err();
            let setfl = nix::fcntl::fcntl(
                &fd,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_RDWR),
            );
            let still_ro = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL).unwrap()
                & libc::O_ACCMODE
                == libc::O_RDONLY;
            // The region file itself, reopened the same way.
            let file = open(&dir.join(&n), libc::O_RDONLY).unwrap();
            let reopen_file = open(std::path::Path::new(&proc_fd(&file)), libc::O_RDWR).err();
            failures(&[
                reopen == Some(Errno::EACCES),
                map_rw == Some(Errno::EACCES),
                mprotect != 0 && Errno::last() == Errno::EACCES,
                matches!(via_map_files, Some(Errno::EPERM | Errno::EACCES)),
                setfl.is_ok() && still_ro,
                reopen_file == Some(Errno::EACCES),
            ])
        });
        assert_eq!(code, 0, "{backing}: failed checks (bit = check) {code:#b}");
        assert_eq!(first_byte(&m, &name), 42, "{backing}: data unchanged");
    }
}

/// Issue 7, item 2: a write-only open was handed a read-write descriptor.
#[test]
fn a_write_only_open_gets_nothing_to_read_through() {
    let m = Server::mount("align=2M");
    let _pool = HugePool::reserve(&m, 2);
    for backing in Backing::ALL {
        let name = format!("wo-{backing}");
        root_region(&m, &name, Some(backing), 0o602);
        let path = m.path(&name);
        let code = as_user(65534, move || {
            let ro = open(&path, libc::O_RDONLY).err();
            let wo = open(&path, libc::O_WRONLY).unwrap();
            let token = ioctl::get_token(&wo).err();
            let mut buf = [0u8; 1];
            let read = nix::unistd::read(&wo, &mut buf).err();
            let map = Map::new(&wo, 1 << 42, MIB2, libc::PROT_READ, 0).err();
            failures(&[
                ro == Some(Errno::EACCES),
                token == Some(Errno::EBADF),
                read == Some(Errno::EBADF),
                map == Some(Errno::EACCES),
            ])
        });
        assert_eq!(code, 0, "{backing}: failed checks (bit = check) {code:#b}");
    }
}

/// Issue 7, item 3: root could change the times of mshare_info.
#[test]
fn nobody_changes_mshare_info_not_even_its_times() {
    let m = Server::mount("");
    let info = m.path("mshare_info");
    let before = std::fs::metadata(&info).unwrap().modified().unwrap();
    let t = nix::sys::time::TimeSpec::new(1_000_000, 0);
    let utime = nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &info,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::FollowSymlink,
    );
    assert_eq!(utime, Err(Errno::EPERM), "root");
    assert_eq!(
        std::fs::metadata(&info).unwrap().modified().unwrap(),
        before
    );
}
