//! The state file, kept current: every change appends one record, and the
//! file is rewritten as a snapshot (to a new file, renamed over the old one)
//! once the journal has grown to twice what it describes. The last record
//! of every inode is kept in memory too, which is what a snapshot writes and
//! what lets a failed write be repaired by the next one.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;

use log::{debug, error, info};
use nix::errno::Errno;
use nix::fcntl::{renameat, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;
use parking_lot::Mutex;

use super::record::{header, Record, Snapshot};

/// The state file's name in the state directory.
pub const STATE_FILE: &str = "state";
const NEW_FILE: &str = "state.new";

/// Where records go.
#[derive(Debug)]
pub struct Journal {
    inner: Option<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    /// The state directory.
    dir: OwnedFd,
    /// The state file, open for appending; `None` after a failed write
    /// until a rewrite succeeds.
    file: Option<File>,
    /// The last node and layout record of every inode, by (tag, inode).
    live: HashMap<(u8, u64), String>,
    /// Records appended since the last rewrite.
    appended: usize,
    /// A write failed and no rewrite has succeeded since.
    broken: bool,
    align: u64,
    next_ino: u64,
}

impl Journal {
    /// A journal that records nothing: the server keeps no state (no state
    /// directory could be made).
    pub fn volatile() -> Self {
        Journal { inner: None }
    }

    /// A journal in `dir` that starts from `snap` (what was adopted) and
    /// writes it out at once as a fresh snapshot.
    pub fn open(dir: OwnedFd, snap: &Snapshot, align: u64) -> Result<Self, Errno> {
        let mut live = HashMap::new();
        for n in snap.nodes.values() {
            live.insert((b'N', n.ino), Record::Node(n.clone()).encode());
        }
        for l in snap.layouts.values() {
            live.insert((b'L', l.ino), Record::Layout(l.clone()).encode());
        }
        let mut inner = Inner {
            dir,
            file: None,
            live,
            appended: 0,
            broken: false,
            align,
            next_ino: snap.next_ino,
        };
        inner.rewrite()?;
        Ok(Journal {
            inner: Some(Mutex::new(inner)),
        })
    }

    /// Records `rec`. An error means the state file does not hold it yet:
    /// the record is kept in memory and the next successful write (of any
    /// record) rewrites the whole file with it.
    pub fn put(&self, rec: Record) -> Result<(), Errno> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let mut j = inner.lock();
        let line = rec.encode();
        let ino = rec.ino();
        j.next_ino = j.next_ino.max(ino + 1);
        match rec {
            Record::Node(_) => drop(j.live.insert((b'N', ino), line.clone())),
            Record::Layout(_) => drop(j.live.insert((b'L', ino), line.clone())),
            Record::Gone(_) => {
                j.live.remove(&(b'N', ino));
                j.live.remove(&(b'L', ino));
            }
        }
        let res = match j
            .file
            .as_mut()
            .map(|f| f.write_all(format!("{line}\n").as_bytes()))
        {
            Some(Ok(())) => {
                j.appended += 1;
                if j.appended > 2 * j.live.len() + 4096 {
                    j.rewrite()
                } else {
                    Ok(())
                }
            }
            Some(Err(e)) => {
                // A short write may have left a torn line: never append
                // after it; the next record rewrites the file.
                j.file = None;
                Err(errno(e))
            }
            None => j.rewrite(),
        };
        if let Err(e) = res {
            if !std::mem::replace(&mut j.broken, true) {
                error!("cannot write the state file ({e}): changes are kept in memory and written once it can be; until then a restart of the server would lose them");
            } else {
                debug!("the state file still cannot be written: {e}");
            }
        }
        res
    }
}

impl Inner {
    /// Writes every live record to a new file and renames it over the
    /// state file, which then takes the appends.
    fn rewrite(&mut self) -> Result<(), Errno> {
        self.file = None;
        let fd = nix::fcntl::openat(
            &self.dir,
            NEW_FILE,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )?;
        let mut f = File::from(fd);
        let mut text = header(self.align, self.next_ino);
        text.push('\n');
        let mut keys: Vec<_> = self.live.keys().copied().collect();
        // Nodes before layouts, in inode order: easy to read by eye.
        keys.sort_unstable();
        for k in keys {
            text.push_str(&self.live[&k]);
            text.push('\n');
        }
        if let Err(e) = f.write_all(text.as_bytes()) {
            let _ = nix::unistd::unlinkat(&self.dir, NEW_FILE, UnlinkatFlags::NoRemoveDir);
            return Err(errno(e));
        }
        renameat(&self.dir, NEW_FILE, &self.dir, STATE_FILE)?;
        // The renamed file, opened for appending.
        drop(f);
        let fd = nix::fcntl::openat(
            &self.dir,
            STATE_FILE,
            OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        self.file = Some(File::from(fd));
        self.appended = 0;
        if std::mem::take(&mut self.broken) {
            info!("the state file is whole again");
        }
        Ok(())
    }
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}
