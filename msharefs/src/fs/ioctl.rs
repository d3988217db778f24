//! The ioctls on a region file: decoding the bytes the kernel copied, the
//! access check, and the call into the region.

use log::debug;
use mshare_uapi::{
    MshareCreate, MshareInfo, MshareSetup, MshareUnmap, MSHAREFS_CREATE_MAPPING, MSHAREFS_GET_SIZE,
    MSHAREFS_SETUP, MSHAREFS_SET_SIZE, MSHAREFS_UNMAP, MSHAREFS_UNMAPPED, MSHARE_SETUP_OBJECT,
};
use nix::errno::Errno;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::MshareFs;
use crate::fail::{ensure, Fail};
use crate::request::{Fh, Ino};

/// Decodes an ioctl argument (the kernel copied `_IOC_SIZE` bytes).
fn decode<T: FromBytes + KnownLayout + Immutable>(input: &[u8]) -> Result<T, Fail> {
    T::read_from_prefix(input)
        .map(|(v, _)| v)
        .map_err(|_| Fail::new(Errno::EINVAL, "ioctl argument too short"))
}

/// `EINVAL` unless the caller's buffer holds a `T`.
fn fits<T>(out_size: u32) -> Result<(), Fail> {
    ensure(
        out_size as usize >= size_of::<T>(),
        Errno::EINVAL,
        "output buffer too small",
    )
}

/// Encodes an ioctl result, if the caller's buffer holds it.
fn encode<T: IntoBytes + Immutable>(value: &T, out_size: u32) -> Result<Vec<u8>, Fail> {
    fits::<T>(out_size)?;
    Ok(value.as_bytes().to_vec())
}

impl MshareFs {
    /// One ioctl on region handle `fh`; the bytes to copy out.
    pub(super) fn do_ioctl(
        &self,
        ino: Ino,
        fh: Fh,
        cmd: u32,
        input: &[u8],
        out_size: u32,
    ) -> Result<Vec<u8>, Fail> {
        let (region, access) = self.handles.region(fh, ino).map_err(|f| match f.errno {
            Errno::ENOTTY => Fail::new(Errno::ENOTTY, "ioctl on a file that is not a region"),
            _ => f,
        })?;
        let need_write = || {
            ensure(
                access.writes(),
                Errno::EBADF,
                "control ioctl on a file not opened for writing",
            )
        };
        match cmd {
            MSHAREFS_GET_SIZE => encode(&region.info()?, out_size),
            MSHAREFS_SET_SIZE => {
                need_write()?;
                let info: MshareInfo = decode(input)?;
                ensure(info.start != 0, Errno::EINVAL, "start is zero")?;
                let set = region.set_size(info)?;
                self.attrs_changed(ino);
                debug!(
                    "{}: size set to {:#x}+{:#x}",
                    self.region_name(ino),
                    set.start,
                    set.size
                );
                Ok(Vec::new())
            }
            MSHAREFS_SETUP => {
                need_write()?;
                fits::<MshareSetup>(out_size)?;
                let s: MshareSetup = decode(input)?;
                ensure(
                    s.flags & !MSHARE_SETUP_OBJECT == 0,
                    Errno::EINVAL,
                    "unknown MSHAREFS_SETUP flags",
                )?;
                let info = MshareInfo {
                    start: s.start,
                    size: s.size,
                };
                let set = region.setup(info, s.flags & MSHARE_SETUP_OBJECT != 0);
                self.attrs_changed(ino);
                let set = set?;
                debug!(
                    "{}: set up at {:#x}+{:#x}",
                    self.region_name(ino),
                    set.start,
                    set.size
                );
                let reply = MshareSetup {
                    start: set.start,
                    size: set.size,
                    flags: s.flags,
                };
                Ok(reply.as_bytes().to_vec())
            }
            MSHAREFS_CREATE_MAPPING => {
                need_write()?;
                region.create_object(&decode::<MshareCreate>(input)?)?;
                self.attrs_changed(ino);
                Ok(Vec::new())
            }
            MSHAREFS_UNMAP => {
                need_write()?;
                region.unmap(&decode::<MshareUnmap>(input)?)?;
                self.attrs_changed(ino);
                Ok(Vec::new())
            }
            MSHAREFS_UNMAPPED => {
                self.unmapped(ino);
                Ok(Vec::new())
            }
            _ => Err(Fail::with(Errno::ENOTTY, format!("unknown ioctl {cmd:#x}"))),
        }
    }
}
