//! What the operator sees is true: the lock's pid, msharectl's errors and
//! exit codes, another user's view, reads that allocate nothing, and docs
//! that match the code.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use msharefs_tests::*;

use crate::common::{ctl, msharectl, stdout};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A server started without `-f`: it detaches, and `umount` stops it.
struct Detached {
    dir: tempfile::TempDir,
    state: PathBuf,
}

impl Detached {
    fn start() -> Detached {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(dir.path().join("mnt")).unwrap();
        let mut cmd = Command::new(msharefs_bin());
        cmd.arg("-o").arg(format!("state_dir={}", state.display()));
        if let Some(t) = transport_option() {
            cmd.args(["-o", t]);
        }
        let status = cmd.arg(dir.path().join("mnt")).status().unwrap();
        let d = Detached { dir, state };
        assert!(
            status.success(),
            "the detaching parent says the mount is ready"
        );
        d
    }

    fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        let mnt = self.mnt();
        if is_mounted(&mnt) {
            let _ = Command::new("umount").arg(&mnt).status();
        }
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// The pids of processes with `/dev/fuse` open whose command line names
/// `dir`.
fn fuse_servers_of(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let dir = dir.to_str().unwrap();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains(dir) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|f| std::fs::read_link(f.path()).is_ok_and(|t| t == Path::new("/dev/fuse")))
        {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn the_lock_names_the_server_that_runs_also_after_it_detached() {
    let d = Detached::start();
    let pid: u32 = std::fs::read_to_string(d.state.join("lock"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        fuse_servers_of(&d.mnt()),
        [pid],
        "the lock holds the pid of the server serving the mount"
    );
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim(),
        "msharefs"
    );
    // A second server names that pid.
    let o = Command::new(msharefs_bin())
        .args(["-f", "-o"])
        .arg(format!("state_dir={}", d.state.display()))
        .arg(d.dir.path())
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains(&format!("held by msharefs pid {pid}")),
        "{o:?}"
    );
}

#[test]
fn create_says_what_is_wrong_with_the_start_the_size_and_the_name() {
    let m = Server::mount("align=2M");
    let o = ctl(&m, &["create", "at", "1G", "--start", "0x10000"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        stderr(&o).contains("not a multiple of the alignment (2097152 bytes)"),
        "{o:?}"
    );
    let o = ctl(&m, &["create", "huge", "200T"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        stderr(&o).contains("beyond the user address space"),
        "{o:?}"
    );
    assert_eq!(
        ctl(&m, &["create", "at", "2M", "--start", "4G"])
            .status
            .code(),
        Some(0)
    );
    assert!(stdout(&ctl(&m, &["list"])).contains("at\t0x100000000\t2097152\t"));
    let o = ctl(&m, &["create", "nodir/x", "2M"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        stderr(&o).contains("directory 'nodir' does not exist"),
        "{o:?}"
    );
    assert!(!m.path("nodir").exists());
}

#[test]
fn show_refuses_what_is_not_a_region_and_remove_carries_on_past_a_missing_name() {
    let m = Server::mount("align=2M");
    std::fs::create_dir(m.path("dir")).unwrap();
    for (name, what) in [("dir", "a directory"), ("mshare_info", "information file")] {
        let o = ctl(&m, &["show", name]);
        assert_eq!(o.status.code(), Some(3), "{name}: {o:?}");
        assert!(stderr(&o).contains(what), "{name}: {o:?}");
        assert!(o.stdout.is_empty(), "no made-up region: {o:?}");
    }
    for r in ["t1", "s1"] {
        assert!(ctl(&m, &["create", r, "2M"]).status.success());
    }
    let o = ctl(&m, &["remove", "t1", "nosuch", "s1"]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(stderr(&o).contains("nosuch"), "{o:?}");
    assert!(
        !m.path("t1").exists() && !m.path("s1").exists(),
        "rm carries on"
    );
}

#[test]
fn another_user_sees_the_size_of_a_region_it_may_not_open() {
    let m = Server::mount("align=2M");
    assert!(ctl(&m, &["create", "big", "1G", "--mode", "600"])
        .status
        .success());
    let o = msharectl()
        .arg("-d")
        .arg(&m.dir)
        .arg("list")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let list = stdout(&o);
    assert!(list.contains("big\t-\t1073741824\t?\t"), "{list}");
}

#[test]
fn reading_a_region_allocates_nothing() {
    let m = Server::mount("align=2M,backing=thp");
    assert!(ctl(&m, &["create", "r", "256M"]).status.success());
    let allocated = |m: &Server| -> u64 {
        let v: serde_json::Value =
            serde_json::from_str(&stdout(&ctl(m, &["show", "r", "--json"]))).unwrap();
        v["allocated"].as_u64().unwrap()
    };
    assert_eq!(allocated(&m), 0);
    let o = ctl(&m, &["read", "r"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(o.stdout.len(), 256 << 20);
    assert!(o.stdout.iter().all(|&b| b == 0), "holes read as zeros");
    // The region's own blocks, not the machine's Shmem: other tests
    // allocate shared memory at the same time.
    assert_eq!(allocated(&m), 0, "the holes stay holes");
    // What was written reads back.
    let mut w = msharectl()
        .arg("-d")
        .arg(&m.dir)
        .args(["write", "r", "--offset", "4096"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    w.stdin.take().unwrap().write_all(b"written").unwrap();
    assert!(w.wait().unwrap().success());
    let o = ctl(&m, &["read", "r", "--offset", "4096", "--length", "7"]);
    assert_eq!(o.stdout, b"written");
}

#[test]
fn root_is_not_warned_about_processes_nobody_may_inspect() {
    let m = Server::mount("align=2M");
    assert!(ctl(&m, &["create", "r", "2M"]).status.success());
    for args in [&["list", "-l"][..], &["show", "r"], &["stat"]] {
        let o = ctl(&m, args);
        assert!(o.status.success(), "{args:?}: {o:?}");
        assert!(
            !stderr(&o).contains("could not be inspected"),
            "{args:?}: {o:?}"
        );
    }
}

/// The paths that README.md and Documentation/*.md cite in backquotes.
fn cited_paths() -> Vec<(String, String)> {
    let root = workspace();
    let mut docs = vec![root.join("README.md")];
    for e in std::fs::read_dir(root.join("Documentation"))
        .unwrap()
        .flatten()
    {
        if e.path().extension().is_some_and(|x| x == "md") {
            docs.push(e.path());
        }
    }
    let mut cited = Vec::new();
    for doc in docs {
        let text = std::fs::read_to_string(&doc).unwrap();
        for quoted in text.split('`').skip(1).step_by(2) {
            let looks_like_ours = quoted.ends_with(".md")
                || [
                    "tools/",
                    "tests/",
                    "examples/",
                    "libmshare/",
                    "msharefs/",
                    "uapi/",
                    "preload/",
                ]
                .iter()
                .any(|p| quoted.starts_with(p));
            if looks_like_ours && !quoted.contains(' ') && !quoted.contains('*') {
                cited.push((doc.display().to_string(), quoted.to_string()));
            }
        }
    }
    cited
}

#[test]
fn every_file_a_doc_cites_exists() {
    let root = workspace();
    let cited = cited_paths();
    assert!(cited.len() > 20, "{cited:?}");
    let missing: Vec<_> = cited
        .iter()
        .filter(|(_, p)| {
            let p = p.trim_end_matches([',', '.', ':', ')']);
            !root.join(p).exists() && !root.join("Documentation").join(p).exists()
        })
        .collect();
    assert!(missing.is_empty(), "cited but missing: {missing:?}");
}

#[test]
fn every_ignored_mount_option_in_the_docs_is_in_help_and_accepted() {
    let doc = std::fs::read_to_string(workspace().join("Documentation/msharefs.md")).unwrap();
    let row = doc
        .lines()
        .find(|l| l.contains("Accepted and ignored"))
        .unwrap();
    let documented: Vec<String> = row
        .split('|')
        .nth(1)
        .unwrap()
        .split(',')
        .map(|o| o.trim().trim_matches('`').to_string())
        .collect();
    let help = stdout(&Command::new(msharefs_bin()).arg("--help").output().unwrap());
    let listed: String = help
        .split("the generic mount flags")
        .nth(1)
        .unwrap()
        .split("accepted and ignored")
        .next()
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let mut in_help: Vec<String> = listed
        .split(',')
        .map(|o| o.trim().to_string())
        .filter(|o| !o.is_empty())
        .collect();
    in_help.sort();
    let mut sorted = documented.clone();
    sorted.sort();
    assert_eq!(sorted, in_help, "msharefs.md's table and --help");
    // Every one of them mounts (x-* and comment= with a value).
    let opts: Vec<String> = documented
        .iter()
        .map(|o| match o.as_str() {
            "x-*" => "x-systemd.automount".into(),
            "comment=" => "comment=fstab".into(),
            o => o.into(),
        })
        .collect();
    let m = Server::mount(&format!("align=2M,{}", opts.join(",")));
    assert_eq!(
        std::fs::read_to_string(m.path("mshare_info")).unwrap(),
        "2097152\n"
    );
}

#[test]
fn every_documented_exit_status_is_what_msharectl_exits_with() {
    let doc = std::fs::read_to_string(workspace().join("Documentation/msharectl.md")).unwrap();
    let codes: Vec<i32> = doc
        .split("## Exit status")
        .nth(1)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("| ")?.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(codes, [0, 1, 2, 3, 4]);
    let m = Server::mount("align=2M");
    std::fs::create_dir(m.path("d")).unwrap();
    let seen = |args: &[&str]| ctl(&m, args).status.code().unwrap();
    assert_eq!(seen(&["create", "r", "2M"]), 0);
    assert_eq!(seen(&["create", "nodir/r", "2M"]), 1);
    assert_eq!(seen(&["create", "q", "3M"]), 2);
    assert_eq!(seen(&["show", "nosuch"]), 3);
    assert_eq!(seen(&["show", "d"]), 3);
    assert_eq!(seen(&["create", "r", "2M"]), 4);
}
