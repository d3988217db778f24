//! No local user can deny service to the others (issue 7, items 4 to 9):
//! each test runs the attack as a non-root uid and checks that root, or
//! another user, is still served.

use std::io::Read;
use std::time::{Duration, Instant};

use libmshare::Mount;
use msharefs_tests::*;
use nix::unistd::Pid;

use crate::common::*;

/// One libmshare attach of `name` (attribute, open of the memory file,
/// map, read, close); its duration.
fn attach(m: &Server, name: &str) -> Result<Duration, libmshare::Error> {
    let t = Instant::now();
    let map = Mount::find(Some(&m.dir))?.attach(name, true)?;
    let mut b = [0u8; 1];
    map.read(0, &mut b);
    Ok(t.elapsed())
}

/// Item 6: with the common soft limit of 1024 descriptors one user could
/// create ~1000 regions, after which nobody could create a region or get
/// attach.
#[test]
fn descriptor_exhaustion_stops_only_the_user_who_floods() {
    let m = Server::with_nofile("align=2M", 1024);
    let limits = read_text(std::path::Path::new(&format!("/proc/{}/limits", m.pid())));
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains("1024")),
        "{limits}"
    );
    let dir = m.dir.clone();
    let code = as_user(65534, move || {
        let mut made = 0;
        let err = loop {
            match std::fs::File::create(dir.join(format!("flood{made}"))) {
                Ok(_) => made += 1,
                Err(e) => break e.raw_os_error(),
            }
            if made > 5000 {
                break None;
            }
        };
        failures(&[err == Some(libc::EDQUOT), made > 100])
    });
    assert_eq!(code, 0, "failed checks (bit = check) {code:#b}");
    // Everyone else is still served, attaches included.
    root_region(&m, "root-after-flood", None, 0o644);
    attach(&m, "root-after-flood").unwrap();
    let dir = m.dir.clone();
    let code = as_user(1000, move || {
        let f = std::fs::File::create(dir.join("another-user"));
        i32::from(f.is_err())
    });
    assert_eq!(code, 0, "another user can still create a region");
    let ticks = m.cpu_ticks();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        m.cpu_ticks() - ticks < 10,
        "the server is idle, not spinning"
    );
    assert!(
        m.log_text().contains("does not fit RLIMIT_NOFILE=1024"),
        "{}",
        m.log_text()
    );
}

/// Item 7: every opendir copied the directory into the server, so open
/// directory handles could grow it without bound.
#[test]
fn directory_handles_cost_no_memory_per_entry() {
    let m = Server::mount("");
    for i in 0..5000 {
        std::fs::create_dir(m.path(&format!("entry-with-a-longish-name-{i:05}"))).unwrap();
    }
    let rss0 = m.status_kb("VmRSS");
    let dir = m.dir.clone();
    let code = as_user(65534, move || {
        let mut handles = Vec::new();
        for _ in 0..400 {
            let mut d = std::fs::read_dir(&dir).unwrap();
            d.next();
            handles.push(d);
        }
        // Every entry is listed once, in full, while the handles are open.
        let n = std::fs::read_dir(&dir).unwrap().count();
        // And mshare_info, anon/ and shm/.
        i32::from(n != 5003)
    });
    assert_eq!(code, 0, "a full listing");
    let grown = m.status_kb("VmRSS").saturating_sub(rss0);
    assert!(
        grown < 16 * 1024,
        "400 handles on 5000 entries grew the server by {grown} kB"
    );
}

/// Item 8: directories did not count against max_regions.
#[test]
fn directories_count_against_the_limits() {
    let m = Server::mount("max_regions=10,max_regions_per_user=3");
    let dir = m.dir.clone();
    let code = as_user(65534, move || {
        let made: Vec<_> = (0..4)
            .map(|i| std::fs::create_dir(dir.join(format!("u{i}"))).map_err(errno_of))
            .collect();
        failures(&[
            made[..3].iter().all(Result::is_ok),
            made[3] == Err(libc::EDQUOT),
        ])
    });
    assert_eq!(code, 0, "failed checks (bit = check) {code:#b}");
    for i in 0..7 {
        std::fs::create_dir(m.path(&format!("r{i}"))).unwrap();
    }
    let full = std::fs::create_dir(m.path("one-more")).map_err(errno_of);
    assert_eq!(full, Err(libc::ENOSPC), "10 nodes exist");
    std::fs::remove_dir(m.path("u0")).unwrap();
    std::fs::File::create(m.path("a-region")).unwrap();
}

/// Item 9: with one FUSE thread per CPU, a few slow requests (allocating
/// gigabytes) from other users held up everyone's open and close. All run
/// on CPU 0, so that over io_uring they all come to CPU 0's queue, which
/// starts with 4 threads: the queue must grow for the opens.
#[test]
fn slow_requests_of_others_do_not_hold_up_open_and_close() {
    // 4 KiB pages: allocating them takes time (2 MiB tmpfs pages do not).
    let m = Server::mount("align=2M,backing=shmem");
    root_region(&m, "r", None, 0o644);
    let size: u64 = 3 << 30;
    let (started_r, started_w) = nix::unistd::pipe().unwrap();
    let slow: Vec<Pid> = (0..4)
        .map(|i| {
            let path = m.path(&format!("big{i}"));
            let uid = if i % 2 == 0 { 65534 } else { 1000 };
            let started = started_w.try_clone().unwrap();
            spawn_child(move || {
                nix::unistd::setgid(nix::unistd::Gid::from_raw(uid)).unwrap();
                nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)).unwrap();
                let fd = open(&path, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL).unwrap();
                nix::unistd::ftruncate(&fd, size as i64).unwrap();
                on_cpu(0, || {
                    ready(started);
                    // Allocates 3 GiB: four at once take about a second on
                    // one CPU.
                    let flags = nix::fcntl::FallocateFlags::empty();
                    i32::from(nix::fcntl::fallocate(&fd, flags, 0, size as i64).is_err())
                })
            })
        })
        .collect();
    drop(started_w);
    let mut four = [0u8; 4];
    std::fs::File::from(started_r)
        .read_exact(&mut four)
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    on_cpu(0, || {
        for _ in 0..10 {
            drop(open(&m.path("r"), libc::O_RDONLY).unwrap());
        }
    });
    let took = t.elapsed();
    let early: Vec<Option<i32>> = slow
        .iter()
        .map(
            |p| match nix::sys::wait::waitpid(*p, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => Some(code),
                Ok(nix::sys::wait::WaitStatus::StillAlive) => None,
                other => panic!("slow request child: {other:?}"),
            },
        )
        .collect();
    let running = early.iter().filter(|e| e.is_none()).count();
    let codes: Vec<i32> = slow
        .into_iter()
        .zip(early)
        .map(|(p, e)| e.unwrap_or_else(|| wait_child(p)))
        .collect();
    for i in 0..4 {
        let _ = std::fs::remove_file(m.path(&format!("big{i}")));
    }
    assert_eq!(codes, [0; 4], "the slow requests succeeded");
    assert_eq!(
        running, 4,
        "10 opens and closes ({took:?}) were served while all four slow requests ran"
    );
}
