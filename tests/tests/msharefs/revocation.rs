//! A region's memory file, which libmshare opens itself (issue 21): it
//! carries the region's mode, its name is secret and changes whenever what
//! decides access to the region does, so a name learned while allowed opens
//! nothing once a new path walk would be refused; and nothing in the state
//! directory can be listed or guessed.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use libmshare::{Backing, CreateOptions, Mount};
use msharefs_tests::*;
use nix::errno::Errno;

use crate::common::*;

/// What takes a user's access away from a region after it learned the
/// memory file's name.
#[derive(Clone, Copy, Debug)]
enum Change {
    /// `chmod 600` of the region.
    ChmodRegion,
    /// `chmod 700` of the directory above it.
    ChmodDir,
    /// `chown` of the region from the user to another.
    Chown,
    /// A rename into a directory the user cannot search.
    RenameAway,
    /// Its removal.
    Remove,
}

const CHANGES: [Change; 5] = [
    Change::ChmodRegion,
    Change::ChmodDir,
    Change::Chown,
    Change::RenameAway,
    Change::Remove,
];

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, uid: u32) {
    let uid = nix::unistd::Uid::from_raw(uid);
    let gid = nix::unistd::Gid::from_raw(uid.as_raw());
    nix::unistd::chown(path, Some(uid), Some(gid)).unwrap();
}

/// The errno of opening `path` with `flags` as `uid` (0 if it opened).
fn open_as(uid: u32, path: &Path, flags: i32) -> i32 {
    let path = path.to_path_buf();
    as_user(uid, move || match open(&path, flags) {
        Ok(_) => 0,
        Err(e) => e as i32,
    })
}

/// The errno of a libmshare attach of `name` as `uid` (0 if it mapped).
fn attach_as(uid: u32, dir: &Path, name: &str) -> i32 {
    let (dir, name) = (dir.to_path_buf(), name.to_string());
    as_user(uid, move || {
        match Mount::at(&dir).unwrap().attach(&name, true) {
            Ok(_) => 0,
            Err(e) => e.errno() as i32,
        }
    })
}

/// Region `name` of `kind` made by `owner` (mode 0644 in a directory of
/// `owner`'s, mode 0755) and written; its path.
fn region_of(m: &Server, owner: u32, dir: &str, kind: Backing) -> PathBuf {
    std::fs::create_dir(m.path(dir)).unwrap();
    chown(&m.path(dir), owner);
    let (mount_dir, name) = (m.dir.clone(), format!("{dir}/r"));
    let code = as_user(owner, move || {
        let opts = CreateOptions {
            backing: Some(kind),
            mode: 0o644,
            ..Default::default()
        };
        let mount = Mount::at(&mount_dir).unwrap();
        let region = mount.create(&name, 0, MIB2, &opts).unwrap();
        region.map().unwrap().write(0, &[42]);
        0
    });
    assert_eq!(code, 0, "uid {owner} makes its region");
    m.path(&format!("{dir}/r"))
}

/// One case: `attacker` learns the memory file of `owner`'s region while
/// it may read it, `change` happens, and the name opens nothing (ENOENT:
/// renamed, not only refused by the mode), nor does a new attach.
fn learned_name_stops_working(m: &Server, kind: Backing, owner: u32, attacker: u32, c: Change) {
    let tag = format!("{kind}-{owner}-{attacker}-{c:?}").to_lowercase();
    let path = region_of(m, owner, &tag, kind);
    let name = format!("{tag}/r");
    if matches!(c, Change::Chown) {
        // The attacker owns it, alone (0600), until the chown.
        chown(&path, attacker);
        chmod(&path, 0o600);
    }
    let learned = attach_value(&path).unwrap().path.unwrap();
    assert_eq!(
        open_as(attacker, &learned, libc::O_RDONLY),
        0,
        "{tag}: the name opens while allowed"
    );
    assert_eq!(attach_as(attacker, &m.dir, &name), 0, "{tag}: attach");
    let moved = m.path(&format!("private-{tag}"));
    match c {
        Change::ChmodRegion => chmod(&path, 0o600),
        Change::ChmodDir => chmod(&m.path(&tag), 0o700),
        Change::Chown => chown(&path, owner),
        Change::RenameAway => {
            std::fs::create_dir(&moved).unwrap();
            chmod(&moved, 0o700);
            chown(&moved, owner);
            std::fs::rename(&path, moved.join("r")).unwrap();
        }
        Change::Remove => std::fs::remove_file(&path).unwrap(),
    }
    for flags in [libc::O_RDONLY, libc::O_RDWR, libc::O_WRONLY] {
        assert_eq!(
            open_as(attacker, &learned, flags),
            libc::ENOENT,
            "{tag}: the learned name is gone (flags {flags})"
        );
    }
    let now = match c {
        Change::RenameAway => format!("private-{tag}/r"),
        _ => name.clone(),
    };
    let again = attach_as(attacker, &m.dir, &now);
    let refused = if matches!(c, Change::Remove) {
        libc::ENOENT
    } else {
        libc::EACCES
    };
    assert_eq!(again, refused, "{tag}: a new attach is refused");
    if !matches!(c, Change::Remove | Change::RenameAway) {
        // The owner keeps its region, through the new name.
        assert_eq!(attach_as(owner, &m.dir, &name), 0, "{tag}: owner");
    }
}

fn every_change_revokes(kind: Backing) {
    let m = Server::mount("align=2M");
    let _pool = (kind == Backing::Hugetlb).then(|| HugePool::reserve(&m, 24));
    for (owner, attacker) in [(0, 65534), (0, 1000), (1000, 65534), (65534, 1000)] {
        for c in CHANGES {
            learned_name_stops_working(&m, kind, owner, attacker, c);
        }
    }
}

#[test]
fn learned_names_stop_working_thp() {
    every_change_revokes(Backing::Thp);
}

#[test]
fn learned_names_stop_working_shmem() {
    every_change_revokes(Backing::Shmem);
}

#[test]
fn learned_names_stop_working_hugetlb() {
    every_change_revokes(Backing::Hugetlb);
}

/// The memory file carries the region's owner, group and mode (without
/// execute), also after a chmod, and after a restart.
#[test]
fn memory_files_mirror_the_region_mode() {
    let mut m = Server::mount("align=2M");
    let _pool = HugePool::reserve(&m, 4);
    let mut files = Vec::new();
    for kind in Backing::ALL {
        let name = format!("m-{kind}");
        root_region(&m, &name, Some(kind), 0o751);
        nix::unistd::chown(
            &m.path(&name),
            Some(nix::unistd::Uid::from_raw(1000)),
            Some(nix::unistd::Gid::from_raw(65534)),
        )
        .unwrap();
        files.push(name);
    }
    let check = |m: &Server, mode: u32| {
        for name in &files {
            let file = attach_value(&m.path(name)).unwrap().path.unwrap();
            let meta = std::fs::metadata(&file).unwrap();
            assert_eq!(meta.mode() & 0o7777, mode, "{name}");
            assert_eq!((meta.uid(), meta.gid()), (1000, 65534), "{name}");
        }
    };
    check(&m, 0o640);
    for name in &files {
        chmod(&m.path(name), 0o4666);
    }
    check(&m, 0o666);
    m.kill9();
    m.restart();
    check(&m, 0o666);
}

/// Nothing in the state directory can be listed, and only names given out
/// open anything: not the inode number alone, not any other name; the
/// state file and the lock are root's alone.
#[test]
fn memory_files_cannot_be_listed_or_guessed() {
    // No pool reserved: the server grows it for the hugetlb region, and
    // records how much in the state directory (hugetlb_pool).
    let m = Server::mount("align=2M");
    let state = m.state_dir();
    for kind in Backing::ALL {
        let name = format!("g-{kind}");
        root_region(&m, &name, Some(kind), 0o666);
        let given = attach_value(&m.path(&name)).unwrap().path.unwrap();
        let dir = given.parent().unwrap().to_path_buf();
        assert_eq!(dir, state.join(kind.as_str()), "memory files of {kind}");
        let ino = std::fs::metadata(m.path(&name)).unwrap().ino();
        let file_name = given.file_name().unwrap().to_str().unwrap();
        let secret = file_name.split_once('.').unwrap().1;
        assert_eq!(secret.len(), 32, "128 bits: {file_name}");
        let guesses = [
            dir.join(format!("r{ino}")),
            dir.join(format!("r{ino}.{}", "0".repeat(32))),
            dir.join(format!("r{ino}.{}", &secret[..31])),
        ];
        for user in [1000, 65534] {
            assert_eq!(open_as(user, &given, libc::O_RDWR), 0, "mode 0666");
            for g in &guesses {
                assert_eq!(open_as(user, g, libc::O_RDONLY), libc::ENOENT, "{g:?}");
            }
            let listing = dir.clone();
            let code = as_user(user, move || {
                let err = std::fs::read_dir(&listing)
                    .err()
                    .and_then(|e| e.raw_os_error());
                i32::from(err != Some(libc::EACCES))
            });
            assert_eq!(code, 0, "uid {user} lists {dir:?}");
        }
    }
    for user in [1000, 65534] {
        let s = state.to_path_buf();
        let code = as_user(user, move || {
            let list = std::fs::read_dir(&s).err().and_then(|e| e.raw_os_error());
            let read = |f: &str| open(&s.join(f), libc::O_RDONLY).err();
            let plant = std::fs::File::create(s.join("thp/planted"));
            failures(&[
                list == Some(libc::EACCES),
                read("state") == Some(Errno::EACCES),
                read("lock") == Some(Errno::EACCES),
                read("hugetlb_pool") == Some(Errno::EACCES),
                plant.is_err(),
            ])
        });
        assert_eq!(code, 0, "uid {user}: failed checks (bit = check) {code:#b}");
    }
    let meta = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(meta(state), 0o711);
    for f in ["state", "lock", "hugetlb_pool"] {
        assert_eq!(meta(&state.join(f)), 0o600, "{f}");
    }
}

/// The attribute needs read permission on the region (the kernel checks
/// it, as for any `user.*` attribute): a write-only user learns no name,
/// and an unsized region has none to give.
#[test]
fn the_attribute_needs_read_permission() {
    let m = Server::mount("align=2M");
    root_region(&m, "wo", Some(Backing::Shmem), 0o602);
    let path = m.path("wo");
    let p = path.clone();
    let code = as_user(65534, move || {
        i32::from(attach_value(&p) != Err(Errno::EACCES))
    });
    assert_eq!(code, 0, "write-only: no attribute");
    std::fs::File::create(m.path("unsized")).unwrap();
    assert_eq!(attach_value(&m.path("unsized")), Err(Errno::EINVAL));
    let dir = m.path("d");
    std::fs::create_dir(&dir).unwrap();
    assert_eq!(attach_value(&dir), Err(Errno::ENODATA), "a directory");
}
