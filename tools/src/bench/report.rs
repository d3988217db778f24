//! The report: figures with their spread, ratios taken within each run,
//! printed as a table or as JSON.

use std::collections::HashMap;
use std::fmt::Write as _;

use mshare_uapi::format_size;
use serde::Serialize;

use super::contender::Kind;
use super::control::{Footprint, Rates};
use super::{latency, procs, BenchArgs};

/// The median of repeated runs and their range.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Spread {
    /// Median.
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// Of `v` (NaN if empty).
    pub fn of(v: &[f64]) -> Spread {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        Spread {
            median: latency::quantile(&s, 0.5),
            min: s.first().copied().unwrap_or(f64::NAN),
            max: s.last().copied().unwrap_or(f64::NAN),
        }
    }

    fn show(&self, digits: usize) -> String {
        if self.min == self.max {
            format!("{:.digits$}", self.median)
        } else {
            format!(
                "{:.digits$} ({:.digits$}–{:.digits$})",
                self.median, self.min, self.max
            )
        }
    }
}

/// One contender's attach latency.
#[derive(Debug, Serialize)]
pub struct AttachRow {
    /// Contender.
    pub contender: Kind,
    /// p50, µs.
    pub p50_us: Spread,
    /// p99, µs.
    pub p99_us: Spread,
    /// p50 over posix-shm's p50 in the same run.
    pub p50_vs_posix_shm: Spread,
}

/// One contender with N processes.
#[derive(Debug, Serialize)]
pub struct ProcsRow {
    /// Contender.
    pub contender: Kind,
    /// Processes.
    pub procs: usize,
    /// Region bytes.
    pub size: u64,
    /// Wall time, s.
    pub wall_s: Spread,
    /// Wall time over memfd-hugetlb's in the same run.
    pub wall_vs_memfd_hugetlb: Option<Spread>,
    /// Page tables per process, KiB.
    pub page_tables_kib: Spread,
}

impl ProcsRow {
    /// Rows from runs of (contender, figure).
    pub fn from_runs(n: usize, size: u64, runs: &[Vec<(Kind, procs::Figure)>]) -> Vec<ProcsRow> {
        let Some(first) = runs.first() else {
            return Vec::new();
        };
        first
            .iter()
            .map(|(k, _)| {
                let of = |run: &Vec<(Kind, procs::Figure)>, k: Kind| {
                    run.iter().find(|(c, _)| *c == k).map(|(_, f)| *f)
                };
                let figs: Vec<procs::Figure> = runs.iter().filter_map(|r| of(r, *k)).collect();
                let ratios: Vec<f64> = runs
                    .iter()
                    .filter_map(|r| Some(of(r, *k)?.wall / of(r, Kind::MemfdHugetlb)?.wall))
                    .collect();
                ProcsRow {
                    contender: *k,
                    procs: n,
                    size,
                    wall_s: Spread::of(&figs.iter().map(|f| f.wall).collect::<Vec<_>>()),
                    wall_vs_memfd_hugetlb: (!ratios.is_empty()).then(|| Spread::of(&ratios)),
                    page_tables_kib: Spread::of(
                        &figs.iter().map(|f| f.page_tables_kib).collect::<Vec<_>>(),
                    ),
                }
            })
            .collect()
    }
}

/// The control plane.
#[derive(Debug, Serialize)]
pub struct Control {
    /// msharefs creates (+ size + object + close) per second.
    pub creates_per_s: Spread,
    /// msharefs unlinks per second.
    pub removes_per_s: Spread,
    /// /dev/shm creates (+ ftruncate + close) per second.
    pub shm_creates_per_s: Spread,
    /// /dev/shm unlinks per second.
    pub shm_removes_per_s: Spread,
    /// The server at 0 and more regions.
    pub server: Vec<Footprint>,
}

/// What the machine is.
#[derive(Debug, Serialize)]
pub struct Machine {
    /// `uname -r`.
    pub kernel: String,
    /// CPUs online.
    pub cpus: usize,
    /// MemTotal, GiB.
    pub memory_gib: f64,
}

/// Everything one `msharectl bench` measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The machine.
    pub machine: Machine,
    /// How the private server took requests: `io_uring` or `/dev/fuse`.
    pub transport: String,
    /// Runs of each phase.
    pub runs: usize,
    /// Region size of the attach and procs phases.
    pub size: u64,
    /// Attach latency.
    pub attach: Vec<AttachRow>,
    /// N processes, for each N.
    pub procs: Vec<ProcsRow>,
    /// Busy processes during the loaded pass of the procs phase (0: none).
    pub load: usize,
    /// The procs phase at --procs again, with `load` busy processes.
    pub loaded: Vec<ProcsRow>,
    /// The scale phase.
    pub scale: Vec<ProcsRow>,
    /// The control plane.
    pub control: Option<Control>,
    /// How long the benchmark took, s.
    pub seconds: f64,
}

fn machine() -> Machine {
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mem_kb = crate::procfs::meminfo("MemTotal") as f64;
    Machine {
        kernel,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib: (mem_kb / 1048576.0 * 10.0).round() / 10.0,
    }
}

impl Report {
    /// An empty report for `args`.
    pub fn new(args: &BenchArgs) -> Report {
        Report {
            machine: machine(),
            transport: String::new(),
            runs: args.runs,
            size: args.size,
            attach: Vec::new(),
            procs: Vec::new(),
            load: 0,
            loaded: Vec::new(),
            scale: Vec::new(),
            control: None,
            seconds: 0.0,
        }
    }

    /// Attach rows from runs.
    pub fn add_attach(
        &mut self,
        kinds: impl Iterator<Item = Kind>,
        runs: &[HashMap<Kind, latency::Figure>],
    ) {
        for k in kinds {
            let p50: Vec<f64> = runs.iter().filter_map(|r| Some(r.get(&k)?.p50)).collect();
            let p99: Vec<f64> = runs.iter().filter_map(|r| Some(r.get(&k)?.p99)).collect();
            let ratio: Vec<f64> = runs
                .iter()
                .filter_map(|r| Some(r.get(&k)?.p50 / r.get(&Kind::PosixShm)?.p50))
                .collect();
            self.attach.push(AttachRow {
                contender: k,
                p50_us: Spread::of(&p50),
                p99_us: Spread::of(&p99),
                p50_vs_posix_shm: Spread::of(&ratio),
            });
        }
    }

    /// The control plane from runs.
    pub fn add_control(&mut self, rates: &[Rates], server: Vec<Footprint>) {
        let s = |f: fn(&Rates) -> f64| Spread::of(&rates.iter().map(f).collect::<Vec<_>>());
        self.control = Some(Control {
            creates_per_s: s(|r| r.creates),
            removes_per_s: s(|r| r.removes),
            shm_creates_per_s: s(|r| r.shm_creates),
            shm_removes_per_s: s(|r| r.shm_removes),
            server,
        });
    }

    /// The report as text tables.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let m = &self.machine;
        let _ = writeln!(
            o,
            "msharectl bench: Linux {}, {} CPUs, {} GiB, msharefs requests over {}; figures are the median (range) of {} runs, ratios taken within each run",
            m.kernel, m.cpus, m.memory_gib, self.transport, self.runs
        );
        if !self.attach.is_empty() {
            let _ = writeln!(
                o,
                "\nattach latency, {} region, µs (one process, contenders interleaved)",
                format_size(self.size)
            );
            let _ = writeln!(
                o,
                "{:<20} {:>24} {:>24} {:>22}",
                "contender", "p50", "p99", "p50 × posix-shm"
            );
            for r in &self.attach {
                let _ = writeln!(
                    o,
                    "{:<20} {:>24} {:>24} {:>22}",
                    r.contender.label(),
                    r.p50_us.show(1),
                    r.p99_us.show(1),
                    r.p50_vs_posix_shm.show(2)
                );
            }
        }
        let loaded = format!(
            "the same with {} busy processes competing for the CPUs",
            self.load
        );
        for (title, rows) in [
            ("processes attach and read every 4 KiB", &self.procs),
            (loaded.as_str(), &self.loaded),
            (
                "scale: processes attach and touch one byte per 2 MiB",
                &self.scale,
            ),
        ] {
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(o, "\n{title}");
            let _ = writeln!(
                o,
                "{:<20} {:>6} {:>6} {:>26} {:>22} {:>26}",
                "contender",
                "procs",
                "size",
                "wall s",
                "wall × memfd-hugetlb",
                "page tables KiB/proc"
            );
            for r in rows.iter() {
                let _ = writeln!(
                    o,
                    "{:<20} {:>6} {:>6} {:>26} {:>22} {:>26}",
                    r.contender.label(),
                    r.procs,
                    format_size(r.size),
                    r.wall_s.show(3),
                    r.wall_vs_memfd_hugetlb.map_or("-".into(), |s| s.show(2)),
                    r.page_tables_kib.show(1)
                );
            }
        }
        if let Some(c) = &self.control {
            let _ = writeln!(o, "\ncontrol plane (2 MiB regions), per second");
            let _ = writeln!(o, "{:<36} {:>28} {:>28}", "", "msharefs", "/dev/shm");
            let _ = writeln!(
                o,
                "{:<36} {:>28} {:>28}",
                "create + size (+ object) + close",
                c.creates_per_s.show(0),
                c.shm_creates_per_s.show(0)
            );
            let _ = writeln!(
                o,
                "{:<36} {:>28} {:>28}",
                "unlink",
                c.removes_per_s.show(0),
                c.shm_removes_per_s.show(0)
            );
            let _ = writeln!(o, "\nserver holding regions");
            let _ = writeln!(o, "{:>10} {:>12} {:>10}", "regions", "RSS KiB", "fds");
            for f in &c.server {
                let _ = writeln!(o, "{:>10} {:>12} {:>10}", f.regions, f.rss_kib, f.fds);
            }
        }
        let _ = writeln!(o, "\ntook {:.0} s", self.seconds);
        o
    }
}
