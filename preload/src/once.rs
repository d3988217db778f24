//! A value computed once per process without ever waiting: threads that
//! race each compute one and the first stored wins. A `OnceLock` would make
//! a thread wait for the one computing it, and after a `fork` that thread
//! does not exist in the child, which would wait for ever.

use std::sync::atomic::{AtomicPtr, Ordering};

/// A slot for one leaked value.
pub struct Race<T>(AtomicPtr<T>);

impl<T> Race<T> {
    /// An empty slot.
    pub const fn new() -> Self {
        Race(AtomicPtr::new(std::ptr::null_mut()))
    }

    /// The value, computed with `f` if none is stored yet.
    pub fn get_or_init(&'static self, f: impl FnOnce() -> T) -> &'static T {
        let p = self.0.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: a non-null pointer was stored from Box::into_raw below
            // and is never freed.
            return unsafe { &*p };
        }
        let mine = Box::into_raw(Box::new(f()));
        match self.0.compare_exchange(
            std::ptr::null_mut(),
            mine,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            // SAFETY: ours, stored and never freed.
            Ok(_) => unsafe { &*mine },
            Err(theirs) => {
                // SAFETY: `mine` came from Box::into_raw and was never shared.
                drop(unsafe { Box::from_raw(mine) });
                // SAFETY: `theirs` is stored and never freed.
                unsafe { &*theirs }
            }
        }
    }
}
