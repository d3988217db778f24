//! `libmshare-preload.so`: puts the shared memory of programs that were
//! not written for msharefs on msharefs, loaded with `LD_PRELOAD` (which
//! `msharectl run` sets, with the configuration in [`config`]).
//!
//! What it takes over (see `Documentation/libmshare.md`):
//!
//! - `mmap(MAP_SHARED|MAP_ANONYMOUS)` of at least the minimum size: a
//!   region of `anon/` ([`anon`]); `munmap` and `mremap` of it are the
//!   kernel's, and the server is told when one is unmapped whole.
//! - `shm_open` and `shm_unlink`: regions of `shm/` ([`shm`]).
//!
//! SysV shared memory stays with libc: its attach count (`shm_nattch`,
//! which PostgreSQL reads to tell whether old backends live) and its key
//! namespace are the kernel's own and cannot be kept through files.
//!
//! Anything it cannot serve goes to libc unchanged, with one line on
//! stderr. Calls made while the library itself is working (it needs memory
//! and descriptors too) go straight to libc: a thread-local flag.

#![allow(rustdoc::private_intra_doc_links)]

mod anon;
mod config;
mod mount;
mod once;
mod raw;
mod say;
mod shm;
mod table;

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use libc::{mode_t, off_t, size_t};

use config::{Config, Level};

/// Reads the configuration when the library is loaded, before the program
/// runs any thread of its own (and so says then what it could not read).
extern "C" fn at_load() {
    table::hold_across_fork();
    let _ = Config::get();
}

#[used]
#[link_section = ".init_array"]
static AT_LOAD: extern "C" fn() = at_load;

thread_local! {
    /// Set while this thread runs the library's own code.
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with the thread marked busy, unless it is already: `None`
/// then, and also if `f` panics (the program must not die of it).
fn guarded<R>(f: impl FnOnce() -> R) -> Option<R> {
    if BUSY.with(|b| b.replace(true)) {
        return None;
    }
    let r = catch_unwind(AssertUnwindSafe(f)).ok();
    BUSY.with(|b| b.set(false));
    r
}

/// `mmap`: anonymous shared memory becomes a region.
///
/// # Safety
///
/// As for libc's `mmap`.
#[no_mangle]
pub unsafe extern "C" fn mmap(
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> *mut c_void {
    if anon::is_shared_anonymous(flags) {
        let served = guarded(|| {
            let config = Config::get();
            if !config.anon {
                return None;
            }
            match anon::eligible(config, len, flags) {
                Ok(false) => None,
                Ok(true) => match anon::take(config, len, prot) {
                    Ok(p) => Some(p),
                    Err(why) => {
                        say::line(
                            config.log,
                            Level::Warn,
                            format_args!("mmap of {len} bytes of shared anonymous memory left to libc: {why}"),
                        );
                        None
                    }
                },
                Err(why) => {
                    say::line(
                        config.log,
                        Level::Warn,
                        format_args!(
                            "mmap of {len} bytes of shared anonymous memory left to libc: {why}"
                        ),
                    );
                    None
                }
            }
        });
        if let Some(Some(p)) = served {
            return p;
        }
    }
    raw::mmap(addr, len, prot, flags, fd, off)
}

/// `mmap64`: the same call under its large-file name.
///
/// # Safety
///
/// As for libc's `mmap64`.
#[no_mangle]
pub unsafe extern "C" fn mmap64(
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> *mut c_void {
    // SAFETY: the same contract.
    unsafe { mmap(addr, len, prot, flags, fd, off) }
}

/// `munmap`: the kernel's; the server hears of a region unmapped whole.
///
/// # Safety
///
/// As for libc's `munmap`.
#[no_mangle]
pub unsafe extern "C" fn munmap(addr: *mut c_void, len: size_t) -> c_int {
    if table::any() {
        if let Some(r) = guarded(|| anon::munmap(addr, len)) {
            return r;
        }
    }
    raw::munmap(addr, len)
}

/// `mremap`: the kernel's; a region that moves is followed. (Declared
/// with the optional fifth argument, which the x86_64 calling convention
/// passes as it would a fixed one.)
///
/// # Safety
///
/// As for libc's `mremap`.
#[no_mangle]
pub unsafe extern "C" fn mremap(
    old: *mut c_void,
    old_len: size_t,
    new_len: size_t,
    flags: c_int,
    new: *mut c_void,
) -> *mut c_void {
    let new = if flags & libc::MREMAP_FIXED != 0 {
        new
    } else {
        std::ptr::null_mut()
    };
    let p = raw::mremap(old, old_len, new_len, flags, new);
    if p != libc::MAP_FAILED && table::overlaps(old as usize, old_len) {
        let saved = raw::errno();
        guarded(|| table::moved(old as usize, p as usize, new_len));
        raw::set_errno(saved);
    }
    p
}

/// `shm_open`: an object of the mount's `shm/`.
///
/// # Safety
///
/// As for libc's `shm_open`: `name` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn shm_open(name: *const c_char, oflag: c_int, mode: mode_t) -> c_int {
    match guarded(|| Config::get().shm.then(|| shm::open(name, oflag, mode))) {
        Some(Some(fd)) => fd,
        _ => raw::shm_open(name, oflag, mode),
    }
}

/// `shm_unlink`.
///
/// # Safety
///
/// As for libc's `shm_unlink`: `name` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn shm_unlink(name: *const c_char) -> c_int {
    match guarded(|| Config::get().shm.then(|| shm::unlink(name))) {
        Some(Some(r)) => r,
        _ => raw::shm_unlink(name),
    }
}
