//! Regions that live as long as the program that uses them, made by the
//! preload library: those of [`mshare_uapi::ANON_DIR`] (anonymous shared
//! memory, which lives by its mappings) and of [`mshare_uapi::SHM_DIR`]
//! (POSIX shm objects, which also live while their creator's parent does,
//! or a descriptor is open). The kernel frees the memory with
//! the last mapping once the server drops the name, so the server's job is
//! to remove the *name* in time. The program cannot be asked to do it:
//! after `kill -9` it runs no code.
//!
//! [`Watcher`] holds, for each such region, a pidfd of its creator (the
//! process that made the request) and of every other process known to hold
//! it. A thread polls them. When the last one exits, or when the library
//! says its process unmapped the region, or a region's last descriptor is
//! closed ([`Watcher::recheck`]) and its creator (and, for a shm object,
//! the creator's parent) is gone, it reads `/proc/PID/maps` of every process
//! for the region's identities (its backing file's device and inode, and
//! the region file's for a mapping through FUSE passthrough). The processes found are watched
//! in turn (children that a creator forked keep the region after it exits);
//! when none is found, the file system is asked to remove the region
//! ([`OnUnmapped`]), which it does unless a descriptor is still open.
//!
//! A process of another user is seen only by a server run as root, which
//! is how msharefs is meant to run; a server of one user only removes names
//! too early, never memory that is mapped.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, OnceLock};

use log::{debug, warn};
use mshare_uapi::MemoryId;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use parking_lot::Mutex;

use crate::request::Ino;

/// What is called with a region whose creator is gone and that no process
/// maps any more; true if something else still holds it (an open
/// descriptor): the watch then waits for [`Watcher::recheck`].
pub type OnUnmapped = Box<dyn Fn(Ino) -> bool + Send + Sync>;

/// A process, by pid and pidfd.
type Proc = (u32, Arc<OwnedFd>);

/// One watched region.
struct Watch {
    /// Its backing file's identity.
    memory: MemoryId,
    /// The process that made it, while it lives.
    creator: Option<Proc>,
    /// For a shm object, the creator's parent (not init), while it lives: a
    /// process of a program may make an object for the others and exit
    /// (PostgreSQL's startup process makes the statistics segment).
    parent: Option<Proc>,
    /// Other processes known to map it.
    pids: Vec<Proc>,
    /// Whether `/proc` must be read for it before the next wait.
    scan: bool,
}

impl Watch {
    fn procs(&self) -> impl Iterator<Item = &Proc> {
        self.creator.iter().chain(&self.parent).chain(&self.pids)
    }
}

/// The regions of [`mshare_uapi::ANON_DIR`] and who maps them.
pub struct Watcher {
    watches: Mutex<HashMap<Ino, Watch>>,
    /// Wakes the thread when a watch is added or a scan asked for.
    wake: EventFd,
    /// The mount's device, for mappings of region files.
    mount_dev: OnceLock<(u32, u32)>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("regions", &self.watches.lock().len())
            .finish()
    }
}

impl Watcher {
    /// A watcher whose thread calls `on_unmapped` with each region that no
    /// process maps any more (and forgets it).
    pub fn start(on_unmapped: OnUnmapped) -> io::Result<Arc<Watcher>> {
        let w = Arc::new(Watcher {
            watches: Mutex::new(HashMap::new()),
            wake: EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?,
            mount_dev: OnceLock::new(),
        });
        let weak = Arc::downgrade(&w);
        std::thread::Builder::new()
            .name("anon-watch".into())
            .spawn(move || {
                while let Some(w) = weak.upgrade() {
                    w.round(&on_unmapped);
                }
            })?;
        Ok(w)
    }

    /// Tells the watcher the mount's device number, so that mappings of
    /// region files (FUSE passthrough) are seen too.
    pub fn set_mount_dev(&self, dev: (u32, u32)) {
        let _ = self.mount_dev.set(dev);
    }

    /// Watches region `ino` with memory `memory`, made by thread `tid`
    /// (`None`, or a thread that is gone: look for mappers now); with
    /// `with_parent`, the creator's parent holds it too.
    pub fn watch(&self, ino: Ino, memory: MemoryId, tid: Option<u32>, with_parent: bool) {
        let creator = tid.and_then(thread_group).and_then(|pid| {
            let fd = crate::sys::pidfd_open(pid).ok()?;
            Some((pid, Arc::new(fd)))
        });
        let parent = match (&creator, with_parent) {
            (Some((pid, _)), true) => parent_of(*pid).filter(|&p| p > 1).and_then(|p| {
                let fd = crate::sys::pidfd_open(p).ok()?;
                Some((p, Arc::new(fd)))
            }),
            _ => None,
        };
        debug!(
            "region inode {}: made by thread {tid:?}, process {:?} (parent {:?})",
            ino.0,
            creator.as_ref().map(|c| c.0),
            parent.as_ref().map(|c| c.0)
        );
        let watch = Watch {
            memory,
            scan: creator.is_none(),
            creator,
            parent,
            pids: Vec::new(),
        };
        self.watches.lock().insert(ino, watch);
        self.kick();
    }

    /// Looks for the processes that map `ino` now: a process says it has
    /// unmapped it (`creator_done`: the creator's hold ends with its
    /// mapping), or its last descriptor was closed.
    pub fn recheck(&self, ino: Ino, creator_done: bool) {
        if let Some(w) = self.watches.lock().get_mut(&ino) {
            w.scan = true;
            if creator_done {
                w.creator = None;
                w.parent = None;
            }
        }
        self.kick();
    }

    /// Stops watching `ino` (it was removed).
    pub fn forget(&self, ino: Ino) {
        self.watches.lock().remove(&ino);
    }

    /// Whether `ino` is watched.
    pub fn watches(&self, ino: Ino) -> bool {
        self.watches.lock().contains_key(&ino)
    }

    fn kick(&self) {
        let _ = self.wake.write(1);
    }

    /// One round: scans what needs it, then waits for an exit or a kick
    /// (at most a second, so that a dropped watcher lets its thread end).
    ///
    /// A region whose creator (or that creator's parent) lives stays
    /// whoever maps it, so its scan waits until they are gone: reading
    /// every process's maps costs milliseconds with hundreds of processes,
    /// and PostgreSQL closes a shm object in every backend it starts.
    fn round(&self, on_unmapped: &OnUnmapped) {
        let todo: Vec<(Ino, MemoryId)> = self
            .watches
            .lock()
            .iter()
            .filter(|(_, w)| w.scan && w.creator.is_none() && w.parent.is_none())
            .map(|(&ino, w)| (ino, w.memory))
            .collect();
        let fuse_dev = self.mount_dev.get().copied();
        for (ino, memory) in todo {
            let file = fuse_dev.map(|(major, minor)| MemoryId {
                major,
                minor,
                ino: ino.0,
            });
            let found = mappers(&[Some(memory), file]);
            let mut watches = self.watches.lock();
            let Some(w) = watches.get_mut(&ino) else {
                continue;
            };
            w.scan = false;
            w.pids = found;
            if w.pids.is_empty() && w.creator.is_none() && w.parent.is_none() {
                drop(watches);
                debug!("region inode {}: no process maps it", ino.0);
                if !on_unmapped(ino) {
                    self.watches.lock().remove(&ino);
                }
            }
        }
        let waits: Vec<(Ino, u32, Arc<OwnedFd>)> = self
            .watches
            .lock()
            .iter()
            .flat_map(|(&ino, w)| w.procs().map(move |(pid, fd)| (ino, *pid, fd.clone())))
            .collect();
        let mut fds = vec![PollFd::new(self.wake.as_fd(), PollFlags::POLLIN)];
        fds.extend(
            waits
                .iter()
                .map(|(_, _, fd)| PollFd::new(fd.as_fd(), PollFlags::POLLIN)),
        );
        match poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(_) => {}
            Err(Errno::EINTR) => return,
            Err(e) => {
                warn!("cannot wait for the processes that map anonymous regions: {e}");
                std::thread::sleep(std::time::Duration::from_secs(1));
                return;
            }
        }
        let exited: Vec<(Ino, u32)> = fds[1..]
            .iter()
            .zip(&waits)
            .filter(|(p, _)| p.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, (ino, pid, _))| (*ino, *pid))
            .collect();
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            let _ = self.wake.read();
        }
        let mut watches = self.watches.lock();
        for (ino, pid) in exited {
            if let Some(w) = watches.get_mut(&ino) {
                w.pids.retain(|(p, _)| *p != pid);
                if w.creator.as_ref().is_some_and(|(p, _)| *p == pid) {
                    w.creator = None;
                }
                if w.parent.as_ref().is_some_and(|(p, _)| *p == pid) {
                    w.parent = None;
                }
                w.scan |= w.creator.is_none() && w.parent.is_none() && w.pids.is_empty();
            }
        }
    }
}

/// The thread group (process) of thread `tid`: FUSE requests carry the
/// calling thread's id.
fn thread_group(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The device and inode columns of a `/proc/PID/maps` line.
pub fn maps_identity(line: &str) -> Option<MemoryId> {
    let mut f = line.split_ascii_whitespace();
    let (_range, _perms, _offset) = (f.next()?, f.next()?, f.next()?);
    let (dev, ino) = (f.next()?, f.next()?);
    if ino == "0" {
        return None;
    }
    format!("{dev} {ino}").parse().ok()
}

/// Field `n` after the command name of `/proc/PID/stat` (0: state,
/// 1: parent).
fn stat_field(pid: u32, n: usize) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the
    // last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(n)?.parse().ok()
}

/// The parent of process `pid`.
pub fn parent_of(pid: u32) -> Option<u32> {
    stat_field(pid, 1)
}

/// Whether process `pid` maps any of `ids`.
fn maps_any(pid: u32, ids: &[Option<MemoryId>]) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|text| {
        text.lines()
            .filter_map(maps_identity)
            .any(|id| ids.contains(&Some(id)))
    })
}

/// The processes (other than this one) that map any of `ids`, each with a
/// pidfd taken before its maps are read again, so that a pid reused in
/// between is not mistaken for a mapper.
fn mappers(ids: &[Option<MemoryId>]) -> Vec<(u32, Arc<OwnedFd>)> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && maps_any(pid, ids))
        .filter_map(|pid| {
            let fd = crate::sys::pidfd_open(pid).ok()?;
            maps_any(pid, ids).then(|| (pid, Arc::new(fd)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_parent() {
        let me = std::process::id();
        assert_eq!(parent_of(me), Some(std::os::unix::process::parent_id()));
        assert_eq!(parent_of(u32::MAX), None);
    }

    #[test]
    fn reads_identities_of_maps_lines() {
        let line = "7f0000000000-7f0040000000 rw-s 00000000 00:2a 3   /memfd:x (deleted)";
        assert_eq!(
            maps_identity(line),
            Some(MemoryId {
                major: 0,
                minor: 0x2a,
                ino: 3
            })
        );
        assert_eq!(
            maps_identity("7f00-7f01 rw-p 00000000 00:00 0 "),
            None,
            "anonymous memory has no identity"
        );
        assert_eq!(maps_identity("garbage"), None);
    }
}
