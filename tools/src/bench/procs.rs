//! N processes attach one region and read it: wall time and page tables.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::waitpid;

use super::contender::Region;
use super::sys::fork;
use super::BenchError;

/// What N processes cost.
#[derive(Clone, Copy, Debug)]
pub struct Figure {
    /// Seconds from the first fork until every process has read its
    /// region.
    pub wall: f64,
    /// Page-table memory per process, KiB, above what an idle forked
    /// process costs.
    pub page_tables_kib: f64,
}

/// `PageTables` of /proc/meminfo, kB.
fn page_tables_kb() -> u64 {
    crate::procfs::meminfo("PageTables")
}

/// `PageTables` once it has stopped shrinking: the page tables of exited
/// processes are freed after an RCU grace period, and would otherwise
/// count against the next measurement.
fn settled_page_tables() -> u64 {
    let mut last = page_tables_kb();
    for _ in 0..200 {
        std::thread::sleep(Duration::from_millis(20));
        let now = page_tables_kb();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// How long the processes of one phase may take before the benchmark
/// gives up on them.
const PHASE_LIMIT: Duration = Duration::from_secs(600);

/// Forks `n` processes that each run `work` (true: success), waits until
/// all of them have, measures, then lets them exit. Returns the wall time
/// and the page tables all of them held at that moment (kB).
fn crowd(n: usize, work: &dyn Fn() -> bool, tick: &dyn Fn()) -> Result<(f64, u64), BenchError> {
    let (release_r, release_w) =
        nix::unistd::pipe().map_err(|e| BenchError::Setup(format!("pipe: {e}")))?;
    let (done_r, done_w) =
        nix::unistd::pipe().map_err(|e| BenchError::Setup(format!("pipe: {e}")))?;
    let start = Instant::now();
    let mut pids = Vec::with_capacity(n);
    let mut failed = None;
    for _ in 0..n {
        let child = || {
            let _ = nix::unistd::close(release_w.as_raw_fd());
            let _ = nix::unistd::close(done_r.as_raw_fd());
            let ok = work();
            let _ = nix::unistd::write(&done_w, if ok { b"1" } else { b"0" });
            let mut b = [0u8; 1];
            // Until the parent closes its end: then every process exits.
            let _ = nix::unistd::read(&release_r, &mut b);
            0
        };
        match fork(child) {
            Ok(pid) => pids.push(pid),
            Err(e) => {
                failed = Some(format!("fork: {e} after {} processes", pids.len()));
                break;
            }
        }
    }
    drop(done_w);
    drop(release_r);
    let (oks, result) = collect(&done_r, pids.len(), tick);
    let wall = start.elapsed().as_secs_f64();
    let tables = page_tables_kb();
    drop(release_w);
    for pid in pids.iter() {
        let _ = waitpid(*pid, None);
    }
    if let Some(f) = failed {
        return Err(BenchError::Setup(f));
    }
    result?;
    if oks < n {
        return Err(BenchError::Setup(format!(
            "{} of {n} processes could not attach and read the region",
            n - oks
        )));
    }
    Ok((wall, tables))
}

/// Reads one byte per process; how many said success.
fn collect(done: &OwnedFd, n: usize, tick: &dyn Fn()) -> (usize, Result<(), BenchError>) {
    let deadline = Instant::now() + PHASE_LIMIT;
    let (mut got, mut oks) = (0, 0);
    let mut buf = [0u8; 4096];
    while got < n {
        if Instant::now() >= deadline {
            let why = format!("{got} of {n} processes done after {PHASE_LIMIT:?}");
            return (oks, Err(BenchError::Setup(why)));
        }
        let mut fds = [PollFd::new(done.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, PollTimeout::from(1000u16)), Ok(1..)) {
            continue;
        }
        match nix::unistd::read(done, &mut buf) {
            Ok(0) => {
                let why = format!("{} processes died before reading", n - got);
                return (oks, Err(BenchError::Setup(why)));
            }
            Ok(k) => {
                for b in &buf[..k] {
                    got += 1;
                    oks += usize::from(*b == b'1');
                    tick();
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                return (
                    oks,
                    Err(BenchError::Setup(format!("reading the done pipe: {e}"))),
                )
            }
        }
    }
    (oks, Ok(()))
}

/// `n` processes each attach `region` and read one byte every `step`
/// bytes; compared with `n` idle processes forked the same way.
pub fn measure(
    region: &Region,
    n: usize,
    step: usize,
    tick: &dyn Fn(),
) -> Result<Figure, BenchError> {
    let before = settled_page_tables();
    let (_, idle) = crowd(n, &|| true, &|| {})?;
    settled_page_tables();
    let work = || match region.attach() {
        Ok(map) => {
            std::hint::black_box(map.touch(step));
            // Mapped until the process exits, after the measurement.
            std::mem::forget(map);
            true
        }
        Err(_) => false,
    };
    let (wall, busy) = crowd(n, &work, tick)?;
    settled_page_tables();
    let idle_cost = idle.saturating_sub(before);
    let busy_cost = busy.saturating_sub(before);
    Ok(Figure {
        wall,
        page_tables_kib: busy_cost.saturating_sub(idle_cost) as f64 / n as f64,
    })
}
