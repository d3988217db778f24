//! Where the server serves: a directory to mount on, a dead mount that a
//! killed server left there (detached before mounting again), or a
//! `/dev/fuse` descriptor that a privileged helper already mounted
//! (`/dev/fd/N`, as libfuse accepts).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{info, warn};
use nix::errno::Errno;

use crate::{mount, sys};

/// Where to serve.
#[derive(Debug)]
pub enum Target {
    /// A directory to mount on.
    Dir(PathBuf),
    /// A mount point whose server died (`ENOTCONN`, or `ECONNABORTED` for
    /// a request that was waiting on the dead server's io_uring queue).
    Dead(PathBuf),
    /// A `/dev/fuse` descriptor a helper mounted: the server neither
    /// mounts nor unmounts.
    Fd(OwnedFd),
}

/// How long the kernel may take to tear down the io_uring queues of a
/// server that died, before its mount answers `ENOTCONN`.
const TEARDOWN: Duration = Duration::from_secs(5);

/// What the mount point's own file system answers, asked of it now.
fn ask(path: &Path) -> Result<bool, Errno> {
    let mut answer = sys::is_dir_now(path);
    // Just after its server died, a request that reaches the dead
    // server's io_uring queues before the kernel has torn them down ends
    // ECANCELED (its task is gone) or EFAULT (so is its memory); asked
    // again, the mount answers ENOTCONN once the teardown is done.
    let deadline = Instant::now() + TEARDOWN;
    while matches!(answer, Err(Errno::ECANCELED | Errno::EFAULT)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        answer = sys::is_dir_now(path);
    }
    answer
}

impl Target {
    /// The target `mountpoint` names.
    pub fn parse(mountpoint: &Path) -> Result<Target, String> {
        let shown = mountpoint.display();
        if let Some(n) = fd_number(mountpoint) {
            let fd = n.ok_or_else(|| format!("{shown}: not a descriptor number"))?;
            return sys::fuse_device(fd).map(Target::Fd);
        }
        let path = absolute(mountpoint).map_err(|e| format!("{shown}: {e}"))?;
        Self::of(path, ask)
    }

    /// The target at `path` (absolute), given what its file system answers.
    fn of(path: PathBuf, ask: impl FnOnce(&Path) -> Result<bool, Errno>) -> Result<Target, String> {
        match ask(&path) {
            Ok(true) => Ok(Target::Dir(path)),
            Ok(false) => Err(format!("{}: not a directory", path.display())),
            // ECONNREFUSED: a connection whose server failed before it
            // answered the kernel's INIT, as dead as the others.
            Err(Errno::ENOTCONN | Errno::ECONNABORTED | Errno::ECONNREFUSED) => {
                Ok(Target::Dead(path))
            }
            Err(e) => Err(format!("{}: {}", path.display(), e.desc())),
        }
    }

    /// The mount point, where it is known.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            Target::Dir(d) | Target::Dead(d) => Some(d),
            Target::Fd(_) => None,
        }
    }

    /// A live target: a dead mount is detached first.
    pub fn revive(self) -> Result<Target, String> {
        match self {
            Target::Dead(dir) => {
                detach_dead(&dir)?;
                Ok(Target::Dir(dir))
            }
            t => Ok(t),
        }
    }
}

/// `Some(n)` for `/dev/fd/N` (`Some(None)` when N is not a number).
fn fd_number(p: &Path) -> Option<Option<i32>> {
    let n = p.to_str()?.strip_prefix("/dev/fd/")?;
    Some(n.parse().ok())
}

/// `p` made absolute without resolving its last component (which may be a
/// dead mount that cannot be looked at).
pub fn absolute(p: &Path) -> std::io::Result<PathBuf> {
    let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
        return p.canonicalize();
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    Ok(parent.canonicalize()?.join(name))
}

/// Detaches the dead msharefs mount on `dir` that a killed server left.
fn detach_dead(dir: &Path) -> Result<(), String> {
    let shown = dir.display();
    let began = Instant::now();
    if !mount::msharefs_on(dir) {
        return Err(format!(
            "{shown}: not connected (a dead mount that is not msharefs's: unmount it first)"
        ));
    }
    let looked = began.elapsed();
    nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| format!("cannot detach the dead mount on {shown}: {e}"))?;
    info!("detached the dead msharefs mount on {shown} that a previous server left");
    // Both wait on the kernel's mount table; say so when that was slow
    // (a restart under load once took 11 s here or just before).
    if began.elapsed() > Duration::from_secs(1) {
        warn!(
            "detaching took {:.1} s ({:.1} s reading the mount table)",
            began.elapsed().as_secs_f64(),
            looked.as_secs_f64()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_fd_paths_name_descriptors() {
        assert_eq!(fd_number(Path::new("/dev/fd/7")), Some(Some(7)));
        assert_eq!(fd_number(Path::new("/dev/fd/x")), Some(None));
        assert_eq!(fd_number(Path::new("/dev/fdx/7")), None);
        assert_eq!(fd_number(Path::new("/run/mshare")), None);
        let e = Target::parse(Path::new("/dev/fd/seven")).unwrap_err();
        assert!(e.contains("not a descriptor number"), "{e}");
    }

    #[test]
    fn a_descriptor_that_is_not_dev_fuse_is_refused() {
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        let n = std::os::fd::AsRawFd::as_raw_fd(&f);
        let e = Target::parse(Path::new(&format!("/dev/fd/{n}"))).unwrap_err();
        assert!(e.contains("not a /dev/fuse descriptor"), "{e}");
    }

    #[test]
    fn relative_paths_become_absolute_without_resolving_the_last_part() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/nonexistent", &link).unwrap();
        let canon = dir.path().canonicalize().unwrap();
        assert_eq!(absolute(&link).unwrap(), canon.join("link"));
        assert!(absolute(&dir.path().join("missing/x")).is_err());
    }

    #[test]
    fn what_the_mount_point_answers_decides_the_target() {
        let p = PathBuf::from("/m");
        assert!(matches!(
            Target::of(p.clone(), |_| Ok(true)),
            Ok(Target::Dir(_))
        ));
        for dead in [Errno::ENOTCONN, Errno::ECONNABORTED, Errno::ECONNREFUSED] {
            assert!(matches!(
                Target::of(p.clone(), |_| Err(dead)),
                Ok(Target::Dead(_))
            ));
        }
        let e = Target::of(p.clone(), |_| Ok(false)).unwrap_err();
        assert_eq!(e, "/m: not a directory");
        let e = Target::of(p, |_| Err(Errno::ENOENT)).unwrap_err();
        assert_eq!(e, "/m: No such file or directory");
    }
}
