//! `msharefs`: the FUSE server's command line. See `msharefs --help` and
//! `Documentation/msharefs.md`; the server itself is the `msharefs` library.
#![deny(unsafe_code)]

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use fuser::{Config, MountOption, Session, SessionACL};
use log::{error, info, warn};
use msharefs::mount::{self, OurMount};
use msharefs::{backing, daemon, fs, hugepool, limits, notify, options, state, stop, sys, uring};

use msharefs::options::{MountFlag, Options, Uring};

const EPILOGUE: &str = "\
Regions outlive the server: they are kept in the state directory (see
state_dir), and a server started on the same mount point adopts them, after a
crash too (a dead mount left on MOUNTPOINT is detached first). SIGTERM, SIGINT
and SIGHUP unmount and keep the regions for the next server; `umount
MOUNTPOINT` frees every region, also when a signal follows it; -o fresh
starts empty; `msharectl kept` lists and frees regions kept with no server. Under systemd
(Type=notify) the server says READY=1 once the mount is up.

MOUNTPOINT may be /dev/fd/N: a /dev/fuse descriptor that a privileged helper
has already mounted (as libfuse accepts); msharefs then serves it and neither
mounts nor unmounts, and keeps regions only with -o state_dir=DIR.

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
    #[arg(
        value_name = "[SOURCE] MOUNTPOINT",
        required_unless_present = "generate_man",
        num_args = 1..=2
    )]
    paths: Vec<OsString>,
    /// Write the msharefs(8) man page into DIR and exit (tools/install.sh
    /// installs it).
    #[arg(
        long = "generate-man",
        value_name = "DIR",
        hide = true,
        exclusive = true
    )]
    generate_man: Option<PathBuf>,
}

/// Where to serve: a directory to mount on, or a `/dev/fuse` descriptor
/// that a privileged helper has already mounted (`/dev/fd/N`, as libfuse
/// accepts); the server then neither mounts nor unmounts.
enum Target {
    Dir(PathBuf),
    /// A mount point whose server died (`ENOTCONN`, or `ECONNABORTED` for
    /// a request that was waiting on the dead server's io_uring queue).
    Dead(PathBuf),
    Fd(std::os::fd::OwnedFd),
}

/// How long the kernel may take to tear down the io_uring queues of a
/// server that died, before its mount answers `ENOTCONN`.
const TEARDOWN: std::time::Duration = std::time::Duration::from_secs(5);

impl Target {
    fn parse(mountpoint: &std::path::Path) -> Result<Target, String> {
        let shown = mountpoint.display();
        if let Some(n) = mountpoint.to_str().and_then(|s| s.strip_prefix("/dev/fd/")) {
            let fd = n
                .parse()
                .map_err(|_| format!("{shown}: not a descriptor number"))?;
            return sys::fuse_device(fd).map(Target::Fd);
        }
        let path = absolute(mountpoint).map_err(|e| format!("{shown}: {e}"))?;
        // Asked of the file system now: a dead FUSE mount answers from
        // the attributes the kernel caches until it is asked (ENOTCONN).
        use rustix::fs::{statx, AtFlags, FileType, StatxFlags, CWD};
        use rustix::io::Errno;
        let ask = || statx(CWD, &path, AtFlags::STATX_FORCE_SYNC, StatxFlags::TYPE);
        let mut answer = ask();
        // Just after its server died, a request that reaches the dead
        // server's io_uring queues before the kernel has torn them down
        // ends ECANCELED (its task is gone) or EFAULT (so is its memory);
        // asked again, the mount answers ENOTCONN once the teardown is done.
        let deadline = std::time::Instant::now() + TEARDOWN;
        while matches!(answer, Err(Errno::CANCELED | Errno::FAULT))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
            answer = ask();
        }
        match answer {
            Ok(st) if FileType::from_raw_mode(st.stx_mode.into()) == FileType::Directory => {
                Ok(Target::Dir(path))
            }
            Ok(_) => Err(format!("{shown}: not a directory")),
            // ECONNREFUSED: a connection whose server failed before it
            // answered the kernel's INIT, as dead as the others.
            Err(Errno::NOTCONN | Errno::CONNABORTED | Errno::CONNREFUSED) => Ok(Target::Dead(path)),
            Err(e) => Err(format!("{shown}: {e}")),
        }
    }

    /// The mount point, where it is known.
    fn dir(&self) -> Option<&Path> {
        match self {
            Target::Dir(d) | Target::Dead(d) => Some(d),
            Target::Fd(_) => None,
        }
    }
}

/// `p` made absolute without resolving its last component (which may be a
/// dead mount that cannot be looked at).
fn absolute(p: &Path) -> std::io::Result<PathBuf> {
    let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
        return p.canonicalize();
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    Ok(parent.canonicalize()?.join(name))
}

/// Detaches the dead msharefs mount on `dir` that a killed server left.
fn detach_dead(dir: &Path) -> Result<(), String> {
    let shown = dir.display();
    let began = std::time::Instant::now();
    if !mount::msharefs_on(dir) {
        return Err(format!(
            "{shown}: not connected (a dead mount that is not msharefs's: unmount it first)"
        ));
    }
    let looked = began.elapsed();
    nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| format!("cannot detach the dead mount on {shown}: {e}"))?;
    info!("detached the dead msharefs mount on {shown} that a previous server left");
    // Both wait on the kernel's mount table; say so when that was slow
    // (a restart under load once took 11 s here or just before).
    if began.elapsed() > std::time::Duration::from_secs(1) {
        warn!(
            "detaching took {:.1} s ({:.1} s reading the mount table)",
            began.elapsed().as_secs_f64(),
            looked.as_secs_f64()
        );
    }
    Ok(())
}

/// What a server without a state directory means for libmshare.
const NO_MEMORY_FILES: &str = "Without memory files in a state directory, libmshare attaches \
     thp and shmem regions only through the region file (FUSE passthrough, which needs \
     CAP_SYS_ADMIN) and hugetlb regions not at all";

/// Opens the state directory for a server on `target`: the one `state_dir=`
/// names, else the mount point's default. `None` (regions do not outlive
/// the server, and the log says why): a `/dev/fd/N` mount without
/// `state_dir=`, or a server that may not make the default directory.
fn open_state(
    opts: &options::Options,
    target: &Target,
) -> Result<Option<(state::StateDir, state::Snapshot)>, String> {
    let (path, explicit) = match (&opts.state_dir, target.dir()) {
        (Some(p), _) => (p.clone(), true),
        (None, Some(dir)) => (state::default_path(dir), false),
        (None, None) => {
            warn!(
                "regions will not outlive this server: give -o state_dir=DIR to keep them. {NO_MEMORY_FILES}"
            );
            return Ok(None);
        }
    };
    if !explicit && !nix::unistd::geteuid().is_root() {
        warn!(
            "regions will not outlive this server: only root may keep them in {}. {NO_MEMORY_FILES}",
            path.display()
        );
        return Ok(None);
    }
    state::StateDir::open(&path, opts.align, opts.fresh).map(Some)
}

fn fuser_config(opts: &Options, source: Option<&OsString>, threads: usize) -> Config {
    let fsname = mount::source_name(opts, source.map(OsString::as_os_str));
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

/// `hugetlb_max=` in 2 MiB pages, on this machine.
fn hugetlb_max_pages(opts: &Options) -> u64 {
    let mem_total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024);
    opts.hugetlb_max.bytes(mem_total) / mshare_uapi::HUGE_PAGE_SIZE
}

/// How the mount on a directory was made.
enum Mounted {
    /// By the server itself (see [`mount`]).
    Ours(OurMount),
    /// By fuser, through `fusermount3`, for a server that may not mount.
    Fuser(Option<OurMount>),
}

/// Mounts on `dir` and starts the session on the new connection: with the
/// server's own mount where it may mount, else with fuser's.
fn serve_on(
    dir: &Path,
    fs: Arc<fs::MshareFs>,
    opts: &Options,
    source: Option<&OsString>,
    config: &Config,
) -> std::io::Result<(Session<fs::Mounted>, Option<Mounted>)> {
    let name = mount::source_name(opts, source.map(OsString::as_os_str));
    match mount::mount(dir, opts, &name) {
        Ok(dev) => {
            let ours = OurMount::find(dir).ok_or_else(|| {
                std::io::Error::other("the new mount is not in /proc/self/mountinfo")
            });
            let session = ours.and_then(|ours| {
                Session::from_fd(fs::Mounted(fs), dev, config.acl, config.clone())
                    .map(|s| (s, Some(Mounted::Ours(ours))))
            });
            if session.is_err() {
                let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
            }
            session
        }
        Err(nix::errno::Errno::EPERM) => {
            info!("this process may not mount: mounting through fusermount3");
            let session = Session::new(fs::Mounted(fs), dir, config)?;
            Ok((session, Some(Mounted::Fuser(OurMount::find(dir)))))
        }
        Err(e) => Err(e.into()),
    }
}

/// Makes sure the kernel offers FUSE over io_uring to the coming mount:
/// `auto` and `on` turn `fuse.enable_uring` on (which lets connections
/// that ask for io_uring have it, and changes nothing for the others);
/// `auto` goes on with `/dev/fuse` where that fails, `on` fails the mount.
fn prepare_uring(mode: Uring) -> Result<(), String> {
    if mode == Uring::Off || uring::kernel_enabled() {
        return Ok(());
    }
    match uring::enable_in_kernel() {
        Ok(()) => {
            info!("io_uring: turned on {}", uring::ENABLE_PARAM);
            Ok(())
        }
        Err(e) if mode == Uring::Auto => {
            info!(
                "io_uring=auto: cannot turn on {} ({e}); requests are read from /dev/fuse",
                uring::ENABLE_PARAM
            );
            Ok(())
        }
        Err(e) => Err(format!(
            "io_uring=on: cannot turn on {}: {e}",
            uring::ENABLE_PARAM
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(dir) = &cli.generate_man {
        use clap::CommandFactory;
        let man = clap_mangen::Man::new(Cli::command()).section("8");
        return match std::fs::create_dir_all(dir).and_then(|()| man.generate_to(dir)) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("msharefs: {e}");
                ExitCode::from(1)
            }
        };
    }
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

    let mut state = match open_state(&opts, &target) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("msharefs: {e}");
            return ExitCode::from(1);
        }
    };
    let target = match target {
        Target::Dead(dir) => {
            if let Err(e) = detach_dead(&dir) {
                eprintln!("msharefs: {e}");
                return ExitCode::from(1);
            }
            Target::Dir(dir)
        }
        t => t,
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
    if let (Some(_), Some((dir, _))) = (&detached, &mut state) {
        dir.write_pid();
    }
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
    let queue_fds = match opts.io_uring {
        options::Uring::Off => 0,
        _ => uring::most_ring_fds(opts.io_uring_q_depth),
    };
    let nofile = raise_nofile();
    let plan = limits::plan(&opts, nofile, queue_fds);
    // Before the first thread: every region holds a descriptor.
    sys::presize_fd_table(nofile.min(1 << 16));
    match &plan.lowered {
        // Asked for: say so loudly. The default: say what it is.
        Some(why) if opts.max_regions != options::DEFAULT_MAX_REGIONS => warn!("{why}"),
        Some(why) => info!("{why}"),
        None => {}
    }
    let (journal, kinds) = match &state {
        Some((dir, snap)) => match dir.journal(snap, opts.align) {
            Ok(j) => (j, dir.kind_dirs()),
            Err(e) => {
                eprintln!("msharefs: {e}");
                return ExitCode::from(1);
            }
        },
        None => (state::Journal::volatile(), Vec::new()),
    };
    let hugetlb_max = hugetlb_max_pages(&opts);
    let pool = std::sync::Arc::new(hugepool::HugePool::new(
        opts.hugetlb_pool,
        hugetlb_max,
        state
            .as_ref()
            .map(|(dir, _)| dir.path().join(hugepool::RECORD_FILE)),
        opts.fresh,
    ));
    if opts.hugetlb_pool == mshare_uapi::PoolPolicy::Auto {
        let pool = pool.clone();
        std::thread::Builder::new()
            .name("hugetlb-pool".into())
            .spawn(move || loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                pool.tidy();
            })
            .ok();
    }
    let fs = fs::MshareFs::new(
        opts.clone(),
        plan.limits,
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        ),
        backing::BackingStore::new(kinds),
        (journal, pool.clone()),
    );
    let state = match state.map(|(dir, snap)| (fs.adopt(&snap), dir)) {
        Some((adopted, _)) if !adopted.refused.is_empty() => {
            eprintln!(
                "msharefs: cannot open the memory of {} kept regions ({}); nothing was changed. \
                 The server opens memory files that carry their regions' owners and modes: \
                 it needs CAP_DAC_OVERRIDE, CAP_CHOWN and CAP_FOWNER",
                adopted.refused.len(),
                adopted.refused.join("; ")
            );
            return ExitCode::from(1);
        }
        Some((adopted, dir)) => {
            let orphans = dir.remove_files(&adopted.regions);
            if orphans > 0 {
                info!("freed the memory of {orphans} regions that were removed before the previous server stopped");
            }
            info!("regions are kept in {}", dir.path().display());
            Some(dir)
        }
        None => None,
    };
    let notifier = fs.notifier_slot();
    let fs = std::sync::Arc::new(fs);
    if let Err(e) = fs.start_preload_support() {
        warn!("regions of anon/ will not be removed when nothing maps them: {e}");
    }
    if let Err(e) = prepare_uring(opts.io_uring) {
        eprintln!("msharefs: {e}");
        return ExitCode::from(1);
    }
    let mounted = match target {
        Target::Dir(dir) => serve_on(&dir, fs.clone(), &opts, source, &config),
        Target::Fd(fd) => Session::from_fd(fs::Mounted(fs.clone()), fd, config.acl, config.clone())
            .map(|s| (s, None)),
        Target::Dead(_) => unreachable!("detached above"),
    };
    let (mut session, ours) = match mounted {
        Ok(s) => s,
        Err(e) => {
            eprintln!("msharefs: cannot mount on {}: {e}", mountpoint.display());
            uring::restore_kernel_switch();
            return ExitCode::from(1);
        }
    };
    let _ = notifier.set(session.notifier());
    if let Err(e) = session
        .as_fd()
        .try_clone_to_owned()
        .and_then(|dev| fs.set_device(dev))
    {
        eprintln!("msharefs: cannot give the connection's /dev/fuse descriptor to its queues: {e}");
        uring::restore_kernel_switch();
        return ExitCode::from(1);
    }
    info!(
        "mounted on {} (align={}, backing={}, max_regions={}, max_regions_per_user={}, hugetlb_pool={}, hugetlb_max={} pages)",
        mountpoint.display(),
        opts.align,
        opts.backing,
        plan.limits.nodes,
        plan.limits.per_user,
        opts.hugetlb_pool,
        hugetlb_max
    );

    if let Some(Mounted::Ours(m) | Mounted::Fuser(Some(m))) = &ours {
        fs.set_mount_dev(m.dev);
    }
    let unmounter = match ours {
        Some(Mounted::Ours(m)) => stop::Unmounter::Ours(m),
        Some(Mounted::Fuser(m)) => stop::Unmounter::Fuser(session.unmount_callable(), m),
        None => stop::Unmounter::Helper,
    };
    let stop = std::sync::Arc::new(stop::Stop::new(stop::Leftovers {
        state,
        pool,
        unmounter,
    }));
    let on_signal = stop.clone();
    std::thread::spawn(move || {
        while let Ok(sig) = daemon::wait_for_stop() {
            on_signal.on_signal(sig);
        }
    });

    if let Some(d) = detached {
        d.ready();
    }
    notify::notify(&format!(
        "READY=1\nMAINPID={}\nSTATUS=serving {}",
        std::process::id(),
        mountpoint.display()
    ));
    // Consumes the session: the file system and the memory it holds are
    // gone when it returns.
    let ended = session.run();
    // The io_uring queues hold the file system weakly: this frees it.
    drop(fs);
    if let Err(e) = &ended {
        error!("session ended: {e}");
    }
    stop.on_session_end();
    match ended {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(1),
    }
}
