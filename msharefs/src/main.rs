//! `msharefs`: the FUSE server. See `msharefs --help` and
//! `Documentation/msharefs.md`.
//!
//! Reads top-down: this file (command line, mount) → [`fs`] (FUSE dispatch)
//! → [`namespace`] (names, inodes) → [`region`] (a region's rules and
//! memory, placed by [`placement`]) → [`backing`] and [`sys`] (the few raw
//! system calls). [`broker`] hands backing descriptors to libmshare.
//! `unsafe` is denied here and allowed only in `sys`, `daemon` and
//! `hugetlb_io`, each with a `# Safety` header.
#![deny(unsafe_code)]

mod backing;
mod broker;
mod daemon;
mod fail;
mod fs;
mod hugetlb_io;
mod limits;
mod namespace;
mod options;
mod placement;
mod region;
mod sys;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fuser::{Config, MountOption, Session, SessionACL};
use log::{error, info, warn};

use crate::options::{MountFlag, Options};

const EPILOGUE: &str = "\
MOUNTPOINT may be /dev/fd/N: a /dev/fuse descriptor that a privileged helper
has already mounted (as libfuse accepts); msharefs then serves it and neither
mounts nor unmounts.

Logging goes to stderr (RUST_LOG=debug for more). In the background only
warnings before the mount is ready are shown, and nothing after, so run with
-f to keep the log.

Examples:
  msharefs /run/mshare
  msharefs -o align=2M,backing=hugetlb /run/mshare
  mount -t fuse.msharefs msharefs /run/mshare -o align=1G
  fstab:  msharefs  /run/mshare  fuse.msharefs  defaults,align=1G  0 0";

/// Mounts msharefs: a file system of shared memory regions with the kernel
/// msharefs ioctl ABI.
#[derive(Parser, Debug)]
#[command(
    name = "msharefs",
    version,
    override_usage = "msharefs [-f] [-d] [-s] [-o OPT[,OPT...]] [SOURCE] MOUNTPOINT",
    after_help = format!("{}\n{EPILOGUE}", options::help())
)]
struct Cli {
    /// Stay in the foreground instead of detaching once the mount is ready.
    #[arg(short = 'f', long = "foreground")]
    foreground: bool,
    /// Log every request; implies -f (same as -o debug).
    #[arg(short = 'd', long = "debug")]
    debug: bool,
    /// Serve requests on a single thread.
    #[arg(short = 's', long = "single-threaded")]
    single_threaded: bool,
    /// Mount options, comma separated (see below).
    #[arg(short = 'o', value_name = "OPT[,OPT...]", action = clap::ArgAction::Append)]
    options: Vec<String>,
    /// SOURCE (optional) and MOUNTPOINT: the source name (any word; shown in /proc/mounts)
    /// and the directory to mount on.
    #[arg(value_name = "[SOURCE] MOUNTPOINT", required = true, num_args = 1..=2)]
    paths: Vec<OsString>,
}

/// Where to serve: a directory to mount on, or a `/dev/fuse` descriptor
/// that a privileged helper has already mounted (`/dev/fd/N`, as libfuse
/// accepts); the server then neither mounts nor unmounts.
enum Target {
    Dir(PathBuf),
    Fd(std::os::fd::OwnedFd),
}

impl Target {
    fn parse(mountpoint: &std::path::Path) -> Result<Target, String> {
        let shown = mountpoint.display();
        if let Some(n) = mountpoint.to_str().and_then(|s| s.strip_prefix("/dev/fd/")) {
            let fd = n
                .parse()
                .map_err(|_| format!("{shown}: not a descriptor number"))?;
            return sys::fuse_device(fd).map(Target::Fd);
        }
        match std::fs::metadata(mountpoint) {
            Ok(m) if m.is_dir() => Ok(Target::Dir(mountpoint.to_path_buf())),
            Ok(_) => Err(format!("{shown}: not a directory")),
            Err(e) => Err(format!("{shown}: {e}")),
        }
    }
}

fn fuser_config(opts: &Options, source: Option<&OsString>, threads: usize) -> Config {
    let fsname = opts
        .fsname
        .clone()
        .or_else(|| source.map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "msharefs".to_string());
    let mut mount_options = vec![
        MountOption::FSName(fsname),
        MountOption::CUSTOM(format!("subtype={}", mshare_uapi::FS_SUBTYPE)),
    ];
    if opts.default_permissions {
        mount_options.push(MountOption::DefaultPermissions);
    }
    mount_options.extend(opts.flags.iter().map(|f| match f {
        MountFlag::ReadOnly => MountOption::RO,
        MountFlag::ReadWrite => MountOption::RW,
        MountFlag::Dev => MountOption::Dev,
        MountFlag::NoDev => MountOption::NoDev,
        MountFlag::Suid => MountOption::Suid,
        MountFlag::NoSuid => MountOption::NoSuid,
        MountFlag::Exec => MountOption::Exec,
        MountFlag::NoExec => MountOption::NoExec,
        MountFlag::Atime => MountOption::Atime,
        MountFlag::NoAtime => MountOption::NoAtime,
        MountFlag::Sync => MountOption::Sync,
        MountFlag::Async => MountOption::Async,
        MountFlag::DirSync => MountOption::DirSync,
    }));
    // A later flag wins over an earlier opposite one, as in mount(8).
    let mut seen: Vec<MountOption> = Vec::new();
    for o in mount_options.into_iter().rev() {
        let opposite = |a: &MountOption, b: &MountOption| {
            use MountOption::*;
            matches!(
                (a, b),
                (RO, RW)
                    | (RW, RO)
                    | (Dev, NoDev)
                    | (NoDev, Dev)
                    | (Suid, NoSuid)
                    | (NoSuid, Suid)
                    | (Exec, NoExec)
                    | (NoExec, Exec)
                    | (Atime, NoAtime)
                    | (NoAtime, Atime)
                    | (Sync, Async)
                    | (Async, Sync)
            )
        };
        if !seen.iter().any(|s| s == &o || opposite(s, &o)) {
            seen.push(o);
        }
    }
    seen.reverse();
    let mut config = Config::default();
    config.mount_options = seen;
    config.acl = if opts.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(threads);
    config.clone_fd = threads > 1;
    config
}

/// FUSE worker threads: enough that requests which wait in the kernel
/// (allocating or freeing gigabytes, reading /proc) from a few users do not
/// hold up everyone else's `open` and `close`.
fn worker_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    (4 * cpus).clamp(8, 64)
}

/// Raises the soft descriptor limit to the hard one; the limit in force.
fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => hard,
        Err(e) => {
            warn!("cannot raise RLIMIT_NOFILE from {soft} to {hard}: {e}");
            soft
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let euid = nix::unistd::geteuid();
    let mut opts = Options::defaults(euid.is_root());
    for list in &cli.options {
        if let Err(e) = opts.apply(list) {
            eprintln!("msharefs: {e}");
            return ExitCode::from(2);
        }
    }
    opts.debug |= cli.debug;
    let foreground = cli.foreground || opts.debug;

    // In the background only warnings reach the terminal (before detaching).
    let default_level = match (opts.debug, foreground) {
        (true, _) => "debug",
        (false, true) => "info",
        (false, false) => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .init();

    let (source, mountpoint) = match cli.paths.as_slice() {
        [m] => (None, PathBuf::from(m)),
        [s, m] => (Some(s), PathBuf::from(m)),
        _ => unreachable!("clap enforces 1..=2 paths"),
    };
    let target = match Target::parse(&mountpoint) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("msharefs: {e}");
            return ExitCode::from(1);
        }
    };

    // Before any thread exists: detach, then block the stop signals so
    // that every thread inherits the mask and only the waiter sees them.
    let detached = if foreground {
        None
    } else {
        match daemon::detach() {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("msharefs: cannot detach: {e}");
                return ExitCode::from(1);
            }
        }
    };
    if let Err(e) = daemon::block_stop_signals() {
        eprintln!("msharefs: cannot block signals: {e}");
        return ExitCode::from(1);
    }

    let threads = if cli.single_threaded {
        1
    } else {
        worker_threads()
    };
    let config = fuser_config(&opts, source, threads);
    let plan = limits::plan(&opts, raise_nofile());
    match &plan.lowered {
        // Asked for: say so loudly. The default: say what it is.
        Some(why) if opts.max_regions != options::DEFAULT_MAX_REGIONS => warn!("{why}"),
        Some(why) => info!("{why}"),
        None => {}
    }
    let fs = fs::MshareFs::new(
        opts.clone(),
        plan.limits,
        plan.broker_conns,
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    let broker = fs.broker();
    let session = match target {
        Target::Dir(dir) => Session::new(fs, dir, &config),
        Target::Fd(fd) => Session::from_fd(fs, fd, config.acl, config.clone()),
    };
    let mut session = match session {
        Ok(s) => s,
        Err(e) => {
            eprintln!("msharefs: cannot mount on {}: {e}", mountpoint.display());
            broker.remove_socket();
            return ExitCode::from(1);
        }
    };
    info!(
        "mounted on {} (align={}, backing={}, max_regions={}, max_regions_per_user={})",
        mountpoint.display(),
        opts.align,
        opts.backing,
        plan.limits.nodes,
        plan.limits.per_user
    );

    let mut unmounter = session.unmount_callable();
    let target = mountpoint.canonicalize().unwrap_or(mountpoint.clone());
    let exiting = broker.clone();
    std::thread::spawn(move || {
        if let Ok(sig) = daemon::wait_for_stop() {
            info!("{sig}: unmounting {}", target.display());
            if let Err(e) = unmounter.unmount() {
                info!("unmount: {e}; detaching the busy mount lazily");
                if let Err(e) = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH) {
                    error!("cannot unmount {}: {e}", target.display());
                }
            }
            exiting.remove_socket();
            std::process::exit(0);
        }
    });

    if let Some(d) = detached {
        d.ready();
    }
    let ended = session.run();
    broker.remove_socket();
    match ended {
        Ok(()) => {
            info!("unmounted; exiting");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("session ended: {e}");
            ExitCode::from(1)
        }
    }
}
