//! Scripted scenarios: a cluster, a workload, and faults at chosen times, beside
//! (or instead of) the random ones. Build one with [`Scenario::new`] and
//! [`Scenario::at`], then [`Scenario::run`] it; the liveness phase and the
//! final invariants follow the script as in any run.

use crate::options::{Durability, Faults, Options, Workload};
use crate::world::{node_id, Sim, Step, OWNED};
use crate::{run, RunResult};
use atoll_core::protocol::Body;

const MIN: u64 = 60_000;
const HOUR: u64 = 60 * MIN;
const DAY: u64 = 24 * HOUR;

/// A scripted scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Its name, for `--scenario`.
    pub name: &'static str,
    /// What it shows.
    pub about: &'static str,
    /// The cluster, workload and background faults.
    pub options: Options,
    /// The steps, by simulated time (ms).
    pub steps: Vec<(u64, Step)>,
}

impl Scenario {
    /// A scenario with no steps yet.
    pub fn new(name: &'static str, about: &'static str, options: Options) -> Scenario {
        Scenario {
            name,
            about,
            options,
            steps: Vec::new(),
        }
    }

    /// Adds `step` at simulated time `at_ms`.
    pub fn at(mut self, at_ms: u64, step: Step) -> Scenario {
        self.steps.push((at_ms, step));
        self
    }

    /// Runs it with `seed` (which drives the workload and the network's delays).
    pub fn run(&self, seed: u64, keep_trace: bool) -> RunResult {
        run(seed, self.options.clone(), self.steps.clone(), keep_trace)
    }
}

fn quiet(nodes: usize, safety_ms: u64, op_every_ms: u64) -> Options {
    let mut o = Options::calm(nodes);
    o.safety_ms = safety_ms;
    o.workload = Workload {
        op_every_ms,
        ..Workload::default_mix()
    };
    o.faults = Faults {
        latency: crate::Latency {
            min_ms: 2,
            max_ms: 40,
            spike: 0.0,
            spike_ms: 0,
        },
        ..Faults::none()
    };
    o
}

const SPLIT_AT: u64 = HOUR;
const WEEK: u64 = 7 * DAY;

fn both_sites_wrote(sim: &mut Sim) -> Result<(), String> {
    let during = |r: &&crate::workload::Record| r.at > SPLIT_AT && r.at < SPLIT_AT + WEEK;
    let west = sim
        .history
        .iter()
        .filter(during)
        .filter(|r| r.node < 3)
        .count();
    let east = sim
        .history
        .iter()
        .filter(during)
        .filter(|r| r.node >= 3)
        .count();
    if west == 0 || east == 0 {
        return Err(format!(
            "both sites should keep writing through the split (west {west}, east {east})"
        ));
    }
    Ok(())
}

fn sites_diverged(sim: &mut Sim) -> Result<(), String> {
    if sim.converged() {
        return Err("after a week apart with writes on both sides, the sites should differ".into());
    }
    Ok(())
}

fn all_up(sim: &mut Sim) -> Result<(), String> {
    match (0..sim.len()).find(|&i| !sim.is_up(i)) {
        Some(i) => Err(format!("n{i} should be up again")),
        None => Ok(()),
    }
}

fn n2_forwarded_by_state_transfer(sim: &mut Sim) -> Result<(), String> {
    let to_n3 = sim
        .replica(2)
        .ok_or("n2 should be up")?
        .peers()
        .into_iter()
        .find(|p| p.id == crate::world::node_id(3))
        .map_or(0, |p| p.stats.state_transfers);
    if to_n3 == 0 {
        return Err("n2 should have passed the states it merged on to n3 by state transfer".into());
    }
    Ok(())
}

/// The scenarios that ship with the simulator.
pub fn shipped() -> Vec<Scenario> {
    let mut out = Vec::new();

    // Two sites, three nodes and two, split for a week; one write a minute.
    let mut o = quiet(5, SPLIT_AT + WEEK + HOUR, MIN);
    o.durability = Durability::Buffered {
        flush_every_ms: 1_000,
    };
    out.push(
        Scenario::new(
            "week-split",
            "two sites (3 + 2 nodes) split for a simulated week, writing on both sides; they converge when it heals",
            o,
        )
        .at(SPLIT_AT, Step::Split(vec![vec![0, 1, 2], vec![3, 4]]))
        .at(SPLIT_AT + WEEK - 1, Step::Check("sites diverged", sites_diverged))
        .at(SPLIT_AT + WEEK - 1, Step::Check("both sites wrote", both_sites_wrote))
        .at(SPLIT_AT + WEEK, Step::HealAll),
    );

    // A node restored from last month's backup; one write every ten minutes.
    let mut o = quiet(4, 32 * DAY, 10 * MIN);
    o.faults.backup_every_ms = DAY;
    o.log_retain = 200;
    out.push(
        Scenario::new(
            "old-backup",
            "n2 is restored from its oldest backup (a month old): it must not reissue dots, lose others' writes, or take a bag element twice",
            o,
        )
        .at(31 * DAY, Step::RestoreOldest(2))
        .at(31 * DAY + HOUR, Step::Check("n2 is back", all_up)),
    );

    // A flapping link between n0 and n1 for 20 s, under loss.
    let mut o = quiet(3, 30_000, 10);
    o.faults.loss = 0.05;
    o.retransmit_ms = 100;
    let mut s = Scenario::new(
        "flapping-link",
        "the n0-n1 link goes down and up every 300 ms for 20 s, with 5% loss",
        o,
    );
    let mut t = 5_000;
    while t < 25_000 {
        s = s.at(t, Step::Cut(0, 1)).at(t + 300, Step::Heal(0, 1));
        t += 600;
    }
    out.push(s);

    // A rolling restart: each node in turn is down for two seconds.
    let mut o = quiet(5, 30_000, 10);
    o.durability = Durability::Buffered {
        flush_every_ms: 100,
    };
    let mut s = Scenario::new(
        "rolling-restart",
        "each of five nodes in turn crashes and restarts (2 s down), while clients keep writing",
        o,
    );
    for i in 0..5 {
        let t = 3_000 + i as u64 * 5_000;
        s = s.at(t, Step::Crash(i)).at(t + 2_000, Step::Restart(i));
    }
    s = s.at(29_000, Step::Check("every node is up", all_up));
    out.push(s);

    // Clocks that jump back by a minute while messages are unacknowledged: the
    // cluster must still converge within ten simulated seconds of healing.
    let mut o = quiet(3, 20_000, 10);
    o.faults.loss = 0.3;
    o.retransmit_ms = 200;
    o.liveness_ms = 10_000;
    out.push(
        Scenario::new(
            "clock-back",
            "n1's and n2's clocks jump back a minute under 30% loss: retransmission must not stall until the clock catches up",
            o,
        )
        .at(5_000, Step::ClockJump(1, 30_000))
        .at(19_900, Step::ClockJump(1, -60_000))
        .at(19_950, Step::ClockJump(2, -60_000)),
    );

    // A line n0-n1-n2-n3 whose middle link is cut for 20 s while every node
    // writes; the nodes accept deltas of at most 2 000 bytes. When the link
    // heals, n1 sends n2 whole states (its log no longer reaches back), larger
    // than a delta, in parts; n2 logs them, and must pass them on to n3 by
    // state transfer, since n3 accepts no delta that large.
    let mut o = quiet(4, 40_000, 2);
    o.max_delta_len = 2_000;
    o.state_part_bytes = 300;
    o.log_retain = 50;
    o.checkpoint_every = 16;
    out.push(
        Scenario::new(
            "large-state-line",
            "a line of four nodes accepting deltas of 2 000 bytes at most: states larger than that cross the healed middle link in parts and travel on by state transfer",
            o,
        )
        .at(0, Step::Cut(0, 2))
        .at(0, Step::Cut(0, 3))
        .at(0, Step::Cut(1, 3))
        .at(5_000, Step::Cut(1, 2))
        .at(25_000, Step::Heal(1, 2))
        .at(
            39_000,
            Step::Check(
                "n2 passed large states on by state transfer",
                n2_forwarded_by_state_transfer,
            ),
        ),
    );

    // A long-haul link: every round trip (200-300 ms) is longer than the
    // retransmit timeout (100 ms). n2 is cut off for 10 s; when it comes
    // back, its peers' logs no longer reach back, and the states it missed
    // go in small parts, one at a time. A variable started over for want of
    // an ack must wait longer each time, or it never completes.
    let mut o = quiet(3, 30_000, 5);
    o.faults.latency = crate::Latency {
        min_ms: 100,
        max_ms: 150,
        spike: 0.0,
        spike_ms: 0,
    };
    o.retransmit_ms = 100;
    o.max_in_flight = 1;
    o.state_part_bytes = 300;
    o.log_retain = 50;
    o.checkpoint_every = 16;
    out.push(
        Scenario::new(
            "long-haul",
            "round trips longer than the retransmit timeout: n2, cut off for 10 s, catches up by states in parts, one at a time",
            o,
        )
        .at(5_000, Step::Cut(0, 2))
        .at(5_000, Step::Cut(1, 2))
        .at(15_000, Step::Heal(0, 2))
        .at(15_000, Step::Heal(1, 2))
        .at(29_000, Step::Check("n2 caught up by state transfer", n2_caught_up_by_state_transfer)),
    );

    // An owner cut off from the node it hands a variable to.
    out.push(
        Scenario::new(
            "owner-cut-mid-transfer",
            "n0 owns the owned variables and hands o-reg to n1 as their link goes down: o-reg is in transfer and nobody runs its strong operations until the link heals; then n1 owns it",
            strong_quiet(3, 60_000),
        )
        .at(2_000, Step::Do("n0 owns every owned variable", n0_owns_all))
        .at(10_000, Step::Check("n0 owns them, everywhere", |sim| owned_everywhere_by(sim, 0)))
        .at(20_000, Step::Do("n0 hands o-reg to n1", |sim| sim.move_owner_at(0, "o-reg", 1)))
        .at(20_000, Step::Cut(0, 1))
        .at(25_000, Step::Check("o-reg is in transfer, run nowhere", o_reg_in_transfer))
        .at(40_000, Step::Heal(0, 1))
        .at(50_000, Step::Check("n1 owns o-reg", |sim| owns_everywhere(sim, "o-reg", 1))),
    );

    // A user who moves between sites: the owned variables follow.
    let mut o = strong_quiet(3, 70_000);
    o.faults.latency = crate::Latency {
        min_ms: 40,
        max_ms: 40,
        spike: 0.0,
        spike_ms: 0,
    };
    o.workload.strong_locality_pct = 100;
    o.workload.migration = atoll_core::Migration {
        min_ops: 8,
        share_pct: 75,
        window_ms: 5_000,
        cooldown_ms: 5_000,
    };
    out.push(
        Scenario::new(
            "user-moves-between-sites",
            "three sites 40 ms apart; every strong operation comes from the user's site, n0, then n1, then n2: the owned variables move by use to each in turn",
            o,
        )
        .at(1_000, Step::Do("the user is at n0", |sim| sim.user_moves_to(0)))
        .at(2_000, Step::Do("n0 owns every owned variable", n0_owns_all))
        .at(10_000, Step::Check("n0 owns them, everywhere", |sim| owned_everywhere_by(sim, 0)))
        .at(10_000, Step::Do("the user moves to n1", |sim| sim.user_moves_to(1)))
        .at(30_000, Step::Check("they followed to n1", |sim| owned_everywhere_by(sim, 1)))
        .at(30_000, Step::Do("the user moves to n2", |sim| sim.user_moves_to(2)))
        .at(50_000, Step::Check("they followed to n2", |sim| owned_everywhere_by(sim, 2))),
    );

    // An owner restored from a backup taken before it gave its variables away.
    let mut o = strong_quiet(3, 60_000);
    o.faults.backup_every_ms = 5_000;
    out.push(
        Scenario::new(
            "restored-owner",
            "n0 owns the owned variables, is backed up, hands them to n1, then is restored from that backup: it must not act as their owner again",
            o,
        )
        .at(2_000, Step::Do("n0 owns every owned variable", n0_owns_all))
        .at(12_000, Step::Do("n0 hands them to n1", |sim| {
            OWNED.iter().try_for_each(|v| sim.move_owner_at(0, v, 1))
        }))
        .at(20_000, Step::Check("n1 owns them, everywhere", |sim| owned_everywhere_by(sim, 1)))
        .at(30_000, Step::RestoreOldest(0))
        .at(30_000, Step::Check("the restored n0 runs no strong operation", restored_n0_accepts_nothing))
        .at(45_000, Step::Check("n0 learned it gave them away", |sim| owned_everywhere_by(sim, 1))),
    );
    out
}

/// A quiet cluster with strong operations from every node, and no random
/// change of owner or move by use: the scenario's steps change owners.
fn strong_quiet(nodes: usize, safety_ms: u64) -> Options {
    let mut o = quiet(nodes, safety_ms, 20);
    o.workload.strong_every_ms = 30;
    o.workload.strong_owner_changes_pct = 0;
    o.workload.migration.min_ops = 0;
    o
}

fn n0_owns_all(sim: &mut Sim) -> Result<(), String> {
    for v in OWNED {
        sim.request_at(0, v, Body::Own { to: node_id(0) })?;
    }
    Ok(())
}

fn owns_everywhere(sim: &mut Sim, var: &str, owner: usize) -> Result<(), String> {
    for i in 0..sim.len() {
        let r = sim.replica(i).ok_or(format!("n{i} should be up"))?;
        let record = r.ownership(var).map_err(|e| e.to_string())?;
        if record.owner() != Some(node_id(owner)) || record.handoff().is_some() {
            return Err(format!(
                "n{i} says {var} is {record:?}, not owned by n{owner}"
            ));
        }
    }
    Ok(())
}

fn owned_everywhere_by(sim: &mut Sim, owner: usize) -> Result<(), String> {
    OWNED
        .iter()
        .try_for_each(|v| owns_everywhere(sim, v, owner))
}

fn o_reg_in_transfer(sim: &mut Sim) -> Result<(), String> {
    let r = sim.replica(0).ok_or("n0 should be up")?;
    let record = r.ownership("o-reg").map_err(|e| e.to_string())?;
    if record.handoff().map(|h| h.to) != Some(node_id(1)) {
        return Err(format!(
            "n0's record of o-reg is {record:?}, not in transfer to n1"
        ));
    }
    for i in 0..sim.len() {
        if let Some(r) = sim.replica(i) {
            if r.accepts_strong("o-reg").map_err(|e| e.to_string())? {
                return Err(format!(
                    "n{i} runs o-reg's strong operations while it is in transfer"
                ));
            }
        }
    }
    Ok(())
}

fn restored_n0_accepts_nothing(sim: &mut Sim) -> Result<(), String> {
    let r = sim.replica(0).ok_or("n0 should be up")?;
    for v in OWNED {
        // Its backup says it owns them; its peers know better.
        if r.accepts_strong(v).map_err(|e| e.to_string())? {
            return Err(format!("the restored n0 runs {v}'s strong operations"));
        }
    }
    Ok(())
}

fn n2_caught_up_by_state_transfer(sim: &mut Sim) -> Result<(), String> {
    let received: u64 = sim
        .replica(2)
        .ok_or("n2 should be up")?
        .peers()
        .into_iter()
        .map(|p| p.stats.state_parts_received)
        .sum();
    if received == 0 {
        return Err("n2 should have received states in parts".into());
    }
    Ok(())
}

/// The shipped scenario called `name`.
pub fn find(name: &str) -> Option<Scenario> {
    shipped().into_iter().find(|s| s.name == name)
}
