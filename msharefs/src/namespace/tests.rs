//! Pure-logic tests of the namespace, without a mount.

use super::*;

const ROOMY: Limits = Limits {
    nodes: 100,
    per_user: 100,
};

fn ns() -> Namespace {
    Namespace::new(0, 0, ROOMY)
}
fn dir() -> Kind {
    Kind::Dir(Dir::default())
}
fn meta() -> Meta {
    Meta::new(0o755, 1000, 1000)
}
fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

#[test]
fn info_file_is_fixed() {
    let mut n = ns();
    assert_eq!(n.child(ROOT, os("mshare_info")), Ok(INFO));
    assert_eq!(
        n.remove(ROOT, os("mshare_info"), Removal::File)
            .unwrap_err()
            .errno,
        Errno::EPERM
    );
    assert_eq!(
        n.rename(ROOT, os("mshare_info"), ROOT, os("x"), false)
            .unwrap_err()
            .errno,
        Errno::EPERM
    );
    n.insert(ROOT, os("a"), dir(), meta()).unwrap();
    assert_eq!(
        n.rename(ROOT, os("a"), ROOT, os("mshare_info"), false)
            .unwrap_err()
            .errno,
        Errno::EPERM
    );
}

#[test]
fn directories() {
    let mut n = ns();
    let d = n.insert(ROOT, os("d"), dir(), meta()).unwrap();
    let e = n.insert(d, os("e"), dir(), meta()).unwrap();
    assert_eq!(
        n.insert(ROOT, os("d"), dir(), meta()).unwrap_err().errno,
        Errno::EEXIST
    );
    assert_eq!(n.node(d).unwrap().nlink(), 3);
    assert_eq!(
        n.remove(ROOT, os("d"), Removal::Dir).unwrap_err().errno,
        Errno::ENOTEMPTY
    );
    assert_eq!(
        n.rename(ROOT, os("d"), e, os("x"), false)
            .unwrap_err()
            .errno,
        Errno::EINVAL
    );
    assert_eq!(
        n.remove(ROOT, os("d"), Removal::File).unwrap_err().errno,
        Errno::EISDIR
    );
    assert_eq!(n.remove(d, os("e"), Removal::Dir), Ok(e));
    assert!(n.remove_if_unused(e).is_some());
    assert_eq!(n.remove(ROOT, os("d"), Removal::Dir), Ok(d));
    assert_eq!(n.child(ROOT, os("d")).unwrap_err().errno, Errno::ENOENT);
    let long = "x".repeat(256);
    assert_eq!(
        n.insert(ROOT, os(&long), dir(), meta()).unwrap_err().errno,
        Errno::ENAMETOOLONG
    );
}

#[test]
fn rename_rules() {
    let mut n = ns();
    let a = n.insert(ROOT, os("a"), dir(), meta()).unwrap();
    let b = n.insert(ROOT, os("b"), dir(), meta()).unwrap();
    let c = n.insert(b, os("c"), dir(), meta()).unwrap();
    assert_eq!(
        n.rename(ROOT, os("a"), ROOT, os("b"), false)
            .unwrap_err()
            .errno,
        Errno::ENOTEMPTY
    );
    assert_eq!(
        n.rename(ROOT, os("a"), ROOT, os("b"), true)
            .unwrap_err()
            .errno,
        Errno::EEXIST
    );
    assert_eq!(n.rename(ROOT, os("a"), b, os("a2"), false), Ok(None));
    assert_eq!(n.child(b, os("a2")), Ok(a));
    assert_eq!(n.node(a).unwrap().parent, b);
    assert_eq!(
        n.rename(b, os("a2"), b, os("c"), false),
        Ok(Some(c)),
        "an empty directory is replaced"
    );
    assert_eq!(n.child(b, os("c")), Ok(a));
    assert!(!n.node(c).unwrap().is_linked());
}

#[test]
fn forget_removes_only_unused_nodes() {
    let mut n = ns();
    let d = n.insert(ROOT, os("d"), dir(), meta()).unwrap();
    n.node(d).unwrap().add_lookup();
    n.node(d).unwrap().add_lookup();
    n.remove(ROOT, os("d"), Removal::Dir).unwrap();
    assert!(n.forget(d, 1).is_none(), "still looked up");
    assert!(n.forget(d, 1).is_some());
    assert!(n.node(d).is_err());
}

#[test]
fn every_node_counts_and_each_user_has_a_share() {
    let mut n = Namespace::new(
        0,
        0,
        Limits {
            nodes: 4,
            per_user: 2,
        },
    );
    let as_uid = |uid| Meta::new(0o755, uid, uid);
    let d = n.insert(ROOT, os("d1"), dir(), as_uid(1000)).unwrap();
    n.insert(ROOT, os("d2"), dir(), as_uid(1000)).unwrap();
    let err = n.insert(ROOT, os("d3"), dir(), as_uid(1000)).unwrap_err();
    assert_eq!(
        err.errno,
        Errno::EDQUOT,
        "directories count against the user"
    );
    n.insert(ROOT, os("o1"), dir(), as_uid(1001)).unwrap();
    n.insert(ROOT, os("r1"), dir(), as_uid(0)).unwrap();
    let err = n.insert(ROOT, os("r2"), dir(), as_uid(0)).unwrap_err();
    assert_eq!(err.errno, Errno::ENOSPC, "the mount is full, root too");
    n.remove(ROOT, os("d1"), Removal::Dir).unwrap();
    assert_eq!(
        n.node_count(),
        3,
        "a removed directory stops counting at once, not when the kernel forgets it"
    );
    let d3 = n.insert(ROOT, os("d3"), dir(), as_uid(1000)).unwrap();
    assert!(n.remove_if_unused(d).is_some());
    assert_eq!(n.node_count(), 4, "and is not uncounted twice");
    n.uncount(d3);
    n.uncount(d3);
    assert_eq!(n.node_count(), 3, "uncounting is once per node");
}

#[test]
fn listing_resumes_at_a_cookie() {
    let mut n = ns();
    for name in ["b", "a", "c"] {
        n.insert(ROOT, os(name), dir(), meta()).unwrap();
    }
    let mut seen = Vec::new();
    n.list(ROOT, 0, &mut |e| {
        seen.push((e.cookie, e.name.to_string_lossy().into_owned()));
        seen.len() == 3
    })
    .unwrap();
    let names: Vec<_> = seen.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, [".", "..", "mshare_info"]);
    n.remove(ROOT, os("b"), Removal::Dir).unwrap();
    let mut rest = Vec::new();
    n.list(ROOT, seen[2].0, &mut |e| {
        rest.push(e.name.to_string_lossy().into_owned());
        false
    })
    .unwrap();
    assert_eq!(rest, ["a", "c"], "in creation order, nothing skipped");
}
