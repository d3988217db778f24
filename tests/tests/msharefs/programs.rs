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
    // Starting processes disturbs the page-table figures of other tests.
    let _serial = serial();
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
    let m = Mount::new("");
    compile("examples/donor.c", &donor);
    compile("examples/consumer.c", &consumer);
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

/// The C library installed from this build into a temporary prefix, and
/// the library examples built against it with pkg-config.
pub struct LibExamples {
    dir: tempfile::TempDir,
}

impl LibExamples {
    /// Installs with tools/install-libmshare.sh and compiles
    /// examples/lib_donor.c and lib_consumer.c (dynamic) and
    /// lib_consumer_static (libmshare.a).
    pub fn build() -> LibExamples {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("prefix");
        let ws = workspace();
        run(Command::new("bash")
            .arg(ws.join("tools/install-libmshare.sh"))
            .arg("--prefix")
            .arg(&prefix)
            .arg("--from")
            .arg(bin_dir()));
        for f in [
            "include/mshare.h",
            "lib/libmshare.so",
            "lib/libmshare.so.0",
            "lib/libmshare.a",
            "lib/pkgconfig/mshare.pc",
        ] {
            assert!(prefix.join(f).exists(), "{f} installed");
        }
        let pc = |args: &str| {
            let out = run(Command::new("pkg-config")
                .args(args.split(' '))
                .arg("mshare")
                .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")));
            out.split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let cflags = pc("--cflags");
        let libs = pc("--libs");
        let static_libs: Vec<String> = pc("--static --libs")
            .into_iter()
            .map(|a| {
                if a == "-lmshare" {
                    "-l:libmshare.a".to_string()
                } else {
                    a
                }
            })
            .collect();
        for (src, out, libs) in [
            ("lib_donor.c", "lib_donor", &libs),
            ("lib_consumer.c", "lib_consumer", &libs),
            ("lib_consumer.c", "lib_consumer_static", &static_libs),
        ] {
            run(Command::new("cc")
                .args(["-O2", "-Wall", "-Werror", "-o"])
                .arg(dir.path().join(out))
                .arg(ws.join("examples").join(src))
                .args(&cflags)
                .args(libs));
        }
        LibExamples { dir }
    }

    /// A command running example `name` against mount `m`.
    pub fn command(&self, m: &Mount, name: &str) -> Command {
        let mut c = Command::new(self.dir.path().join(name));
        c.env("MSHARE_DIR", &m.dir)
            .env("LD_LIBRARY_PATH", self.dir.path().join("prefix/lib"));
        c
    }

    /// Runs example `name` with `args`; its stdout (it must succeed).
    pub fn run(&self, m: &Mount, name: &str, args: &[&str]) -> String {
        run(self.command(m, name).args(args))
    }
}

#[test]
fn library_examples_build_with_pkg_config_and_share_a_hugetlb_region() {
    let m = Mount::new("align=2M");
    let _pool = HugePool::reserve(&m, 40);
    let lib = LibExamples::build();
    let out = lib.run(&m, "lib_donor", &["db", "64", "hugetlb"]);
    assert!(
        out.starts_with("created db: 64 MiB at 0x10000000000"),
        "{out}"
    );
    assert_eq!(lib.run(&m, "lib_consumer", &["db"]), "ok\n");
    assert_eq!(
        lib.run(&m, "lib_consumer_static", &["db"]),
        "ok\n",
        "linked with libmshare.a"
    );
    let dynamic = run(Command::new("ldd").arg(lib.dir.path().join("lib_consumer")));
    assert!(dynamic.contains("libmshare.so.0"), "{dynamic}");
    let missing = lib
        .command(&m, "lib_consumer")
        .arg("nosuch")
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    let text = String::from_utf8_lossy(&missing.stdout);
    assert!(
        text.contains("error: opening") && text.contains("nosuch") && text.contains("errno 2"),
        "{text}"
    );
    let again = lib
        .command(&m, "lib_donor")
        .args(["db", "64"])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("errno 17"),
        "EEXIST is reported"
    );
}
