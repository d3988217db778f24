//! Making the connection: the mount (the server's own, or fuser's through
//! `fusermount3` for a server that may not mount, or a `/dev/fd/N` that a
//! helper mounted) and the fuser session that serves it, given to the
//! file system and the io_uring queues once it exists.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use fuser::{Config, MountOption, Session, SessionACL};
use log::info;

use super::{FuserFs, Queues};
use crate::fs::MshareFs;
use crate::mount::{self, OurMount};
use crate::options::{MountFlag, Options};
use crate::stop::Unmounter;

/// fuser's name of a generic mount flag.
fn mount_option(f: MountFlag) -> MountOption {
    match f {
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
    }
}

/// The session's configuration: the mount options fuser passes to
/// `fusermount3` (each flag once, the later of two opposites), `threads`
/// workers. fuser adds `allow_other` from the ACL when it mounts.
pub fn config(opts: &Options, source: Option<&OsStr>, threads: usize) -> Config {
    let mut mount_options = vec![
        MountOption::FSName(mount::source_name(opts, source)),
        MountOption::CUSTOM(format!("subtype={}", mshare_uapi::FS_SUBTYPE)),
    ];
    if opts.default_permissions {
        mount_options.push(MountOption::DefaultPermissions);
    }
    mount_options.extend(opts.effective_flags().into_iter().map(mount_option));
    let mut config = Config::default();
    config.mount_options = mount_options;
    config.acl = if opts.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(threads);
    config.clone_fd = threads > 1;
    config
}

/// What fuser checks of the caller on a connection it did not mount:
/// nothing, as over io_uring; [`MshareFs::handle`] checks. (When fuser
/// mounts through `fusermount3`, it derives `allow_other` from its ACL,
/// and so also refuses others than its euid without `allow_other`: the
/// same rule, for a server that is not setuid.)
const CHECKS: SessionACL = SessionACL::All;

/// Whether this process may open `/dev/fuse` for reading and writing.
fn dev_fuse_usable() -> bool {
    use nix::unistd::{access, AccessFlags};
    access("/dev/fuse", AccessFlags::R_OK | AccessFlags::W_OK).is_ok()
}

/// How the mount on a directory was made.
enum Made {
    /// By the server itself (see [`mount`]).
    Ours(OurMount),
    /// By fuser, through `fusermount3`, for a server that may not mount.
    Fuser(Option<OurMount>),
    /// By a helper that passed `/dev/fd/N`.
    Helper,
}

/// A connection being served: the session and how its mount was made.
pub struct Served {
    session: Session<FuserFs>,
    /// The io_uring queues the adapter made at `INIT`.
    queues: Queues,
    made: Made,
}

impl Served {
    /// Mounts on `dir` and starts the session on the new connection: with
    /// the server's own mount where it may mount, else with fuser's.
    pub fn on_dir(
        dir: &Path,
        fs: Arc<MshareFs>,
        opts: &Options,
        source: Option<&OsStr>,
        config: &Config,
    ) -> io::Result<Served> {
        let name = mount::source_name(opts, source);
        let served = match mount::mount(dir, opts, &name) {
            Ok(dev) => {
                let ours = OurMount::find(dir).ok_or_else(|| {
                    io::Error::other("the new mount is not in /proc/self/mountinfo")
                });
                let session = ours.and_then(|ours| {
                    let (adapter, queues) = FuserFs::new(fs.clone());
                    let s = Session::from_fd(adapter, dev, CHECKS, config.clone())?;
                    Ok(Served {
                        session: s,
                        queues,
                        made: Made::Ours(ours),
                    })
                });
                if session.is_err() {
                    let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
                }
                session
            }
            Err(nix::errno::Errno::EPERM) => {
                info!("this process may not mount: mounting through fusermount3");
                let (adapter, queues) = FuserFs::new(fs.clone());
                let session = Session::new(adapter, dir, config)?;
                Ok(Served {
                    session,
                    queues,
                    made: Made::Fuser(OurMount::find(dir)),
                })
            }
            Err(nix::errno::Errno::EACCES) if !dev_fuse_usable() => Err(io::Error::other(
                "/dev/fuse: permission denied: a server that is not root needs /dev/fuse \
                 readable and writable by everyone (mode 0666, as the fuse3 package's udev \
                 rule sets it; fusermount3 mounts, but fuser opens the device first)",
            )),
            Err(e) => Err(e.into()),
        }?;
        if let Err(e) = served.connect(&fs) {
            // Not served: take the mount down with the session.
            if let Made::Ours(_) = served.made {
                let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
            }
            return Err(e);
        }
        Ok(served)
    }

    /// Serves the connection behind `fd`, a `/dev/fuse` descriptor that a
    /// helper mounted.
    pub fn on_fd(fd: OwnedFd, fs: Arc<MshareFs>, config: &Config) -> io::Result<Served> {
        let (adapter, queues) = FuserFs::new(fs.clone());
        let session = Session::from_fd(adapter, fd, CHECKS, config.clone())?;
        let served = Served {
            session,
            queues,
            made: Made::Helper,
        };
        served.connect(&fs)?;
        Ok(served)
    }

    /// Gives the file system the session's notifier and a duplicate of
    /// its `/dev/fuse` descriptor, and the io_uring queues made at `INIT`
    /// the connection to register on. An error means the connection took
    /// FUSE over io_uring and its queues cannot register: it would never
    /// serve a request.
    fn connect(&self, fs: &MshareFs) -> io::Result<()> {
        let dev = Arc::new(self.session.as_fd().try_clone_to_owned()?);
        fs.connect(dev.clone(), Box::new(self.session.notifier()));
        // After the device is known: the queues serve opens at once.
        let starter = self.queues.lock().take();
        if let Some(s) = starter {
            s.go(&dev)?;
        }
        Ok(())
    }

    /// The mount, where it is known.
    pub fn mount(&self) -> Option<&OurMount> {
        match &self.made {
            Made::Ours(m) | Made::Fuser(Some(m)) => Some(m),
            _ => None,
        }
    }

    /// How the mount is taken down on a signal.
    pub fn unmounter(&mut self) -> Unmounter {
        match &self.made {
            Made::Ours(m) => Unmounter::Ours(m.clone()),
            Made::Fuser(m) => {
                let mut u = self.session.unmount_callable();
                Unmounter::Fuser(Box::new(move || u.unmount()), m.clone())
            }
            Made::Helper => Unmounter::Helper,
        }
    }

    /// Serves until the connection ends. Consumes the session: the file
    /// system and the memory it holds are gone when it returns (the
    /// io_uring queues hold it weakly).
    pub fn run(self) -> io::Result<()> {
        self.session.run()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(list: &str) -> Vec<MountOption> {
        let mut opts = Options::defaults(true);
        opts.apply(list).unwrap();
        config(&opts, None, 1)
            .mount_options
            .into_iter()
            .skip(2) // fsname=, subtype=
            .collect()
    }

    #[test]
    fn fusermount_gets_each_flag_once_the_later_of_two_opposites() {
        use MountOption::*;
        assert_eq!(
            flags("ro,rw,noexec,exec,ro"),
            vec![DefaultPermissions, Exec, RO]
        );
        assert_eq!(
            flags("nosuid,nosuid,sync"),
            vec![DefaultPermissions, NoSuid, Sync]
        );
    }

    #[test]
    fn fusermount_is_asked_for_allow_other_only_when_given() {
        let c = config(&Options::defaults(false), None, 4);
        assert_eq!(c.acl, SessionACL::Owner);
        assert_eq!((c.n_threads, c.clone_fd), (Some(4), true));
        let mut opts = Options::defaults(false);
        opts.apply("allow_other").unwrap();
        assert_eq!(config(&opts, None, 1).acl, SessionACL::All);
    }
}
