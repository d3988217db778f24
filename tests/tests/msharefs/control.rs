//! The ioctl control plane and its errnos.

use std::os::fd::AsRawFd;

use msharefs_tests::*;
use nix::errno::Errno;

use crate::common::*;

const START: u64 = 4 * GIB;

#[test]
fn set_size_then_get_size_and_fstat_report_it() {
    let m = Server::mount("");
    let fd = open(&m.path("r"), libc::O_RDWR | libc::O_CREAT | libc::O_EXCL).unwrap();
    assert_eq!(
        ioctl::get_size(&fd),
        Err(Errno::EINVAL),
        "GET_SIZE before the size is set"
    );
    assert_eq!(nix::sys::stat::fstat(&fd).unwrap().st_size, 0);
    ioctl::set_size(
        &fd,
        &MshareInfo {
            start: START,
            size: 2 * GIB,
        },
    )
    .unwrap();
    assert_eq!(
        ioctl::get_size(&fd),
        Ok(MshareInfo {
            start: START,
            size: 2 * GIB
        })
    );
    assert_eq!(nix::sys::stat::fstat(&fd).unwrap().st_size, 2 * GIB as i64);
    assert_eq!(std::fs::metadata(m.path("r")).unwrap().len(), 2 * GIB);
}

#[test]
fn set_size_errnos() {
    let m = Server::mount("");
    let fd = open(&m.path("r"), libc::O_RDWR | libc::O_CREAT | libc::O_EXCL).unwrap();
    let set = |start, size| ioctl::set_size(&fd, &MshareInfo { start, size });
    assert_eq!(
        set(START + 4096, GIB),
        Err(Errno::EINVAL),
        "unaligned start"
    );
    assert_eq!(set(START, GIB + 4096), Err(Errno::EINVAL), "unaligned size");
    assert_eq!(set(START, 0), Err(Errno::EINVAL), "zero size");
    assert_eq!(set(0, GIB), Err(Errno::EINVAL), "zero start");
    assert_eq!(
        set(1 << 47, GIB),
        Err(Errno::EINVAL),
        "beyond the user address space"
    );
    assert_eq!(
        set(u64::MAX - GIB + 1, GIB),
        Err(Errno::EINVAL),
        "start + size overflows"
    );
    assert_eq!(set(START, GIB), Ok(()), "refusals left the region unsized");
    assert_eq!(set(START, GIB), Err(Errno::EINVAL), "size set twice");
    assert_eq!(
        ioctl::get_size(&fd),
        Ok(MshareInfo {
            start: START,
            size: GIB
        })
    );
}

#[test]
fn ftruncate_sizes_an_unsized_region_once_at_a_free_start() {
    let m = Server::mount("");
    let a = open(&m.path("a"), libc::O_RDWR | libc::O_CREAT | libc::O_EXCL).unwrap();
    let b = open(&m.path("b"), libc::O_RDWR | libc::O_CREAT | libc::O_EXCL).unwrap();
    assert_eq!(
        nix::unistd::ftruncate(&a, 4096),
        Err(Errno::EINVAL),
        "not a multiple of the alignment"
    );
    nix::unistd::ftruncate(&a, GIB as i64).unwrap();
    nix::unistd::ftruncate(&b, 2 * GIB as i64).unwrap();
    let ia = ioctl::get_size(&a).unwrap();
    let ib = ioctl::get_size(&b).unwrap();
    assert_eq!(ia.size, GIB);
    assert_eq!(ib.size, 2 * GIB);
    assert_eq!(ia.start % GIB, 0);
    assert_eq!(ib.start % GIB, 0);
    assert!(
        ia.start + ia.size <= ib.start || ib.start + ib.size <= ia.start,
        "{ia:?} overlaps {ib:?}"
    );
    assert_eq!(nix::sys::stat::fstat(&a).unwrap().st_size, GIB as i64);
    nix::unistd::ftruncate(&a, GIB as i64).expect("truncating to the same size is a no-op");
    assert_eq!(
        nix::unistd::ftruncate(&a, 2 * GIB as i64),
        Err(Errno::EINVAL),
        "size set twice"
    );
    assert_eq!(
        ioctl::set_size(
            &a,
            &MshareInfo {
                start: START,
                size: GIB
            }
        ),
        Err(Errno::EINVAL),
        "SET_SIZE after ftruncate"
    );
}

#[test]
fn create_mapping_errnos() {
    let m = Server::mount("");
    let fd = open(&m.path("r"), libc::O_RDWR | libc::O_CREAT | libc::O_EXCL).unwrap();
    let create = |c: MshareCreate| ioctl::create_mapping(&fd, &c);
    assert_eq!(
        create(anon_create(START, GIB)),
        Err(Errno::EINVAL),
        "region not sized"
    );
    ioctl::set_size(
        &fd,
        &MshareInfo {
            start: START,
            size: 2 * GIB,
        },
    )
    .unwrap();
    assert_eq!(
        create(anon_create(START - GIB, GIB)),
        Err(Errno::EINVAL),
        "below the region"
    );
    assert_eq!(
        create(anon_create(START + GIB, 2 * GIB)),
        Err(Errno::EINVAL),
        "past its end"
    );
    assert_eq!(
        create(anon_create(START + 1, 4096)),
        Err(Errno::EINVAL),
        "not page aligned"
    );
    let private = (libc::MAP_ANONYMOUS | libc::MAP_PRIVATE | libc::MAP_FIXED) as u32;
    assert_eq!(
        create(MshareCreate {
            flags: private,
            ..anon_create(START, GIB)
        }),
        Err(Errno::EINVAL),
        "MAP_PRIVATE"
    );
    let unfixed = (libc::MAP_ANONYMOUS | libc::MAP_SHARED) as u32;
    assert_eq!(
        create(MshareCreate {
            flags: unfixed,
            ..anon_create(START, GIB)
        }),
        Err(Errno::EINVAL),
        "no MAP_FIXED"
    );
    assert_eq!(
        create(MshareCreate {
            fd: 0,
            ..anon_create(START, GIB)
        }),
        Err(Errno::EINVAL),
        "file-backed"
    );
    let huge = anon_create(START, GIB).flags | libc::MAP_HUGETLB as u32;
    assert_eq!(
        create(MshareCreate {
            flags: huge,
            ..anon_create(START, GIB)
        }),
        Err(Errno::EINVAL),
        "MAP_HUGETLB in a thp region"
    );
    assert_eq!(create(anon_create(START, GIB)), Ok(()));
    assert_eq!(
        create(anon_create(START + GIB / 2, GIB)),
        Err(Errno::EINVAL),
        "overlap"
    );
    assert_eq!(
        create(anon_create(START + GIB, GIB)),
        Ok(()),
        "the adjacent range is free"
    );
    assert!(
        m.log_text().contains("overlaps an existing mapping"),
        "refusals are logged with the reason"
    );
}

#[test]
fn unmap_frees_memory_and_other_mappers_read_zeros() {
    let m = Server::mount("");
    let fd = create_mapped_region(&m, "r", START, GIB);
    let map = map_region(&fd);
    let shmem_before = meminfo("Shmem");
    for off in (0..256 << 20).step_by(4096) {
        map.set(off, 0xab);
    }
    let shmem_full = meminfo("Shmem");
    assert!(
        shmem_full >= shmem_before + 200 * 1024,
        "touching 256 MiB allocates it"
    );
    // A page in the middle of the object: valid, it splits the object.
    ioctl::unmap(
        &fd,
        &MshareUnmap {
            addr: START + GIB / 2,
            size: 4096,
        },
    )
    .unwrap();
    ioctl::unmap(
        &fd,
        &MshareUnmap {
            addr: START,
            size: 256 << 20,
        },
    )
    .unwrap();
    assert_eq!(map.get(0), 0, "other mappers see zeros after UNMAP");
    assert_eq!(map.get(4096 * 100), 0);
    let shmem_after = meminfo("Shmem");
    assert!(
        shmem_after + 200 * 1024 <= shmem_full,
        "memory freed: {shmem_full} kB -> {shmem_after} kB"
    );
    assert_eq!(
        ioctl::unmap(
            &fd,
            &MshareUnmap {
                addr: START,
                size: 4096
            }
        ),
        Err(Errno::EINVAL),
        "nothing mapped there any more"
    );
    assert_eq!(
        ioctl::unmap(
            &fd,
            &MshareUnmap {
                addr: START + GIB,
                size: 4096
            }
        ),
        Err(Errno::EINVAL),
        "outside"
    );
    assert_eq!(
        ioctl::unmap(
            &fd,
            &MshareUnmap {
                addr: START + GIB / 2,
                size: 4096
            }
        ),
        Err(Errno::EINVAL),
        "already gone"
    );
    assert_eq!(
        ioctl::unmap(
            &fd,
            &MshareUnmap {
                addr: START + GIB / 2 + 4097,
                size: 4096
            }
        ),
        Err(Errno::EINVAL),
        "misaligned"
    );
}

#[test]
fn unknown_ioctl_is_enotty_and_bad_pointer_is_efault() {
    let mut m = Server::mount("");
    let fd = create_region(&m, "r", START, GIB);
    // SAFETY: an unknown command with no argument.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), 0x7899 as _, 0) };
    assert_eq!((r, Errno::last()), (-1, Errno::ENOTTY), "unknown ioctl");
    let req = nix::request_code_read!(b'x', 9, 16);
    let mut buf = [0u8; 16];
    // SAFETY: `buf` has room for the 16 bytes the command encodes.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, buf.as_mut_ptr()) };
    assert_eq!(
        (r, Errno::last()),
        (-1, Errno::ENOTTY),
        "unknown number in our type"
    );
    // SAFETY: the kernel checks the pointer; it must fail, not write.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libmshare::abi::MSHAREFS_GET_SIZE as _,
            8usize as *mut u8,
        )
    };
    assert_eq!((r, Errno::last()), (-1, Errno::EFAULT), "bad pointer");
    // SAFETY: as above.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libmshare::abi::MSHAREFS_SET_SIZE as _,
            8usize as *const u8,
        )
    };
    assert_eq!((r, Errno::last()), (-1, Errno::EFAULT), "bad pointer in");
    let info = open(&m.path("mshare_info"), libc::O_RDONLY).unwrap();
    assert_eq!(
        ioctl::get_size(&info),
        Err(Errno::ENOTTY),
        "mshare_info is not a region"
    );
    assert!(
        m.server_alive() && is_mounted(&m.dir),
        "the server survives"
    );
}

#[test]
fn control_ioctls_need_a_writable_open() {
    let m = Server::mount("");
    drop(create_region(&m, "r", START, GIB));
    let ro = open(&m.path("r"), libc::O_RDONLY).unwrap();
    assert_eq!(
        ioctl::get_size(&ro),
        Ok(MshareInfo {
            start: START,
            size: GIB
        }),
        "reading is fine"
    );
    assert_eq!(
        ioctl::create_mapping(&ro, &anon_create(START, GIB)),
        Err(Errno::EBADF)
    );
    assert_eq!(
        ioctl::unmap(
            &ro,
            &MshareUnmap {
                addr: START,
                size: 4096
            }
        ),
        Err(Errno::EBADF)
    );
}

#[test]
fn fallocate_from_zero_sizes_an_unsized_region() {
    let m = Server::mount("align=2M");
    let fd = open(&m.path("r"), libc::O_RDWR | libc::O_CREAT | libc::O_EXCL).unwrap();
    let plain = nix::fcntl::FallocateFlags::empty();
    nix::fcntl::fallocate(&fd, plain, 0, 2 * MIB2 as i64).unwrap();
    let info = ioctl::get_size(&fd).unwrap();
    assert_eq!(info.size, 2 * MIB2);
    assert_eq!(info.start % MIB2, 0);
    assert_eq!(nix::sys::stat::fstat(&fd).unwrap().st_size, 2 * MIB2 as i64);
    nix::fcntl::fallocate(&fd, plain, MIB2 as i64, MIB2 as i64).expect("inside the region");
    assert_eq!(
        nix::fcntl::fallocate(&fd, plain, 0, 4 * MIB2 as i64),
        Err(Errno::EFBIG),
        "past the end"
    );
}

#[test]
fn setup_sizes_and_maps_a_region_in_one_call() {
    use mshare_uapi::{MshareSetup, MSHARE_SETUP_OBJECT};
    let m = Server::mount("align=2M");
    let setup = |fd: &std::os::fd::OwnedFd, start, size, flags| {
        ioctl::setup(fd, &MshareSetup { start, size, flags })
    };
    // Start 0: the server chooses, and says where.
    let a = open(&m.path("a"), libc::O_RDWR | libc::O_CREAT | libc::O_EXCL).unwrap();
    let got = setup(&a, 0, 4 * MIB2, MSHARE_SETUP_OBJECT).unwrap();
    assert_eq!(got.size, 4 * MIB2);
    assert_eq!(got.flags, MSHARE_SETUP_OBJECT);
    assert_ne!(got.start, 0);
    assert_eq!(
        ioctl::get_size(&a),
        Ok(MshareInfo {
            start: got.start,
            size: 4 * MIB2
        })
    );
    assert_eq!(
        nix::sys::stat::fstat(&a).unwrap().st_size,
        4 * MIB2 as i64,
        "stat sees the size at once"
    );
    // The object covers the whole region: another one anywhere overlaps.
    assert_eq!(
        ioctl::create_mapping(&a, &anon_create(got.start + MIB2, MIB2)),
        Err(Errno::EINVAL)
    );
    let map = map_region(&a);
    map.set(0, 7);
    assert_eq!(
        setup(&a, 0, 4 * MIB2, 0),
        Err(Errno::EINVAL),
        "size set twice"
    );
    // A chosen start, without the object.
    let b = open(&m.path("b"), libc::O_RDWR | libc::O_CREAT | libc::O_EXCL).unwrap();
    let got = setup(&b, START, 2 * MIB2, 0).unwrap();
    assert_eq!((got.start, got.size), (START, 2 * MIB2));
    ioctl::create_mapping(&b, &anon_create(START, MIB2)).expect("no object yet");
    // Errnos.
    let c = open(&m.path("c"), libc::O_RDWR | libc::O_CREAT | libc::O_EXCL).unwrap();
    assert_eq!(
        setup(&c, START + 4096, MIB2, 0),
        Err(Errno::EINVAL),
        "unaligned"
    );
    assert_eq!(setup(&c, 0, MIB2, 4), Err(Errno::EINVAL), "unknown flag");
    assert_eq!(setup(&c, 0, 0, 0), Err(Errno::EINVAL), "zero size");
    let ro = open(&m.path("c"), libc::O_RDONLY).unwrap();
    assert_eq!(setup(&ro, 0, MIB2, 0), Err(Errno::EBADF), "read-only open");
    assert!(
        setup(&c, 0, MIB2, MSHARE_SETUP_OBJECT).is_ok(),
        "c is still fresh"
    );
}

#[test]
fn the_root_names_the_backing_of_regions_that_name_none() {
    let m = Server::mount("align=2M,backing=shmem");
    let mut buf = [0u8; 16];
    let n = rustix::fs::getxattr(&m.dir, mshare_uapi::BACKING_XATTR, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"shmem");
    let mount = libmshare::Mount::at(&m.dir).unwrap();
    assert_eq!(mount.default_backing(), Some(libmshare::Backing::Shmem));
    // Created by the one-call path (the default) and by mknod (another kind).
    let opts = |backing| libmshare::CreateOptions {
        backing,
        ..Default::default()
    };
    let d = mount
        .create("d", 0, MIB2, &opts(Some(libmshare::Backing::Shmem)))
        .unwrap();
    assert_eq!(d.backing().unwrap(), libmshare::Backing::Shmem);
    let t = mount
        .create("t", 0, MIB2, &opts(Some(libmshare::Backing::Thp)))
        .unwrap();
    assert_eq!(t.backing().unwrap(), libmshare::Backing::Thp);
    assert_ne!(d.info().unwrap().start, t.info().unwrap().start);
}
