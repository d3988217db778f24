//! Stops that do what the user asked: `umount` frees whatever signal
//! follows it, a signal keeps only a mount that is still there, and a clean
//! stop logs no warning. Descriptors opened before a crash, and a mount
//! point whose path mountinfo escapes.

use std::path::Path;

use libmshare::{Backing, CreateOptions, Mount};
use msharefs_tests::*;
use std::os::unix::process::CommandExt;

use nix::sys::signal::{kill, Signal};

use crate::common::*;

/// Creates a shmem region of `mib` MiB and touches every page of it.
fn held_region(m: &Server, name: &str, mib: u64) {
    let opts = CreateOptions {
        backing: Some(Backing::Shmem),
        ..Default::default()
    };
    let map = Mount::at(&m.dir)
        .unwrap()
        .create(name, 0, mib << 20, &opts)
        .unwrap()
        .map()
        .unwrap();
    for off in (0..map.len()).step_by(4096) {
        map.write(off, b"x");
    }
}

/// Waits until `Shmem` is back within 16 MiB of `start_kb`.
fn wait_for_shmem_back(start_kb: u64, what: &str) {
    wait_until(what, || meminfo("Shmem") < start_kb + 16_384);
}

/// `umount DIR; kill -SIG PID` (what scripts, harnesses and service
/// managers do), with the signal sent at once or while the server frees:
/// the regions are freed every time, with no warning in the log.
#[test]
fn umount_then_a_signal_frees_every_time() {
    for (i, sig) in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP]
        .into_iter()
        .cycle()
        .take(24)
        .enumerate()
    {
        let mut m = Server::mount("align=2M");
        let start_kb = meminfo("Shmem");
        held_region(&m, "sga", 64);
        assert!(meminfo("Shmem") > start_kb + 60_000, "64 MiB held");
        nix::mount::umount(&m.dir).unwrap();
        // Half of the tries signal at once, the others a little later,
        // while the server is freeing.
        if i % 2 == 1 {
            std::thread::sleep(std::time::Duration::from_micros(200 * i as u64));
        }
        let _ = kill(m.pid(), sig);
        wait_until("the server to exit", || !m.server_alive());
        let log = m.log_text();
        assert!(
            !m.state_dir().exists(),
            "try {i}, {sig}: the state directory is gone\n{log}"
        );
        wait_for_shmem_back(start_kb, "the memory to be freed");
        assert!(!log.contains("WARN"), "try {i}, {sig}: no warning\n{log}");
        assert!(!is_mounted(&m.dir));
    }
}

/// A signal on a mount that is still there keeps the regions, whichever
/// stop signal it is; the umount that comes after the server has gone
/// finds nothing to unmount.
#[test]
fn a_signal_then_umount_keeps_the_regions() {
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        let mut m = Server::mount("align=2M");
        let start_kb = meminfo("Shmem");
        held_region(&m, "sga", 64);
        let _ = kill(m.pid(), sig);
        wait_until("the server to exit", || !m.server_alive());
        assert_eq!(
            nix::mount::umount(&m.dir),
            Err(nix::errno::Errno::EINVAL),
            "{sig} unmounted"
        );
        let log = m.log_text();
        assert!(
            m.state_dir().join("state").exists(),
            "{sig}: the regions are kept\n{log}"
        );
        assert!(meminfo("Shmem") > start_kb + 60_000, "{sig}: memory kept");
        assert!(!log.contains("WARN"), "{sig}: no warning\n{log}");
        // The guard frees the kept state.
        drop(m);
        wait_for_shmem_back(start_kb, "the guard to free the kept memory");
    }
}

/// Regression: mountinfo writes a space in a path as `\040`, and the server
/// compared the raw field, so a server restarted on such a mount point
/// after `kill -9` took the dead mount for someone else's and refused.
#[test]
fn kill9_and_restart_on_a_path_with_a_space_tab_and_backslash() {
    let mut m = Server::mount_named("db shm\tx\\y", "align=2M");
    held_region(&m, "sga", 4);
    m.kill9();
    m.restart();
    assert!(
        m.log_text().contains("adopted 1 regions"),
        "{}",
        m.log_text()
    );
    assert_eq!(
        mount_on(&m.dir).map(|e| e.point),
        Some(m.dir.clone()),
        "mountinfo's escaped path reads back as the mount point"
    );
    assert!(Mount::at(&m.dir).unwrap().open("sga", false).is_ok());
}

/// What a descriptor of a region file opened before `kill -9` can still
/// do: its data goes straight to the region's memory (passthrough), which
/// the next server adopts, so `pread`, `pwrite` and a new `mmap` work and
/// see the same bytes as the new server's clients; everything the server
/// answers (ioctls, `fstat`, `ftruncate`) fails with `ENOTCONN`.
#[test]
fn descriptors_opened_before_kill9_keep_the_data_path_only() {
    let mut m = Server::mount("align=2M,backing=thp");
    let old = create_mapped_region(&m, "r", 4 * GIB, MIB2);
    m.kill9();
    assert_eq!(nix::sys::uio::pwrite(&old, b"after", 100), Ok(5));
    let mut b = [0u8; 5];
    assert_eq!(nix::sys::uio::pread(&old, &mut b, 100), Ok(5));
    assert_eq!(&b, b"after");
    assert_eq!(
        ioctl::get_size(&old).err(),
        Some(nix::errno::Errno::ENOTCONN),
        "ioctl"
    );
    assert_eq!(
        nix::sys::stat::fstat(&old).err(),
        Some(nix::errno::Errno::ENOTCONN),
        "fstat"
    );
    assert_eq!(
        nix::unistd::ftruncate(&old, 4 * MIB2 as i64).err(),
        Some(nix::errno::Errno::ENOTCONN),
        "ftruncate"
    );
    let map = Map::new(&old, 0, MIB2, libc::PROT_READ | libc::PROT_WRITE, 0)
        .expect("a new mmap of the old descriptor");
    assert_eq!(map.read(100, 5), b"after");
    map.write(200, b"old fd");

    m.restart();
    let new = Mount::at(&m.dir)
        .unwrap()
        .open("r", false)
        .unwrap()
        .map()
        .unwrap();
    let mut b = [0u8; 6];
    new.read(200, &mut b);
    assert_eq!(&b, b"old fd", "the same memory as the new server's");
    assert!(Path::new(&m.path("r")).exists());
}

/// `msharectl kept` as JSON.
fn kept_json(extra: &[&str]) -> (i32, serde_json::Value, String) {
    let out = msharectl()
        .args(["kept", "--json"])
        .args(extra)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), v, err)
}

/// The row of `msharectl kept --json` whose mount point is `dir`.
fn kept_row(dir: &Path) -> Option<serde_json::Value> {
    let (_, v, _) = kept_json(&[]);
    v.as_array()?
        .iter()
        .find(|r| r["mountpoint"].as_str() == Some(dir.to_str().unwrap()))
        .cloned()
}

/// Kept memory with no mount is listed (mount point, regions, bytes,
/// since when), counted by `stat` and `pool`, and freed by `kept --free`,
/// which refuses while a server holds it.
#[test]
fn kept_regions_with_no_server_are_listed_counted_and_freed() {
    let mut m = Server::mount_default_state("align=2M");
    let start_kb = meminfo("Shmem");
    held_region(&m, "sga", 64);
    let huge = CreateOptions {
        backing: Some(Backing::Hugetlb),
        ..Default::default()
    };
    let region = Mount::at(&m.dir)
        .unwrap()
        .create("h", 0, 2 * MIB2, &huge)
        .unwrap();
    region.map().unwrap().write(0, b"h");
    drop(region);

    // Held by a live server: not listed, and not freed.
    assert!(kept_row(&m.dir).is_none(), "a served state is not kept");
    let (rc, _, err) = kept_json(&["--free", m.dir.to_str().unwrap()]);
    assert_eq!(rc, 1, "{err}");
    assert!(
        err.contains(&format!("held by msharefs pid {}", m.pid())),
        "{err}"
    );

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(m.stop().success());
    let row = kept_row(&m.dir).expect("listed once its server stopped");
    assert_eq!(row["regions"], 2, "{row}");
    assert!(
        row["bytes"].as_u64().unwrap() >= (64 << 20) + 2 * MIB2,
        "{row}"
    );
    assert_eq!(row["huge_pages"], 2, "{row}");
    assert!(row["since"].as_u64().unwrap() >= before, "{row}");
    assert_eq!(row["state_dir"], m.state_dir().to_str().unwrap());

    // stat and pool of a live mount count it: a server on the same mount
    // point with its state elsewhere leaves it kept.
    let other = m.dir.parent().unwrap().join("other-state");
    m.set_extra_options(&format!("state_dir={}", other.display()));
    m.restart();
    let stat: serde_json::Value =
        serde_json::from_slice(&ctl(&m, &["stat", "--json"]).stdout).unwrap();
    assert!(stat["kept_regions"].as_u64().unwrap() >= 2, "{stat}");
    assert!(stat["kept_bytes"].as_u64().unwrap() >= 64 << 20, "{stat}");
    let pool: serde_json::Value =
        serde_json::from_slice(&ctl(&m, &["pool", "--json"]).stdout).unwrap();
    assert!(pool["kept"].as_u64().unwrap() >= 2, "{pool}");
    let line = stdout(&ctl(&m, &["stat"]));
    assert!(line.contains("kept with no server"), "{line}");

    // Freed by name, as root; not by another user.
    let as_nobody = msharectl()
        .args(["kept", "--free"])
        .arg(&m.dir)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(as_nobody.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&as_nobody.stderr).contains("needs root"));
    let (rc, freed, err) = kept_json(&["--free", m.dir.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(freed[0]["regions"], 2, "{freed}");
    assert!(!m.state_dir().exists(), "the state directory is gone");
    assert!(kept_row(&m.dir).is_none());
    // The live server's own state goes with its umount.
    nix::mount::umount(&m.dir).unwrap();
    wait_until("the server to exit", || !m.server_alive());
    assert!(!other.exists(), "umount frees the other state too");
    wait_for_shmem_back(start_kb, "the kept memory to be freed");
}
