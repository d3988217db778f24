//! `msharectl run`: runs an unmodified program with the preload library
//! (`libmshare-preload.so`), which puts its shared memory on msharefs.
//! The configuration travels in the environment, so that children and
//! programs the command execs get the same.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use clap::Args;
use mshare_uapi::{format_size, parse_size, Backing};

/// The installed name of the preload library.
pub const LIB_NAME: &str = "libmshare-preload.so";
/// The name cargo gives it in its target directory.
const BUILT_NAME: &str = "libmshare_preload.so";
/// Overrides where the library is looked for.
pub const ENV_LIB: &str = "MSHARE_PRELOAD_LIB";

/// Options of `msharectl run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Backing of anonymous shared memory: auto (hugetlb where the server
    /// may grow the hugetlb pool, else thp), hugetlb, thp or shmem.
    /// POSIX shm objects are never hugetlb.
    #[arg(long, value_name = "KIND", default_value = "auto", value_parser = parse_backing)]
    pub backing: String,
    /// What to take over, comma-separated: anon (mmap with
    /// MAP_SHARED|MAP_ANONYMOUS), shm (shm_open, shm_unlink). SysV
    /// shared memory stays with libc.
    #[arg(long, value_name = "LIST", default_value = "anon,shm", value_parser = parse_take)]
    pub take: String,
    /// Anonymous shared mappings smaller than SIZE stay with libc.
    #[arg(long, value_name = "SIZE", default_value = "2M", value_parser = parse_size)]
    pub min_size: u64,
    /// The preload library [default: $MSHARE_PRELOAD_LIB, else
    /// libmshare-preload.so in the lib directory beside msharectl's bin].
    #[arg(long, value_name = "PATH")]
    pub preload: Option<PathBuf>,
    /// Say nothing on stderr when a call goes to libc.
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Also say on stderr what each call taken over got.
    #[arg(short, long)]
    pub verbose: bool,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<OsString>,
}

/// Why `run` could not start the command.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No preload library was found.
    #[error("cannot find {LIB_NAME} (install it with tools/install-libmshare.sh, or name it with --preload PATH): {0}")]
    NoLibrary(String),
    /// The command could not be executed.
    #[error("cannot run {command}: {source}")]
    Exec {
        /// The command.
        command: String,
        /// Why.
        source: std::io::Error,
    },
}

impl RunError {
    /// The exit status, as env(1) and nice(1) give it: 127 for a command
    /// that is not there, 126 for one that cannot run, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Exec { source, .. } if source.kind() == std::io::ErrorKind::NotFound => 127,
            RunError::Exec { .. } => 126,
            RunError::NoLibrary(_) => 1,
        }
    }
}

fn parse_backing(s: &str) -> Result<String, String> {
    if s == "auto" || s.parse::<Backing>().is_ok() {
        Ok(s.to_string())
    } else {
        Err(format!("'{s}' is not auto, hugetlb, thp or shmem"))
    }
}

fn parse_take(s: &str) -> Result<String, String> {
    for t in s.split(',') {
        match t {
            "anon" | "shm" => {}
            "sysv" => {
                return Err(
                    "SysV shared memory stays with libc: its attach count and key \
                            namespace are the kernel's (see Documentation/libmshare.md)"
                        .into(),
                )
            }
            other => return Err(format!("'{other}' is not anon or shm")),
        }
    }
    Ok(s.to_string())
}

/// Where the preload library is: `explicit`, else `$MSHARE_PRELOAD_LIB`,
/// else beside this executable (installed: `../lib/`; built: the same
/// target directory).
pub fn find_library(explicit: Option<&Path>) -> Result<PathBuf, RunError> {
    let env = std::env::var_os(ENV_LIB).map(PathBuf::from);
    let mut tried = Vec::new();
    let candidates: Vec<PathBuf> = match explicit.map(Path::to_path_buf).or(env) {
        Some(p) => vec![p],
        None => {
            let exe = std::env::current_exe().map_err(|e| RunError::NoLibrary(e.to_string()))?;
            let dir = exe.parent().unwrap_or(Path::new("/"));
            vec![dir.join("../lib").join(LIB_NAME), dir.join(BUILT_NAME)]
        }
    };
    for c in candidates {
        match c.canonicalize() {
            Ok(p) if p.is_file() => return Ok(p),
            _ => tried.push(c.display().to_string()),
        }
    }
    Err(RunError::NoLibrary(format!("not at {}", tried.join(", "))))
}

/// The environment the command gets (besides what it has).
pub fn environment(args: &RunArgs, lib: &Path, dir: Option<&Path>) -> Vec<(String, OsString)> {
    let mut preload = OsString::from(lib);
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|o| !o.is_empty()) {
        preload.push(" ");
        preload.push(old);
    }
    let log = match (args.quiet, args.verbose) {
        (true, _) => "quiet",
        (_, true) => "verbose",
        _ => "warn",
    };
    let mut env = vec![
        ("LD_PRELOAD".to_string(), preload),
        ("MSHARE_PRELOAD_BACKING".into(), args.backing.clone().into()),
        ("MSHARE_PRELOAD_TAKE".into(), args.take.clone().into()),
        (
            "MSHARE_PRELOAD_MIN_SIZE".into(),
            format_size(args.min_size).into(),
        ),
        ("MSHARE_PRELOAD_LOG".into(), log.into()),
    ];
    if let Some(d) = dir {
        env.push(("MSHARE_DIR".into(), d.as_os_str().to_os_string()));
    }
    env
}

/// Execs the command with the library (returns only on failure).
pub fn run(args: &RunArgs, dir: Option<&Path>) -> RunError {
    let lib = match find_library(args.preload.as_deref()) {
        Ok(l) => l,
        Err(e) => return e,
    };
    let dir = dir.map(|d| d.canonicalize().unwrap_or_else(|_| d.to_path_buf()));
    let mut cmd = std::process::Command::new(&args.command[0]);
    cmd.args(&args.command[1..])
        .envs(environment(args, &lib, dir.as_deref()));
    RunError::Exec {
        command: args.command[0].to_string_lossy().into_owned(),
        source: cmd.exec(),
    }
}
