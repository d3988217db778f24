//! An open region file: its control ioctls and the direct mapping path.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use nix::errno::Errno;

use crate::error::{errno_of, Error, Result};
use crate::mapping::Mapping;
use crate::mount::Mount;
use crate::{attach, ioctl, xattr};
use mshare_uapi::{
    Backing, MshareCreate, MshareInfo, MshareSetup, MshareUnmap, MSHARE_SETUP_OBJECT,
};

/// Options of [`Mount::create`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreateOptions {
    /// Backing kind; `None` takes the mount's `backing=` default.
    pub backing: Option<Backing>,
    /// Permission bits of the new file.
    pub mode: u32,
    /// Fail with `EEXIST` if the region exists (else open it).
    pub exclusive: bool,
    /// Create one anonymous object over the whole region, so that it is
    /// ready to map (`MSHAREFS_CREATE_MAPPING`); off leaves that to the
    /// caller.
    pub whole_object: bool,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            backing: None,
            mode: 0o600,
            exclusive: true,
            whole_object: true,
        }
    }
}

/// An open region file.
#[derive(Debug)]
pub struct Region {
    file: File,
    name: String,
    writable: bool,
}

impl Region {
    pub(crate) fn create(
        mount: &Mount,
        name: &str,
        start: u64,
        size: u64,
        opts: &CreateOptions,
    ) -> Result<Region> {
        let path = mount.path(name)?;
        let path_err = |op, errno| Error::Path {
            op,
            path: path.clone(),
            errno,
        };
        let made = if opts.backing.is_none() || opts.backing == mount.default_backing() {
            // The mount's backing: one atomic create-and-open.
            match Region::open_with(path.clone(), name, false, Some(opts.mode)) {
                Err(Error::Path {
                    errno: Errno::EEXIST,
                    ..
                }) if !opts.exclusive => return Region::open(path, name, false),
                Err(e) => return Err(e),
                Ok(region) => region.set_up(start, size, opts.whole_object),
            }
        } else {
            // mknod creates the file without opening it, so the backing can
            // be chosen before the first open fixes it.
            let mode = nix::sys::stat::Mode::from_bits_truncate(opts.mode as libc::mode_t);
            match nix::sys::stat::mknod(&path, nix::sys::stat::SFlag::S_IFREG, mode, 0) {
                Ok(()) => {}
                Err(Errno::EEXIST) if !opts.exclusive => return Region::open(path, name, false),
                Err(e) => return Err(path_err("creating", e)),
            }
            (|| {
                if let Some(b) = opts.backing {
                    xattr::set_backing(&path, b)
                        .map_err(|e| path_err("setting the backing of", e))?;
                }
                Region::open(path.clone(), name, false)?.set_up(start, size, opts.whole_object)
            })()
        };
        if made.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        made
    }

    /// Sizes a new region (`start` 0: the server chooses) and maps the
    /// object over it if `object`: one `MSHAREFS_SETUP`, or with a server
    /// that lacks it `SET_SIZE`/`ftruncate`, `GET_SIZE` and
    /// `CREATE_MAPPING`.
    fn set_up(self, start: u64, size: u64, object: bool) -> Result<Region> {
        let flags = if object { MSHARE_SETUP_OBJECT } else { 0 };
        match ioctl::setup(&self.file, &MshareSetup { start, size, flags }) {
            Ok(_) => return Ok(self),
            Err(Errno::ENOTTY) => {}
            Err(e) => return Err(self.err("MSHAREFS_SETUP", e)),
        }
        if start == 0 {
            nix::unistd::ftruncate(&self.file, size as libc::off_t)
                .map_err(|e| self.err("ftruncate", e))?;
        } else {
            ioctl::set_size(&self.file, &MshareInfo { start, size })
                .map_err(|e| self.err("MSHAREFS_SET_SIZE", e))?;
        }
        if object {
            let info = self.info()?;
            self.create_mapping(info.start, info.size, libc::PROT_READ | libc::PROT_WRITE)?;
        }
        Ok(self)
    }

    /// Opens the region file at `path`, region `name` of its mount.
    pub(crate) fn open(path: PathBuf, name: &str, read_only: bool) -> Result<Region> {
        Region::open_with(path, name, read_only, None)
    }

    /// Opens the region file at `path`; `create: Some(mode)` creates it
    /// (`O_CREAT | O_EXCL`, read-write) with `mode`.
    fn open_with(
        path: PathBuf,
        name: &str,
        read_only: bool,
        create: Option<u32>,
    ) -> Result<Region> {
        let mut options = File::options();
        options
            .read(true)
            .write(!read_only)
            .custom_flags(libc::O_CLOEXEC);
        if let Some(mode) = create {
            options.create_new(true).mode(mode);
        }
        let file = options.open(&path).map_err(|e| Error::Path {
            op: if create.is_some() {
                "creating"
            } else {
                "opening"
            },
            path: path.clone(),
            errno: errno_of(&e),
        })?;
        Ok(Region {
            file,
            name: name.to_string(),
            writable: !read_only,
        })
    }

    fn err(&self, op: &'static str, errno: Errno) -> Error {
        Error::Region {
            op,
            region: self.name.clone(),
            errno,
        }
    }

    /// The region's name in the mount.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it was opened for writing.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// `MSHAREFS_GET_SIZE`: start and size.
    pub fn info(&self) -> Result<MshareInfo> {
        ioctl::get_size(&self.file).map_err(|e| self.err("MSHAREFS_GET_SIZE", e))
    }

    /// The backing kind (`user.mshare.backing`).
    pub fn backing(&self) -> Result<Backing> {
        xattr::get_backing(&self.file).map_err(|e| self.err("getxattr", e))
    }

    /// `MSHAREFS_CREATE_MAPPING`: an anonymous shared object over
    /// `[addr, addr + size)`.
    pub fn create_mapping(&self, addr: u64, size: u64, prot: libc::c_int) -> Result<()> {
        let c = MshareCreate::anonymous(addr, size, prot);
        ioctl::create_mapping(&self.file, &c).map_err(|e| self.err("MSHAREFS_CREATE_MAPPING", e))
    }

    /// `MSHAREFS_UNMAP`: removes the objects in the range and frees their
    /// memory.
    pub fn unmap(&self, addr: u64, size: u64) -> Result<()> {
        ioctl::unmap(&self.file, &MshareUnmap { addr, size })
            .map_err(|e| self.err("MSHAREFS_UNMAP", e))
    }

    /// A new descriptor of the region's memory file, with the access this
    /// open has (read-only for an `O_RDONLY` open), opened by the path the
    /// region's `user.mshare.attach` attribute gives: the kernel checks the
    /// region's mode, which the file carries.
    /// [`Error::NoMemoryFile`] where the server keeps none.
    pub fn backing_fd(&self) -> Result<OwnedFd> {
        match attach::memory(attach::Source::File(&self.file), self.writable) {
            Ok((_, Some(fd))) => Ok(fd),
            Ok((a, None)) => Err(attach::unattachable(&self.name, a.backing, Errno::ENODEV)),
            Err((op, e)) => Err(self.err(op, e)),
        }
    }

    /// Maps the whole region at its start address (`MAP_SHARED |
    /// MAP_FIXED_NOREPLACE`), writable if the region was opened for
    /// writing, by mapping its memory file ([`Region::backing_fd`]); where
    /// the server keeps no memory files, through the region file itself
    /// (FUSE passthrough, for thp and shmem regions).
    ///
    /// [`Error::AddressInUse`] if something is mapped in that range already.
    ///
    /// ```no_run
    /// let region = libmshare::Mount::find(None)?.open("sga", true)?;
    /// let map = region.map()?;
    /// let mut header = [0u8; 64];
    /// map.read(0, &mut header);
    /// drop(map); // unmapped here
    /// # Ok::<(), libmshare::Error>(())
    /// ```
    pub fn map(&self) -> Result<Mapping> {
        let (a, fd) = attach::memory(attach::Source::File(&self.file), self.writable)
            .map_err(|(op, e)| self.err(op, e))?;
        match fd {
            Some(fd) => attach::map(&self.name, fd, &a, self.writable),
            None => attach::map(&self.name, &self.file, &a, self.writable).map_err(|e| match e {
                Error::Region { errno, .. }
                    if a.backing == Backing::Hugetlb || errno == Errno::ENODEV =>
                {
                    attach::unattachable(&self.name, a.backing, errno)
                }
                e => e,
            }),
        }
    }
}

impl AsFd for Region {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
