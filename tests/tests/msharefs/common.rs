//! Shared test steps.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::Duration;

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

use msharefs_tests::*;

/// The built `msharectl`.
pub fn msharectl() -> std::process::Command {
    std::process::Command::new(bin_dir().join("msharectl"))
}

/// `msharectl -d MOUNT ARGS`, run to completion.
pub fn ctl(m: &Server, args: &[&str]) -> std::process::Output {
    msharectl()
        .arg("-d")
        .arg(&m.dir)
        .args(args)
        .output()
        .unwrap()
}

/// The stdout of a command that must have succeeded.
pub fn stdout(o: &std::process::Output) -> String {
    assert!(o.status.success(), "{o:?}");
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// Errno of an `io::Error`.
pub fn errno_of(e: std::io::Error) -> i32 {
    e.raw_os_error().expect("an OS error")
}

/// Creates region `name` (O_RDWR|O_CREAT|O_EXCL, 0600) and sets its layout.
pub fn create_region(m: &Server, name: &str, start: u64, size: u64) -> OwnedFd {
    let fd =
        open(&m.path(name), libc::O_RDWR | libc::O_CREAT | libc::O_EXCL).expect("create region");
    ioctl::set_size(&fd, &MshareInfo { start, size }).expect("MSHAREFS_SET_SIZE");
    fd
}

/// Creates region `name`, sets its layout and maps one object over all of it.
pub fn create_mapped_region(m: &Server, name: &str, start: u64, size: u64) -> OwnedFd {
    let fd = create_region(m, name, start, size);
    ioctl::create_mapping(&fd, &anon_create(start, size)).expect("MSHAREFS_CREATE_MAPPING");
    fd
}

/// Maps the whole region file at its start, read-write.
pub fn map_region(fd: &OwnedFd) -> Map {
    let info = ioctl::get_size(fd).expect("MSHAREFS_GET_SIZE");
    let map = Map::new(
        fd,
        info.start,
        info.size,
        libc::PROT_READ | libc::PROT_WRITE,
        0,
    )
    .expect("mmap");
    assert_eq!(map.addr(), info.start, "mapped at the region's start");
    map
}

/// Runs `f` in a forked child as `uid` (group `uid` too, no supplementary
/// groups); its exit code.
pub fn as_user(uid: u32, f: impl FnOnce() -> i32) -> i32 {
    in_child(|| {
        nix::unistd::setgroups(&[]).unwrap();
        nix::unistd::setgid(nix::unistd::Gid::from_raw(uid)).unwrap();
        nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)).unwrap();
        f()
    })
}

/// A bit of `failures` for every check that did not hold, so that a
/// child's exit code says which ones failed.
pub fn failures(checks: &[bool]) -> i32 {
    checks
        .iter()
        .enumerate()
        .filter(|(_, ok)| !**ok)
        .fold(0, |acc, (i, _)| acc | 1 << i)
}

/// A child process running `f` as `uid` that stays until dropped (then it
/// is killed): `f` gets a pipe end to say "ready" on.
pub struct Attacker(Pid);

impl Attacker {
    /// Starts `f(ready)` as `uid` and waits for it to write to `ready`.
    pub fn start(uid: u32, f: impl FnOnce(OwnedFd)) -> Attacker {
        let (r, w) = nix::unistd::pipe().unwrap();
        // The closure owns `w`: the parent's copy closes when spawn_child
        // drops it, so a child that dies early reads as EOF, not a hang.
        let pid = spawn_child(move || {
            nix::unistd::setgroups(&[]).unwrap();
            nix::unistd::setgid(nix::unistd::Gid::from_raw(uid)).unwrap();
            nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)).unwrap();
            f(w);
            0
        });
        let mut byte = [0u8; 1];
        let n = std::fs::File::from(r).read(&mut byte).unwrap();
        assert_eq!(n, 1, "the attacker did not start");
        Attacker(pid)
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.0.as_raw() as u32
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.0, None);
    }
}

/// Says "ready" on the pipe end [`Attacker::start`] gave.
pub fn ready(w: OwnedFd) {
    std::fs::File::from(w).write_all(&[1]).unwrap();
}

/// Sleeps until killed.
pub fn park() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// Random ioctls of msharefs' type `'x'`: any direction, any size up to
/// 64 bytes, numbers below `max_nr`, random argument bytes (xorshift, so a
/// seed replays the same sequence).
pub struct GarbageIoctls {
    seed: u64,
    max_nr: u32,
    buf: [u8; 64],
}

impl GarbageIoctls {
    /// A sequence from `seed` (not 0).
    pub fn new(seed: u64, max_nr: u32) -> Self {
        GarbageIoctls {
            seed,
            max_nr,
            buf: [0; 64],
        }
    }

    /// Sends the next one to `fd`; its result is of no interest.
    pub fn send(&mut self, fd: &impl std::os::fd::AsRawFd) {
        let s = &mut self.seed;
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        let dir = (*s >> 8) as u32 % 4;
        let size = (*s >> 16) as u32 % 65;
        let nr = (*s >> 32) as u32 % self.max_nr;
        let cmd = (dir << 30) | (size << 16) | (u32::from(b'x') << 8) | nr;
        let seed = *s;
        self.buf
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (seed >> (i % 8)) as u8);
        // SAFETY: `buf` has room for any size the command encodes (<= 64).
        unsafe { libc::ioctl(fd.as_raw_fd(), cmd as _, self.buf.as_mut_ptr()) };
    }
}

/// Region `name` made by root on `m`: the mount's alignment in size, one
/// object, first byte 42, `backing` (`None`: the mount's) and exactly the
/// permission bits `mode`, whatever the umask took away at mknod.
pub fn root_region(m: &Server, name: &str, backing: Option<libmshare::Backing>, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let mount = libmshare::Mount::find(Some(&m.dir)).unwrap();
    let opts = libmshare::CreateOptions {
        backing,
        mode,
        ..Default::default()
    };
    let region = mount.create(name, 0, mount.alignment(), &opts).unwrap();
    region.map().unwrap().write(0, &[42]);
    std::fs::set_permissions(m.path(name), std::fs::Permissions::from_mode(mode)).unwrap();
}

/// CPUs the kernel counts (`/sys/devices/system/cpu/possible`): one
/// io_uring queue each.
pub fn possible_cpus() -> usize {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
    let last = text.trim().rsplit([',', '-']).next().unwrap();
    last.parse::<usize>().unwrap() + 1
}

/// Runs `f` on this thread pinned to `cpu`, then restores its affinity.
pub fn on_cpu<T>(cpu: usize, f: impl FnOnce() -> T) -> T {
    struct Restore(CpuSet);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = sched_setaffinity(Pid::from_raw(0), &self.0);
        }
    }
    let _restore = Restore(sched_getaffinity(Pid::from_raw(0)).unwrap());
    let mut one = CpuSet::new();
    one.set(cpu).unwrap();
    sched_setaffinity(Pid::from_raw(0), &one).unwrap();
    f()
}

/// Region `path`'s `user.mshare.attach` attribute, parsed.
pub fn attach_value(path: &std::path::Path) -> Result<mshare_uapi::Attach, nix::errno::Errno> {
    let mut buf = [0u8; 1024];
    let n = rustix::fs::getxattr(path, mshare_uapi::ATTACH_XATTR, &mut buf)
        .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error()))?;
    mshare_uapi::Attach::parse(&buf[..n]).map_err(|_| nix::errno::Errno::EPROTO)
}
