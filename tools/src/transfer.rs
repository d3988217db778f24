//! `msharectl write` and `msharectl read`: data into and out of a region,
//! with a progress bar on a terminal. A write goes through a mapping of the
//! region (libmshare's, so every backing kind works, hugetlb included); a
//! read is `pread` of the region file, which the server answers from the
//! region's memory file: a hole reads as zeros and stays a hole, where a
//! mapping would allocate every page it touches.

use std::io::{self, IsTerminal, Read, Write};

use indicatif::{ProgressBar, ProgressStyle};
use libmshare::Region;

/// Bytes copied per step.
const CHUNK: usize = 1 << 20;

/// Transfers at least this large show a progress bar (on a terminal).
const BAR_FROM: u64 = 64 << 20;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The region could not be mapped.
    #[error(transparent)]
    Map(#[from] libmshare::Error),
    /// The offset or length lies outside the region.
    #[error("region '{region}' is {size} bytes: {what}")]
    Range {
        /// The region.
        region: String,
        /// Its size.
        size: u64,
        /// What does not fit.
        what: String,
    },
    /// Reading the input or writing the output failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

fn bar(len: u64, what: String) -> ProgressBar {
    if len < BAR_FROM || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    b.set_message(what);
    b
}

/// The room `[offset, size)` of `region`, checked.
fn room(region: &Region, size: u64, offset: u64) -> Result<u64, TransferError> {
    size.checked_sub(offset)
        .ok_or_else(|| TransferError::Range {
            region: region.name().to_string(),
            size,
            what: format!("offset {offset} is past its end"),
        })
}

/// Copies `input` into `region` (opened for writing) from `offset`;
/// `input_len` is the input's length where known (a regular file), checked
/// before anything is written. Returns the bytes written.
pub fn write(
    region: &Region,
    offset: u64,
    input: &mut impl Read,
    input_len: Option<u64>,
) -> Result<u64, TransferError> {
    let size = region.info()?.size;
    let room = room(region, size, offset)?;
    let too_long = |len: u64| TransferError::Range {
        region: region.name().to_string(),
        size,
        what: format!("{len} bytes of input do not fit from offset {offset} ({room} bytes left)"),
    };
    if let Some(len) = input_len.filter(|&l| l > room) {
        return Err(too_long(len));
    }
    let map = region.map()?;
    let progress = bar(input_len.unwrap_or(0), format!("write {}", region.name()));
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if done + n as u64 > room {
            return Err(too_long(done + n as u64));
        }
        map.write((offset + done) as usize, &buf[..n]);
        done += n as u64;
        progress.set_position(done);
    }
    progress.finish_and_clear();
    Ok(done)
}

/// Copies `length` bytes (default: to the end) of `region` from `offset`
/// to `out`. Returns the bytes read.
pub fn read(
    region: &Region,
    offset: u64,
    length: Option<u64>,
    out: &mut impl Write,
) -> Result<u64, TransferError> {
    let size = region.info()?.size;
    let room = room(region, size, offset)?;
    let length = length.unwrap_or(room);
    if length > room {
        return Err(TransferError::Range {
            region: region.name().to_string(),
            size,
            what: format!("{length} bytes from offset {offset} run past its end"),
        });
    }
    let progress = bar(length, format!("read {}", region.name()));
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < length {
        let want = (length - done).min(CHUNK as u64) as usize;
        let n = match nix::sys::uio::pread(region, &mut buf[..want], (offset + done) as i64) {
            Ok(0) => {
                return Err(TransferError::Range {
                    region: region.name().to_string(),
                    size,
                    what: format!("it ended at {} while being read", offset + done),
                })
            }
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::from(e).into()),
        };
        out.write_all(&buf[..n])?;
        done += n as u64;
        progress.set_position(done);
    }
    progress.finish_and_clear();
    Ok(done)
}
