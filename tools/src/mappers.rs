//! Who maps a region, and what those mappings cost.
//!
//! A region shows up in `/proc/PID/maps` under one of two identities: the
//! region file's own device and inode (a mapping of the region file, through
//! FUSE passthrough) or its backing file's (a libmshare mapping), which the
//! server tells in `user.mshare.memory`. [`scan`] reads `/proc/PID/maps` of
//! every process, and `smaps` of those that map a wanted identity, and sums
//! per process and region:
//!
//! - `mapped`: the size of the mappings;
//! - `resident`: `Rss` plus hugetlb pages (`Shared_Hugetlb`,
//!   `Private_Hugetlb`, which `Rss` leaves out);
//! - `page_tables`: an estimate of the page-table memory those mappings
//!   cost: 8 bytes for each 4 KiB page mapped by a PTE and for each 2 MiB
//!   mapped by a PMD (`ShmemPmdMapped`, `FilePmdMapped`, hugetlb pages),
//!   where the PMD tables of a hugetlb mapping of whole 1 GiB-aligned
//!   ranges, which the kernel shares between the processes mapping them,
//!   count once, split between those processes;
//! - `page_tables_4k`: what the same resident memory would cost in 4 KiB
//!   pages (8 bytes per 4 KiB).
//!
//! A process whose maps this user may not read (another user's, for a
//! caller that is not root) is counted in [`Scan::uninspected`], so the
//! caller can say so instead of under-counting silently.

use std::collections::{HashMap, HashSet};

use mshare_uapi::{MemoryId, HUGE_PAGE_SIZE, PAGE_SIZE};
use serde::Serialize;

use msharefs::transient::maps_identity as identity;

use crate::procfs;

/// 1 GiB: the range a PMD table covers.
const PUD_SIZE: u64 = 1 << 30;
/// Bytes of one page-table entry.
const ENTRY: u64 = 8;

/// One process's mappings of one region.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Mapper {
    /// Process id.
    pub pid: u32,
    /// Command name (`/proc/PID/comm`).
    pub command: String,
    /// Real uid.
    pub uid: u32,
    /// Bytes mapped.
    pub mapped: u64,
    /// Bytes of the mappings resident in memory.
    pub resident: u64,
    /// Estimated page-table bytes of the mappings.
    pub page_tables: u64,
    /// Page-table bytes the resident memory would cost in 4 KiB pages.
    pub page_tables_4k: u64,
    /// The process's whole page-table memory (`VmPTE`), for comparison.
    pub process_page_tables: u64,
}

/// One mapping (`smaps` entry) of a wanted identity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vma {
    /// Start address.
    pub start: u64,
    /// End address.
    pub end: u64,
    /// `Rss`, bytes.
    pub rss: u64,
    /// `ShmemPmdMapped` + `FilePmdMapped`, bytes.
    pub pmd_mapped: u64,
    /// `Shared_Hugetlb` + `Private_Hugetlb`, bytes.
    pub hugetlb: u64,
}

impl Vma {
    /// Whether its hugetlb PMD tables are shared between processes: it
    /// covers whole 1 GiB-aligned ranges.
    fn shares_pmd_tables(&self) -> bool {
        self.hugetlb > 0 && self.start % PUD_SIZE == 0 && self.end % PUD_SIZE == 0
    }

    /// Estimated page-table bytes, with shared PMD tables split between
    /// `sharers` processes.
    pub fn page_tables(&self, sharers: u64) -> u64 {
        let ptes = self.rss.saturating_sub(self.pmd_mapped) / PAGE_SIZE * ENTRY;
        let pmds = self.pmd_mapped / HUGE_PAGE_SIZE * ENTRY;
        let huge = self.hugetlb / HUGE_PAGE_SIZE * ENTRY;
        let huge = if self.shares_pmd_tables() {
            huge / sharers.max(1)
        } else {
            huge
        };
        ptes + pmds + huge
    }

    /// Page-table bytes of its resident memory in 4 KiB pages.
    pub fn page_tables_4k(&self) -> u64 {
        (self.rss + self.hugetlb) / PAGE_SIZE * ENTRY
    }
}

/// What one pass over `/proc` found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Per identity, per pid: the mappings.
    vmas: HashMap<MemoryId, HashMap<u32, Vec<Vma>>>,
    /// Per pid: (command, uid, VmPTE bytes).
    procs: HashMap<u32, (String, u32, u64)>,
    /// Processes whose mappings this user may not read (root may).
    pub uninspected: Vec<u32>,
}

/// The mappings of `wanted` identities in a `smaps` text.
pub fn parse_smaps(text: &str, wanted: &dyn Fn(&MemoryId) -> bool) -> Vec<(MemoryId, Vma)> {
    let mut found = Vec::new();
    let mut current: Option<(MemoryId, Vma)> = None;
    for line in text.lines() {
        let header = line
            .split_ascii_whitespace()
            .next()
            .and_then(|r| r.split_once('-'))
            .and_then(|(a, b)| {
                Some((
                    u64::from_str_radix(a, 16).ok()?,
                    u64::from_str_radix(b, 16).ok()?,
                ))
            });
        if let Some((start, end)) = header {
            found.extend(current.take());
            current = identity(line).filter(|id| wanted(id)).map(|id| {
                let vma = Vma {
                    start,
                    end,
                    ..Vma::default()
                };
                (id, vma)
            });
            continue;
        }
        let Some((_, vma)) = current.as_mut() else {
            continue;
        };
        let Some((key, _)) = line.split_once(':') else {
            continue;
        };
        let kb = || procfs::field(line, key).unwrap_or(0) * 1024;
        match key {
            "Rss" => vma.rss = kb(),
            "ShmemPmdMapped" | "FilePmdMapped" => vma.pmd_mapped += kb(),
            "Shared_Hugetlb" | "Private_Hugetlb" => vma.hugetlb += kb(),
            _ => {}
        }
    }
    found.extend(current);
    found
}

/// Reads the mappings of every process that maps one of `ids`.
pub fn scan(ids: &[MemoryId]) -> Scan {
    let mut scan = Scan::default();
    // Thousands of regions and processes with thousands of mappings: look
    // identities up in a set.
    let ids: HashSet<MemoryId> = ids.iter().copied().collect();
    let wanted = |id: &MemoryId| ids.contains(id);
    for pid in procfs::pids() {
        let maps = match std::fs::read_to_string(format!("/proc/{pid}/maps")) {
            Ok(m) => m,
            Err(e) if procfs::is_gap(&e) => {
                scan.uninspected.push(pid);
                continue;
            }
            Err(_) => continue, // gone, or a kernel thread
        };
        if !maps.lines().filter_map(identity).any(|id| wanted(&id)) {
            continue;
        }
        let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
            continue;
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        scan.procs.insert(
            pid,
            (
                procfs::command(pid),
                procfs::uid(&status).unwrap_or(u32::MAX),
                procfs::field(&status, "VmPTE").unwrap_or(0) * 1024,
            ),
        );
        for (id, vma) in parse_smaps(&smaps, &wanted) {
            scan.vmas
                .entry(id)
                .or_default()
                .entry(pid)
                .or_default()
                .push(vma);
        }
    }
    scan
}

impl Scan {
    /// The processes mapping a region known by `ids` (its region file's
    /// identity and its memory's), by pid.
    pub fn mappers(&self, ids: &[MemoryId]) -> Vec<Mapper> {
        let mut per_pid: HashMap<u32, Vec<Vma>> = HashMap::new();
        for id in ids {
            for (pid, vmas) in self.vmas.get(id).into_iter().flatten() {
                per_pid.entry(*pid).or_default().extend(vmas);
            }
        }
        let sharers = per_pid
            .values()
            .filter(|v| v.iter().any(Vma::shares_pmd_tables))
            .count() as u64;
        let mut out: Vec<Mapper> = per_pid
            .into_iter()
            .map(|(pid, vmas)| {
                let (command, uid, vm_pte) = self.procs.get(&pid).cloned().unwrap_or_default();
                Mapper {
                    pid,
                    command,
                    uid,
                    mapped: vmas.iter().map(|v| v.end - v.start).sum(),
                    resident: vmas.iter().map(|v| v.rss + v.hugetlb).sum(),
                    page_tables: vmas.iter().map(|v| v.page_tables(sharers)).sum(),
                    page_tables_4k: vmas.iter().map(Vma::page_tables_4k).sum(),
                    process_page_tables: vm_pte,
                }
            })
            .collect();
        out.sort_by_key(|m| m.pid);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
10000000000-10001000000 rw-s 00000000 00:2a 3                            /mnt/a
Size:              16384 kB
Rss:                4096 kB
ShmemPmdMapped:     4096 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
VmFlags: rd wr sh mr mw me ms
10040000000-10080000000 rw-s 00000000 00:29 5896                         /state/hugetlb/r5
Size:            1048576 kB
Rss:                   0 kB
ShmemPmdMapped:        0 kB
Shared_Hugetlb:  1048576 kB
Private_Hugetlb:       0 kB
562386e9d000-562386e9e000 r--p 00000000 fe:00 10010831                   /tmp/m
Size:                  4 kB
Rss:                   4 kB
";

    fn id(s: &str) -> MemoryId {
        s.parse().unwrap()
    }

    #[test]
    fn reads_the_wanted_mappings_of_smaps() {
        let wanted = [id("00:2a 3"), id("00:29 5896")];
        let found = parse_smaps(SMAPS, &|i| wanted.contains(i));
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].0, wanted[0]);
        assert_eq!(
            found[0].1,
            Vma {
                start: 0x100_0000_0000,
                end: 0x100_0100_0000,
                rss: 4 << 20,
                pmd_mapped: 4 << 20,
                hugetlb: 0,
            }
        );
        assert_eq!(found[1].1.hugetlb, 1 << 30);
        assert!(parse_smaps(SMAPS, &|_| false).is_empty());
    }

    #[test]
    fn page_table_estimates() {
        let gib = 1u64 << 30;
        // 1 GiB touched in 4 KiB pages: 2 MiB of PTEs, as measured.
        let small = Vma {
            start: 0,
            end: gib,
            rss: gib,
            ..Vma::default()
        };
        assert_eq!(small.page_tables(1), 2 << 20);
        assert_eq!(small.page_tables_4k(), 2 << 20);
        // The same in 2 MiB THP: one PMD table.
        let thp = Vma {
            pmd_mapped: gib,
            ..small
        };
        assert_eq!(thp.page_tables(1), 4096);
        // Hugetlb over a whole aligned GiB: the PMD table is shared.
        let huge = Vma {
            start: gib,
            end: 2 * gib,
            rss: 0,
            pmd_mapped: 0,
            hugetlb: gib,
        };
        assert_eq!(huge.page_tables(1), 4096);
        assert_eq!(huge.page_tables(4), 1024);
        assert_eq!(huge.page_tables_4k(), 2 << 20);
        // Not aligned: nothing is shared.
        let unaligned = Vma {
            start: gib + (2 << 20),
            ..huge
        };
        assert_eq!(unaligned.page_tables(4), 4096);
    }
}
