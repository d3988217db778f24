//! msharectl against a real mount.

use std::process::{Command, Output, Stdio};

use msharefs_tests::*;

fn ctl(m: &Server, args: &[&str]) -> Output {
    Command::new(bin_dir().join("msharectl"))
        .arg("-d")
        .arg(&m.dir)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn create_list_show_remove() {
    let m = Server::mount("align=2M");
    assert_eq!(
        stdout(&ctl(&m, &["info"])),
        format!("mount\t{}\nalignment\t2097152\n", m.dir.display())
    );
    assert_eq!(
        stdout(&ctl(&m, &["create", "a", "4M", "--start", "0x200000000"])),
        "a\t0x200000000\t4194304\n"
    );
    std::fs::create_dir(m.path("db")).unwrap();
    let out = stdout(&ctl(
        &m,
        &[
            "create",
            "db/b",
            "2M",
            "--backing",
            "shmem",
            "--mode",
            "640",
        ],
    ));
    assert!(out.starts_with("db/b\t0x10000000000\t2097152"), "{out}");
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
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(m.path("db/b"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o640
    );
    assert!(stdout(&ctl(&m, &["show", "a"])).starts_with("a\t0x200000000\t4194304\tthp"));
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
    stdout(&ctl(&m, &["rm", "a", "db/b"]));
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
    assert_eq!(missing.status.code(), Some(1));
    let text = String::from_utf8_lossy(&missing.stderr);
    assert!(
        text.starts_with("msharectl: opening")
            && text.contains("nosuch")
            && text.contains("No such file"),
        "{text}"
    );
    stdout(&ctl(&m, &["create", "x", "2M"]));
    let twice = ctl(&m, &["create", "x", "2M"]);
    assert_eq!(twice.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&twice.stderr).contains("File exists"));
    let no_mount = Command::new(bin_dir().join("msharectl"))
        .args(["-d", "/nonexistent", "info"])
        .output()
        .unwrap();
    assert_eq!(no_mount.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_mount.stderr).contains("no msharefs mount found"));
    let usage = Command::new(bin_dir().join("msharectl"))
        .arg("frobnicate")
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn a_closed_pipe_is_not_an_error() {
    let m = Server::mount("align=2M");
    for i in 0..200 {
        std::fs::File::create(m.path(&format!("r{i:03}"))).unwrap();
    }
    let mut child = Command::new(bin_dir().join("msharectl"))
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
