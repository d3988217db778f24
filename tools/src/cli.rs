//! msharectl's command line: the clap definitions that `--help`, the man
//! pages and the completions come from.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use mshare_uapi::{parse_size, Backing};

use crate::{bench, run};

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
pub struct Cli {
    /// The msharefs mount [default: $MSHARE_DIR, else the first
    /// fuse.msharefs mount, else /run/mshare].
    #[arg(short = 'd', long = "dir", value_name = "DIR", global = true)]
    pub dir: Option<PathBuf>,
    /// Print JSON instead of text (queries, create and bench).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
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
        /// Start address (hex with 0x, decimal, or with a K, M, G, T suffix),
        /// a multiple of the alignment; default: the server chooses.
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
pub enum KsmAction {
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

fn parse_addr(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => parse_size(s).ok(),
    };
    parsed.ok_or_else(|| format!("'{s}' is not an address (e.g. 0x100000000 or 4G)"))
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("'{s}' is not an octal mode"))
}
