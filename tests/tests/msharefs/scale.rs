//! Many processes attaching one region.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use msharefs_tests::*;

use crate::common::*;

const PROCS: usize = 1000;
const PAGE: usize = 4096;

fn stamp(page: usize) -> u64 {
    (page as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x6d73_6861_7265
}

/// `VmPTE` of a process, in kB.
fn vm_pte(pid: nix::unistd::Pid) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmPTE:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmPTE")
}

/// What one attaching process does; 0 if it saw the right data everywhere.
fn attach_and_check(path: &std::path::Path) -> (u8, Option<Map>) {
    let Ok(fd) = open(path, libc::O_RDONLY) else {
        return (2, None);
    };
    let Ok(info) = ioctl::get_size(&fd) else {
        return (3, None);
    };
    let Ok(map) = Map::new(&fd, info.start, info.size, libc::PROT_READ, 0) else {
        return (4, None);
    };
    if map.addr() != info.start {
        return (5, None);
    }
    let bad = (0..map.len() / PAGE).any(|p| map.get_u64(p * PAGE) != stamp(p));
    (u8::from(bad), Some(map))
}

/// open + GET_SIZE + mmap + read every 4 KiB, in 1000 processes at once;
/// all must see the data the creator wrote. Prints the page-table growth
/// per process (a figure, not an assertion: `msharectl bench` measures).
#[test]
fn thousand_processes_attach_one_region_and_see_the_same_data() {
    let m = Mount::new("");
    let fd = create_mapped_region(&m, "sga", 4 * GIB, GIB);
    let map = map_region(&fd);
    let pages = map.len() / PAGE;
    for p in 0..pages {
        map.set_u64(p * PAGE, stamp(p));
    }
    drop(map);
    drop(fd);

    let path = m.path("sga");
    let (ready_rx, ready_tx) = UnixStream::pair().unwrap();
    let (go_rx, go_tx) = UnixStream::pair().unwrap();
    let tables_before = meminfo("PageTables");
    let mut kids = Vec::with_capacity(PROCS + 1);
    for i in 0..=PROCS {
        // Child 0 does not attach: the baseline of a forked test process.
        let attach = i > 0;
        kids.push(spawn_child(|| {
            let (code, _map) = if attach {
                attach_and_check(&path)
            } else {
                (0, None)
            };
            // Report, then hold the mapping until the parent has measured.
            // (Each child also holds copies of the parent's ends, so it
            // waits for a byte, not for end-of-file.)
            let _ = (&ready_tx).write_all(&[code]);
            let mut b = [0u8; 1];
            let _ = (&go_rx).read_exact(&mut b);
            i32::from(code)
        }));
    }
    drop(ready_tx);
    drop(go_rx);
    ready_rx
        .set_read_timeout(Some(std::time::Duration::from_secs(600)))
        .unwrap();
    let mut reports = vec![0u8; PROCS + 1];
    (&ready_rx)
        .read_exact(&mut reports)
        .expect("every child reports within 10 minutes");
    let tables_after = meminfo("PageTables");
    let pte: Vec<u64> = kids.iter().map(|&pid| vm_pte(pid)).collect();
    (&go_tx).write_all(&vec![1u8; PROCS + 1]).unwrap();
    let codes: Vec<i32> = kids.into_iter().map(wait_child).collect();
    let failed = codes.iter().filter(|&&c| c != 0).count();
    assert_eq!(
        failed,
        0,
        "{failed} of {PROCS} children failed: {:?}",
        &codes
            .iter()
            .filter(|&&c| c != 0)
            .take(10)
            .collect::<Vec<_>>()
    );
    assert!(
        reports[1..].iter().all(|&b| b == 0),
        "every child saw the creator's data in all {pages} pages"
    );
    let growth = tables_after.saturating_sub(tables_before);
    let attached = pte[1..].iter().sum::<u64>() as f64 / PROCS as f64;
    println!(
        "figure: {PROCS} processes attached a 1 GiB thp region through the FUSE file: \
         PageTables grew {growth} kB ({:.1} kB per process); VmPTE of an attached process \
         {attached:.1} kB, of a forked process that did not attach {} kB",
        growth as f64 / PROCS as f64,
        pte[0]
    );
    assert!(pte.iter().all(|&p| p > 0), "VmPTE read for every child");
}
