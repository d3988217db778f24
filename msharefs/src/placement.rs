//! Where regions lie: the alignment every region's start and size must be a
//! multiple of (what `mshare_info` reads as), and the address ranges sized
//! regions occupy, so that a server-chosen start (`ftruncate` on an unsized
//! region) overlaps no other region and a process can map many at once.

use std::collections::BTreeSet;

use fuser::INodeNo;
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
    /// Ranges in use, as `(start, end, region)`.
    ranges: Mutex<BTreeSet<(u64, u64, INodeNo)>>,
}

fn round_up(x: u64, align: u64) -> Option<u64> {
    x.checked_add(align - 1).map(|v| v & !(align - 1))
}

impl Placement {
    /// A policy for alignment `align` (a power of two) with nothing placed.
    pub fn new(align: u64) -> Self {
        Placement {
            align,
            ranges: Mutex::new(BTreeSet::new()),
        }
    }

    /// The alignment.
    pub fn align(&self) -> u64 {
        self.align
    }

    /// Records a range chosen by a client. Overlaps are allowed: regions
    /// are mapped by different processes, as in the kernel.
    pub fn claim(&self, id: INodeNo, start: u64, size: u64) {
        self.ranges.lock().insert((start, start + size, id));
    }

    /// Chooses and records the lowest aligned start at or above
    /// [`AUTO_BASE`] whose `size` bytes overlap no recorded range.
    pub fn pick(&self, id: INodeNo, size: u64) -> Option<u64> {
        let align = self.align;
        let mut ranges = self.ranges.lock();
        let mut cand = round_up(AUTO_BASE, align)?;
        for &(start, end, _) in ranges.iter() {
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
        ranges.insert((cand, cand + size, id));
        Some(cand)
    }

    /// Forgets the range of region `id`.
    pub fn release(&self, id: INodeNo) {
        self.ranges.lock().retain(|&(_, _, owner)| owner != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const G: u64 = 1 << 30;

    #[test]
    fn picks_free_aligned_ranges() {
        let a = Placement::new(G);
        let id = INodeNo;
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
}
