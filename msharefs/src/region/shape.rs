//! What a region's directory makes of it. Most regions follow the kernel's
//! rules (start and size multiples of the alignment). The two directories
//! that the server keeps in the root for the preload library change that:
//!
//! - [`ANON_DIR`]: anonymous shared memory. The start is still aligned (so
//!   that forked children share hugetlb page tables), but the size need only
//!   be a multiple of the page size: a 1.1 GB segment is not rounded to
//!   2 GiB of memory. The server removes such a region once no process maps
//!   it ([`crate::transient`]).
//! - [`SHM_DIR`]: POSIX shared memory objects. Any size, set and changed by
//!   `ftruncate` as often as the program likes, never hugetlb (which could
//!   not be mapped through the region file, nor sized to a byte). There is
//!   no start: the program maps the file wherever it wants. The server
//!   removes it once its creator and the creator's parent are gone and
//!   nothing maps it or holds it open ([`crate::transient`]).
//!
//! Only the directories of those names directly in the root and owned by
//! the root's owner count, so that no user can make a directory that
//! changes the rules for other users' regions.

use std::ffi::OsStr;

use mshare_uapi::{Backing, ANON_DIR, SHM_DIR};

/// The rules a region's layout follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Start and size multiples of the alignment (the kernel's rules).
    Aligned,
    /// Aligned start, page-sized size, removed once nothing maps it.
    Anon,
    /// Any size, resizable, no start.
    File,
}

impl Shape {
    /// The shape of regions made in a directory `name`, whose parent is the
    /// root or not, owned by the root's owner or not.
    pub fn of_dir(name: &OsStr, in_root: bool, owned_by_root_owner: bool) -> Shape {
        if !(in_root && owned_by_root_owner) {
            return Shape::Aligned;
        }
        if name == ANON_DIR {
            Shape::Anon
        } else if name == SHM_DIR {
            Shape::File
        } else {
            Shape::Aligned
        }
    }

    /// The granularity of a size: the alignment, or the page size of `kind`
    /// for an anonymous region (a file region has none).
    pub fn size_granule(self, align: u64, kind: Backing) -> u64 {
        match self {
            Shape::Aligned => align,
            Shape::Anon | Shape::File => super::page_size(kind),
        }
    }

    /// The backing a region of this shape gets when `kind` was asked for:
    /// a file region is never hugetlb (thp instead).
    pub fn backing(self, kind: Backing) -> Backing {
        match (self, kind) {
            (Shape::File, Backing::Hugetlb) => Backing::Thp,
            _ => kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_root_owners_directories_in_the_root_change_the_rules() {
        let anon = OsStr::new(ANON_DIR);
        let shm = OsStr::new(SHM_DIR);
        assert_eq!(Shape::of_dir(anon, true, true), Shape::Anon);
        assert_eq!(Shape::of_dir(shm, true, true), Shape::File);
        assert_eq!(Shape::of_dir(anon, false, true), Shape::Aligned);
        assert_eq!(Shape::of_dir(shm, true, false), Shape::Aligned);
        assert_eq!(Shape::of_dir(OsStr::new("db"), true, true), Shape::Aligned);
    }

    #[test]
    fn granules_and_backings() {
        let g = 1 << 30;
        assert_eq!(Shape::Aligned.size_granule(g, Backing::Hugetlb), g);
        assert_eq!(Shape::Anon.size_granule(g, Backing::Hugetlb), 2 << 20);
        assert_eq!(Shape::Anon.size_granule(g, Backing::Thp), 4096);
        assert_eq!(Shape::File.backing(Backing::Hugetlb), Backing::Thp);
        assert_eq!(Shape::Anon.backing(Backing::Hugetlb), Backing::Hugetlb);
    }
}
