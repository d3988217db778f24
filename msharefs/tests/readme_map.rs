//! README's map of the server says what the code has: every file or
//! folder it names under `msharefs/` exists, and every module of the
//! library is named.

use std::path::Path;

/// The README's bullet on `msharefs/`.
fn server_bullet(readme: &str) -> &str {
    let start = readme
        .find("- `msharefs/` —")
        .expect("README has a bullet on msharefs/");
    let rest = &readme[start + 2..];
    let end = rest.find("\n- ").unwrap_or(rest.len());
    &rest[..end]
}

/// The backticked words of `text` that name files or folders.
fn paths(text: &str) -> Vec<&str> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| w.ends_with(".rs") || w.ends_with('/') || w.ends_with(".in"))
        .collect()
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_path_the_readme_names_exists() {
    let readme = std::fs::read_to_string(root().join("../README.md")).unwrap();
    let named = paths(server_bullet(&readme));
    assert!(named.len() > 20, "{named:?}");
    for p in named.iter().filter(|p| **p != "msharefs/") {
        let under_src = root().join("src").join(p);
        let under_crate = root().join(p);
        assert!(
            under_src.exists() || under_crate.exists(),
            "README names `{p}`, which is neither msharefs/src/{p} nor msharefs/{p}"
        );
    }
}

#[test]
fn every_module_of_the_library_is_in_the_readme() {
    let readme = std::fs::read_to_string(root().join("../README.md")).unwrap();
    let named = paths(server_bullet(&readme));
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    let modules: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
        .collect();
    assert!(modules.len() > 15, "{modules:?}");
    for m in modules {
        let (file, dir) = (format!("{m}.rs"), format!("{m}/"));
        assert!(
            named.iter().any(|n| *n == file || *n == dir),
            "module `{m}` (lib.rs) is missing from README's map of the server"
        );
    }
}
