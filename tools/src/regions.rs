//! What `list` and `show` report of a region: its layout, its memory and,
//! on request, the processes that map it ([`crate::mappers`]).

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use libmshare::{Backing, Mount};
use mshare_uapi::{MemoryId, INFO_FILE_NAME, MEMORY_XATTR};
use serde::Serialize;

use crate::mappers::{self, Mapper};
use crate::names::escaped;

/// One region as `list` and `show` report it.
#[derive(Debug, Serialize)]
pub struct RegionReport {
    /// Name in the mount (lossy UTF-8 in JSON; escaped in tables).
    pub name: String,
    /// Start address; `None` while the size is not set.
    pub start: Option<u64>,
    /// Size in bytes (0 while not set).
    pub size: u64,
    /// Backing kind.
    pub backing: Option<String>,
    /// Memory allocated to it, in bytes.
    pub allocated: Option<u64>,
    /// Why msharectl could not open it (then only `allocated` is known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Who maps it (with `-l`, and always in `show`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The name as it is, for tables.
    #[serde(skip)]
    raw_name: OsString,
    /// Its identities in `/proc/PID/maps`: the region file's and its
    /// memory's.
    #[serde(skip)]
    ids: Vec<MemoryId>,
}

/// The processes mapping a region and what they cost.
#[derive(Debug, Serialize)]
pub struct Usage {
    /// The processes, by pid.
    pub mappers: Vec<Mapper>,
    /// Resident bytes summed over the processes.
    pub resident: u64,
    /// Estimated page-table bytes of all the mappings.
    pub page_tables: u64,
    /// What 4 KiB pages would cost for the same resident memory.
    pub page_tables_4k: u64,
    /// Processes whose mappings this user could not read: they may map
    /// the region too (run as root to count them).
    pub uninspected: usize,
}

/// Memory allocated to the region at `path`, asked of the server now
/// (the kernel may cache `st_blocks` for a second).
fn allocated_bytes(path: &Path) -> io::Result<u64> {
    use rustix::fs::{statx, AtFlags, StatxFlags, CWD};
    let st = statx(CWD, path, AtFlags::STATX_FORCE_SYNC, StatxFlags::BLOCKS)?;
    Ok(st.stx_blocks * 512)
}

/// The identities of the region at `path` in `/proc/PID/maps`.
fn identities(path: &Path) -> Vec<MemoryId> {
    let mut ids = Vec::new();
    if let Ok(m) = std::fs::metadata(path) {
        ids.push(MemoryId {
            major: libc::major(m.dev()),
            minor: libc::minor(m.dev()),
            ino: m.ino(),
        });
    }
    let mut buf = [0u8; 64];
    if let Ok(n) = rustix::fs::getxattr(path, MEMORY_XATTR, &mut buf) {
        if let Some(id) = std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|t| t.parse().ok())
        {
            ids.push(id);
        }
    }
    ids
}

/// Region `name` of `mount` (`raw` is the name as its bytes are).
pub fn report(mount: &Mount, name: &str, raw: &OsStr) -> RegionReport {
    let path = mount.dir().join(raw);
    let mut r = RegionReport {
        name: name.to_string(),
        start: None,
        size: 0,
        backing: None,
        allocated: allocated_bytes(&path).ok(),
        error: None,
        usage: None,
        raw_name: raw.to_os_string(),
        ids: identities(&path),
    };
    match mount.open(name, true) {
        Ok(region) => {
            r.backing = region
                .backing()
                .ok()
                .map(|b| Backing::as_str(b).to_string());
            if let Ok(info) = region.info() {
                r.start = Some(info.start);
                r.size = info.size;
            }
        }
        Err(e) => {
            // A region this user may not open still shows its size, as
            // `stat` does; its start needs the region opened.
            r.size = std::fs::metadata(&path).map_or(0, |m| m.len());
            r.error = Some(e.to_string());
        }
    }
    r
}

/// Every region under `dir` (names relative to the mount), sorted.
pub fn names(dir: &Path, prefix: &OsStr, out: &mut Vec<OsString>) -> io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let mut name = prefix.to_os_string();
        name.push(e.file_name());
        if e.file_type()?.is_dir() {
            let mut sub = name.clone();
            sub.push("/");
            names(&e.path(), &sub, out)?;
        } else if name != INFO_FILE_NAME {
            out.push(name);
        }
    }
    Ok(())
}

/// Adds who maps each of `regions` (one pass over `/proc`); returns the
/// processes that could not be inspected.
pub fn add_usage(regions: &mut [RegionReport]) -> Vec<u32> {
    let ids: Vec<MemoryId> = regions.iter().flat_map(|r| r.ids.clone()).collect();
    let scan = mappers::scan(&ids);
    for r in regions {
        let mappers = scan.mappers(&r.ids);
        r.usage = Some(Usage {
            resident: mappers.iter().map(|m| m.resident).sum(),
            page_tables: mappers.iter().map(|m| m.page_tables).sum(),
            page_tables_4k: mappers.iter().map(|m| m.page_tables_4k).sum(),
            uninspected: scan.uninspected.len(),
            mappers,
        });
    }
    scan.uninspected
}

/// The fields every report has.
const KEYS: [&str; 5] = ["name", "start", "size", "backing", "allocated"];
/// The fields of who maps a region.
const USAGE_KEYS: [&str; 5] = [
    "mappers",
    "resident",
    "page_tables",
    "page_tables_4k",
    "pids",
];

fn or_dash(v: Option<impl ToString>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

impl RegionReport {
    /// The values of a row and of the details, in the order of [`KEYS`]
    /// (and [`USAGE_KEYS`] with `usage`), `-` where a value is unknown.
    fn values(&self) -> Vec<String> {
        let mut v = vec![
            escaped(&self.raw_name),
            self.start.map_or("-".into(), |s| format!("{s:#x}")),
            self.size.to_string(),
            self.backing.as_deref().unwrap_or("?").to_string(),
            or_dash(self.allocated),
        ];
        if let Some(u) = &self.usage {
            let pids: Vec<String> = u.mappers.iter().map(|m| m.pid.to_string()).collect();
            v.extend([
                u.mappers.len().to_string(),
                u.resident.to_string(),
                u.page_tables.to_string(),
                u.page_tables_4k.to_string(),
                if pids.is_empty() {
                    "-".into()
                } else {
                    pids.join(",")
                },
            ]);
        }
        v
    }

    /// `(key, value)` pairs.
    fn fields(&self) -> impl Iterator<Item = (&'static str, String)> {
        KEYS.into_iter().chain(USAGE_KEYS).zip(self.values())
    }

    /// The header of [`Self::row`] (`long`: with the usage columns).
    pub fn header(long: bool) -> String {
        let keys = KEYS.iter().chain(if long { &USAGE_KEYS[..] } else { &[] });
        let keys: Vec<String> = keys.map(|k| k.to_uppercase()).collect();
        keys.join("\t")
    }

    /// One tab-separated row.
    pub fn row(&self) -> String {
        self.values().join("\t")
    }

    /// `key value` lines, then the table of mapping processes.
    pub fn details(&self) -> String {
        let mut s = String::new();
        for (k, v) in self.fields() {
            let _ = writeln!(s, "{k}\t{v}");
        }
        if let Some(u) = &self.usage {
            if u.uninspected > 0 {
                let _ = writeln!(s, "uninspected\t{}", u.uninspected);
            }
            s.push_str("\nPID\tUID\tMAPPED\tRESIDENT\tPAGE_TABLES\tPAGE_TABLES_4K\tCOMMAND\n");
            for m in &u.mappers {
                let _ = writeln!(
                    s,
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    m.pid,
                    m.uid,
                    m.mapped,
                    m.resident,
                    m.page_tables,
                    m.page_tables_4k,
                    escaped(m.command.as_ref())
                );
            }
        }
        s
    }
}
