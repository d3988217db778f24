//! Unit tests of the option parser and its table.
use super::*;

#[test]
fn defaults_depend_on_root() {
    let root = Options::defaults(true);
    assert!(root.allow_other && root.default_permissions);
    let user = Options::defaults(false);
    assert!(!user.allow_other && !user.default_permissions);
    assert_eq!(root.align, 1 << 30);
    assert_eq!(root.backing, Backing::Thp);
}

#[test]
fn shown_defaults_are_the_code_defaults() {
    for spec in OPTIONS.iter().filter(|s| s.value.is_some()) {
        if ["fsname", "max_regions_per_user", "state_dir"].contains(&spec.name) {
            continue; // derived from SOURCE, max_regions, the mount point
        }
        let mut o = Options::defaults(false);
        o.apply(&format!("{}={}", spec.name, spec.default)).unwrap();
        assert_eq!(o, Options::defaults(false), "{}", spec.name);
    }
}

#[test]
fn documented_defaults_are_the_code_defaults() {
    let doc = include_str!("../../../Documentation/msharefs.md");
    let strip = |s: &str| s.replace('`', "").replace("\\|", "|").trim().to_string();
    let rows: Vec<Vec<String>> = doc
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| l.split(" | ").map(strip).collect())
        .collect();
    for spec in OPTIONS {
        let row = rows
            .iter()
            .find(|r| r[0].trim_start_matches("| ") == spec.synopsis())
            .unwrap_or_else(|| {
                panic!(
                    "Documentation/msharefs.md has no row for {}",
                    spec.synopsis()
                )
            });
        let default = row
            .last()
            .unwrap()
            .trim_end_matches(" |")
            .trim_end_matches('|');
        assert_eq!(
            default.trim(),
            spec.default,
            "documented default of {}",
            spec.name
        );
    }
}

#[test]
fn help_lists_every_option_with_its_default() {
    let h = help();
    for spec in OPTIONS {
        assert!(h.contains(&spec.synopsis()), "{}", spec.name);
    }
    assert!(h.contains("[default: 1G]") && h.contains("nosuid"), "{h}");
}

#[test]
fn applies_a_list() {
    let mut o = Options::defaults(false);
    o.apply(
        "align=2M,backing=hugetlb,max_regions=7,allow_other,nosuid,rw,defaults,x-systemd.automount",
    )
    .unwrap();
    assert_eq!(o.align, 2 << 20);
    assert_eq!(o.backing, Backing::Hugetlb);
    assert_eq!(o.max_regions, 7);
    assert!(o.allow_other);
    assert_eq!(o.flags, vec![MountFlag::NoSuid, MountFlag::ReadWrite]);
    o.apply("passthrough=off").unwrap();
    assert_eq!(o.passthrough, Passthrough::Off);
    o.apply("hugetlb_pool=manual,hugetlb_max=16G").unwrap();
    assert_eq!(o.hugetlb_pool, PoolPolicy::Manual);
    assert_eq!(o.hugetlb_max, PoolCeiling::Bytes(16 << 30));
    o.apply("hugetlb_max=75%").unwrap();
    assert_eq!(o.hugetlb_max.bytes(1000), 750);
}

#[test]
fn refuses_bad_values() {
    let mut o = Options::defaults(false);
    for bad in [
        "align=3M",
        "align=1K",
        "align",
        "backing=zram",
        "max_regions=0",
        "max_regions=x",
        "bogus",
        "passthrough",
        "passthrough=yes",
        "nosuid=1",
        "debug=1",
        "subtype=other",
        "fsname=",
        "hugetlb_pool=maybe",
        "hugetlb_max=101%",
        "hugetlb_max=lots",
        "hugetlb_max",
    ] {
        let err = o.apply(bad).unwrap_err();
        assert_eq!(err.option, bad, "{bad}");
    }
    o.apply("align=2M,bogus").unwrap_err();
    assert_eq!(
        o,
        Options::defaults(false),
        "a refused option changes nothing"
    );
}

#[test]
fn the_later_of_two_opposite_flags_wins_once() {
    use MountFlag::*;
    let mut o = Options::defaults(false);
    o.apply("ro,noexec,rw,dirsync,exec,noexec,ro,dirsync")
        .unwrap();
    assert_eq!(o.effective_flags(), vec![NoExec, ReadOnly, DirSync]);
    let mut o = Options::defaults(false);
    o.apply("nosuid,suid,nodev").unwrap();
    assert_eq!(o.effective_flags(), vec![Suid, NoDev]);
    assert!(Options::defaults(true).effective_flags().is_empty());
    for (_, f) in MOUNT_FLAGS {
        assert_eq!(f.opposite().and_then(MountFlag::opposite).unwrap_or(*f), *f);
    }
}
