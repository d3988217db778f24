//! Real shared memory: the cover letter's flow, coherence between
//! processes and with read/write, freeing, hugetlb and no-passthrough.

use std::os::unix::fs::FileExt;

use msharefs_tests::*;
use nix::errno::Errno;

use crate::common::*;

const TEXT: &[u8] = b"Some random shared text\0";

#[test]
fn donor_and_consumer_from_the_cover_letter_in_two_processes() {
    let m = Server::mount("");
    let path = m.path("shareme");
    let donor = in_child(|| {
        let align: u64 = read_text(&m.path("mshare_info")).trim().parse().unwrap();
        let fd = open(&path, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL).unwrap();
        let (start, size) = (align * 4, align * 2);
        ioctl::set_size(&fd, &MshareInfo { start, size }).unwrap();
        ioctl::create_mapping(&fd, &anon_create(start, size)).unwrap();
        let map = Map::new(&fd, start, size, libc::PROT_READ | libc::PROT_WRITE, 0).unwrap();
        map.write(0, TEXT);
        0
    });
    assert_eq!(donor, 0, "donor");
    let consumer = in_child(|| {
        let fd = open(&path, libc::O_RDWR).unwrap();
        let info = ioctl::get_size(&fd).unwrap();
        assert_ne!(info.start, 0, "mshare region not init'd");
        let map = Map::new(
            &fd,
            info.start,
            info.size,
            libc::PROT_READ | libc::PROT_WRITE,
            0,
        )
        .unwrap();
        assert_eq!(map.addr(), info.start);
        i32::from(map.read(0, TEXT.len()) != TEXT)
    });
    assert_eq!(consumer, 0, "the consumer read the donor's text");
}

#[test]
fn read_only_open_cannot_map_writable_but_can_map_readable() {
    let m = Server::mount("");
    drop(create_mapped_region(&m, "r", 4 * GIB, GIB));
    let ro = open(&m.path("r"), libc::O_RDONLY).unwrap();
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    assert_eq!(
        Map::new(&ro, 4 * GIB, GIB, rw, 0).err(),
        Some(Errno::EACCES)
    );
    assert!(Map::new(&ro, 4 * GIB, GIB, libc::PROT_READ, 0).is_ok());
}

#[test]
fn writes_are_coherent_between_processes_and_with_read_write() {
    let m = Server::mount("");
    let fd = create_mapped_region(&m, "r", 4 * GIB, GIB);
    let file = std::fs::File::from(fd.try_clone().unwrap());
    let (to_child, from_parent) = std::os::unix::net::UnixStream::pair().unwrap();
    let path = m.path("r");
    // The child maps the region and answers what it reads at the offsets
    // the parent names, after writing its own marker.
    let child = spawn_child(move || {
        use std::io::{Read, Write};
        let mut s = from_parent;
        let fd = open(&path, libc::O_RDWR).unwrap();
        let map = map_region(&fd);
        map.write(8192, b"from the child");
        s.write_all(b"w").unwrap();
        // Exactly two questions: the child holds a copy of the parent's end
        // too (fork), so it would never see end-of-file.
        let mut cmd = [0u8; 8];
        for _ in 0..2 {
            s.read_exact(&mut cmd).unwrap();
            let off = u64::from_ne_bytes(cmd) as usize;
            s.write_all(&map.read(off, 16)).unwrap();
        }
        0
    });
    use std::io::{Read, Write};
    let mut s = to_child;
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).unwrap();
    let mut ask = |off: u64| {
        s.write_all(&off.to_ne_bytes()).unwrap();
        let mut got = [0u8; 16];
        s.read_exact(&mut got).unwrap();
        got
    };
    // Parent's mapping -> child's mapping.
    let map = map_region(&fd);
    map.write(0, b"parent mapping..");
    assert_eq!(&ask(0), b"parent mapping..");
    // pwrite on the file -> child's mapping.
    file.write_all_at(b"pwrite to file..", 4096 * 3).unwrap();
    assert_eq!(&ask(4096 * 3), b"pwrite to file..");
    // Child's mapping -> parent's mapping and pread.
    assert_eq!(map.read(8192, 14), b"from the child");
    let mut buf = [0u8; 14];
    file.read_exact_at(&mut buf, 8192).unwrap();
    assert_eq!(&buf, b"from the child");
    // Past the end: reads are empty; a shmem/thp write cannot grow the region.
    assert_eq!(file.read_at(&mut buf, GIB).unwrap(), 0);
    drop(s);
    assert_eq!(wait_child(child), 0);
}

#[test]
fn unlink_while_mapped_keeps_data_until_the_last_mapping_goes() {
    let m = Server::mount("");
    let shmem0 = meminfo("Shmem");
    let fd = create_mapped_region(&m, "r", 4 * GIB, GIB);
    let map = map_region(&fd);
    for off in (0..256 << 20).step_by(4096) {
        map.set(off, 0x5a);
    }
    drop(fd);
    std::fs::remove_file(m.path("r")).unwrap();
    assert!(!m.path("r").exists(), "the name goes at once");
    assert_eq!(map.get(4096 * 1000), 0x5a, "data kept while mapped");
    assert!(
        meminfo("Shmem") >= shmem0 + 200 * 1024,
        "memory still held while mapped"
    );
    drop(map);
    wait_until("Shmem to return after the last munmap", || {
        meminfo("Shmem") < shmem0 + 16 * 1024
    });
}

#[test]
fn create_map_unlink_cycle_leaks_nothing() {
    let m = Server::mount("");
    let shmem0 = meminfo("Shmem");
    for i in 0..5 {
        let name = format!("r{i}");
        let fd = create_mapped_region(&m, &name, 4 * GIB, GIB);
        let map = map_region(&fd);
        for off in (0..64 << 20).step_by(4096) {
            map.set(off, 1);
        }
        drop(map);
        drop(fd);
        std::fs::remove_file(m.path(&name)).unwrap();
    }
    wait_until("Shmem to return", || meminfo("Shmem") < shmem0 + 16 * 1024);
}

#[test]
fn hugetlb_regions_reserve_up_front_refuse_mmap_and_free_everything() {
    // manual: a pool that is too small stays too small (auto would grow it).
    let m = Server::mount("backing=hugetlb,align=2M,hugetlb_pool=manual");
    let _pool = HugePool::reserve(&m, 64);
    let free0 = meminfo("HugePages_Free");
    assert!(free0 >= 64);
    let fd = create_region(&m, "h", 4 * GIB, 64 * MIB2);
    let huge = anon_create(4 * GIB, 32 * MIB2).flags | libc::MAP_HUGETLB as u32;
    ioctl::create_mapping(
        &fd,
        &MshareCreate {
            flags: huge,
            ..anon_create(4 * GIB, 32 * MIB2)
        },
    )
    .unwrap();
    assert_eq!(
        meminfo("HugePages_Free"),
        free0 - 32,
        "32 huge pages allocated by CREATE_MAPPING"
    );
    assert_eq!(
        ioctl::create_mapping(&fd, &anon_create(4 * GIB + 32 * MIB2, 4096)),
        Err(Errno::EINVAL),
        "hugetlb objects are whole huge pages"
    );
    // Ask for more than is left in the pool: ENOMEM now, not SIGBUS later.
    let too_many = (meminfo("HugePages_Free") + 1) * MIB2;
    let fd2 = create_region(&m, "h2", 8 * GIB, too_many);
    assert_eq!(
        ioctl::create_mapping(&fd2, &anon_create(8 * GIB, too_many)),
        Err(Errno::ENOMEM),
        "pool too small"
    );
    assert_eq!(
        meminfo("HugePages_Free"),
        free0 - 32,
        "a failed reservation keeps nothing"
    );
    // The file cannot be mmapped (no passthrough for hugetlb) ...
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    assert_eq!(
        Map::new(&fd, 4 * GIB, 64 * MIB2, rw, 0).err(),
        Some(Errno::ENODEV)
    );
    // ... but read and write work, through the server.
    let file = std::fs::File::from(fd.try_clone().unwrap());
    file.write_all_at(b"hugetlb via write", MIB2 + 100).unwrap();
    let mut buf = [0u8; 17];
    file.read_exact_at(&mut buf, MIB2 + 100).unwrap();
    assert_eq!(&buf, b"hugetlb via write");
    ioctl::unmap(
        &fd,
        &MshareUnmap {
            addr: 4 * GIB,
            size: 16 * MIB2,
        },
    )
    .unwrap();
    assert_eq!(
        meminfo("HugePages_Free"),
        free0 - 16,
        "UNMAP gives huge pages back"
    );
    drop((fd, fd2, file));
    std::fs::remove_file(m.path("h")).unwrap();
    std::fs::remove_file(m.path("h2")).unwrap();
    wait_until("HugePages_Free to return", || {
        meminfo("HugePages_Free") == free0
    });
}

#[test]
fn without_passthrough_mmap_is_enodev_and_io_goes_through_the_server() {
    let m = Server::mount("passthrough=off");
    let fd = create_mapped_region(&m, "r", 4 * GIB, GIB);
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    assert_eq!(
        Map::new(&fd, 4 * GIB, GIB, rw, 0).err(),
        Some(Errno::ENODEV)
    );
    let file = std::fs::File::from(fd);
    file.write_all_at(b"served", 4096).unwrap();
    let mut buf = [0u8; 6];
    file.read_exact_at(&mut buf, 4096).unwrap();
    assert_eq!(&buf, b"served");
    assert_eq!(
        file.write_at(b"x", GIB).map_err(errno_of),
        Err(libc::EFBIG),
        "a region cannot grow by write"
    );
    assert!(m.log_text().contains("passthrough=off"), "the log says so");
}
