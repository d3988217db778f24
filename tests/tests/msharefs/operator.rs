//! msharectl for operators, with real binaries and real processes: who maps
//! a region, data in and out, the hugetlb pool the server sizes, KSM,
//! `stat`, output no name can forge, exact modes, man pages and completions.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use msharefs_tests::*;
use serde_json::Value;

use crate::common::*;

/// Its `--json` output.
fn json(m: &Server, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    serde_json::from_str(&stdout(&ctl(m, &args))).unwrap()
}

/// The pids of `show --json`'s mappers.
fn mapper_pids(shown: &Value) -> BTreeSet<u32> {
    shown["usage"]["mappers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap() as u32)
        .collect()
}

/// A pattern no region holds by chance.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

fn huge(name: &str) -> u64 {
    let text =
        std::fs::read_to_string(Path::new(mshare_uapi::HUGE_PAGES_SYSFS).join(name)).unwrap();
    text.trim().parse().unwrap()
}

/// Free huge pages that no mapping was promised.
fn huge_available() -> u64 {
    huge("free_hugepages") - huge("resv_hugepages")
}

#[test]
fn show_names_exactly_the_processes_that_map_a_region() {
    let m = Server::mount("align=2M");
    assert_eq!(
        stdout(&ctl(&m, &["create", "sga", "8M", "--mode", "644"])),
        ""
    );

    // Load a file into the region as a script would, and read it back.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let data = pattern((3 << 20) + 12345);
    std::fs::write(&input, &data).unwrap();
    let wrote = msharectl()
        .arg("-d")
        .arg(&m.dir)
        .args(["write", "sga", "--offset", "1M"])
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    assert_eq!(stdout(&wrote), "", "quiet on success");
    let len = data.len().to_string();
    let back = ctl(&m, &["read", "sga", "--offset", "1M", "--length", &len]);
    assert!(back.status.success(), "{back:?}");
    assert_eq!(back.stdout, data, "read returns what write put");
    let whole = ctl(&m, &["read", "sga"]);
    assert_eq!(whole.stdout.len(), 8 << 20, "to the end by default");
    assert_eq!(&whole.stdout[..1 << 20], &vec![0u8; 1 << 20][..]);

    // A pipe whose data does not fit is refused with the numbers.
    let mut too_long = msharectl()
        .arg("-d")
        .arg(&m.dir)
        .args(["write", "sga", "--offset", "7M"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = too_long.stdin.take().unwrap();
    let _ = stdin.write_all(&pattern(2 << 20));
    drop(stdin);
    let refused = too_long.wait_with_output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("do not fit from offset 7340032"),
        "{refused:?}"
    );

    // Three mappers: libmshare, the region file, and another user
    // read-only. Each reads or writes 2 MiB.
    let dir_of = m.dir.clone();
    let lib = Attacker::start(0, move |w| {
        let mount = libmshare::Mount::at(&dir_of).unwrap();
        let map = mount.open("sga", false).unwrap().map().unwrap();
        map.write(0, &[1u8; 2 << 20]);
        ready(w);
        park()
    });
    let path = m.path("sga");
    let file = Attacker::start(0, move |w| {
        let fd = open(&path, libc::O_RDWR).unwrap();
        let map = map_region(&fd);
        map.write(2 << 20, &[2u8; 2 << 20]);
        ready(w);
        park()
    });
    let dir_of = m.dir.clone();
    let user = Attacker::start(1000, move |w| {
        // A process that changed uid is not dumpable: make its maps
        // readable to its own user, as an exec'd program's are.
        nix::sys::prctl::set_dumpable(true).unwrap();
        let mount = libmshare::Mount::at(&dir_of).unwrap();
        let map = mount.open("sga", true).unwrap().map().unwrap();
        let mut buf = vec![0u8; 2 << 20];
        map.read(4 << 20, &mut buf);
        ready(w);
        park()
    });
    let shown = json(&m, &["show", "sga"]);
    let expected: BTreeSet<u32> = [lib.pid(), file.pid(), user.pid()].into();
    assert_eq!(mapper_pids(&shown), expected, "{shown}");
    for p in shown["usage"]["mappers"].as_array().unwrap() {
        assert_eq!(p["mapped"], 8 << 20, "{p}");
        let resident = p["resident"].as_u64().unwrap();
        assert!(resident >= 2 << 20, "{p}");
        let tables = p["page_tables"].as_u64().unwrap();
        let small = p["page_tables_4k"].as_u64().unwrap();
        assert!(tables < small, "thp maps by PMD: {p}");
        let uid = if p["pid"] == user.pid() { 1000 } else { 0 };
        assert_eq!(p["uid"], uid, "{p}");
    }
    assert_eq!(shown["backing"], "thp");
    // The text form has one row per mapper, after the key/value lines.
    let text = stdout(&ctl(&m, &["show", "sga"]));
    assert!(text.contains("mappers\t3\n"), "{text}");
    assert!(
        text.contains(&format!("\n{}\t1000\t8388608\t", user.pid())),
        "{text}"
    );
    let long = stdout(&ctl(&m, &["list", "-l"]));
    let row = long.lines().find(|l| l.starts_with("sga\t")).unwrap();
    assert_eq!(row.split('\t').nth(5), Some("3"), "MAPPERS: {long}");
    let pids: BTreeSet<u32> = row
        .split('\t')
        .nth(9)
        .unwrap()
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids, expected, "PIDS: {long}");

    // Another user sees its own process and is told what it cannot see.
    let as_user = msharectl()
        .arg("-d")
        .arg(&m.dir)
        .args(["show", "sga", "--json"])
        .uid(1000)
        .gid(1000)
        .output()
        .unwrap();
    let theirs: Value = serde_json::from_str(&stdout(&as_user)).unwrap();
    assert_eq!(mapper_pids(&theirs), [user.pid()].into());
    assert!(theirs["usage"]["uninspected"].as_u64().unwrap() >= 2);
    let warned = String::from_utf8_lossy(&as_user.stderr);
    assert!(warned.contains("run as root to count them"), "{as_user:?}");
    assert!(
        warned.contains("could not be inspected (pid "),
        "the pids are named: {as_user:?}"
    );

    drop(file);
    let shown = json(&m, &["show", "sga"]);
    assert_eq!(mapper_pids(&shown), [lib.pid(), user.pid()].into());
    assert_eq!(stdout(&ctl(&m, &["rm", "sga"])), "");
    assert_eq!(ctl(&m, &["show", "sga"]).status.code(), Some(3));
}

#[test]
fn the_hugetlb_pool_grows_for_a_region_and_returns_after_it() {
    let m = Server::mount("align=2M");
    assert_eq!(huge("surplus_hugepages"), 0);
    let (total, available) = (huge("nr_hugepages"), huge_available());
    let grow = 16u64.saturating_sub(available);
    // Nobody touches /proc/sys/vm: the server sizes the pool.
    stdout(&ctl(&m, &["create", "sga", "32M", "--backing", "hugetlb"]));
    assert_eq!(
        huge("nr_hugepages"),
        total + grow,
        "grown by what was missing"
    );
    let pool = json(&m, &["pool"]);
    assert_eq!(pool["policy"], "auto");
    assert_eq!(pool["ours"], grow);
    assert_eq!(pool["total"], total + grow);
    let text = stdout(&ctl(&m, &["pool"]));
    assert!(text.contains(&format!("ours\t{grow}\n")), "{text}");

    let dir_of = m.dir.clone();
    let mapper = Attacker::start(0, move |w| {
        let map = libmshare::Mount::at(&dir_of)
            .unwrap()
            .open("sga", false)
            .unwrap()
            .map()
            .unwrap();
        map.write(0, &pattern(32 << 20));
        ready(w);
        park()
    });
    let shown = json(&m, &["show", "sga"]);
    assert_eq!(shown["backing"], "hugetlb");
    assert_eq!(shown["allocated"], 32 << 20);
    assert_eq!(mapper_pids(&shown), [mapper.pid()].into());
    assert_eq!(shown["usage"]["resident"], 32 << 20);
    let back = ctl(&m, &["read", "sga", "--length", "1M"]);
    assert_eq!(back.stdout, pattern(32 << 20)[..1 << 20]);

    // Removed while mapped: the pool shrinks at once, the pages in use
    // become surplus and go with the last mapping.
    stdout(&ctl(&m, &["rm", "sga"]));
    assert_eq!(huge("nr_hugepages") - huge("surplus_hugepages"), total);
    assert_eq!(json(&m, &["pool"])["ours"], 0);
    // A new region while those pages are still mapped: the pool grows by
    // new pages, not by taking back the surplus ones that are in use.
    stdout(&ctl(&m, &["create", "sgb", "32M", "--backing", "hugetlb"]));
    stdout(&ctl(&m, &["write", "sgb"]));
    stdout(&ctl(&m, &["rm", "sgb"]));
    // The old pages are still mapped; they go once the mapper is gone.
    drop(mapper);
    wait_until("the pool to return to its size", || {
        huge("nr_hugepages") == total && huge("surplus_hugepages") == 0
    });
    assert_eq!(json(&m, &["pool"])["ours"], 0);
    assert_eq!(meminfo("HugePages_Total"), total);
}

#[test]
fn a_pool_that_may_not_grow_is_an_error_that_names_the_numbers() {
    let total = huge("nr_hugepages");
    // The ceiling: the pool as it is plus 4 pages.
    let max = format!("hugetlb_max={}", (total + 4) * MIB2);
    let m = Server::mount(&format!("align=2M,{max}"));
    let available = huge_available();
    let need = available + 8;
    let size = format!("{}", need * MIB2);
    let refused = ctl(&m, &["create", "big", &size, "--backing", "hugetlb"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let why = String::from_utf8_lossy(&refused.stderr);
    let numbers = format!(
        "needs {need} huge pages, {available} are free and the pool can grow to {} (hugetlb_max): \
         raise hugetlb_max or free memory",
        total + 4
    );
    assert!(why.contains(&numbers), "{why}");
    assert!(m.log_text().contains(&numbers), "the server logs it too");
    assert!(!m.path("big").exists(), "nothing is left behind");
    assert_eq!(huge("nr_hugepages"), total, "the pool is as it was");

    // Reserving ahead: root only.
    let user = msharectl()
        .arg("-d")
        .arg(&m.dir)
        .args(["pool", "--reserve", "4M"])
        .uid(1000)
        .output()
        .unwrap();
    assert_eq!(user.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&user.stderr).contains("only root may"));
    assert_eq!(
        stdout(&ctl(
            &m,
            &["pool", "--reserve", &format!("{}", (available + 2) * MIB2)]
        )),
        ""
    );
    assert_eq!(huge("nr_hugepages"), total + 2);
    assert_eq!(json(&m, &["pool"])["ours"], 2);
    drop(m); // umount gives back what the server added
    assert_eq!(huge("nr_hugepages"), total);
}

#[test]
fn manual_leaves_the_pool_to_the_administrator() {
    let m = Server::mount("align=2M,hugetlb_pool=manual");
    let total = huge("nr_hugepages");
    let need = huge_available() + 2;
    let size = format!("{}", need * MIB2);
    let refused = ctl(&m, &["create", "h", &size, "--backing", "hugetlb"]);
    assert_eq!(refused.status.code(), Some(1));
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains(&format!("needs {need} huge pages")) && why.contains("hugetlb_pool=manual"),
        "{why}"
    );
    assert_eq!(huge("nr_hugepages"), total, "manual never writes the pool");
    let _pool = HugePool::reserve(&m, 2);
    stdout(&ctl(&m, &["create", "h", &size, "--backing", "hugetlb"]));
    assert_eq!(json(&m, &["pool"])["ours"], 0);
    assert_eq!(json(&m, &["pool"])["policy"], "manual");
    stdout(&ctl(&m, &["rm", "h"]));
    assert_eq!(
        huge("nr_hugepages"),
        total + 2,
        "the administrator's pages stay"
    );
}

/// The KSM scanner's settings, put back on drop (unmerging what the test
/// merged first). Made from a [`Server`], whose serial lock keeps other
/// tests from the scanner meanwhile: declared after it, dropped before it.
struct KsmGuard {
    saved: Vec<(&'static str, String)>,
}

const KSM: &str = "/sys/kernel/mm/ksm";

impl KsmGuard {
    fn new(_serialised_by: &Server) -> KsmGuard {
        let saved = ["pages_to_scan", "sleep_millisecs", "run"]
            .into_iter()
            .map(|f| (f, std::fs::read_to_string(Path::new(KSM).join(f)).unwrap()))
            .collect();
        KsmGuard { saved }
    }
}

impl Drop for KsmGuard {
    fn drop(&mut self) {
        let _ = std::fs::write(Path::new(KSM).join("run"), "2");
        for (f, v) in &self.saved {
            let _ = std::fs::write(Path::new(KSM).join(f), v.trim());
        }
    }
}

/// A child process that is killed on drop.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ksm_process(k: &Value, pid: u32) -> Option<Value> {
    k["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == pid)
        .cloned()
}

#[test]
fn ksm_run_merges_a_programs_duplicate_pages_and_ksm_reports_it() {
    let m = Server::mount("align=2M");
    let guard = KsmGuard::new(&m);
    let dir = tempfile::tempdir().unwrap();
    // 32 MiB of private pages that are all alike.
    let src = dir.path().join("dup.c");
    std::fs::write(
        &src,
        r#"#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
int main(void) {
    size_t n = 32 << 20;
    char *p = mmap(0, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 1;
    for (size_t i = 0; i < n; i += 4096) memset(p + i, 0x5a, 4096);
    write(1, "ready\n", 6);
    char c;
    read(0, &c, 1);
    return p[12345] == 0x5a ? 0 : 2;
}
"#,
    )
    .unwrap();
    let prog = dir.path().join("dup");
    run(Command::new("cc").arg("-O2").arg("-o").arg(&prog).arg(&src));

    let user = msharectl()
        .args(["ksm", "start"])
        .uid(1000)
        .output()
        .unwrap();
    assert_eq!(user.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&user.stderr).contains("only root may control KSM"));

    let started = msharectl()
        .args([
            "ksm",
            "start",
            "--pages-to-scan",
            "5000",
            "--sleep-millisecs",
            "10",
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&started), "");
    assert_eq!(read_text(&Path::new(KSM).join("run")).trim(), "1");

    let mut child = Running(
        msharectl()
            .args(["ksm", "run", "--"])
            .arg(&prog)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let mut line = String::new();
    BufReader::new(child.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    let stat = read_text(Path::new(&format!("/proc/{pid}/ksm_stat")));
    assert!(
        stat.contains("ksm_merge_any: yes"),
        "exec kept the flag: {stat}"
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let merged = loop {
        let k: Value = serde_json::from_str(&stdout(
            &msharectl().args(["ksm", "--json"]).output().unwrap(),
        ))
        .unwrap();
        // The process's merging_pages and the global pages_sharing are
        // read from different counters that ksmd updates at different
        // times: wait until one snapshot shows both.
        let sharing = k["pages_sharing"].as_u64() >= Some(4096);
        if let Some(p) =
            ksm_process(&k, pid).filter(|p| sharing && p["merging_pages"].as_u64() >= Some(4096))
        {
            break (k, p);
        }
        assert!(Instant::now() < deadline, "KSM merged too little: {k}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let (k, p) = merged;
    assert_eq!(p["merge_any"], true);
    assert!(p["profit"].as_i64().unwrap() > 0, "{p}");
    assert_eq!(k["run"], 1);
    assert!(k["pages_sharing"].as_u64().unwrap() >= 4096, "{k}");
    let text = stdout(&msharectl().arg("ksm").output().unwrap());
    assert!(text.starts_with("state\trunning\n"), "{text}");
    assert!(text.contains(&format!("\n{pid}\tyes\t")), "{text}");

    // stat adds it to what the regions save.
    let s = json(&m, &["stat"]);
    let ksm_saved = s["ksm_saved"].as_u64().unwrap();
    assert!(ksm_saved > 0, "{s}");
    assert_eq!(
        s["saved"],
        s["page_tables_saved"].as_u64().unwrap() + ksm_saved
    );
    let line = stdout(&ctl(&m, &["stat"]));
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.contains("KSM saved"), "{line}");

    assert_eq!(
        stdout(
            &msharectl()
                .args(["ksm", "stop", "--unmerge"])
                .output()
                .unwrap()
        ),
        ""
    );
    assert_eq!(read_text(&Path::new(KSM).join("run")).trim(), "2");
    let stat = read_text(Path::new(&format!("/proc/{pid}/ksm_stat")));
    assert!(stat.contains("ksm_merging_pages 0"), "unmerged: {stat}");
    drop(child.0.stdin.take()); // the program checks its memory and exits
    assert!(child.0.wait().unwrap().success());
    drop(guard);
}

#[test]
fn no_name_forges_a_row_and_modes_are_exactly_what_was_asked() {
    let m = Server::mount("align=2M");
    let forged = "x\n\tfake\t0x1\t1\tthp\t0";
    stdout(&ctl(&m, &["create", forged, "2M"]));
    stdout(&ctl(&m, &["create", "plain", "2M"]));
    let list = stdout(&ctl(&m, &["list"]));
    assert_eq!(list.lines().count(), 3, "a header and two rows: {list}");
    assert!(
        list.contains("\nplain\t") && list.contains("\nx\\n\\tfake\\t0x1\\t1\\tthp\\t0\t0x"),
        "{list}"
    );
    let listed = json(&m, &["list"]);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["plain", forged], "JSON carries the name as it is");
    let shown = stdout(&ctl(&m, &["show", forged]));
    assert!(shown.starts_with("name\tx\\n\\tfake"), "{shown}");

    // --mode is the bits given, whatever the umask.
    let script = format!(
        "umask 077 && exec {} -d {} create shared 2M --mode 2666",
        bin_dir().join("msharectl").display(),
        m.dir.display()
    );
    run(Command::new("sh").arg("-c").arg(&script));
    let mode = std::fs::metadata(m.path("shared"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o2666);
    let bad = ctl(&m, &["create", "y", "2M", "--mode", "9"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn man_pages_and_completions_come_from_the_command_line_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man");
    run(msharectl().arg("generate-man").arg(&man));
    for page in [
        "msharectl.1",
        "msharectl-pool.1",
        "msharectl-ksm.1",
        "msharectl-write.1",
        "msharectl-read.1",
        "msharectl-stat.1",
    ] {
        let text = read_text(&man.join(page));
        assert!(text.contains(".TH"), "{page}");
    }
    assert!(read_text(&man.join("msharectl-pool.1")).contains("reserve"));
    let comp = dir.path().join("completions");
    run(msharectl().arg("generate-completions").arg(&comp));
    let bash = read_text(&comp.join("msharectl.bash"));
    for word in ["pool", "ksm", "--reserve", "--unmerge", "--json"] {
        assert!(bash.contains(word), "bash completion lacks {word}");
    }
    assert!(read_text(&comp.join("_msharectl")).contains("#compdef msharectl"));
    assert!(read_text(&comp.join("msharectl.fish")).contains("complete -c msharectl"));
    let server_man = dir.path().join("man8");
    run(Command::new(msharefs_bin())
        .arg("--generate-man")
        .arg(&server_man));
    let page = read_text(&server_man.join("msharefs.8"));
    assert!(
        page.contains("hugetlb_pool"),
        "msharefs(8) lists the pool options"
    );
}

#[test]
fn the_pages_the_server_added_are_given_back_after_a_crash_and_a_restart() {
    let mut m = Server::mount("align=2M");
    assert_eq!(huge("surplus_hugepages"), 0);
    let (total, available) = (huge("nr_hugepages"), huge_available());
    let grow = 8u64.saturating_sub(available);
    stdout(&ctl(&m, &["create", "h", "16M", "--backing", "hugetlb"]));
    assert_eq!(huge("nr_hugepages"), total + grow);
    m.kill9();
    assert_eq!(
        huge("nr_hugepages"),
        total + grow,
        "the region's pages stay"
    );
    m.restart();
    assert_eq!(
        json(&m, &["pool"])["ours"],
        grow,
        "the new server knows them"
    );
    stdout(&ctl(&m, &["rm", "h"]));
    assert_eq!(huge("nr_hugepages"), total);
    assert_eq!(json(&m, &["pool"])["ours"], 0);
}

#[test]
fn a_large_transfer_on_a_terminal_shows_progress() {
    let m = Server::mount("align=2M");
    stdout(&ctl(&m, &["create", "big", "96M"]));
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, pattern(96 << 20)).unwrap();
    // script(1) gives msharectl a terminal; what it drew is in `typescript`.
    let typescript = dir.path().join("typescript");
    let cmd = format!(
        "{} -d {} write big < {}",
        bin_dir().join("msharectl").display(),
        m.dir.display(),
        input.display()
    );
    run(Command::new("script")
        .args(["-q", "-e", "-c", &cmd])
        .arg(&typescript));
    let drawn = String::from_utf8_lossy(&std::fs::read(&typescript).unwrap()).into_owned();
    assert!(
        drawn.contains("write big") && drawn.contains("MiB"),
        "a progress bar: {drawn:?}"
    );
    let back = ctl(&m, &["read", "big", "--offset", "95M"]);
    assert_eq!(back.stdout, pattern(96 << 20)[95 << 20..]);
    // Without a terminal, nothing but the data.
    let piped = ctl(&m, &["read", "big"]);
    assert!(
        piped.stderr.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&piped.stderr)
    );
}

#[test]
fn concurrent_hugetlb_creates_and_removes_keep_the_pool_accounting_right() {
    let m = Server::mount("align=2M");
    assert_eq!(huge("surplus_hugepages"), 0);
    let total = huge("nr_hugepages");
    let dir = m.dir.clone();
    // Four creators at once, each making and removing 2 MiB..8 MiB regions.
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mount = libmshare::Mount::at(&dir).unwrap();
                let opts = libmshare::CreateOptions {
                    backing: Some(libmshare::Backing::Hugetlb),
                    ..Default::default()
                };
                for i in 0..20u64 {
                    let name = format!("w{w}-{i}");
                    let size = (1 + (w + i) % 4) * MIB2;
                    let region = mount.create(&name, 0, size, &opts).unwrap();
                    region.map().unwrap().write(0, &[w as u8 + 1]);
                    if i % 3 != 0 {
                        mount.remove(&name).unwrap();
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    // What is left is held; the pool has exactly what the server added.
    let pool = json(&m, &["pool"]);
    let held = huge("nr_hugepages") - huge("free_hugepages");
    assert_eq!(
        huge("nr_hugepages"),
        total + pool["ours"].as_u64().unwrap(),
        "{pool}"
    );
    assert!(held > 0, "the kept regions hold pages");
    for name in stdout(&ctl(&m, &["list"])).lines().skip(1) {
        let name = name.split('\t').next().unwrap();
        stdout(&ctl(&m, &["rm", name]));
    }
    assert_eq!(huge("nr_hugepages"), total, "every page given back");
    assert_eq!(json(&m, &["pool"])["ours"], 0);
}

/// The issue's shell-level test: `tests/scripts/operator.sh` drives
/// msharectl as an operator's script would, with three holder processes
/// built against the installed library.
#[test]
fn a_shell_script_creates_loads_attaches_shows_reads_and_removes() {
    let m = Server::mount("align=2M");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/operator.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(bin_dir().join("msharectl"))
        .arg(&m.dir)
        .arg(bin_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "operator.sh: ok\n");
    assert!(!m.path("sga").exists());
}
