//! Many processes attaching one region, and what it costs in page tables.
//!
//! Page-table figures are printed, not timed: a growth is measured as the
//! change of /proc/meminfo `PageTables` while N processes hold their
//! mappings, minus the same for N processes of the same kind that do not
//! map, divided by N.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use msharefs_tests::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::common::*;
use crate::programs::LibExamples;

const PROCS: usize = 1000;
const PAGE: usize = 4096;

fn stamp(page: usize) -> u64 {
    (page as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x6d73_6861_7265
}

/// Forks `n` children running `work` (0 = success), waits until all have
/// reported, and returns the PageTables growth (kB) and the reports. Each
/// child keeps what `work` returned (its mapping) until measured.
fn forked<T>(n: usize, work: impl Fn() -> (u8, T)) -> (u64, Vec<u8>) {
    let (growth, reports, _) = forked_then(n, |_| work(), |_| 0);
    (growth, reports)
}

/// [`forked`], where child `i` runs `work(i)`, and once all have reported,
/// each that succeeded runs `then` on what its `work` returned. Also
/// returns the children's exit codes: the `work` code, else `then`'s.
fn forked_then<T>(
    n: usize,
    work: impl Fn(usize) -> (u8, T),
    then: impl Fn(&T) -> i32,
) -> (u64, Vec<u8>, Vec<i32>) {
    let (ready_rx, ready_tx) = UnixStream::pair().unwrap();
    let (go_rx, go_tx) = UnixStream::pair().unwrap();
    let before = settled_page_tables();
    let kids: Vec<Pid> = (0..n)
        .map(|i| {
            spawn_child(|| {
                let (code, held) = work(i);
                // Each child also holds copies of the parent's socket ends,
                // so it waits for a byte, not for end-of-file.
                let _ = (&ready_tx).write_all(&[code]);
                let mut b = [0u8; 1];
                let _ = (&go_rx).read_exact(&mut b);
                if code != 0 {
                    i32::from(code)
                } else {
                    then(&held)
                }
            })
        })
        .collect();
    drop(ready_tx);
    drop(go_rx);
    ready_rx
        .set_read_timeout(Some(Duration::from_secs(600)))
        .unwrap();
    let mut reports = vec![0u8; n];
    (&ready_rx)
        .read_exact(&mut reports)
        .expect("every child reports within 10 minutes");
    let growth = meminfo("PageTables").saturating_sub(before);
    (&go_tx).write_all(&vec![1u8; n]).unwrap();
    let codes = kids.into_iter().map(wait_child).collect();
    (growth, reports, codes)
}

/// Starts `n` commands whose first stdout line says how they did, waits
/// for all lines, measures the PageTables growth (kB), then stops them.
fn commands(n: usize, mut make: impl FnMut() -> Command) -> (u64, Vec<String>) {
    let (rx, tx) = nix::unistd::pipe().unwrap();
    let before = settled_page_tables();
    let mut kids: Vec<Child> = Vec::with_capacity(n);
    for _ in 0..n {
        let out = Stdio::from(tx.try_clone().unwrap());
        kids.push(
            make()
                .stdin(Stdio::null())
                .stdout(out)
                .spawn()
                .expect("spawn"),
        );
    }
    drop(tx);
    let mut lines = Vec::with_capacity(n);
    let mut reader = BufReader::new(std::fs::File::from(rx));
    while lines.len() < n {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        lines.push(line.trim_end().to_string());
    }
    let growth = meminfo("PageTables").saturating_sub(before);
    for k in &kids {
        let _ = kill(Pid::from_raw(k.id() as i32), Signal::SIGTERM);
    }
    for mut k in kids {
        let _ = k.wait();
    }
    (growth, lines)
}

/// PageTables once it has stopped shrinking: exited processes' page tables
/// are freed after an RCU grace period, which would otherwise count
/// against the next measurement.
fn settled_page_tables() -> u64 {
    let mut last = meminfo("PageTables");
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        let now = meminfo("PageTables");
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

fn per_process(growth: u64, baseline: u64, n: usize) -> f64 {
    (growth as f64 - baseline as f64) / n as f64
}

/// open + GET_SIZE + mmap + read every 4 KiB, in 1000 processes at once;
/// all must see the data the creator wrote.
#[test]
fn thousand_processes_attach_one_region_and_see_the_same_data() {
    let m = Server::mount("");
    let fd = create_mapped_region(&m, "sga", 4 * GIB, GIB);
    let map = map_region(&fd);
    let pages = map.len() / PAGE;
    for p in 0..pages {
        map.set_u64(p * PAGE, stamp(p));
    }
    drop(map);
    drop(fd);
    let path = m.path("sga");
    let attach = || {
        let Ok(fd) = open(&path, libc::O_RDONLY) else {
            return (2, None);
        };
        let Ok(info) = ioctl::get_size(&fd) else {
            return (3, None);
        };
        let Ok(map) = Map::new(&fd, info.start, info.size, libc::PROT_READ, 0) else {
            return (4, None);
        };
        if map.addr() != info.start {
            return (5, None);
        }
        let bad = (0..map.len() / PAGE).any(|p| map.get_u64(p * PAGE) != stamp(p));
        (u8::from(bad), Some(map))
    };
    let (idle, _) = forked(PROCS, || (0, ()));
    let (growth, reports) = forked(PROCS, attach);
    let failed: Vec<_> = reports.iter().filter(|&&c| c != 0).collect();
    assert!(
        failed.is_empty(),
        "{} of {PROCS} children failed, codes {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );
    println!(
        "figure: {PROCS} processes attached a 1 GiB thp region through the FUSE file: \
         page tables +{:.1} kB per process",
        per_process(growth, idle, PROCS)
    );
}

/// The "done": a C program built with `pkg-config --libs mshare`
/// creates a 1 GiB hugetlb region, 1000 C processes attach it through the
/// library, and their page-table growth stays within a few KiB of mapping
/// the same kind of hugetlb memfd directly (and far below 4 KiB pages).
#[test]
fn thousand_processes_share_hugetlb_page_tables_through_libmshare() {
    let m = Server::mount("");
    let _pool = HugePool::reserve(&m, 520);
    let free0 = meminfo("HugePages_Free");
    let lib = LibExamples::build();
    let donor = lib.run(&m, "lib_donor", &[]);
    assert!(donor.starts_with("created sga: 1024 MiB"), "{donor}");

    let consumer = |args: &'static [&'static str]| {
        let lib = &lib;
        let m = &m;
        move || {
            let mut c = lib.command(m, "lib_consumer");
            c.args(args);
            c
        }
    };
    let (idle_c, lines) = commands(PROCS, consumer(&["--hold", "--no-map"]));
    assert!(
        lines.iter().all(|l| l == "ok"),
        "{:?}",
        &lines[..3.min(lines.len())]
    );
    let (lib_g, lines) = commands(PROCS, consumer(&["--hold"]));
    let bad: Vec<_> = lines.iter().filter(|l| *l != "ok").collect();
    assert_eq!(lines.len(), PROCS, "every consumer answered");
    assert!(
        bad.is_empty(),
        "{} consumers failed: {:?}",
        bad.len(),
        &bad[..bad.len().min(3)]
    );
    let lib_kb = per_process(lib_g, idle_c, PROCS);

    // Baselines, mapped directly by forked processes at a 1 GiB-aligned
    // address: the same hugetlb memory (a hugetlb memfd), and 4 KiB pages.
    std::fs::remove_file(m.path("sga")).unwrap();
    wait_until("the region's huge pages to return", || {
        meminfo("HugePages_Free") >= free0
    });
    let direct = |flags: nix::sys::memfd::MFdFlags, procs: usize, step: usize| {
        let memfd = nix::sys::memfd::memfd_create(c"baseline", flags).unwrap();
        nix::unistd::ftruncate(&memfd, GIB as i64).unwrap();
        nix::fcntl::fallocate(&memfd, nix::fcntl::FallocateFlags::empty(), 0, GIB as i64).unwrap();
        let (idle, _) = forked(procs, || (0, ()));
        let (g, reports) = forked(procs, || {
            let Ok(map) = Map::new(
                &memfd,
                1 << 40,
                GIB,
                libc::PROT_READ,
                libc::MAP_FIXED_NOREPLACE,
            ) else {
                return (1, None);
            };
            let sum: u64 = (0..map.len())
                .step_by(step)
                .map(|o| u64::from(map.get(o)))
                .sum();
            (u8::from(sum != 0), Some(map))
        });
        assert!(
            reports.iter().all(|&r| r == 0),
            "baseline children failed (fd {})",
            memfd.as_raw_fd()
        );
        per_process(g, idle, procs)
    };
    let hugetlb_kb = direct(nix::sys::memfd::MFdFlags::MFD_HUGETLB, PROCS, 2 << 20);
    let small_procs = 20;
    let pages4k_kb = direct(nix::sys::memfd::MFdFlags::empty(), small_procs, PAGE);
    println!(
        "figure: page tables per process for a 1 GiB region: libmshare hugetlb +{lib_kb:.1} kB \
         ({PROCS} C processes), hugetlb memfd mapped directly +{hugetlb_kb:.1} kB ({PROCS}), \
         4 KiB memfd +{pages4k_kb:.1} kB ({small_procs})"
    );
    assert!(
        lib_kb <= hugetlb_kb + 4.0,
        "libmshare costs {lib_kb:.1} kB, the memfd {hugetlb_kb:.1} kB"
    );
    assert!(
        lib_kb * 64.0 < pages4k_kb,
        "hugetlb {lib_kb:.1} kB vs 4 KiB pages {pages4k_kb:.1} kB"
    );
}

/// 2000 processes of one user released at once, each attaching through
/// libmshare (`Mount::attach`: the attribute, an open of the memory file,
/// map) and reading: a database starting its clients.
/// Nothing the server holds per attach may turn such a burst into
/// failures.
#[test]
fn a_burst_of_2000_attaches_by_one_user_all_succeed() {
    let m = Server::mount("align=2M");
    let mount = libmshare::Mount::find(Some(&m.dir)).unwrap();
    let region = mount
        .create("burst", 0, MIB2, &libmshare::CreateOptions::default())
        .unwrap();
    region.map().unwrap().write(100, &[7]);
    drop(region);
    let (go_rx, go_tx) = UnixStream::pair().unwrap();
    let dir = m.dir.clone();
    let kids: Vec<Pid> = (0..2000)
        .map(|_| {
            let dir = dir.clone();
            spawn_child(|| {
                let mut b = [0u8; 1];
                let _ = (&go_rx).read_exact(&mut b);
                let attach = || -> Result<u8, libmshare::Error> {
                    let map = libmshare::Mount::find(Some(&dir))?.attach("burst", true)?;
                    let mut v = [0u8; 1];
                    map.read(100, &mut v);
                    Ok(v[0])
                };
                match attach() {
                    Ok(7) => 0,
                    Ok(_) => 2,
                    Err(e) => {
                        eprintln!("burst attach: {e}");
                        1
                    }
                }
            })
        })
        .collect();
    drop(go_rx);
    (&go_tx).write_all(&[1u8; 2000]).unwrap();
    let codes: Vec<i32> = kids.into_iter().map(wait_child).collect();
    let failed = codes.iter().filter(|c| **c != 0).count();
    assert_eq!(failed, 0, "{failed} of 2000 attaches failed");
}

/// A way to attach a region in a test process.
#[derive(Clone, Copy, Debug)]
enum Path3 {
    /// open + GET_SIZE + mmap of the region file (thp, passthrough).
    File,
    /// libmshare, thp backing.
    LibThp,
    /// libmshare, hugetlb backing.
    LibHugetlb,
}

/// A mapping of either kind, read and written as u64 slots.
enum Attached {
    File(Map),
    Lib(libmshare::Mapping),
}

impl Attached {
    fn new(dir: &std::path::Path, name: &str, path: Path3) -> Option<Attached> {
        match path {
            Path3::File => {
                let fd = open(&dir.join(name), libc::O_RDWR)
                    .map_err(|e| eprintln!("open {name}: {e}"))
                    .ok()?;
                let info = ioctl::get_size(&fd)
                    .map_err(|e| eprintln!("GET_SIZE {name}: {e}"))
                    .ok()?;
                let prot = libc::PROT_READ | libc::PROT_WRITE;
                let map = Map::new(&fd, info.start, info.size, prot, 0)
                    .map_err(|e| eprintln!("mmap {name}: {e}"))
                    .ok()?;
                if map.addr() != info.start {
                    eprintln!("mapped {name} at {:#x}, not {:#x}", map.addr(), info.start);
                    return None;
                }
                Some(Attached::File(map))
            }
            Path3::LibThp | Path3::LibHugetlb => {
                let r = libmshare::Mount::open_in(Some(dir), name, false).ok()?;
                r.map().ok().map(Attached::Lib)
            }
        }
    }

    fn set(&self, slot: usize, v: u64) {
        match self {
            Attached::File(m) => m.set_u64(slot * 8, v),
            Attached::Lib(m) => m.write(slot * 8, &v.to_ne_bytes()),
        }
    }

    fn get(&self, slot: usize) -> u64 {
        match self {
            Attached::File(m) => m.get_u64(slot * 8),
            Attached::Lib(m) => {
                let mut b = [0u8; 8];
                m.read(slot * 8, &mut b);
                u64::from_ne_bytes(b)
            }
        }
    }
}

/// 2000 processes attach one region through `path`; each writes its own
/// slot, and once all have, each reads all 2000 slots.
fn two_thousand_write_and_read_all(path: Path3) {
    const N: usize = 2000;
    let m = Server::mount("align=2M");
    let _pool = matches!(path, Path3::LibHugetlb).then(|| HugePool::reserve(&m, 2));
    let backing = match path {
        Path3::LibHugetlb => libmshare::Backing::Hugetlb,
        _ => libmshare::Backing::Thp,
    };
    let opts = libmshare::CreateOptions {
        backing: Some(backing),
        ..Default::default()
    };
    let mount = libmshare::Mount::find(Some(&m.dir)).unwrap();
    drop(mount.create("slots", 0, MIB2, &opts).unwrap());
    let attach_and_write = |i: usize| match Attached::new(&m.dir, "slots", path) {
        Some(map) => {
            map.set(i, i as u64 + 1);
            (0, Some(map))
        }
        None => (1, None),
    };
    let read_all = |map: &Option<Attached>| {
        let map = map.as_ref().expect("code 0 means attached");
        let wrong = (0..N).filter(|&s| map.get(s) != s as u64 + 1).count();
        i32::from(wrong != 0) * 2
    };
    let (_, _, codes) = forked_then(N, attach_and_write, read_all);
    let no_attach = codes.iter().filter(|c| **c == 1).count();
    let bad_data = codes.iter().filter(|c| **c == 2).count();
    assert_eq!(
        (no_attach, bad_data),
        (0, 0),
        "{path:?}: processes that could not attach, that saw wrong slots"
    );
}

#[test]
fn two_thousand_processes_share_data_through_the_region_file() {
    two_thousand_write_and_read_all(Path3::File);
}

#[test]
fn two_thousand_processes_share_data_through_libmshare_thp() {
    two_thousand_write_and_read_all(Path3::LibThp);
}

#[test]
fn two_thousand_processes_share_data_through_libmshare_hugetlb() {
    two_thousand_write_and_read_all(Path3::LibHugetlb);
}

/// Attachers, creators and unlinkers at once, for a bounded number of
/// rounds: nothing fails, and afterwards the server holds as many
/// descriptors as before and the memory is back.
#[test]
fn attachers_creators_and_unlinkers_at_once_leak_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    const ROUNDS: usize = 300;
    let m = Server::mount("align=2M");
    let mount = libmshare::Mount::find(Some(&m.dir)).unwrap();
    let thp = libmshare::CreateOptions {
        backing: Some(libmshare::Backing::Thp),
        ..Default::default()
    };
    let fds0 = m.open_fds();
    let targets0 = m.fd_targets();
    // The server's own thp instance: other tests' memory does not count.
    let used = || {
        let st = nix::sys::statvfs::statvfs(&m.state_dir().join("thp")).unwrap();
        (st.blocks() - st.blocks_free()) * st.fragment_size()
    };
    let used0 = used();
    let hot = mount.create("hot", 0, MIB2, &thp).unwrap();
    hot.map().unwrap().write(0, &[42]);
    drop(hot);
    let made: Arc<Mutex<Vec<String>>> = Arc::default();
    let creating = Arc::new(AtomicBool::new(true));
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let dir = m.dir.clone();
    // The attacher is a process of its own (forked before any thread
    // starts), alternating the two paths; it exits with its failures.
    let attacher = spawn_child(|| {
        let mut failed = 0;
        for i in 0..2 * ROUNDS {
            let path = [Path3::File, Path3::LibThp][i % 2];
            match Attached::new(&dir, "hot", path) {
                Some(a) if a.get(0) & 0xff == 42 => {}
                _ => failed += 1,
            }
        }
        failed.min(100)
    });
    std::thread::scope(|s| {
        let creators: Vec<_> = (0..2)
            .map(|t| {
                let (made, errors, dir, thp) = (made.clone(), errors.clone(), dir.clone(), &thp);
                s.spawn(move || {
                    let mount = libmshare::Mount::at(&dir).unwrap();
                    for i in 0..ROUNDS {
                        let name = format!("c{t}-{i}");
                        let res = mount.create(&name, 0, MIB2, thp).and_then(|r| {
                            r.map()?.write(4096, &[1; 64]);
                            Ok(())
                        });
                        match res {
                            Ok(()) => made.lock().unwrap().push(name),
                            Err(e) => errors.lock().unwrap().push(format!("create {name}: {e}")),
                        }
                    }
                })
            })
            .collect();
        for _ in 0..2 {
            let (made, errors, dir, creating) =
                (made.clone(), errors.clone(), dir.clone(), creating.clone());
            s.spawn(move || {
                let mount = libmshare::Mount::at(&dir).unwrap();
                loop {
                    let next = made.lock().unwrap().pop();
                    match next {
                        Some(name) => {
                            if let Err(e) = mount.remove(&name) {
                                errors.lock().unwrap().push(format!("remove {name}: {e}"));
                            }
                        }
                        None if !creating.load(Ordering::Acquire) => break,
                        None => std::thread::yield_now(),
                    }
                }
            });
        }
        for c in creators {
            c.join().unwrap();
        }
        creating.store(false, Ordering::Release);
    });
    assert_eq!(wait_child(attacher), 0, "failed attaches of the attacher");
    let errors = errors.lock().unwrap();
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    mount.remove("hot").unwrap();
    let left: Vec<_> = std::fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !["mshare_info", "anon", "shm"].contains(&n.to_str().unwrap()))
        .collect();
    assert!(left.is_empty(), "regions left: {left:?}");
    // The server frees a region at its last release, which the kernel
    // sends just after the close.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while m.open_fds() > fds0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let targets = m.fd_targets();
    assert_eq!(
        targets.len(),
        fds0,
        "server descriptors back to where they started: before {targets0:?}, now {targets:?}"
    );
    let rings = m.ring_fds();
    assert!(
        rings <= possible_cpus() * 16,
        "{rings} io_uring rings: the queues grow to at most 16 threads per CPU"
    );
    wait_until("the server's thp memory to return", || used() <= used0);
    assert_eq!(
        used(),
        used0,
        "the server's thp memory back to where it started"
    );
}
