//! C programs: the cover letter's donor and consumer, and the header's
//! ABI values against libmshare::abi.

use std::path::Path;
use std::process::Command;

use msharefs_tests::*;

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

/// One checked item of `mshare.h`: a C expression, how `printf` prints it,
/// and the value `mshare_uapi` says it must have.
struct Item {
    c: String,
    format: &'static str,
    expected: String,
}

fn num(c: &str, value: impl std::fmt::Display) -> Item {
    Item {
        c: format!("(unsigned long)({c})"),
        format: "%lu",
        expected: value.to_string(),
    }
}

fn text(c: &str, value: &str) -> Item {
    Item {
        c: c.to_string(),
        format: "%s",
        expected: value.to_string(),
    }
}

/// Size and every field offset of a struct.
macro_rules! layout {
    ($items:ident, $c:literal, $ty:ty, [$($field:ident),*]) => {
        $items.push(num(concat!("sizeof(struct ", $c, ")"), size_of::<$ty>()));
        $($items.push(num(
            concat!("offsetof(struct ", $c, ", ", stringify!($field), ")"),
            std::mem::offset_of!($ty, $field),
        ));)*
    };
}

/// Every macro, struct and function `mshare.h` declares, with the values
/// from `mshare_uapi` for those that have one.
fn header_items() -> (Vec<Item>, Vec<&'static str>) {
    use mshare_uapi::*;
    use std::mem::size_of;
    let mut items = Vec::new();
    layout!(items, "mshare_info", MshareInfo, [start, size]);
    layout!(
        items,
        "mshare_create",
        MshareCreate,
        [addr, size, offset, prot, flags, fd]
    );
    layout!(items, "mshare_unmap", MshareUnmap, [addr, size]);
    layout!(items, "mshare_setup", MshareSetup, [start, size, flags]);
    layout!(
        items,
        "mshare_options",
        MshareOptions,
        [backing, mode, flags]
    );
    for (name, value) in [
        ("MSHAREFS_GET_SIZE", MSHAREFS_GET_SIZE),
        ("MSHAREFS_SET_SIZE", MSHAREFS_SET_SIZE),
        ("MSHAREFS_CREATE_MAPPING", MSHAREFS_CREATE_MAPPING),
        ("MSHAREFS_UNMAP", MSHAREFS_UNMAP),
        ("MSHAREFS_SETUP", MSHAREFS_SETUP),
        ("MSHAREFS_UNMAPPED", MSHAREFS_UNMAPPED),
        ("MSHARE_SETUP_OBJECT", MSHARE_SETUP_OBJECT as u32),
        ("MSHARE_BACKING_DEFAULT", MSHARE_BACKING_DEFAULT),
        ("MSHARE_BACKING_THP", Backing::Thp as u32),
        ("MSHARE_BACKING_SHMEM", Backing::Shmem as u32),
        ("MSHARE_BACKING_HUGETLB", Backing::Hugetlb as u32),
        ("MSHARE_EXCL", MSHARE_EXCL),
        ("MSHARE_NO_OBJECT", MSHARE_NO_OBJECT),
    ] {
        items.push(num(name, value));
    }
    items.push(text("MSHARE_INFO_FILE", INFO_FILE_NAME));
    items.push(text("MSHARE_ANON_DIR", ANON_DIR));
    items.push(text("MSHARE_SHM_DIR", SHM_DIR));
    items.push(text("MSHARE_BACKING_XATTR", BACKING_XATTR));
    items.push(text("MSHARE_ATTACH_XATTR", ATTACH_XATTR));
    items.push(text("MSHARE_MEMORY_XATTR", MEMORY_XATTR));
    items.push(text("MSHARE_POOL_XATTR", POOL_XATTR));
    items.push(text("MSHARE_RESERVE_XATTR", RESERVE_XATTR));
    let functions = vec![
        "mshare_alignment",
        "mshare_create",
        "mshare_open",
        "mshare_attach",
        "mshare_get_info",
        "mshare_create_mapping",
        "mshare_unmap_range",
        "mshare_map",
        "mshare_detach",
        "mshare_fd",
        "mshare_close",
        "mshare_remove",
        "mshare_strerror",
    ];
    (items, functions)
}

/// The header without its `/* */` comments.
fn without_comments(header: &str) -> String {
    let mut out = String::new();
    let mut rest = header;
    while let Some(at) = rest.find("/*") {
        out.push_str(&rest[..at]);
        rest = rest[at..].split_once("*/").map_or("", |(_, after)| after);
    }
    out + rest
}

/// The names a C header declares: `#define`s (but the include guard),
/// struct definitions and opaque declarations, and functions.
fn declared(header: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let code = without_comments(header);
    let ident = |s: &str| {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<String>()
    };
    let mut macros = Vec::new();
    let mut structs = Vec::new();
    for line in code.lines() {
        if let Some(rest) = line.strip_prefix("#define ") {
            macros.push(ident(rest));
        } else if let Some(rest) = line.strip_prefix("struct ") {
            let name = ident(rest);
            let tail = &rest[name.len()..];
            if tail.starts_with(" {") || tail.starts_with(';') {
                structs.push(name);
            }
        }
    }
    macros.retain(|m| m != "MSHARE_H");
    let functions = code
        .match_indices("mshare_")
        .filter(|(at, _)| {
            let before = code[..*at].chars().next_back();
            !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(|(at, _)| ident(&code[at..]))
        .filter(|name| code.contains(&format!("{name}(")))
        .fold(Vec::new(), |mut v, name| {
            if !v.contains(&name) {
                v.push(name);
            }
            v
        });
    (macros, structs, functions)
}

#[test]
fn header_declares_exactly_the_rust_abi() {
    // Starting processes disturbs the page-table figures of other tests.
    let _serial = serial();
    let header_path = workspace().join("libmshare/include/mshare.h");
    let header = std::fs::read_to_string(&header_path).unwrap();
    let (items, functions) = header_items();

    // Every value, size and offset, as the C compiler sees them.
    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include <mshare.h>\nint main(void) {\n",
    );
    for it in &items {
        c += &format!("    printf(\"{}={}\\n\", {});\n", it.c, it.format, it.c);
    }
    c += "    return 0;\n}\n";
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("abi.c");
    std::fs::write(&src, &c).unwrap();
    let exe = tmp.path().join("abi");
    run(Command::new("cc")
        .args(["-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg("-I")
        .arg(workspace().join("libmshare/include")));
    let out = run(&mut Command::new(&exe));
    let expected: String = items
        .iter()
        .map(|it| format!("{}={}\n", it.c, it.expected))
        .collect();
    assert_eq!(out, expected);

    // Nothing in the header that this test does not check.
    let (macros, structs, mut declared_fns) = declared(&header);
    let checked = |name: &str| items.iter().any(|it| it.c.contains(name));
    let unchecked: Vec<_> = macros.iter().filter(|m| !checked(m)).collect();
    assert!(unchecked.is_empty(), "macros not checked: {unchecked:?}");
    let mut opaque = structs.clone();
    opaque.retain(|s| !checked(&format!("struct {s})")));
    assert_eq!(opaque, ["mshare_region"], "structs not checked");
    let mut wanted = functions.clone();
    wanted.sort_unstable();
    declared_fns.sort_unstable();
    assert_eq!(declared_fns, wanted, "functions declared in mshare.h");

    // And the C library exports exactly those functions.
    let nm = run(Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(bin_dir().join("liblibmshare.so")));
    let mut exported: Vec<_> = nm
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|n| n.starts_with("mshare_"))
        .collect();
    exported.sort_unstable();
    assert_eq!(exported, wanted, "functions exported by libmshare.so");
}

#[test]
fn cover_letter_donor_and_consumer_in_c() {
    let tmp = tempfile::tempdir().unwrap();
    let (donor, consumer) = (tmp.path().join("donor"), tmp.path().join("consumer"));
    let m = Server::mount("");
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
            "lib/libmshare-preload.so",
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
    pub fn command(&self, m: &Server, name: &str) -> Command {
        let mut c = Command::new(self.dir.path().join(name));
        c.env("MSHARE_DIR", &m.dir)
            .env("LD_LIBRARY_PATH", self.dir.path().join("prefix/lib"));
        c
    }

    /// Runs example `name` with `args`; its stdout (it must succeed).
    pub fn run(&self, m: &Server, name: &str, args: &[&str]) -> String {
        run(self.command(m, name).args(args))
    }
}

#[test]
fn library_examples_build_with_pkg_config_and_share_a_hugetlb_region() {
    let m = Server::mount("align=2M");
    let _pool = HugePool::reserve(&m, 40);
    let lib = LibExamples::build();
    let out = lib.run(&m, "lib_donor", &["db", "64", "hugetlb"]);
    assert!(
        out.starts_with("created db: 64 MiB at 0x10000000000"),
        "{out}"
    );
    assert_eq!(lib.run(&m, "lib_consumer", &["db"]), "ok\n");
    assert_eq!(
        lib.run(&m, "lib_consumer", &["--attach", "db"]),
        "ok\n",
        "mshare_attach, without opening the region file"
    );
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
