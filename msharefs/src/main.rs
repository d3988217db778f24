//! `msharefs`: the FUSE server's command line. See `msharefs --help` and
//! `Documentation/msharefs.md`; the server itself is the `msharefs`
//! library, and this file only puts its parts together in order.
#![deny(unsafe_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use log::{error, info, warn};
use msharefs::fs::MshareFs;
use msharefs::hugepool::HugePool;
use msharefs::options::{self, Options, Uring};
use msharefs::stop::{Leftovers, Stop};
use msharefs::target::Target;
use msharefs::transport::fuser::session::{self, Served};
use msharefs::transport::uring;
use msharefs::{backing, daemon, limits, notify, startup, state, sys};

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

impl Cli {
    /// The source name, if given, and the mount point.
    fn paths(&self) -> (Option<&OsString>, PathBuf) {
        match self.paths.as_slice() {
            [m] => (None, PathBuf::from(m)),
            [s, m] => (Some(s), PathBuf::from(m)),
            _ => unreachable!("clap enforces 1..=2 paths"),
        }
    }
}

/// Writes the man page into `dir`.
fn generate_man(dir: &Path) -> ExitCode {
    use clap::CommandFactory;
    let man = clap_mangen::Man::new(Cli::command()).section("8");
    match std::fs::create_dir_all(dir).and_then(|()| man.generate_to(dir)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("msharefs: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(dir) = &cli.generate_man {
        return generate_man(dir);
    }
    let mut opts = Options::defaults(nix::unistd::geteuid().is_root());
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
    match serve(&cli, opts, foreground) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("msharefs: {e}");
            ExitCode::from(1)
        }
    }
}

/// Sets up, mounts and serves until the mount goes or a signal stops the
/// server. What it set up is put back by drop guards on every early
/// return (the kernel's io_uring switch, the state directory's lock, a
/// mount made but not served).
fn serve(cli: &Cli, opts: Options, foreground: bool) -> Result<ExitCode, String> {
    let (source, mountpoint) = cli.paths();
    let target = Target::parse(&mountpoint)?;
    let mut state = startup::open_state(&opts, &target)?;
    let target = target.revive()?;

    // Before any thread exists: detach, then block the stop signals so
    // that every thread inherits the mask and only the waiter sees them.
    let detached = match foreground {
        true => None,
        false => Some(daemon::detach().map_err(|e| format!("cannot detach: {e}"))?),
    };
    if let (Some(_), Some((dir, _))) = (&detached, &mut state) {
        dir.write_pid();
    }
    daemon::block_stop_signals().map_err(|e| format!("cannot block signals: {e}"))?;

    let threads = match cli.single_threaded {
        true => 1,
        false => {
            startup::worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        }
    };
    let config = session::config(&opts, source.map(OsString::as_os_str), threads);
    let queue_fds = match opts.io_uring {
        Uring::Off => 0,
        _ => uring::most_ring_fds(opts.io_uring_q_depth),
    };
    let nofile = startup::raise_nofile();
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
        Some((dir, snap)) => (dir.journal(snap, opts.align)?, dir.kind_dirs()),
        None => (state::Journal::volatile(), Vec::new()),
    };
    let hugetlb_max = startup::hugetlb_max_pages(&opts);
    let record = state
        .as_ref()
        .map(|(dir, _)| dir.path().join(msharefs::hugepool::RECORD_FILE));
    let pool = Arc::new(HugePool::new(
        opts.hugetlb_pool,
        hugetlb_max,
        record,
        opts.fresh,
    ));
    if opts.hugetlb_pool == mshare_uapi::PoolPolicy::Auto {
        startup::tidy_pool(&pool);
    }
    let owner = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    let store = backing::BackingStore::new(kinds);
    let fs = MshareFs::new(
        opts.clone(),
        plan.limits,
        owner,
        store,
        (journal, pool.clone()),
    );
    let state = state.map(|s| startup::adopt(&fs, s)).transpose()?;
    let fs = Arc::new(fs);
    if let Err(e) = fs.start_preload_support() {
        warn!("regions of anon/ will not be removed when nothing maps them: {e}");
    }

    let _switch = uring::prepare(opts.io_uring)?;
    let source = source.map(OsString::as_os_str);
    let mut served = match target {
        Target::Dir(dir) => Served::on_dir(&dir, fs.clone(), &opts, source, &config),
        Target::Fd(fd) => Served::on_fd(fd, fs.clone(), &config),
        Target::Dead(_) => unreachable!("revived above"),
    }
    .map_err(|e| format!("cannot mount on {}: {e}", mountpoint.display()))?;
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
    if let Some(m) = served.mount() {
        fs.set_mount_dev(m.dev);
    }
    let stop = Arc::new(Stop::new(Leftovers {
        state,
        pool,
        unmounter: served.unmounter(),
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
    let ended = served.run();
    // The io_uring queues hold the file system weakly: this frees it.
    drop(fs);
    if let Err(e) = &ended {
        error!("session ended: {e}");
    }
    stop.on_session_end();
    Ok(match ended {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(1),
    })
}
