//! Mounting and unmounting: the command line, daemon mode, signals,
//! `mount -t fuse.msharefs`, and a server that survives bad input.

use std::fs;
use std::path::Path;
use std::process::Command;

use msharefs_tests::*;

use crate::common::*;

#[test]
fn mountinfo_shows_fuse_msharefs_with_permissions_for_everyone() {
    let m = Server::mount("");
    let mount = mount_on(&m.dir).unwrap();
    assert!(mount.is_msharefs(), "{mount:?}");
    assert_eq!(mount.source, "msharefs-test");
    assert!(
        mount.has_option("allow_other") && mount.has_option("default_permissions"),
        "{mount:?}"
    );
}

#[test]
fn sigterm_unmounts_and_exits_cleanly() {
    let mut m = Server::mount("");
    let status = m.stop();
    assert!(status.success(), "exit status {status}");
    assert!(!is_mounted(&m.dir), "unmounted");
}

#[test]
fn sigterm_with_open_files_detaches_and_exits() {
    let mut m = Server::mount("");
    let fd = create_mapped_region(&m, "r", 4 * GIB, GIB);
    let map = map_region(&fd);
    map.set(0, 42);
    let status = m.stop();
    assert!(status.success(), "exit status {status}");
    assert!(!is_mounted(&m.dir), "the busy mount was detached");
    assert_eq!(
        map.get(0),
        42,
        "existing mappings keep working after the server is gone"
    );
}

#[test]
fn umount_stops_the_server() {
    let mut m = Server::mount("");
    nix::mount::umount(&m.dir).unwrap();
    wait_until("the server to exit after umount", || !m.server_alive());
}

#[test]
fn background_mode_returns_once_mounted_and_serves() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _guard = UnmountOnDrop(dir.to_path_buf());
    run(Command::new(msharefs_bin())
        .args(["-o", "align=2M"])
        .args(transport_option().map(|o| ["-o", o]).into_iter().flatten())
        .arg(dir));
    // No waiting: the mount is ready when the command returns.
    assert!(is_mounted(dir), "mounted when msharefs returned");
    let text = std::fs::read_to_string(dir.join("mshare_info"));
    nix::mount::umount(dir).unwrap();
    assert_eq!(text.unwrap(), "2097152\n");
}

#[test]
fn bad_command_lines_fail_with_a_message() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(msharefs_bin())
        .args(["-o", "align=3M"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad mount option 'align=3M'"));
    let out = Command::new(msharefs_bin())
        .arg(tmp.path().join("missing"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
    assert!(!is_mounted(tmp.path()));
    let help = run(Command::new(msharefs_bin()).arg("--help"));
    for word in [
        "align=SIZE",
        "backing=KIND",
        "max_regions=N",
        "allow_other",
        "default_permissions",
        "debug",
        "-f",
    ] {
        assert!(help.contains(word), "--help mentions {word}");
    }
    assert!(run(Command::new(msharefs_bin()).arg("--version")).starts_with("msharefs "));
}

/// `mount -t fuse` goes through mount.fuse3 (Debian's fuse3), which runs
/// the server with `SOURCE MOUNTPOINT -o OPTIONS`, as for an fstab line.
/// The `PROGRAM#SOURCE` form names the binary under test without
/// installing it (an installed msharefs is found as `-t fuse.msharefs`).
#[test]
fn mount_via_mount_fuse3_works_like_fstab() {
    let _serial = serial();
    assert!(
        Path::new("/sbin/mount.fuse3").exists() || Path::new("/usr/sbin/mount.fuse3").exists(),
        "mount.fuse3 is missing: install Debian's fuse3 (tools/test.sh does)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _guard = UnmountOnDrop(dir.to_path_buf());
    run(Command::new("mount")
        .args(["-t", "fuse", "-o", "align=2M,nosuid,defaults"])
        .arg(format!("{}#msharefs", msharefs_bin().display()))
        .arg(dir));
    let mount = mount_on(dir);
    let text = std::fs::read_to_string(dir.join("mshare_info"));
    run(Command::new("umount").arg(dir));
    let mount = mount.expect("mounted");
    assert!(
        mount.is_msharefs() && mount.source == "msharefs",
        "{mount:?}"
    );
    assert!(mount.has_option("nosuid"), "{mount:?}");
    assert_eq!(text.unwrap(), "2097152\n");
    wait_until("the mount to go", || !is_mounted(dir));
}

#[test]
fn server_survives_garbage_ioctls() {
    let mut m = Server::mount("");
    let fd = create_region(&m, "r", 4 * GIB, GIB);
    // Our type and numbers 0..8 with any direction and size up to 64.
    let mut garbage = GarbageIoctls::new(0x2545_f491_4f6c_dd1d, 8);
    for _ in 0..2000 {
        garbage.send(&fd);
    }
    assert!(m.server_alive(), "still running");
    assert_eq!(
        read_text(&m.path("mshare_info")),
        "1073741824\n",
        "still serving"
    );
    assert!(ioctl::get_size(&fd).is_ok());
    // The extensions too (32, once GET_TOKEN, SETUP 33), on regions still fresh.
    let mut garbage = GarbageIoctls::new(0x1234_5678_9abc_def1, 40);
    for i in 0..200 {
        let fresh = open(&m.path(&format!("f{i}")), libc::O_RDWR | libc::O_CREAT).unwrap();
        for _ in 0..10 {
            garbage.send(&fresh);
        }
    }
    assert!(m.server_alive(), "still running");
    assert_eq!(read_text(&m.path("mshare_info")), "1073741824\n");
}

/// A server without CAP_SYS_ADMIN (here: on a /dev/fuse descriptor that
/// a privileged helper mounted) cannot use passthrough or a private tmpfs:
/// it still serves, says so once, serves read/write itself, and mmap is
/// ENODEV.
#[test]
fn server_without_cap_sys_admin_serves_without_passthrough() {
    let m = Server::premounted_without_cap_sys_admin("align=2M");
    let path = m.path("r");
    let code = in_child(|| {
        let fd = open(&path, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL).unwrap();
        ioctl::set_size(
            &fd,
            &MshareInfo {
                start: 1 << 32,
                size: MIB2,
            },
        )
        .unwrap();
        ioctl::create_mapping(&fd, &anon_create(1 << 32, MIB2)).unwrap();
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let mmap = Map::new(&fd, 1 << 32, MIB2, rw, 0).err();
        let again = open(&path, libc::O_RDWR).unwrap();
        let file = std::fs::File::from(again);
        use std::os::unix::fs::FileExt;
        file.write_all_at(b"through the server", 100).unwrap();
        let mut buf = [0u8; 18];
        file.read_exact_at(&mut buf, 100).unwrap();
        i32::from(!(mmap == Some(nix::errno::Errno::ENODEV) && &buf == b"through the server"))
    });
    assert_eq!(code, 0, "mmap ENODEV, read/write served");
    let log = m.log_text();
    assert_eq!(
        log.matches("FUSE passthrough refused").count(),
        1,
        "said once:\n{log}"
    );
    assert!(log.contains("thp regions will use shmem"), "{log}");
}

#[test]
fn fusermount_u_stops_the_server() {
    let mut m = Server::mount("");
    run(Command::new("fusermount3").arg("-u").arg(&m.dir));
    wait_until("the server to exit after fusermount3 -u", || {
        !m.server_alive()
    });
    assert!(!is_mounted(&m.dir));
}

/// A server child, killed and reaped when dropped (also when the test
/// failed).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Gives `/dev/fuse` a mode for the test and its own back when dropped.
struct DevFuseMode(u32);

impl DevFuseMode {
    fn set(mode: u32) -> DevFuseMode {
        use std::os::unix::fs::PermissionsExt;
        let was = fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o7777;
        fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(mode)).unwrap();
        DevFuseMode(was)
    }
}

impl Drop for DevFuseMode {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(self.0));
    }
}

/// A server that may not mount (not root) mounts through `fusermount3`
/// (fuser's session) and, without `allow_other`, serves its owner only:
/// another user and root are refused, and `fusermount3 -u` by the owner
/// stops it. Where `/dev/fuse` is root's alone (0600, as on a machine
/// without the fuse3 udev rule), it says so and mounts nothing.
#[test]
fn a_user_server_mounts_through_fusermount3_and_serves_only_its_owner() {
    use std::os::unix::fs::{chown, PermissionsExt};
    let _serial = serial();
    let dev_fuse = DevFuseMode::set(0o600);
    let tmp = tempfile::Builder::new()
        .prefix("msharefs-user")
        .tempdir()
        .unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tmp.path().join("mnt");
    fs::create_dir(&dir).unwrap();
    chown(&dir, Some(1000), Some(1000)).unwrap();
    let server_cmd = || {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=1000", "--regid=1000", "--clear-groups"])
            .arg(bin_dir().join("msharefs"))
            .args(["-f", "-o", "fsname=msharefs-test"]);
        if let Some(o) = transport_option() {
            cmd.args(["-o", o]);
        }
        cmd.arg(&dir);
        cmd
    };
    let refused = server_cmd().output().unwrap();
    let why = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{why}");
    assert!(
        why.contains("needs /dev/fuse readable and writable by everyone"),
        "{why}"
    );
    assert!(!is_mounted(&dir));

    let _dev_fuse = (dev_fuse, DevFuseMode::set(0o666));
    let log = fs::File::create(tmp.path().join("server.log")).unwrap();
    let child = server_cmd().stderr(log).spawn().expect("setpriv msharefs");
    let mut server = KillOnDrop(child);
    let _unmount = UnmountOnDrop(dir.clone());
    wait_until("the user's server to mount", || is_mounted(&dir));
    let mount = mount_on(&dir).expect("mounted");
    assert!(mount.is_msharefs(), "{mount:?}");
    assert!(!mount.has_option("allow_other"), "{mount:?}");
    let log_text = || fs::read_to_string(tmp.path().join("server.log")).unwrap();
    assert!(
        log_text().contains("mounting through fusermount3"),
        "{}",
        log_text()
    );

    // The owner makes and uses a region.
    let region = dir.join("r1");
    let made = as_user(1000, || {
        let ok = fs::write(&region, b"").is_ok()
            && fs::metadata(&region).is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 1000);
        i32::from(!ok)
    });
    assert_eq!(made, 0, "the owner makes a region: {}", log_text());
    // Anyone else is refused, root included.
    let errno_of = |r: std::io::Result<fs::Metadata>| r.err().and_then(|e| e.raw_os_error());
    let other = as_user(65534, || errno_of(fs::metadata(&region)).unwrap_or(0));
    assert_eq!(other, libc::EACCES, "another user");
    assert_eq!(errno_of(fs::metadata(&region)), Some(libc::EACCES), "root");

    // The owner's fusermount3 -u stops the server.
    let out = Command::new("setpriv")
        .args([
            "--reuid=1000",
            "--regid=1000",
            "--clear-groups",
            "fusermount3",
            "-u",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut status = None;
    wait_until("the user's server to exit", || {
        status = server.0.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success(), "{}", log_text());
    assert!(!is_mounted(&dir));
}
