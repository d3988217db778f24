//! `write(2)` to hugetlb memory. hugetlbfs has no write method, so the
//! server maps the huge pages the write touches and copies.
//!
//! # Safety
//!
//! The mapping lives only inside [`write()`]; the bytes are copied through raw
//! pointers (`MmapRaw`), never through references, because other processes
//! may change the same memory at any time.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, OwnedFd};

use memmap2::MmapOptions;
use mshare_uapi::HUGE_PAGE_SIZE;
use nix::errno::Errno;

/// Copies `data` to `offset` of the hugetlb file `file`.
pub fn write(file: &OwnedFd, offset: u64, data: &[u8]) -> Result<(), Errno> {
    if data.is_empty() {
        return Ok(());
    }
    let start = offset & !(HUGE_PAGE_SIZE - 1);
    let end = (offset + data.len() as u64).next_multiple_of(HUGE_PAGE_SIZE);
    let map = MmapOptions::new()
        .offset(start)
        .len((end - start) as usize)
        .map_raw(file.as_raw_fd())
        .map_err(|e| crate::fail::errno_of(&e))?;
    // SAFETY: `offset - start + data.len()` is within the mapping, which is
    // writable and lives until the end of this function; the source is a
    // separate buffer of ours.
    unsafe {
        std::ptr::copy_nonoverlapping(
            data.as_ptr(),
            map.as_mut_ptr().add((offset - start) as usize),
            data.len(),
        );
    }
    Ok(())
}
