//! `msharectl`: the msharefs command line for shell scripts and operators,
//! a thin layer over libmshare.
//!
//! Exit status: 0 success, 1 an operation failed (the message names it and
//! the errno), 2 bad usage. A closed stdout (`msharectl list | head`) is not
//! an error.
#![deny(unsafe_code)]

mod bench;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use libmshare::{CreateOptions, Mount};
use mshare_uapi::{parse_size, Backing, INFO_FILE_NAME};

/// Create, inspect and remove msharefs regions.
#[derive(Parser, Debug)]
#[command(name = "msharectl", version)]
struct Cli {
    /// The msharefs mount [default: $MSHARE_DIR, else the first
    /// fuse.msharefs mount, else /run/mshare].
    #[arg(short = 'd', long = "dir", value_name = "DIR", global = true)]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write the msharectl(1) man pages into DIR (tools/install.sh
    /// installs them).
    #[command(hide = true)]
    GenerateMan {
        /// Where to write them.
        dir: PathBuf,
    },
    /// Print the mount and its alignment.
    Info,
    /// List regions: name, start, size, backing, allocated memory.
    #[command(alias = "ls")]
    List,
    /// Create a region with one object over all of it, ready to map.
    Create {
        /// Region name (may contain directories that exist).
        name: String,
        /// Size, a multiple of the alignment (4096, 2M, 1G, ...).
        #[arg(value_parser = parse_size)]
        size: u64,
        /// Start address (hex with 0x, or decimal); default: the server chooses.
        #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
        start: Option<u64>,
        /// Backing [default: the mount's backing=].
        #[arg(long, value_name = "KIND")]
        backing: Option<Backing>,
        /// Permission bits, octal.
        #[arg(long, default_value = "600", value_parser = parse_mode)]
        mode: u32,
        /// Do not create the object over the whole region.
        #[arg(long)]
        no_object: bool,
    },
    /// Print one region's start, size, backing and allocated memory.
    Show {
        /// Region name.
        name: String,
    },
    /// Compare attach time, page tables and the control plane with POSIX
    /// shm, SysV hugetlb and a hugetlb memfd, side by side (root: starts a
    /// private msharefs, not the -d mount, and sizes the hugetlb pool, then
    /// puts both back).
    Bench(bench::BenchArgs),
    /// Remove regions (their memory goes with the last mapping).
    #[command(alias = "rm")]
    Remove {
        /// Region names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Why msharectl failed.
#[derive(Debug, thiserror::Error)]
enum Error {
    /// A libmshare operation failed.
    #[error(transparent)]
    Mshare(#[from] libmshare::Error),
    /// Reading the mount or writing the output failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The arguments do not fit the mount.
    #[error("{0}")]
    Usage(String),
    /// The benchmark could not run or finish.
    #[error("bench: {0}")]
    Bench(#[from] bench::BenchError),
}

impl Error {
    /// The documented exit status.
    fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            _ => 1,
        }
    }

    /// Whether the reader of our output went away (not an error).
    fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Io(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

fn parse_addr(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("'{s}' is not an address (e.g. 0x100000000)"))
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("'{s}' is not an octal mode"))
}

/// Memory allocated to the region at `path`, asked of the server now
/// (the kernel may cache `st_blocks` for a second).
fn allocated_bytes(path: &Path) -> io::Result<u64> {
    use rustix::fs::{statx, AtFlags, StatxFlags, CWD};
    let st = statx(CWD, path, AtFlags::STATX_FORCE_SYNC, StatxFlags::BLOCKS)?;
    Ok(st.stx_blocks * 512)
}

/// One line of `list` / `show`.
fn describe(mount: &Mount, name: &str) -> String {
    let path = mount.dir().join(name);
    let allocated = allocated_bytes(&path).map_or("-".to_string(), |b| b.to_string());
    match mount.open(name, true) {
        Ok(region) => {
            let backing = region.backing().map_or("?", Backing::as_str);
            match region.info() {
                Ok(i) => format!("{name}\t{:#x}\t{}\t{backing}\t{allocated}", i.start, i.size),
                Err(_) => format!("{name}\t-\t0\t{backing}\t{allocated}"),
            }
        }
        Err(e) => format!("{name}\t?\t?\t?\t{allocated}\t({e})"),
    }
}

fn regions(dir: &Path, prefix: &str, out: &mut Vec<String>) -> io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        if e.file_type()?.is_dir() {
            regions(&e.path(), &format!("{name}/"), out)?;
        } else if name != INFO_FILE_NAME {
            out.push(name);
        }
    }
    Ok(())
}

fn run(cli: Cli, out: &mut impl Write) -> Result<(), Error> {
    if let Command::GenerateMan { dir } = &cli.command {
        use clap::CommandFactory;
        return Ok(clap_mangen::generate_to(Cli::command(), dir)?);
    }
    if let Command::Bench(args) = &cli.command {
        let report = bench::run(args)?;
        if args.json {
            serde_json::to_writer_pretty(&mut *out, &report).map_err(io::Error::from)?;
            writeln!(out)?;
        } else {
            write!(out, "{}", report.table())?;
        }
        return Ok(());
    }
    let mount = Mount::find(cli.dir.as_deref())?;
    match cli.command {
        Command::GenerateMan { .. } | Command::Bench(_) => unreachable!("handled above"),
        Command::Info => {
            writeln!(out, "mount\t{}", mount.dir().display())?;
            writeln!(out, "alignment\t{}", mount.alignment())?;
        }
        Command::List => {
            let mut names = Vec::new();
            regions(mount.dir(), "", &mut names)?;
            writeln!(out, "NAME\tSTART\tSIZE\tBACKING\tALLOCATED")?;
            for name in names {
                writeln!(out, "{}", describe(&mount, &name))?;
            }
        }
        Command::Create {
            name,
            size,
            start,
            backing,
            mode,
            no_object,
        } => {
            if size == 0 || size % mount.alignment() != 0 {
                return Err(Error::Usage(format!(
                    "the size must be a non-zero multiple of the alignment ({} bytes)",
                    mount.alignment()
                )));
            }
            let opts = CreateOptions {
                backing,
                mode,
                exclusive: true,
                whole_object: !no_object,
            };
            let region = mount.create(&name, start.unwrap_or(0), size, &opts)?;
            let info = region.info()?;
            writeln!(out, "{name}\t{:#x}\t{}", info.start, info.size)?;
        }
        Command::Show { name } => {
            mount.open(&name, true)?; // report a missing region as an error
            writeln!(out, "{}", describe(&mount, &name))?;
        }
        Command::Remove { names } => {
            for name in names {
                mount.remove(&name)?;
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match run(cli, &mut out).and_then(|()| out.flush().map_err(Error::from)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("msharectl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
