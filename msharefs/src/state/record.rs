//! The state file's format, version 1: pure encoding and parsing, no I/O.
//!
//! One record per line, fields separated by single spaces:
//!
//! ```text
//! msharefs-state 1 align=1073741824 next=42          (header, first line)
//! N ino parent kind perm uid gid charged atime mtime ctime crtime name
//! L ino start size [addr:size:prot ...]
//! D ino
//! ```
//!
//! `N` is a node (`kind` is `dir`, `thp`, `shmem` or `hugetlb`; `perm` in
//! octal; times in nanoseconds since the epoch, signed; `name` escaped by
//! [`escape`]); `L` is a region's layout (start, size, objects); `D` says
//! the inode is gone. Later records for an inode replace earlier ones, so
//! the file is a snapshot followed by an append-only journal of changes.
//! A reader of format `n` reads every format up to `n`; a later format that
//! this version cannot read is refused, never guessed at.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mshare_uapi::Backing;

/// The format this version writes.
pub const FORMAT: u32 = 1;
/// The first word of the file.
pub const MAGIC: &str = "msharefs-state";

/// What a node is, as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// A directory.
    Dir,
    /// A region with this backing.
    Region(Backing),
}

/// A node: where it is named and its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRec {
    /// Inode number.
    pub ino: u64,
    /// Parent directory's inode number (the root names itself).
    pub parent: u64,
    /// Directory or region.
    pub kind: NodeKind,
    /// Permission bits.
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// The uid whose quota it counts against.
    pub charged: u32,
    /// atime, mtime, ctime, crtime.
    pub times: [SystemTime; 4],
    /// Its name in the parent.
    pub name: OsString,
}

/// A region's layout: start, size and objects as `(addr, size, prot)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutRec {
    /// Inode number.
    pub ino: u64,
    /// Start address.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// Objects, sorted by address.
    pub objects: Vec<(u64, u64, u32)>,
}

/// One line of the state file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A node.
    Node(NodeRec),
    /// A region's layout.
    Layout(LayoutRec),
    /// The inode is gone.
    Gone(u64),
}

impl Record {
    /// The inode the record is about.
    pub fn ino(&self) -> u64 {
        match self {
            Record::Node(n) => n.ino,
            Record::Layout(l) => l.ino,
            Record::Gone(i) => *i,
        }
    }

    /// The line, without its newline.
    pub fn encode(&self) -> String {
        match self {
            Record::Node(n) => {
                let kind = match n.kind {
                    NodeKind::Dir => "dir",
                    NodeKind::Region(b) => b.as_str(),
                };
                let t = n.times.map(nanos);
                format!(
                    "N {} {} {kind} {:o} {} {} {} {} {} {} {} {}",
                    n.ino,
                    n.parent,
                    n.perm,
                    n.uid,
                    n.gid,
                    n.charged,
                    t[0],
                    t[1],
                    t[2],
                    t[3],
                    escape(&n.name)
                )
            }
            Record::Layout(l) => {
                let mut s = format!("L {} {} {}", l.ino, l.start, l.size);
                for (addr, size, prot) in &l.objects {
                    s.push_str(&format!(" {addr}:{size}:{prot}"));
                }
                s
            }
            Record::Gone(ino) => format!("D {ino}"),
        }
    }

    /// Parses one line (without its newline).
    pub fn parse(line: &str) -> Result<Record, String> {
        let mut f = line.split(' ');
        let tag = f.next().unwrap_or_default();
        let mut num = |what: &str| -> Result<u64, String> {
            f.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("bad or missing {what}"))
        };
        let rec = match tag {
            "N" => {
                let ino = num("inode")?;
                let parent = num("parent")?;
                let kind = match f.next() {
                    Some("dir") => NodeKind::Dir,
                    Some(k) => NodeKind::Region(k.parse().map_err(|_| format!("bad kind {k}"))?),
                    None => return Err("missing kind".into()),
                };
                let perm = f
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 8).ok())
                    .ok_or("bad permissions")?;
                let mut small = |what: &str| -> Result<u32, String> {
                    f.next()
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| format!("bad or missing {what}"))
                };
                let (uid, gid, charged) = (small("uid")?, small("gid")?, small("charged uid")?);
                let mut times = [UNIX_EPOCH; 4];
                for t in &mut times {
                    *t = f
                        .next()
                        .and_then(|v| v.parse().ok())
                        .map(from_nanos)
                        .ok_or("bad time")?;
                }
                let name = unescape(f.next().ok_or("missing name")?)?;
                Record::Node(NodeRec {
                    ino,
                    parent,
                    kind,
                    perm,
                    uid,
                    gid,
                    charged,
                    times,
                    name,
                })
            }
            "L" => {
                let (ino, start, size) = (num("inode")?, num("start")?, num("size")?);
                let objects = f
                    .by_ref()
                    .map(|o| {
                        let mut p = o.split(':');
                        let mut n = || p.next().and_then(|v| v.parse::<u64>().ok());
                        match (n(), n(), n()) {
                            (Some(a), Some(s), Some(prot)) if prot <= u32::MAX as u64 => {
                                Ok((a, s, prot as u32))
                            }
                            _ => Err(format!("bad object {o}")),
                        }
                    })
                    .collect::<Result<_, _>>()?;
                Record::Layout(LayoutRec {
                    ino,
                    start,
                    size,
                    objects,
                })
            }
            "D" => Record::Gone(num("inode")?),
            other => return Err(format!("unknown record type {other:?}")),
        };
        if f.next().is_some() {
            return Err("trailing fields".into());
        }
        Ok(rec)
    }
}

/// The header line: format, alignment and the next inode number.
pub fn header(align: u64, next_ino: u64) -> String {
    format!("{MAGIC} {FORMAT} align={align} next={next_ino}")
}

/// What a state file holds: the alignment it was written with, the next
/// inode number, and the last record of each kind per inode (gone inodes
/// dropped).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// `align=` of the server that wrote it.
    pub align: u64,
    /// Above every inode number ever recorded.
    pub next_ino: u64,
    /// Nodes by inode number.
    pub nodes: BTreeMap<u64, NodeRec>,
    /// Layouts by inode number.
    pub layouts: BTreeMap<u64, LayoutRec>,
    /// Lines that could not be read (a torn last line after a crash in
    /// the middle of a write): `(line number, why)`.
    pub skipped: Vec<(usize, String)>,
}

/// Reads a whole state file. A header of another file type or of a later
/// format is an error; a bad record line is skipped and reported.
pub fn read(text: &str) -> Result<Snapshot, String> {
    let mut lines = text.split_inclusive('\n').enumerate();
    let (_, first) = lines.next().ok_or("empty state file")?;
    let mut h = first.trim_end_matches('\n').split(' ');
    if h.next() != Some(MAGIC) {
        return Err("not an msharefs state file".into());
    }
    let format: u32 = h
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or("bad format number")?;
    if format > FORMAT {
        return Err(format!(
            "written in format {format} by a later msharefs; this one reads up to format {FORMAT}"
        ));
    }
    let mut snap = Snapshot::default();
    for kv in h {
        match kv.split_once('=') {
            Some(("align", v)) => snap.align = v.parse().map_err(|_| "bad align")?,
            Some(("next", v)) => snap.next_ino = v.parse().map_err(|_| "bad next")?,
            _ => {} // Fields a later format adds to the header.
        }
    }
    for (i, line) in lines {
        let Some(line) = line.strip_suffix('\n') else {
            snap.skipped.push((i + 1, "torn last line".into()));
            break;
        };
        match Record::parse(line) {
            Ok(r) => {
                snap.next_ino = snap.next_ino.max(r.ino() + 1);
                match r {
                    Record::Node(n) => {
                        snap.nodes.insert(n.ino, n);
                    }
                    Record::Layout(l) => {
                        snap.layouts.insert(l.ino, l);
                    }
                    Record::Gone(ino) => {
                        snap.nodes.remove(&ino);
                        snap.layouts.remove(&ino);
                    }
                }
            }
            Err(why) => snap.skipped.push((i + 1, why)),
        }
    }
    // A layout without a node belongs to a region removed meanwhile.
    let nodes = &snap.nodes;
    snap.layouts.retain(|ino, _| nodes.contains_key(ino));
    Ok(snap)
}

/// Escapes a name into one field: bytes other than letters, digits and
/// `._-+,=@~` become `%XX`, so no name can contain a space or a newline.
pub fn escape(name: &OsStr) -> String {
    let mut s = String::with_capacity(name.len());
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || b"._-+,=@~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// Reverses [`escape`].
pub fn unescape(field: &str) -> Result<OsString, String> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = field.get(i + 1..i + 3).ok_or("bad escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad escape")?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(OsString::from_vec(out))
}

fn nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

fn from_nanos(n: i128) -> SystemTime {
    let d = Duration::from_nanos(n.unsigned_abs().min(u64::MAX as u128) as u64);
    if n >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(ino: u64, name: &[u8]) -> NodeRec {
        NodeRec {
            ino,
            parent: 1,
            kind: NodeKind::Region(Backing::Hugetlb),
            perm: 0o640,
            uid: 1000,
            gid: 100,
            charged: 1000,
            times: [
                UNIX_EPOCH + Duration::new(1_700_000_000, 123),
                UNIX_EPOCH - Duration::new(5, 7),
                UNIX_EPOCH,
                UNIX_EPOCH + Duration::from_secs(1),
            ],
            name: OsString::from_vec(name.to_vec()),
        }
    }

    #[test]
    fn records_round_trip() {
        let recs = [
            Record::Node(node(7, b"sga\n\tfake row %41 \xff")),
            Record::Node(NodeRec {
                kind: NodeKind::Dir,
                ..node(8, b"d")
            }),
            Record::Layout(LayoutRec {
                ino: 7,
                start: 1 << 40,
                size: 1 << 30,
                objects: vec![(1 << 40, 2 << 20, 3), ((1 << 40) + (4 << 20), 2 << 20, 1)],
            }),
            Record::Layout(LayoutRec {
                ino: 9,
                start: 0,
                size: 0,
                objects: vec![],
            }),
            Record::Gone(9),
        ];
        for r in recs {
            let line = r.encode();
            assert!(!line.contains('\n'), "{line:?}");
            assert_eq!(Record::parse(&line), Ok(r), "{line:?}");
        }
    }

    #[test]
    fn later_records_win_and_gone_removes() {
        let mut text = header(1 << 21, 3) + "\n";
        for r in [
            Record::Node(node(5, b"a")),
            Record::Node(node(6, b"b")),
            Record::Layout(LayoutRec {
                ino: 6,
                start: 1 << 40,
                size: 2 << 20,
                objects: vec![],
            }),
            Record::Node(node(5, b"renamed")),
            Record::Gone(6),
        ] {
            text += &(r.encode() + "\n");
        }
        let snap = read(&text).unwrap();
        assert_eq!(snap.align, 1 << 21);
        assert_eq!(snap.next_ino, 7, "above every inode seen, gone ones too");
        assert_eq!(snap.nodes.len(), 1);
        assert_eq!(snap.nodes[&5].name, "renamed");
        assert!(snap.layouts.is_empty());
        assert!(snap.skipped.is_empty());
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_reported() {
        let full = Record::Node(node(5, b"kept")).encode();
        let torn = Record::Node(node(6, b"torn")).encode();
        let text = format!("{}\n{full}\n{}", header(4096, 3), &torn[..10]);
        let snap = read(&text).unwrap();
        assert_eq!(snap.nodes.len(), 1);
        assert_eq!(snap.skipped, vec![(3, "torn last line".to_string())]);
    }

    #[test]
    fn later_formats_and_other_files_are_refused() {
        let later = format!("{MAGIC} {} align=4096 next=3\n", FORMAT + 1);
        assert!(read(&later).unwrap_err().contains("later msharefs"));
        assert!(read("hello\n").is_err());
        assert!(read("").is_err());
        // An earlier header without the fields a later one may add.
        let minimal = format!("{MAGIC} 1\nD 4\n");
        assert_eq!(read(&minimal).unwrap().next_ino, 5);
    }

    #[test]
    fn bad_lines_are_reported_not_fatal() {
        let text = format!("{}\nN 5 1\nX 1\nL 5 a b\n", header(4096, 3));
        let snap = read(&text).unwrap();
        assert_eq!(snap.skipped.len(), 3);
        assert!(snap.nodes.is_empty());
    }
}
