//! Abuse probes (issue 7): hostile local users against root's and each
//! other's regions, a flood of renames and attribute reads, and a soak.
//! They take longer than the suite's tests and print their figures, so
//! they are `#[ignore]`d: `tools/abuse.sh` runs them.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use libmshare::{Backing, CreateOptions, Mount};
use msharefs_tests::*;

use crate::common::*;

/// What a descriptor or mapping let a probe do.
#[derive(Clone, Copy, Default)]
struct Got {
    read: bool,
    write: bool,
}

/// Reads and writes byte 0 of `fd` (writing back the 42 it holds, so the
/// data never changes).
fn probe_fd(fd: &OwnedFd) -> Got {
    let mut b = [0u8; 1];
    Got {
        read: nix::sys::uio::pread(fd, &mut b, 0).is_ok_and(|n| n == 1),
        write: nix::sys::uio::pwrite(fd, &[42], 0).is_ok_and(|n| n == 1),
    }
}

/// Maps `fd` shared for reading and for writing.
fn probe_map(fd: &OwnedFd) -> Got {
    let map = |prot| Map::new(fd, 0, MIB2, prot, 0).is_ok();
    Got {
        read: map(libc::PROT_READ),
        write: map(libc::PROT_READ | libc::PROT_WRITE),
    }
}

/// Every route from an open of `path` with `flags` to the region's bytes:
/// the file itself, its mapping, the memory file that libmshare opens
/// with the same access (if the attribute names it to this user) and its
/// mapping, the memory file by the name root `learned` (as if it had
/// leaked), and every reopen of those through /proc/self/fd. Returns
/// (checks, wrong grants) against what `may` allows.
fn routes(path: &Path, learned: &Path, flags: i32, may: Got) -> (u32, u32) {
    let (mut checks, mut wrong) = (0, 0);
    let mut judge = |got: Got| {
        checks += 2;
        wrong += u32::from(got.read && !may.read) + u32::from(got.write && !may.write);
    };
    let by_access = Got {
        read: flags & libc::O_ACCMODE != libc::O_WRONLY,
        write: flags & libc::O_ACCMODE != libc::O_RDONLY,
    };
    let mut fds = Vec::new();
    for opened in [open(path, flags), open(learned, flags)] {
        match opened {
            Ok(fd) => {
                judge(by_access);
                fds.push(fd);
            }
            Err(_) => judge(Got::default()),
        }
    }
    if let Some(memory) = attach_path(path) {
        match open(&memory, flags) {
            Ok(fd) => {
                judge(by_access);
                fds.push(fd);
            }
            Err(_) => judge(Got::default()),
        }
    }
    for fd in fds {
        judge(probe_fd(&fd));
        judge(probe_map(&fd));
        for again in [libc::O_RDONLY, libc::O_WRONLY, libc::O_RDWR] {
            let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
            if let Ok(re) = open(Path::new(&link), again) {
                judge(probe_fd(&re));
                judge(probe_map(&re));
            } else {
                judge(Got::default());
            }
        }
    }
    (checks, wrong)
}

/// The memory file that region `path`'s `user.mshare.attach` names to
/// the caller, if it may read it.
fn attach_path(path: &Path) -> Option<std::path::PathBuf> {
    attach_value(path).ok()?.path
}

/// uid 1000 (in the regions' group 1000) and uid 65534 (other) against
/// root's regions of every backing and many modes, by every route.
#[test]
#[ignore = "abuse probe: tools/abuse.sh"]
fn abuse_access_matrix() {
    let m = Server::mount("align=2M");
    let _pool = HugePool::reserve(&m, 40);
    let modes = [
        0o600, 0o640, 0o604, 0o620, 0o602, 0o660, 0o606, 0o644, 0o666, 0o000,
    ];
    let mount = Mount::find(Some(&m.dir)).unwrap();
    let mut names = Vec::new();
    for backing in Backing::ALL {
        for mode in modes {
            let name = format!("{backing}-{mode:o}");
            let opts = CreateOptions {
                backing: Some(backing),
                ..Default::default()
            };
            let region = mount.create(&name, 0, MIB2, &opts).unwrap();
            region.map().unwrap().write(0, &[42]);
            let path = m.path(&name);
            nix::unistd::chown(&path, None, Some(nix::unistd::Gid::from_raw(1000))).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            names.push((name, mode));
        }
    }
    let (mut checks, mut wrong) = (0u32, 0u32);
    for (uid, class_shift) in [(1000u32, 3u32), (65534, 0)] {
        for (name, mode) in &names {
            let bits = (mode >> class_shift) & 7;
            let may = Got {
                read: bits & 4 != 0,
                write: bits & 2 != 0,
            };
            let path = m.path(name);
            let learned = attach_path(&path).expect("root reads every attribute");
            for flags in [libc::O_RDONLY, libc::O_WRONLY, libc::O_RDWR] {
                let (path, learned) = (path.clone(), learned.clone());
                let code = as_user(uid, move || {
                    let (c, w) = routes(&path, &learned, flags, may);
                    // Exit code: checks in the low 8 bits, wrong ones above.
                    (c.min(255) | (w.min(127) << 8)) as i32
                });
                checks += (code & 0xff) as u32;
                wrong += (code >> 8) as u32;
            }
        }
    }
    let intact = names.iter().all(|(name, _)| {
        let mut b = [0u8; 1];
        mount
            .open(name, true)
            .unwrap()
            .map()
            .unwrap()
            .read(0, &mut b);
        b[0] == 42
    });
    println!("figure: access checks: {checks}, wrong grants: {wrong}, data intact: {intact}");
    assert_eq!(wrong, 0);
    assert!(intact);
}

/// Attaches of root's region while other users loop reading the attach
/// attribute, chmod their own regions (each one a rename of its memory
/// file) and allocate and free gigabytes.
#[test]
#[ignore = "abuse probe: tools/abuse.sh"]
fn abuse_flood() {
    let m = Server::mount("align=2M,backing=shmem");
    let mount = Mount::find(Some(&m.dir)).unwrap();
    drop(
        mount
            .create(
                "sga",
                0,
                MIB2,
                &CreateOptions {
                    mode: 0o644,
                    ..Default::default()
                },
            )
            .unwrap(),
    );
    let attaches = |n: usize| -> (Vec<Duration>, usize) {
        let mut times = Vec::with_capacity(n);
        let mut failed = 0;
        for _ in 0..n {
            let t = Instant::now();
            let ok = mount.attach("sga", true).is_ok();
            times.push(t.elapsed());
            failed += usize::from(!ok);
        }
        times.sort();
        (times, failed)
    };
    let (quiet, _) = attaches(200);
    let dir = m.dir.clone();
    let sga = m.path("sga");
    let reader = Attacker::start(65534, move |w| {
        ready(w);
        loop {
            let _ = attach_path(&sga);
        }
    });
    let renames = |uid: u32, name: &'static str| {
        let dir = dir.clone();
        Attacker::start(uid, move |w| {
            let mount = Mount::find(Some(&dir)).unwrap();
            drop(
                mount
                    .create(name, 0, MIB2, &CreateOptions::default())
                    .unwrap(),
            );
            let path = dir.join(name);
            ready(w);
            for mode in [0o600, 0o644].into_iter().cycle() {
                let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode));
            }
            unreachable!()
        })
    };
    let t1 = renames(65534, "renames-a");
    let t2 = renames(1000, "renames-b");
    let dir2 = dir.clone();
    let alloc = Attacker::start(1000, move |w| {
        let size = 2u64 << 30;
        let fd = open(&dir2.join("alloc"), libc::O_RDWR | libc::O_CREAT).unwrap();
        nix::unistd::ftruncate(&fd, size as i64).unwrap();
        let info = ioctl::get_size(&fd).unwrap();
        ready(w);
        loop {
            let _ = nix::fcntl::fallocate(&fd, nix::fcntl::FallocateFlags::empty(), 0, size as i64);
            let _ = ioctl::unmap(
                &fd,
                &MshareUnmap {
                    addr: info.start,
                    size,
                },
            );
            let _ = ioctl::create_mapping(&fd, &anon_create(info.start, size));
        }
    });
    let (flood, failed) = attaches(200);
    drop((reader, t1, t2, alloc));
    let pct = |v: &[Duration], p: usize| v[(v.len() * p / 100).min(v.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "figure: libmshare attach, quiet: p50 {:.2} ms, p99 {:.2} ms; under the flood: p50 {:.2} ms, \
         p99 {:.2} ms, max {:.2} ms, {failed} failed of 200",
        ms(pct(&quiet, 50)),
        ms(pct(&quiet, 99)),
        ms(pct(&flood, 50)),
        ms(pct(&flood, 99)),
        ms(*flood.last().unwrap()),
    );
    assert_eq!(failed, 0);
    assert!(
        pct(&flood, 99) < Duration::from_millis(100),
        "p99 under the flood"
    );
}

/// Four users create, size, map, write, check and remove regions of every
/// backing for ABUSE_SECONDS (default 20) while one sends random ioctls;
/// then the server's descriptors and the machine's memory are back.
#[test]
#[ignore = "abuse probe: tools/abuse.sh"]
fn abuse_soak() {
    let secs: u64 = std::env::var("ABUSE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let m = Server::mount("align=2M");
    let _pool = HugePool::reserve(&m, 16);
    // A request answered: the server is past INIT, whose answer opens the
    // descriptors of its FUSE threads and queues.
    read_text(&m.path("mshare_info"));
    let (fds0, shmem0, huge0) = (m.open_fds(), meminfo("Shmem"), meminfo("HugePages_Free"));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let workers: Vec<_> = [0u32, 1000, 65534, 1000]
        .into_iter()
        .enumerate()
        .map(|(w, uid)| {
            let dir = m.dir.clone();
            spawn_child(move || {
                nix::unistd::setgid(nix::unistd::Gid::from_raw(uid)).unwrap();
                nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)).unwrap();
                let mount = Mount::find(Some(&dir)).unwrap();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let backing = Backing::ALL[(i % 3) as usize];
                    let name = format!("w{w}-{i}");
                    let opts = CreateOptions {
                        backing: Some(backing),
                        ..Default::default()
                    };
                    let r = mount.create(&name, 0, MIB2, &opts).unwrap();
                    let map = r.map().unwrap();
                    let stamp = (i as u8).wrapping_add(w as u8);
                    map.write(4096, &[stamp; 64]);
                    let mut back = [0u8; 64];
                    map.read(4096, &mut back);
                    assert_eq!(back, [stamp; 64]);
                    drop((map, r));
                    mount.remove(&name).unwrap();
                    i += 1;
                }
                (i / 100).min(250) as i32
            })
        })
        .collect();
    let dir = m.dir.clone();
    let fuzzer = spawn_child(move || {
        let fd = open(&dir.join("fuzz"), libc::O_RDWR | libc::O_CREAT).unwrap();
        let mut garbage = GarbageIoctls::new(0x9e37_79b9_7f4a_7c15, 40);
        while Instant::now() < deadline {
            garbage.send(&fd);
        }
        0
    });
    let rounds: Vec<i32> = workers.into_iter().map(wait_child).collect();
    assert_eq!(wait_child(fuzzer), 0);
    let _ = std::fs::remove_file(m.path("fuzz"));
    wait_until("the server's descriptors to return", || {
        m.open_fds() <= fds0
    });
    wait_until("Shmem to return", || meminfo("Shmem") < shmem0 + 16 * 1024);
    wait_until("huge pages to return", || {
        meminfo("HugePages_Free") == huge0
    });
    assert!(
        nix::sys::signal::kill(m.pid(), None).is_ok(),
        "the server is alive"
    );
    println!(
        "figure: soak {secs} s: about {:?} hundred create/map/write/remove rounds per worker, \
         server descriptors {fds0} before and {} after, Shmem {shmem0} kB before and {} kB after",
        rounds,
        m.open_fds(),
        meminfo("Shmem")
    );
}
