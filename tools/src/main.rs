//! `msharectl`: the msharefs command line for shell scripts and operators,
//! a thin layer over libmshare.
//!
//! Exit status: 0 success, 1 an operation failed (the message names it,
//! the region and the errno), 2 bad usage, 3 no such region, 4 the region
//! exists already. A closed stdout (`msharectl list | head`) is not an
//! error.
#![deny(unsafe_code)]

mod bench;
mod kept;
mod ksm;
mod mappers;
mod names;
mod pool;
mod procfs;
mod regions;
mod run;
mod stat;
mod transfer;

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use libmshare::{CreateOptions, Mount};
use mshare_uapi::{parse_size, Backing, HUGE_PAGE_SIZE};
use nix::errno::Errno;
use serde::Serialize;

use crate::regions::RegionReport;

const EPILOGUE: &str = "\
Sizes take K, M, G, T suffixes (4096, 2M, 1G). Queries print tab-separated
text, or JSON with --json; names are escaped in text (\\t, \\n, \\\\, \\xHH) so
that no name can forge a row.

Exit status: 0 success; 1 an operation failed; 2 bad usage; 3 no such region;
4 the region exists already.";

/// Create, fill, inspect and remove msharefs regions; see who maps them,
/// the hugetlb pool and KSM.
#[derive(Parser, Debug)]
#[command(name = "msharectl", version, after_help = EPILOGUE)]
struct Cli {
    /// The msharefs mount [default: $MSHARE_DIR, else the first
    /// fuse.msharefs mount, else /run/mshare].
    #[arg(short = 'd', long = "dir", value_name = "DIR", global = true)]
    dir: Option<PathBuf>,
    /// Print JSON instead of text (queries, create and bench).
    #[arg(long, global = true)]
    json: bool,
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
    /// Write bash, zsh and fish completions into DIR (tools/install.sh
    /// installs them).
    #[command(hide = true)]
    GenerateCompletions {
        /// Where to write them.
        dir: PathBuf,
    },
    /// Print the mount and its alignment.
    Info,
    /// List regions: name, start, size, backing, allocated memory.
    #[command(alias = "ls")]
    List {
        /// Also who maps each region: processes, resident memory, page
        /// tables, and what 4 KiB pages would cost.
        #[arg(short = 'l', long = "long")]
        long: bool,
    },
    /// Create a region with one object over all of it, ready to map.
    /// Quiet on success (--json prints the region).
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
        /// Permission bits, octal; set exactly (the umask does not apply).
        #[arg(long, default_value = "600", value_parser = parse_mode)]
        mode: u32,
        /// Do not create the object over the whole region.
        #[arg(long)]
        no_object: bool,
    },
    /// Print one region: layout, memory, and the processes that map it
    /// (pid, uid, bytes mapped and resident, page tables).
    Show {
        /// Region name.
        name: String,
    },
    /// Copy standard input into a region (from --offset); quiet on
    /// success.
    Write {
        /// Region name.
        name: String,
        /// Where in the region to start, in bytes.
        #[arg(long, default_value = "0", value_parser = parse_size)]
        offset: u64,
    },
    /// Copy a region (from --offset, --length bytes or to its end) to
    /// standard output.
    Read {
        /// Region name.
        name: String,
        /// Where in the region to start, in bytes.
        #[arg(long, default_value = "0", value_parser = parse_size)]
        offset: u64,
        /// How many bytes [default: to the end of the region].
        #[arg(long, value_parser = parse_size)]
        length: Option<u64>,
    },
    /// Remove regions (their memory goes with the last mapping).
    #[command(alias = "rm")]
    Remove {
        /// Region names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Show the hugetlb pool: the kernel's counts (2 MiB pages), the
    /// server's policy and ceiling, and the pages the server added.
    Pool {
        /// Have the server grow the pool now so that SIZE is free for
        /// hugetlb regions (root, hugetlb_pool=auto).
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        reserve: Option<u64>,
    },
    /// Kernel same-page merging of private memory: show it, run a
    /// command with it, start or stop the scanner.
    Ksm {
        #[command(subcommand)]
        action: Option<KsmAction>,
    },
    /// One line: the memory msharefs regions and KSM save together.
    Stat,
    /// List the regions that stopped servers kept with no server now
    /// (stopped by a signal or killed: a server started on the same mount
    /// point adopts them): the mount point, regions, memory held and
    /// since when. Needs no mount.
    Kept {
        /// Free them (root): their memory (what processes still map stays
        /// theirs until they unmap it) and the hugetlb pages their server
        /// added. Refused while a server holds them.
        #[arg(long, requires = "which")]
        free: bool,
        /// With --free: every one listed.
        #[arg(long, requires = "free", conflicts_with = "paths", group = "which")]
        all: bool,
        /// With --free: the mount points (or state directories) whose
        /// kept regions to free.
        #[arg(value_name = "MOUNTPOINT", requires = "free", group = "which")]
        paths: Vec<PathBuf>,
    },
    /// Run an unmodified program with its shared memory on msharefs: the
    /// preload library takes over anonymous shared mmap and shm_open
    /// (see --take); anything it cannot serve goes to libc, with one line
    /// on stderr.
    Run(run::RunArgs),
    /// Compare attach time, page tables and the control plane with POSIX
    /// shm, SysV hugetlb and a hugetlb memfd, side by side (root: starts a
    /// private msharefs, not the -d mount, and sizes the hugetlb pool, then
    /// puts both back).
    Bench(bench::BenchArgs),
}

#[derive(Subcommand, Debug)]
enum KsmAction {
    /// Show the scanner, what it merged and saved, and the processes it
    /// merges for, most merged first (the default).
    Show,
    /// Run COMMAND with merging on for it and its children
    /// (prctl(PR_SET_MEMORY_MERGE), kept across fork and exec).
    Run {
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<OsString>,
    },
    /// Start the scanner (root).
    Start {
        /// Pages to scan per wake-up.
        #[arg(long, value_name = "N")]
        pages_to_scan: Option<u64>,
        /// Milliseconds between wake-ups.
        #[arg(long, value_name = "MS")]
        sleep_millisecs: Option<u64>,
    },
    /// Stop the scanner (root); merged pages stay merged unless
    /// --unmerge.
    Stop {
        /// Unmerge every merged page first.
        #[arg(long)]
        unmerge: bool,
    },
}

/// Why msharectl failed.
#[derive(Debug, thiserror::Error)]
enum Error {
    /// A libmshare operation failed.
    #[error(transparent)]
    Mshare(#[from] libmshare::Error),
    /// Creating a hugetlb region failed for want of huge pages.
    #[error("{source}: {hint}")]
    Pages {
        /// What failed.
        source: libmshare::Error,
        /// The pool's numbers and what to do.
        hint: String,
    },
    /// Reading the mount or writing the output failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The arguments do not fit the mount.
    #[error("{0}")]
    Usage(String),
    /// The hugetlb pool could not be read or grown.
    #[error(transparent)]
    Pool(#[from] pool::PoolError),
    /// Kept regions could not be freed.
    #[error("kept: {0}")]
    Kept(#[from] kept::KeptError),
    /// A KSM operation failed.
    #[error("ksm: {0}")]
    Ksm(#[from] ksm::KsmError),
    /// `read` or `write` failed.
    #[error(transparent)]
    Transfer(#[from] transfer::TransferError),
    /// The benchmark could not run or finish.
    #[error("bench: {0}")]
    Bench(#[from] bench::BenchError),
    /// `run` could not start the command.
    #[error(transparent)]
    Run(#[from] run::RunError),
}

impl Error {
    /// The documented exit status.
    fn exit_code(&self) -> u8 {
        let region_errno = match self {
            Error::Mshare(e)
            | Error::Transfer(transfer::TransferError::Map(e))
            | Error::Pages { source: e, .. } => match e {
                libmshare::Error::Path { .. } | libmshare::Error::Region { .. } => Some(e.errno()),
                _ => None,
            },
            _ => None,
        };
        match (self, region_errno) {
            (Error::Run(e), _) => e.exit_code(),
            (Error::Usage(_), _) | (Error::Transfer(transfer::TransferError::Range { .. }), _) => 2,
            (_, Some(Errno::ENOENT)) => 3,
            (_, Some(Errno::EEXIST)) => 4,
            _ => 1,
        }
    }

    /// Whether the reader of our output went away (not an error).
    fn is_broken_pipe(&self) -> bool {
        let io = match self {
            Error::Io(e) | Error::Transfer(transfer::TransferError::Io(e)) => e,
            _ => return false,
        };
        io.kind() == io::ErrorKind::BrokenPipe
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

/// Prints `value` as JSON or as `text()`.
fn emit<T: Serialize>(
    out: &mut impl Write,
    json: bool,
    value: &T,
    text: impl FnOnce(&T) -> String,
) -> Result<(), Error> {
    if json {
        serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::from)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", text(value))?;
    }
    Ok(())
}

/// Says on stderr that `n` processes could not be looked at, and so `may`
/// (map regions too, have merged pages too) without being counted.
fn warn_uninspected(n: usize, may: &str) {
    if n > 0 {
        let hint = if nix::unistd::geteuid().is_root() {
            ""
        } else {
            "; run as root to count them"
        };
        let processes = if n == 1 { "process" } else { "processes" };
        eprintln!(
            "msharectl: {n} {processes} could not be inspected (permission denied) and may \
             {may}{hint}"
        );
    }
}

/// What processes that could not be inspected may do.
const MAP_TOO: &str = "map regions too";

/// Every region of `mount`, as reported.
fn all_regions(mount: &Mount) -> Result<Vec<RegionReport>, Error> {
    let mut names = Vec::new();
    regions::names(mount.dir(), "".as_ref(), &mut names)?;
    Ok(names
        .iter()
        .map(|raw| regions::report(mount, &raw.to_string_lossy(), raw))
        .collect())
}

fn generate_completions(dir: &Path) -> io::Result<()> {
    use clap_complete::Shell;
    std::fs::create_dir_all(dir)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), "msharectl", dir)?;
    }
    Ok(())
}

/// Creates region `name` with the mode bits exactly as given.
fn create(
    mount: &Mount,
    name: &str,
    start: u64,
    size: u64,
    opts: &CreateOptions,
) -> Result<(), Error> {
    if size == 0 || size % mount.alignment() != 0 {
        return Err(Error::Usage(format!(
            "the size must be a non-zero multiple of the alignment ({} bytes)",
            mount.alignment()
        )));
    }
    // `--mode` means the bits given, as `install -m` and `mkdir -m` do.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let made = mount.create(name, start, size, opts);
    nix::sys::stat::umask(old);
    match made {
        Ok(_) => Ok(()),
        Err(e)
            if e.errno() == Errno::ENOMEM
                && opts.backing != Some(Backing::Thp)
                && opts.backing != Some(Backing::Shmem) =>
        {
            match pool::read(mount.dir()) {
                Ok(p) => Err(Error::Pages {
                    source: e,
                    hint: pool::shortfall(&p, size.div_ceil(HUGE_PAGE_SIZE)),
                }),
                Err(_) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

fn stat(mount: &Mount) -> Result<stat::Stat, Error> {
    let mut all = all_regions(mount)?;
    let uninspected = regions::add_usage(&mut all);
    let ksm_saved = ksm::read().ok().map(|k| k.saved());
    let kept = kept::orphans();
    let kept = (
        kept.iter().map(|k| k.regions).sum(),
        kept.iter().map(|k| k.bytes).sum(),
    );
    Ok(stat::Stat::of(&all, ksm_saved, uninspected, kept))
}

/// The mount and its alignment.
#[derive(Debug, Serialize)]
struct Info {
    mount: PathBuf,
    alignment: u64,
}

fn ksm_command(action: Option<KsmAction>, json: bool, out: &mut impl Write) -> Result<(), Error> {
    match action.unwrap_or(KsmAction::Show) {
        KsmAction::Show => {
            let k = ksm::read()?;
            emit(out, json, &k, ksm::Ksm::table)?;
            warn_uninspected(k.uninspected, "have merged pages too");
        }
        KsmAction::Run { command } => return Err(ksm::run(&command).into()),
        KsmAction::Start {
            pages_to_scan,
            sleep_millisecs,
        } => ksm::control(ksm::Control::Start {
            pages_to_scan,
            sleep_millisecs,
        })?,
        KsmAction::Stop { unmerge: false } => ksm::control(ksm::Control::Stop)?,
        KsmAction::Stop { unmerge: true } => ksm::control(ksm::Control::StopUnmerge)?,
    }
    Ok(())
}

fn kept_command(
    free: bool,
    all: bool,
    paths: &[PathBuf],
    json: bool,
    out: &mut impl Write,
) -> Result<(), Error> {
    if !free {
        return emit(out, json, &kept::orphans(), |k| kept::table(k));
    }
    let freed = kept::free(paths, all)?;
    emit(out, json, &freed, |freed| {
        freed
            .iter()
            .map(|k| {
                format!(
                    "freed {} regions ({}) kept in {}\n",
                    k.regions,
                    indicatif::BinaryBytes(k.bytes),
                    k.state_dir.display()
                )
            })
            .collect()
    })
}

fn run(cli: Cli, out: &mut impl Write) -> Result<(), Error> {
    let json = cli.json;
    match cli.command {
        Command::GenerateMan { dir } => {
            std::fs::create_dir_all(&dir)?;
            return Ok(clap_mangen::generate_to(Cli::command(), dir)?);
        }
        Command::GenerateCompletions { dir } => return Ok(generate_completions(&dir)?),
        Command::Bench(args) => {
            let report = bench::run(&args)?;
            return emit(out, json, &report, |r| r.table());
        }
        Command::Ksm { action } => return ksm_command(action, json, out),
        Command::Kept { free, all, paths } => return kept_command(free, all, &paths, json, out),
        Command::Run(args) => return Err(run::run(&args, cli.dir.as_deref()).into()),
        _ => {}
    }
    let mount = Mount::find(cli.dir.as_deref())?;
    match cli.command {
        Command::GenerateMan { .. }
        | Command::GenerateCompletions { .. }
        | Command::Bench(_)
        | Command::Ksm { .. }
        | Command::Kept { .. }
        | Command::Run(_) => unreachable!("handled above"),
        Command::Info => {
            let info = Info {
                mount: mount.dir().to_path_buf(),
                alignment: mount.alignment(),
            };
            emit(out, json, &info, |i| {
                format!("mount\t{}\nalignment\t{}\n", i.mount.display(), i.alignment)
            })?;
        }
        Command::List { long } => {
            let mut all = all_regions(&mount)?;
            let uninspected = if long {
                regions::add_usage(&mut all)
            } else {
                0
            };
            emit(out, json, &all, |all| {
                let mut s = format!("{}\n", RegionReport::header(long));
                for r in all {
                    s.push_str(&r.row());
                    s.push('\n');
                }
                s
            })?;
            warn_uninspected(uninspected, MAP_TOO);
        }
        Command::Create {
            name,
            size,
            start,
            backing,
            mode,
            no_object,
        } => {
            let opts = CreateOptions {
                backing,
                mode,
                exclusive: true,
                whole_object: !no_object,
            };
            create(&mount, &name, start.unwrap_or(0), size, &opts)?;
            if json {
                let r = regions::report(&mount, &name, name.as_ref());
                emit(out, json, &r, |_| String::new())?;
            }
        }
        Command::Show { name } => {
            // A missing region is an error; one this user may not open is
            // still shown (its memory and who maps it).
            let path = mount.path(&name)?;
            std::fs::symlink_metadata(&path).map_err(|e| libmshare::Error::Path {
                op: "looking up",
                path,
                errno: libmshare::errno_of(&e),
            })?;
            let mut r = [regions::report(&mount, &name, name.as_ref())];
            let uninspected = regions::add_usage(&mut r);
            emit(out, json, &r[0], RegionReport::details)?;
            warn_uninspected(uninspected, MAP_TOO);
        }
        Command::Write { name, offset } => {
            let region = mount.open(&name, false)?;
            let stdin = io::stdin();
            let len = nix::sys::stat::fstat(&stdin)
                .ok()
                .filter(|s| s.st_mode & libc::S_IFMT == libc::S_IFREG)
                .map(|s| s.st_size as u64);
            transfer::write(&region, offset, &mut stdin.lock(), len)?;
        }
        Command::Read {
            name,
            offset,
            length,
        } => {
            let region = mount.open(&name, true)?;
            transfer::read(&region, offset, length, out)?;
        }
        Command::Remove { names } => {
            for name in names {
                mount.remove(&name)?;
            }
        }
        Command::Pool { reserve } => {
            if let Some(size) = reserve {
                pool::reserve(mount.dir(), size)?;
            } else {
                emit(out, json, &pool::read(mount.dir())?, pool::Pool::table)?;
            }
        }
        Command::Stat => {
            let s = stat(&mount)?;
            emit(out, json, &s, stat::Stat::line)?;
            warn_uninspected(s.uninspected, MAP_TOO);
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
