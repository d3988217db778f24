//! The real calls behind the ones this library takes over: system calls
//! for the memory calls (`dlsym` could itself allocate, and so map memory,
//! while looking up `mmap`), libc's own functions for `shm_open` and
//! `shm_unlink` (looked up once with `dlsym(RTLD_NEXT)`).

use std::ffi::{c_char, c_int, c_void, CStr};

use crate::once::Race;

use libc::{mode_t, off_t, size_t};

/// `mmap(2)` itself.
pub fn mmap(
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> *mut c_void {
    // SAFETY: the raw system call with the caller's arguments; the kernel
    // checks them, and sets errno through libc's syscall() on failure.
    unsafe { libc::syscall(libc::SYS_mmap, addr, len, prot, flags, fd, off) as *mut c_void }
}

/// `munmap(2)` itself.
pub fn munmap(addr: *mut c_void, len: size_t) -> c_int {
    // SAFETY: as for `mmap`.
    unsafe { libc::syscall(libc::SYS_munmap, addr, len) as c_int }
}

/// `mremap(2)` itself.
pub fn mremap(
    old: *mut c_void,
    old_len: size_t,
    new_len: size_t,
    flags: c_int,
    new: *mut c_void,
) -> *mut c_void {
    // SAFETY: as for `mmap`.
    unsafe { libc::syscall(libc::SYS_mremap, old, old_len, new_len, flags, new) as *mut c_void }
}

type ShmOpen = unsafe extern "C" fn(*const c_char, c_int, mode_t) -> c_int;
type ShmUnlink = unsafe extern "C" fn(*const c_char) -> c_int;

/// The next definition of `sym` after this library (libc's).
fn next(sym: &CStr) -> Option<usize> {
    // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT looks in the
    // objects loaded after this one.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, sym.as_ptr()) };
    (!p.is_null()).then_some(p as usize)
}

/// libc's `shm_open`.
pub fn shm_open(name: *const c_char, oflag: c_int, mode: mode_t) -> c_int {
    static REAL: Race<Option<usize>> = Race::new();
    match *REAL.get_or_init(|| next(c"shm_open")) {
        // SAFETY: the address dlsym gave for libc's shm_open, which has
        // this signature; the arguments are the caller's.
        Some(f) => unsafe { std::mem::transmute::<usize, ShmOpen>(f)(name, oflag, mode) },
        None => fail(libc::ENOSYS),
    }
}

/// libc's `shm_unlink`.
pub fn shm_unlink(name: *const c_char) -> c_int {
    static REAL: Race<Option<usize>> = Race::new();
    match *REAL.get_or_init(|| next(c"shm_unlink")) {
        // SAFETY: as for `shm_open`.
        Some(f) => unsafe { std::mem::transmute::<usize, ShmUnlink>(f)(name) },
        None => fail(libc::ENOSYS),
    }
}

/// Sets errno and returns -1.
pub fn fail(errno: c_int) -> c_int {
    set_errno(errno);
    -1
}

/// Sets errno.
pub fn set_errno(errno: c_int) {
    // SAFETY: __errno_location returns this thread's errno.
    unsafe { *libc::__errno_location() = errno };
}

/// This thread's errno.
pub fn errno() -> c_int {
    // SAFETY: as for `set_errno`.
    unsafe { *libc::__errno_location() }
}
