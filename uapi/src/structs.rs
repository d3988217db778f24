//! The structs of the ioctls and of the C library, with their layouts
//! asserted at compile time.

use std::mem::{offset_of, size_of};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::backing::Backing;

/// `struct mshare_info`: the start address and size of a region.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct MshareInfo {
    /// Virtual address at which the region is meant to be mapped.
    pub start: u64,
    /// Size of the region in bytes.
    pub size: u64,
}

/// `struct mshare_create`: an object to map inside a region.
///
/// It has 4 bytes of tail padding (40 bytes in all), so it is decoded from
/// bytes but never encoded from a Rust value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, Immutable, KnownLayout)]
pub struct MshareCreate {
    /// Address of the object inside the region.
    pub addr: u64,
    /// Size of the object in bytes.
    pub size: u64,
    /// File offset (must be page aligned; ignored for anonymous objects).
    pub offset: u64,
    /// `PROT_*` bits.
    pub prot: u32,
    /// `MAP_*` flags: `MAP_ANONYMOUS | MAP_SHARED | MAP_FIXED` are required.
    pub flags: u32,
    /// File descriptor to map; must be -1 (as `u32`: `u32::MAX`).
    pub fd: u32,
}

impl MshareCreate {
    /// An anonymous shared object over `[addr, addr + size)` with `prot`
    /// (`MAP_ANONYMOUS | MAP_SHARED | MAP_FIXED`, `fd` -1), as the cover
    /// letter's donor makes.
    pub fn anonymous(addr: u64, size: u64, prot: i32) -> Self {
        MshareCreate {
            addr,
            size,
            offset: 0,
            prot: prot as u32,
            flags: (libc::MAP_ANONYMOUS | libc::MAP_SHARED | libc::MAP_FIXED) as u32,
            fd: u32::MAX,
        }
    }
}

/// `struct mshare_unmap`: a range of a region to unmap.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct MshareUnmap {
    /// Start of the range.
    pub addr: u64,
    /// Length of the range in bytes.
    pub size: u64,
}

/// `struct mshare_setup`: the argument of `MSHAREFS_SETUP` (msharefs
/// extension), which sizes a new region and, with [`MSHARE_SETUP_OBJECT`],
/// maps one read-write anonymous object over all of it, in one round trip
/// instead of three (`ftruncate` or `SET_SIZE`, `GET_SIZE`,
/// `CREATE_MAPPING`). In: `start` (0: the server chooses a free aligned
/// start), `size`, `flags`. Out: the same, with the start in force.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct MshareSetup {
    /// Start address; 0 asks the server to choose one.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// [`MSHARE_SETUP_OBJECT`] or 0.
    pub flags: u64,
}

/// `MSHARE_SETUP_OBJECT`: map one read-write anonymous object over the whole
/// region, as `MSHAREFS_CREATE_MAPPING` with `PROT_READ | PROT_WRITE` and
/// `MAP_ANONYMOUS | MAP_SHARED | MAP_FIXED` would.
pub const MSHARE_SETUP_OBJECT: u64 = 1;

/// `struct mshare_options`: the options of the C library's `mshare_create`.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct MshareOptions {
    /// [`MSHARE_BACKING_DEFAULT`] or a [`Backing`] as `u32`
    /// (`MSHARE_BACKING_THP`, …).
    pub backing: u32,
    /// Permission bits; 0 means 0600.
    pub mode: u32,
    /// [`MSHARE_EXCL`], [`MSHARE_NO_OBJECT`].
    pub flags: u32,
}

/// `MSHARE_BACKING_DEFAULT`: the mount's `backing=` (no [`Backing`]).
pub const MSHARE_BACKING_DEFAULT: u32 = 0;
/// `MSHARE_EXCL`: fail with `EEXIST` if the region exists.
pub const MSHARE_EXCL: u32 = 1;
/// `MSHARE_NO_OBJECT`: do not create the object over the whole region.
pub const MSHARE_NO_OBJECT: u32 = 2;

impl MshareOptions {
    /// The backing kind asked for: `Ok(None)` for the mount's default,
    /// `Err(value)` for a number that names no kind.
    pub fn backing(&self) -> Result<Option<Backing>, u32> {
        match self.backing {
            MSHARE_BACKING_DEFAULT => Ok(None),
            n => Backing::from_c(n).map(Some).ok_or(n),
        }
    }
}

// The C layouts (x86_64), checked when this crate compiles.
const _: () = {
    assert!(size_of::<MshareInfo>() == 16);
    assert!(offset_of!(MshareInfo, size) == 8);
    assert!(size_of::<MshareCreate>() == 40);
    assert!(offset_of!(MshareCreate, size) == 8);
    assert!(offset_of!(MshareCreate, offset) == 16);
    assert!(offset_of!(MshareCreate, prot) == 24);
    assert!(offset_of!(MshareCreate, flags) == 28);
    assert!(offset_of!(MshareCreate, fd) == 32);
    assert!(size_of::<MshareUnmap>() == 16);
    assert!(offset_of!(MshareUnmap, size) == 8);
    assert!(size_of::<MshareSetup>() == 24);
    assert!(offset_of!(MshareSetup, size) == 8);
    assert!(offset_of!(MshareSetup, flags) == 16);
    assert!(size_of::<MshareOptions>() == 12);
    assert!(offset_of!(MshareOptions, mode) == 4);
    assert!(offset_of!(MshareOptions, flags) == 8);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_decodes_from_the_c_bytes() {
        let mut bytes = [0u8; 40];
        bytes[..8].copy_from_slice(&0x0102_0304_0506_0708u64.to_ne_bytes());
        bytes[8..16].copy_from_slice(&2u64.to_ne_bytes());
        bytes[24..28].copy_from_slice(&3u32.to_ne_bytes());
        bytes[32..36].copy_from_slice(&[0xff; 4]);
        bytes[36..].copy_from_slice(&[0xaa; 4]); // padding is ignored
        let c = MshareCreate::read_from_bytes(&bytes[..]).unwrap();
        assert_eq!(c.addr, 0x0102_0304_0506_0708);
        assert_eq!(
            (c.size, c.offset, c.prot, c.flags, c.fd),
            (2, 0, 3, 0, u32::MAX)
        );
        assert!(MshareCreate::read_from_prefix(&bytes[..39]).is_err());
    }

    #[test]
    fn info_round_trips() {
        let i = MshareInfo {
            start: 1 << 40,
            size: 1 << 30,
        };
        assert_eq!(MshareInfo::read_from_bytes(i.as_bytes()), Ok(i));
        assert!(MshareInfo::read_from_prefix(&[0u8; 15][..]).is_err());
    }

    #[test]
    fn options_name_a_backing_or_the_default() {
        let o = |backing| MshareOptions {
            backing,
            ..Default::default()
        };
        assert_eq!(o(0).backing(), Ok(None));
        assert_eq!(o(3).backing(), Ok(Some(Backing::Hugetlb)));
        assert_eq!(o(9).backing(), Err(9));
    }
}
