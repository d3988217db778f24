//! One line on stderr, written with `write(2)` from a buffer on the stack:
//! no lock that a fork could leave held, no allocation.

use std::fmt::Arguments;
use std::io::Write;

use crate::config::Level;

/// Writes `msharefs-preload[PID]: ARGS` if `level` is at most `wanted`.
pub fn line(wanted: Level, level: Level, args: Arguments<'_>) {
    if level > wanted || wanted == Level::Quiet {
        return;
    }
    let mut buf = [0u8; 512];
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cur, "msharefs-preload[{}]: {args}", std::process::id());
    let mut n = cur.position() as usize;
    if n == buf.len() {
        n -= 1;
    }
    buf[n] = b'\n';
    // SAFETY: writes n + 1 initialised bytes of `buf` to stderr.
    unsafe { libc::write(2, buf.as_ptr().cast(), n + 1) };
}
