//! Regions outlive the server: a server killed with SIGKILL (a crash, the
//! OOM killer) or stopped with SIGTERM (an upgrade) is replaced by a new one
//! on the same mount point, which adopts every region; a clean umount frees
//! them; `-o fresh` starts empty.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use libmshare::{Backing, CreateOptions, Mount};
use nix::unistd::Pid;

use msharefs_tests::*;

const SMALL: u64 = MIB2;
const BIG: u64 = 16 * MIB2;
const REGIONS: u64 = 1000;
const MAPPERS: usize = 100;
/// Where the big region lies; the small ones follow it.
const BASE: u64 = 1 << 41;
/// Offsets in the big region of the mappers' mailboxes.
const PING: usize = 4096;
const PONG: usize = 8192;

/// A checksum of a whole region, read from the descriptor of its memory
/// that libmshare gets (this process maps some regions already).
fn checksum(mount: &Mount, name: &str) -> u64 {
    use std::os::unix::fs::FileExt;
    let region = mount.open(name, true).unwrap();
    let size = region.info().unwrap().size;
    let memory = std::fs::File::from(region.backing_fd().unwrap());
    let mut buf = vec![0u8; size as usize];
    memory.read_exact_at(&mut buf, 0).unwrap();
    buf.chunks_exact(8).fold(0xcbf2_9ce4_8422_2325, |h, w| {
        (h ^ u64::from_le_bytes(w.try_into().unwrap())).wrapping_mul(0x100_0000_01b3)
    })
}

/// What must survive of one region: mode, owner, start, size, backing and
/// content.
#[derive(Debug, PartialEq, Eq)]
struct Kept {
    mode: u32,
    uid: u32,
    start: u64,
    size: u64,
    backing: Backing,
    sum: u64,
}

fn survey(m: &Server, mount: &Mount, names: &[String]) -> BTreeMap<String, Kept> {
    names
        .iter()
        .map(|n| {
            let meta = std::fs::metadata(m.path(n)).unwrap();
            let r = mount.open(n, true).unwrap();
            let info = r.info().unwrap();
            let kept = Kept {
                mode: meta.mode(),
                uid: meta.uid(),
                start: info.start,
                size: info.size,
                backing: r.backing().unwrap(),
                sum: checksum(mount, n),
            };
            (n.clone(), kept)
        })
        .collect()
}

/// A process that maps the big region before the crash and answers pings
/// through that old mapping afterwards: exit 0 if every answer was seen.
/// It sleeps in a read of `wake` until the test writes a byte there, then
/// looks for its ping in the memory. (Polling the memory every millisecond,
/// 100 mappers woke 100 000 times a second, which on 2 busy vCPUs starved
/// the kernel's RCU grace-period thread for seconds: the restarted server's
/// unmount of the dead mount waits for a grace period.)
fn old_mapper(dir: &Path, i: usize, through_file: bool, wake: RawFd) -> Pid {
    let dir = dir.to_path_buf();
    spawn_child(move || {
        let mount = Mount::at(&dir).unwrap();
        let region = mount.open("big", false).unwrap();
        // Either mapping stays alive until the child exits.
        let (_through_file, _through_lib, base) = if through_file {
            let fd = open(&dir.join("big"), libc::O_RDWR).unwrap();
            let map = Map::new(&fd, 0, BIG, libc::PROT_READ | libc::PROT_WRITE, 0).unwrap();
            let base = map.addr() as *mut u8;
            (Some(map), None, base)
        } else {
            let map = region.map().unwrap();
            let base = map.as_ptr();
            (None, Some(map), base)
        };
        // SAFETY: aligned u64s inside the live mapping, which other
        // processes write too (hence volatile).
        let get = |o: usize| unsafe { base.add(o).cast::<u64>().read_volatile() };
        // SAFETY: as above.
        let set = |o: usize, v: u64| unsafe { base.add(o).cast::<u64>().write_volatile(v) };
        set(PONG + 8 * i, 1); // mapped, before the crash
                              // Waits for the ping as long as the test takes (minutes over the
                              // survey on a loaded machine); a test that fails before it pings
                              // kills the mappers ([`Mappers`]). A wake-up without a ping in the
                              // memory (an incoherent mapping) waits again, and the test fails.
                              // SAFETY: `wake` is the read end of the test's pipe, inherited
                              // across the fork and open for the child's whole life.
        let wake = unsafe { std::os::fd::BorrowedFd::borrow_raw(wake) };
        loop {
            let mut byte = [0u8; 1];
            if nix::unistd::read(wake, &mut byte) != Ok(1) {
                return 3;
            }
            let ping = get(PING + 8 * i);
            if ping != 0 {
                set(PONG + 8 * i, ping * 2);
                return 0;
            }
        }
    })
}

/// The mapper processes: those still running when it is dropped (the test
/// failed before it pinged them) are killed and reaped.
struct Mappers(Vec<Pid>);

impl Drop for Mappers {
    fn drop(&mut self) {
        for pid in self.0.drain(..) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            wait_child(pid);
        }
    }
}

fn all_pongs(map: &libmshare::Mapping, want: impl Fn(usize) -> u64) -> bool {
    (0..MAPPERS).all(|i| {
        // SAFETY: an aligned u64 inside the mapping, written by others.
        let v = unsafe { map.as_ptr().add(PONG + 8 * i).cast::<u64>().read_volatile() };
        v == want(i)
    })
}

fn kill9_loses_nothing(kind: Backing) {
    let mut m = Server::mount("align=2M");
    let pages = (REGIONS - 1) + BIG / MIB2 + 8;
    let _pool = (kind == Backing::Hugetlb).then(|| HugePool::reserve(&m, pages));
    let mount = Mount::at(&m.dir).unwrap();
    let opts = |mode| CreateOptions {
        backing: Some(kind),
        mode,
        ..Default::default()
    };

    // 1000 regions in ten directories, with their own modes and owners.
    let big = mount.create("big", BASE, BIG, &opts(0o600)).unwrap();
    let mut names = vec!["big".to_string()];
    for d in 0..10 {
        std::fs::create_dir(m.path(&format!("d{d}"))).unwrap();
    }
    for i in 0..REGIONS - 1 {
        let name = format!("d{}/r{i}", i % 10);
        let start = BASE + BIG + i * SMALL;
        let r = mount.create(&name, start, SMALL, &opts(0o640)).unwrap();
        let map = r.map().unwrap();
        map.write(0, format!("region {i} of kind {kind}").as_bytes());
        map.write(SMALL as usize - 8, &i.to_le_bytes());
        if i % 7 == 0 {
            std::os::unix::fs::chown(m.path(&name), Some(1000), Some(1000)).unwrap();
        }
        names.push(name);
    }
    big.map()
        .unwrap()
        .write(BIG as usize / 2, b"the middle of the big region");

    // The mappers are forked while this process maps nothing at the big
    // region's address; it watches them through a descriptor.
    let (wake_r, wake_w) = nix::unistd::pipe().unwrap();
    let mut mappers = Mappers(
        (0..MAPPERS)
            .map(|i| {
                let through_file = kind != Backing::Hugetlb && i % 2 == 0;
                old_mapper(&m.dir, i, through_file, wake_r.as_raw_fd())
            })
            .collect(),
    );
    drop(wake_r);
    let memory = std::fs::File::from(big.backing_fd().unwrap());
    wait_until("every mapper mapped", || {
        use std::os::unix::fs::FileExt;
        let mut pongs = vec![0u8; 8 * MAPPERS];
        memory.read_exact_at(&mut pongs, PONG as u64).unwrap();
        pongs.chunks(8).all(|c| c == 1u64.to_le_bytes())
    });
    drop((memory, big));
    let before = survey(&m, &mount, &names);

    m.kill9();
    assert!(
        std::fs::metadata(m.path("mshare_info")).is_err(),
        "the killed server's mount is dead"
    );
    let serving = m.restart();
    let attach = Instant::now();
    let new_map = mount.open("big", false).unwrap().map().unwrap();
    let first_attach = serving + attach.elapsed();

    let after = survey(&m, &mount, &names);
    let lost = before.keys().filter(|k| !after.contains_key(*k)).count();
    let changed = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .count();
    assert_eq!((lost, changed), (0, 0), "regions lost, regions changed");
    assert_eq!(
        before, after,
        "names, modes, owners, layouts, backings and checksums"
    );

    // Every old mapping sees what the new one writes, and answers.
    for i in 0..MAPPERS {
        new_map.write(PING + 8 * i, &(1000 + i as u64).to_le_bytes());
    }
    // One wake-up each: a mapping that does not see the ping fails here,
    // and the guard ends the mappers.
    nix::unistd::write(&wake_w, &[1u8; MAPPERS]).unwrap();
    wait_until(
        "every old mapping's answer seen through the new mapping",
        || all_pongs(&new_map, |i| 2 * (1000 + i as u64)),
    );
    let failed: Vec<_> = mappers
        .0
        .drain(..)
        .map(wait_child)
        .filter(|&c| c != 0)
        .collect();
    assert!(failed.is_empty(), "old mappers that failed: {failed:?}");
    // So that children forked now can map it at its start.
    drop(new_map);
    // New processes attach through the new server and see the same pages.
    let dir = m.dir.clone();
    let fresh_ok = (0..10)
        .map(|_| {
            let dir = dir.clone();
            spawn_child(move || {
                let map = Mount::at(&dir)
                    .unwrap()
                    .open("big", true)
                    .unwrap()
                    .map()
                    .unwrap();
                let mut b = [0u8; 28];
                map.read(BIG as usize / 2, &mut b);
                i32::from(
                    &b != b"the middle of the big region"
                        || !all_pongs(&map, |i| 2 * (1000 + i as u64)),
                )
            })
        })
        .map(wait_child)
        .all(|c| c == 0);
    assert!(
        fresh_ok,
        "processes attaching after the restart see the same data"
    );

    let listed = Command::new(bin_dir().join("msharectl"))
        .args(["-d", m.dir.to_str().unwrap(), "list"])
        .output()
        .unwrap();
    let rows = String::from_utf8_lossy(&listed.stdout).lines().count() - 1;
    assert_eq!(rows as u64, REGIONS, "msharectl list after the restart");
    println!(
        "figure: {kind}: kill -9 with {MAPPERS} mappers and {REGIONS} regions: 0 lost, 0 changed; \
         new server serving after {:.1} ms, first attach done {:.1} ms after its start",
        serving.as_secs_f64() * 1e3,
        first_attach.as_secs_f64() * 1e3
    );
}

#[test]
fn kill9_loses_no_thp_region() {
    kill9_loses_nothing(Backing::Thp);
}

#[test]
fn kill9_loses_no_shmem_region() {
    kill9_loses_nothing(Backing::Shmem);
}

#[test]
fn kill9_loses_no_hugetlb_region() {
    kill9_loses_nothing(Backing::Hugetlb);
}

fn shmem_kb() -> u64 {
    meminfo("Shmem")
}

/// Creates shmem region `name` of `size` bytes, writes `mark` at offset
/// 12345 and touches every page, so that all of it is allocated.
fn touched_shmem_region(mount: &Mount, name: &str, size: u64, mark: &[u8]) {
    let opts = CreateOptions {
        backing: Some(Backing::Shmem),
        ..Default::default()
    };
    let map = mount.create(name, 0, size, &opts).unwrap().map().unwrap();
    for off in (0..map.len()).step_by(4096) {
        map.write(off + 8, b"x");
    }
    map.write(12345, mark);
}

#[test]
fn sigterm_keeps_the_regions_and_umount_frees_them() {
    let mut m = Server::mount("align=2M");
    let mount = Mount::at(&m.dir).unwrap();
    let start_kb = shmem_kb();
    touched_shmem_region(&mount, "sga", 256 * MIB2, b"kept");
    let held_kb = shmem_kb();
    assert!(held_kb >= start_kb + 500_000, "512 MiB allocated");

    assert!(m.stop().success(), "SIGTERM ends the server with status 0");
    assert!(!is_mounted(&m.dir), "SIGTERM unmounts");
    assert!(
        shmem_kb() + 10_000 > held_kb,
        "the memory stays for the next server, with no server and no client"
    );
    assert!(m.state_dir().join("state").exists());

    m.restart();
    assert!(
        m.log_text().contains("adopted 1 regions"),
        "{}",
        m.log_text()
    );
    let mut b = [0u8; 4];
    mount
        .open("sga", true)
        .unwrap()
        .map()
        .unwrap()
        .read(12345, &mut b);
    assert_eq!(&b, b"kept");

    // A clean umount frees everything.
    nix::mount::umount(&m.dir).unwrap();
    wait_until("the server exits after umount", || !m.server_alive());
    wait_until("the memory is freed", || shmem_kb() < start_kb + 20_000);
    assert!(
        !m.state_dir().exists(),
        "umount removes the state directory"
    );
}

#[test]
fn after_kill9_the_memory_waits_for_the_next_server_or_fresh() {
    let mut m = Server::mount("align=2M");
    let mount = Mount::at(&m.dir).unwrap();
    let start_kb = shmem_kb();
    touched_shmem_region(&mount, "orphan", 128 * MIB2, b"orphan");
    let held_kb = shmem_kb();
    m.kill9();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        shmem_kb() + 10_000 > held_kb,
        "after kill -9 the memory is kept (no client left) for the next server"
    );
    // A new server with -o fresh frees it and starts empty.
    m.set_extra_options("fresh");
    m.restart();
    wait_until("fresh frees the kept memory", || {
        shmem_kb() < start_kb + 20_000
    });
    let mut names: Vec<_> = std::fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["anon", "mshare_info", "shm"], "fresh starts empty");
}

#[test]
fn removed_regions_do_not_come_back_and_renames_stick() {
    let mut m = Server::mount("align=2M");
    let mount = Mount::at(&m.dir).unwrap();
    let opts = CreateOptions::default();
    for n in ["a", "b", "c"] {
        mount.create(n, 0, MIB2, &opts).unwrap();
    }
    std::fs::create_dir(m.path("dir")).unwrap();
    std::fs::rename(m.path("a"), m.path("dir/a2")).unwrap();
    std::fs::rename(m.path("b"), m.path("c")).unwrap(); // replaces c
                                                        // A region unlinked while open goes too; its pages stay for its mapper.
    let open = mount.create("gone-but-mapped", 0, MIB2, &opts).unwrap();
    let map = open.map().unwrap();
    map.write(0, b"mine");
    mount.remove("gone-but-mapped").unwrap();
    m.kill9();
    m.restart();
    let mut names: Vec<_> = walk(&m.dir);
    names.sort();
    assert_eq!(names, ["anon", "c", "dir", "dir/a2", "mshare_info", "shm"]);
    let mut b = [0u8; 4];
    map.read(0, &mut b);
    assert_eq!(&b, b"mine", "a mapping of a removed region keeps its pages");
    let files = std::fs::read_dir(m.state_dir().join("thp"))
        .unwrap()
        .count();
    assert_eq!(files, 2, "the memory of removed regions is not kept");
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()).into_iter().map(|n| format!("{name}/{n}")));
        }
        out.push(name);
    }
    out
}

/// Requests in flight when the server dies, and requests that reach its
/// io_uring queues while the kernel tears them down, end with an error and
/// never hang; the next server takes the dead mount over every time.
#[test]
fn a_server_killed_under_requests_is_replaced_every_time() {
    use rustix::fs::{statx, AtFlags, StatxFlags, CWD};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mut m = Server::mount("align=2M");
    let stop = Arc::new(AtomicBool::new(false));
    let hammers: Vec<_> = [m.dir.clone(), m.path("mshare_info")]
        .into_iter()
        .map(|path| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let ask = || statx(CWD, &path, AtFlags::STATX_FORCE_SYNC, StatxFlags::TYPE);
                let mut seen = BTreeMap::new();
                while !stop.load(Ordering::Relaxed) {
                    *seen
                        .entry(ask().err().map(|e| e.raw_os_error()))
                        .or_insert(0u32) += 1;
                }
                (seen, ask().err())
            })
        })
        .collect();
    for _ in 0..25 {
        m.kill9();
        m.restart();
    }
    stop.store(true, Ordering::Relaxed);
    for h in hammers {
        let (seen, last) = h.join().unwrap();
        println!("figure: statx answers (errno: count) across 25 kills and restarts: {seen:?}");
        assert!(
            seen.keys().any(Option::is_some),
            "no request met a dead server"
        );
        assert_eq!(last, None, "the last server serves: {seen:?}");
    }
    // mshare_info, anon/ and shm/.
    assert_eq!(std::fs::read_dir(&m.dir).unwrap().count(), 3);
}

#[test]
fn a_second_server_on_the_same_mount_point_is_refused() {
    let m = Server::mount("align=2M");
    let out = Command::new(msharefs_bin())
        .args(["-f", "-o", "align=2M"])
        .arg("-o")
        .arg(format!("state_dir={}", m.state_dir().display()))
        .arg(&m.dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("held by msharefs pid {}", m.pid())),
        "{err}"
    );
}

#[test]
fn state_the_server_cannot_adopt_is_refused_with_the_way_out() {
    let mut m = Server::mount("align=2M");
    Mount::at(&m.dir)
        .unwrap()
        .create("r", 0, MIB2, &CreateOptions::default())
        .unwrap();
    m.kill9();
    let run = |opts: &str| {
        let out = Command::new(msharefs_bin())
            .args(["-f", "-o", opts])
            .arg("-o")
            .arg(format!("state_dir={}", m.state_dir().display()))
            .arg(&m.dir)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run("align=4M");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("made with align=2097152") && err.contains("-o fresh"),
        "{err}"
    );
    // A state file of a later format.
    let state = m.state_dir().join("state");
    let text = std::fs::read_to_string(&state).unwrap();
    std::fs::write(
        &state,
        text.replacen("msharefs-state 1", "msharefs-state 9", 1),
    )
    .unwrap();
    let (code, err) = run("align=2M");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("format 9 by a later msharefs"), "{err}");
    std::fs::write(&state, text).unwrap();
    m.restart();
    assert!(m.path("r").exists(), "the state is adopted once readable");
}

#[test]
fn a_full_state_disk_refuses_creates_and_loses_nothing() {
    let tiny = tempfile::tempdir().unwrap();
    nix::mount::mount(
        Some("msharefs-test-tiny"),
        tiny.path(),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=64k,mode=0700"),
    )
    .unwrap();
    let _tiny = UnmountOnDrop(tiny.path().to_path_buf());
    let state = tiny.path().join("state");
    let mut m = Server::mount(&format!("align=2M,state_dir={}", state.display()));
    let mount = Mount::at(&m.dir).unwrap();
    let opts = CreateOptions::default();
    mount.create("before", 0, MIB2, &opts).unwrap();

    // Fill the disk that holds the state file.
    let filler = tiny.path().join("filler");
    let chunk = vec![b'f'; 4096];
    let mut f = std::fs::File::create(&filler).unwrap();
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    let refused: Vec<String> = (0..50)
        .map(|i| format!("while-full-{i}"))
        .filter(|name| match mount.create(name, 0, MIB2, &opts) {
            Err(e) => {
                assert_eq!(e.errno(), nix::errno::Errno::ENOSPC, "{e}");
                true
            }
            Ok(_) => false,
        })
        .collect();
    // The first few may fit in the state file's last page.
    assert!(
        refused.len() >= 25,
        "creates that cannot be recorded are refused: {refused:?}"
    );
    for name in &refused {
        assert!(!m.path(name).exists(), "a refused create leaves no region");
    }
    // A change made while full is kept in memory and written later.
    std::fs::set_permissions(
        m.path("before"),
        std::os::unix::fs::PermissionsExt::from_mode(0o604),
    )
    .unwrap();
    assert!(m.log_text().contains("cannot write the state file"));
    std::fs::remove_file(&filler).unwrap();
    mount.create("after", 0, MIB2, &opts).unwrap();
    m.kill9();
    m.restart();
    assert!(m.path("before").exists() && m.path("after").exists());
    let made = 50 - refused.len();
    let kept = (0..50)
        .filter(|i| m.path(&format!("while-full-{i}")).exists())
        .count();
    assert_eq!(kept, made, "the creates that succeeded while full are kept");
    let mode = std::fs::metadata(m.path("before")).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o604, "the change made while the disk was full");
    drop(m);
}

#[test]
fn the_server_tells_systemd_when_it_is_ready() {
    let tmp = tempfile::tempdir().unwrap();
    let sock_path = tmp.path().join("notify");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut m = Server::mount_with_env("align=2M", &[("NOTIFY_SOCKET", sock_path.as_os_str())]);
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("a notification");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.contains("READY=1"), "{msg}");
    assert!(msg.contains(&format!("MAINPID={}", m.pid())), "{msg}");
    assert!(
        std::fs::metadata(m.path("mshare_info")).is_ok(),
        "ready means the mount serves"
    );
    m.stop();
    let n = sock.recv(&mut buf).expect("a notification on stop");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
}

/// The kept memory is reachable by others only by the name the region's
/// attribute gives, and only as the region's mode allows; the state file
/// not at all (`revocation.rs` has the rest).
#[test]
fn the_kept_memory_is_reachable_only_as_the_region_mode_allows() {
    let m = Server::mount("align=2M");
    let mount = Mount::at(&m.dir).unwrap();
    for (name, mode) in [("open-to-all", 0o666), ("private", 0o600)] {
        let opts = CreateOptions {
            mode,
            ..Default::default()
        };
        mount.create(name, 0, MIB2, &opts).unwrap();
        // Past the umask.
        std::fs::set_permissions(
            m.path(name),
            std::os::unix::fs::PermissionsExt::from_mode(mode),
        )
        .unwrap();
    }
    let kept: Vec<_> = std::fs::read_dir(m.state_dir().join("thp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 2, "the regions' memory is kept by path");
    let file = |name: &str| {
        crate::common::attach_value(&m.path(name))
            .unwrap()
            .path
            .unwrap()
    };
    let (open_to_all, private) = (file("open-to-all"), file("private"));
    let (state, thp) = (m.state_dir().join("state"), m.state_dir().join("thp"));
    let code = crate::common::as_user(1000, || {
        let denied = |p: &Path| open(p, libc::O_RDONLY).err() == Some(nix::errno::Errno::EACCES);
        crate::common::failures(&[
            open(&open_to_all, libc::O_RDWR).is_ok(),
            denied(&private),
            denied(&state),
            std::fs::read_dir(&thp).is_err(),
        ])
    });
    assert_eq!(code, 0, "failed checks (bits): {code:#b}");
}
