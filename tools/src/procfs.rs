//! Reading `/proc` and `/sys` figures: the few parsers every part of
//! msharectl shares.

use std::path::Path;

/// The number in the `key:` line of a `/proc` file's `text` (a
/// `/proc/meminfo`, `/proc/PID/status` or `smaps` figure, in kB or pages).
pub fn field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A `/proc/meminfo` figure (0 if it cannot be read).
pub fn meminfo(key: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    field(&text, key).unwrap_or(0)
}

/// A file holding one number (`/sys/kernel/mm/...`).
pub fn number(path: impl AsRef<Path>) -> std::io::Result<u64> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)?;
    text.trim().parse().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: not a number: {:?}", path.display(), text.trim()),
        )
    })
}

/// Whether `e`, from reading a process's `/proc` files, is a gap in what
/// this user sees: a permission denial that root would not get. Root is
/// denied only what nobody here may inspect (a sandbox's init); counting
/// that would warn on every query.
pub fn is_gap(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::PermissionDenied && !nix::unistd::geteuid().is_root()
}

/// The pids in `/proc`, in increasing order.
pub fn pids() -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

/// A process's command name (`/proc/PID/comm`), `?` if it is gone.
pub fn command(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end_matches('\n').to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A process's real uid (`Uid:` of `/proc/PID/status`).
pub fn uid(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// Serializes the processes that could not be inspected as their number
/// (what the JSON reports; the text warning names them).
pub fn count<S: serde::Serializer>(pids: &[u32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(pids.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_uids() {
        let status = "Name:\tx\nUid:\t1000\t1000\t1000\t1000\nVmPTE:\t  52 kB\n";
        assert_eq!(field(status, "VmPTE"), Some(52));
        assert_eq!(field(status, "VmRSS"), None);
        assert_eq!(uid(status), Some(1000));
    }
}
