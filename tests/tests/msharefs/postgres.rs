//! PostgreSQL 15, unmodified, under `msharectl run`: its main segment (an
//! anonymous shared mapping made before it forks) and its dynamic shared
//! memory (`shm_open`, for parallel query) on msharefs; its data intact;
//! nothing left after a stop or after `kill -9` of every process.
//! `tools/test.sh` installs postgresql-15 where it is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use msharefs_tests::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::common::*;
use crate::preload::{names_in, under};

/// Where the Debian package puts the binaries.
const BIN: &str = "/usr/lib/postgresql/15/bin";

fn pg(prog: &str) -> String {
    format!("{BIN}/{prog}")
}

/// `runuser -u postgres -- ARGS`.
fn as_postgres(args: &[&str]) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).args(args);
    c
}

/// A cluster in a temporary directory, stopped (immediately) when dropped.
struct Cluster {
    dir: tempfile::TempDir,
}

impl Cluster {
    fn init() -> Cluster {
        assert!(
            Path::new(&pg("postgres")).exists(),
            "PostgreSQL 15 is not installed (tools/test.sh installs postgresql-15)"
        );
        let dir = tempfile::Builder::new()
            .prefix("msharefs-pg")
            .tempdir()
            .unwrap();
        run(Command::new("chown").arg("postgres:").arg(dir.path()));
        let data = dir.path().join("data");
        run(
            as_postgres(&[&pg("initdb"), "-A", "trust", "-D", data.to_str().unwrap()])
                .env("LC_ALL", "C"),
        );
        Cluster { dir }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Starts the postmaster under `msharectl run -v` on `m`.
    fn start(&self, m: &Server) {
        let opts = format!(
            "-k {} -c listen_addresses= -c shared_buffers=256MB -c max_connections=20",
            self.socket()
        );
        let log = self.dir.path().join("log");
        let o = under(
            m,
            &["--verbose"],
            &[
                "runuser",
                "-u",
                "postgres",
                "--",
                &pg("pg_ctl"),
                "-D",
                self.data().to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "300",
                "start",
            ],
        )
        .output()
        .unwrap();
        assert!(o.status.success(), "{o:?}\nlog:\n{}", self.log());
    }

    fn postmaster(&self) -> i32 {
        let text = std::fs::read_to_string(self.data().join("postmaster.pid")).unwrap();
        text.lines().next().unwrap().trim().parse().unwrap()
    }

    /// A client program as postgres against this cluster.
    fn client(&self, prog: &str, args: &[&str]) -> Output {
        as_postgres(&[&pg(prog), "-h", self.socket()])
            .args(args)
            .output()
            .unwrap()
    }

    fn sql(&self, sql: &str) -> String {
        let o = self.client("psql", &["-X", "-A", "-t", "-d", "postgres", "-c", sql]);
        stdout(&o)
    }

    fn stop(&self) {
        run(&mut as_postgres(&[
            &pg("pg_ctl"),
            "-D",
            self.data().to_str().unwrap(),
            "-m",
            "fast",
            "-w",
            "-t",
            "300",
            "stop",
        ]));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists() {
            let _ = as_postgres(&[
                &pg("pg_ctl"),
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
        }
    }
}

/// The processes whose parent is `pid`.
fn children_of(pid: i32) -> Vec<i32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        if after.split(' ').nth(1).and_then(|s| s.parse().ok()) == Some(pid) {
            v.push(p);
        }
    }
    v
}

/// The main segment's region and the pids `msharectl show` lists for it.
fn main_segment(m: &Server, postmaster: i32) -> (String, Vec<i32>) {
    let name = format!("anon/postgres.{postmaster}.1");
    let text = stdout(&ctl(m, &["show", &name]));
    let pids = text
        .lines()
        .find_map(|l| l.strip_prefix("pids\t"))
        .unwrap_or("")
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect();
    (name, pids)
}

fn nothing_left(m: &Server, huge_before: u64) {
    wait_until("PostgreSQL's regions to go", || {
        names_in(m, "anon").is_empty() && names_in(m, "shm").is_empty()
    });
    wait_until("the hugetlb pool to be given back", || {
        meminfo("HugePages_Total") == huge_before
    });
}

#[test]
fn postgres_runs_on_msharefs_and_leaves_nothing_after_a_stop() {
    // The cluster is declared last so that it stops first, even when the
    // test fails: a server stopped under a running PostgreSQL keeps.
    let m = Server::mount("");
    let c = Cluster::init();
    let huge_before = meminfo("HugePages_Total");
    c.start(&m);
    let postmaster = c.postmaster();
    let (name, pids) = main_segment(&m, postmaster);
    assert_eq!(
        names_in(&m, "anon"),
        [name[5..].to_string()],
        "one main segment"
    );
    let backends = children_of(postmaster);
    assert!(
        backends.len() >= 4,
        "checkpointer, writers, launchers: {backends:?}"
    );
    for p in std::iter::once(postmaster).chain(backends) {
        assert!(pids.contains(&p), "pid {p} maps the main segment: {pids:?}");
    }
    let shown = stdout(&ctl(&m, &["show", &name]));
    assert!(
        shown.contains("backing\thugetlb"),
        "hugetlb, nothing sized by hand: {shown}"
    );

    // Read-write traffic, then a check of every table and index.
    stdout(&c.client("pgbench", &["-i", "-s", "5", "-q", "postgres"]));
    let o = c.client("pgbench", &["-c", "4", "-j", "2", "-t", "300", "postgres"]);
    assert!(
        stdout(&o).contains("number of failed transactions: 0"),
        "{o:?}"
    );
    let o = c.client(
        "pg_amcheck",
        &["--install-missing", "--heapallindexed", "--all"],
    );
    assert!(o.status.success(), "pg_amcheck found corruption: {o:?}");

    // A parallel query: its dynamic shared memory goes through shm_open.
    let shm_before = c.log().matches("shm_open: ").count();
    let plan = c.sql(
        "SET max_parallel_workers_per_gather = 2; SET parallel_setup_cost = 0; \
         SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0; \
         EXPLAIN (ANALYZE, COSTS OFF) SELECT count(*) FROM pgbench_accounts",
    );
    assert!(plan.contains("Workers Launched: 2"), "{plan}");
    assert_eq!(
        c.sql("SELECT count(*) FROM pgbench_accounts").trim(),
        "500000"
    );
    let log = c.log();
    assert!(
        log.matches("shm_open: ").count() > shm_before,
        "the query's dynamic shared memory is a region of shm/:\n{log}"
    );
    assert!(!log.contains("left to libc"), "nothing fell back:\n{log}");

    c.stop();
    nothing_left(&m, huge_before);
}

#[test]
fn kill_9_of_the_postmaster_and_every_backend_leaves_nothing() {
    // The cluster is declared last so that it stops first, even when the
    // test fails: a server stopped under a running PostgreSQL keeps.
    let m = Server::mount("");
    let c = Cluster::init();
    let huge_before = meminfo("HugePages_Total");
    c.start(&m);
    let postmaster = c.postmaster();
    // A client connection, so that a backend maps it too.
    let before = children_of(postmaster).len();
    let mut client = as_postgres(&[&pg("psql"), "-h", c.socket(), "-d", "postgres"])
        .args(["-c", "SELECT pg_sleep(600)"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the client's backend", || {
        children_of(postmaster).len() > before
    });
    let (_, pids) = main_segment(&m, postmaster);
    for p in &pids {
        let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
    }
    let _ = client.kill();
    let _ = client.wait();
    nothing_left(&m, huge_before);
    let _ = std::fs::remove_file(c.data().join("postmaster.pid"));
}
