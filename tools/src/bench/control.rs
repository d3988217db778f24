//! The control plane: creating and removing regions, and what a server
//! holding many of them costs.

use std::ffi::CString;
use std::path::Path;
use std::time::Instant;

use libmshare::{Backing, CreateOptions, Mount};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use serde::Serialize;

use super::setup::PrivateServer;
use super::BenchError;

/// Bytes of each region the control plane makes.
pub const REGION: u64 = 2 << 20;

/// Rates of one run.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Rates {
    /// msharefs: create + size + object + close, per second.
    pub creates: f64,
    /// msharefs: unlink, per second.
    pub removes: f64,
    /// /dev/shm: `shm_open(O_CREAT)` + `ftruncate` + close, per second.
    pub shm_creates: f64,
    /// /dev/shm: `shm_unlink`, per second.
    pub shm_removes: f64,
}

/// What the server holds with this many regions.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Footprint {
    /// Regions.
    pub regions: u64,
    /// Server resident memory, KiB.
    pub rss_kib: u64,
    /// Server descriptors.
    pub fds: u64,
}

fn name(i: u64) -> String {
    format!("c{i}")
}

fn create(mount: &Mount, i: u64) -> Result<(), BenchError> {
    let opts = CreateOptions {
        backing: Some(Backing::Thp),
        ..CreateOptions::default()
    };
    mount.create(&name(i), 0, REGION, &opts)?;
    Ok(())
}

/// Creates and removes `count` regions, and as many /dev/shm files.
pub fn rates(dir: &Path, count: u64, tick: &dyn Fn()) -> Result<Rates, BenchError> {
    let mount = Mount::at(dir)?;
    let t = Instant::now();
    for i in 0..count {
        create(&mount, i)?;
        tick();
    }
    let creates = count as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..count {
        mount.remove(&name(i))?;
    }
    let removes = count as f64 / t.elapsed().as_secs_f64();
    let shm = |i: u64| {
        CString::new(format!("/msharectl-bench.{}.{i}", std::process::id())).expect("no NUL")
    };
    let t = Instant::now();
    for i in 0..count {
        let fd = nix::sys::mman::shm_open(
            shm(i).as_c_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| BenchError::Setup(format!("shm_open: {e}")))?;
        nix::unistd::ftruncate(&fd, REGION as i64)
            .map_err(|e| BenchError::Setup(format!("ftruncate: {e}")))?;
    }
    let shm_creates = count as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..count {
        let _ = nix::sys::mman::shm_unlink(shm(i).as_c_str());
    }
    let shm_removes = count as f64 / t.elapsed().as_secs_f64();
    Ok(Rates {
        creates,
        removes,
        shm_creates,
        shm_removes,
    })
}

/// Grows the server to each count of `steps` regions, noting its memory
/// and descriptors, then removes them all.
pub fn footprints(
    server: &PrivateServer,
    steps: &[u64],
    tick: &dyn Fn(),
) -> Result<Vec<Footprint>, BenchError> {
    let mount = Mount::at(&server.dir)?;
    let (rss_kib, fds) = server.rss_and_fds();
    let mut out = vec![Footprint {
        regions: 0,
        rss_kib,
        fds,
    }];
    let mut made = 0;
    let result = (|| {
        for &target in steps {
            while made < target {
                create(&mount, made)?;
                made += 1;
                tick();
            }
            let (rss_kib, fds) = server.rss_and_fds();
            out.push(Footprint {
                regions: target,
                rss_kib,
                fds,
            });
        }
        Ok::<_, BenchError>(())
    })();
    for i in 0..made {
        let _ = mount.remove(&name(i));
    }
    result.map(|()| out)
}
