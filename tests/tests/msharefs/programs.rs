//! C programs: the cover letter's donor and consumer, and the header's
//! ABI values against libmshare::abi.

use std::path::{Path, PathBuf};
use std::process::Command;

use libmshare::abi;
use msharefs_tests::*;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Compiles `source` (relative to the workspace) against include/mshare.h.
fn compile(source: &str, out: &Path) {
    let ws = workspace();
    run(Command::new("cc")
        .args([
            "-O2",
            "-Wall",
            "-Wno-sizeof-pointer-memaccess",
            "-Wno-unused-result",
            "-o",
        ])
        .arg(out)
        .arg(ws.join(source))
        .arg("-I")
        .arg(ws.join("libmshare/include")));
}

#[test]
fn header_matches_the_rust_abi() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("abi.c");
    std::fs::write(
        &src,
        r#"#include <stdio.h>
#include <stddef.h>
#include <mshare.h>
int main(void) {
    printf("%zu %zu %zu %zu %zu\n", sizeof(struct mshare_info), sizeof(struct mshare_create),
           sizeof(struct mshare_unmap), offsetof(struct mshare_create, prot),
           offsetof(struct mshare_create, fd));
    printf("%#lx %#lx %#lx %#lx\n", (unsigned long)MSHAREFS_GET_SIZE, (unsigned long)MSHAREFS_SET_SIZE,
           (unsigned long)MSHAREFS_CREATE_MAPPING, (unsigned long)MSHAREFS_UNMAP);
    printf("%s\n", MSHARE_INFO_FILE);
    return 0;
}
"#,
    )
    .unwrap();
    let exe = tmp.path().join("abi");
    run(Command::new("cc")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .arg("-I")
        .arg(workspace().join("libmshare/include")));
    let out = run(&mut Command::new(&exe));
    let expected = format!(
        "16 40 16 24 32\n{:#x} {:#x} {:#x} {:#x}\n{}\n",
        abi::MSHAREFS_GET_SIZE,
        abi::MSHAREFS_SET_SIZE,
        abi::MSHAREFS_CREATE_MAPPING,
        abi::MSHAREFS_UNMAP,
        abi::INFO_FILE_NAME
    );
    assert_eq!(out, expected);
}

#[test]
fn cover_letter_donor_and_consumer_in_c() {
    let tmp = tempfile::tempdir().unwrap();
    let (donor, consumer) = (tmp.path().join("donor"), tmp.path().join("consumer"));
    compile("examples/donor.c", &donor);
    compile("examples/consumer.c", &consumer);
    let m = Mount::new("");
    let out = run(Command::new(&donor).env("MSHARE_DIR", &m.dir));
    assert!(out.contains("Some random shared text"), "{out}");
    let out = run(Command::new(&consumer).env("MSHARE_DIR", &m.dir));
    assert!(
        out.contains("Guest mmap at 0x100000000:\nSome random shared text\n"),
        "{out}"
    );
    // A second donor finds the region taken (O_EXCL), and says so.
    let again = Command::new(&donor)
        .env("MSHARE_DIR", &m.dir)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stderr).contains("MSHAREFS_SET_SIZE"));
}
