//! Where regions lie: the alignment every region's start and size must be a
//! multiple of (what `mshare_info` reads as), and the address ranges sized
//! regions occupy, so that a server-chosen start (`ftruncate` on an unsized
//! region) overlaps no other region and a process can map many at once.

use std::collections::{BTreeSet, HashMap};

use crate::request::Ino;
use mshare_uapi::USER_ADDR_END;
use parking_lot::Mutex;

/// Where server-chosen starts begin: 1 TiB, far above the usual heap and
/// below the usual mmap area of a 47-bit address space.
pub const AUTO_BASE: u64 = 1 << 40;

/// The layout policy shared by every region of a mount.
#[derive(Debug)]
pub struct Placement {
    /// The mount's `align=`.
    align: u64,
    /// The ranges in use.
    ranges: Mutex<Ranges>,
}

/// The ranges in use, indexed for a first-fit choice in `O(log n)` when
/// regions are made and removed in order.
#[derive(Debug, Default)]
struct Ranges {
    /// `(start, end, region)`, by start.
    by_start: BTreeSet<(u64, u64, Ino)>,
    /// Each region's range.
    by_id: HashMap<Ino, (u64, u64)>,
    /// An address at or above the base that no range covers, with every
    /// range that starts below it also ending at or below it; `None` when
    /// it must be found again.
    first_free: Option<u64>,
}

impl Ranges {
    fn insert(&mut self, id: Ino, start: u64, end: u64) {
        self.remove(id);
        self.by_start.insert((start, end, id));
        self.by_id.insert(id, (start, end));
        if let Some(f) = self.first_free.filter(|&f| start <= f && f < end) {
            // The new range covers the free address: walk on from it.
            // Ranges that start below `start` end at or below `f`.
            self.first_free = Some(walk(self.by_start.range((start, 0, Ino(0))..), f));
        }
    }

    fn remove(&mut self, id: Ino) {
        if let Some((start, end)) = self.by_id.remove(&id) {
            self.by_start.remove(&(start, end, id));
            if self.first_free.is_some_and(|f| start < f) {
                self.first_free = None;
            }
        }
    }

    /// The lowest address at or above `base` that no range covers (see
    /// `first_free`).
    fn first_free(&mut self, base: u64) -> u64 {
        if let Some(f) = self.first_free {
            return f;
        }
        let p = walk(self.by_start.iter(), base);
        self.first_free = Some(p);
        p
    }
}

/// The first address at or above `p` that none of `ranges` (by start)
/// covers.
fn walk<'a>(ranges: impl Iterator<Item = &'a (u64, u64, Ino)>, mut p: u64) -> u64 {
    for &(start, end, _) in ranges {
        if end <= p {
            continue;
        }
        if start > p {
            break;
        }
        p = end;
    }
    p
}

fn round_up(x: u64, align: u64) -> Option<u64> {
    x.checked_add(align - 1).map(|v| v & !(align - 1))
}

impl Placement {
    /// A policy for alignment `align` (a power of two) with nothing placed.
    pub fn new(align: u64) -> Self {
        Placement {
            align,
            ranges: Mutex::new(Ranges::default()),
        }
    }

    /// The alignment.
    pub fn align(&self) -> u64 {
        self.align
    }

    /// Records a range chosen by a client. Overlaps are allowed: regions
    /// are mapped by different processes, as in the kernel.
    pub fn claim(&self, id: Ino, start: u64, size: u64) {
        self.ranges.lock().insert(id, start, start + size);
    }

    /// Chooses and records the lowest aligned start at or above
    /// [`AUTO_BASE`] whose `size` bytes overlap no recorded range.
    pub fn pick(&self, id: Ino, size: u64) -> Option<u64> {
        let align = self.align;
        let mut ranges = self.ranges.lock();
        let base = round_up(AUTO_BASE, align)?;
        // Nothing below the first free address can hold the region, and
        // no range that starts below it reaches past it.
        let free = ranges.first_free(base);
        let mut cand = round_up(free, align)?;
        for &(start, end, _) in ranges.by_start.range((free, 0, Ino(0))..) {
            if end <= cand {
                continue;
            }
            if start >= cand.checked_add(size)? {
                break;
            }
            cand = round_up(end, align)?;
        }
        if cand.checked_add(size)? > USER_ADDR_END {
            return None;
        }
        ranges.insert(id, cand, cand + size);
        Some(cand)
    }

    /// Forgets the range of region `id`.
    pub fn release(&self, id: Ino) {
        self.ranges.lock().remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const G: u64 = 1 << 30;

    #[test]
    fn picks_free_aligned_ranges() {
        let a = Placement::new(G);
        let id = Ino;
        assert_eq!(a.pick(id(1), 2 * G), Some(AUTO_BASE));
        assert_eq!(a.pick(id(2), G), Some(AUTO_BASE + 2 * G));
        a.claim(id(3), AUTO_BASE + 3 * G, G);
        assert_eq!(a.pick(id(4), G), Some(AUTO_BASE + 4 * G));
        a.release(id(1));
        assert_eq!(
            a.pick(id(5), G),
            Some(AUTO_BASE),
            "a released range is reused"
        );
        assert_eq!(
            a.pick(id(6), 2 * G),
            Some(AUTO_BASE + 5 * G),
            "too small gaps are skipped"
        );
        assert_eq!(
            a.pick(id(7), 1 << 47),
            None,
            "beyond the user address space"
        );
    }

    #[test]
    fn claims_that_overlap_and_cover_the_free_point_are_respected() {
        let a = Placement::new(G);
        let id = Ino;
        assert_eq!(a.pick(id(1), G), Some(AUTO_BASE));
        // A client range over where the next pick would go, and one
        // inside it.
        a.claim(id(2), AUTO_BASE + G, 3 * G);
        a.claim(id(3), AUTO_BASE + 2 * G, G);
        assert_eq!(a.pick(id(4), G), Some(AUTO_BASE + 4 * G));
        a.release(id(2));
        // The inner claim still holds its GiB.
        assert_eq!(a.pick(id(5), G), Some(AUTO_BASE + G));
        assert_eq!(a.pick(id(6), G), Some(AUTO_BASE + 3 * G));
        assert_eq!(a.pick(id(7), G), Some(AUTO_BASE + 5 * G));
        a.release(id(1));
        a.release(id(5));
        assert_eq!(
            a.pick(id(8), 2 * G),
            Some(AUTO_BASE),
            "two freed GiBs side by side"
        );
        assert_eq!(a.pick(id(9), G), Some(AUTO_BASE + 6 * G));
    }

    #[test]
    fn first_fit_matches_a_full_scan_under_churn() {
        // A reference first-fit over all ranges against the indexed one,
        // through random makes, claims and removals (xorshift).
        let a = Placement::new(G);
        let mut live: Vec<(u64, u64, u64)> = Vec::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for i in 1..3000u64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            match seed % 5 {
                0 if !live.is_empty() => {
                    let (id, _, _) = live.swap_remove((seed >> 8) as usize % live.len());
                    a.release(Ino(id));
                }
                1 => {
                    let start = AUTO_BASE + (seed >> 20) % 64 * G;
                    let size = (1 + (seed >> 40) % 3) * G;
                    a.claim(Ino(i), start, size);
                    live.push((i, start, start + size));
                }
                _ => {
                    let size = (1 + (seed >> 30) % 4) * G;
                    let mut sorted = live.clone();
                    sorted.sort_by_key(|&(_, s, e)| (s, e));
                    let mut cand = AUTO_BASE;
                    for &(_, s, e) in &sorted {
                        if e <= cand {
                            continue;
                        }
                        if s >= cand + size {
                            break;
                        }
                        cand = e;
                    }
                    assert_eq!(a.pick(Ino(i), size), Some(cand), "step {i}");
                    live.push((i, cand, cand + size));
                }
            }
        }
    }
}
