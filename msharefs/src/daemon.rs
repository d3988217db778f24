//! Running in the background the libfuse way, and stopping on signals.
//!
//! # Safety
//!
//! `fork` is called before any thread exists (the caller guarantees it: it is
//! the first thing `main` does after parsing arguments), so the child may do
//! anything.
#![allow(unsafe_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{fork, ForkResult};

/// The child's end of the start-up handshake; the parent exits with
/// success when [`Detached::ready`] is called, with failure otherwise.
#[derive(Debug)]
pub struct Detached {
    to_parent: UnixStream,
}

/// Forks. The parent waits until the child calls [`Detached::ready`] (exit
/// 0) or exits or drops it first (exit 1), and never returns; the child
/// starts a new session and gets the handshake.
pub fn detach() -> std::io::Result<Detached> {
    let (mut parent_end, child_end) = UnixStream::pair()?;
    // SAFETY: single-threaded at this point (see the module docs).
    match unsafe { fork() }? {
        ForkResult::Parent { .. } => {
            drop(child_end);
            let mut byte = [0u8; 1];
            let ok = matches!(parent_end.read(&mut byte), Ok(1));
            std::process::exit(if ok { 0 } else { 1 });
        }
        ForkResult::Child => {
            drop(parent_end);
            nix::unistd::setsid()?;
            Ok(Detached {
                to_parent: child_end,
            })
        }
    }
}

impl Detached {
    /// Tells the waiting parent that the mount is ready, and points the
    /// standard streams at /dev/null so that nobody waiting for their end
    /// (a shell pipeline, `mount`) hangs on the server.
    pub fn ready(mut self) {
        let _ = self.to_parent.write_all(&[1]);
        if let Ok(null) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            let _ = nix::unistd::dup2_stdin(&null);
            let _ = nix::unistd::dup2_stdout(&null);
            let _ = nix::unistd::dup2_stderr(&null);
        }
        let _ = std::env::set_current_dir("/");
    }
}

/// The signals that stop the server.
pub fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGHUP);
    set
}

/// Blocks the stop signals in this thread and every thread it starts later,
/// so that only [`wait_for_stop`] receives them.
pub fn block_stop_signals() -> nix::Result<()> {
    stop_signals().thread_block()
}

/// Waits for a stop signal; returns it.
pub fn wait_for_stop() -> nix::Result<Signal> {
    stop_signals().wait()
}
