//! What migration by use buys, measured in the simulator (`atoll-sim
//! --bench-migration`): three sites 40 ms apart (a node each), strong
//! operations on three owned variables, each variable's accesses coming
//! mostly from one site (its favourite), which changes every two minutes.
//! For each locality, a static placement (n0 owns everything, no move by
//! use) is run beside migration by use, on the same seed: the share of
//! strong operations that needed a round trip to another site, and their
//! latency from call to answer.

use crate::options::{Latency, Options, Workload};
use crate::strong::StrongOp;
use crate::world::{node_id, Sim, Step, OWNED};
use atoll_core::protocol::Body;

/// One run's figures.
#[derive(Clone, Debug)]
pub struct Figures {
    /// Of every 100 operations from the favourite node, how many (50: two
    /// nodes in turn).
    pub locality_pct: u8,
    /// Migration by use on.
    pub migrating: bool,
    /// Strong operations answered.
    pub answered: usize,
    /// The share of them sent to another node.
    pub remote_share: f64,
    /// Mean time from call to answer (ms).
    pub mean_ms: f64,
    /// Median time from call to answer (ms).
    pub median_ms: u64,
    /// Moves by use.
    pub moves: u64,
}

fn n0_owns_all(sim: &mut Sim) -> Result<(), String> {
    for v in OWNED {
        sim.request_at(0, v, Body::Own { to: node_id(0) })?;
    }
    Ok(())
}

/// Runs one configuration for `minutes` simulated minutes: with the
/// variables' accesses coming from their favourite site with
/// `locality_pct`, or (`None`) from n1 and n2 in turn, half each.
pub fn run(seed: u64, locality_pct: Option<u8>, migrating: bool, minutes: u64) -> Figures {
    let mut o = Options::calm(3);
    o.safety_ms = minutes * 60_000;
    o.faults.latency = Latency {
        min_ms: 40,
        max_ms: 40,
        spike: 0.0,
        spike_ms: 0,
    };
    o.workload = Workload {
        op_every_ms: 1_000,
        strong_every_ms: 50,
        strong_locality_pct: locality_pct.unwrap_or(0),
        strong_from_two: locality_pct.is_none(),
        strong_owner_changes_pct: 0,
        favourite_every_ms: 120_000,
        ..Workload::default_mix()
    };
    if !migrating {
        o.workload.migration.min_ops = 0;
    }
    let steps = vec![(1_000, Step::Do("n0 owns every owned variable", n0_owns_all))];
    let mut sim = Sim::new(seed, o, steps, false);
    sim.run_until(sim.opts.safety_ms);
    // Operations answered, after the initial grant settled.
    let ops: Vec<_> = sim
        .strong
        .iter()
        .filter(|r| r.start > 5_000)
        .filter(|r| {
            !matches!(
                r.op,
                StrongOp::Incr(_) | StrongOp::Own(_) | StrongOp::Release
            )
        })
        .filter_map(|r| Some((r.end? - r.start, r.result.as_ref()?.is_ok())))
        .filter(|(_, ok)| *ok)
        .map(|(ms, _)| ms)
        .collect();
    let mut sorted = ops.clone();
    sorted.sort_unstable();
    let answered = ops.len();
    let remote = ops.iter().filter(|ms| **ms > 0).count();
    Figures {
        locality_pct: locality_pct.unwrap_or(50),
        migrating,
        answered,
        remote_share: remote as f64 / answered.max(1) as f64,
        mean_ms: ops.iter().sum::<u64>() as f64 / answered.max(1) as f64,
        median_ms: sorted.get(answered / 2).copied().unwrap_or(0),
        moves: sim.stats.migrations,
    }
}

/// The whole table, as `atoll-sim --bench-migration` prints it.
pub fn table(seed: u64, minutes: u64) -> String {
    let mut out =
        String::from("locality  placement   answered  remote  mean ms  median ms  moves\n");
    for locality in [Some(50), Some(70), Some(90), None] {
        let fixed = run(seed, locality, false, minutes);
        let moving = run(seed, locality, true, minutes);
        let label = match locality {
            Some(l) => format!("{l:>7}%"),
            None => "   n1/n2".to_string(),
        };
        for f in [&fixed, &moving] {
            out.push_str(&format!(
                "{label}  {:10} {:>9} {:>6.1}% {:>8.1} {:>10} {:>6}\n",
                if f.migrating { "by use" } else { "static" },
                f.answered,
                100.0 * f.remote_share,
                f.mean_ms,
                f.median_ms,
                f.moves
            ));
        }
        out.push_str(&format!(
            "          by use / static: {:.2}x the remote round trips, {:.2}x the mean latency\n",
            moving.remote_share / fixed.remote_share.max(1e-9),
            moving.mean_ms / fixed.mean_ms.max(1e-9)
        ));
    }
    out
}
