//! Helpers for the msharefs integration tests: a mount guard that always
//! unmounts and stops its server, a child-process helper, /proc/meminfo
//! readers and a hugetlb pool guard.
//!
//! Every test that mounts holds the guard returned by [`Server::mount`], which
//! also serialises the tests: they read system-wide counters
//! (`/proc/meminfo`), which parallel tests would disturb.
#![deny(missing_docs)]

use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

pub use libmshare::ioctl;
pub use mshare_uapi::{mountinfo, MshareCreate, MshareInfo, MshareUnmap};

static SERIAL: Mutex<()> = Mutex::new(());

/// 1 GiB.
pub const GIB: u64 = 1 << 30;
/// 2 MiB.
pub const MIB2: u64 = 2 << 20;

/// Takes the lock that serialises tests touching system-wide state.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The files of the build that the tests run, from [`bin_dir`].
pub const BUILT: [&str; 5] = [
    "msharefs",
    "msharectl",
    "liblibmshare.so",
    "liblibmshare.a",
    "libmshare_preload.so",
];

/// Where the tests copy [`BUILT`] when the build directory is out of other
/// users' reach (`.<hash of the build directory>` follows);
/// `tools/test.sh` removes it when the suite ends.
pub const SHARED_BIN_PREFIX: &str = "/tmp/msharefs-tests-bin";

/// Directory of the workspace's built binaries, where every user can run
/// them: the build directory (next to `deps/`) when every directory above
/// it lets others through, else a copy of [`BUILT`] (a checkout in a
/// directory made by `mktemp -d`, 0700, is out of reach of the uids the
/// tests switch to).
pub fn bin_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let built = build_dir();
        if reachable_by_others(&built) {
            return built;
        }
        let to = copy_for_others(&built);
        eprintln!(
            "tests: {} is out of other users' reach (a directory above it does not let them \
             through): the tests run its programs from {}",
            built.display(),
            to.display()
        );
        to
    })
    .clone()
}

fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    assert!(
        dir.join("msharefs").exists(),
        "{} has no msharefs binary: run `cargo build --workspace` before the tests (tools/test.sh does)",
        dir.display()
    );
    dir
}

/// Whether others may search `dir` and every directory above it.
fn reachable_by_others(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    dir.ancestors()
        .all(|d| fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// Copies [`BUILT`] to a directory everyone can read (each file through a
/// temporary name, so that a test process running them meanwhile never
/// sees half a file).
fn copy_for_others(built: &Path) -> PathBuf {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::DirBuilderExt;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    built.hash(&mut h);
    let to = PathBuf::from(format!("{SHARED_BIN_PREFIX}.{:016x}", h.finish()));
    match fs::DirBuilder::new().mode(0o755).create(&to) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => panic!("{}: {e}", to.display()),
    }
    for name in BUILT {
        let tmp = to.join(format!(".{name}.{}", std::process::id()));
        fs::copy(built.join(name), &tmp).unwrap_or_else(|e| panic!("copy {name}: {e}"));
        fs::rename(&tmp, to.join(name)).unwrap();
    }
    to
}

/// The environment variable that picks the request transport of the
/// servers the tests start: `io_uring` (the default: the server's own
/// choice, FUSE over io_uring where the kernel offers it) or `dev_fuse`
/// (`-o io_uring=off`, what kernels before 6.14 have). A test that names
/// `io_uring=` itself keeps its choice. `tools/test.sh` runs the
/// integration tests once with each.
pub const TRANSPORT_ENV: &str = "MSHAREFS_TEST_TRANSPORT";

/// The mount option that [`TRANSPORT_ENV`] asks for, if any.
pub fn transport_option() -> Option<&'static str> {
    match std::env::var(TRANSPORT_ENV).as_deref() {
        Err(_) | Ok("") | Ok("io_uring") => None,
        Ok("dev_fuse") => Some("io_uring=off"),
        Ok(other) => panic!("{TRANSPORT_ENV}={other}: must be io_uring or dev_fuse"),
    }
}

/// Each thread of process `pid`: its name, where it waits (`wchan`) and
/// its kernel stack, for a test that finds a server stuck.
pub fn kernel_stacks(pid: u32) -> String {
    let mut out = String::new();
    for t in fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let read = |f: &str| fs::read_to_string(t.path().join(f)).unwrap_or_default();
        out.push_str(&format!(
            "thread {} {} wchan {}\n{}",
            t.file_name().to_string_lossy(),
            read("comm").trim(),
            read("wchan"),
            read("stack")
        ));
    }
    out
}

/// The workspace's root directory (the source tree).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Path of the built `msharefs` binary.
pub fn msharefs_bin() -> PathBuf {
    bin_dir().join("msharefs")
}

/// Every mount in this namespace (per /proc/self/mountinfo).
pub fn mounts() -> Vec<mountinfo::MountEntry> {
    let info = fs::read_to_string(mountinfo::PATH).unwrap_or_default();
    mountinfo::parse(&info).collect()
}

/// Whether `dir` is a mount point (per /proc/self/mountinfo).
pub fn is_mounted(dir: &Path) -> bool {
    mounts().iter().any(|m| m.point == dir)
}

/// The topmost mount on `dir`.
pub fn mount_on(dir: &Path) -> Option<mountinfo::MountEntry> {
    mountinfo::topmost(mounts().into_iter(), dir)
}

/// Waits up to 10 s for `cond`.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running `msharefs -f` on a fresh temporary directory. Dropping it
/// stops the server (SIGTERM, then SIGKILL), detaches the mount if it is
/// still there and removes the directory, also when the test failed.
pub struct Server {
    /// The mount point.
    pub dir: PathBuf,
    state: PathBuf,
    _tmp: tempfile::TempDir,
    child: Option<Child>,
    log: PathBuf,
    args: Vec<String>,
    env: Vec<(String, std::ffi::OsString)>,
    wrapper: Vec<String>,
    nofile: Option<u64>,
    drop_cap_sys_admin: bool,
    _serial: MutexGuard<'static, ()>,
}

/// How a guard's server is started, beyond its arguments.
#[derive(Default)]
struct Launch {
    /// A mount already made: `/dev/fd/N`, the mount data, the descriptor;
    /// the server runs without CAP_SYS_ADMIN.
    premount: Option<(String, String, OwnedFd)>,
    /// Soft and hard `RLIMIT_NOFILE`.
    nofile: Option<u64>,
    /// Extra environment variables.
    env: Vec<(String, std::ffi::OsString)>,
    /// A command that execs the server (given as its last argument).
    wrapper: Vec<String>,
    /// The mount point's name in the test's directory (default `mnt`).
    name: Option<String>,
    /// Keep the regions in the server's default state directory (under
    /// `/run/msharefs/state`), not in the test's directory.
    default_state: bool,
}

impl Server {
    /// Mounts with `-o opts` (may be empty).
    pub fn mount(opts: &str) -> Server {
        Self::with_args(&["-o", &format!("fsname=msharefs-test,{opts}")])
    }

    /// Mounts with `-o opts` on a mount point named `name` (which may hold
    /// any character a file name can, spaces and backslashes included).
    pub fn mount_named(name: &str, opts: &str) -> Server {
        let args = ["-o", &format!("fsname=msharefs-test,{opts}")];
        Self::start(
            &args,
            Launch {
                name: Some(name.to_string()),
                ..Default::default()
            },
        )
    }

    /// Mounts with `-o opts`, the regions kept where a server keeps them
    /// by default (`/run/msharefs/state/<mount point, escaped>`), which
    /// `msharectl kept` looks at. The guard frees them.
    pub fn mount_default_state(opts: &str) -> Server {
        let args = ["-o", &format!("fsname=msharefs-test,{opts}")];
        Self::start(
            &args,
            Launch {
                default_state: true,
                ..Default::default()
            },
        )
    }

    /// Mounts with these extra arguments before the mount point.
    pub fn with_args(args: &[&str]) -> Server {
        Self::start(args, Launch::default())
    }

    /// Mounts with `-o opts`, the server started with these environment
    /// variables too.
    pub fn mount_with_env(opts: &str, env: &[(&str, &std::ffi::OsStr)]) -> Server {
        let args = ["-o", &format!("fsname=msharefs-test,{opts}")];
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_os_string()))
            .collect();
        Self::start(
            &args,
            Launch {
                env,
                ..Default::default()
            },
        )
    }

    /// Mounts with `-o opts`, the server started with soft and hard
    /// `RLIMIT_NOFILE` both `nofile`.
    pub fn with_nofile(opts: &str, nofile: u64) -> Server {
        let args = ["-o", &format!("fsname=msharefs-test,{opts}")];
        Self::start(
            &args,
            Launch {
                nofile: Some(nofile),
                ..Default::default()
            },
        )
    }

    /// Mounts the way a privileged helper does (open /dev/fuse, mount(2)
    /// with `allow_other,default_permissions`) and starts the server on
    /// `/dev/fd/N` with CAP_SYS_ADMIN dropped from its capability bounding
    /// set, so it runs as root without CAP_SYS_ADMIN.
    pub fn premounted_without_cap_sys_admin(opts: &str) -> Server {
        let fuse = nix::fcntl::open(
            "/dev/fuse",
            nix::fcntl::OFlag::O_RDWR,
            nix::sys::stat::Mode::empty(),
        )
        .expect("open /dev/fuse");
        let n = fuse.as_raw_fd();
        let target = format!("/dev/fd/{n}");
        let mount_data =
            format!("fd={n},rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions");
        let args = ["-o", &format!("fsname=msharefs-test,{opts}")];
        let premount = Some((target, mount_data, fuse));
        Self::start(
            &args,
            Launch {
                premount,
                ..Default::default()
            },
        )
    }

    /// Mounts with `-o opts`, the server run by `wrapper` (a command and
    /// its arguments, e.g. `setpriv ...`), which execs the server binary
    /// given as its last argument.
    pub fn wrapped(opts: &str, wrapper: &[&str]) -> Server {
        let args = ["-o", &format!("fsname=msharefs-test,{opts}")];
        let wrapper = wrapper.iter().map(|w| w.to_string()).collect();
        Self::start(
            &args,
            Launch {
                wrapper,
                ..Default::default()
            },
        )
    }

    fn start(args: &[&str], launch: Launch) -> Server {
        let Launch {
            premount,
            nofile,
            env,
            wrapper,
            name,
            default_state,
        } = launch;
        let serial = serial();
        let tmp = tempfile::Builder::new()
            .prefix("msharefs-test")
            .tempdir()
            .expect("tempdir");
        let dir = tmp.path().join(name.as_deref().unwrap_or("mnt"));
        fs::create_dir(&dir).unwrap();
        let log = tmp.path().join("server.log");
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        // A state directory the test names, else one in the test's own
        // directory; the guard frees it whatever happens.
        let named = args
            .iter()
            .flat_map(|a| a.split(','))
            .find_map(|o| o.strip_prefix("state_dir="))
            .map(PathBuf::from);
        let state = match (&named, default_state) {
            (Some(n), _) => n.clone(),
            (None, true) => msharefs::state::default_path(&dir),
            (None, false) => tmp.path().join("state"),
        };
        let chose = args
            .iter()
            .flat_map(|a| a.split(','))
            .any(|o| o.starts_with("io_uring="));
        if let Some(o) = transport_option().filter(|_| !chose) {
            args.extend(["-o".into(), o.into()]);
        }
        let mut keep_fd = None;
        let target = match premount {
            None => {
                if named.is_none() && !default_state {
                    args.extend(["-o".into(), format!("state_dir={}", state.display())]);
                }
                dir.to_string_lossy().into_owned()
            }
            Some((target, data, fuse)) => {
                nix::mount::mount(
                    Some("msharefs-test"),
                    &dir,
                    Some("fuse.msharefs"),
                    nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                    Some(data.as_str()),
                )
                .expect("mount(2) of fuse.msharefs");
                keep_fd = Some(fuse); // inherited by the server; ours closes below
                target
            }
        };
        args.push(target);
        let mut m = Server {
            dir,
            state,
            _tmp: tmp,
            child: None,
            log,
            args,
            env,
            wrapper,
            nofile,
            drop_cap_sys_admin: keep_fd.is_some(),
            _serial: serial,
        };
        m.spawn();
        drop(keep_fd);
        m.wait_for("mount", is_mounted);
        m
    }

    /// Waits up to 10 s for `ready(mount point)`, failing with the log if
    /// the server exits first.
    /// Waits until `ready` holds of the mount point and the server has
    /// started its request threads (so that its descriptors are all open
    /// and a test can take them as a baseline: fuser clones a `/dev/fuse`
    /// descriptor per thread, all before it starts the first, which can be
    /// well after the mount is up on a busy machine).
    fn wait_for(&mut self, what: &str, ready: impl Fn(&Path) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = self.child.as_ref().unwrap().id();
        let serving = || {
            fs::read_dir(format!("/proc/{pid}/task"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|t| {
                    fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("fuser-"))
                })
        };
        while !ready(&self.dir) || !serving() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "msharefs exited with {status} before the {what}:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {what} after 10 s; where the server's threads wait:\n{}\n{}",
                kernel_stacks(pid),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Starts `msharefs -f ARGS` as this guard's server, its log appended
    /// to the guard's.
    fn spawn(&mut self) {
        use std::os::unix::process::CommandExt;
        let mut cmd = match self.wrapper.split_first() {
            Some((prog, rest)) => {
                let mut c = Command::new(prog);
                c.args(rest).arg(msharefs_bin());
                c
            }
            None => Command::new(msharefs_bin()),
        };
        cmd.arg("-f").args(&self.args);
        if self.drop_cap_sys_admin {
            // SAFETY: prctl is async-signal-safe; it only drops a
            // capability from the bounding set of the child about to
            // exec, so the server runs without CAP_SYS_ADMIN.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_CAPBSET_DROP, 21 /* CAP_SYS_ADMIN */, 0, 0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if let Some(nofile) = self.nofile {
            // SAFETY: setrlimit is async-signal-safe; it only limits the
            // child about to exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: nofile,
                        rlim_max: nofile,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = cmd
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn msharefs");
        self.child = Some(child);
    }

    /// Kills the server with SIGKILL, as a crash or the OOM killer would;
    /// its dead mount stays.
    ///
    /// Returns once the kernel has torn the connection down. With FUSE over
    /// io_uring that happens after the process is reaped (the ring is
    /// released by a kernel worker), and a request made in between waits
    /// and then fails with `ECONNABORTED` instead of `ENOTCONN`.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("server already stopped");
        child.kill().unwrap();
        child.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        // statfs always reaches the connection: nothing caches it.
        while nix::sys::statfs::statfs(&self.dir).err() != Some(nix::errno::Errno::ENOTCONN) {
            assert!(
                Instant::now() < deadline,
                "the kernel kept the connection of the killed server"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Starts a new server with the same arguments on the same mount point
    /// (after [`Self::kill9`] or [`Self::stop`]) and waits until it serves;
    /// returns the time from its start until then.
    pub fn restart(&mut self) -> Duration {
        assert!(self.child.is_none(), "the server is still running");
        let started = Instant::now();
        self.spawn();
        // A read, not a stat: the old, dead mount answers stat from the
        // kernel's attribute cache.
        self.wait_for("restarted mount", |dir| {
            fs::read_to_string(dir.join("mshare_info")).is_ok()
        });
        started.elapsed()
    }

    /// Adds `-o opts` to the arguments of the next [`Self::restart`].
    pub fn set_extra_options(&mut self, opts: &str) {
        let target = self.args.pop().expect("the mount point");
        self.args.extend(["-o".into(), opts.to_string(), target]);
    }

    /// The state directory the server keeps regions in.
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// Path of `name` inside the mount.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The server's pid.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("server").id() as i32)
    }

    /// A field of the server's `/proc/PID/status` (`VmRSS`, …) in kB.
    pub fn status_kb(&self, field: &str) -> u64 {
        proc_field(&format!("/proc/{}/status", self.pid()), field)
    }

    /// Descriptors the server holds open, but for its io_uring queues'
    /// rings ([`Server::ring_fds`]): a queue grows by a thread (and a ring)
    /// under slow requests and keeps it.
    pub fn open_fds(&self) -> usize {
        self.fds().filter(|t| t != "anon_inode:[io_uring]").count()
    }

    /// The io_uring rings the server holds, one per queue thread.
    pub fn ring_fds(&self) -> usize {
        self.fds().filter(|t| t == "anon_inode:[io_uring]").count()
    }

    /// What the server's descriptors point at, but for its io_uring
    /// rings, sorted (to show what a leak is).
    pub fn fd_targets(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .fds()
            .filter(|t| t != "anon_inode:[io_uring]")
            .collect();
        t.sort();
        t
    }

    /// What the server's descriptors point at.
    fn fds(&self) -> impl Iterator<Item = String> {
        fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
            .map(|t| t.to_string_lossy().into_owned())
    }

    /// CPU time the server has used (user + system), in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split(' ').collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    /// Whether the server process is still running.
    pub fn server_alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Sends SIGTERM and waits for the server to exit; returns its status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server already stopped");
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("msharefs did not exit on SIGTERM:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // As a user ends it: umount (which frees the regions), then
            // SIGTERM, then SIGKILL.
            let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::empty());
            let pid = Pid::from_raw(child.id() as i32);
            let mut wait = |secs| {
                let deadline = Instant::now() + Duration::from_secs(secs);
                while child.try_wait().ok().flatten().is_none() {
                    if Instant::now() > deadline {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                true
            };
            if !wait(5) {
                let _ = kill(pid, Signal::SIGTERM);
                wait(5);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if is_mounted(&self.dir) {
            let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
        }
        discard_state(&self.state);
        if std::thread::panicking() {
            eprintln!("--- msharefs log ---\n{}", self.log_text());
        }
    }
}

/// Frees what a server kept in state directory `dir` and removes it: the
/// backing files, the instances mounted there, the state file.
pub fn discard_state(dir: &Path) {
    for kind in ["thp", "shmem", "hugetlb"] {
        let sub = dir.join(kind);
        if let Ok(entries) = fs::read_dir(&sub) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        if is_mounted(&sub) {
            let _ = nix::mount::umount2(&sub, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _ = fs::remove_dir_all(dir);
}

/// Unmounts (lazily) a mount made by something other than [`Server`] —
/// `mount(8)`, a background server — when dropped, also when the test
/// failed; a background server exits when its mount goes.
pub struct UnmountOnDrop(pub PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Runs `f` in a forked child and returns its exit code (or 128 + signal).
/// `f` returns the exit code; a panic in the child exits with 101.
pub fn in_child(f: impl FnOnce() -> i32) -> i32 {
    wait_child(spawn_child(f))
}

/// Forks a child running `f` (see [`in_child`]); returns its pid.
pub fn spawn_child(f: impl FnOnce() -> i32) -> Pid {
    // SAFETY: the child only runs `f` and then `_exit`s; glibc's fork keeps
    // malloc usable in the child, and the tests hold the serial lock, so no
    // other test thread is working at the same time.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
            // SAFETY: `_exit` ends the child without running the parent's
            // atexit handlers or test-harness destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => child,
    }
}

/// Waits for a child; its exit code, or 128 + signal number.
pub fn wait_child(pid: Pid) -> i32 {
    match waitpid(pid, None).expect("waitpid") {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
        other => panic!("unexpected wait status {other:?}"),
    }
}

/// A value of /proc/meminfo, in kB (or a count for HugePages_*).
pub fn meminfo(key: &str) -> u64 {
    proc_field("/proc/meminfo", key)
}

/// The number after `key:` in a `/proc` file of `Key: value [kB]` lines
/// (`/proc/meminfo`, `/proc/PID/status`).
pub fn proc_field(path: &str, key: &str) -> u64 {
    let text = fs::read_to_string(path).unwrap();
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k == key).then(|| v.split_whitespace().next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {key} in {path}"))
}

/// Grows the hugetlb pool by `pages` 2 MiB pages while alive, whatever its
/// size was; restores the old size on drop. It is made from a [`Server`],
/// whose serial lock keeps other tests from changing the pool meanwhile:
/// declared after the server, it is dropped before it.
pub struct HugePool {
    old: u64,
}

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

impl HugePool {
    /// Adds `pages` free pages to the pool; panics if the kernel gives
    /// fewer.
    pub fn reserve(_serialised_by: &Server, pages: u64) -> HugePool {
        let read = || -> u64 {
            let text = fs::read_to_string(NR_HUGEPAGES).unwrap();
            text.trim().parse().unwrap()
        };
        let old = read();
        let want = old + pages;
        fs::write(NR_HUGEPAGES, want.to_string()).expect("write nr_hugepages (needs root)");
        if read() < want {
            // Fragmented memory: drop caches, compact, and ask again.
            let _ = fs::write("/proc/sys/vm/drop_caches", "3");
            let _ = fs::write("/proc/sys/vm/compact_memory", "1");
            let _ = fs::write(NR_HUGEPAGES, want.to_string());
        }
        let got = read();
        assert!(
            got >= want,
            "asked for {pages} more huge pages ({want} in all), the kernel gave {got}"
        );
        HugePool { old }
    }
}

impl Drop for HugePool {
    fn drop(&mut self) {
        let _ = fs::write(NR_HUGEPAGES, self.old.to_string());
    }
}

/// `MAP_ANONYMOUS | MAP_SHARED | MAP_FIXED`, read-write, over
/// `[addr, addr + size)`.
pub fn anon_create(addr: u64, size: u64) -> MshareCreate {
    MshareCreate::anonymous(addr, size, libc::PROT_READ | libc::PROT_WRITE)
}

/// Opens `path` with `flags` (and mode 0600 when creating).
pub fn open(path: &Path, flags: libc::c_int) -> nix::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        nix::fcntl::OFlag::from_bits_truncate(flags),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
}

/// A shared mapping made by a test (unmapped on drop). Accessed only
/// through raw pointers, since other processes write the same memory.
pub struct Map {
    addr: *mut u8,
    len: usize,
}

impl Map {
    /// `mmap(hint, len, prot, MAP_SHARED | extra, fd, 0)`.
    pub fn new(
        fd: &OwnedFd,
        hint: u64,
        len: u64,
        prot: libc::c_int,
        extra: libc::c_int,
    ) -> nix::Result<Map> {
        // SAFETY: a new mapping; the kernel picks or checks the address
        // (no MAP_FIXED unless `extra` says so, and the tests only use it
        // on ranges they reserved).
        let p = unsafe {
            libc::mmap(
                hint as *mut libc::c_void,
                len as usize,
                prot,
                libc::MAP_SHARED | extra,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(nix::errno::Errno::last());
        }
        Ok(Map {
            addr: p.cast(),
            len: len as usize,
        })
    }

    /// Start address.
    pub fn addr(&self) -> u64 {
        self.addr as u64
    }

    /// Reads the byte at `off`.
    pub fn get(&self, off: usize) -> u8 {
        assert!(off < self.len);
        // SAFETY: in bounds of a live mapping; volatile because other
        // processes write it.
        unsafe { self.addr.add(off).read_volatile() }
    }

    /// Writes `v` at `off`.
    pub fn set(&self, off: usize, v: u8) {
        assert!(off < self.len);
        // SAFETY: in bounds of a live, writable mapping.
        unsafe { self.addr.add(off).write_volatile(v) }
    }

    /// Copies `data` to `off`.
    pub fn write(&self, off: usize, data: &[u8]) {
        assert!(off + data.len() <= self.len);
        // SAFETY: in bounds of a live, writable mapping.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.addr.add(off), data.len()) }
    }

    /// Copies `len` bytes from `off`.
    pub fn read(&self, off: usize, len: usize) -> Vec<u8> {
        assert!(off + len <= self.len);
        let mut v = vec![0u8; len];
        // SAFETY: in bounds of a live mapping.
        unsafe { std::ptr::copy_nonoverlapping(self.addr.add(off), v.as_mut_ptr(), len) }
        v
    }

    /// Writes `u64` word `i` (8-byte aligned) of page `page`.
    pub fn set_u64(&self, off: usize, v: u64) {
        assert!(off + 8 <= self.len && off % 8 == 0);
        // SAFETY: aligned, in bounds of a live, writable mapping.
        unsafe { (self.addr.add(off) as *mut u64).write_volatile(v) }
    }

    /// Reads the `u64` at `off` (8-byte aligned).
    pub fn get_u64(&self, off: usize) -> u64 {
        assert!(off + 8 <= self.len && off % 8 == 0);
        // SAFETY: aligned, in bounds of a live mapping.
        unsafe { (self.addr.add(off) as *const u64).read_volatile() }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never, for a successful mmap).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this value owns.
        unsafe { libc::munmap(self.addr.cast(), self.len) };
    }
}

/// Runs a command; panics with its output unless it succeeds; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reads a whole file given as a path.
pub fn read_text(path: &Path) -> String {
    let mut s = String::new();
    fs::File::open(path)
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    s
}

/// A C string from a path.
pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}
