//! `msharectl ksm`: the kernel's same-page merging, the other half of
//! memory sharing. KSM merges identical *private anonymous* pages (never
//! shared memory such as msharefs regions): it is what saves memory for
//! the per-process heaps that regions do not hold.
//!
//! - [`read`]: whether the scanner runs, what it merged and what that
//!   saved (`/sys/kernel/mm/ksm`), and per process (`/proc/PID/ksm_stat`).
//! - [`run`]: turns merging on for a command and its children
//!   (`prctl(PR_SET_MEMORY_MERGE)`, inherited across `fork` and `execve`)
//!   and execs it.
//! - [`control`]: starts or stops the scanner, unmerging on request.
//!
//! # Safety
//!
//! [`run`] calls `prctl(2)` with plain integer arguments.
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;

use serde::Serialize;

use crate::procfs;

/// The scanner's directory.
const SYSFS: &str = "/sys/kernel/mm/ksm";

/// KSM as a whole.
#[derive(Debug, Serialize)]
pub struct Ksm {
    /// `run`: 0 stopped, 1 running, 2 stopped after unmerging.
    pub run: u64,
    /// `pages_to_scan` per wake-up.
    pub pages_to_scan: u64,
    /// `sleep_millisecs` between wake-ups.
    pub sleep_millisecs: u64,
    /// `pages_shared`: merged pages kept.
    pub pages_shared: u64,
    /// `pages_sharing`: pages that map a merged page (the saving).
    pub pages_sharing: u64,
    /// `full_scans` so far.
    pub full_scans: u64,
    /// `general_profit`: bytes saved, less KSM's own metadata.
    pub general_profit: i64,
    /// Processes with merging on or merged pages, most merged first.
    pub processes: Vec<KsmProcess>,
    /// The processes whose `ksm_stat` this user may not read (root may);
    /// their number in JSON.
    #[serde(serialize_with = "crate::procfs::count")]
    pub uninspected: Vec<u32>,
}

/// One process's `/proc/PID/ksm_stat`.
#[derive(Debug, Default, Serialize)]
pub struct KsmProcess {
    /// Process id.
    pub pid: u32,
    /// Command name.
    pub command: String,
    /// `ksm_merge_any`: merging on for the whole process (`ksm run`).
    pub merge_any: bool,
    /// `ksm_merging_pages`: its pages that map a merged page.
    pub merging_pages: u64,
    /// `ksm_process_profit`: bytes it saved, less metadata.
    pub profit: i64,
}

/// Why a KSM operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KsmError {
    /// The kernel has no KSM.
    #[error("{SYSFS}: {0} (a kernel without CONFIG_KSM?)")]
    Missing(io::Error),
    /// Changing the scanner failed.
    #[error("writing {path}: {source}{hint}", hint = if source.kind() == io::ErrorKind::PermissionDenied { " (only root may control KSM)" } else { "" })]
    Control {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// `prctl(PR_SET_MEMORY_MERGE)` failed.
    #[error("prctl(PR_SET_MEMORY_MERGE): {0}{hint}", hint = match .0.raw_os_error() {
        Some(libc::EPERM) => " (needs CAP_SYS_RESOURCE: run as root)",
        Some(libc::EINVAL) => " (the kernel is older than 6.4 or has no KSM)",
        _ => "",
    })]
    Prctl(io::Error),
    /// The command could not be executed.
    #[error("cannot run {command}: {source}")]
    Exec {
        /// The command.
        command: String,
        /// Why.
        source: io::Error,
    },
}

fn sysfs(name: &str) -> Result<u64, KsmError> {
    procfs::number(Path::new(SYSFS).join(name)).map_err(KsmError::Missing)
}

/// The value of `key` in a `ksm_stat` text, whose lines are `key value`
/// or `key: value`.
fn stat_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k.trim_end_matches(':') == key).then(|| v.trim())
    })
}

/// Reads one process's `ksm_stat` text.
pub fn parse_ksm_stat(pid: u32, command: String, text: &str) -> KsmProcess {
    let num = |k| {
        stat_field(text, k)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    KsmProcess {
        pid,
        command,
        merge_any: stat_field(text, "ksm_merge_any") == Some("yes"),
        merging_pages: num("ksm_merging_pages") as u64,
        profit: num("ksm_process_profit"),
    }
}

/// KSM now, and the processes it works for.
pub fn read() -> Result<Ksm, KsmError> {
    let general_profit = std::fs::read_to_string(Path::new(SYSFS).join("general_profit"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    let mut ksm = Ksm {
        run: sysfs("run")?,
        pages_to_scan: sysfs("pages_to_scan")?,
        sleep_millisecs: sysfs("sleep_millisecs")?,
        pages_shared: sysfs("pages_shared")?,
        pages_sharing: sysfs("pages_sharing")?,
        full_scans: sysfs("full_scans")?,
        general_profit,
        processes: Vec::new(),
        uninspected: Vec::new(),
    };
    for pid in procfs::pids() {
        match std::fs::read_to_string(format!("/proc/{pid}/ksm_stat")) {
            Ok(text) => {
                let p = parse_ksm_stat(pid, procfs::command(pid), &text);
                if p.merge_any || p.merging_pages > 0 {
                    ksm.processes.push(p);
                }
            }
            Err(e) if procfs::is_gap(&e) => {
                ksm.uninspected.push(pid);
            }
            Err(_) => {}
        }
    }
    ksm.processes.sort_by(|a, b| {
        b.merging_pages
            .cmp(&a.merging_pages)
            .then(a.pid.cmp(&b.pid))
    });
    Ok(ksm)
}

impl Ksm {
    /// The scanner's state as a word.
    pub fn state(&self) -> &'static str {
        match self.run {
            0 => "stopped",
            1 => "running",
            2 => "stopped (unmerged)",
            _ => "unknown",
        }
    }

    /// Bytes saved (never negative).
    pub fn saved(&self) -> u64 {
        self.general_profit.max(0) as u64
    }

    /// `key value` lines, a blank line and the process table.
    pub fn table(&self) -> String {
        let page = mshare_uapi::PAGE_SIZE;
        let mut out = format!(
            "state\t{}\npages_to_scan\t{}\nsleep_millisecs\t{}\npages_shared\t{}\npages_sharing\t{}\nsaved\t{}\nfull_scans\t{}\n",
            self.state(),
            self.pages_to_scan,
            self.sleep_millisecs,
            self.pages_shared,
            self.pages_sharing,
            self.general_profit,
            self.full_scans,
        );
        if !self.uninspected.is_empty() {
            out.push_str(&format!("uninspected\t{}\n", self.uninspected.len()));
        }
        out.push_str("\nPID\tMERGE_ANY\tMERGING\tSAVED\tCOMMAND\n");
        for p in &self.processes {
            out.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\n",
                p.pid,
                if p.merge_any { "yes" } else { "no" },
                p.merging_pages * page,
                p.profit,
                crate::names::escaped(p.command.as_ref()),
            ));
        }
        out
    }
}

/// What `ksm start|stop` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// `run = 1`, with optional scan rate.
    Start {
        /// `pages_to_scan`.
        pages_to_scan: Option<u64>,
        /// `sleep_millisecs`.
        sleep_millisecs: Option<u64>,
    },
    /// `run = 0` (merged pages stay merged).
    Stop,
    /// `run = 2`: unmerge every merged page, then stop.
    StopUnmerge,
}

/// Starts or stops the scanner (root).
pub fn control(c: Control) -> Result<(), KsmError> {
    let write = |name: &str, value: u64| {
        let path = Path::new(SYSFS).join(name);
        std::fs::write(&path, value.to_string()).map_err(|source| KsmError::Control {
            path: path.display().to_string(),
            source,
        })
    };
    sysfs("run")?; // a kernel without KSM says so first
    match c {
        Control::Start {
            pages_to_scan,
            sleep_millisecs,
        } => {
            if let Some(n) = pages_to_scan {
                write("pages_to_scan", n)?;
            }
            if let Some(ms) = sleep_millisecs {
                write("sleep_millisecs", ms)?;
            }
            write("run", 1)
        }
        Control::Stop => write("run", 0),
        Control::StopUnmerge => write("run", 2),
    }
}

/// Turns merging on for this process, inherited by `command` and its
/// children, and execs `command` (returns only on failure).
pub fn run(command: &[OsString]) -> KsmError {
    // SAFETY: prctl with integer arguments only; PR_SET_MEMORY_MERGE
    // changes how the kernel treats this process's anonymous memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_MEMORY_MERGE, 1, 0, 0, 0) };
    if rc != 0 {
        return KsmError::Prctl(io::Error::last_os_error());
    }
    let (program, args) = command.split_first().expect("clap requires a command");
    let source = std::process::Command::new(program).args(args).exec();
    KsmError::Exec {
        command: program.to_string_lossy().into_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ksm_stat() {
        let text = "ksm_rmap_items 8192\nksm_zero_pages 0\nksm_merging_pages 8190\n\
                    ksm_process_profit 32892928\nksm_merge_any: yes\nksm_mergeable: yes\n";
        let p = parse_ksm_stat(7, "dup".into(), text);
        assert!(p.merge_any);
        assert_eq!(p.merging_pages, 8190);
        assert_eq!(p.profit, 32892928);
        let off = parse_ksm_stat(
            8,
            "x".into(),
            "ksm_process_profit -4096\nksm_merge_any no\n",
        );
        assert!(!off.merge_any);
        assert_eq!(off.profit, -4096);
    }
}
