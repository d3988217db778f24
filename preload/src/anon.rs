//! `mmap(MAP_SHARED|MAP_ANONYMOUS)` as a region of the mount's `anon/`:
//! created by this process, mapped at the 1 GiB-aligned start the server
//! chose (so that children forked later share the hugetlb page tables),
//! zero-filled as anonymous memory is. The server removes the region once
//! no process maps it; `munmap` of all of it tells the server to look.

use std::ffi::c_void;
use std::sync::atomic::{AtomicU32, Ordering};

use libc::{c_int, size_t};
use libmshare::{CreateOptions, Mount};
use mshare_uapi::{Backing, PoolPolicy, PoolStatus, ANON_DIR, HUGE_PAGE_SIZE, POOL_XATTR};

use crate::config::{Choice, Config, Level};
use crate::table::{self, Entry};
use crate::{mount, raw, say};

const MAP_HUGE_SHIFT: c_int = 26;
const MAP_HUGE_MASK: c_int = 0x3f << MAP_HUGE_SHIFT;
const MAP_HUGE_2MB: c_int = 21 << MAP_HUGE_SHIFT;

/// Why a call stays with libc.
pub type Reason = String;

/// The flags that a region can honour besides `MAP_SHARED|MAP_ANONYMOUS`.
const SERVED_FLAGS: c_int =
    libc::MAP_HUGETLB | MAP_HUGE_MASK | libc::MAP_NORESERVE | libc::MAP_POPULATE;

/// Whether `flags` ask for anonymous shared memory.
pub fn is_shared_anonymous(flags: c_int) -> bool {
    let kind = flags & 0x0f;
    flags & libc::MAP_ANONYMOUS != 0
        && (kind == libc::MAP_SHARED || kind == libc::MAP_SHARED_VALIDATE)
}

/// Whether a call of `len` bytes with `flags` is one to serve: `Ok(false)`
/// for one the rules leave to libc without a word (below the minimum),
/// `Err` for one that was meant for msharefs but cannot be served.
pub fn eligible(config: &Config, len: usize, flags: c_int) -> Result<bool, Reason> {
    if (len as u64) < config.min_size {
        return Ok(false);
    }
    if flags & (libc::MAP_FIXED | libc::MAP_FIXED_NOREPLACE) != 0 {
        return Err("MAP_FIXED asks for an address; a region has its own".into());
    }
    let huge = flags & MAP_HUGE_MASK;
    if huge != 0 && huge != MAP_HUGE_2MB {
        return Err("only 2 MiB huge pages are served".into());
    }
    let other = flags & !(0x0f | libc::MAP_ANONYMOUS | SERVED_FLAGS);
    if other != 0 {
        return Err(format!("flags {other:#x} are not served"));
    }
    Ok(true)
}

/// Serves the call, or says why not.
pub fn take(config: &Config, len: usize, prot: c_int) -> Result<*mut c_void, Reason> {
    let mount = mount::get(config)?;
    let kinds: &[Backing] = match config.backing {
        Choice::Kind(k) => &[k],
        Choice::Auto if pool_can_grow(mount) => &[Backing::Hugetlb, Backing::Thp],
        Choice::Auto => &[Backing::Thp],
    };
    let mut why = String::new();
    for &kind in kinds {
        match map_region(mount, kind, len, prot) {
            Ok(p) => return Ok(p),
            Err(e) => {
                if !why.is_empty() {
                    why.push_str("; ");
                }
                why.push_str(&e);
            }
        }
    }
    Err(why)
}

/// Whether the server grows the hugetlb pool for new regions.
fn pool_can_grow(mount: &Mount) -> bool {
    let mut buf = [0u8; 256];
    let path = mount::c_path(mount.dir());
    let name = std::ffi::CString::new(POOL_XATTR).unwrap_or_default();
    // SAFETY: NUL-terminated path and name, and a buffer of its length.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n <= 0 {
        return false;
    }
    let text = String::from_utf8_lossy(&buf[..n as usize]);
    text.trim_end_matches(['\0', '\n'])
        .parse::<PoolStatus>()
        .is_ok_and(|s| s.policy == PoolPolicy::Auto && s.max_pages > s.ours)
}

/// Creates a region of `kind` for `len` bytes, maps it and records it.
fn map_region(
    mount: &Mount,
    kind: Backing,
    len: usize,
    prot: c_int,
) -> Result<*mut c_void, Reason> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let granule = if kind == Backing::Hugetlb {
        HUGE_PAGE_SIZE
    } else {
        mshare_uapi::PAGE_SIZE
    };
    let size = (len as u64).div_ceil(granule) * granule;
    let opts = CreateOptions {
        backing: Some(kind),
        mode: 0o600,
        exclusive: true,
        whole_object: true,
    };
    // A name can be taken by a region this pid made before an exec (the
    // counter starts again): the next number then.
    let (name, region) = loop {
        let name = format!(
            "{ANON_DIR}/{}.{}.{}",
            program(),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed) + 1
        );
        match mount.create(&name, 0, size, &opts) {
            Ok(r) => break (name, r),
            Err(e) if e.errno() as i32 == libc::EEXIST && SEQ.load(Ordering::Relaxed) < 1 << 20 => {
            }
            Err(e) => return Err(format!("{kind}: {e}")),
        }
    };
    let mapping = match region.map() {
        Ok(m) => m,
        Err(e) => {
            drop(region);
            let _ = mount.remove(&name);
            return Err(format!("{kind}: {e}"));
        }
    };
    let (addr, mapped) = mapping.into_raw();
    drop(region);
    if prot != libc::PROT_READ | libc::PROT_WRITE {
        // SAFETY: changes the protection of the range just mapped.
        unsafe { libc::mprotect(addr.cast(), mapped, prot) };
    }
    if !table::insert(Entry::new(addr as usize, len, mapped, &name)) {
        say::line(
            Config::get().log,
            Level::Warn,
            format_args!(
                "{name}: more than {} regions; its munmap will not be noticed until exit",
                table::SLOTS
            ),
        );
    }
    say::line(
        Config::get().log,
        Level::Verbose,
        format_args!("mmap of {len} bytes of shared anonymous memory: {name} ({kind}) at {addr:p}"),
    );
    Ok(addr.cast())
}

/// This program's name (`/proc/self/comm`), safe for a file name.
fn program() -> String {
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap_or_default();
    let name: String = comm
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "program".into()
    } else {
        name
    }
}

/// After `munmap` of `[addr, addr + len)`: tells the server about each
/// region unmapped whole.
pub fn unmapped(addr: usize, len: usize) {
    let Ok(mount) = mount::get(Config::get()) else {
        return;
    };
    table::take_covered(addr, len, &mut |e| {
        let Ok(path) = mount.path(e.name()) else {
            return;
        };
        let c = mount::c_path(&path);
        // SAFETY: NUL-terminated path; the descriptor is closed below.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd >= 0 {
            // SAFETY: an argument-less ioctl on the descriptor just opened.
            unsafe {
                libc::ioctl(fd, mshare_uapi::MSHAREFS_UNMAPPED as _);
                libc::close(fd);
            }
        }
    });
}

/// `munmap` of a tracked region: whole or in part, the kernel does it;
/// whole, the server is told.
pub fn munmap(addr: *mut c_void, len: size_t) -> c_int {
    let r = raw::munmap(addr, len);
    if r == 0 {
        let saved = raw::errno();
        unmapped(addr as usize, len);
        raw::set_errno(saved);
    }
    r
}
