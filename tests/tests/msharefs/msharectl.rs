//! msharectl against a real mount.

use std::process::Stdio;

use msharefs_tests::*;

use crate::common::{ctl, msharectl, stdout};

#[test]
fn create_list_show_remove() {
    let m = Server::mount("align=2M");
    assert_eq!(
        stdout(&ctl(&m, &["info"])),
        format!("mount\t{}\nalignment\t2097152\n", m.dir.display())
    );
    let info: serde_json::Value =
        serde_json::from_str(&stdout(&ctl(&m, &["info", "--json"]))).unwrap();
    assert_eq!(info["alignment"], 2097152);
    assert_eq!(
        stdout(&ctl(&m, &["create", "a", "4M", "--start", "0x200000000"])),
        "",
        "quiet on success"
    );
    std::fs::create_dir(m.path("db")).unwrap();
    let made = stdout(&ctl(
        &m,
        &[
            "create",
            "db/b",
            "2M",
            "--backing",
            "shmem",
            "--mode",
            "640",
            "--json",
        ],
    ));
    let made: serde_json::Value = serde_json::from_str(&made).unwrap();
    assert_eq!(made["start"], 0x100_0000_0000u64, "{made}");
    assert_eq!(made["size"], 2097152);
    assert_eq!(made["backing"], "shmem");
    let list = stdout(&ctl(&m, &["list"]));
    let lines: Vec<_> = list.lines().collect();
    assert_eq!(lines[0], "NAME\tSTART\tSIZE\tBACKING\tALLOCATED");
    assert!(
        lines[1].starts_with("a\t0x200000000\t4194304\tthp\t"),
        "{list}"
    );
    assert!(
        lines[2].starts_with("db/b\t0x10000000000\t2097152\tshmem\t"),
        "{list}"
    );
    assert_eq!(lines.len(), 3);
    let listed: serde_json::Value =
        serde_json::from_str(&stdout(&ctl(&m, &["list", "--json"]))).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed[1]["name"], "db/b");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(m.path("db/b"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o640
    );
    let shown = stdout(&ctl(&m, &["show", "a"]));
    assert!(
        shown.starts_with("name\ta\nstart\t0x200000000\nsize\t4194304\nbacking\tthp\n"),
        "{shown}"
    );
    // The region is ready to map: one object covers it.
    let fd = open(&m.path("a"), libc::O_RDWR).unwrap();
    let map = Map::new(
        &fd,
        0x2_0000_0000,
        4 << 20,
        libc::PROT_READ | libc::PROT_WRITE,
        0,
    )
    .unwrap();
    map.set(0, 1);
    assert_eq!(
        ioctl::create_mapping(&fd, &anon_create(0x2_0000_0000, MIB2)),
        Err(nix::errno::Errno::EINVAL),
        "already covered"
    );
    assert_eq!(stdout(&ctl(&m, &["rm", "a", "db/b"])), "");
    assert!(!m.path("a").exists() && !m.path("db/b").exists());
}

#[test]
fn failures_have_messages_and_exit_codes() {
    let m = Server::mount("align=2M");
    let bad_size = ctl(&m, &["create", "x", "3M"]);
    assert_eq!(bad_size.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_size.stderr)
        .contains("multiple of the alignment (2097152 bytes)"));
    let bad_kind = ctl(&m, &["create", "x", "2M", "--backing", "zram"]);
    assert_eq!(bad_kind.status.code(), Some(2));
    let missing = ctl(&m, &["show", "nosuch"]);
    assert_eq!(missing.status.code(), Some(3), "no such region");
    let text = String::from_utf8_lossy(&missing.stderr);
    assert!(
        text.starts_with("msharectl: looking up")
            && text.contains("nosuch")
            && text.contains("No such file"),
        "{text}"
    );
    for args in [
        &["read", "nosuch"][..],
        &["rm", "nosuch"],
        &["write", "nosuch"],
    ] {
        assert_eq!(ctl(&m, args).status.code(), Some(3), "{args:?}");
    }
    stdout(&ctl(&m, &["create", "x", "2M"]));
    let twice = ctl(&m, &["create", "x", "2M"]);
    assert_eq!(twice.status.code(), Some(4), "the region exists");
    assert!(String::from_utf8_lossy(&twice.stderr).contains("File exists"));
    let past = ctl(&m, &["read", "x", "--offset", "4M"]);
    assert_eq!(past.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&past.stderr).contains("offset 4194304 is past its end"));
    let no_mount = msharectl()
        .args(["-d", "/nonexistent", "info"])
        .output()
        .unwrap();
    assert_eq!(no_mount.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_mount.stderr).contains("no msharefs mount found"));
    let usage = msharectl().arg("frobnicate").output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn a_closed_pipe_is_not_an_error() {
    let m = Server::mount("align=2M");
    for i in 0..200 {
        std::fs::File::create(m.path(&format!("r{i:03}"))).unwrap();
    }
    let mut child = msharectl()
        .arg("-d")
        .arg(&m.dir)
        .arg("list")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away at once
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty());
}

/// `msharectl bench` with small figures and no hugetlb contender (the pool
/// is left alone): every requested contender and phase is in the JSON, the
/// figures have the shape the kernel gives (4 KiB pages cost far more page
/// tables than thp), the plot is drawn, and nothing is left behind.
#[test]
fn bench_reports_every_contender_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("bench.svg");
    let out = msharectl()
        .args([
            "bench",
            "--json",
            "--runs",
            "2",
            "--rounds",
            "50",
            "--procs",
            "20",
            "--size",
            "256M",
            "--contenders",
            "posix-shm,file,libmshare-thp",
            "--phases",
            "attach,procs,control",
            "--creates",
            "100",
            "--regions",
            "50,150",
            "--plot",
        ])
        .arg(&svg)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("private msharefs"),
        "says what it starts: {err}"
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names = |rows: &serde_json::Value| -> Vec<String> {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|x| x["contender"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&r["attach"]), ["posix-shm", "file", "libmshare-thp"]);
    for row in r["attach"].as_array().unwrap() {
        let p50 = row["p50_us"]["median"].as_f64().unwrap();
        let p99 = row["p99_us"]["median"].as_f64().unwrap();
        assert!(p50 > 0.0 && p99 >= p50, "{row}");
    }
    assert_eq!(r["attach"][0]["p50_vs_posix_shm"]["median"], 1.0);
    let procs = r["procs"].as_array().unwrap();
    assert_eq!(procs.len(), 6, "10 and 20 processes, three contenders");
    let tables = |name: &str, n: u64| {
        procs
            .iter()
            .find(|x| x["contender"] == name && x["procs"] == n)
            .unwrap()["page_tables_kib"]["median"]
            .as_f64()
            .unwrap()
    };
    // 256 MiB of 4 KiB pages: 128 page-table pages (512 KiB) per process;
    // thp: one PMD table (4 KiB).
    assert!(
        tables("posix-shm", 20) > 400.0,
        "{}",
        tables("posix-shm", 20)
    );
    assert!(tables("file", 20) < 64.0, "{}", tables("file", 20));
    assert!(tables("libmshare-thp", 20) < 64.0);
    // The loaded pass: the msharefs contenders again, with one busy
    // process per CPU (posix-shm is left out of it).
    assert!(r["load"].as_u64().unwrap() >= 1, "{}", r["load"]);
    assert_eq!(names(&r["loaded"]), ["file", "libmshare-thp"]);
    assert!(err.contains("busy processes compete for the CPUs"), "{err}");
    let c = &r["control"];
    assert!(c["creates_per_s"]["median"].as_f64().unwrap() > 0.0);
    let fds: Vec<u64> = c["server"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["fds"].as_u64().unwrap())
        .collect();
    assert_eq!(fds.len(), 3, "0, 50 and 150 regions");
    assert!(
        fds[1] >= fds[0] + 50 && fds[2] >= fds[0] + 150,
        "a descriptor per region: {fds:?}"
    );
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.contains("libmshare-thp"));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("msharectl-bench"), "its mount is gone");
    let shm_left = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("msharectl-bench")
        })
        .count();
    assert_eq!(shm_left, 0, "its /dev/shm files are gone");
}
