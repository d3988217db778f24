//! A mapping of a region made by [`Region::map`](crate::Region::map).
//!
//! # Safety
//!
//! The mapping is made and unmapped here, and read and written only
//! through raw-pointer copies inside its bounds.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;

/// A region mapped at its start address. Dropping it unmaps it.
///
/// Other processes read and write the same memory at any time, so the safe
/// accessors copy through raw pointers ([`Mapping::read`],
/// [`Mapping::write`]); [`Mapping::as_slice`] and
/// [`Mapping::as_mut_slice`] are `unsafe` for that reason (the caller
/// promises that nobody writes the bytes while the slice lives).
#[derive(Debug)]
pub struct Mapping {
    addr: *mut u8,
    len: usize,
    writable: bool,
}

// SAFETY: the mapping is plain shared memory; moving the guard to another
// thread is fine, and `&Mapping` only allows raw-pointer copies.
unsafe impl Send for Mapping {}
// SAFETY: as above: shared access goes through raw-pointer copies.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` at exactly `addr` (`MAP_FIXED_NOREPLACE`).
    /// `EEXIST` if something is mapped there already.
    pub(crate) fn fixed(
        fd: impl AsFd,
        addr: u64,
        len: u64,
        writable: bool,
    ) -> Result<Mapping, Errno> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let len = usize::try_from(len).map_err(|_| Errno::EINVAL)?;
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping, so
        // no memory this process uses is affected; the result is checked.
        let p = unsafe {
            libc::mmap(
                addr as *mut libc::c_void,
                len,
                prot,
                libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE,
                fd.as_fd().as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        let mapping = Mapping {
            addr: p.cast(),
            len,
            writable,
        };
        if mapping.addr as u64 != addr {
            // A kernel that ignores MAP_FIXED_NOREPLACE treats it as a hint.
            return Err(Errno::EEXIST);
        }
        Ok(mapping)
    }

    /// Start address (the region's start).
    pub fn as_ptr(&self) -> *mut u8 {
        self.addr
    }

    /// Length in bytes (the region's size).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true for a mapping that exists.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether it was mapped writable.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Copies `buf.len()` bytes from `offset` into `buf`.
    ///
    /// # Panics
    /// If the range is outside the mapping.
    pub fn read(&self, offset: usize, buf: &mut [u8]) {
        assert!(
            offset.checked_add(buf.len()).is_some_and(|e| e <= self.len),
            "read outside the mapping"
        );
        // SAFETY: the range is inside the live mapping; `buf` is ours.
        unsafe { std::ptr::copy_nonoverlapping(self.addr.add(offset), buf.as_mut_ptr(), buf.len()) }
    }

    /// Copies `data` to `offset`.
    ///
    /// # Panics
    /// If the range is outside the mapping or the mapping is read-only.
    pub fn write(&self, offset: usize, data: &[u8]) {
        assert!(self.writable, "write to a read-only mapping");
        assert!(
            offset
                .checked_add(data.len())
                .is_some_and(|e| e <= self.len),
            "write outside the mapping"
        );
        // SAFETY: the range is inside the live, writable mapping.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.addr.add(offset), data.len()) }
    }

    /// The whole mapping as a slice.
    ///
    /// # Safety
    /// No process may write the memory while the slice is alive.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is live for `&self`; the caller rules out
        // concurrent writes.
        unsafe { std::slice::from_raw_parts(self.addr, self.len) }
    }

    /// The whole mapping as a mutable slice.
    ///
    /// # Safety
    /// No other process or thread may access the memory while the slice is
    /// alive, and the mapping must be writable.
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, with exclusive access promised by the caller.
        unsafe { std::slice::from_raw_parts_mut(self.addr, self.len) }
    }

    /// Gives up ownership without unmapping; returns (address, length).
    pub fn into_raw(self) -> (*mut u8, usize) {
        let parts = (self.addr, self.len);
        std::mem::forget(self);
        parts
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the range this guard mapped.
        unsafe { libc::munmap(self.addr.cast(), self.len) };
    }
}
