//! A region: its layout (start, size), the objects mapped in it, its backing
//! file and its open count. The rules are pure functions in [`rules`];
//! [`Region`] applies them under the region's own lock.

mod access;
mod memory;
mod rules;
mod shape;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use mshare_uapi::{Backing, MshareCreate, MshareInfo, MshareUnmap};
use nix::errno::Errno;
use parking_lot::Mutex;

use crate::backing::{self, Memory};
use crate::fail::{ensure, Fail};
use crate::hugepool::{pages_for, HugePool};
use crate::passthrough::PassthroughId;
use crate::placement::Placement;
use crate::request::Ino;
use crate::state::record::{LayoutRec, Record};
use crate::state::Journal;
pub use access::{Access, Attach, OpenMode};
pub use memory::Released;
pub use rules::{check_create, check_layout, cut, page_size, Object};
pub use shape::Shape;

/// What the regions of one mount share: where they are placed, where their
/// layouts are recorded and where hugetlb memory comes from.
#[derive(Debug, Clone)]
pub struct Home {
    /// The mount's alignment and address ranges.
    pub placement: Arc<Placement>,
    /// Where layouts are recorded, so that they outlive the server.
    pub journal: Arc<Journal>,
    /// The hugetlb pool.
    pub pool: Arc<HugePool>,
}

/// A shared memory region.
#[derive(Debug)]
pub struct Region {
    /// Unique id (the inode number), also its key in the placement.
    pub id: Ino,
    /// Backing kind, fixed at creation.
    pub kind: Backing,
    /// The rules its layout follows, fixed by its directory.
    pub shape: Shape,
    /// Where it is placed, where its layout is recorded and where its
    /// hugetlb memory comes from.
    home: Home,
    /// Everything that changes, under one lock.
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The backing file; `None` once the memory has been released.
    file: Option<Arc<OwnedFd>>,
    /// Its name in the state directory, if the memory is kept.
    name: Option<String>,
    /// Start and size, once set.
    info: Option<MshareInfo>,
    /// Objects, sorted by address.
    objects: Vec<Object>,
    /// Open file handles.
    opens: u64,
    /// Passthrough registration, made at the first open and held while
    /// the memory is.
    backing_id: Option<Arc<PassthroughId>>,
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
    /// A new, unsized region over `memory`, placed and recorded as `home`
    /// says.
    pub fn new(id: Ino, kind: Backing, shape: Shape, memory: Memory, home: &Home) -> Self {
        Region {
            id,
            kind,
            shape,
            home: home.clone(),
            state: Mutex::new(State {
                file: Some(Arc::new(memory.file)),
                name: memory.name,
                info: None,
                objects: Vec::new(),
                opens: 0,
                backing_id: None,
            }),
        }
    }

    /// A region a previous server left: `memory` with the recorded `layout`
    /// (`None`: unsized). Its range is claimed in `placement` again.
    pub fn adopt(
        id: Ino,
        (kind, shape): (Backing, Shape),
        memory: Memory,
        home: &Home,
        layout: Option<&LayoutRec>,
    ) -> Self {
        let region = Region::new(id, kind, shape, memory, home);
        if let Some(l) = layout {
            let mut st = region.state.lock();
            st.info = Some(MshareInfo {
                start: l.start,
                size: l.size,
            });
            st.objects = l
                .objects
                .iter()
                .map(|&(addr, size, prot)| Object { addr, size, prot })
                .collect();
            if shape != Shape::File {
                region.home.placement.claim(id, l.start, l.size);
            }
        }
        region
    }

    /// Records the layout (under the region's lock, so records of one
    /// region are written in the order of its changes). A failed write is
    /// logged and repaired by the journal's next write.
    fn record(&self, st: &State) {
        let Some(info) = st.info else { return };
        let _ = self.home.journal.put(Record::Layout(LayoutRec {
            ino: self.id.0,
            start: info.start,
            size: info.size,
            objects: st
                .objects
                .iter()
                .map(|o| (o.addr, o.size, o.prot))
                .collect(),
        }));
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
            .and_then(|f| nix::sys::stat::fstat(f.as_fd()).ok())
            .map_or(0, |s| s.st_blocks as u64);
        (size, blocks)
    }

    /// Whether its backing kind may still change: neither open nor sized.
    pub fn is_fresh(&self) -> bool {
        let st = self.state.lock();
        st.opens == 0 && st.info.is_none()
    }

    /// `MSHAREFS_SET_SIZE`: `start == 0` (from `ftruncate`) lets the server
    /// choose a free start.
    pub fn set_size(&self, info: MshareInfo) -> Result<MshareInfo, Fail> {
        let mut st = self.state.lock();
        let info = self.size_locked(&mut st, info)?;
        self.record(&st);
        Ok(info)
    }

    /// Sizes the region under its lock (see [`Self::set_size`]); the
    /// caller records it.
    fn size_locked(&self, st: &mut State, mut info: MshareInfo) -> Result<MshareInfo, Fail> {
        let align = self.home.placement.align();
        ensure(st.info.is_none(), Errno::EINVAL, "size is already set")?;
        ensure(
            self.shape != Shape::File,
            Errno::EINVAL,
            "a region of shm/ has no start: size it with ftruncate",
        )?;
        let file = st.file()?;
        let granule = self.shape.size_granule(align, self.kind);
        ensure(
            info.size % granule == 0,
            Errno::EINVAL,
            "size is not a multiple of the alignment (see mshare_info)",
        )?;
        // Checked as the aligned range that it reserves.
        let reserved = info.size.div_ceil(align).saturating_mul(align);
        if info.start == 0 {
            // Check everything but the start, then choose one.
            let probe = MshareInfo {
                start: align.max(page_size(self.kind)),
                size: reserved,
            };
            check_layout(&probe, align, self.kind)?;
            info.start = self
                .home
                .placement
                .pick(self.id, info.size)
                .ok_or(Fail::new(
                    Errno::ENOMEM,
                    "no free aligned address range of that size",
                ))?;
        } else {
            check_layout(
                &MshareInfo {
                    size: reserved,
                    ..info
                },
                align,
                self.kind,
            )?;
            self.home.placement.claim(self.id, info.start, info.size);
        }
        if let Err(e) = backing::set_len(file.as_fd(), info.size) {
            self.home.placement.release(self.id);
            return Err(Fail::with(e, format!("cannot size the backing file: {e}")));
        }
        st.info = Some(info);
        Ok(info)
    }

    /// `MSHAREFS_SETUP`: sets the size (`start == 0`: the server chooses)
    /// and, with `object`, maps one read-write anonymous object over the
    /// whole region, recorded once. If the object cannot be made (a
    /// hugetlb pool that cannot hold it), the size stays set, as it would
    /// after `SET_SIZE` and a failed `CREATE_MAPPING`.
    pub fn setup(&self, info: MshareInfo, object: bool) -> Result<MshareInfo, Fail> {
        let mut st = self.state.lock();
        let info = self.size_locked(&mut st, info)?;
        let res = if object {
            let prot = libc::PROT_READ | libc::PROT_WRITE;
            self.object_locked(
                &mut st,
                &MshareCreate::anonymous(info.start, info.size, prot),
            )
        } else {
            Ok(())
        };
        self.record(&st);
        res.map(|()| info)
    }

    /// `ftruncate`: sets the size of an unsized region (the server chooses
    /// the start); the current size, or 0 on an unsized region, is a no-op.
    /// A region of `shm/` takes any size, as often as asked.
    pub fn truncate(&self, size: u64) -> Result<(), Fail> {
        if self.shape == Shape::File {
            return self.resize(size);
        }
        let current = self.state.lock().info.map_or(0, |i| i.size);
        if size == current {
            return Ok(());
        }
        ensure(
            current == 0,
            Errno::EINVAL,
            "the size of a region can be set only once",
        )?;
        self.set_size(MshareInfo { start: 0, size }).map(drop)
    }

    /// Sets the size of a region of `shm/` (start 0: it has none).
    fn resize(&self, size: u64) -> Result<(), Fail> {
        let mut st = self.state.lock();
        let file = st.file()?;
        backing::set_len(file.as_fd(), size)
            .map_err(|e| Fail::with(e, format!("cannot size the backing file: {e}")))?;
        st.info = Some(MshareInfo { start: 0, size });
        self.record(&st);
        Ok(())
    }

    /// `fallocate(mode 0)`: from 0 on an unsized region it sets the size
    /// (as the 2025 series does); inside a sized region it allocates.
    pub fn fallocate(&self, offset: u64, length: u64) -> Result<(), Fail> {
        let info = match self.info() {
            Err(_) if offset == 0 => return self.truncate(length),
            other => other?,
        };
        if let Some(end) = offset.checked_add(length) {
            if self.shape == Shape::File && end > info.size {
                // posix_fallocate extends a file.
                self.resize(end)?;
                return self.allocate(self.file()?.as_ref(), offset, length);
            }
        }
        ensure(
            offset.checked_add(length).is_some_and(|e| e <= info.size),
            Errno::EFBIG,
            "fallocate past the end of the region",
        )?;
        self.allocate(self.file()?.as_ref(), offset, length)
    }

    /// Allocates `[offset, offset + len)` of `file`, hugetlb pages from the
    /// pool (grown for them under `hugetlb_pool=auto`).
    fn allocate(&self, file: &OwnedFd, offset: u64, len: u64) -> Result<(), Fail> {
        let fail = |e: Errno| Fail::with(e, format!("cannot allocate {len} bytes: {e}"));
        if self.kind != Backing::Hugetlb {
            return backing::allocate(file, offset, len).map_err(fail);
        }
        self.home.pool.with_pages(pages_for(len), || {
            let before = backing::allocated(file);
            backing::allocate(file, offset, len).map_err(fail)?;
            Ok(((), pages_for(backing::allocated(file) - before)))
        })
    }

    /// `MSHAREFS_CREATE_MAPPING`.
    pub fn create_object(&self, c: &MshareCreate) -> Result<(), Fail> {
        let mut st = self.state.lock();
        self.object_locked(&mut st, c)?;
        self.record(&st);
        Ok(())
    }

    /// Makes object `c` under the region's lock; the caller records it.
    fn object_locked(&self, st: &mut State, c: &MshareCreate) -> Result<(), Fail> {
        let info = st.info()?;
        let req = check_create(c, &info, self.kind, &st.objects)?;
        let o = req.object;
        if self.kind == Backing::Hugetlb || req.populate {
            self.allocate(st.file()?.as_ref(), o.addr - info.start, o.size)?;
        }
        let at = st.objects.partition_point(|x| x.addr < o.addr);
        st.objects.insert(at, o);
        Ok(())
    }

    /// `MSHAREFS_UNMAP`: removes the objects in the range and frees their
    /// memory (other mappers then read zeros).
    pub fn unmap(&self, u: &MshareUnmap) -> Result<(), Fail> {
        let mut st = self.state.lock();
        let info = st.info()?;
        let rest = cut(&st.objects, u, &info, self.kind)?;
        if let Some(file) = &st.file {
            let punch = || backing::punch_hole(file.as_fd(), u.addr - info.start, u.size);
            let res = if self.kind == Backing::Hugetlb {
                self.home.pool.release(|| {
                    let before = backing::allocated(file);
                    let res = punch();
                    (
                        res,
                        pages_for(before.saturating_sub(backing::allocated(file))),
                    )
                })
            } else {
                punch()
            };
            res.map_err(|e| Fail::with(e, format!("cannot free memory: {e}")))?;
        }
        st.objects = rest;
        self.record(&st);
        Ok(())
    }

    /// Counts an open and says how to answer it. `register` makes the
    /// passthrough registration when `attach` asks for it and none is
    /// held; an error from it is returned as is (the caller decides whether
    /// to fall back).
    pub fn open(
        &self,
        attach: Attach,
        register: impl FnOnce(&OwnedFd) -> io::Result<PassthroughId>,
    ) -> Result<OpenMode, io::Error> {
        let mut st = self.state.lock();
        let file = st
            .file
            .clone()
            .ok_or_else(|| io::Error::from(Errno::ENOENT))?;
        let mode = if attach == Attach::Passthrough && self.kind != Backing::Hugetlb {
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

    /// Counts a release. Returns the open handles left. The passthrough
    /// registration stays until the memory goes ([`Self::take_memory`]), so
    /// that the next open costs no `/dev/fuse` ioctl.
    pub fn release(&self) -> u64 {
        let mut st = self.state.lock();
        st.opens = st.opens.saturating_sub(1);
        st.opens
    }

    /// Open handles.
    pub fn opens(&self) -> u64 {
        self.state.lock().opens
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
        if self.kind == Backing::Hugetlb {
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
