//! The ioctl numbers, encoded as the kernel's `_IOR`/`_IOW` do (asm-generic
//! layout: 2 direction bits, 14 size bits, 8 type bits, 8 number bits).

use std::mem::size_of;

use crate::structs::{MshareInfo, MshareUnmap};
use crate::{MshareCreate, MshareSetup};

/// The ioctl type byte of every msharefs ioctl.
pub const MSHAREFS_IOCTL_TYPE: u8 = b'x';

const IOC_NONE: u32 = 0;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

const fn ioc(dir: u32, nr: u8, size: usize) -> u32 {
    assert!(size < 1 << 14);
    (dir << 30) | ((size as u32) << 16) | ((MSHAREFS_IOCTL_TYPE as u32) << 8) | nr as u32
}

/// `MSHAREFS_GET_SIZE` = `_IOR('x', 0, struct mshare_info)`.
pub const MSHAREFS_GET_SIZE: u32 = ioc(IOC_READ, 0, size_of::<MshareInfo>());
/// `MSHAREFS_SET_SIZE` = `_IOW('x', 1, struct mshare_info)`.
pub const MSHAREFS_SET_SIZE: u32 = ioc(IOC_WRITE, 1, size_of::<MshareInfo>());
/// `MSHAREFS_CREATE_MAPPING` = `_IOW('x', 2, struct mshare_create)`.
pub const MSHAREFS_CREATE_MAPPING: u32 = ioc(IOC_WRITE, 2, size_of::<MshareCreate>());
/// `MSHAREFS_UNMAP` = `_IOW('x', 3, struct mshare_unmap)`.
pub const MSHAREFS_UNMAP: u32 = ioc(IOC_WRITE, 3, size_of::<MshareUnmap>());
// Number 32 was `MSHAREFS_GET_TOKEN` (a token for the descriptor broker,
// removed: libmshare opens a region's memory file itself, see
// `crate::ATTACH_XATTR`); it stays unused, and servers answer `ENOTTY`.
/// `MSHAREFS_SETUP` = `_IOWR('x', 33, struct mshare_setup)` (msharefs
/// extension): size a new region and map its object in one call.
pub const MSHAREFS_SETUP: u32 = ioc(IOC_READ | IOC_WRITE, 33, size_of::<MshareSetup>());
/// `MSHAREFS_UNMAPPED` = `_IO('x', 34)` (msharefs extension): the caller
/// has unmapped a region of [`crate::ANON_DIR`]; the server looks at once
/// for processes that still map it, and removes the region when none does.
/// Only a hint: the server trusts nothing the caller says, it reads
/// `/proc`.
pub const MSHAREFS_UNMAPPED: u32 = ioc(IOC_NONE, 34, 0);

// The RFC v3 values (x86_64), checked when this crate compiles.
const _: () = {
    assert!(MSHAREFS_GET_SIZE == 0x8010_7800);
    assert!(MSHAREFS_SET_SIZE == 0x4010_7801);
    assert!(MSHAREFS_CREATE_MAPPING == 0x4028_7802);
    assert!(MSHAREFS_UNMAP == 0x4010_7803);
    assert!(MSHAREFS_SETUP == 0xc018_7821);
};
