//! Kept state that no server holds: what a server stopped by a signal or
//! killed left in its state directory for the next server on its mount
//! point, found, described and freed on request (`msharectl kept`).
//!
//! A state directory is *held* while a live server has its `lock`
//! `flock`ed; one that nobody holds keeps its regions' memory with nobody
//! to free it until a server is started on its mount point again. These
//! functions never take the state of a live server: [`free`] takes the lock
//! first and refuses a held directory, naming the server's pid.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use mshare_uapi::{Backing, PoolPolicy, HUGE_PAGE_SIZE, RUN_DIR};
use nix::fcntl::{Flock, FlockArg};

use super::journal::STATE_FILE;
use super::record::{self, NodeKind};
use super::StateDir;
use crate::hugepool::{HugePool, RECORD_FILE};

/// The directory that holds every default state directory.
pub fn root() -> PathBuf {
    Path::new(RUN_DIR).join("state")
}

/// One state directory and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    /// The state directory.
    pub path: PathBuf,
    /// The mount point it belongs to (its name, unescaped), if it is a
    /// default state directory.
    pub mountpoint: Option<PathBuf>,
    /// The pid of the live server that holds it; `None` when nobody does.
    pub held_by: Option<u32>,
    /// Regions recorded in its state.
    pub regions: usize,
    /// Bytes of memory its regions' files hold.
    pub bytes: u64,
    /// Of those, 2 MiB hugetlb pages.
    pub huge_pages: u64,
    /// When its last server last changed it (at the latest, when that
    /// server stopped).
    pub since: Option<SystemTime>,
}

/// The inverse of [`super::escape_path`]: `run-mshare` is `/run/mshare`.
/// `None` for a name `escape_path` cannot have written.
pub fn unescape_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    if name == "-" {
        return Some(PathBuf::from("/"));
    }
    let b = name.as_bytes();
    let mut out = vec![b'/'];
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'-' => out.push(b'/'),
            b'\\' => {
                let hex = name
                    .get(i + 2..i + 4)
                    .filter(|_| b.get(i + 1) == Some(&b'x'))?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            c => out.push(c),
        }
        i += 1;
    }
    Some(PathBuf::from(std::ffi::OsString::from_vec(out)))
}

/// The state directories under [`root`], held or not, by name.
pub fn list() -> Vec<Kept> {
    let Ok(entries) = std::fs::read_dir(root()) else {
        return Vec::new();
    };
    let mut all: Vec<Kept> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| describe(&e.path()))
        .collect();
    all.sort_by(|a, b| a.path.cmp(&b.path));
    all
}

/// What the state directory at `path` holds, and who holds it.
pub fn describe(path: &Path) -> Kept {
    let snap = std::fs::read_to_string(path.join(STATE_FILE))
        .ok()
        .and_then(|t| record::read(&t).ok());
    let regions = snap.map_or(0, |s| {
        s.nodes
            .values()
            .filter(|n| matches!(n.kind, NodeKind::Region(_)))
            .count()
    });
    let (mut bytes, mut huge_pages) = (0, 0);
    for kind in [Backing::Thp, Backing::Shmem, Backing::Hugetlb] {
        let Ok(files) = std::fs::read_dir(path.join(kind.as_str())) else {
            continue;
        };
        for m in files.flatten().filter_map(|f| f.metadata().ok()) {
            let held = m.blocks() * 512;
            bytes += held;
            if kind == Backing::Hugetlb {
                huge_pages += held / HUGE_PAGE_SIZE;
            }
        }
    }
    let since = [STATE_FILE, "lock"]
        .iter()
        .filter_map(|f| std::fs::metadata(path.join(f)).ok()?.modified().ok())
        .max();
    let mountpoint = (path.parent() == Some(root().as_path()))
        .then(|| path.file_name()?.to_str().and_then(unescape_path))
        .flatten();
    Kept {
        path: path.to_path_buf(),
        mountpoint,
        held_by: holder(path),
        regions,
        bytes,
        huge_pages,
        since,
    }
}

/// The pid of the live server that holds the state directory at `path`.
fn holder(path: &Path) -> Option<u32> {
    let file = File::open(path.join("lock")).ok()?;
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_) => None,
        Err((mut file, _)) => {
            use std::io::Read;
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Some(pid.trim().parse().unwrap_or(0))
        }
    }
}

/// Frees the state directory at `path` that no server holds: its regions'
/// memory (what clients still map stays theirs until they unmap it), the
/// hugetlb pages its server added to the pool, its instances and files.
/// What it freed, as it was before.
pub fn free(path: &Path) -> Result<Kept, String> {
    let before = describe(path);
    if !path.join("lock").exists() && !path.join(STATE_FILE).exists() {
        return Err(format!("{}: not a state directory", path.display()));
    }
    // Taking the lock refuses a directory that a live server holds.
    let (dir, _) = StateDir::open(path, 0, true)?;
    HugePool::new(
        PoolPolicy::Auto,
        u64::MAX,
        Some(path.join(RECORD_FILE)),
        true,
    );
    dir.discard();
    Ok(before)
}

#[cfg(test)]
mod tests {
    use super::super::escape_path;
    use super::*;

    #[test]
    fn names_read_back_as_the_mount_points_they_escape() {
        for p in [
            "/run/mshare",
            "/",
            "/tmp/x/db shm",
            "/a\tb\\c/.d-e",
            "/ü/x:y_z.w",
        ] {
            let name = escape_path(Path::new(p));
            assert_eq!(
                unescape_path(&name).as_deref(),
                Some(Path::new(p)),
                "{name}"
            );
        }
        assert_eq!(unescape_path("bad\\x"), None);
        assert_eq!(unescape_path("bad\\zz1"), None);
    }
}
