//! The C API (`include/mshare.h`). Functions return 0 (or a pointer) on
//! success and -1 (or NULL) with `errno` set on failure;
//! [`mshare_strerror`] gives this thread's last failure in words.
//!
//! # Safety
//!
//! Every function takes C pointers. NULL is checked where the header allows
//! or forbids it (`EINVAL`); any other pointer must be what the header says
//! (a NUL-terminated string, a region from `mshare_create`/`mshare_open` not
//! yet closed, a writable struct).
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::errno::Errno;

use mshare_uapi::{MshareCreate, MshareInfo, MshareOptions, MSHARE_EXCL, MSHARE_NO_OBJECT};

use crate::{CreateOptions, Error, Mapping, Mount, Region};

/// `struct mshare_region`: an open region and its mapping, if any.
#[derive(Debug)]
pub struct MshareRegion {
    region: Region,
    mapping: Option<Mapping>,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::from(c"no error"));
}

fn record(errno: Errno, text: String) {
    LAST_ERROR
        .with(|l| *l.borrow_mut() = CString::new(text.replace('\0', " ")).unwrap_or_default());
    errno.set();
}

fn fail(e: Error) {
    record(e.errno(), e.to_string());
}

fn fail_with(errno: Errno, what: &str) {
    record(errno, format!("{what}: {}", errno.desc()));
}

/// Turns an optional C string into a `&str` (`EINVAL` if not UTF-8).
///
/// # Safety
/// `p` is NULL or a NUL-terminated string that outlives `'a`.
unsafe fn text<'a>(p: *const c_char, what: &str) -> Result<Option<&'a str>, ()> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller promises a NUL-terminated string.
    match unsafe { CStr::from_ptr(p) }.to_str() {
        Ok(s) => Ok(Some(s)),
        Err(_) => {
            fail_with(Errno::EINVAL, &format!("{what} is not UTF-8"));
            Err(())
        }
    }
}

/// # Safety
/// See [`text`].
unsafe fn dir_and_name<'a>(
    dir: *const c_char,
    name: *const c_char,
) -> Option<(Option<&'a str>, &'a str)> {
    // SAFETY: forwarded caller promises.
    let dir = unsafe { text(dir, "dir") }.ok()?;
    // SAFETY: forwarded caller promises.
    let Some(name) = unsafe { text(name, "name") }.ok()? else {
        fail_with(Errno::EINVAL, "name is NULL");
        return None;
    };
    Some((dir, name))
}

/// # Safety
/// See [`text`].
unsafe fn mount_and_name<'a>(dir: *const c_char, name: *const c_char) -> Option<(Mount, &'a str)> {
    // SAFETY: forwarded caller promises.
    let (dir, name) = unsafe { dir_and_name(dir, name) }?;
    match Mount::find(dir.map(Path::new)) {
        Ok(m) => Some((m, name)),
        Err(e) => {
            fail(e);
            None
        }
    }
}

fn boxed(r: Result<Region, Error>) -> *mut MshareRegion {
    match r {
        Ok(region) => Box::into_raw(Box::new(MshareRegion {
            region,
            mapping: None,
        })),
        Err(e) => {
            fail(e);
            std::ptr::null_mut()
        }
    }
}

/// # Safety
/// `r` is NULL or a live region.
unsafe fn region_ref<'a>(r: *const MshareRegion) -> Option<&'a MshareRegion> {
    // SAFETY: the caller promises a live region or NULL.
    let r = unsafe { r.as_ref() };
    if r.is_none() {
        fail_with(Errno::EINVAL, "region is NULL");
    }
    r
}

/// `long long mshare_alignment(const char *dir)`: the mount's alignment.
///
/// # Safety
/// `dir` is NULL (find the mount) or a NUL-terminated path.
#[no_mangle]
pub unsafe extern "C" fn mshare_alignment(dir: *const c_char) -> i64 {
    // SAFETY: forwarded caller promise.
    let Ok(dir) = (unsafe { text(dir, "dir") }) else {
        return -1;
    };
    match Mount::find(dir.map(Path::new)) {
        Ok(m) => m.alignment() as i64,
        Err(e) => {
            fail(e);
            -1
        }
    }
}

/// `struct mshare_region *mshare_create(dir, name, start, size, opts)`.
///
/// # Safety
/// `dir` NULL or a path; `name` a string; `opts` NULL or a valid struct.
#[no_mangle]
pub unsafe extern "C" fn mshare_create(
    dir: *const c_char,
    name: *const c_char,
    start: u64,
    size: u64,
    opts: *const MshareOptions,
) -> *mut MshareRegion {
    // SAFETY: forwarded caller promises.
    let Some((mount, name)) = (unsafe { mount_and_name(dir, name) }) else {
        return std::ptr::null_mut();
    };
    // SAFETY: NULL or a valid struct, as promised.
    let o = unsafe { opts.as_ref() }.copied().unwrap_or(MshareOptions {
        flags: MSHARE_EXCL,
        ..Default::default()
    });
    let backing = match o.backing() {
        Ok(b) => b,
        Err(n) => {
            fail_with(Errno::EINVAL, &format!("unknown backing {n}"));
            return std::ptr::null_mut();
        }
    };
    let options = CreateOptions {
        backing,
        mode: if o.mode == 0 { 0o600 } else { o.mode & 0o7777 },
        exclusive: o.flags & MSHARE_EXCL != 0,
        whole_object: o.flags & MSHARE_NO_OBJECT == 0,
    };
    boxed(mount.create(name, start, size, &options))
}

/// `struct mshare_region *mshare_open(dir, name, read_only)`.
///
/// # Safety
/// `dir` NULL or a path; `name` a string.
#[no_mangle]
pub unsafe extern "C" fn mshare_open(
    dir: *const c_char,
    name: *const c_char,
    read_only: c_int,
) -> *mut MshareRegion {
    // SAFETY: forwarded caller promises.
    let Some((dir, name)) = (unsafe { dir_and_name(dir, name) }) else {
        return std::ptr::null_mut();
    };
    boxed(Mount::open_in(dir.map(Path::new), name, read_only != 0))
}

/// `void *mshare_attach(dir, name, read_only, uint64_t *size)`: maps
/// region `name` at its start without opening the region file
/// ([`Mount::attach`]); the caller unmaps it with `munmap(addr, *size)`.
///
/// # Safety
/// `dir` NULL or a path; `name` a string; `size` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mshare_attach(
    dir: *const c_char,
    name: *const c_char,
    read_only: c_int,
    size: *mut u64,
) -> *mut c_void {
    // SAFETY: forwarded caller promises.
    let Some((mount, name)) = (unsafe { mount_and_name(dir, name) }) else {
        return std::ptr::null_mut();
    };
    match mount.attach(name, read_only != 0) {
        Ok(m) => {
            let (addr, len) = m.into_raw();
            // SAFETY: the caller promises NULL or a writable u64.
            if let Some(size) = unsafe { size.as_mut() } {
                *size = len as u64;
            }
            addr.cast()
        }
        Err(e) => {
            fail(e);
            std::ptr::null_mut()
        }
    }
}

/// `int mshare_get_info(const struct mshare_region *, struct mshare_info *)`.
///
/// # Safety
/// `r` a live region; `info` writable.
#[no_mangle]
pub unsafe extern "C" fn mshare_get_info(r: *const MshareRegion, info: *mut MshareInfo) -> c_int {
    // SAFETY: caller promise.
    let Some(r) = (unsafe { region_ref(r) }) else {
        return -1;
    };
    if info.is_null() {
        fail_with(Errno::EFAULT, "info is NULL");
        return -1;
    }
    match r.region.info() {
        Ok(i) => {
            // SAFETY: non-NULL and writable, as promised.
            unsafe { info.write(i) };
            0
        }
        Err(e) => {
            fail(e);
            -1
        }
    }
}

/// `int mshare_create_mapping(struct mshare_region *, const struct mshare_create *)`:
/// `MSHAREFS_CREATE_MAPPING` with the caller's struct.
///
/// # Safety
/// `r` a live region; `c` a valid struct.
#[no_mangle]
pub unsafe extern "C" fn mshare_create_mapping(
    r: *const MshareRegion,
    c: *const MshareCreate,
) -> c_int {
    // SAFETY: caller promise.
    let Some(r) = (unsafe { region_ref(r) }) else {
        return -1;
    };
    // SAFETY: NULL or valid, as promised.
    let Some(c) = (unsafe { c.as_ref() }) else {
        fail_with(Errno::EFAULT, "mshare_create is NULL");
        return -1;
    };
    match crate::ioctl::create_mapping(&r.region, c) {
        Ok(()) => 0,
        Err(e) => {
            fail(Error::Region {
                op: "MSHAREFS_CREATE_MAPPING",
                region: r.region.name().into(),
                errno: e,
            });
            -1
        }
    }
}

/// `int mshare_unmap_range(struct mshare_region *, uint64_t addr, uint64_t size)`.
///
/// # Safety
/// `r` a live region.
#[no_mangle]
pub unsafe extern "C" fn mshare_unmap_range(r: *const MshareRegion, addr: u64, size: u64) -> c_int {
    // SAFETY: caller promise.
    let Some(r) = (unsafe { region_ref(r) }) else {
        return -1;
    };
    match r.region.unmap(addr, size) {
        Ok(()) => 0,
        Err(e) => {
            fail(e);
            -1
        }
    }
}

/// `void *mshare_map(struct mshare_region *)`: maps the region at its start
/// (the direct path); the same address again if already mapped.
///
/// # Safety
/// `r` a live region.
#[no_mangle]
pub unsafe extern "C" fn mshare_map(r: *mut MshareRegion) -> *mut c_void {
    // SAFETY: caller promise.
    let Some(r) = (unsafe { r.as_mut() }) else {
        fail_with(Errno::EINVAL, "region is NULL");
        return std::ptr::null_mut();
    };
    if let Some(m) = &r.mapping {
        return m.as_ptr().cast();
    }
    match r.region.map() {
        Ok(m) => {
            let p = m.as_ptr();
            r.mapping = Some(m);
            p.cast()
        }
        Err(e) => {
            fail(e);
            std::ptr::null_mut()
        }
    }
}

/// `int mshare_detach(struct mshare_region *)`: unmaps what `mshare_map`
/// mapped (`EINVAL` if nothing).
///
/// # Safety
/// `r` a live region.
#[no_mangle]
pub unsafe extern "C" fn mshare_detach(r: *mut MshareRegion) -> c_int {
    // SAFETY: caller promise.
    let Some(r) = (unsafe { r.as_mut() }) else {
        fail_with(Errno::EINVAL, "region is NULL");
        return -1;
    };
    match r.mapping.take() {
        Some(m) => {
            drop(m);
            0
        }
        None => {
            fail_with(Errno::EINVAL, "region is not mapped");
            -1
        }
    }
}

/// `int mshare_fd(const struct mshare_region *)`: the region file's
/// descriptor (owned by the region; for ioctls of your own).
///
/// # Safety
/// `r` a live region.
#[no_mangle]
pub unsafe extern "C" fn mshare_fd(r: *const MshareRegion) -> c_int {
    // SAFETY: caller promise.
    match unsafe { region_ref(r) } {
        Some(r) => std::os::fd::AsFd::as_fd(&r.region).as_raw_fd(),
        None => -1,
    }
}

/// `int mshare_close(struct mshare_region *)`: unmaps (if mapped) and
/// closes. NULL is a no-op.
///
/// # Safety
/// `r` NULL or a live region, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn mshare_close(r: *mut MshareRegion) -> c_int {
    if !r.is_null() {
        // SAFETY: made by Box::into_raw in `boxed`, closed once (promise).
        drop(unsafe { Box::from_raw(r) });
    }
    0
}

/// `int mshare_remove(const char *dir, const char *name)`.
///
/// # Safety
/// `dir` NULL or a path; `name` a string.
#[no_mangle]
pub unsafe extern "C" fn mshare_remove(dir: *const c_char, name: *const c_char) -> c_int {
    // SAFETY: forwarded caller promises.
    let Some((mount, name)) = (unsafe { mount_and_name(dir, name) }) else {
        return -1;
    };
    match mount.remove(name) {
        Ok(()) => 0,
        Err(e) => {
            fail(e);
            -1
        }
    }
}

/// `const char *mshare_strerror(void)`: this thread's last failure, in
/// words (valid until the thread's next failing call).
#[no_mangle]
pub extern "C" fn mshare_strerror() -> *const c_char {
    LAST_ERROR.with(|l| l.borrow().as_ptr())
}
