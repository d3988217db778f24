//! The file system namespace: mshare_info, regions as files, directories,
//! ownership and permissions.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use msharefs_tests::*;
use nix::errno::Errno;

use crate::common::*;

#[test]
fn mshare_info_holds_the_alignment_and_cannot_be_changed() {
    let m = Server::mount("");
    assert_eq!(read_text(&m.path("mshare_info")), "1073741824\n");
    let meta = fs::metadata(m.path("mshare_info")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o444);
    for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_RDONLY | libc::O_TRUNC] {
        assert_eq!(
            open(&m.path("mshare_info"), flags).err(),
            Some(Errno::EPERM),
            "flags {flags:#x}"
        );
    }
    assert_eq!(
        fs::remove_file(m.path("mshare_info")).map_err(errno_of),
        Err(libc::EPERM)
    );
    assert_eq!(
        fs::rename(m.path("mshare_info"), m.path("x")).map_err(errno_of),
        Err(libc::EPERM)
    );
    drop(open(&m.path("other"), libc::O_RDWR | libc::O_CREAT).unwrap());
    assert_eq!(
        fs::rename(m.path("other"), m.path("mshare_info")).map_err(errno_of),
        Err(libc::EPERM)
    );
    assert_eq!(
        fs::set_permissions(m.path("mshare_info"), fs::Permissions::from_mode(0o666))
            .map_err(errno_of),
        Err(libc::EPERM)
    );
    assert_eq!(
        read_text(&m.path("mshare_info")),
        "1073741824\n",
        "unchanged"
    );
}

#[test]
fn align_option_sets_mshare_info() {
    let m = Server::mount("align=2M");
    assert_eq!(read_text(&m.path("mshare_info")), "2097152\n");
    let fd = open(&m.path("r"), libc::O_RDWR | libc::O_CREAT | libc::O_EXCL).unwrap();
    assert_eq!(
        ioctl::set_size(
            &fd,
            &MshareInfo {
                start: 1 << 32,
                size: MIB2
            }
        ),
        Ok(())
    );
}

#[test]
fn regions_are_files_owned_by_their_creator() {
    let m = Server::mount("");
    let fd = open(&m.path("r"), libc::O_RDWR | libc::O_CREAT | libc::O_EXCL).unwrap();
    assert_eq!(
        open(&m.path("r"), libc::O_RDWR | libc::O_CREAT | libc::O_EXCL).err(),
        Some(Errno::EEXIST)
    );
    let meta = fs::metadata(m.path("r")).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    // chmod, chown, utimens
    fs::set_permissions(m.path("r"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(m.path("r"), Some(65534), Some(65534)).unwrap();
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    fs::File::options()
        .write(true)
        .open(m.path("r"))
        .unwrap()
        .set_modified(t)
        .unwrap();
    let meta = fs::metadata(m.path("r")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    assert_eq!(meta.modified().unwrap(), t);
    drop(fd);
    // A region created as another user belongs to that user.
    let code = in_child(|| {
        nix::unistd::setgid(nix::unistd::Gid::from_raw(65534)).unwrap();
        nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).unwrap();
        i32::from(
            open(
                &m.path("theirs"),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
            )
            .is_err(),
        )
    });
    assert_eq!(code, 0);
    assert_eq!(fs::metadata(m.path("theirs")).unwrap().uid(), 65534);
}

#[test]
fn other_users_are_refused_by_mode_bits() {
    let m = Server::mount("");
    drop(create_region(&m, "private", 4 * GIB, GIB));
    let path = m.path("private");
    let code = in_child(|| {
        nix::unistd::setgid(nix::unistd::Gid::from_raw(65534)).unwrap();
        nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).unwrap();
        let ro = open(&path, libc::O_RDONLY).err();
        let rw = open(&path, libc::O_RDWR).err();
        let rm = fs::remove_file(&path).map_err(errno_of).err();
        i32::from(
            !(ro == Some(Errno::EACCES) && rw == Some(Errno::EACCES) && rm == Some(libc::EPERM)),
        )
    });
    assert_eq!(
        code, 0,
        "uid 65534: EACCES on open, EPERM on unlink (sticky root)"
    );
    assert!(path.exists());
}

#[test]
fn directories_rename_and_unsupported_node_types() {
    let m = Server::mount("");
    fs::create_dir(m.path("db")).unwrap();
    drop(create_region(&m, "db/sga", 4 * GIB, GIB));
    assert_eq!(
        fs::remove_dir(m.path("db")).map_err(errno_of),
        Err(libc::ENOTEMPTY)
    );
    let mut names: Vec<_> = fs::read_dir(m.path("db"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["sga"]);
    fs::rename(m.path("db/sga"), m.path("sga2")).unwrap();
    let fd = open(&m.path("sga2"), libc::O_RDWR).unwrap();
    assert_eq!(
        ioctl::get_size(&fd).unwrap().size,
        GIB,
        "the region moved with its name"
    );
    fs::remove_dir(m.path("db")).unwrap();
    assert_eq!(
        std::os::unix::fs::symlink("sga2", m.path("link")).map_err(errno_of),
        Err(libc::EPERM)
    );
    assert_eq!(
        fs::hard_link(m.path("sga2"), m.path("hard")).map_err(errno_of),
        Err(libc::EPERM)
    );
    let fifo = nix::unistd::mkfifo(
        &m.path("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    );
    assert_eq!(fifo, Err(Errno::EPERM));
    let mut root: Vec<_> = fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    root.sort();
    assert_eq!(root, ["anon", "mshare_info", "sga2", "shm"]);
    let st = nix::sys::statfs::statfs(&m.dir).unwrap();
    let expected = std::cmp::min(65536, descriptor_budget());
    assert_eq!(st.files(), expected, "statfs reports max_regions");
    assert_eq!(st.files_free(), expected - 1);
}

#[test]
fn max_regions_limits_creation() {
    let m = Server::mount("max_regions=2");
    open(&m.path("a"), libc::O_RDWR | libc::O_CREAT).unwrap();
    open(&m.path("b"), libc::O_RDWR | libc::O_CREAT).unwrap();
    assert_eq!(
        open(&m.path("c"), libc::O_RDWR | libc::O_CREAT).err(),
        Some(Errno::ENOSPC)
    );
    fs::remove_file(m.path("a")).unwrap();
    wait_until("a region slot to free", || {
        open(&m.path("c"), libc::O_RDWR | libc::O_CREAT).is_ok()
    });
}

/// Many clients at once: threads creating, sizing, mapping, renaming and
/// removing regions in one directory; every operation succeeds, the server
/// survives, and no memory or region is left behind.
#[test]
fn concurrent_clients_create_use_and_remove_regions() {
    let mut m = Server::mount("align=2M,backing=shmem");
    std::thread::scope(|s| {
        for t in 0..8 {
            let m = &m;
            s.spawn(move || {
                for i in 0..50 {
                    let name = format!("t{t}-{i}");
                    let start = (1u64 << 40) + ((t * 50 + i) as u64) * MIB2;
                    let fd = create_region(m, &name, start, MIB2);
                    ioctl::create_mapping(&fd, &anon_create(start, MIB2)).unwrap();
                    let map =
                        Map::new(&fd, 0, MIB2, libc::PROT_READ | libc::PROT_WRITE, 0).unwrap();
                    map.set(4096, t as u8);
                    assert_eq!(map.get(4096), t as u8);
                    drop(map);
                    drop(fd);
                    let renamed = format!("{name}.old");
                    fs::rename(m.path(&name), m.path(&renamed)).unwrap();
                    fs::remove_file(m.path(&renamed)).unwrap();
                }
            });
        }
    });
    assert!(m.server_alive());
    assert_eq!(
        fs::read_dir(&m.dir).unwrap().count(),
        3,
        "only mshare_info, anon/ and shm/ are left"
    );
    // The server's own shmem instance, not the machine's Shmem, which
    // other tests move at the same time.
    let instance = m.state_dir().join("shmem");
    wait_until("the regions' memory to return", || {
        let st = nix::sys::statfs::statfs(&instance).unwrap();
        st.blocks_free() == st.blocks() && st.files_free() + 1 == st.files()
    });
    wait_until("every region to be forgotten", || {
        let st = nix::sys::statfs::statfs(&m.dir).unwrap();
        st.files_free() == st.files()
    });
}

/// What `max_regions` may be with this process's hard descriptor limit (the
/// server inherits it and raises its soft limit to it): the limit less
/// 128 kept for the server and the io_uring queues' most (16 threads per
/// CPU, a ring each).
fn descriptor_budget() -> u64 {
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    // The io_uring queues' rings are left out with io_uring=off.
    let rings = match transport_option() {
        Some("io_uring=off") => 0,
        _ => 16 * possible_cpus() as u64,
    };
    hard - 128 - rings
}
