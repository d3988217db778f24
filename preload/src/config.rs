//! What the library takes over, read once from the environment that
//! `msharectl run` sets (and that `exec` carries on to children).

use std::path::PathBuf;

use mshare_uapi::{parse_size, Backing};

use crate::once::Race;

/// `MSHARE_DIR`: the mount (else the first msharefs mount).
pub const ENV_DIR: &str = "MSHARE_DIR";
/// `MSHARE_PRELOAD_BACKING`: `auto` (default), `hugetlb`, `thp` or `shmem`.
pub const ENV_BACKING: &str = "MSHARE_PRELOAD_BACKING";
/// `MSHARE_PRELOAD_TAKE`: comma-separated `anon`, `shm` (default both).
pub const ENV_TAKE: &str = "MSHARE_PRELOAD_TAKE";
/// `MSHARE_PRELOAD_MIN_SIZE`: anonymous shared mappings below it stay with
/// libc (default 2M).
pub const ENV_MIN_SIZE: &str = "MSHARE_PRELOAD_MIN_SIZE";
/// `MSHARE_PRELOAD_LOG`: `quiet`, `warn` (default) or `verbose`.
pub const ENV_LOG: &str = "MSHARE_PRELOAD_LOG";

/// The default minimum size: one huge page.
pub const DEFAULT_MIN_SIZE: u64 = mshare_uapi::HUGE_PAGE_SIZE;

/// The backing of anonymous regions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// hugetlb where the server may grow the pool, else thp.
    Auto,
    /// This kind.
    Kind(Backing),
}

/// How much the library says on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Nothing.
    Quiet,
    /// Each call that was meant for msharefs but went to libc.
    Warn,
    /// Also each call served, and each left to libc by the rules.
    Verbose,
}

/// The configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The mount, if named.
    pub dir: Option<PathBuf>,
    /// Backing of anonymous regions.
    pub backing: Choice,
    /// Take over `mmap(MAP_SHARED|MAP_ANONYMOUS)`.
    pub anon: bool,
    /// Take over `shm_open`/`shm_unlink`.
    pub shm: bool,
    /// Minimum size of an anonymous mapping taken over.
    pub min_size: u64,
    /// What to say on stderr.
    pub log: Level,
    /// Values that could not be read, said once.
    pub errors: Vec<String>,
}

impl Config {
    /// The configuration that `var` (an environment lookup) gives.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Config {
        let mut errors = Vec::new();
        let backing = match var(ENV_BACKING).as_deref() {
            None | Some("") | Some("auto") => Choice::Auto,
            Some(s) => match s.parse() {
                Ok(k) => Choice::Kind(k),
                Err(_) => {
                    errors.push(format!(
                        "{ENV_BACKING}={s}: not auto, hugetlb, thp or shmem; using auto"
                    ));
                    Choice::Auto
                }
            },
        };
        let (mut anon, mut shm) = (true, true);
        if let Some(take) = var(ENV_TAKE) {
            (anon, shm) = (false, false);
            for t in take.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                match t {
                    "anon" => anon = true,
                    "shm" => shm = true,
                    other => {
                        errors.push(format!("{ENV_TAKE}: '{other}' is not anon or shm; ignored"))
                    }
                }
            }
        }
        let min_size = match var(ENV_MIN_SIZE) {
            None => DEFAULT_MIN_SIZE,
            Some(s) => parse_size(&s).unwrap_or_else(|_| {
                errors.push(format!("{ENV_MIN_SIZE}={s}: not a size; using 2M"));
                DEFAULT_MIN_SIZE
            }),
        };
        let log = match var(ENV_LOG).as_deref() {
            Some("quiet") => Level::Quiet,
            Some("verbose") => Level::Verbose,
            None | Some("") | Some("warn") => Level::Warn,
            Some(s) => {
                errors.push(format!("{ENV_LOG}={s}: not quiet, warn or verbose"));
                Level::Warn
            }
        };
        Config {
            dir: var(ENV_DIR).filter(|d| !d.is_empty()).map(PathBuf::from),
            backing,
            anon,
            shm,
            min_size,
            log,
            errors,
        }
    }

    /// The process's configuration, read at the first call.
    pub fn get() -> &'static Config {
        static CONFIG: Race<Config> = Race::new();
        CONFIG.get_or_init(|| {
            let c = Config::from_env(|k| std::env::var(k).ok());
            for e in &c.errors {
                crate::say::line(c.log, Level::Warn, format_args!("{e}"));
            }
            c
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(pairs: &[(&str, &str)]) -> Config {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_env(|k| env.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = with(&[]);
        assert_eq!(c.backing, Choice::Auto);
        assert!(c.anon && c.shm);
        assert_eq!(c.min_size, 2 << 20);
        assert_eq!(c.log, Level::Warn);
        assert!(c.errors.is_empty() && c.dir.is_none());
    }

    #[test]
    fn reads_each_variable_and_reports_bad_values() {
        let c = with(&[
            (ENV_BACKING, "thp"),
            (ENV_TAKE, "shm"),
            (ENV_MIN_SIZE, "64M"),
            (ENV_LOG, "quiet"),
            (ENV_DIR, "/mnt/m"),
        ]);
        assert_eq!(c.backing, Choice::Kind(Backing::Thp));
        assert!(!c.anon && c.shm);
        assert_eq!(c.min_size, 64 << 20);
        assert_eq!(c.log, Level::Quiet);
        assert_eq!(c.dir, Some(PathBuf::from("/mnt/m")));
        let bad = with(&[
            (ENV_BACKING, "gold"),
            (ENV_TAKE, "anon,sysv"),
            (ENV_MIN_SIZE, "x"),
        ]);
        assert_eq!(bad.errors.len(), 3, "{:?}", bad.errors);
        assert!(bad.anon && !bad.shm);
        assert_eq!(bad.backing, Choice::Auto);
    }
}
