//! `msharectl run` and the preload library, with a C program written for
//! plain POSIX shared memory (tests/preload/probe.c): what it is given,
//! what the mount shows meanwhile, and that nothing is left after it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

use msharefs_tests::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::common::*;

/// The probe, compiled once where every user can run it.
pub fn probe() -> PathBuf {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let out = bin_dir().join("preload-probe");
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("preload/probe.c");
            let tmp = bin_dir().join(format!(".preload-probe.{}", std::process::id()));
            run(Command::new("cc")
                .args(["-O2", "-Wall", "-pthread", "-o"])
                .arg(&tmp)
                .arg(src));
            std::fs::rename(&tmp, &out).unwrap();
            out
        })
        .clone()
}

/// `msharectl -d MOUNT run OPTS -- CMD...`.
pub fn under(m: &Server, opts: &[&str], cmd: &[&str]) -> Command {
    let mut c = msharectl();
    c.arg("-d")
        .arg(&m.dir)
        .arg("run")
        .args(opts)
        .arg("--")
        .args(cmd);
    c
}

/// The probe under the preload, run to completion.
fn probe_run(m: &Server, opts: &[&str], args: &[&str]) -> Output {
    let probe = probe();
    let mut cmd = vec![probe.to_str().unwrap()];
    cmd.extend(args);
    under(m, opts, &cmd).output().unwrap()
}

/// The names in the mount's directory `dir` (anon or shm).
pub fn names_in(m: &Server, dir: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(m.path(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// A probe that holds a mapping (and children that do) until killed.
struct Holder {
    child: Child,
    addr: u64,
    pids: Vec<i32>,
}

impl Holder {
    fn start(m: &Server, size: &str, children: u32) -> Holder {
        let probe = probe();
        let n = children.to_string();
        let mut child = under(m, &[], &[probe.to_str().unwrap(), "hold", size, &n])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines.next().unwrap().unwrap();
        let addr = u64::from_str_radix(ready.trim_start_matches("ready 0x"), 16).unwrap();
        let pids = (0..=children)
            .map(|_| {
                let l = lines.next().unwrap().unwrap();
                l.trim_start_matches("pid ").parse().unwrap()
            })
            .collect();
        Holder { child, addr, pids }
    }

    fn kill_all(&mut self) {
        for &p in &self.pids {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// The pids `msharectl show` lists as mapping `name`.
fn mapper_pids(m: &Server, name: &str) -> Vec<i32> {
    let text = stdout(&ctl(m, &["show", name]));
    let line = text
        .lines()
        .find(|l| l.starts_with("pids\t"))
        .unwrap_or("pids\t");
    let mut pids: Vec<i32> = line[5..]
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    pids.sort();
    pids
}

#[test]
fn anonymous_shared_memory_is_a_region_that_forked_children_share() {
    let m = Server::mount("");
    let o = probe_run(&m, &[], &["anon", "8M"]);
    assert!(o.status.success(), "{o:?}");
    let text = String::from_utf8_lossy(&o.stdout);
    let addr = u64::from_str_radix(text.trim().trim_start_matches("addr 0x"), 16).unwrap();
    assert_eq!(
        addr % GIB,
        0,
        "mapped at the region's 1 GiB-aligned start: {text}"
    );
    assert!(o.stderr.is_empty(), "nothing fell back: {o:?}");
    wait_until("the region to go with the program", || {
        names_in(&m, "anon").is_empty()
    });
}

#[test]
fn operators_see_the_region_with_every_process_that_maps_it() {
    let m = Server::mount("");
    let huge_before = meminfo("HugePages_Total");
    let mut h = Holder::start(&m, "8M", 2);
    let names = names_in(&m, "anon");
    let program = format!("preload-probe.{}.1", h.pids[0]);
    assert_eq!(
        names,
        std::slice::from_ref(&program),
        "named for the program and its pid"
    );
    let name = format!("anon/{program}");
    let mut want = h.pids.clone();
    want.sort();
    assert_eq!(mapper_pids(&m, &name), want, "the creator and its children");
    let info = stdout(&ctl(&m, &["show", &name]));
    assert!(info.contains(&format!("start\t{:#x}", h.addr)), "{info}");
    assert!(info.contains("size\t8388608"), "{info}");
    assert!(
        info.contains("backing\thugetlb"),
        "auto takes hugetlb: {info}"
    );
    let stat = stdout(&ctl(&m, &["stat", "--json"]));
    let stat: serde_json::Value = serde_json::from_str(&stat).unwrap();
    assert!(
        stat["page_tables_saved"].as_u64().unwrap() > 0,
        "stat counts what the mappers save: {stat}"
    );
    h.kill_all();
    wait_until("the region to go with its mappers", || {
        names_in(&m, "anon").is_empty()
    });
    wait_until("the hugetlb pages to go back", || {
        meminfo("HugePages_Total") == huge_before
    });
}

#[test]
fn kill_9_of_the_creator_keeps_the_region_for_its_children_then_frees_it() {
    let m = Server::mount("");
    let huge_before = meminfo("HugePages_Total");
    let mut h = Holder::start(&m, "4M", 2);
    let name = format!("anon/preload-probe.{}.1", h.pids[0]);
    kill(Pid::from_raw(h.pids[0]), Signal::SIGKILL).unwrap();
    h.child.wait().unwrap();
    // The watcher acts on the creator's exit within milliseconds; the
    // children still map the region, so it must still be there after.
    wait_until("the watcher to see the children", || {
        mapper_pids(&m, &name).len() == 2
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(m.path(&name).exists(), "children still map it");
    h.kill_all();
    wait_until("the region to go with the last child", || {
        !m.path(&name).exists()
    });
    wait_until("the hugetlb pages to go back", || {
        meminfo("HugePages_Total") == huge_before
    });
}

#[test]
fn munmap_of_the_whole_region_removes_it_while_the_program_runs() {
    let m = Server::mount("");
    let probe = probe();
    let mut child = under(&m, &[], &[probe.to_str().unwrap(), "unmap", "4M"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "unmapped");
    wait_until("the region to go after munmap", || {
        names_in(&m, "anon").is_empty()
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "the program still runs"
    );
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}

#[test]
fn what_the_preload_does_not_serve_goes_to_libc() {
    let m = Server::mount("");
    // Private memory and a mapping below the minimum: untouched (--verbose
    // would name each call served), silent.
    for args in [["private", "4M"], ["anon", "1M"]] {
        let o = probe_run(&m, &["--verbose"], &args);
        assert!(o.status.success() && o.stderr.is_empty(), "{args:?}: {o:?}");
    }
    let o = probe_run(&m, &["--verbose"], &["anon", "4M"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("anon/preload-probe."),
        "--verbose names what it serves: {o:?}"
    );
    // MAP_FIXED asks for an address: libc, with one line saying why.
    let o = probe_run(&m, &[], &["fixed", "4M"]);
    assert!(o.status.success(), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("left to libc: MAP_FIXED"), "{err}");
    let o = probe_run(&m, &["--quiet"], &["fixed", "4M"]);
    assert!(o.status.success() && o.stderr.is_empty(), "--quiet: {o:?}");
    // A bigger minimum leaves a 4 MiB mapping alone.
    let o = probe_run(&m, &["--min-size", "16M", "--verbose"], &["anon", "4M"]);
    assert!(o.status.success() && o.stderr.is_empty(), "{o:?}");
}

#[test]
fn without_a_mount_the_program_runs_on_libc_memory() {
    let m = Server::mount("");
    let plain = tempfile::tempdir().unwrap();
    let probe = probe();
    let o = msharectl()
        .arg("-d")
        .arg(plain.path())
        .args(["run", "--"])
        .arg(&probe)
        .args(["anon", "4M"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("no msharefs mount"), "{err}");
    let o = msharectl()
        .arg("-d")
        .arg(plain.path())
        .args(["run", "--"])
        .arg(&probe)
        .args(["shm", "/nomount"])
        .output()
        .unwrap();
    assert!(o.status.success(), "shm_open falls back to /dev/shm: {o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        err.lines().count(),
        1,
        "one line for all its shm_opens: {err}"
    );
    assert!(
        err.contains("shm_open left to libc: no msharefs mount"),
        "{err}"
    );
    drop(m);
}

#[test]
fn mremap_madvise_threads_and_exec_behave() {
    let m = Server::mount("");
    for args in [
        &["resize", "8M"][..],
        &["threads", "8"][..],
        &["exec", "4M"][..],
    ] {
        let o = probe_run(&m, &["--backing", "thp"], args);
        assert!(o.status.success(), "{args:?}: {o:?}");
        assert!(o.stderr.is_empty(), "{args:?}: {o:?}");
    }
    // After exec the new program is preloaded too: its mapping is a region.
    let o = probe_run(&m, &[], &["exec", "4M"]);
    let text = String::from_utf8_lossy(&o.stdout);
    let addr = u64::from_str_radix(text.trim().trim_start_matches("addr 0x"), 16).unwrap();
    assert_eq!(addr % GIB, 0, "{text}");
    wait_until("every region to go", || names_in(&m, "anon").is_empty());
}

/// `sh -c MAKER PROBE`: the probe makes /kept in a session of its own, its
/// parent the shell (which stays: `; true`), until its stdin closes.
const MAKER: &str = "setsid \"$0\" shm-make /kept; true";

#[test]
fn shm_open_objects_are_regions_of_shm_with_posix_semantics() {
    // On a hugetlb mount too: a shm object is never hugetlb (it could not
    // take any size, nor be mapped through its file).
    let m = Server::mount("backing=hugetlb");
    let o = probe_run(&m, &[], &["shm", "/probe-shm"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "shm ok\n");
    assert!(names_in(&m, "shm").is_empty(), "shm_unlink removed it");

    // Made and closed by a process that lives on: it stays.
    let probe = probe();
    // In a session of its own, under a shell that waits for it: the object
    // lives while its maker's session or its maker's parent does, as a
    // program's memory does.
    let mut maker = under(&m, &[], &["sh", "-c", MAKER, probe.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut made = String::new();
    BufReader::new(maker.stdout.take().unwrap())
        .read_line(&mut made)
        .unwrap();
    assert_eq!(made, "made\n");
    assert_eq!(names_in(&m, "shm"), ["kept"]);
    let meta = std::fs::metadata(m.path("shm/kept")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.len(), meta.mode() & 0o777), (1000, 0o600));
    let mut buf = [0u8; 16];
    let n = rustix::fs::getxattr(m.path("shm/kept"), "user.mshare.backing", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"thp", "never hugetlb");
    // Another user: EACCES from the mode bits; root opens it.
    let other = msharectl()
        .arg("-d")
        .arg(&m.dir)
        .args(["run", "--"])
        .arg("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&probe)
        .args(["shm-open", "/kept"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&other.stdout),
        "EACCES\n",
        "{other:?}"
    );
    let o = probe_run(&m, &[], &["shm-open", "/kept"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "opened\n");
    let o = probe_run(&m, &[], &["shm-unlink", "/kept"]);
    assert!(o.status.success(), "{o:?}");
    let o = probe_run(&m, &[], &["shm-open", "/kept"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "ENOENT\n");
    assert!(
        !Path::new("/dev/shm/kept").exists(),
        "nothing went to /dev/shm"
    );
    // Made again and never unlinked: it goes with its maker's session and
    // parent.
    let o = probe_run(&m, &[], &["shm-open", "/kept"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "ENOENT\n");
    let mut again = under(&m, &[], &["sh", "-c", MAKER, probe.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut made = String::new();
    BufReader::new(again.stdout.take().unwrap())
        .read_line(&mut made)
        .unwrap();
    assert_eq!(names_in(&m, "shm"), ["kept"]);
    drop(maker.stdin.take());
    assert!(maker.wait().unwrap().success());
    drop(again.stdin.take());
    assert!(again.wait().unwrap().success());
    wait_until("the object to go with its maker", || {
        names_in(&m, "shm").is_empty()
    });
}

#[test]
fn msharectl_run_says_what_it_cannot_do() {
    let m = Server::mount("");
    let o = under(&m, &["--take", "sysv"], &["true"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("SysV shared memory stays with libc"));
    let o = under(&m, &[], &["/nonexistent/program"]).output().unwrap();
    assert_eq!(o.status.code(), Some(127), "{o:?}");
    let o = under(&m, &["--preload", "/nonexistent.so"], &["true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("libmshare-preload.so"));
    // The environment it passes on.
    let o = under(&m, &["--backing", "thp", "--min-size", "64M"], &["env"])
        .output()
        .unwrap();
    let env = String::from_utf8_lossy(&o.stdout);
    for want in [
        "MSHARE_PRELOAD_BACKING=thp",
        "MSHARE_PRELOAD_MIN_SIZE=64M",
        "MSHARE_PRELOAD_TAKE=anon,shm",
        "libmshare_preload.so",
    ] {
        assert!(env.contains(want), "{want} in {env}");
    }
}
