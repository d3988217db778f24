//! Programs nobody here wrote, under `msharectl run`: CPython's own tests
//! of `multiprocessing.shared_memory`, a `SharedMemory` shared with a
//! child, and stress-ng's POSIX shared memory stressor. `tools/test.sh`
//! installs stress-ng; CPython 3.13 comes with this machine kind's pyenv.

use std::path::{Path, PathBuf};

use msharefs_tests::*;

use crate::preload::{names_in, under};

/// pyenv's CPython 3.13, which ships its test suite.
fn python313() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    let versions = Path::new(&home).join(".pyenv/versions");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&versions)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/python3.13"))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "no CPython 3.13 under {} (this machine kind's pyenv has one)",
            versions.display()
        )
    })
}

fn nothing_left(m: &Server) {
    wait_until("every region to go with the program", || {
        names_in(m, "anon").is_empty() && names_in(m, "shm").is_empty()
    });
}

#[test]
fn cpython_shared_memory_tests_pass_under_the_preload() {
    let m = Server::mount("");
    let py = python313();
    let o = under(
        &m,
        &[],
        &[
            py.to_str().unwrap(),
            "-m",
            "test",
            "test_multiprocessing_fork.test_processes",
            "-m",
            "*SharedMemory*",
        ],
    )
    .output()
    .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("Result: SUCCESS"), "{out}");
    let ran: u32 = out
        .split("Total tests: run=")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(ran >= 10, "the SharedMemory tests ran: {out}");
    assert!(!err.contains("left to libc"), "{err}");
    nothing_left(&m);
}

#[test]
fn a_shared_memory_object_is_a_region_that_a_child_shares() {
    let m = Server::mount("");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("preload/shared_memory.py");
    let o = under(
        &m,
        &[],
        &[
            python313().to_str().unwrap(),
            script.to_str().unwrap(),
            m.dir.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        out,
        "parent maps the region: True\nlisted: True\nchild maps the region: True\n\
         child wrote: child\nunlinked: True\n"
    );
    nothing_left(&m);
}

#[test]
fn stress_ng_posix_shared_memory_under_the_preload() {
    let m = Server::mount("");
    let o = under(
        &m,
        &["--verbose"],
        &[
            "stress-ng",
            "--shm",
            "2",
            "--shm-bytes",
            "16M",
            "--shm-objs",
            "8",
            "--timeout",
            "5",
            "--metrics-brief",
        ],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{err}");
    let all = format!("{out}{err}");
    assert!(all.contains("successful run completed"), "{all}");
    assert!(!all.contains("left to libc"), "{all}");
    assert!(!all.contains("fail"), "{all}");
    let served = format!("shm_open: {}/shm/", m.dir.display());
    assert!(
        all.matches(&served).count() >= 8,
        "its objects were regions: {all}"
    );
    nothing_left(&m);
}
