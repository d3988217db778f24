//! Regions that outlive the server.
//!
//! A server that serves a mount point keeps, in its state directory
//! (`/run/msharefs/state/<mount point, escaped>` unless `state_dir=` says
//! otherwise):
//!
//! - `thp/`, `shmem/`, `hugetlb/`: a private tmpfs (`huge=always`), tmpfs
//!   (`huge=never`) and hugetlbfs instance mounted there, mode 0711 (others
//!   may open a file whose name they were given, not list them), holding
//!   each region's memory as the file `r<inode>.<secret>`
//!   ([`crate::backing`]);
//! - `state`: the namespace (names, modes, owners, times, backing kinds,
//!   start, size, objects) in the versioned format of [`record`], kept
//!   current by the [`Journal`];
//! - `lock`: `flock`ed by the live server (and holding its pid), so that two
//!   servers never share the state.
//!
//! The directory and the ones above it that the server makes are mode 0711;
//! every file in it but the memory files is the server's alone (0600).
//!
//! Mounts and files stay when the server dies, so the next server started on
//! the same mount point adopts every region: same pages, so mappings made
//! before and after are coherent. A clean `umount` of the mount point
//! ([`StateDir::discard`]) frees everything; `-o fresh` starts empty.

pub mod journal;
pub mod kept;
pub mod record;

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use log::{info, warn};
use mshare_uapi::{Backing, RUN_DIR};
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::Mode;
use nix::sys::statfs::{FsType, HUGETLBFS_MAGIC, TMPFS_MAGIC};

pub use journal::Journal;
use journal::STATE_FILE;
pub use record::Snapshot;

use crate::backing::KindDir;
use crate::sys::private_dir;

/// The instance that holds each kept backing kind: kind, file system type,
/// its magic and mount options.
const INSTANCES: [(Backing, &str, FsType, &str); 3] = [
    (
        Backing::Thp,
        "tmpfs",
        TMPFS_MAGIC,
        "mode=0711,huge=always,size=100%",
    ),
    (
        Backing::Shmem,
        "tmpfs",
        TMPFS_MAGIC,
        "mode=0711,huge=never,size=100%",
    ),
    (Backing::Hugetlb, "hugetlbfs", HUGETLBFS_MAGIC, "mode=0711"),
];

/// The default state directory of a server on `mountpoint` (absolute).
pub fn default_path(mountpoint: &Path) -> PathBuf {
    Path::new(RUN_DIR)
        .join("state")
        .join(escape_path(mountpoint))
}

/// A path as one file name, the way `systemd-escape --path` writes it:
/// `/run/mshare` is `run-mshare`.
pub fn escape_path(p: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let trimmed = p.as_os_str().as_bytes();
    let trimmed = trimmed.strip_prefix(b"/").unwrap_or(trimmed);
    let trimmed = trimmed.strip_suffix(b"/").unwrap_or(trimmed);
    if trimmed.is_empty() {
        return "-".into();
    }
    let mut s = String::new();
    for (i, &b) in trimmed.iter().enumerate() {
        match b {
            b'/' => s.push('-'),
            b'.' if i == 0 => s.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b':' => {
                s.push(b as char)
            }
            b => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

/// A server's state directory, locked for this process.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    /// The held `flock` on `lock`.
    lock: Flock<File>,
    /// The instance directory of every kind that is kept.
    kinds: Vec<(Backing, OwnedFd)>,
}

/// The first directory above `path` (or `path` itself) that others may
/// not search, if any.
fn unsearchable_above(path: &Path) -> Option<String> {
    path.ancestors()
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.mode() & 0o001 == 0))
        .map(|p| p.display().to_string())
}

impl StateDir {
    /// Opens (making what is missing) and locks the state directory at
    /// `path`, mounts the backing instances that are not mounted yet, and
    /// reads the state a previous server left. `fresh` discards that state
    /// first. Refuses a directory that another live server holds, a state
    /// written with another `align=`, and a format this version cannot read.
    pub fn open(path: &Path, align: u64, fresh: bool) -> Result<(StateDir, Snapshot), String> {
        let shown = path.display();
        if let Some(parent) = path.parent() {
            if parent == Path::new(RUN_DIR).join("state") {
                private_dir(Path::new(RUN_DIR), 0o755)?;
                private_dir(parent, 0o711)?;
            }
        }
        private_dir(path, 0o711)?;
        if let Some(above) = unsearchable_above(path) {
            warn!(
                "{above} is not searchable by other users: libmshare cannot attach their \
                 regions (their memory files are below it)"
            );
        }
        let lock = lock(&path.join("lock"))?;
        let mut kinds = Vec::new();
        for (kind, fstype, magic, data) in INSTANCES {
            match instance(&path.join(kind.as_str()), fstype, magic, data) {
                Ok(dir) => kinds.push((kind, dir)),
                Err(e) => warn!("{kind} regions will not outlive this server: {e}"),
            }
        }
        let state = StateDir {
            path: path.to_path_buf(),
            lock,
            kinds,
        };
        if fresh {
            state.remove_files(&HashSet::new());
            let _ = std::fs::remove_file(path.join(STATE_FILE));
            info!("fresh: discarded the regions kept in {shown}");
        }
        let snap = match std::fs::read_to_string(path.join(STATE_FILE)) {
            Ok(text) => record::read(&text).map_err(|e| format!("{shown}/state: {e}"))?,
            Err(e) if e.kind() == ErrorKind::NotFound => Snapshot::default(),
            Err(e) => return Err(format!("{shown}/state: {e}")),
        };
        for (line, why) in &snap.skipped {
            warn!("{shown}/state line {line} skipped: {why}");
        }
        if !snap.nodes.is_empty() && snap.align != align {
            return Err(format!(
                "the regions kept in {shown} were made with align={}: start with -o align={} \
                 to adopt them, or -o fresh to discard them",
                snap.align, snap.align
            ));
        }
        Ok((state, snap))
    }

    /// The state directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes this process's pid in the lock again: the lock (an `flock`,
    /// which a forked child holds with its parent) was taken before the
    /// server detached, and the pid written then is the parent's, which
    /// has exited.
    pub fn write_pid(&mut self) {
        if let Err(e) = write_pid(&mut self.lock) {
            warn!("{}/lock: {e}", self.path.display());
        }
    }

    /// Notes the time the regions were kept with no server (the lock's
    /// modification time, which `msharectl kept` shows).
    pub fn mark_kept(&self) {
        if let Err(e) = self.lock.set_modified(std::time::SystemTime::now()) {
            warn!("{}/lock: {e}", self.path.display());
        }
    }

    /// A journal in this directory starting from `snap`.
    pub fn journal(&self, snap: &Snapshot, align: u64) -> Result<Journal, String> {
        let dir = nix::fcntl::open(
            &self.path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("{}: {e}", self.path.display()))?;
        Journal::open(dir, snap, align)
            .map_err(|e| format!("cannot write {}/state: {e}", self.path.display()))
    }

    /// The directory of every kept kind (for the backing store).
    pub fn kind_dirs(&self) -> Vec<KindDir> {
        self.kinds
            .iter()
            .filter_map(|(k, d)| {
                d.try_clone().ok().map(|dir| KindDir {
                    kind: *k,
                    dir,
                    path: self.path.join(k.as_str()),
                })
            })
            .collect()
    }

    /// Removes every backing file but `keep` (`(kind, inode)`): what a dead
    /// server left of regions that were already removed.
    pub fn remove_files(&self, keep: &HashSet<(Backing, u64)>) -> usize {
        let mut removed = 0;
        for (kind, _) in &self.kinds {
            let dir = self.path.join(kind.as_str());
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let ino = e.file_name().to_str().and_then(crate::backing::ino_of);
                if ino.is_some_and(|i| keep.contains(&(*kind, i))) {
                    continue;
                }
                if std::fs::remove_file(e.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Frees everything (after a clean `umount`): removes every backing file
    /// and the state, and detaches the instances. Memory still mapped by
    /// processes stays theirs until they unmap it.
    pub fn discard(self) {
        self.remove_files(&HashSet::new());
        for (kind, _) in &self.kinds {
            let dir = self.path.join(kind.as_str());
            if let Err(e) = nix::mount::umount2(&dir, MntFlags::MNT_DETACH) {
                warn!("cannot unmount {}: {e}", dir.display());
            }
            let _ = std::fs::remove_dir(&dir);
        }
        for f in [
            STATE_FILE,
            "state.new",
            "lock",
            crate::hugepool::RECORD_FILE,
        ] {
            let _ = std::fs::remove_file(self.path.join(f));
        }
        match std::fs::remove_dir(&self.path) {
            Ok(()) => info!("freed every region and removed {}", self.path.display()),
            Err(e) => warn!("cannot remove {}: {e}", self.path.display()),
        }
    }
}

/// Takes the lock of the state directory and writes this process's pid in
/// it; a live holder makes it an error that names that holder.
fn lock(path: &Path) -> Result<Flock<File>, String> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut held = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((mut file, _)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(format!(
                "{} is held by msharefs pid {}: another server serves this mount point",
                path.parent().unwrap_or(path).display(),
                pid.trim()
            ));
        }
    };
    write_pid(&mut held).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(held)
}

/// Replaces what `lock` holds with this process's pid.
fn write_pid(lock: &mut File) -> std::io::Result<()> {
    lock.set_len(0)?;
    lock.rewind()?;
    writeln!(lock, "{}", std::process::id())
}

/// The directory of one backing instance at `dir`: mounted there unless a
/// previous server's instance of the same type already is.
fn instance(dir: &Path, fstype: &str, magic: FsType, data: &str) -> Result<OwnedFd, String> {
    let shown = dir.display();
    match std::fs::DirBuilder::new().mode(0o711).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("{shown}: {e}")),
    }
    let mounted = |dir: &Path| -> Result<bool, String> {
        let here = std::fs::metadata(dir).map_err(|e| format!("{shown}: {e}"))?;
        let above = std::fs::metadata(dir.join("..")).map_err(|e| format!("{shown}/..: {e}"))?;
        Ok(here.dev() != above.dev())
    };
    if mounted(dir)? {
        let fs = nix::sys::statfs::statfs(dir).map_err(|e| format!("{shown}: {e}"))?;
        if fs.filesystem_type() != magic {
            return Err(format!(
                "{shown} is a mount point of another file system type"
            ));
        }
        info!("adopting the {fstype} instance at {shown}");
    } else {
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        nix::mount::mount(Some("msharefs"), dir, Some(fstype), flags, Some(data))
            .map_err(|e| format!("cannot mount {fstype} on {shown}: {e}"))?;
    }
    let fd = nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("{shown}: {e}"))?;
    // An instance mounted by an older server is 0700.
    nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(0o711))
        .map_err(|e| format!("{shown}: {e}"))?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_escape_like_systemd() {
        assert_eq!(escape_path(Path::new("/run/mshare")), "run-mshare");
        assert_eq!(escape_path(Path::new("/")), "-");
        assert_eq!(escape_path(Path::new("/a b/.c-d/")), "a\\x20b-.c\\x2dd");
        assert_eq!(escape_path(Path::new("/.x")), "\\x2ex");
        assert_eq!(
            default_path(Path::new("/run/mshare")),
            Path::new("/run/msharefs/state/run-mshare")
        );
    }
}
