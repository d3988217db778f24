//! `msharectl bench`: every contender back to back on this machine, with
//! absolute figures and ratios to the baseline taken within the same run.
//! `Documentation/performance.md` shows a run and says what it means.

mod contender;
mod control;
mod latency;
mod plot;
mod procs;
mod report;
mod setup;
mod sys;

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use mshare_uapi::{format_size, parse_size};

pub use contender::Kind;
use contender::Region;
use report::{ProcsRow, Report};
use setup::{Pool, PrivateServer};

/// Why the benchmark stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Something it needs could not be set up or measured.
    #[error("{0}")]
    Setup(String),
    /// A libmshare call failed.
    #[error(transparent)]
    Mshare(#[from] libmshare::Error),
}

impl BenchError {
    fn io(what: &str, path: &Path, e: std::io::Error) -> BenchError {
        BenchError::Setup(format!("{what} {}: {e}", path.display()))
    }
}

/// A phase of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// Attach latency p50/p99, one process, contenders interleaved.
    Attach,
    /// N processes attach and read a region: wall time and page tables.
    Procs,
    /// Many processes attach a large hugetlb (or thp) region, touching one
    /// byte per huge page.
    Scale,
    /// Creates and removes per second; server memory and descriptors at
    /// many regions.
    Control,
}

/// `msharectl bench` options.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Processes of the procs phase.
    #[arg(long, default_value_t = 1000)]
    pub procs: usize,
    /// Region size of the attach and procs phases.
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    pub size: u64,
    /// Runs of each phase; figures are the median with the range.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Attaches per contender and run in the attach phase.
    #[arg(long, default_value_t = 2000)]
    pub rounds: usize,
    /// Processes of the scale phase.
    #[arg(long, default_value_t = 10000)]
    pub scale_procs: usize,
    /// Region size of the scale phase.
    #[arg(long, default_value = "16G", value_parser = parse_size)]
    pub scale_size: u64,
    /// Regions created and removed for the rates of the control phase.
    #[arg(long, default_value_t = 5000)]
    pub creates: u64,
    /// Region counts at which the server's memory and descriptors are
    /// noted.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    pub regions: Vec<u64>,
    /// Phases to run [default: all].
    #[arg(long, value_delimiter = ',', value_name = "PHASE")]
    pub phases: Vec<Phase>,
    /// Contenders [default: all].
    #[arg(long, value_delimiter = ',', value_name = "NAME")]
    pub contenders: Vec<Kind>,
    /// The msharefs server to start [default: msharefs beside msharectl,
    /// else in PATH].
    #[arg(long, value_name = "PATH")]
    pub server: Option<PathBuf>,
    /// More mount options for the private server, e.g. `io_uring=off` to
    /// measure the `/dev/fuse` transport.
    #[arg(long, value_name = "OPTS")]
    pub server_options: Option<String>,
    /// Draw page tables per process and wall time against N into FILE.svg.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Busy processes competing for the CPUs in a second pass of the procs
    /// phase at --procs (the msharefs contenders and memfd-hugetlb); 0
    /// skips it [default: the number of CPUs].
    #[arg(long, value_name = "N")]
    pub load: Option<usize>,
}

/// The server binary to run.
fn server_binary(args: &BenchArgs) -> PathBuf {
    if let Some(p) = &args.server {
        return p.clone();
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.join("msharefs")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("msharefs"))
}

/// Says what the benchmark does, on stderr (stdout is the report).
fn say(msg: impl std::fmt::Display) {
    eprintln!("bench: {msg}");
}

/// A progress bar on stderr when it is a terminal (hidden otherwise).
fn bar(len: u64, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{msg:40} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    b.set_message(what.to_string());
    b
}

/// Runs the benchmark.
pub fn run(args: &BenchArgs) -> Result<Report, BenchError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(BenchError::Setup(
            "bench must run as root: it mounts a private msharefs and sizes the hugetlb pool"
                .into(),
        ));
    }
    let began = Instant::now();
    let phases = if args.phases.is_empty() {
        vec![Phase::Attach, Phase::Procs, Phase::Scale, Phase::Control]
    } else {
        args.phases.clone()
    };
    let kinds: Vec<Kind> = if args.contenders.is_empty() {
        Kind::ALL.to_vec()
    } else {
        Kind::ALL
            .iter()
            .copied()
            .filter(|k| args.contenders.contains(k))
            .collect()
    };
    let most = args
        .regions
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max(args.creates)
        + 64;
    let server = PrivateServer::start(&server_binary(args), most, args.server_options.as_deref())?;
    say(format_args!(
        "private msharefs (pid {}) on {}",
        server.pid(),
        server.dir.display()
    ));
    let pool = Pool::remember()?;
    let mut report = Report::new(args);
    report.transport = server.transport().to_string();
    say(format_args!(
        "msharefs requests go over {}",
        report.transport
    ));

    if phases.contains(&Phase::Attach) || phases.contains(&Phase::Procs) {
        let huge = kinds.iter().filter(|k| k.hugetlb()).count() as u64 * (args.size >> 21);
        say(format_args!(
            "reserving {huge} huge pages ({}) for the hugetlb contenders; the pool is put back at the end",
            format_size(huge << 21)
        ));
        pool.reserve(huge)?;
        let regions = kinds
            .iter()
            .map(|&k| Region::new(k, args.size, &server.dir, "main"))
            .collect::<Result<Vec<_>, _>>()?;
        if phases.contains(&Phase::Attach) {
            attach_phase(args, &regions, &mut report)?;
        }
        if phases.contains(&Phase::Procs) {
            procs_phase(args, &regions, &mut report)?;
        }
    }
    if phases.contains(&Phase::Scale) {
        scale_phase(args, &kinds, &server, &pool, &mut report)?;
    }
    if phases.contains(&Phase::Control) {
        control_phase(args, &server, &mut report)?;
    }
    drop(server);
    drop(pool);
    report.seconds = began.elapsed().as_secs_f64();
    if let Some(path) = &args.plot {
        plot::draw(&report, path)?;
        say(format_args!("plot written to {}", path.display()));
    }
    Ok(report)
}

fn attach_phase(
    args: &BenchArgs,
    regions: &[Region],
    report: &mut Report,
) -> Result<(), BenchError> {
    let mut runs = Vec::new();
    for run in 0..args.runs {
        let b = bar(
            args.rounds as u64,
            &format!("attach latency, run {}/{}", run + 1, args.runs),
        );
        runs.push(latency::measure(regions, args.rounds, &|| b.inc(1))?);
        b.finish_and_clear();
    }
    report.add_attach(regions.iter().map(|r| r.kind), &runs);
    Ok(())
}

fn procs_phase(
    args: &BenchArgs,
    regions: &[Region],
    report: &mut Report,
) -> Result<(), BenchError> {
    let mut counts = vec![10, 100];
    counts.retain(|&n| n < args.procs);
    counts.push(args.procs);
    for &n in &counts {
        // Small N are plot points: one run is enough.
        let runs = if n == args.procs { args.runs } else { 1 };
        let mut per_run = Vec::new();
        for run in 0..runs {
            let mut figs = Vec::new();
            for r in regions {
                let what = format!("{n} procs, {}, run {}/{runs}", r.kind.label(), run + 1);
                let b = bar(n as u64, &what);
                figs.push((r.kind, procs::measure(r, n, 4096, &|| b.inc(1))?));
                b.finish_and_clear();
            }
            per_run.push(figs);
        }
        report
            .procs
            .extend(ProcsRow::from_runs(n, args.size, &per_run));
    }
    let load = args
        .load
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if load > 0 {
        let loaded: Vec<&Region> = regions.iter().filter(|r| r.kind.loaded()).collect();
        let n = args.procs;
        let _busy = Busy::start(load)?;
        let mut per_run = Vec::new();
        for run in 0..args.runs {
            let mut figs = Vec::new();
            for r in &loaded {
                let what = format!(
                    "{n} procs, {}, {load} busy, run {}/{}",
                    r.kind.label(),
                    run + 1,
                    args.runs
                );
                let b = bar(n as u64, &what);
                figs.push((r.kind, procs::measure(r, n, 4096, &|| b.inc(1))?));
                b.finish_and_clear();
            }
            per_run.push(figs);
        }
        report.load = load;
        report.loaded = ProcsRow::from_runs(n, args.size, &per_run);
    }
    Ok(())
}

/// Busy processes that compete for the CPUs while alive.
struct Busy(Vec<std::process::Child>);

impl Busy {
    fn start(n: usize) -> Result<Busy, BenchError> {
        say(format_args!("{n} busy processes compete for the CPUs"));
        let mut busy = Busy(Vec::new());
        for _ in 0..n {
            let child = std::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .stdin(std::process::Stdio::null())
                .spawn()
                .map_err(|e| BenchError::Setup(format!("starting a busy process: {e}")))?;
            busy.0.push(child);
        }
        Ok(busy)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn scale_phase(
    args: &BenchArgs,
    kinds: &[Kind],
    server: &PrivateServer,
    pool: &Pool,
    report: &mut Report,
) -> Result<(), BenchError> {
    let n = args.scale_procs;
    let mut figs = Vec::new();
    // The hugetlb contenders first, on one reservation (one compaction),
    // and the thp ones after: 10 000 processes faulting 16 GiB of thp take
    // over a minute and leave freed page cache and page tables behind, and
    // the baseline should see the same machine as the hugetlb contenders
    // it is compared with.
    let mut order: Vec<Kind> = kinds
        .iter()
        .copied()
        .filter(|k| {
            !matches!(
                k,
                Kind::PosixShm | Kind::LibmshareThp | Kind::LibmshareShmem
            )
        })
        .collect();
    order.sort_by_key(|k| !k.hugetlb());
    if order.iter().any(|k| k.hugetlb()) {
        let pages = args.scale_size >> 21;
        say(format_args!(
            "reserving {pages} huge pages for {n} × {} (the hugetlb contenders)",
            format_size(args.scale_size),
        ));
        pool.reserve(pages)?;
    }
    for k in order {
        if !k.hugetlb() {
            pool.shrink(); // the thp contenders need that memory
        }
        let region = Region::new(k, args.scale_size, &server.dir, "scale")?;
        let b = bar(n as u64, &format!("scale: {n} procs, {}", k.label()));
        figs.push((k, procs::measure(&region, n, 2 << 20, &|| b.inc(1))?));
        b.finish_and_clear();
        drop(region);
    }
    pool.shrink();
    figs.sort_by_key(|(k, _)| kinds.iter().position(|x| x == k));
    report.scale = ProcsRow::from_runs(n, args.scale_size, &[figs]);
    Ok(())
}

fn control_phase(
    args: &BenchArgs,
    server: &PrivateServer,
    report: &mut Report,
) -> Result<(), BenchError> {
    let mut rates = Vec::new();
    for run in 0..args.runs {
        let b = bar(
            args.creates,
            &format!("creates, run {}/{}", run + 1, args.runs),
        );
        rates.push(control::rates(&server.dir, args.creates, &|| b.inc(1))?);
        b.finish_and_clear();
    }
    let mut steps = args.regions.clone();
    steps.sort_unstable();
    let fits = server.max_regions();
    if steps.iter().any(|&n| n > fits) {
        say(format_args!(
            "the server can hold {fits} regions here (each holds a descriptor; RLIMIT_NOFILE \
             cannot be raised further): measuring at {fits} instead of more"
        ));
        steps = steps.into_iter().map(|n| n.min(fits)).collect();
        steps.dedup();
    }
    let b = bar(
        steps.last().copied().unwrap_or(0),
        "regions held by the server",
    );
    let prints = control::footprints(server, &steps, &|| b.inc(1))?;
    b.finish_and_clear();
    report.add_control(&rates, prints);
    Ok(())
}
