//! libmshare's Rust API and the direct path, against real mounts.

use std::os::fd::AsRawFd;

use libmshare::{Backing, CreateOptions, Error, Mount};
use msharefs_tests::*;
use nix::errno::Errno;

fn options(backing: Option<Backing>) -> CreateOptions {
    CreateOptions {
        backing,
        ..CreateOptions::default()
    }
}

/// Mount points of every `fuse.msharefs` mount in this mount namespace.
fn msharefs_mounts() -> Vec<std::path::PathBuf> {
    mounts()
        .into_iter()
        .filter(|m| m.is_msharefs())
        .map(|m| m.point)
        .collect()
}

/// Regression: this test once assumed that no other msharefs mount existed,
/// and failed after the README's demo left `/run/mshare` mounted. The
/// mountinfo case now runs in a private mount namespace from which every
/// other msharefs mount is detached.
#[test]
fn finds_the_mount_explicitly_by_env_and_by_mountinfo() {
    let m = Server::mount("align=2M");
    let by_path = Mount::find(Some(&m.dir)).unwrap();
    assert_eq!(by_path.alignment(), MIB2);
    let code = in_child(|| {
        use nix::mount::{mount, umount2, MntFlags, MsFlags};
        use nix::sched::{unshare, CloneFlags};
        unshare(CloneFlags::CLONE_NEWNS).unwrap();
        mount::<str, str, str, str>(None, "/", None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)
            .unwrap();
        for other in msharefs_mounts().into_iter().filter(|d| *d != m.dir) {
            umount2(&other, MntFlags::MNT_DETACH).unwrap();
        }
        std::env::remove_var("MSHARE_DIR");
        let found = Mount::find(None).unwrap();
        i32::from(found.dir() != m.dir.as_path())
    });
    assert_eq!(code, 0, "found through /proc/self/mountinfo");
    let code = in_child(|| {
        std::env::set_var("MSHARE_DIR", &m.dir);
        i32::from(Mount::find(None).unwrap().alignment() != MIB2)
    });
    assert_eq!(code, 0, "found through MSHARE_DIR");
    let err = Mount::find(Some(std::path::Path::new("/nonexistent"))).unwrap_err();
    assert!(matches!(err, Error::NoMount { .. }), "{err}");
    assert_eq!(err.errno(), Errno::ENOENT);
}

#[test]
fn create_map_and_attach_from_another_process() {
    let m = Server::mount("");
    let mount = Mount::find(Some(&m.dir)).unwrap();
    let region = mount
        .create("sga", 0, GIB, &CreateOptions::default())
        .unwrap();
    let info = region.info().unwrap();
    assert_eq!(info.size, GIB);
    assert_eq!(info.start % GIB, 0, "server-chosen start is aligned");
    assert_eq!(
        region.backing().unwrap(),
        Backing::Thp,
        "the mount's default"
    );
    let map = region.map().unwrap();
    assert_eq!(
        map.as_ptr() as u64,
        info.start,
        "mapped at the region's start"
    );
    assert_eq!(map.len() as u64, GIB);
    map.write(12345, b"written by the creator");
    drop(map); // a forked child would inherit it at the same address
    let dir = m.dir.clone();
    let code = in_child(move || {
        let mount = Mount::find(Some(&dir)).unwrap();
        let region = mount.open("sga", true).unwrap();
        let map = region.map().unwrap();
        let mut buf = [0u8; 22];
        map.read(12345, &mut buf);
        i32::from(&buf != b"written by the creator" || map.is_writable())
    });
    assert_eq!(code, 0, "the other process sees the data, read-only");
    // The kernel-ABI path sees the same memory.
    let fd = open(&m.path("sga"), libc::O_RDWR).unwrap();
    let file = std::fs::File::from(fd);
    let mut buf = [0u8; 22];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, 12345).unwrap();
    assert_eq!(&buf, b"written by the creator");
}

#[test]
fn mapping_twice_is_address_in_use_and_errors_name_the_region() {
    let m = Server::mount("");
    let mount = Mount::find(Some(&m.dir)).unwrap();
    let region = mount
        .create("r", 4 * GIB, GIB, &CreateOptions::default())
        .unwrap();
    let _map = region.map().unwrap();
    let err = region.map().unwrap_err();
    assert!(
        matches!(err, Error::AddressInUse { start, .. } if start == 4 * GIB),
        "{err}"
    );
    assert_eq!(err.errno(), Errno::EEXIST);
    let err = mount
        .create("r", 4 * GIB, GIB, &CreateOptions::default())
        .unwrap_err();
    assert_eq!(
        err.errno(),
        Errno::EEXIST,
        "exclusive create of an existing region"
    );
    let again = mount.create(
        "r",
        4 * GIB,
        GIB,
        &CreateOptions {
            exclusive: false,
            ..Default::default()
        },
    );
    assert_eq!(
        again.unwrap().info().unwrap().start,
        4 * GIB,
        "non-exclusive create opens it"
    );
    let err = mount
        .create("bad", 4 * GIB + 4096, GIB, &CreateOptions::default())
        .unwrap_err();
    assert_eq!(err.errno(), Errno::EINVAL);
    let text = err.to_string();
    assert!(
        text.contains("MSHAREFS_SETUP") && text.contains("'bad'"),
        "{text}"
    );
    assert!(
        !m.path("bad").exists(),
        "a failed create leaves no region behind"
    );
    region.unmap(4 * GIB, GIB).unwrap();
    assert_eq!(
        region.unmap(4 * GIB, GIB).unwrap_err().errno(),
        Errno::EINVAL
    );
    mount.remove("r").unwrap();
    assert_eq!(mount.remove("r").unwrap_err().errno(), Errno::ENOENT);
    assert_eq!(
        mount.open("../etc", false).unwrap_err().errno(),
        Errno::EINVAL
    );
}

#[test]
fn backing_is_chosen_per_region_before_it_is_opened() {
    let m = Server::mount("align=2M");
    let _pool = HugePool::reserve(&m, 16);
    let mount = Mount::find(Some(&m.dir)).unwrap();
    let shmem = mount
        .create("s", 0, MIB2, &options(Some(Backing::Shmem)))
        .unwrap();
    assert_eq!(shmem.backing().unwrap(), Backing::Shmem);
    let free0 = meminfo("HugePages_Free");
    let huge = mount
        .create("h", 0, 4 * MIB2, &options(Some(Backing::Hugetlb)))
        .unwrap();
    assert_eq!(huge.backing().unwrap(), Backing::Hugetlb);
    assert_eq!(
        meminfo("HugePages_Free"),
        free0 - 4,
        "the whole-region object reserved 4 huge pages"
    );
    let map = huge.map().unwrap();
    map.write(MIB2 as usize, b"huge");
    let mut buf = [0u8; 4];
    map.read(MIB2 as usize, &mut buf);
    assert_eq!(&buf, b"huge");
    // The kernel path cannot mmap hugetlb (no passthrough) …
    let fd = open(&m.path("h"), libc::O_RDWR).unwrap();
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    assert_eq!(
        Map::new(&fd, 1 << 42, 4 * MIB2, rw, 0).err(),
        Some(Errno::ENODEV)
    );
    // … and the backing of a sized or open region cannot change.
    let set = |name: &str, v: &str| {
        let p = cpath(&m.path(name));
        let attr = c"user.mshare.backing";
        // SAFETY: valid C strings and a buffer of v.len() bytes.
        let r = unsafe { libc::setxattr(p.as_ptr(), attr.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
        if r == 0 {
            Ok(())
        } else {
            Err(Errno::last())
        }
    };
    assert_eq!(set("s", "thp"), Err(Errno::EBUSY));
    assert_eq!(set("s", "zram"), Err(Errno::EINVAL));
    drop((map, huge, fd));
    mount.remove("h").unwrap();
    wait_until("huge pages to return", || {
        meminfo("HugePages_Free") == free0
    });
}

#[test]
fn read_only_opens_get_read_only_descriptors() {
    let m = Server::mount("");
    let mount = Mount::find(Some(&m.dir)).unwrap();
    drop(
        mount
            .create("r", 4 * GIB, GIB, &CreateOptions::default())
            .unwrap(),
    );
    let ro = mount.open("r", true).unwrap();
    let fd = ro.backing_fd().unwrap();
    let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL).unwrap();
    assert_eq!(flags & libc::O_ACCMODE, libc::O_RDONLY);
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    assert_eq!(
        Map::new(&fd, 4 * GIB, GIB, rw, 0).err(),
        Some(Errno::EACCES),
        "cannot map writable"
    );
    assert!(Map::new(&fd, 4 * GIB, GIB, libc::PROT_READ, 0).is_ok());
    let map = ro.map().unwrap();
    assert!(!map.is_writable());
    let writable = mount.open("r", false).unwrap().backing_fd().unwrap();
    let flags = nix::fcntl::fcntl(&writable, nix::fcntl::FcntlArg::F_GETFL).unwrap();
    assert_eq!(flags & libc::O_ACCMODE, libc::O_RDWR);
    assert!(fd.as_raw_fd() >= 0);
}

/// Every kind maps through its memory file (the region file stays closed
/// in `Mount::attach`); a server without a state directory (here: no
/// CAP_SYS_ADMIN, so no instances, no passthrough) keeps none, and an
/// attach says so instead of mapping something incoherent.
#[test]
fn map_takes_the_memory_file_and_says_why_where_there_is_none() {
    let m = Server::mount("align=2M");
    let mount = Mount::at(&m.dir).unwrap();
    let region = mount.create("r", 0, MIB2, &options(None)).unwrap();
    region.map().unwrap().write(0, b"first"); // unmapped again
    let path = m.path("r");
    let code = in_child(|| {
        let other = Mount::at(path.parent().unwrap()).unwrap();
        let map = other.attach("r", false).unwrap();
        let mut buf = [0u8; 5];
        map.read(0, &mut buf);
        map.write(5, b"second");
        i32::from(&buf != b"first")
    });
    assert_eq!(code, 0);
    let map = region.map().unwrap();
    let mut buf = [0u8; 6];
    map.read(5, &mut buf);
    assert_eq!(&buf, b"second");
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|l| l.starts_with(&format!("{:x}-", map.as_ptr() as u64)))
        .unwrap();
    assert!(
        line.contains(&m.state_dir().join("thp").display().to_string()),
        "{line}"
    );
    // One server at a time (the harness serializes them).
    drop((map, region, mount, m));

    let m = Server::premounted_without_cap_sys_admin("align=2M");
    let mount = Mount::at(&m.dir).unwrap();
    let region = mount.create("r", 0, MIB2, &options(None)).unwrap();
    let err = region.map().unwrap_err();
    assert_eq!(err.errno(), nix::errno::Errno::ENODEV, "{err}");
    assert!(err.to_string().contains("keeps no memory files"), "{err}");
    let err = mount.attach("r", true).unwrap_err();
    assert_eq!(err.errno(), nix::errno::Errno::ENODEV, "{err}");
}
