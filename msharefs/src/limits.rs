//! Sizing the server from its descriptor limit (pure logic, unit-tested).
//!
//! Every region holds one descriptor (its backing file) and every io_uring
//! queue thread one, so `max_regions` may not exceed what `RLIMIT_NOFILE`
//! leaves after the queues' most and a reserve: the server raises its
//! soft limit to the hard one at start and lowers `max_regions` (with a
//! warning) to fit. Running out of descriptors would refuse every user;
//! a limit refuses only the one who reached it.

use crate::namespace::Limits;
use crate::options::Options;

/// Descriptors kept for FUSE threads, logs and short-lived opens.
pub const RESERVED_FDS: u64 = 128;

/// What the server may hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Node limits of the namespace.
    pub limits: Limits,
    /// Why `max_regions` was lowered, if it was.
    pub lowered: Option<String>,
}

/// The plan for `opts` with `nofile` descriptors, of which the io_uring
/// queues may hold `queue_fds`.
pub fn plan(opts: &Options, nofile: u64, queue_fds: u64) -> Plan {
    let kept = RESERVED_FDS + queue_fds;
    let budget = nofile.saturating_sub(kept).max(1);
    let nodes = opts.max_regions.min(budget);
    let lowered = (nodes < opts.max_regions).then(|| {
        format!(
            "max_regions={} does not fit RLIMIT_NOFILE={nofile} (each region holds a \
             descriptor; {} are kept for the server): using \
             max_regions={nodes}; raise the limit (LimitNOFILE=, ulimit -n) for more",
            opts.max_regions, kept
        )
    });
    let per_user = opts
        .max_regions_per_user
        .unwrap_or((nodes / 4).max(1))
        .min(nodes);
    Plan {
        limits: Limits { nodes, per_user },
        lowered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_regions_fits_the_descriptor_limit() {
        let opts = Options::defaults(true);
        let p = plan(&opts, 1 << 20, 32);
        assert_eq!(p.limits.nodes, 65536, "a large limit keeps the default");
        assert_eq!(p.limits.per_user, 16384);
        assert!(p.lowered.is_none());
        let p = plan(&opts, 1024, 0);
        assert_eq!(p.limits.nodes, 1024 - 128);
        assert_eq!(p.limits.per_user, (1024 - 128) / 4);
        assert!(p.lowered.unwrap().contains("max_regions=896"));
        let p = plan(&opts, 1024, 32);
        assert_eq!(p.limits.nodes, 1024 - 128 - 32, "the queues' rings");
        assert!(p.lowered.unwrap().contains("160 are kept"));
        let mut small = Options::defaults(true);
        small.max_regions = 10;
        small.max_regions_per_user = Some(50);
        let p = plan(&small, 1024, 32);
        assert_eq!((p.limits.nodes, p.limits.per_user), (10, 10));
    }
}
