//! The request transport: FUSE over io_uring (queues per CPU, served by
//! threads pinned to that CPU) and `/dev/fuse`. Which threads answered is
//! read from their context switches: a thread that answers a request and
//! waits for the next switches out in between, either to sleep or, when
//! other work takes the CPU, preempted (a thread pinned to the client's
//! CPU cannot run while the client makes its next request).

use std::process::Command;

use msharefs_tests::*;

use crate::common::*;

const PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

/// Context switches (voluntary and not) of the server's threads whose
/// name starts with `prefix`, summed, and how many such threads there are.
fn switches(m: &Server, prefix: &str) -> (u64, usize) {
    switches_of(m, |name| name.starts_with(prefix))
}

/// The same for the threads whose name `pick` accepts.
fn switches_of(m: &Server, pick: impl Fn(&str) -> bool) -> (u64, usize) {
    let mut total = (0, 0);
    for t in std::fs::read_dir(format!("/proc/{}/task", m.pid())).unwrap() {
        let dir = t.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if pick(comm.trim_end()) {
            let status = dir.join("status");
            let status = status.to_str().unwrap();
            total.0 += proc_field(status, "voluntary_ctxt_switches")
                + proc_field(status, "nonvoluntary_ctxt_switches");
            total.1 += 1;
        }
    }
    total
}

/// Waits until the server's io_uring queues serve: the mount is up before
/// the kernel's `INIT` is answered, the queue threads start while it is,
/// and requests go to `/dev/fuse` until every queue has registered. Returns
/// how many queue threads there are.
fn queues_serving(m: &Server) -> usize {
    wait_until("the io_uring queues", || {
        m.log_text()
            .contains(" queues, one per CPU, each served by ")
    });
    let threads = switches(m, "fuse-uring-").1;
    wait_until("a request answered over io_uring", || {
        let (before, _) = switches(m, "fuse-uring-");
        let _ = std::fs::read_to_string(m.path("mshare_info"));
        switches(m, "fuse-uring-").0 > before
    });
    threads
}

/// `n` attaches of region `name` the kernel-ABI way, without mapping: open,
/// `MSHAREFS_GET_SIZE`, close.
fn attaches(m: &Server, name: &str, n: usize) {
    for _ in 0..n {
        let fd = open(&m.path(name), libc::O_RDWR).expect("open region");
        let info = ioctl::get_size(&fd).expect("MSHAREFS_GET_SIZE");
        assert_eq!(info.size, GIB);
    }
}

#[test]
fn requests_are_answered_over_io_uring_on_the_cpu_that_made_them() {
    let m = Server::mount("io_uring=on");
    let cpus = possible_cpus();
    assert_eq!(queues_serving(&m), cpus * 4, "4 threads per CPU");
    let fd = create_mapped_region(&m, "r", 4 * GIB, GIB);
    let map = map_region(&fd);
    map.set(7, 42);
    for cpu in 0..cpus.min(2) {
        let mine = format!("fuse-uring-{cpu}.");
        let (before, _) = switches(&m, &mine);
        let (dev_before, _) = switches(&m, "fuser-");
        on_cpu(cpu, || attaches(&m, "r", 300));
        let (after, _) = switches(&m, &mine);
        let (dev_after, _) = switches(&m, "fuser-");
        // open and ioctl each, and the release after close.
        assert!(
            after - before >= 600,
            "CPU {cpu}'s queue threads answered {} times for 300 attaches",
            after - before
        );
        assert!(
            dev_after - dev_before < 30,
            "/dev/fuse threads answered {} times",
            dev_after - dev_before
        );
        if cpus > 1 {
            let other = format!("fuse-uring-{}.", 1 - cpu);
            let (o1, _) = switches(&m, &other);
            on_cpu(cpu, || attaches(&m, "r", 100));
            let (o2, _) = switches(&m, &other);
            assert!(o2 - o1 < 30, "the other CPU's queue answered {}", o2 - o1);
        }
    }
    assert_eq!(map.get(7), 42);
}

#[test]
fn io_uring_off_reads_dev_fuse() {
    let m = Server::mount("io_uring=off");
    // Answered, so past INIT, where queue threads would have started.
    read_text(&m.path("mshare_info"));
    assert_eq!(switches(&m, "fuse-uring-").1, 0, "no queue threads");
    let _fd = create_mapped_region(&m, "r", 4 * GIB, GIB);
    let (before, _) = switches(&m, "fuser-");
    attaches(&m, "r", 200);
    let (after, _) = switches(&m, "fuser-");
    assert!(
        after - before >= 400,
        "/dev/fuse threads answered {} times for 200 attaches",
        after - before
    );
}

#[test]
fn io_uring_q_depth_sets_the_threads_per_cpu() {
    let m = Server::mount("io_uring=on,io_uring_q_depth=2");
    assert_eq!(queues_serving(&m), possible_cpus() * 2);
    drop(m);
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    for (bad, why) in [
        ("io_uring_q_depth=0", "must be at least 1"),
        ("io_uring_q_depth=129", "must be at most 128"),
        ("io_uring=maybe", "must be auto, on or off"),
    ] {
        let out = Command::new(msharefs_bin())
            .args(["-f", "-o", bad])
            .arg(tmp.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(bad) && err.contains(why), "{bad}: {err}");
    }
}

/// A queue whose every entry is busy with a request that may take long
/// (here allocating 3 GiB of 4 KiB pages) starts one more thread, so that
/// the next requests of its CPU are answered at once, not after it.
#[test]
fn a_queue_busy_with_a_slow_request_grows() {
    if possible_cpus() < 2 {
        println!("skipped: needs two CPUs, one to set up from and one to fill");
        return;
    }
    let m = Server::mount("io_uring=on,io_uring_q_depth=1,align=2M,backing=shmem");
    queues_serving(&m);
    let size: i64 = 3 << 30;
    // Set up from CPU 1, so that only CPU 1's queue may grow meanwhile.
    let fd = on_cpu(1, || {
        drop(std::fs::File::create(m.path("r")).unwrap());
        let fd = open(&m.path("big"), libc::O_RDWR | libc::O_CREAT | libc::O_EXCL).unwrap();
        nix::unistd::ftruncate(&fd, size).unwrap();
        fd
    });
    let before = switches(&m, "fuse-uring-").1;
    let (started_r, started_w) = nix::unistd::pipe().unwrap();
    let slow = spawn_child(move || {
        on_cpu(0, || {
            ready(started_w);
            let flags = nix::fcntl::FallocateFlags::empty();
            i32::from(nix::fcntl::fallocate(&fd, flags, 0, size).is_err())
        })
    });
    let mut one = [0u8; 1];
    std::io::Read::read_exact(&mut std::fs::File::from(started_r), &mut one).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    on_cpu(0, || {
        for _ in 0..10 {
            drop(open(&m.path("r"), libc::O_RDONLY).unwrap());
        }
    });
    let still = nix::sys::wait::waitpid(slow, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
    let after = switches(&m, "fuse-uring-").1;
    let code = match still {
        Ok(nix::sys::wait::WaitStatus::StillAlive) => wait_child(slow),
        other => panic!("the opens were answered only after the allocation ended: {other:?}"),
    };
    let _ = std::fs::remove_file(m.path("big"));
    assert_eq!(code, 0, "the allocation succeeded");
    assert_eq!(after, before + 1, "CPU 0's queue started one more thread");
    assert!(
        m.log_text()
            .contains("io_uring queue 0: a request that may take long"),
        "the growth is logged:\n{}",
        m.log_text()
    );
}

/// Puts the kernel's switch back as it was.
struct SwitchGuard(String);

impl Drop for SwitchGuard {
    fn drop(&mut self) {
        let _ = std::fs::write(PARAM, &self.0);
    }
}

#[test]
fn the_default_turns_the_kernel_switch_on_and_back_off() {
    let Ok(was) = std::fs::read_to_string(PARAM) else {
        println!("skipped: this kernel has no FUSE over io_uring ({PARAM})");
        return;
    };
    let _guard = SwitchGuard(was.trim().to_string());
    std::fs::write(PARAM, "N").unwrap();
    let mut m = Server::mount("io_uring=auto");
    assert_eq!(std::fs::read_to_string(PARAM).unwrap().trim(), "Y");
    assert!(queues_serving(&m) > 0, "served over io_uring");
    let _fd = create_mapped_region(&m, "r", 4 * GIB, GIB);
    attaches(&m, "r", 10);
    assert!(m.stop().success());
    assert_eq!(
        std::fs::read_to_string(PARAM).unwrap().trim(),
        "N",
        "the server that turned it on turns it back off"
    );
    drop(m);
    // Already on: a server leaves it on.
    std::fs::write(PARAM, "Y").unwrap();
    let mut m = Server::mount("io_uring=auto");
    assert!(m.stop().success());
    assert_eq!(std::fs::read_to_string(PARAM).unwrap().trim(), "Y");
    drop(m);
    // off: the switch is not touched and /dev/fuse serves.
    std::fs::write(PARAM, "N").unwrap();
    let m = Server::mount("io_uring=off");
    read_text(&m.path("mshare_info"));
    assert_eq!(std::fs::read_to_string(PARAM).unwrap().trim(), "N");
    assert_eq!(switches(&m, "fuse-uring-").1, 0);
}
