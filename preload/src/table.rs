//! The anonymous regions this process maps: where, how long, and their
//! names, so that `munmap` and `mremap` of them can be told apart from all
//! the others without a system call.
//!
//! A fixed array under a spin lock: no allocation, and no lock that a
//! `fork` in another thread could leave held in the child (the lock is
//! taken around `fork` by `pthread_atfork` handlers).

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// How many regions one process tracks; more are still served, but
/// unmapping them sends no hint (the server notices at exit).
pub const SLOTS: usize = 64;
/// Longest name kept (relative to the mount).
pub const NAME_MAX: usize = 96;

/// One mapping.
#[derive(Clone, Copy)]
pub struct Entry {
    /// Start address (0: free slot).
    pub addr: usize,
    /// Length the program asked for.
    pub len: usize,
    /// Length mapped (the region's size).
    pub mapped: usize,
    name: [u8; NAME_MAX],
    name_len: usize,
}

impl Entry {
    /// A mapping of `mapped` bytes at `addr` (`len` asked for) of region
    /// `name` (cut to [`NAME_MAX`] bytes).
    pub fn new(addr: usize, len: usize, mapped: usize, name: &str) -> Entry {
        let mut e = Entry {
            addr,
            len,
            mapped,
            name: [0; NAME_MAX],
            name_len: name.len().min(NAME_MAX),
        };
        e.name[..e.name_len].copy_from_slice(&name.as_bytes()[..e.name_len]);
        e
    }

    /// The region's name.
    pub fn name(&self) -> &str {
        std::str::from_utf8(&self.name[..self.name_len]).unwrap_or("")
    }

    /// Whether unmapping `[addr, addr + len)` takes all of it.
    pub fn covered_by(&self, addr: usize, len: usize) -> bool {
        addr <= self.addr && addr.saturating_add(len) >= self.addr + self.len.min(self.mapped)
    }

    /// Whether `[addr, addr + len)` touches it.
    pub fn overlaps(&self, addr: usize, len: usize) -> bool {
        addr < self.addr + self.mapped && addr.saturating_add(len) > self.addr
    }
}

const FREE: Entry = Entry {
    addr: 0,
    len: 0,
    mapped: 0,
    name: [0; NAME_MAX],
    name_len: 0,
};

struct Table {
    lock: AtomicBool,
    used: AtomicUsize,
    slots: UnsafeCell<[Entry; SLOTS]>,
}

// SAFETY: `slots` is only touched with `lock` held (see `with`).
unsafe impl Sync for Table {}

static TABLE: Table = Table {
    lock: AtomicBool::new(false),
    used: AtomicUsize::new(0),
    slots: UnsafeCell::new([FREE; SLOTS]),
};

fn acquire() {
    while TABLE
        .lock
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::hint::spin_loop();
    }
}

fn release() {
    TABLE.lock.store(false, Ordering::Release);
}

extern "C" fn before_fork() {
    acquire();
}

extern "C" fn after_fork() {
    release();
}

/// Makes `fork` take the lock and give it back in parent and child, so
/// that no child starts with it held (called once, when the library is
/// loaded).
pub fn hold_across_fork() {
    // SAFETY: registers two plain functions without arguments.
    unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork), Some(after_fork)) };
}

/// Runs `f` on the slots under the lock.
fn with<R>(f: impl FnOnce(&mut [Entry; SLOTS]) -> R) -> R {
    acquire();
    // SAFETY: the lock is held, so this is the only reference.
    let r = f(unsafe { &mut *TABLE.slots.get() });
    release();
    r
}

/// Records `e`. False if the table is full.
pub fn insert(e: Entry) -> bool {
    with(|slots| match slots.iter_mut().find(|s| s.addr == 0) {
        Some(s) => {
            *s = e;
            TABLE.used.fetch_add(1, Ordering::Relaxed);
            true
        }
        None => false,
    })
}

/// Whether any mapping is tracked (the common case is none: a check
/// without the lock).
pub fn any() -> bool {
    TABLE.used.load(Ordering::Relaxed) > 0
}

/// Takes out the entries that `[addr, addr + len)` covers whole.
pub fn take_covered(addr: usize, len: usize, out: &mut impl FnMut(Entry)) {
    with(|slots| {
        for s in slots
            .iter_mut()
            .filter(|s| s.addr != 0 && s.covered_by(addr, len))
        {
            out(*s);
            *s = FREE;
            TABLE.used.fetch_sub(1, Ordering::Relaxed);
        }
    })
}

/// Moves the entry at `old` to `new` with length `len` (after `mremap`).
pub fn moved(old: usize, new: usize, len: usize) {
    with(|slots| {
        if let Some(s) = slots.iter_mut().find(|s| s.addr == old) {
            s.addr = new;
            s.len = len;
            s.mapped = len;
        }
    })
}

/// Whether `[addr, addr + len)` touches a tracked mapping.
pub fn overlaps(addr: usize, len: usize) -> bool {
    any() && with(|slots| slots.iter().any(|s| s.addr != 0 && s.overlaps(addr, len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage() {
        let e = Entry::new(1 << 30, 3 << 20, 4 << 20, "anon/x.1.1");
        assert_eq!(e.name(), "anon/x.1.1");
        assert!(e.covered_by(1 << 30, 3 << 20), "what the program asked for");
        assert!(e.covered_by(0, usize::MAX));
        assert!(!e.covered_by(1 << 30, 1 << 20), "a part");
        assert!(!e.covered_by((1 << 30) + 4096, 4 << 20));
        assert!(e.overlaps((1 << 30) + (3 << 20), 4096), "the rounded tail");
        assert!(!e.overlaps((1 << 30) + (4 << 20), 4096));
    }

    #[test]
    fn insert_take_move() {
        let a = 7 << 30;
        assert!(insert(Entry::new(a, 4096, 4096, "anon/t.1.1")));
        assert!(overlaps(a, 1));
        moved(a, a + (1 << 30), 8192);
        assert!(!overlaps(a, 4096));
        let mut got = Vec::new();
        take_covered(a + (1 << 30), 8192, &mut |e| got.push(e.name().to_string()));
        assert_eq!(got, ["anon/t.1.1"]);
        assert!(!overlaps(a + (1 << 30), 8192));
    }
}
