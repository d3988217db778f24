//! Attach latency: one process, many rounds, the contenders interleaved
//! within each round so that they share whatever else the machine does.

use std::collections::HashMap;
use std::time::Instant;

use super::contender::{Kind, Region};
use super::BenchError;

/// p50 and p99 of one contender's attaches, microseconds.
#[derive(Clone, Copy, Debug)]
pub struct Figure {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// The `q` quantile of sorted `v`.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// `rounds` rounds; in each every region is attached once (timed: the
/// attach up to the close of what it opened) and detached (not timed). The
/// order rotates each round.
pub fn measure(
    regions: &[Region],
    rounds: usize,
    tick: &dyn Fn(),
) -> Result<HashMap<Kind, Figure>, BenchError> {
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); regions.len()];
    for round in 0..rounds {
        for i in 0..regions.len() {
            let k = (i + round) % regions.len();
            let t = Instant::now();
            let map = regions[k].attach().map_err(|e| {
                BenchError::Setup(format!("attaching {}: {e}", regions[k].kind.label()))
            })?;
            samples[k].push(t.elapsed().as_secs_f64() * 1e6);
            drop(map);
        }
        tick();
    }
    Ok(regions
        .iter()
        .zip(samples)
        .map(|(r, mut s)| {
            s.sort_by(f64::total_cmp);
            let f = Figure {
                p50: quantile(&s, 0.5),
                p99: quantile(&s, 0.99),
            };
            (r.kind, f)
        })
        .collect())
}
