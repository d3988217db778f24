//! Open files: opening region files (with FUSE passthrough where possible),
//! their I/O when the server serves it, and releasing them.

use std::ffi::OsStr;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use log::warn;
use nix::errno::Errno;

use super::handles::Opened;
use super::MshareFs;
use crate::fail::{ensure, Fail};
use crate::namespace::{Removal, INFO};
use crate::region::{Access, Attach, OpenMode, Region};
use crate::request::{Attr, Caller, Fh, Ino, OpenFlags};

impl MshareFs {
    /// How opens are answered now: passthrough until the kernel refuses it.
    fn attach(&self) -> Attach {
        if self.passthrough.load(Ordering::Relaxed) {
            Attach::Passthrough
        } else {
            Attach::Direct
        }
    }

    /// Counts an open of `region` and registers its handle.
    fn open_region(
        &self,
        ino: Ino,
        region: &Arc<Region>,
        flags: OpenFlags,
    ) -> Result<(Fh, OpenMode), Fail> {
        let attach = self.attach();
        let mode = match region.open(attach, |fd| self.register(fd)) {
            Ok(mode) => mode,
            Err(e) if attach == Attach::Passthrough && e.raw_os_error() == Some(libc::EPERM) => {
                if self.passthrough.swap(false, Ordering::Relaxed) {
                    warn!(
                        "FUSE passthrough refused (EPERM; the server needs CAP_SYS_ADMIN): \
                         region files cannot be mmapped (ENODEV), read/write go through the server"
                    );
                }
                region.open(Attach::Direct, |_| Err(io::Error::from(Errno::EPERM)))?
            }
            Err(e) => return Err(e.into()),
        };
        let opened = Opened::Region {
            region: region.clone(),
            access: Access::of(flags),
        };
        Ok((self.handles.add(ino, opened), mode))
    }

    /// Undoes an open that raced with a change of the region's backing
    /// (`setxattr`), which can happen only before the region is sized.
    fn still_current(
        &self,
        ino: Ino,
        region: &Arc<Region>,
        opened: (Fh, OpenMode),
    ) -> Result<(Fh, OpenMode), Fail> {
        let current = self
            .ns
            .read()
            .node(ino)
            .ok()
            .and_then(|n| n.region().cloned());
        if current.is_some_and(|c| Arc::ptr_eq(&c, region)) {
            return Ok(opened);
        }
        self.handles.remove(opened.0);
        region.release();
        Err(Fail::new(
            Errno::EAGAIN,
            "the region's backing changed during open",
        ))
    }

    /// `open` of `mshare_info` (read-only) or a region file.
    pub(super) fn do_open(&self, ino: Ino, flags: OpenFlags) -> Result<(Fh, OpenMode), Fail> {
        let region = self.ns.read().node(ino)?.region().cloned();
        match region {
            None if ino == INFO => {
                let writes =
                    flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
                ensure(!writes, Errno::EPERM, "mshare_info is read-only")?;
                Ok((self.handles.add(ino, Opened::Info), OpenMode::Direct))
            }
            None => Err(Fail::new(Errno::EISDIR, "is a directory")),
            Some(region) => {
                let opened = self.open_region(ino, &region, flags)?;
                self.still_current(ino, &region, opened)
            }
        }
    }

    /// `create`: a new region, opened.
    pub(super) fn do_create(
        &self,
        req: Caller,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        flags: OpenFlags,
    ) -> Result<(Attr, Fh, OpenMode), Fail> {
        ensure(
            mode & libc::S_IFMT == libc::S_IFREG || mode & libc::S_IFMT == 0,
            Errno::EPERM,
            "only regions",
        )?;
        let (ino, region) = self.new_region(req, parent, name, mode)?;
        let (fh, mode) = match self.open_region(ino, &region, flags) {
            Ok(o) => o,
            Err(f) => {
                let _ = self.ns.write().remove(parent, name, Removal::File);
                self.reap(ino);
                return Err(f);
            }
        };
        Ok((self.entry_of(ino)?, fh, mode))
    }

    /// `read` of `mshare_info`, or of a region served by the server.
    pub(super) fn do_read(
        &self,
        ino: Ino,
        fh: Fh,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, Fail> {
        if ino == INFO {
            let text = self.info_text.as_bytes();
            let start = (offset as usize).min(text.len());
            let end = start.saturating_add(size as usize).min(text.len());
            return Ok(text[start..end].to_vec());
        }
        let (region, access) = self.handles.region(fh, ino)?;
        ensure(access.reads(), Errno::EBADF, "not opened for reading")?;
        region.read(offset, size)
    }

    /// `write` to a region served by the server.
    pub(super) fn do_write(&self, ino: Ino, fh: Fh, offset: u64, data: &[u8]) -> Result<u32, Fail> {
        match self.handles.region(fh, ino) {
            Ok((r, access)) if access.writes() => r.write(offset, data),
            Ok(_) => Err(Fail::new(Errno::EBADF, "not opened for writing")),
            Err(f) if f.errno == Errno::ENOTTY => {
                Err(Fail::new(Errno::EPERM, "mshare_info is read-only"))
            }
            Err(f) => Err(f),
        }
    }

    /// `fallocate`: mode 0 only.
    pub(super) fn do_fallocate(
        &self,
        ino: Ino,
        fh: Fh,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> Result<(), Fail> {
        let (region, access) = self.handles.region(fh, ino)?;
        ensure(access.writes(), Errno::EBADF, "not opened for writing")?;
        ensure(
            mode == 0,
            Errno::EOPNOTSUPP,
            "only plain fallocate is supported (use MSHAREFS_UNMAP to free)",
        )?;
        region.fallocate(offset, length)
    }

    /// `release`: the last close of a handle.
    pub(super) fn do_release(&self, ino: Ino, fh: Fh) {
        let opened = self.handles.remove(fh);
        if let Some(Opened::Region { region, .. }) = opened {
            if region.release() == 0 {
                self.closed_transient(&region);
                self.reap(ino);
            }
        }
    }
}
