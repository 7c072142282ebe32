//! atoll's deterministic partition simulator.
//!
//! It drives the very code a node runs — [`atoll_core::Replica`] and
//! [`atoll_core::Keyspace`] on [`atoll_store::MemoryBackend`] — with one
//! virtual clock and one seeded RNG on one thread, through a network that
//! delays, loses, duplicates and reorders messages, partitions that split,
//! flap and clog, crashes, restores from old backups and clock jumps. A run
//! has two phases, as in TigerBeetle's VOPR: a *safety* phase with every fault
//! on and clients writing, then a *liveness* phase in which the network heals
//! and every node is up, and the cluster must converge in bounded simulated
//! time. Then the invariants of [`check`] are checked against the history of
//! acknowledged operations.
//!
//! The same seed and options give the same run, event for event: the trace
//! hash ([`RunResult::trace_hash`]) proves it.

#![forbid(unsafe_code)]

pub mod bench;
pub mod check;
pub mod options;
pub mod progress;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod strong;
pub mod trace;
pub mod workload;
pub mod world;

pub use options::{Durability, Faults, Latency, Mix, Options, Topology, Workload};
pub use world::{Mark, Sample, Sim, Stats, Step};

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

/// What a run found.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// Its seed.
    pub seed: u64,
    /// Its options.
    pub opts: Options,
    /// The hash of its whole event trace.
    pub trace_hash: u64,
    /// Events in the trace.
    pub trace_events: u64,
    /// Every invariant violation (empty: the run passed).
    pub failures: Vec<String>,
    /// Counters.
    pub stats: Stats,
    /// When the liveness phase converged (simulated ms).
    pub converged_at: Option<u64>,
    /// Simulated time at the end (ms).
    pub end_ms: u64,
    /// The trace, if kept.
    pub trace: Option<Vec<String>>,
    /// The timeline, for reports.
    pub marks: Vec<(u64, Mark)>,
    /// Divergence samples, for reports.
    pub samples: Vec<Sample>,
    /// Wall-clock seconds the run took.
    pub wall_secs: f64,
}

impl RunResult {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs one simulation: the random faults of `opts` plus a scenario's
/// `script`, both phases, then the final invariants. A panic anywhere in the
/// replica code is caught and reported as a failure of the run.
pub fn run(seed: u64, opts: Options, script: Vec<(u64, Step)>, keep_trace: bool) -> RunResult {
    let started = Instant::now();
    let mut sim = Sim::new(seed, opts.clone(), script, keep_trace);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        sim.run();
        let mut found = final_check(&mut sim);
        found.extend(sim.checks_at_end());
        found
    }));
    let mut failures = std::mem::take(&mut sim.failures);
    match outcome {
        Ok(found) => failures.extend(found),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            failures.push(format!("panic at {} ms: {msg}", sim.now));
        }
    }
    RunResult {
        seed,
        opts,
        trace_hash: sim.trace.hash(),
        trace_events: sim.trace.len(),
        failures,
        stats: sim.stats.clone(),
        converged_at: sim.converged_at,
        end_ms: sim.now,
        trace: sim.trace.lines().map(|l| l.to_vec()),
        marks: std::mem::take(&mut sim.marks),
        samples: std::mem::take(&mut sim.samples),
        wall_secs: started.elapsed().as_secs_f64(),
    }
}

/// With `--mirror`: no variable outside its audience, and each audience's
/// variables checked among its nodes (`world::audience`): the default
/// namespace's on every node, `pair`'s on n0 and n1, each node's `loc`
/// on that node.
fn check_mirrored(
    sim: &mut Sim,
    views: &[BTreeMap<String, atoll_crdt::variable::State>],
    ids: &[atoll_crdt::ReplicaId],
) -> Vec<String> {
    let n = views.len();
    let mut bad = Vec::new();
    // The setting itself: the same everywhere, and what n0 set.
    let mut views = views.to_vec();
    let settings: Vec<_> = views
        .iter_mut()
        .map(|v| v.remove(atoll_core::MIRROR_VAR))
        .collect();
    if settings.iter().any(|s| *s != settings[0]) {
        bad.push("the nodes differ on the mirroring".into());
    }
    let set = atoll_core::Mirroring::read(settings[0].as_ref());
    if n >= 2 && (!set.shares("pair", ids[0], ids[1]) || set.mirrored("loc")) {
        bad.push(format!("the mirroring is not what n0 set: {set:?}"));
    }
    for i in 0..n {
        let misplaced = sim.misplaced(i);
        if !misplaced.is_empty() {
            bad.push(format!(
                "n{i} holds variables not mirrored to it: {misplaced:?}"
            ));
        }
    }
    // The groups of nodes that share variables: everyone, n0 and n1, each
    // node alone; each variable is checked in the group of its audience.
    let mut groups: std::collections::BTreeSet<Vec<usize>> = [(0..n).collect()].into();
    if n >= 2 {
        groups.insert(vec![0, 1]);
    }
    groups.extend((0..n).map(|i| vec![i]));
    for group in groups {
        let of_group = |name: &str| world::audience(name, n) == group;
        let group_views: Vec<_> = group
            .iter()
            .map(|&i| {
                let mut v = views[i].clone();
                v.retain(|name, _| of_group(name));
                v
            })
            .collect();
        // Numbered again: the checker finds a record by its number.
        let history: Vec<_> = sim
            .history
            .iter()
            .filter(|r| of_group(&r.var))
            .enumerate()
            .map(|(k, r)| workload::Record {
                id: k as u64,
                ..r.clone()
            })
            .collect();
        let group_ids: Vec<_> = group.iter().map(|&i| ids[i]).collect();
        bad.extend(
            check::check(&group_views, &history, &group_ids)
                .into_iter()
                .map(|b| format!("among {group:?}: {b}")),
        );
    }
    bad
}

fn final_check(sim: &mut Sim) -> Vec<String> {
    if sim.converged_at.is_none() {
        return Vec::new();
    }
    let mut views: Vec<_> = (0..sim.len()).map(|i| sim.view(i)).collect();
    let ids: Vec<_> = (0..sim.len()).map(world::node_id).collect();
    // Owned variables and ownership records are checked against the strong
    // history, not the history of ordinary operations.
    let owned: Vec<BTreeMap<_, _>> = views
        .iter_mut()
        .map(|v| {
            let names: Vec<String> = v
                .keys()
                .filter(|n| world::is_owned_name(n))
                .cloned()
                .collect();
            names
                .into_iter()
                .filter_map(|n| v.remove_entry(&n))
                .collect()
        })
        .collect();
    let mut bad = match sim.opts.workload.mirror {
        false => check::check(&views, &sim.history, &ids),
        true => check_mirrored(sim, &views, &ids),
    };
    for (i, v) in owned.iter().enumerate().skip(1) {
        if *v != owned[0] {
            bad.push(format!(
                "n{i} differs from n0 on owned variables or their owners"
            ));
        }
    }
    // Acknowledged means durable only under durable writes, and a restore
    // may lose what was acknowledged: the history is checked without either.
    if sim.opts.durability == Durability::Durable && sim.stats.restores == 0 {
        bad.extend(strong::check(&sim.strong, &owned[0]));
    }
    bad
}
