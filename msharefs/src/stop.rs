//! How the server stops, and what becomes of the regions: an unmount frees
//! them, a stop signal keeps them for the next server.
//!
//! Two threads can end the server: the signal waiter (SIGTERM, SIGINT,
//! SIGHUP) and `main`, whose session ends when the mount goes. What the
//! user asked is read from the kernel, not from which thread runs first:
//! if the server's own mount is still attached when a thread comes to
//! decide, nobody unmounted it and the regions are kept (a signal then
//! unmounts it; a session that ended while it stays was aborted); if it is
//! gone, someone unmounted it and the regions are freed, whatever signal
//! follows. `umount M; kill PID` therefore frees, and `kill PID; umount M`
//! keeps. The decision and all its work are made under one lock, by the
//! first thread to come: the other one waits, and never undoes or cuts
//! short what the first does (no state is ever left half freed).

use std::sync::Arc;

use log::{error, info};
use nix::sys::signal::Signal;
use parking_lot::Mutex;

use crate::hugepool::HugePool;
use crate::mount::OurMount;
use crate::notify;
use crate::state::StateDir;
use crate::transport::uring;

/// What becomes of the regions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Kept in the state directory for the next server on the mount point.
    Keep,
    /// Freed: the user unmounted.
    Free,
}

/// Why a thread comes to stop the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// A stop signal.
    Signal,
    /// The session ended (the connection is gone).
    SessionEnded,
}

/// The fate of the regions when `cause` comes and the server's mount is
/// `attached` (`None`: the server did not mount, a `/dev/fd/N` mount whose
/// helper unmounts it).
pub fn decide(cause: Cause, attached: Option<bool>) -> Fate {
    match attached.unwrap_or(cause == Cause::Signal) {
        true => Fate::Keep,
        false => Fate::Free,
    }
}

/// Takes down a mount that the transport made (fuser's
/// `SessionUnmounter::unmount`).
pub type UnmountCall = Box<dyn FnMut() -> std::io::Result<()> + Send>;

/// How the mount is taken down on a signal.
pub enum Unmounter {
    /// The server's own mount (see [`crate::mount`]).
    Ours(OurMount),
    /// A mount that fuser made (through `fusermount3`) and takes down
    /// with the transport's unmount call.
    Fuser(UnmountCall, Option<OurMount>),
    /// A `/dev/fd/N` mount: the helper that mounted it unmounts it.
    Helper,
}

impl Unmounter {
    fn mount(&self) -> Option<&OurMount> {
        match self {
            Unmounter::Ours(m) | Unmounter::Fuser(_, Some(m)) => Some(m),
            _ => None,
        }
    }

    fn attached(&self) -> Option<bool> {
        match self {
            Unmounter::Helper => None,
            // A mount fuser made that could not be found: it is attached
            // as long as fuser has not taken it down.
            Unmounter::Fuser(_, None) => Some(true),
            _ => self.mount().map(OurMount::attached),
        }
    }

    fn unmount(&mut self) {
        let res = match self {
            Unmounter::Ours(m) => m.unmount(),
            Unmounter::Fuser(u, m) => u().or_else(|e| {
                let Some(m) = m else {
                    return Err(format!("unmount: {e}"));
                };
                info!("unmount: {e}; detaching the busy mount lazily");
                nix::mount::umount2(&m.dir, nix::mount::MntFlags::MNT_DETACH)
                    .map_err(|e| format!("cannot unmount {}: {e}", m.dir.display()))
            }),
            Unmounter::Helper => Ok(()),
        };
        if let Err(e) = res {
            error!("{e}");
        }
    }
}

/// What the server leaves behind, and how to take it down.
pub struct Leftovers {
    /// The state directory, `None` when regions are not kept.
    pub state: Option<StateDir>,
    /// The hugetlb pool the server grew.
    pub pool: Arc<HugePool>,
    /// The mount.
    pub unmounter: Unmounter,
}

/// The one stop of the server, whichever thread comes first.
pub struct Stop {
    left: Mutex<Option<Leftovers>>,
}

impl Stop {
    /// A stop that will take down `left`.
    pub fn new(left: Leftovers) -> Stop {
        Stop {
            left: Mutex::new(Some(left)),
        }
    }

    /// For a stop signal: decides, unmounts if the mount is still there,
    /// and exits the process. Returns (having done nothing) when the stop
    /// is already under way.
    pub fn on_signal(&self, sig: Signal) {
        let mut left = self.left.lock();
        let Some(mut l) = left.take() else {
            info!("{sig}: already stopping");
            return;
        };
        notify::notify("STOPPING=1");
        let fate = decide(Cause::Signal, l.unmounter.attached());
        match (fate, l.unmounter.mount()) {
            (Fate::Keep, Some(m)) => info!("{sig}: unmounting {}", m.dir.display()),
            (Fate::Keep, None) => info!("{sig}: stopping"),
            (Fate::Free, _) => info!("{sig}: the mount was unmounted before: stopping"),
        }
        if fate == Fate::Keep {
            l.unmounter.unmount();
        }
        finish(l, fate);
        info!("exiting");
        std::process::exit(0);
    }

    /// For `main`, once the session has ended: decides and takes down
    /// what is left. Never returns while a signal's stop is under way
    /// (that one exits the process).
    pub fn on_session_end(&self) {
        let mut left = self.left.lock();
        let Some(l) = left.take() else {
            drop(left);
            loop {
                std::thread::park();
            }
        };
        let fate = decide(Cause::SessionEnded, l.unmounter.attached());
        finish(l, fate);
        info!("unmounted; exiting");
    }
}

/// Frees or keeps the regions, and puts the kernel switch back.
fn finish(l: Leftovers, fate: Fate) {
    uring::restore_kernel_switch();
    if fate == Fate::Free || l.state.is_none() {
        // Pages still mapped by clients go with their last mapping.
        l.pool.give_back_all();
    }
    match (l.state, fate) {
        (Some(s), Fate::Free) => s.discard(),
        (Some(s), Fate::Keep) => {
            s.mark_kept();
            let path = l.unmounter.mount().map(|m| m.dir.display().to_string());
            info!(
                "the regions stay in {}: a server started on {} adopts them; umount frees them",
                s.path().display(),
                path.as_deref().unwrap_or("the same mount point")
            )
        }
        (None, _) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unmount_frees_and_a_signal_on_a_mount_still_there_keeps() {
        use Cause::*;
        // umount, then a signal: the mount is gone when the signal comes.
        assert_eq!(decide(Signal, Some(false)), Fate::Free);
        assert_eq!(decide(SessionEnded, Some(false)), Fate::Free);
        // a signal on a mount still there.
        assert_eq!(decide(Signal, Some(true)), Fate::Keep);
        // the connection aborted while the mount stays.
        assert_eq!(decide(SessionEnded, Some(true)), Fate::Keep);
        // /dev/fd/N: the helper's unmount ends the session.
        assert_eq!(decide(Signal, None), Fate::Keep);
        assert_eq!(decide(SessionEnded, None), Fate::Free);
    }
}
