//! Running msharefs as a system service: the install command, `mount -t`
//! and fstab through mount.fuse3, the systemd unit (verified, and its
//! capability set enough for every feature), and what systemd-logind's
//! `RemoveIPC=yes` does to msharefs regions.

use std::path::Path;
use std::process::Command;

use libmshare::{Backing, CreateOptions, Mount};

use crate::common::{as_user, failures};
use msharefs_tests::*;

/// The unit as installed with the server at `sbindir`.
fn unit_for(sbindir: &Path) -> String {
    let template = workspace().join("msharefs/systemd/msharefs.service.in");
    std::fs::read_to_string(template)
        .unwrap()
        .replace("@SBINDIR@", &sbindir.to_string_lossy())
}

/// Runs `script` with bash in a private mount namespace; its output, and
/// a failure with that output if it fails.
fn in_private_namespace(script: &str) -> String {
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "bash",
            "-euo",
            "pipefail",
            "-c",
            script,
        ])
        .current_dir(workspace())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script}\n--- output ---\n{text}");
    text
}

/// The install command puts everything under /usr/local (here a private
/// copy of it, in a private mount namespace, so the machine's /usr/local is
/// untouched), `mount -t fuse.msharefs` and an fstab line mount through
/// mount.fuse3 with the installed server, the installed unit passes
/// `systemd-analyze verify` (man page lookups included), and the uninstall
/// command removes every file.
#[test]
fn install_then_mount_t_fstab_and_uninstall() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().display();
    let from = bin_dir();
    let script = format!(
        r#"
        t={t}
        mkdir -p $t/usr-local $t/mnt $t/mnt2 $t/man-cache
        mount --bind $t/usr-local /usr/local
        mount --bind $t/man-cache /var/cache/man
        cp /etc/ld.so.cache $t/ld.so.cache && mount --bind $t/ld.so.cache /etc/ld.so.cache
        printf 'msharefs %s/mnt2 fuse.msharefs defaults,align=4M,state_dir=%s/st2 0 0\n' $t $t > $t/fstab
        mount --bind $t/fstab /etc/fstab
        trap 'umount $t/mnt $t/mnt2 2>/dev/null || true' EXIT
        bash tools/install.sh --from {from}
        for f in sbin/msharefs bin/msharectl include/mshare.h lib/libmshare.so lib/libmshare.a \
                 lib/libmshare-preload.so \
                 lib/pkgconfig/mshare.pc share/man/man8/msharefs.8 share/man/man1/msharectl.1 \
                 share/man/man1/msharectl-pool.1 share/man/man1/msharectl-ksm.1 \
                 share/bash-completion/completions/msharectl share/zsh/site-functions/_msharectl \
                 share/fish/vendor_completions.d/msharectl.fish \
                 lib/systemd/system/msharefs.service share/msharefs/postgresql-msharefs.conf; do
            test -e /usr/local/$f || {{ echo "missing /usr/local/$f"; exit 1; }}
        done
        systemd-analyze verify /usr/local/lib/systemd/system/msharefs.service
        echo verified
        # The PostgreSQL drop-in, with Debian's unit and the installed one.
        mkdir -p $t/units/postgresql@.service.d
        cp /lib/systemd/system/postgresql@.service $t/units/
        ln -s /usr/local/lib/systemd/system/msharefs.service $t/units/
        cp /usr/local/share/msharefs/postgresql-msharefs.conf $t/units/postgresql@.service.d/
        SYSTEMD_UNIT_PATH=$t/units: systemd-analyze verify --man=no postgresql@15-main.service \
            && echo "drop-in verified"
        man -w msharefs
        man -w msharectl-pool
        grep -q -- --reserve /usr/local/share/bash-completion/completions/msharectl
        mount -t fuse.msharefs msharefs $t/mnt -o align=2M,state_dir=$t/st1
        echo "mount-t: $(cat $t/mnt/mshare_info)"
        /usr/local/bin/msharectl -d $t/mnt create r 2M
        /usr/local/bin/msharectl -d $t/mnt list
        /usr/local/bin/msharectl -d $t/mnt run -- sh -c 'echo "preloaded: $LD_PRELOAD"'
        grep " $t/mnt " /proc/self/mountinfo
        umount $t/mnt
        mount $t/mnt2
        echo "fstab: $(cat $t/mnt2/mshare_info)"
        umount $t/mnt2
        bash tools/install.sh --uninstall
        echo "left: $(find /usr/local -type f -o -type l | wc -l)"
        "#,
        from = from.display()
    );
    let out = in_private_namespace(&script);
    assert!(out.contains("verified"), "{out}");
    assert!(out.contains("drop-in verified"), "{out}");
    assert!(
        out.contains("/usr/local/share/man/man8/msharefs.8"),
        "{out}"
    );
    assert!(out.contains("mount-t: 2097152"), "{out}");
    assert!(out.contains("fuse.msharefs msharefs"), "{out}");
    assert!(
        out.contains("\nr\t"),
        "msharectl list shows the region:\n{out}"
    );
    assert!(out.contains("fstab: 4194304"), "{out}");
    assert!(
        out.contains("preloaded: /usr/local/lib/libmshare-preload.so"),
        "msharectl run finds the installed preload library:\n{out}"
    );
    assert!(
        out.contains("left: 0"),
        "uninstall removes every file:\n{out}"
    );
    assert!(!tmp.path().join("st1").exists(), "umount freed the regions");
}

/// The unit passes `systemd-analyze verify`, and a server limited to its
/// `CapabilityBoundingSet=` with `NoNewPrivileges=` serves everything:
/// passthrough mmap, libmshare attaches by another user (the memory file
/// carries that user's region's owner and mode: CAP_CHOWN, CAP_FOWNER),
/// hugetlb, and adoption after kill -9.
#[test]
fn the_unit_verifies_and_its_capabilities_are_enough() {
    let tmp = tempfile::tempdir().unwrap();
    let unit = tmp.path().join("msharefs.service");
    let text = unit_for(&bin_dir());
    std::fs::write(&unit, &text).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let caps: Vec<String> = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet=")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert!(text.contains("NoNewPrivileges=yes") && text.contains("Type=notify"));
    let bounding = format!("-all,{}", caps.join(","));
    let mut m = Server::wrapped(
        "align=2M",
        &[
            "setpriv",
            "--bounding-set",
            &bounding,
            "--no-new-privs",
            "--",
        ],
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", m.pid())).unwrap();
    let bnd = status.lines().find(|l| l.starts_with("CapBnd:")).unwrap();
    assert_ne!(
        bnd, "CapBnd:\t000001ffffffffff",
        "the bounding set is limited"
    );
    let _pool = HugePool::reserve(&m, 2);
    std::fs::set_permissions(&m.dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let dir = m.dir.clone();
    let code = as_user(1000, || {
        let mount = Mount::at(&dir).unwrap();
        let opts = |b| CreateOptions {
            backing: Some(b),
            ..Default::default()
        };
        let huge = mount.create("huge", 0, MIB2, &opts(Backing::Hugetlb));
        let thp = mount.create("thp", 0, MIB2, &opts(Backing::Thp));
        let attached = huge
            .as_ref()
            .ok()
            .and_then(|r| r.map().ok())
            .map(|map| map.write(0, b"huge"))
            .is_some();
        let file_mapped = thp.is_ok()
            && open(&dir.join("thp"), libc::O_RDWR)
                .ok()
                .and_then(|fd| Map::new(&fd, 0, MIB2, libc::PROT_READ | libc::PROT_WRITE, 0).ok())
                .map(|map| map.write(0, b"thp!"))
                .is_some();
        failures(&[huge.is_ok(), thp.is_ok(), attached, file_mapped])
    });
    assert_eq!(code, 0, "failed checks (bits): {code:#b}\n{}", m.log_text());
    m.kill9();
    // Without CAP_DAC_OVERRIDE the memory files (uid 1000's, mode 0600)
    // cannot be opened again: the server refuses to start and changes
    // nothing, so the next server adopts them all.
    let fewer: Vec<&str> = caps
        .iter()
        .map(String::as_str)
        .filter(|c| *c != "+dac_override")
        .collect();
    assert!(fewer.len() < caps.len(), "the unit keeps CAP_DAC_OVERRIDE");
    let state_dir = format!("state_dir={}", m.state_dir().display());
    let out = Command::new("setpriv")
        .args(["--bounding-set", &format!("-all,{}", fewer.join(","))])
        .args(["--no-new-privs", "--"])
        .arg(msharefs_bin())
        .args(["-f", "-o", "align=2M", "-o", &state_dir])
        .arg(&m.dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot open the memory of 2 kept regions"),
        "{stderr}"
    );
    m.restart();
    assert!(
        m.log_text().contains("adopted 2 regions"),
        "{}",
        m.log_text()
    );
    let mount = Mount::at(&m.dir).unwrap();
    let mut b = [0u8; 4];
    mount
        .attach("huge", true)
        .unwrap_or_else(|e| panic!("{e}\n{}", m.log_text()))
        .read(0, &mut b);
    assert_eq!(&b, b"huge", "adopted under the unit's capabilities");
}

/// systemd-logind with `RemoveIPC=yes` removes, when a user's last session
/// ends, the SysV shared memory, semaphores and message queues and the POSIX
/// shared memory (/dev/shm) and message queues (/dev/mqueue) that the user
/// owns (systemd's src/shared/clean-ipc.c). msharefs regions live in the
/// server's memory, not in any of those, so they survive. This does what
/// logind does for uid 1000, and kills the user's processes as
/// `KillUserProcesses=yes` would.
#[test]
fn regions_survive_what_remove_ipc_removes() {
    let m = Server::mount("align=2M");
    std::fs::set_permissions(&m.dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let dir = m.dir.clone();
    let posix = Path::new("/dev/shm/msharefs-test-removeipc");
    let code = as_user(1000, || {
        let mount = Mount::at(&dir).unwrap();
        let made = mount
            .create("sga", 0, MIB2, &CreateOptions::default())
            .and_then(|r| r.map())
            .map(|map| map.write(0, b"sga of uid 1000"))
            .is_ok();
        let posix_made = std::fs::write(posix, b"posix").is_ok();
        // SAFETY: plain System V calls on a new private segment.
        let sysv = unsafe { libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600) };
        failures(&[made, posix_made, sysv >= 0])
    });
    assert_eq!(code, 0, "failed checks (bits): {code:#b}");

    // What logind does for uid 1000.
    let mut removed_sysv = 0;
    let table = std::fs::read_to_string("/proc/sysvipc/shm").unwrap();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (shmid, uid, cuid): (i32, u32, u32) = (
            f[1].parse().unwrap(),
            f[7].parse().unwrap(),
            f[9].parse().unwrap(),
        );
        if uid == 1000 || cuid == 1000 {
            // SAFETY: IPC_RMID of a segment id read from the kernel's table.
            if unsafe { libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut()) } == 0 {
                removed_sysv += 1;
            }
        }
    }
    let mut removed_posix = 0;
    for e in std::fs::read_dir("/dev/shm").unwrap().flatten() {
        use std::os::unix::fs::MetadataExt;
        if e.metadata().is_ok_and(|md| md.uid() == 1000) && std::fs::remove_file(e.path()).is_ok() {
            removed_posix += 1;
        }
    }
    assert!(
        removed_sysv >= 1 && removed_posix >= 1,
        "logind's cleanup removed the user's SysV and POSIX memory"
    );
    assert!(!posix.exists());

    // The region is still there, with its data, for the user's next login.
    let code = as_user(1000, || {
        let mut b = [0u8; 15];
        let seen = Mount::at(&dir)
            .and_then(|mount| mount.open("sga", true))
            .and_then(|r| r.map())
            .map(|map| map.read(0, &mut b))
            .is_ok();
        failures(&[seen, &b == b"sga of uid 1000"])
    });
    assert_eq!(code, 0, "failed checks (bits): {code:#b}");
}

/// Under a private prefix: `--help` is whole, the closing hint runs the
/// server itself (mount(8) would not find it there), a program built with
/// `mshare.pc` runs without `LD_LIBRARY_PATH`, one built with
/// `mshare-static.pc` does not need `libmshare.so`, and `--uninstall`
/// leaves not even the directories it made.
#[test]
fn install_under_a_private_prefix_links_runs_and_leaves_nothing() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("opt");
    let help = run(Command::new("bash")
        .args(["tools/install.sh", "--help"])
        .current_dir(workspace()));
    for word in ["--prefix", "--from", "--uninstall", "usage:"] {
        assert!(help.contains(word), "{word} in:\n{help}");
    }
    let out = run(Command::new("bash")
        .arg("tools/install.sh")
        .arg("--prefix")
        .arg(&prefix)
        .arg("--from")
        .arg(bin_dir())
        .current_dir(workspace()));
    let hint = out.lines().find(|l| l.starts_with("mount it:")).unwrap();
    assert!(
        hint.contains(&format!("{}/sbin/msharefs /run/mshare", prefix.display())),
        "{out}"
    );
    assert!(!hint.contains("mount -t"), "{out}");

    let src = tmp.path().join("app.c");
    std::fs::write(
        &src,
        "#include <mshare.h>\n#include <stdio.h>\n\
         int main(void) { printf(\"%lld\\n\", mshare_alignment(\"/nonexistent\")); return 0; }\n",
    )
    .unwrap();
    let pc = prefix.join("lib/pkgconfig");
    for (pcname, exe) in [("mshare", "app"), ("mshare-static", "app-static")] {
        let exe = tmp.path().join(exe);
        let script = format!(
            "cc {} $(pkg-config --cflags --libs {pcname}) -o {}",
            src.display(),
            exe.display()
        );
        run(Command::new("sh")
            .args(["-c", &script])
            .env("PKG_CONFIG_PATH", &pc));
        // -1: no mount there; the program ran.
        assert_eq!(run(&mut Command::new(&exe)).trim(), "-1", "{pcname}");
        let needed = run(Command::new("sh").args(["-c", &format!("readelf -d {}", exe.display())]));
        assert_eq!(
            needed.contains("libmshare.so"),
            pcname == "mshare",
            "{pcname}:\n{needed}"
        );
    }

    run(Command::new("bash")
        .arg("tools/install.sh")
        .arg("--uninstall")
        .arg("--prefix")
        .arg(&prefix)
        .current_dir(workspace()));
    let left: Vec<_> = walk_all(&prefix);
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Everything under `dir`, directories included.
fn walk_all(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        found.push(e.path());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(walk_all(&e.path()));
        }
    }
    found
}
