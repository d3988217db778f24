//! `msharectl`: the msharefs command line for shell scripts and operators,
//! a thin layer over libmshare.
//!
//! Exit status: 0 success, 1 an operation failed (the message names it,
//! the region and the errno), 2 bad usage, 3 no such region, 4 the region
//! exists already. A closed stdout (`msharectl list | head`) is not an
//! error.
#![deny(unsafe_code)]

mod bench;
mod cli;
mod error;
mod kept;
mod ksm;
mod mappers;
mod names;
mod pool;
mod procfs;
mod regions;
mod run;
mod stat;
mod transfer;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use libmshare::{CreateOptions, Mount};
use mshare_uapi::{Backing, HUGE_PAGE_SIZE, USER_ADDR_END};
use nix::errno::Errno;
use serde::Serialize;

use crate::cli::{Cli, Command, KsmAction};
use crate::error::Error;
use crate::regions::RegionReport;

/// Prints `value` as JSON or as `text()`.
fn emit<T: Serialize>(
    out: &mut impl Write,
    json: bool,
    value: &T,
    text: impl FnOnce(&T) -> String,
) -> Result<(), Error> {
    if json {
        serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::from)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", text(value))?;
    }
    Ok(())
}

/// Says on stderr which processes could not be looked at, and so `may`
/// (map regions too, have merged pages too) without being counted.
fn warn_uninspected(pids: &[u32], may: &str) {
    if pids.is_empty() {
        return;
    }
    const SHOWN: usize = 10;
    let mut list: Vec<String> = pids.iter().take(SHOWN).map(u32::to_string).collect();
    if pids.len() > SHOWN {
        list.push("...".into());
    }
    let (processes, them) = if pids.len() == 1 {
        ("process", "it")
    } else {
        ("processes", "them")
    };
    eprintln!(
        "msharectl: {} {processes} of other users could not be inspected (pid {}) and may \
         {may}; run as root to count {them}",
        pids.len(),
        list.join(", ")
    );
}

/// What processes that could not be inspected may do.
const MAP_TOO: &str = "map regions too";

/// Every region of `mount`, as reported.
fn all_regions(mount: &Mount) -> Result<Vec<RegionReport>, Error> {
    let mut names = Vec::new();
    regions::names(mount.dir(), "".as_ref(), &mut names)?;
    Ok(names
        .iter()
        .map(|raw| regions::report(mount, &raw.to_string_lossy(), raw))
        .collect())
}

fn generate_completions(dir: &Path) -> io::Result<()> {
    use clap_complete::Shell;
    std::fs::create_dir_all(dir)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), "msharectl", dir)?;
    }
    Ok(())
}

/// An error unless `meta` (of `name`) is a region's: directories and the
/// mount's `mshare_info` are not.
fn not_a_region(name: &str, meta: &std::fs::Metadata) -> Result<(), Error> {
    if meta.is_dir() {
        Err(Error::NotRegion(name.into(), "a directory"))
    } else if name.trim_matches('/') == mshare_uapi::INFO_FILE_NAME {
        Err(Error::NotRegion(
            name.into(),
            "the mount's information file",
        ))
    } else if !meta.is_file() {
        Err(Error::NotRegion(name.into(), "not a regular file"))
    } else {
        Ok(())
    }
}

/// Creates region `name` with the mode bits exactly as given.
fn create(
    mount: &Mount,
    name: &str,
    start: u64,
    size: u64,
    opts: &CreateOptions,
) -> Result<(), Error> {
    let align = mount.alignment();
    if size == 0 || size % align != 0 {
        return Err(Error::Usage(format!(
            "the size must be a non-zero multiple of the alignment ({align} bytes)"
        )));
    }
    if start % align != 0 {
        return Err(Error::Usage(format!(
            "--start {start:#x} is not a multiple of the alignment ({align} bytes): give one, \
             or leave --start out for the server to choose"
        )));
    }
    if start
        .checked_add(size)
        .is_none_or(|end| end > USER_ADDR_END)
    {
        return Err(Error::Usage(format!(
            "{} bytes from {} end beyond the user address space ({USER_ADDR_END:#x})",
            size,
            if start == 0 {
                "the lowest start".to_string()
            } else {
                format!("{start:#x}")
            }
        )));
    }
    // `--mode` means the bits given, as `install -m` and `mkdir -m` do.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let made = mount.create(name, start, size, opts);
    nix::sys::stat::umask(old);
    match made {
        Ok(_) => Ok(()),
        Err(e) if e.errno() == Errno::ENOENT => match missing_dir(mount, name) {
            Some(dir) => Err(Error::NoDirectory {
                name: name.into(),
                dir,
            }),
            None => Err(e.into()),
        },
        Err(e)
            if e.errno() == Errno::ENOMEM
                && opts.backing != Some(Backing::Thp)
                && opts.backing != Some(Backing::Shmem) =>
        {
            match pool::read(mount.dir()) {
                Ok(p) => Err(Error::Pages {
                    source: e,
                    hint: pool::shortfall(&p, size.div_ceil(HUGE_PAGE_SIZE)),
                }),
                Err(_) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The first directory on the way to `name` that does not exist.
fn missing_dir(mount: &Mount, name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty()).collect();
    (1..parts.len())
        .map(|n| parts[..n].join("/"))
        .find(|dir| !mount.dir().join(dir).is_dir())
}

fn stat(mount: &Mount) -> Result<stat::Stat, Error> {
    let mut all = all_regions(mount)?;
    let uninspected = regions::add_usage(&mut all);
    let ksm_saved = ksm::read().ok().map(|k| k.saved());
    let kept = kept::orphans();
    let kept = (
        kept.iter().map(|k| k.regions).sum(),
        kept.iter().map(|k| k.bytes).sum(),
    );
    Ok(stat::Stat::of(&all, ksm_saved, uninspected, kept))
}

/// The mount and its alignment.
#[derive(Debug, Serialize)]
struct Info {
    mount: PathBuf,
    alignment: u64,
}

fn ksm_command(action: Option<KsmAction>, json: bool, out: &mut impl Write) -> Result<(), Error> {
    match action.unwrap_or(KsmAction::Show) {
        KsmAction::Show => {
            let k = ksm::read()?;
            emit(out, json, &k, ksm::Ksm::table)?;
            warn_uninspected(&k.uninspected, "have merged pages too");
        }
        KsmAction::Run { command } => return Err(ksm::run(&command).into()),
        KsmAction::Start {
            pages_to_scan,
            sleep_millisecs,
        } => ksm::control(ksm::Control::Start {
            pages_to_scan,
            sleep_millisecs,
        })?,
        KsmAction::Stop { unmerge: false } => ksm::control(ksm::Control::Stop)?,
        KsmAction::Stop { unmerge: true } => ksm::control(ksm::Control::StopUnmerge)?,
    }
    Ok(())
}

fn kept_command(
    free: bool,
    all: bool,
    paths: &[PathBuf],
    json: bool,
    out: &mut impl Write,
) -> Result<(), Error> {
    if !free {
        return emit(out, json, &kept::orphans(), |k| kept::table(k));
    }
    let freed = kept::free(paths, all)?;
    emit(out, json, &freed, |freed| {
        freed
            .iter()
            .map(|k| {
                format!(
                    "freed {} regions ({}) kept in {}\n",
                    k.regions,
                    indicatif::BinaryBytes(k.bytes),
                    k.state_dir.display()
                )
            })
            .collect()
    })
}

fn run(cli: Cli, out: &mut impl Write) -> Result<(), Error> {
    let json = cli.json;
    match cli.command {
        Command::GenerateMan { dir } => {
            std::fs::create_dir_all(&dir)?;
            return Ok(clap_mangen::generate_to(Cli::command(), dir)?);
        }
        Command::GenerateCompletions { dir } => return Ok(generate_completions(&dir)?),
        Command::Bench(args) => {
            let report = bench::run(&args)?;
            return emit(out, json, &report, |r| r.table());
        }
        Command::Ksm { action } => return ksm_command(action, json, out),
        Command::Kept { free, all, paths } => return kept_command(free, all, &paths, json, out),
        Command::Run(args) => return Err(run::run(&args, cli.dir.as_deref()).into()),
        _ => {}
    }
    let mount = Mount::find(cli.dir.as_deref())?;
    match cli.command {
        Command::GenerateMan { .. }
        | Command::GenerateCompletions { .. }
        | Command::Bench(_)
        | Command::Ksm { .. }
        | Command::Kept { .. }
        | Command::Run(_) => unreachable!("handled above"),
        Command::Info => {
            let info = Info {
                mount: mount.dir().to_path_buf(),
                alignment: mount.alignment(),
            };
            emit(out, json, &info, |i| {
                format!("mount\t{}\nalignment\t{}\n", i.mount.display(), i.alignment)
            })?;
        }
        Command::List { long } => {
            let mut all = all_regions(&mount)?;
            let uninspected = if long {
                regions::add_usage(&mut all)
            } else {
                Vec::new()
            };
            emit(out, json, &all, |all| {
                let mut s = format!("{}\n", RegionReport::header(long));
                for r in all {
                    s.push_str(&r.row());
                    s.push('\n');
                }
                s
            })?;
            warn_uninspected(&uninspected, MAP_TOO);
        }
        Command::Create {
            name,
            size,
            start,
            backing,
            mode,
            no_object,
        } => {
            let opts = CreateOptions {
                backing,
                mode,
                exclusive: true,
                whole_object: !no_object,
            };
            create(&mount, &name, start.unwrap_or(0), size, &opts)?;
            if json {
                let r = regions::report(&mount, &name, name.as_ref());
                emit(out, json, &r, |_| String::new())?;
            }
        }
        Command::Show { name } => {
            // A missing region is an error; one this user may not open is
            // still shown (its memory and who maps it).
            let path = mount.path(&name)?;
            let meta = std::fs::symlink_metadata(&path).map_err(|e| libmshare::Error::Path {
                op: "looking up",
                path,
                errno: libmshare::errno_of(&e),
            })?;
            not_a_region(&name, &meta)?;
            let mut r = [regions::report(&mount, &name, name.as_ref())];
            let uninspected = regions::add_usage(&mut r);
            emit(out, json, &r[0], RegionReport::details)?;
            warn_uninspected(&uninspected, MAP_TOO);
        }
        Command::Write { name, offset } => {
            let region = mount.open(&name, false)?;
            let stdin = io::stdin();
            let len = nix::sys::stat::fstat(&stdin)
                .ok()
                .filter(|s| s.st_mode & libc::S_IFMT == libc::S_IFREG)
                .map(|s| s.st_size as u64);
            transfer::write(&region, offset, &mut stdin.lock(), len)?;
        }
        Command::Read {
            name,
            offset,
            length,
        } => {
            let region = mount.open(&name, true)?;
            transfer::read(&region, offset, length, out)?;
        }
        Command::Remove { names } => {
            // As rm: every name is tried, each failure said.
            let mut codes = Vec::new();
            for name in &names {
                if let Err(e) = mount.remove(name) {
                    let e = Error::from(e);
                    eprintln!("msharectl: {e}");
                    codes.push(e.exit_code());
                }
            }
            if let Some(&first) = codes.first() {
                return Err(Error::Some {
                    failed: codes.len(),
                    of: names.len(),
                    code: if codes.iter().all(|&c| c == first) {
                        first
                    } else {
                        1
                    },
                });
            }
        }
        Command::Pool { reserve } => {
            if let Some(size) = reserve {
                pool::reserve(mount.dir(), size)?;
            } else {
                emit(out, json, &pool::read(mount.dir())?, pool::Pool::table)?;
            }
        }
        Command::Stat => {
            let s = stat(&mount)?;
            emit(out, json, &s, stat::Stat::line)?;
            warn_uninspected(&s.uninspected, MAP_TOO);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match run(cli, &mut out).and_then(|()| out.flush().map_err(Error::from)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("msharectl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
