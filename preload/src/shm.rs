//! `shm_open` and `shm_unlink` as regions of the mount's `shm/`: what
//! follows on the descriptor (`ftruncate`, `posix_fallocate`, `fstat`,
//! `mmap` anywhere, `fchmod`, `close`) is the kernel's business with the
//! region file, which the server answers as a file of any size.

use std::ffi::{c_char, c_int, CStr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use libc::mode_t;
use mshare_uapi::SHM_DIR;

use crate::config::{Config, Level};
use crate::{mount, raw, say};

/// What the name of a POSIX shared memory object becomes, as glibc reads
/// it: leading slashes dropped; then no slash, not empty, not `.` or
/// `..`, at most `NAME_MAX` bytes.
pub fn object_name(name: &[u8]) -> Result<&[u8], c_int> {
    let start = name.iter().position(|&b| b != b'/').unwrap_or(name.len());
    let rest = &name[start..];
    if rest.is_empty() || rest == b"." || rest == b".." || rest.contains(&b'/') {
        return Err(libc::EINVAL);
    }
    if rest.len() > 255 {
        return Err(libc::ENAMETOOLONG);
    }
    Ok(rest)
}

/// Where object `name` lives on the mount.
fn path_of(name: &[u8]) -> Result<PathBuf, String> {
    let mount = mount::get(Config::get())?;
    let mut p = mount.dir().join(SHM_DIR);
    p.push(std::ffi::OsStr::new(
        std::str::from_utf8(name).map_err(|_| "name is not UTF-8".to_string())?,
    ));
    Ok(p)
}

/// Errors that are the answer to the program (what POSIX or the file
/// system says of its request), not a failure of msharefs.
fn is_answer(errno: c_int) -> bool {
    matches!(
        errno,
        libc::EEXIST
            | libc::ENOENT
            | libc::EACCES
            | libc::EINVAL
            | libc::EMFILE
            | libc::ENFILE
            | libc::ENAMETOOLONG
            | libc::EPERM
    )
}

/// `shm_open`.
pub fn open(name: *const c_char, oflag: c_int, mode: mode_t) -> c_int {
    let config = Config::get();
    // SAFETY: the caller passes a NUL-terminated name, as for libc's.
    let bytes = unsafe { CStr::from_ptr(name) }.to_bytes();
    let object = match object_name(bytes) {
        Ok(o) => o,
        Err(e) => return raw::fail(e),
    };
    let path = match path_of(object) {
        Ok(p) => p,
        Err(why) => {
            // Once per process: a program may open many.
            static SAID: AtomicBool = AtomicBool::new(false);
            let level = if SAID.swap(true, Ordering::Relaxed) {
                Level::Verbose
            } else {
                Level::Warn
            };
            say::line(
                config.log,
                level,
                format_args!("shm_open left to libc: {why}"),
            );
            return raw::shm_open(name, oflag, mode);
        }
    };
    let c = mount::c_path(&path);
    // SAFETY: a NUL-terminated path; flags as glibc's shm_open adds them.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            oflag | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd >= 0 {
        say::line(
            config.log,
            Level::Verbose,
            format_args!("shm_open: {}", path.display()),
        );
        return fd;
    }
    let errno = raw::errno();
    if errno == libc::ENOENT && oflag & libc::O_CREAT == 0 {
        // Made by a process without the library: libc's, if it is there.
        return raw::shm_open(name, oflag, mode);
    }
    if is_answer(errno) {
        return raw::fail(errno);
    }
    say::line(
        config.log,
        Level::Warn,
        format_args!(
            "shm_open of {} left to libc: {}",
            String::from_utf8_lossy(object),
            std::io::Error::from_raw_os_error(errno)
        ),
    );
    raw::shm_open(name, oflag, mode)
}

/// `shm_unlink`.
pub fn unlink(name: *const c_char) -> c_int {
    // SAFETY: as for `open`.
    let bytes = unsafe { CStr::from_ptr(name) }.to_bytes();
    let object = match object_name(bytes) {
        Ok(o) => o,
        Err(e) => return raw::fail(e),
    };
    let Ok(path) = path_of(object) else {
        return raw::shm_unlink(name);
    };
    let c = mount::c_path(&path);
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::unlink(c.as_ptr()) } == 0 {
        return 0;
    }
    match raw::errno() {
        libc::ENOENT => raw::shm_unlink(name),
        e => raw::fail(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_glibc_reads_them() {
        assert_eq!(object_name(b"/psm_1"), Ok(&b"psm_1"[..]));
        assert_eq!(object_name(b"//x"), Ok(&b"x"[..]));
        assert_eq!(object_name(b"x"), Ok(&b"x"[..]));
        assert_eq!(object_name(b"/"), Err(libc::EINVAL));
        assert_eq!(object_name(b""), Err(libc::EINVAL));
        assert_eq!(object_name(b"/a/b"), Err(libc::EINVAL));
        assert_eq!(object_name(b"/.."), Err(libc::EINVAL));
        assert_eq!(object_name(&[b'a'; 300]), Err(libc::ENAMETOOLONG));
    }
}
