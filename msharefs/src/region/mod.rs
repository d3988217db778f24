//! A region: its layout (start, size), the objects mapped in it, its backing
//! file and its open count. The control-plane checks are pure functions,
//! unit-tested below; [`Region`] applies them under the region's own lock.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use fuser::BackingId;
use libmshare::abi::{
    MshareCreate, MshareInfo, MshareUnmap, HUGE_PAGE_SIZE, PAGE_SIZE, USER_ADDR_END,
};
use nix::errno::Errno;
use parking_lot::Mutex;

use crate::addrspace::AddressSpace;
use crate::backing;
use crate::fail::{ensure, Fail};
use crate::options::BackingKind;

/// An object created by `MSHAREFS_CREATE_MAPPING`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// `PROT_*` bits as asked.
    pub prot: u32,
}

impl Mapping {
    fn end(&self) -> u64 {
        self.addr + self.size
    }
}

/// The granularity of addresses and sizes in a region of `kind`.
pub fn page_size(kind: BackingKind) -> u64 {
    match kind {
        BackingKind::Hugetlb => HUGE_PAGE_SIZE,
        _ => PAGE_SIZE,
    }
}

/// Checks a `MSHAREFS_SET_SIZE` layout against the alignment.
pub fn check_layout(info: &MshareInfo, align: u64, kind: BackingKind) -> Result<(), Fail> {
    ensure(info.size > 0, Errno::EINVAL, "size is zero")?;
    ensure(info.start != 0, Errno::EINVAL, "start is zero")?;
    ensure(
        info.start % align == 0 && info.size % align == 0,
        Errno::EINVAL,
        "start or size is not a multiple of the alignment (see mshare_info)",
    )?;
    let granule = page_size(kind);
    ensure(
        info.start % granule == 0 && info.size % granule == 0,
        Errno::EINVAL,
        "start or size is not a multiple of the huge page size",
    )?;
    let end = info.start.checked_add(info.size);
    ensure(
        end.is_some_and(|e| e <= USER_ADDR_END),
        Errno::EINVAL,
        "start + size is beyond the user address space",
    )
}

const MAP_TYPE: u32 = 0x0f;
const MAP_HUGE_SHIFT: u32 = 26;
const MAP_HUGE_MASK: u32 = 0x3f << MAP_HUGE_SHIFT;
const MAP_HUGE_2MB: u32 = 21 << MAP_HUGE_SHIFT;

/// What a valid `MSHAREFS_CREATE_MAPPING` asks for besides its range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreateRequest {
    /// The object.
    pub mapping: Mapping,
    /// `MAP_POPULATE`: allocate the memory now.
    pub populate: bool,
}

/// Checks a `MSHAREFS_CREATE_MAPPING` against the region's layout, kind and
/// existing objects.
pub fn check_create(
    c: &MshareCreate,
    info: &MshareInfo,
    kind: BackingKind,
    existing: &[Mapping],
) -> Result<CreateRequest, Fail> {
    let flags = c.flags;
    let required = (libc::MAP_ANONYMOUS | libc::MAP_FIXED) as u32;
    let shared = flags & MAP_TYPE == libc::MAP_SHARED as u32
        || flags & MAP_TYPE == libc::MAP_SHARED_VALIDATE as u32;
    ensure(
        shared && flags & required == required,
        Errno::EINVAL,
        "flags must include MAP_ANONYMOUS|MAP_SHARED|MAP_FIXED",
    )?;
    let allowed = MAP_TYPE
        | required
        | (libc::MAP_HUGETLB | libc::MAP_NORESERVE | libc::MAP_POPULATE) as u32
        | MAP_HUGE_MASK;
    ensure(
        flags & !allowed == 0,
        Errno::EINVAL,
        "unsupported MAP_* flag",
    )?;
    let huge_bits = flags & MAP_HUGE_MASK;
    ensure(
        huge_bits == 0 || huge_bits == MAP_HUGE_2MB,
        Errno::EINVAL,
        "only 2 MiB huge pages are supported",
    )?;
    if flags & libc::MAP_HUGETLB as u32 != 0 {
        ensure(
            kind == BackingKind::Hugetlb,
            Errno::EINVAL,
            "MAP_HUGETLB in a region that is not hugetlb-backed (mount with backing=hugetlb)",
        )?;
    }
    ensure(
        c.fd == u32::MAX,
        Errno::EINVAL,
        "fd must be -1: file-backed objects are not supported",
    )?;
    ensure(
        c.prot & !((libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u32) == 0,
        Errno::EINVAL,
        "unknown PROT_* bits",
    )?;
    let granule = page_size(kind);
    ensure(c.size > 0, Errno::EINVAL, "size is zero")?;
    ensure(
        c.addr % granule == 0 && c.size % granule == 0 && c.offset % PAGE_SIZE == 0,
        Errno::EINVAL,
        "addr, size or offset is not page aligned",
    )?;
    let mapping = Mapping {
        addr: c.addr,
        size: c.size,
        prot: c.prot,
    };
    check_inside(info, c.addr, c.size)?;
    ensure(
        !existing
            .iter()
            .any(|m| m.addr < mapping.end() && mapping.addr < m.end()),
        Errno::EINVAL,
        "overlaps an existing mapping",
    )?;
    Ok(CreateRequest {
        mapping,
        populate: flags & libc::MAP_POPULATE as u32 != 0,
    })
}

fn check_inside(info: &MshareInfo, addr: u64, size: u64) -> Result<(), Fail> {
    let end = addr.checked_add(size);
    ensure(
        addr >= info.start && end.is_some_and(|e| e <= info.start + info.size),
        Errno::EINVAL,
        "range is not inside the region",
    )
}

/// Removes `[addr, addr + size)` from `mappings` (splitting objects that
/// straddle it). `EINVAL` if the range is bad or holds no object.
pub fn cut(
    mappings: &[Mapping],
    u: &MshareUnmap,
    info: &MshareInfo,
    kind: BackingKind,
) -> Result<Vec<Mapping>, Fail> {
    let granule = page_size(kind);
    ensure(u.size > 0, Errno::EINVAL, "size is zero")?;
    ensure(
        u.addr % granule == 0 && u.size % granule == 0,
        Errno::EINVAL,
        "addr or size is not page aligned",
    )?;
    check_inside(info, u.addr, u.size)?;
    let end = u.addr + u.size;
    let mut out = Vec::with_capacity(mappings.len() + 1);
    let mut hit = false;
    for m in mappings {
        if m.end() <= u.addr || m.addr >= end {
            out.push(*m);
            continue;
        }
        hit = true;
        if m.addr < u.addr {
            out.push(Mapping {
                size: u.addr - m.addr,
                ..*m
            });
        }
        if m.end() > end {
            out.push(Mapping {
                addr: end,
                size: m.end() - end,
                ..*m
            });
        }
    }
    ensure(hit, Errno::EINVAL, "no mapping in that range")?;
    Ok(out)
}

/// How an open of a region is answered.
#[derive(Debug)]
pub enum OpenMode {
    /// FUSE passthrough to the backing file (the kernel's data path).
    Passthrough(Arc<BackingId>),
    /// Through the server with `FOPEN_DIRECT_IO` (no mmap).
    Direct,
}

/// A shared memory region.
#[derive(Debug)]
pub struct Region {
    /// Unique id (the inode number), also its key in the address space.
    pub id: u64,
    /// Backing kind, fixed at creation.
    pub kind: BackingKind,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The backing file; `None` once the memory has been released.
    file: Option<Arc<OwnedFd>>,
    /// Start and size, once set.
    info: Option<MshareInfo>,
    /// Objects, sorted by address.
    mappings: Vec<Mapping>,
    /// Open file handles.
    opens: u64,
    /// Passthrough registration, held while any handle is open.
    backing_id: Option<Arc<BackingId>>,
}

impl State {
    /// The backing file, while the memory exists.
    fn file(&self) -> Result<Arc<OwnedFd>, Fail> {
        self.file
            .clone()
            .ok_or(Fail::new(Errno::ENOENT, "region memory released"))
    }

    /// Start and size; `EINVAL` while unsized (as the kernel's ioctls).
    fn info(&self) -> Result<MshareInfo, Fail> {
        self.info
            .ok_or(Fail::new(Errno::EINVAL, "region size is not set"))
    }
}

impl Region {
    /// A new, unsized region over `file`.
    pub fn new(id: u64, kind: BackingKind, file: OwnedFd) -> Self {
        Region {
            id,
            kind,
            state: Mutex::new(State {
                file: Some(Arc::new(file)),
                info: None,
                mappings: Vec::new(),
                opens: 0,
                backing_id: None,
            }),
        }
    }

    /// The backing file, while the memory exists.
    pub fn file(&self) -> Result<Arc<OwnedFd>, Fail> {
        self.state.lock().file()
    }

    /// `MSHAREFS_GET_SIZE`.
    pub fn info(&self) -> Result<MshareInfo, Fail> {
        self.state.lock().info()
    }

    /// Size in bytes (0 while unsized) and allocated 512-byte blocks.
    pub fn size_and_blocks(&self) -> (u64, u64) {
        let st = self.state.lock();
        let size = st.info.map_or(0, |i| i.size);
        let blocks = st
            .file
            .as_ref()
            .and_then(|f| crate::sys::size_and_blocks(f.as_fd()).ok())
            .map_or(0, |(_, b)| b);
        (size, blocks)
    }

    /// `MSHAREFS_SET_SIZE`: `start == 0` (from `ftruncate`) lets the server
    /// choose a free start.
    pub fn set_size(
        &self,
        mut info: MshareInfo,
        align: u64,
        addrs: &AddressSpace,
    ) -> Result<MshareInfo, Fail> {
        let mut st = self.state.lock();
        ensure(st.info.is_none(), Errno::EINVAL, "size is already set")?;
        let file = st.file()?;
        let auto = info.start == 0;
        if auto {
            // Check everything but the start, then choose one.
            check_layout(
                &MshareInfo {
                    start: align.max(page_size(self.kind)),
                    ..info
                },
                align,
                self.kind,
            )?;
            info.start = addrs.pick(self.id, info.size, align).ok_or(Fail::new(
                Errno::ENOMEM,
                "no free aligned address range of that size",
            ))?;
        } else {
            check_layout(&info, align, self.kind)?;
            addrs.claim(self.id, info.start, info.size);
        }
        if let Err(e) = backing::set_len(file.as_fd(), info.size) {
            addrs.release(self.id);
            return Err(Fail::with(e, format!("cannot size the backing file: {e}")));
        }
        st.info = Some(info);
        Ok(info)
    }

    /// `ftruncate`: sets the size of an unsized region (the server chooses
    /// the start); the current size, or 0 on an unsized region, is a no-op.
    pub fn truncate(&self, size: u64, align: u64, addrs: &AddressSpace) -> Result<(), Fail> {
        let current = self.state.lock().info.map_or(0, |i| i.size);
        if size == current {
            return Ok(());
        }
        ensure(
            current == 0,
            Errno::EINVAL,
            "the size of a region can be set only once",
        )?;
        self.set_size(MshareInfo { start: 0, size }, align, addrs)
            .map(drop)
    }

    /// `MSHAREFS_CREATE_MAPPING`.
    pub fn create_mapping(&self, c: &MshareCreate) -> Result<(), Fail> {
        let mut st = self.state.lock();
        let info = st.info()?;
        let req = check_create(c, &info, self.kind, &st.mappings)?;
        let m = req.mapping;
        if self.kind == BackingKind::Hugetlb || req.populate {
            let file = st.file()?;
            backing::allocate(file.as_fd(), m.addr - info.start, m.size)
                .map_err(|e| Fail::with(e, format!("cannot allocate {} bytes: {e}", m.size)))?;
        }
        let at = st.mappings.partition_point(|x| x.addr < m.addr);
        st.mappings.insert(at, m);
        Ok(())
    }

    /// `MSHAREFS_UNMAP`: removes the objects in the range and frees their
    /// memory (other mappers then read zeros).
    pub fn unmap(&self, u: &MshareUnmap) -> Result<(), Fail> {
        let mut st = self.state.lock();
        let info = st.info()?;
        let rest = cut(&st.mappings, u, &info, self.kind)?;
        if let Some(file) = &st.file {
            backing::punch_hole(file.as_fd(), u.addr - info.start, u.size)
                .map_err(|e| Fail::with(e, format!("cannot free memory: {e}")))?;
        }
        st.mappings = rest;
        Ok(())
    }

    /// Counts an open and says how to answer it. `register` makes the
    /// passthrough registration when `passthrough` is wanted and none is
    /// held; an error from it is returned as is (the caller decides whether
    /// to fall back).
    pub fn open(
        &self,
        passthrough: bool,
        register: impl FnOnce(&OwnedFd) -> io::Result<BackingId>,
    ) -> Result<OpenMode, io::Error> {
        let mut st = self.state.lock();
        let file = st
            .file
            .clone()
            .ok_or_else(|| io::Error::from(Errno::ENOENT))?;
        let mode = if passthrough && self.kind != BackingKind::Hugetlb {
            let id = match &st.backing_id {
                Some(id) => id.clone(),
                None => {
                    let id = Arc::new(register(&file)?);
                    st.backing_id = Some(id.clone());
                    id
                }
            };
            OpenMode::Passthrough(id)
        } else {
            OpenMode::Direct
        };
        st.opens += 1;
        Ok(mode)
    }

    /// Counts a release; at the last one the passthrough registration is
    /// dropped. Returns the open handles left.
    pub fn release(&self) -> u64 {
        let mut st = self.state.lock();
        st.opens = st.opens.saturating_sub(1);
        if st.opens == 0 {
            st.backing_id = None;
        }
        st.opens
    }

    /// Open handles.
    pub fn opens(&self) -> u64 {
        self.state.lock().opens
    }

    /// Drops the server's hold on the memory (after the last name and open
    /// are gone); mappings made by clients keep their pages until unmapped.
    pub fn release_memory(&self, addrs: &AddressSpace) {
        let mut st = self.state.lock();
        st.file = None;
        st.backing_id = None;
        st.mappings.clear();
        addrs.release(self.id);
    }

    /// Reads for a handle served by the server (no passthrough).
    pub fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>, Fail> {
        let (file, size) = self.io_target()?;
        if offset >= size {
            return Ok(Vec::new());
        }
        let len = (len as u64).min(size - offset) as usize;
        let mut buf = vec![0u8; len];
        let n = nix::sys::uio::pread(file.as_fd(), &mut buf, offset as i64)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Writes for a handle served by the server (no passthrough). Writes
    /// cannot extend a region: past the end is `EFBIG`.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<u32, Fail> {
        let (file, size) = self.io_target()?;
        ensure(
            offset < size || data.is_empty(),
            Errno::EFBIG,
            "write past the end of the region",
        )?;
        let len = (data.len() as u64).min(size - offset.min(size)) as usize;
        let data = &data[..len];
        if self.kind == BackingKind::Hugetlb {
            crate::hugetlb_io::write(&file, offset, data)?;
            return Ok(len as u32);
        }
        Ok(nix::sys::uio::pwrite(file.as_fd(), data, offset as i64)? as u32)
    }

    fn io_target(&self) -> Result<(Arc<OwnedFd>, u64), Fail> {
        let st = self.state.lock();
        let file = st.file()?;
        Ok((file, st.info.map_or(0, |i| i.size)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const G: u64 = 1 << 30;
    const M2: u64 = 2 << 20;
    const INFO: MshareInfo = MshareInfo {
        start: 4 * G,
        size: 2 * G,
    };

    fn create(addr: u64, size: u64) -> MshareCreate {
        MshareCreate::anonymous(addr, size, libc::PROT_READ | libc::PROT_WRITE)
    }

    fn errno<T: std::fmt::Debug>(r: Result<T, Fail>) -> Errno {
        r.unwrap_err().errno
    }

    #[test]
    fn layout_rules() {
        let k = BackingKind::Thp;
        assert!(check_layout(&INFO, G, k).is_ok());
        assert_eq!(
            errno(check_layout(
                &MshareInfo {
                    start: 4 * G,
                    size: 0
                },
                G,
                k
            )),
            Errno::EINVAL
        );
        assert_eq!(
            errno(check_layout(&MshareInfo { start: 0, size: G }, G, k)),
            Errno::EINVAL
        );
        assert_eq!(
            errno(check_layout(
                &MshareInfo {
                    start: 4 * G + 4096,
                    size: G
                },
                G,
                k
            )),
            Errno::EINVAL
        );
        assert_eq!(
            errno(check_layout(
                &MshareInfo {
                    start: 4 * G,
                    size: G + 4096
                },
                G,
                k
            )),
            Errno::EINVAL
        );
        assert_eq!(
            errno(check_layout(
                &MshareInfo {
                    start: 1 << 47,
                    size: G
                },
                G,
                k
            )),
            Errno::EINVAL
        );
        assert_eq!(
            errno(check_layout(
                &MshareInfo {
                    start: u64::MAX - G + 1,
                    size: G
                },
                G,
                k
            )),
            Errno::EINVAL
        );
        // A 4 KiB alignment is fine for thp but not for hugetlb sizes.
        let small = MshareInfo {
            start: 1 << 32,
            size: 8192,
        };
        assert!(check_layout(&small, 4096, k).is_ok());
        assert_eq!(
            errno(check_layout(&small, 4096, BackingKind::Hugetlb)),
            Errno::EINVAL
        );
    }

    #[test]
    fn create_rules() {
        let k = BackingKind::Thp;
        let ok = check_create(&create(4 * G, G), &INFO, k, &[]).unwrap();
        assert_eq!(
            ok.mapping,
            Mapping {
                addr: 4 * G,
                size: G,
                prot: 3
            }
        );
        assert!(!ok.populate);
        let existing = [ok.mapping];
        let bad = |c: MshareCreate, kind, ex: &[Mapping]| errno(check_create(&c, &INFO, kind, ex));
        assert_eq!(
            bad(create(4 * G + G / 2, G), k, &existing),
            Errno::EINVAL,
            "overlap"
        );
        assert!(
            check_create(&create(5 * G, G), &INFO, k, &existing).is_ok(),
            "adjacent is fine"
        );
        assert_eq!(
            bad(create(3 * G, G), k, &[]),
            Errno::EINVAL,
            "below the region"
        );
        assert_eq!(
            bad(create(5 * G, 2 * G), k, &[]),
            Errno::EINVAL,
            "past the end"
        );
        assert_eq!(
            bad(create(u64::MAX - 4095, 4096), k, &[]),
            Errno::EINVAL,
            "overflow"
        );
        assert_eq!(
            bad(create(4 * G + 1, 4096), k, &[]),
            Errno::EINVAL,
            "unaligned"
        );
        assert_eq!(bad(create(4 * G, 0), k, &[]), Errno::EINVAL, "empty");
        assert_eq!(
            bad(
                MshareCreate {
                    fd: 3,
                    ..create(4 * G, G)
                },
                k,
                &[]
            ),
            Errno::EINVAL,
            "fd"
        );
        assert_eq!(
            bad(
                MshareCreate {
                    prot: 0x10,
                    ..create(4 * G, G)
                },
                k,
                &[]
            ),
            Errno::EINVAL,
            "prot"
        );
        let private = (libc::MAP_ANONYMOUS | libc::MAP_PRIVATE | libc::MAP_FIXED) as u32;
        assert_eq!(
            bad(
                MshareCreate {
                    flags: private,
                    ..create(4 * G, G)
                },
                k,
                &[]
            ),
            Errno::EINVAL
        );
        let no_fixed = (libc::MAP_ANONYMOUS | libc::MAP_SHARED) as u32;
        assert_eq!(
            bad(
                MshareCreate {
                    flags: no_fixed,
                    ..create(4 * G, G)
                },
                k,
                &[]
            ),
            Errno::EINVAL
        );
        let huge = create(4 * G, G).flags | libc::MAP_HUGETLB as u32;
        assert_eq!(
            bad(
                MshareCreate {
                    flags: huge,
                    ..create(4 * G, G)
                },
                k,
                &[]
            ),
            Errno::EINVAL,
            "kind"
        );
        let h = BackingKind::Hugetlb;
        assert!(check_create(
            &MshareCreate {
                flags: huge,
                ..create(4 * G, G)
            },
            &INFO,
            h,
            &[]
        )
        .is_ok());
        assert!(
            check_create(&create(4 * G, M2), &INFO, h, &[]).is_ok(),
            "no MAP_HUGETLB: the region's kind"
        );
        assert_eq!(
            bad(create(4 * G, 4096), h, &[]),
            Errno::EINVAL,
            "hugetlb needs 2 MiB units"
        );
        let populate = create(4 * G, G).flags | libc::MAP_POPULATE as u32;
        assert!(
            check_create(
                &MshareCreate {
                    flags: populate,
                    ..create(4 * G, G)
                },
                &INFO,
                k,
                &[]
            )
            .unwrap()
            .populate
        );
    }

    #[test]
    fn cut_splits_and_removes() {
        let k = BackingKind::Thp;
        let m = |addr, size| Mapping {
            addr,
            size,
            prot: 3,
        };
        let maps = [m(4 * G, G), m(5 * G + G / 2, G / 2)];
        let u = |addr, size| MshareUnmap { addr, size };
        assert_eq!(cut(&maps, &u(4 * G, G), &INFO, k).unwrap(), vec![maps[1]]);
        assert_eq!(
            cut(&maps, &u(4 * G + 4096, 4096), &INFO, k).unwrap(),
            vec![m(4 * G, 4096), m(4 * G + 8192, G - 8192), maps[1]]
        );
        assert_eq!(cut(&maps, &u(4 * G, 2 * G), &INFO, k).unwrap(), vec![]);
        assert_eq!(
            errno(cut(&maps, &u(5 * G, 4096), &INFO, k)),
            Errno::EINVAL,
            "hole"
        );
        assert_eq!(errno(cut(&maps, &u(4 * G, 0), &INFO, k)), Errno::EINVAL);
        assert_eq!(
            errno(cut(&maps, &u(4 * G + 1, 4096), &INFO, k)),
            Errno::EINVAL
        );
        assert_eq!(errno(cut(&maps, &u(6 * G, 4096), &INFO, k)), Errno::EINVAL);
    }
}
