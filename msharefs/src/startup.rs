//! What the server sets up before it mounts: the state directory and what
//! a previous server left in it (adopted, or the start refused), the
//! descriptor limit, the worker count and the hugetlb ceiling.

use std::sync::Arc;

use log::{info, warn};

use crate::fs::MshareFs;
use crate::options::Options;
use crate::state::{self, Snapshot, StateDir};
use crate::target::Target;

/// What a server without a state directory means for libmshare.
const NO_MEMORY_FILES: &str = "Without memory files in a state directory, libmshare attaches \
     thp and shmem regions only through the region file (FUSE passthrough, which needs \
     CAP_SYS_ADMIN) and hugetlb regions not at all";

/// Opens the state directory for a server on `target`: the one `state_dir=`
/// names, else the mount point's default. `None` (regions do not outlive
/// the server, and the log says why): a `/dev/fd/N` mount without
/// `state_dir=`, or a server that may not make the default directory.
pub fn open_state(opts: &Options, target: &Target) -> Result<Option<(StateDir, Snapshot)>, String> {
    let (path, explicit) = match (&opts.state_dir, target.dir()) {
        (Some(p), _) => (p.clone(), true),
        (None, Some(dir)) => (state::default_path(dir), false),
        (None, None) => {
            warn!(
                "regions will not outlive this server: give -o state_dir=DIR to keep them. {NO_MEMORY_FILES}"
            );
            return Ok(None);
        }
    };
    if !explicit && !nix::unistd::geteuid().is_root() {
        warn!(
            "regions will not outlive this server: only root may keep them in {}. {NO_MEMORY_FILES}",
            path.display()
        );
        return Ok(None);
    }
    StateDir::open(&path, opts.align, opts.fresh).map(Some)
}

/// Takes over what a previous server left in `state` (the file system's
/// namespace is rebuilt from `snap`), frees the memory of regions removed
/// before it stopped, and gives the directory back. Refuses (changing
/// nothing) when a kept memory file exists but cannot be opened.
pub fn adopt(fs: &MshareFs, (dir, snap): (StateDir, Snapshot)) -> Result<StateDir, String> {
    let adopted = fs.adopt(&snap);
    if !adopted.refused.is_empty() {
        return Err(refusal(&adopted.refused));
    }
    let orphans = dir.remove_files(&adopted.regions);
    if orphans > 0 {
        info!("freed the memory of {orphans} regions that were removed before the previous server stopped");
    }
    info!("regions are kept in {}", dir.path().display());
    Ok(dir)
}

/// Why a server that cannot open kept memory files does not start.
fn refusal(refused: &[String]) -> String {
    format!(
        "cannot open the memory of {} kept regions ({}); nothing was changed. \
         The server opens memory files that carry their regions' owners and modes: \
         it needs CAP_DAC_OVERRIDE, CAP_CHOWN and CAP_FOWNER",
        refused.len(),
        refused.join("; ")
    )
}

/// FUSE worker threads for `cpus` CPUs: enough that requests which wait in
/// the kernel (allocating or freeing gigabytes, reading /proc) from a few
/// users do not hold up everyone else's `open` and `close`.
pub fn worker_threads(cpus: usize) -> usize {
    (4 * cpus).clamp(8, 64)
}

/// Raises the soft descriptor limit to the hard one; the limit in force.
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => hard,
        Err(e) => {
            warn!("cannot raise RLIMIT_NOFILE from {soft} to {hard}: {e}");
            soft
        }
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes (0 if missing).
fn mem_total(meminfo: &str) -> u64 {
    let kb = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
    kb.map_or(0, |kb| kb * 1024)
}

/// `hugetlb_max=` in 2 MiB pages, on this machine.
pub fn hugetlb_max_pages(opts: &Options) -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    opts.hugetlb_max.bytes(mem_total(&meminfo)) / mshare_uapi::HUGE_PAGE_SIZE
}

/// Starts the thread that gives unused hugetlb pages back to the machine
/// (`hugetlb_pool=auto`).
pub fn tidy_pool(pool: &Arc<crate::hugepool::HugePool>) {
    let pool = pool.clone();
    let _ = std::thread::Builder::new()
        .name("hugetlb-pool".into())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            pool.tidy();
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_scale_with_cpus_within_bounds() {
        assert_eq!(worker_threads(1), 8);
        assert_eq!(worker_threads(2), 8);
        assert_eq!(worker_threads(4), 16);
        assert_eq!(worker_threads(64), 64);
    }

    #[test]
    fn mem_total_is_read_in_bytes() {
        let m = "MemFree: 5 kB\nMemTotal:       24576000 kB\n";
        assert_eq!(mem_total(m), 24576000 * 1024);
        assert_eq!(mem_total("MemFree: 5 kB\n"), 0);
    }

    #[test]
    fn a_refused_start_names_the_regions_and_the_capabilities() {
        let why = refusal(&["/a (EACCES)".into(), "/b (EACCES)".into()]);
        assert!(why.starts_with("cannot open the memory of 2 kept regions (/a (EACCES); /b"));
        assert!(why.contains("CAP_DAC_OVERRIDE"));
    }

    #[test]
    fn a_dev_fd_server_without_state_dir_keeps_nothing() {
        let fd = std::fs::File::open("/dev/null").unwrap().into();
        let opts = Options::defaults(true);
        assert!(open_state(&opts, &Target::Fd(fd)).unwrap().is_none());
    }

    #[test]
    fn state_dir_is_opened_where_asked() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = Options::defaults(true);
        opts.state_dir = Some(dir.path().join("state"));
        let fd = std::fs::File::open("/dev/null").unwrap().into();
        match open_state(&opts, &Target::Fd(fd)) {
            Ok(Some((s, snap))) => {
                assert_eq!(s.path(), dir.path().join("state"));
                assert!(snap.nodes.is_empty());
                s.discard();
            }
            // Not root: the directory checks may refuse; say so.
            other => assert!(!nix::unistd::geteuid().is_root(), "{:?}", other.err()),
        }
    }
}
