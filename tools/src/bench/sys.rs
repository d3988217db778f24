//! The few raw operations the benchmark needs that have no safe wrapper:
//! mappings at fixed addresses, SysV attach, volatile page touches and
//! `fork`. The only other `unsafe` in msharectl is `ksm.rs`'s
//! `prctl(PR_SET_MEMORY_MERGE)`, which nix does not wrap.
#![allow(unsafe_code)]

use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::ptr::NonNull;

use nix::errno::Errno;
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

/// How a [`Map`] is undone.
#[derive(Debug)]
enum Undo {
    Munmap,
    Shmdt,
    /// libmshare's mapping, which unmaps itself.
    Lib(#[allow(dead_code)] libmshare::Mapping),
}

/// A mapping this process made; unmapped on drop.
#[derive(Debug)]
pub struct Map {
    ptr: NonNull<u8>,
    len: usize,
    undo: Undo,
}

impl Map {
    /// Maps `len` bytes of `fd` shared and writable, at `addr`
    /// (`MAP_FIXED_NOREPLACE`) or anywhere if `addr` is 0.
    pub fn shared(fd: impl AsFd, addr: u64, len: u64) -> Result<Map, Errno> {
        let len = NonZeroUsize::new(len as usize).ok_or(Errno::EINVAL)?;
        let mut flags = MapFlags::MAP_SHARED;
        if addr != 0 {
            flags |= MapFlags::MAP_FIXED_NOREPLACE;
        }
        // SAFETY: a new shared mapping of a file; MAP_FIXED_NOREPLACE never
        // replaces an existing mapping, so no memory of ours changes.
        let ptr = unsafe {
            mmap(
                NonZeroUsize::new(addr as usize),
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                flags,
                fd,
                0,
            )
        }?;
        Ok(Map {
            ptr: ptr.cast(),
            len: len.get(),
            undo: Undo::Munmap,
        })
    }

    /// Attaches SysV segment `id` at `addr` (1 GiB-aligned for shared
    /// hugetlb page tables).
    pub fn sysv(id: i32, addr: u64, len: u64) -> Result<Map, Errno> {
        // SAFETY: shmat maps a new segment at a free address of our
        // choosing (it fails rather than replace a mapping without
        // SHM_REMAP).
        let p = unsafe { libc::shmat(id, addr as *const libc::c_void, 0) };
        if p as isize == -1 {
            return Err(Errno::last());
        }
        Ok(Map {
            ptr: NonNull::new(p.cast()).ok_or(Errno::EFAULT)?,
            len: len as usize,
            undo: Undo::Shmdt,
        })
    }

    /// Reads one byte every `step` bytes; their sum (so that the reads
    /// happen).
    pub fn touch(&self, step: usize) -> u64 {
        let mut sum = 0u64;
        for off in (0..self.len).step_by(step) {
            // SAFETY: `off < len` lies inside the live mapping.
            sum += u64::from(unsafe { self.ptr.as_ptr().add(off).read_volatile() });
        }
        sum
    }

    /// Writes one byte every `step` bytes, so that the memory is allocated.
    pub fn fill(&self, step: usize) {
        for off in (0..self.len).step_by(step) {
            // SAFETY: `off < len` lies inside the live, writable mapping.
            unsafe { self.ptr.as_ptr().add(off).write_volatile(1) };
        }
    }
}

impl From<libmshare::Mapping> for Map {
    fn from(m: libmshare::Mapping) -> Map {
        Map {
            ptr: NonNull::new(m.as_ptr()).expect("a mapping is never at 0"),
            len: m.len(),
            undo: Undo::Lib(m),
        }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        match self.undo {
            Undo::Lib(_) => {}
            // SAFETY: the mapping is ours and nothing borrows it any more.
            Undo::Munmap => drop(unsafe { munmap(self.ptr.cast(), self.len) }),
            // SAFETY: as above, for a SysV attach.
            Undo::Shmdt => drop(unsafe { libc::shmdt(self.ptr.as_ptr().cast()) }),
        }
    }
}

/// Runs `child` in a forked process, which exits with its result.
///
/// Only call while this process has one thread (the benchmark starts none).
pub fn fork(child: impl FnOnce() -> i32) -> Result<nix::unistd::Pid, Errno> {
    // SAFETY: the benchmark is single-threaded, so the child can allocate
    // and run any code; it never returns into the parent's code.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            let code = child();
            // SAFETY: leave without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => Ok(child),
    }
}

/// A new private SysV hugetlb segment of `size` bytes.
pub fn shmget_hugetlb(size: u64) -> Result<i32, Errno> {
    // SAFETY: shmget takes plain values and touches no memory of ours.
    let id = unsafe {
        libc::shmget(
            libc::IPC_PRIVATE,
            size as usize,
            libc::IPC_CREAT | libc::SHM_HUGETLB | 0o600,
        )
    };
    if id < 0 {
        Err(Errno::last())
    } else {
        Ok(id)
    }
}

/// Marks SysV segment `id` for removal (it goes with the last detach).
pub fn shm_remove(id: i32) {
    // SAFETY: IPC_RMID reads no buffer (a null one is allowed).
    unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
}
