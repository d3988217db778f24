//! What the benchmark sets up and puts back: a private msharefs server and
//! the hugetlb pool.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mshare_uapi::INFO_FILE_NAME;

use super::BenchError;

/// An msharefs server on a private temporary mount, unmounted (which frees
/// its regions) and waited for on drop.
#[derive(Debug)]
pub struct PrivateServer {
    /// The mount point.
    pub dir: PathBuf,
    root: PathBuf,
    child: Child,
    max_regions: u64,
}

/// Descriptors the server may hold: 100 000 regions and room to spare.
pub const SERVER_NOFILE: u64 = 1 << 18;

impl PrivateServer {
    /// Starts `binary` (align=2M, room for `max_regions`, then `extra`
    /// options) on a new directory under the system's temporary directory.
    pub fn start(
        binary: &Path,
        max_regions: u64,
        extra: Option<&str>,
    ) -> Result<PrivateServer, BenchError> {
        let root = std::env::temp_dir().join(format!("msharectl-bench.{}", std::process::id()));
        let dir = root.join("mnt");
        std::fs::create_dir_all(&dir).map_err(|e| BenchError::io("creating", &dir, e))?;
        let max_regions = max_regions.min(Self::raise_nofile() - 2048);
        let mut opts = format!(
            "align=2M,fresh,state_dir={},max_regions={max_regions},max_regions_per_user={max_regions}",
            root.join("state").display()
        );
        if let Some(extra) = extra {
            opts = format!("{opts},{extra}");
        }
        let child = Command::new(binary)
            .args(["-f", "-o", &opts])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| BenchError::io("starting", binary, e))?;
        let mut server = PrivateServer {
            dir,
            root,
            child,
            max_regions,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.dir.join(INFO_FILE_NAME).exists() {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(BenchError::Setup(format!(
                    "{} exited ({status}) before its mount was ready",
                    binary.display()
                )));
            }
            if Instant::now() > deadline {
                return Err(BenchError::Setup(
                    "the server's mount was not ready in 10 s".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(server)
    }

    /// How the server takes requests: `io_uring` when it has queue threads
    /// (named `fuse-uring-CPU.N`), else `/dev/fuse`.
    pub fn transport(&self) -> &'static str {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid()));
        let uring = tasks.into_iter().flatten().flatten().any(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.starts_with("fuse-uring-"))
        });
        if uring {
            "io_uring"
        } else {
            "/dev/fuse"
        }
    }

    /// Raises this process's descriptor limit (which the server inherits)
    /// towards [`SERVER_NOFILE`], as far as it may; the limit now.
    fn raise_nofile() -> u64 {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
        for limit in [SERVER_NOFILE.max(hard), hard] {
            if setrlimit(Resource::RLIMIT_NOFILE, limit, limit).is_ok() {
                return limit;
            }
        }
        1024
    }

    /// The most regions the server can hold (each holds a descriptor).
    pub fn max_regions(&self) -> u64 {
        self.max_regions
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident memory (kB) and open descriptors.
    pub fn rss_and_fds(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let rss = crate::procfs::field(&status, "VmRSS").unwrap_or(0);
        let fds =
            std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, |d| d.count() as u64);
        (rss, fds)
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        // umount frees the regions and ends the server.
        let _ = nix::mount::umount(&self.dir);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.root);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
        for kind in ["thp", "shmem", "hugetlb"] {
            let _ = nix::mount::umount2(
                &self.root.join("state").join(kind),
                nix::mount::MntFlags::MNT_DETACH,
            );
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

/// The hugetlb pool as it was before the benchmark; put back on drop if
/// the benchmark changed it (and only then, so that a run that needs no
/// huge pages never touches the pool).
#[derive(Debug)]
pub struct Pool {
    before: u64,
    changed: std::cell::Cell<bool>,
}

fn read_pool() -> Result<u64, BenchError> {
    std::fs::read_to_string(NR_HUGEPAGES)
        .map_err(|e| BenchError::io("reading", Path::new(NR_HUGEPAGES), e))?
        .trim()
        .parse()
        .map_err(|_| BenchError::Setup(format!("{NR_HUGEPAGES} is not a number")))
}

/// Free huge pages now.
fn free_pages() -> u64 {
    crate::procfs::meminfo("HugePages_Free")
}

impl Pool {
    /// Remembers the pool.
    pub fn remember() -> Result<Pool, BenchError> {
        Ok(Pool {
            before: read_pool()?,
            changed: std::cell::Cell::new(false),
        })
    }

    /// Makes `pages` free huge pages available (on top of what is in use),
    /// compacting memory first; says how many it reserved.
    pub fn reserve(&self, pages: u64) -> Result<(), BenchError> {
        let free = free_pages();
        if free >= pages {
            return Ok(());
        }
        let want = read_pool()? + (pages - free);
        let _ = std::fs::write("/proc/sys/vm/compact_memory", "1");
        self.changed.set(true);
        std::fs::write(NR_HUGEPAGES, want.to_string())
            .map_err(|e| BenchError::io("writing", Path::new(NR_HUGEPAGES), e))?;
        let got = free_pages();
        if got < pages {
            return Err(BenchError::Setup(format!(
                "needs {pages} free huge pages, the pool grew to {} with {got} free: \
                 free memory or run with a smaller --size/--scale-size",
                read_pool()?
            )));
        }
        Ok(())
    }

    /// Gives back what is not in use (back to the size before).
    pub fn shrink(&self) {
        if self.changed.get() {
            let _ = std::fs::write(NR_HUGEPAGES, self.before.to_string());
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shrink();
    }
}
