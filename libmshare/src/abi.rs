//! The msharefs ABI: the RFC v3 uapi structs, ioctl numbers and constants.
//!
//! This module is the one definition of the wire format shared by the server
//! (`msharefs`), the client library and `include/mshare.h` (whose values a
//! test checks against these). It does no I/O.
//!
//! The numbers are the RFC v3 ones (`_IOR('x', 0, …)` …); the later 2025
//! series renumbered them in a way that collides, so these are the ABI.

use std::mem::size_of;

/// Name of the read-only file in the root of every msharefs mount that holds
/// the alignment, in decimal followed by a newline.
pub const INFO_FILE_NAME: &str = "mshare_info";

/// The `fuse` subtype the server mounts with; `/proc/self/mountinfo` shows
/// the file system type as `fuse.msharefs`.
pub const FS_SUBTYPE: &str = "msharefs";

/// Default region alignment: 1 GiB, the size at which the kernel shares
/// hugetlb PMD page tables between processes.
pub const DEFAULT_ALIGNMENT: u64 = 1 << 30;

/// Size of a base page on the platforms msharefs supports.
pub const PAGE_SIZE: u64 = 4096;

/// Size of a hugetlb page (x86_64 PMD size).
pub const HUGE_PAGE_SIZE: u64 = 2 << 20;

/// One past the highest user address usable without asking for 5-level
/// paging (x86_64 `DEFAULT_MAP_WINDOW`, minus the guard page).
pub const USER_ADDR_END: u64 = (1 << 47) - PAGE_SIZE;

/// `struct mshare_info`: the start address and size of a region.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MshareInfo {
    /// Virtual address at which the region is meant to be mapped.
    pub start: u64,
    /// Size of the region in bytes.
    pub size: u64,
}

/// `struct mshare_create`: an object to map inside a region.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MshareUnmap {
    /// Start of the range.
    pub addr: u64,
    /// Length of the range in bytes.
    pub size: u64,
}

/// The ioctl type byte of every msharefs ioctl.
pub const MSHAREFS_IOCTL_TYPE: u8 = b'x';

/// `MSHAREFS_GET_SIZE` = `_IOR('x', 0, struct mshare_info)`.
pub const MSHAREFS_GET_SIZE: u32 =
    nix::request_code_read!(MSHAREFS_IOCTL_TYPE, 0, size_of::<MshareInfo>()) as u32;
/// `MSHAREFS_SET_SIZE` = `_IOW('x', 1, struct mshare_info)`.
pub const MSHAREFS_SET_SIZE: u32 =
    nix::request_code_write!(MSHAREFS_IOCTL_TYPE, 1, size_of::<MshareInfo>()) as u32;
/// `MSHAREFS_CREATE_MAPPING` = `_IOW('x', 2, struct mshare_create)`.
pub const MSHAREFS_CREATE_MAPPING: u32 =
    nix::request_code_write!(MSHAREFS_IOCTL_TYPE, 2, size_of::<MshareCreate>()) as u32;
/// `MSHAREFS_UNMAP` = `_IOW('x', 3, struct mshare_unmap)`.
pub const MSHAREFS_UNMAP: u32 =
    nix::request_code_write!(MSHAREFS_IOCTL_TYPE, 3, size_of::<MshareUnmap>()) as u32;

/// `struct mshare_token`: what `MSHAREFS_GET_TOKEN` returns (an msharefs
/// extension, not in the kernel series): a one-time token that the server's
/// broker socket exchanges for the region's backing file descriptor.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MshareToken {
    /// 128 random bits.
    pub token: [u64; 2],
    /// Pid of the server; its broker listens on [`broker_socket_name`].
    pub server_pid: u32,
    /// [`TOKEN_WRITABLE`], [`TOKEN_HUGETLB`].
    pub flags: u32,
}

/// `MSHAREFS_GET_TOKEN` = `_IOR('x', 32, struct mshare_token)`.
pub const MSHAREFS_GET_TOKEN: u32 =
    nix::request_code_read!(MSHAREFS_IOCTL_TYPE, 32, size_of::<MshareToken>()) as u32;

/// Token flag: the descriptor it buys is writable (the open was).
pub const TOKEN_WRITABLE: u32 = 1;
/// Token flag: the region is hugetlb-backed.
pub const TOKEN_HUGETLB: u32 = 2;
/// Seconds a token stays valid.
pub const TOKEN_TTL_SECS: u64 = 10;

/// Abstract Unix socket name (without the leading NUL) of the broker of the
/// server with pid `server_pid`.
///
/// Protocol: the client connects, sends the 16 token bytes (`token[0]` then
/// `token[1]`, native endian) and reads a native-endian `i32`: 0 with the
/// descriptor attached (`SCM_RIGHTS`), or an errno without one.
pub fn broker_socket_name(server_pid: u32) -> String {
    format!("msharefs.{server_pid}.broker")
}

/// The 16 bytes a client sends the broker for `token`.
pub fn token_to_bytes(token: [u64; 2]) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&token[0].to_ne_bytes());
    b[8..].copy_from_slice(&token[1].to_ne_bytes());
    b
}

/// The token in 16 bytes received by the broker.
pub fn token_from_bytes(bytes: [u8; 16]) -> [u64; 2] {
    [u64_at(&bytes, 0), u64_at(&bytes, 8)]
}

/// Extended attribute of a region file naming its backing kind (`thp`,
/// `shmem` or `hugetlb`); settable while the region is unsized and not open.
pub const BACKING_XATTR: &str = "user.mshare.backing";

/// Conversion between an ABI struct and the bytes the kernel copies.
///
/// The server receives ioctl arguments as byte buffers; this keeps the
/// decoding free of `unsafe` and independent of the buffer's alignment.
pub trait WireFormat: Sized {
    /// Size on the wire (`sizeof` of the C struct).
    const SIZE: usize;
    /// Decodes from native-endian bytes; `None` if `bytes` is too short.
    fn from_bytes(bytes: &[u8]) -> Option<Self>;
    /// Encodes to native-endian bytes of length [`Self::SIZE`].
    fn to_bytes(&self) -> Vec<u8>;
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_ne_bytes(b)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_ne_bytes(b)
}

/// Both 16-byte structs are two `u64`s.
macro_rules! two_u64_wire {
    ($ty:ident, $a:ident, $b:ident) => {
        impl WireFormat for $ty {
            const SIZE: usize = size_of::<$ty>();
            fn from_bytes(bytes: &[u8]) -> Option<Self> {
                (bytes.len() >= Self::SIZE).then(|| $ty {
                    $a: u64_at(bytes, 0),
                    $b: u64_at(bytes, 8),
                })
            }
            fn to_bytes(&self) -> Vec<u8> {
                let mut v = Vec::with_capacity(Self::SIZE);
                v.extend_from_slice(&self.$a.to_ne_bytes());
                v.extend_from_slice(&self.$b.to_ne_bytes());
                v
            }
        }
    };
}

two_u64_wire!(MshareInfo, start, size);
two_u64_wire!(MshareUnmap, addr, size);

impl WireFormat for MshareToken {
    const SIZE: usize = size_of::<MshareToken>();
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        (bytes.len() >= Self::SIZE).then(|| MshareToken {
            token: [u64_at(bytes, 0), u64_at(bytes, 8)],
            server_pid: u32_at(bytes, 16),
            flags: u32_at(bytes, 20),
        })
    }
    fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::SIZE);
        v.extend_from_slice(&self.token[0].to_ne_bytes());
        v.extend_from_slice(&self.token[1].to_ne_bytes());
        v.extend_from_slice(&self.server_pid.to_ne_bytes());
        v.extend_from_slice(&self.flags.to_ne_bytes());
        v
    }
}

impl WireFormat for MshareCreate {
    const SIZE: usize = size_of::<MshareCreate>();
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        (bytes.len() >= Self::SIZE).then(|| MshareCreate {
            addr: u64_at(bytes, 0),
            size: u64_at(bytes, 8),
            offset: u64_at(bytes, 16),
            prot: u32_at(bytes, 24),
            flags: u32_at(bytes, 28),
            fd: u32_at(bytes, 32),
        })
    }
    fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::SIZE);
        v.extend_from_slice(&self.addr.to_ne_bytes());
        v.extend_from_slice(&self.size.to_ne_bytes());
        v.extend_from_slice(&self.offset.to_ne_bytes());
        v.extend_from_slice(&self.prot.to_ne_bytes());
        v.extend_from_slice(&self.flags.to_ne_bytes());
        v.extend_from_slice(&self.fd.to_ne_bytes());
        v.resize(Self::SIZE, 0); // tail padding
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn struct_layouts_match_the_c_uapi() {
        assert_eq!(size_of::<MshareInfo>(), 16);
        assert_eq!(size_of::<MshareUnmap>(), 16);
        assert_eq!(size_of::<MshareCreate>(), 40);
        assert_eq!(offset_of!(MshareCreate, offset), 16);
        assert_eq!(offset_of!(MshareCreate, prot), 24);
        assert_eq!(offset_of!(MshareCreate, flags), 28);
        assert_eq!(offset_of!(MshareCreate, fd), 32);
    }

    #[test]
    fn ioctl_numbers_are_the_rfc_v3_values() {
        assert_eq!(MSHAREFS_GET_SIZE, 0x8010_7800);
        assert_eq!(MSHAREFS_SET_SIZE, 0x4010_7801);
        assert_eq!(MSHAREFS_CREATE_MAPPING, 0x4028_7802);
        assert_eq!(MSHAREFS_UNMAP, 0x4010_7803);
        assert_eq!(MSHAREFS_GET_TOKEN, 0x8018_7820);
        assert_eq!(size_of::<MshareToken>(), 24);
    }

    #[test]
    fn wire_round_trip_and_byte_positions() {
        let c = MshareCreate {
            addr: 0x0102_0304_0506_0708,
            size: 2,
            offset: 3,
            prot: 4,
            flags: 5,
            fd: u32::MAX,
        };
        let bytes = c.to_bytes();
        assert_eq!(bytes.len(), 40);
        assert_eq!(&bytes[0..8], &0x0102_0304_0506_0708u64.to_ne_bytes());
        assert_eq!(&bytes[32..36], &[0xff; 4]);
        assert_eq!(MshareCreate::from_bytes(&bytes), Some(c));
        assert_eq!(MshareCreate::from_bytes(&bytes[..39]), None);

        let i = MshareInfo {
            start: 1 << 40,
            size: 1 << 30,
        };
        assert_eq!(MshareInfo::from_bytes(&i.to_bytes()), Some(i));
        assert_eq!(MshareInfo::from_bytes(&[0; 15]), None);

        let t = MshareToken {
            token: [1, 2],
            server_pid: 3,
            flags: TOKEN_WRITABLE,
        };
        assert_eq!(MshareToken::from_bytes(&t.to_bytes()), Some(t));
    }
}
