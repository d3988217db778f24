//! The control-plane rules of a region, as pure functions: what a
//! `MSHAREFS_SET_SIZE` layout, a `MSHAREFS_CREATE_MAPPING` object and a
//! `MSHAREFS_UNMAP` range must be. Unit-tested below; [`super::Region`]
//! applies them under its lock.

use mshare_uapi::{
    Backing, MshareCreate, MshareInfo, MshareUnmap, HUGE_PAGE_SIZE, PAGE_SIZE, USER_ADDR_END,
};
use nix::errno::Errno;

use crate::fail::{ensure, Fail};

/// An object created by `MSHAREFS_CREATE_MAPPING`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Object {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// `PROT_*` bits as asked.
    pub prot: u32,
}

impl Object {
    /// The first address past the object.
    pub fn end(&self) -> u64 {
        self.addr + self.size
    }
}

/// The granularity of addresses and sizes in a region of `kind`.
pub fn page_size(kind: Backing) -> u64 {
    match kind {
        Backing::Hugetlb => HUGE_PAGE_SIZE,
        _ => PAGE_SIZE,
    }
}

/// Checks a `MSHAREFS_SET_SIZE` layout against the alignment.
pub fn check_layout(info: &MshareInfo, align: u64, kind: Backing) -> Result<(), Fail> {
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
    pub object: Object,
    /// `MAP_POPULATE`: allocate the memory now.
    pub populate: bool,
}

/// Checks a `MSHAREFS_CREATE_MAPPING` against the region's layout, kind and
/// existing objects.
pub fn check_create(
    c: &MshareCreate,
    info: &MshareInfo,
    kind: Backing,
    existing: &[Object],
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
            kind == Backing::Hugetlb,
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
    let object = Object {
        addr: c.addr,
        size: c.size,
        prot: c.prot,
    };
    check_inside(info, c.addr, c.size)?;
    ensure(
        !existing
            .iter()
            .any(|m| m.addr < object.end() && object.addr < m.end()),
        Errno::EINVAL,
        "overlaps an existing mapping",
    )?;
    Ok(CreateRequest {
        object,
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
    mappings: &[Object],
    u: &MshareUnmap,
    info: &MshareInfo,
    kind: Backing,
) -> Result<Vec<Object>, Fail> {
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
            out.push(Object {
                size: u.addr - m.addr,
                ..*m
            });
        }
        if m.end() > end {
            out.push(Object {
                addr: end,
                size: m.end() - end,
                ..*m
            });
        }
    }
    ensure(hit, Errno::EINVAL, "no mapping in that range")?;
    Ok(out)
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
        let k = Backing::Thp;
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
            errno(check_layout(&small, 4096, Backing::Hugetlb)),
            Errno::EINVAL
        );
    }

    #[test]
    fn create_rules() {
        let k = Backing::Thp;
        let ok = check_create(&create(4 * G, G), &INFO, k, &[]).unwrap();
        assert_eq!(
            ok.object,
            Object {
                addr: 4 * G,
                size: G,
                prot: 3
            }
        );
        assert!(!ok.populate);
        let existing = [ok.object];
        let bad = |c: MshareCreate, kind, ex: &[Object]| errno(check_create(&c, &INFO, kind, ex));
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
        let h = Backing::Hugetlb;
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
        let k = Backing::Thp;
        let m = |addr, size| Object {
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
