//! Only a process holding an open region file gets the backing descriptor,
//! and only with the access its open allowed.

//! Only a process that may read a region learns where its memory is, and
//! every descriptor of that memory gives no more than the region's mode.

use std::os::fd::AsRawFd;

use libmshare::Backing;
use msharefs_tests::*;
use nix::errno::Errno;

use crate::common::*;

#[test]
fn a_process_without_read_access_gets_nothing() {
    let m = Server::mount("");
    let fd = create_mapped_region(&m, "private", 4 * GIB, GIB);
    let path = m.path("private");
    // Leaked, e.g. through root's /proc/PID/maps.
    let learned = attach_value(&path).unwrap().path.unwrap();
    drop(fd);
    let code = in_child(|| {
        nix::unistd::setgid(nix::unistd::Gid::from_raw(65534)).unwrap();
        nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).unwrap();
        let no_open = open(&path, libc::O_RDONLY).err() == Some(Errno::EACCES);
        let mount = libmshare::Mount::find(Some(path.parent().unwrap())).unwrap();
        let no_lib = mount.open("private", true).err().map(|e| e.errno()) == Some(Errno::EACCES);
        let no_attach =
            mount.attach("private", true).err().map(|e| e.errno()) == Some(Errno::EACCES);
        let no_attr = attach_value(&path) == Err(Errno::EACCES);
        // The memory file has the region's mode (0600, root's).
        let no_memory = open(&learned, libc::O_RDONLY).err() == Some(Errno::EACCES);
        failures(&[no_open, no_lib, no_attach, no_attr, no_memory])
    });
    assert_eq!(code, 0, "uid 65534: failed checks (bit = check) {code:#b}");
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
/// reopening the memfd it carried (mode 0777) through /proc/self/fd. The
/// memory file libmshare opens carries the region's mode (0644 here).
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
/// A write-only user now learns no memory file at all.
#[test]
fn a_write_only_open_gets_nothing_to_read_through() {
    let m = Server::mount("align=2M");
    let _pool = HugePool::reserve(&m, 2);
    for backing in Backing::ALL {
        let name = format!("wo-{backing}");
        root_region(&m, &name, Some(backing), 0o602);
        let path = m.path(&name);
        let dir = m.dir.clone();
        let code = as_user(65534, move || {
            let ro = open(&path, libc::O_RDONLY).err();
            let wo = open(&path, libc::O_WRONLY).unwrap();
            let attr = attach_value(&path).err();
            let lib = libmshare::Mount::at(&dir).unwrap().attach(&name, false);
            let mut buf = [0u8; 1];
            let read = nix::unistd::read(&wo, &mut buf).err();
            let map = Map::new(&wo, 1 << 42, MIB2, libc::PROT_READ, 0).err();
            failures(&[
                ro == Some(Errno::EACCES),
                attr == Some(Errno::EACCES),
                lib.err().map(|e| e.errno()) == Some(Errno::EACCES),
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
