//! The address ranges regions occupy, so that a server-chosen start
//! (`ftruncate` on an unsized region) does not overlap another region and
//! a process can map many regions at once.

use std::collections::BTreeSet;

use libmshare::abi::USER_ADDR_END;
use parking_lot::Mutex;

/// Where server-chosen starts begin: 1 TiB, far above the usual heap and
/// below the usual mmap area of a 47-bit address space.
pub const AUTO_BASE: u64 = 1 << 40;

/// Ranges in use, as `(start, end, region id)`.
#[derive(Debug, Default)]
pub struct AddressSpace {
    ranges: Mutex<BTreeSet<(u64, u64, u64)>>,
}

fn round_up(x: u64, align: u64) -> Option<u64> {
    x.checked_add(align - 1).map(|v| v & !(align - 1))
}

impl AddressSpace {
    /// Records a range chosen by a client. Overlaps are allowed: regions
    /// are mapped by different processes, as in the kernel.
    pub fn claim(&self, id: u64, start: u64, size: u64) {
        self.ranges.lock().insert((start, start + size, id));
    }

    /// Chooses and records the lowest `align`-aligned start at or above
    /// [`AUTO_BASE`] whose `size` bytes overlap no recorded range.
    pub fn pick(&self, id: u64, size: u64, align: u64) -> Option<u64> {
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
    pub fn release(&self, id: u64) {
        self.ranges.lock().retain(|&(_, _, owner)| owner != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const G: u64 = 1 << 30;

    #[test]
    fn picks_free_aligned_ranges() {
        let a = AddressSpace::default();
        assert_eq!(a.pick(1, 2 * G, G), Some(AUTO_BASE));
        assert_eq!(a.pick(2, G, G), Some(AUTO_BASE + 2 * G));
        a.claim(3, AUTO_BASE + 3 * G, G);
        assert_eq!(a.pick(4, G, G), Some(AUTO_BASE + 4 * G));
        a.release(1);
        assert_eq!(
            a.pick(5, G, G),
            Some(AUTO_BASE),
            "a released range is reused"
        );
        assert_eq!(
            a.pick(6, 2 * G, G),
            Some(AUTO_BASE + 5 * G),
            "too small gaps are skipped"
        );
        assert_eq!(a.pick(7, 1 << 47, G), None, "beyond the user address space");
    }
}
