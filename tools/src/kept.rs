//! `msharectl kept`: regions that a server stopped by a signal or killed
//! kept for the next server on its mount point, with no server now: where
//! they belong, how much memory they hold and since when; freed on request.
//! The server's own code reads and frees them (`msharefs::state::kept`).

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use indicatif::BinaryBytes;
use msharefs::state::kept::{self, Kept};
use serde::Serialize;

/// One state directory that no server holds.
#[derive(Debug, Serialize)]
pub struct KeptReport {
    /// The mount point it belongs to (`null` for a `state_dir=` elsewhere).
    pub mountpoint: Option<PathBuf>,
    /// The state directory.
    pub state_dir: PathBuf,
    /// Regions recorded in it.
    pub regions: usize,
    /// Bytes of memory they hold.
    pub bytes: u64,
    /// Of those, 2 MiB hugetlb pages.
    pub huge_pages: u64,
    /// Since when (seconds since the epoch): when its server stopped, or
    /// last changed it before it was killed.
    pub since: Option<u64>,
}

impl From<Kept> for KeptReport {
    fn from(k: Kept) -> Self {
        KeptReport {
            mountpoint: k.mountpoint,
            state_dir: k.path,
            regions: k.regions,
            bytes: k.bytes,
            huge_pages: k.huge_pages,
            since: k
                .since
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
        }
    }
}

/// Why kept state cannot be freed.
#[derive(Debug, thiserror::Error)]
pub enum KeptError {
    /// Not root.
    #[error("freeing kept regions needs root")]
    NotRoot,
    /// Nothing kept there.
    #[error("{0}: no kept regions there (see `msharectl kept`)")]
    NotKept(String),
    /// A live server holds it.
    #[error(
        "{path}: held by msharefs pid {pid}, which serves it: `umount` its mount point \
         to free the regions"
    )]
    Held {
        /// The state directory.
        path: String,
        /// The server.
        pid: u32,
    },
    /// Freeing failed.
    #[error("{0}")]
    Free(String),
}

/// Every state directory that no server holds.
pub fn orphans() -> Vec<KeptReport> {
    kept::list()
        .into_iter()
        .filter(|k| k.held_by.is_none())
        .map(KeptReport::from)
        .collect()
}

/// The state directory `arg` names: itself if it is one (a directory,
/// not in a FUSE mount, with a `lock`), else the default state directory
/// of mount point `arg`.
fn state_dir_of(arg: &Path) -> PathBuf {
    const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
    let in_fuse =
        nix::sys::statfs::statfs(arg).is_ok_and(|s| s.filesystem_type().0 == FUSE_SUPER_MAGIC);
    if !in_fuse && arg.join("lock").is_file() {
        return arg.to_path_buf();
    }
    let abs = std::path::absolute(arg).unwrap_or(arg.to_path_buf());
    kept::root().join(msharefs::state::escape_path(&abs))
}

/// Frees the kept state of each of `args` (mount points or state
/// directories), or of every orphan with `all`; what was freed. Stops at
/// the first that cannot be freed.
pub fn free(args: &[PathBuf], all: bool) -> Result<Vec<KeptReport>, KeptError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(KeptError::NotRoot);
    }
    let dirs: Vec<PathBuf> = if all {
        orphans().into_iter().map(|k| k.state_dir).collect()
    } else {
        args.iter().map(|a| state_dir_of(a)).collect()
    };
    let mut freed = Vec::new();
    for (dir, arg) in dirs
        .iter()
        .zip(args.iter().map(Some).chain(std::iter::repeat(None)))
    {
        let shown = arg.unwrap_or(dir).display().to_string();
        if !dir.is_dir() {
            return Err(KeptError::NotKept(shown));
        }
        if let Some(pid) = kept::describe(dir).held_by {
            return Err(KeptError::Held { path: shown, pid });
        }
        freed.push(kept::free(dir).map_err(KeptError::Free)?.into());
    }
    Ok(freed)
}

/// Tab-separated rows under a header; sizes in binary units.
pub fn table(rows: &[KeptReport]) -> String {
    let mut s = String::from("MOUNTPOINT\tREGIONS\tMEMORY\tSINCE\tSTATE_DIR\n");
    for r in rows {
        let point = r
            .mountpoint
            .as_ref()
            .map_or("-".into(), |p| crate::names::escaped(p.as_os_str()));
        let since = r.since.map_or("-".into(), format_time);
        s.push_str(&format!(
            "{point}\t{}\t{}\t{since}\t{}\n",
            r.regions,
            BinaryBytes(r.bytes),
            crate::names::escaped(r.state_dir.as_os_str())
        ));
    }
    s
}

/// Seconds since the epoch as UTC `YYYY-MM-DDTHH:MM:SSZ`.
fn format_time(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_time(1_796_235_000), "2026-12-02T18:10:00Z");
    }

    #[test]
    fn a_mount_point_names_its_default_state_directory() {
        assert_eq!(
            state_dir_of(Path::new("/run/mshare")),
            Path::new("/run/msharefs/state/run-mshare")
        );
    }
}
