//! The hugetlb pool, managed for the user (`hugetlb_pool=auto`).
//!
//! Hugetlb memory comes from a pool that the administrator sizes in
//! `vm.nr_hugepages`, and which is empty on a fresh machine. With
//! `hugetlb_pool=auto` the server grows the pool by what a hugetlb
//! allocation needs beyond the free pages (compacting memory when the kernel
//! cannot find enough 2 MiB blocks), never past `hugetlb_max`, and gives the
//! pages it added back when the memory is freed. Pages still mapped by
//! clients when their region goes become *surplus* pages, which the kernel
//! returns to the system when the last mapping goes. `hugetlb_pool=manual`
//! leaves the pool alone.
//!
//! How many pages the server added ("ours") is kept in the state directory
//! (`hugetlb_pool`), so that a server that adopts the regions after a
//! restart gives them back too. The arithmetic is [`plan`], a pure
//! function; the rest reads and writes `/sys/kernel/mm/hugepages`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use log::{info, warn};
use mshare_uapi::{PoolPolicy, PoolStatus, Shortfall, HUGE_PAGES_SYSFS as SYSFS, HUGE_PAGE_SIZE};
use nix::errno::Errno;
use parking_lot::Mutex;

use crate::fail::{errno_of, Fail};

/// The file in the state directory that holds how many pages are ours.
pub const RECORD_FILE: &str = "hugetlb_pool";

/// The kernel's counts of 2 MiB pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// `nr_hugepages`: every huge page, surplus ones included.
    pub total: u64,
    /// `surplus_hugepages`: pages in use beyond the persistent pool, which
    /// go when they are freed (what a shrink leaves of pages still mapped).
    pub surplus: u64,
    /// `free_hugepages`.
    pub free: u64,
    /// `resv_hugepages`: free pages promised to mappings already made.
    pub reserved: u64,
}

impl Counts {
    /// Free pages that no mapping has been promised.
    pub fn available(&self) -> u64 {
        self.free.saturating_sub(self.reserved)
    }
}

/// By how many pages the pool must grow so that `need` pages are free,
/// given the kernel's `counts` and the ceiling `max_pages` on its size.
pub fn plan(need: u64, counts: Counts, max_pages: u64) -> Result<u64, Shortfall> {
    let available = counts.available();
    if available >= need {
        return Ok(0);
    }
    let grow = need - available;
    if counts.total + grow > max_pages {
        return Err(Shortfall {
            need,
            available,
            limit: max_pages.max(counts.total),
            policy: PoolPolicy::Auto,
        });
    }
    Ok(grow)
}

/// The pool as this server manages it.
#[derive(Debug)]
pub struct HugePool {
    /// `hugetlb_pool=`.
    policy: PoolPolicy,
    /// `hugetlb_max=`, in pages.
    max_pages: u64,
    /// What this server (or the one before it on the same state) did to
    /// the pool. Held while the pool is changed, so that no allocation
    /// takes pages between a change and its use.
    owned: Mutex<Owned>,
    /// Where `owned` is kept so that it outlives the server.
    record: Option<PathBuf>,
}

/// The server's share of the pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Owned {
    /// Pages added to the pool and not given back.
    added: u64,
    /// Free pages to keep (reserved ahead by root), which are not given
    /// back while idle; allocations use them up.
    kept: u64,
}

impl Owned {
    /// The record's text: `ADDED KEPT`.
    fn text(&self) -> String {
        format!("{} {}\n", self.added, self.kept)
    }

    /// Reads a record (`ADDED` alone from an older record).
    fn parse(text: &str) -> Option<Owned> {
        let mut f = text.split_whitespace().map(|n| n.parse::<u64>().ok());
        Some(Owned {
            added: f.next()??,
            kept: f.next().flatten().unwrap_or(0),
        })
    }
}

fn read_count(name: &str) -> Result<u64, Errno> {
    let text = fs::read_to_string(Path::new(SYSFS).join(name)).map_err(|e| errno_of(&e))?;
    text.trim().parse().map_err(|_| Errno::EIO)
}

fn write_total(pages: u64) -> Result<(), Errno> {
    fs::write(Path::new(SYSFS).join("nr_hugepages"), pages.to_string()).map_err(|e| errno_of(&e))
}

/// The persistent pool size (what writing `nr_hugepages` sets).
fn persistent() -> Result<u64, Errno> {
    Ok(read_count("nr_hugepages")?.saturating_sub(read_count("surplus_hugepages")?))
}

/// The kernel's counts now.
pub fn counts() -> Result<Counts, Errno> {
    Ok(Counts {
        total: read_count("nr_hugepages")?,
        surplus: read_count("surplus_hugepages")?,
        free: read_count("free_hugepages")?,
        reserved: read_count("resv_hugepages")?,
    })
}

/// Huge pages needed to hold `bytes`.
pub fn pages_for(bytes: u64) -> u64 {
    bytes.div_ceil(HUGE_PAGE_SIZE)
}

impl HugePool {
    /// A pool under `policy`, grown to at most `max_pages`; `record` is
    /// where the pages it added are kept across restarts (read now).
    /// `fresh` (nothing of a previous server is adopted) gives back what
    /// the record says a previous server added.
    pub fn new(policy: PoolPolicy, max_pages: u64, record: Option<PathBuf>, fresh: bool) -> Self {
        let owned = record
            .as_deref()
            .and_then(|p| fs::read_to_string(p).ok())
            .and_then(|t| Owned::parse(&t))
            .unwrap_or_default();
        let pool = HugePool {
            policy,
            max_pages,
            owned: Mutex::new(owned),
            record,
        };
        if owned.added > 0 {
            if fresh {
                pool.give_back_all();
            } else {
                info!(
                    "hugetlb pool: {} pages were added by a previous server for the regions adopted",
                    owned.added
                );
            }
        }
        pool
    }

    /// What [`mshare_uapi::POOL_XATTR`] reads as.
    pub fn status(&self) -> PoolStatus {
        PoolStatus {
            policy: self.policy,
            max_pages: self.max_pages,
            ours: self.owned.lock().added,
        }
    }

    /// Records `owned` if it differs from `before`.
    fn save(&self, before: Owned, owned: &Owned) {
        let Some(path) = self.record.as_ref().filter(|_| before != *owned) else {
            return;
        };
        let tmp = path.with_extension("new");
        // The server's alone, like everything in the state directory but
        // the memory files.
        let res = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(owned.text().as_bytes()))
            .and_then(|()| fs::rename(&tmp, path));
        if let Err(e) = res {
            warn!(
                "cannot record the hugetlb pages added ({}) in {}: {e}",
                owned.added,
                path.display()
            );
        }
    }

    /// Makes `need` pages free (growing the pool under `auto`), then runs
    /// `allocate` while no other allocation can take them. Pages added but
    /// not used by `allocate` (its result says how many it used) are given
    /// back; all of them if it fails.
    pub fn with_pages<T>(
        &self,
        need: u64,
        allocate: impl FnOnce() -> Result<(T, u64), Fail>,
    ) -> Result<T, Fail> {
        let mut owned = self.owned.lock();
        let before = *owned;
        let res = self.grow(need, &mut owned).and_then(|grown| {
            let res = allocate().map_err(|f| match (self.policy, f.errno) {
                // The administrator's pool (with any overcommit) said no.
                (PoolPolicy::Manual, Errno::ENOMEM) => self.manual_shortfall(need).unwrap_or(f),
                _ => f,
            });
            let used = res.as_ref().map_or(0, |(_, used)| *used);
            owned.kept = owned.kept.saturating_sub(used);
            let unused = grown.saturating_sub(used);
            if unused > 0 {
                self.shrink(unused, &mut owned);
            }
            res.map(|(v, _)| v)
        });
        self.save(before, &owned);
        res
    }

    /// Why `need` pages did not fit in the administrator's pool, with the
    /// numbers (logged).
    fn manual_shortfall(&self, need: u64) -> Option<Fail> {
        let now = counts().ok()?;
        let s = Shortfall {
            need,
            available: now.available(),
            limit: now.total,
            policy: PoolPolicy::Manual,
        };
        warn!("hugetlb pool: {s}");
        Some(Fail::with(Errno::ENOMEM, s.to_string()))
    }

    /// Grows the pool so that `need` pages are free (`auto`); the pages
    /// that came new.
    fn grow(&self, need: u64, owned: &mut Owned) -> Result<u64, Fail> {
        // Under manual the kernel decides (the administrator may allow
        // overcommit).
        if need == 0 || self.policy == PoolPolicy::Manual {
            return Ok(0);
        }
        let now = counts().map_err(|e| Fail::with(e, format!("cannot read {SYSFS}: {e}")))?;
        let grow = plan(need, now, self.max_pages).map_err(|s| {
            warn!("hugetlb pool: {s}");
            Fail::with(Errno::ENOMEM, s.to_string())
        })?;
        if grow == 0 {
            return Ok(0);
        }
        // Writing nr_hugepages sets the persistent pool. Raising it turns
        // surplus pages (in use, left by a shrink) back into persistent
        // ones before it allocates any: ask for all pages plus `grow`, so
        // that `grow` new ones come.
        let persistent_before = now.total - now.surplus;
        let want = now.total + grow;
        let write = |pages| {
            write_total(pages)
                .map_err(|e| Fail::with(e, format!("cannot set vm.nr_hugepages: {e}")))
        };
        write(want)?;
        if persistent().unwrap_or(0) < want {
            // Free memory is there but not in 2 MiB blocks: compact, retry.
            let _ = fs::write("/proc/sys/vm/compact_memory", "1");
            write(want)?;
        }
        let got = persistent().unwrap_or(0);
        if got < want {
            let _ = write_total(persistent_before);
            let why = format!(
                "needs {need} huge pages, {} are free and the kernel could grow the pool only \
                 to {got} of {want}: free memory (or reserve at boot with hugepages=)",
                now.available()
            );
            warn!("hugetlb pool: {why}");
            return Err(Fail::with(Errno::ENOMEM, why));
        }
        // Ours: the new pages and the surplus ones taken back (a shrink
        // made them surplus; tidy gives them back once they are free).
        owned.added += got - persistent_before;
        info!(
            "hugetlb pool: grew by {grow} pages to {want} ({} ours)",
            owned.added
        );
        Ok(grow)
    }

    /// Gives back up to `pages` of the pages this server added (pages in
    /// use become surplus and go when they are freed); counts what the
    /// persistent pool really lost.
    fn shrink(&self, pages: u64, owned: &mut Owned) {
        let n = pages.min(owned.added);
        if n == 0 {
            return;
        }
        let res = persistent().and_then(|before| {
            write_total(before.saturating_sub(n))?;
            Ok(before.saturating_sub(persistent()?))
        });
        match res {
            Ok(lost) => {
                owned.added -= lost.min(owned.added);
                info!(
                    "hugetlb pool: gave back {lost} pages ({} ours)",
                    owned.added
                );
            }
            Err(e) => warn!("hugetlb pool: cannot give back {n} pages: {e}"),
        }
    }

    /// Gives back the pages this server added that are free and not kept
    /// for root's reservation: pages that were still mapped when their
    /// region went, and that a later growth took back from surplus, become
    /// free only when the last process unmaps them, which nothing
    /// announces. Cheap when nothing is ours; main calls it every second.
    pub fn tidy(&self) {
        let mut owned = self.owned.lock();
        let before = *owned;
        self.tidy_locked(&mut owned);
        self.save(before, &owned);
    }

    fn tidy_locked(&self, owned: &mut Owned) {
        if owned.added <= owned.kept {
            return;
        }
        let Ok(now) = counts() else { return };
        let idle = now
            .available()
            .saturating_sub(owned.kept)
            .min(owned.added - owned.kept);
        if idle > 0 {
            self.shrink(idle, owned);
        }
    }

    /// Frees hugetlb memory (`free`, which returns its result and how many
    /// pages it freed) and gives back up to that many of the pages this
    /// server added, under the pool's lock: no allocation can take the
    /// freed pages in between and have them turned into surplus by the
    /// shrink.
    pub fn release<T>(&self, free: impl FnOnce() -> (T, u64)) -> T {
        let mut owned = self.owned.lock();
        let before = *owned;
        let (res, pages) = free();
        self.shrink(pages, &mut owned);
        self.tidy_locked(&mut owned);
        self.save(before, &owned);
        res
    }

    /// Gives back every page this server added (after a clean unmount
    /// freed every region).
    pub fn give_back_all(&self) {
        let mut owned = self.owned.lock();
        let before = *owned;
        owned.kept = 0;
        let all = owned.added;
        self.shrink(all, &mut owned);
        self.save(before, &owned);
    }

    /// Grows the pool now so that `bytes` of hugetlb memory are free, and
    /// keeps them free for later regions (root's `msharectl pool
    /// --reserve`); under `manual`, `EPERM`.
    pub fn reserve(&self, bytes: u64) -> Result<(), Fail> {
        if self.policy == PoolPolicy::Manual {
            return Err(Fail::new(
                Errno::EPERM,
                "hugetlb_pool=manual: the administrator sizes vm.nr_hugepages",
            ));
        }
        let mut owned = self.owned.lock();
        let before = *owned;
        let pages = pages_for(bytes);
        let res = self.grow(pages, &mut owned);
        if res.is_ok() {
            owned.kept = owned.kept.max(pages);
        }
        self.save(before, &owned);
        res.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(total: u64, free: u64, reserved: u64) -> Counts {
        Counts {
            total,
            surplus: 0,
            free,
            reserved,
        }
    }

    #[test]
    fn grows_by_what_the_free_pages_lack() {
        assert_eq!(plan(10, counts(0, 0, 0), 100), Ok(10));
        assert_eq!(plan(10, counts(20, 20, 0), 100), Ok(0));
        assert_eq!(
            plan(10, counts(20, 15, 10), 100),
            Ok(5),
            "reserved pages are not free"
        );
        assert_eq!(plan(0, counts(0, 0, 0), 0), Ok(0));
    }

    #[test]
    fn the_ceiling_is_an_error_with_the_numbers() {
        let s = plan(512, counts(100, 10, 0), 300).unwrap_err();
        assert_eq!((s.need, s.available, s.limit), (512, 10, 300));
        assert_eq!(
            s.to_string(),
            "needs 512 huge pages, 10 are free and the pool can grow to 300 (hugetlb_max): \
             raise hugetlb_max or free memory"
        );
        assert_eq!(
            plan(200, counts(100, 10, 0), 290),
            Ok(190),
            "exactly at the ceiling"
        );
        assert!(plan(200, counts(100, 10, 0), 289).is_err());
        // A pool the administrator made larger than the ceiling.
        assert_eq!(plan(5, counts(400, 1, 0), 300).unwrap_err().limit, 400);
    }

    #[test]
    fn the_record_reads_old_and_new_forms() {
        let o = Owned { added: 7, kept: 3 };
        assert_eq!(Owned::parse(&o.text()), Some(o));
        assert_eq!(Owned::parse("5\n"), Some(Owned { added: 5, kept: 0 }));
        assert_eq!(Owned::parse("x"), None);
        assert_eq!(Owned::parse(""), None);
    }

    #[test]
    fn pages_round_up() {
        assert_eq!(pages_for(0), 0);
        assert_eq!(pages_for(1), 1);
        assert_eq!(pages_for(HUGE_PAGE_SIZE * 3), 3);
    }
}
