//! The simulated world: replicas of atoll-core on crashable in-memory storage,
//! a faulty network between them, clients, and one virtual clock, all driven
//! from a single seeded RNG on one thread.
//!
//! By concern: this module holds the world, its scheduler and its phases;
//! `network` the links and messages; `nodes` each node's lifecycle and the
//! driving of its replica; `faults` what a run injects; `clients` the
//! workload's operations; `owned` the strong operations on owned variables
//! and their invariants; `checks` consistency checks, mid-run and after
//! convergence; `monitor` losses, samples, the timeline's marks and the
//! link-progress check (with `crate::progress`); `stats` a run's counters.

use crate::options::{Durability, Options, Topology};
use crate::rng::Rng;
use crate::trace::Trace;
use crate::workload::{self, Loss, Record};
use atoll_core::protocol::Message;
use atoll_core::{Event, Keyspace, KeyspaceConfig, Now, ProtocolError, Replica, ReplicaConfig};
use atoll_crdt::variable::{Kind, State};
use atoll_crdt::ReplicaId;
use atoll_store::MemoryBackend;
use std::collections::BTreeMap;

mod checks;
mod clients;
mod faults;
mod mirror;
mod monitor;
mod network;
mod nodes;
mod owned;
mod stats;
pub use monitor::{Mark, Sample};

pub use stats::Stats;

pub use mirror::{audience, shared};
pub use owned::{is_owned_name, OWNED};

/// A step of a scripted scenario, run at its time.
#[derive(Clone)]
pub enum Step {
    /// Cut the cluster into these sides (every link across sides goes down both ways).
    Split(Vec<Vec<usize>>),
    /// Restore every link cut by `Split`, `Cut` or random faults.
    HealAll,
    /// Cut the link between two nodes, both ways.
    Cut(usize, usize),
    /// Restore the link between two nodes.
    Heal(usize, usize),
    /// Crash a node (it loses what it had not flushed).
    Crash(usize),
    /// Restart a crashed node from its storage.
    Restart(usize),
    /// Crash a node and bring it back from its oldest backup.
    RestoreOldest(usize),
    /// Move a node's clock by this many ms.
    ClockJump(usize, i64),
    /// Check something about the run; an `Err` fails it.
    Check(&'static str, fn(&mut Sim) -> Result<(), String>),
    /// Do something a client or an operator would (own a variable, move
    /// it); an `Err` fails the run.
    Do(&'static str, fn(&mut Sim) -> Result<(), String>),
}

/// Written by hand so that a `Check` shows its name only: the address of its
/// function changes from run to run, and the trace (and its hash) must not.
impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Split(sides) => f.debug_tuple("Split").field(sides).finish(),
            Step::HealAll => f.write_str("HealAll"),
            Step::Cut(a, b) => f.debug_tuple("Cut").field(a).field(b).finish(),
            Step::Heal(a, b) => f.debug_tuple("Heal").field(a).field(b).finish(),
            Step::Crash(i) => f.debug_tuple("Crash").field(i).finish(),
            Step::Restart(i) => f.debug_tuple("Restart").field(i).finish(),
            Step::RestoreOldest(i) => f.debug_tuple("RestoreOldest").field(i).finish(),
            Step::ClockJump(i, by) => f.debug_tuple("ClockJump").field(i).field(by).finish(),
            Step::Check(name, _) => f.debug_tuple("Check").field(name).finish(),
            Step::Do(name, _) => f.debug_tuple("Do").field(name).finish(),
        }
    }
}

#[derive(Clone, Debug)]
enum Action {
    Cut(usize, usize),
    Heal(usize, usize),
    OneWay(usize, usize),
    OneWayHeal(usize, usize),
    Crash(usize),
    Restart(usize),
    Restore(usize, Option<usize>),
    Jump(usize, i64),
}

#[derive(Clone, Debug)]
enum Ev {
    Deliver {
        from: usize,
        to: usize,
        gen: u64,
        bytes: Vec<u8>,
    },
    Timer(usize),
    Client,
    /// A strong operation on an owned variable (see `owned`).
    Strong,
    Fault,
    Do(Action),
    Connect(usize, usize),
    Flush(usize),
    Backup,
    Sample,
    /// Checks that every link that is up makes progress (see `progress`).
    Progress,
    Converge,
    Step(usize),
    /// A consistency check from a node (see `checks`).
    Check,
}

/// How often the link-progress invariant is checked (simulated ms).
const PROGRESS_EVERY_MS: u64 = 5_000;

struct Node {
    id: ReplicaId,
    backend: MemoryBackend,
    replica: Option<Replica<MemoryBackend>>,
    /// While down: what its storage holds, for checking which operations survive.
    disk: BTreeMap<String, State>,
    offset: i64,
    timer: Option<u64>,
    /// Timeouts handled at the current instant, and that instant: a replica
    /// that asks again and again for a timer that is already due livelocks.
    timeouts_now: (u64, u32),
    backups: Vec<(u64, MemoryBackend)>,
    /// The log may have been truncated through here.
    may_drop: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Conn {
    up: bool,
    connecting: bool,
    gen: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Safety,
    Liveness,
    Done,
}

/// A simulation in progress.
pub struct Sim {
    /// The seed every choice derives from.
    pub seed: u64,
    /// The options.
    pub opts: Options,
    net_rng: Rng,
    work_rng: Rng,
    fault_rng: Rng,
    /// Simulated time (ms).
    pub now: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    order: u64,
    nodes: Vec<Node>,
    peers: Vec<Vec<usize>>,
    cut: BTreeMap<(usize, usize), u32>,
    one_way: BTreeMap<(usize, usize), u32>,
    conns: BTreeMap<(usize, usize), Conn>,
    in_flight: BTreeMap<(usize, usize), u64>,
    /// The end of the last `Deltas` each node sent each peer, and on which connection.
    deltas_to: BTreeMap<(usize, usize), (u64, u64)>,
    deltas_sent: BTreeMap<(usize, usize), u64>,
    phase: Phase,
    script: Vec<(u64, Step)>,
    /// Every acknowledged operation.
    pub history: Vec<Record>,
    /// The event trace.
    pub trace: Trace,
    /// Counters.
    pub stats: Stats,
    /// Invariant violations seen so far.
    pub failures: Vec<String>,
    /// The report's timeline.
    pub marks: Vec<(u64, Mark)>,
    /// Divergence samples (when `sample_every_ms` is set).
    pub samples: Vec<Sample>,
    /// The link-progress invariant's memory.
    progress: crate::progress::Progress,
    /// When the liveness phase saw every replica equal.
    pub converged_at: Option<u64>,
    /// Strong operations' own stream, so that turning them on leaves the
    /// other streams' draws as they were.
    strong_rng: Rng,
    /// Every strong operation called.
    pub strong: Vec<crate::strong::StrongRecord>,
    /// Consistency checks' own stream.
    check_rng: Rng,
    /// Every check's report, with the node that ran it.
    pub reports: Vec<(usize, atoll_core::CheckReport)>,
    /// The variable damaged at the end, once it is.
    damaged: Option<String>,
    /// Strong operations sent and not yet answered: (node, request id) ->
    /// index in `strong`.
    strong_pending: BTreeMap<(usize, u64), usize>,
    /// The last register value written (values are unique in a run).
    strong_values: u64,
    /// Each owned variable's favourite node, until when.
    favourites: Vec<usize>,
    favourites_until: u64,
    /// When the liveness phase last asked for each owned variable to be
    /// owned by a chosen node (see `owned::owners_probed`).
    probed_at: Option<u64>,
}

/// Where simulated time 0 falls on the nodes' wall clocks.
const EPOCH_MS: i64 = 1_700_000_000_000;

/// The node id of node `i`.
pub fn node_id(i: usize) -> ReplicaId {
    ReplicaId(i as u64 + 1)
}

fn index_of(id: ReplicaId) -> usize {
    (id.0 - 1) as usize
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

/// Every variable's state in a keyspace.
pub fn read_all(ks: &mut Keyspace<MemoryBackend>) -> BTreeMap<String, State> {
    let names = ks.variables().expect("in-memory storage cannot fail");
    names
        .into_iter()
        .filter_map(|(n, _)| {
            let s = ks
                .state(&n)
                .expect("in-memory storage cannot fail")
                .cloned();
            s.map(|s| (n, s))
        })
        .collect()
}

impl Sim {
    /// A new world for `seed`: nodes started and connected, clients and faults
    /// scheduled. `script` holds a scenario's steps (empty for a random run).
    pub fn new(seed: u64, opts: Options, script: Vec<(u64, Step)>, keep_trace: bool) -> Sim {
        let mut root = Rng::new(seed);
        let mut sim = Sim {
            seed,
            net_rng: root.fork(),
            work_rng: root.fork(),
            fault_rng: root.fork(),
            now: 0,
            queue: BTreeMap::new(),
            order: 0,
            nodes: Vec::new(),
            peers: vec![Vec::new(); opts.nodes],
            cut: BTreeMap::new(),
            one_way: BTreeMap::new(),
            conns: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            deltas_to: BTreeMap::new(),
            deltas_sent: BTreeMap::new(),
            phase: Phase::Safety,
            script,
            history: Vec::new(),
            trace: Trace::new(keep_trace),
            stats: Stats::default(),
            failures: Vec::new(),
            marks: Vec::new(),
            samples: Vec::new(),
            progress: Default::default(),
            converged_at: None,
            strong_rng: Rng::new(seed ^ 0x0_5743_0e6d),
            strong: Vec::new(),
            check_rng: Rng::new(seed ^ 0x00c4_ec6c_0000),
            reports: Vec::new(),
            damaged: None,
            strong_pending: BTreeMap::new(),
            strong_values: 0,
            favourites: Vec::new(),
            favourites_until: 0,
            probed_at: None,
            opts,
        };
        sim.build_topology(&mut root);
        let skew = sim.opts.faults.clock_skew_ms as i64;
        for i in 0..sim.opts.nodes {
            let offset = if skew > 0 {
                sim.fault_rng.range(0, 2 * skew as u64) as i64 - skew
            } else {
                0
            };
            sim.nodes.push(Node {
                id: node_id(i),
                backend: MemoryBackend::new(),
                replica: None,
                disk: BTreeMap::new(),
                offset,
                timer: None,
                timeouts_now: (0, 0),
                backups: Vec::new(),
                may_drop: 0,
            });
        }
        for i in 0..sim.opts.nodes {
            sim.start_node(i);
        }
        sim.set_up_mirroring();
        let first_op = sim.work_rng.exp(sim.opts.workload.op_every_ms);
        sim.schedule(first_op, Ev::Client);
        if sim.opts.workload.strong_every_ms > 0 {
            let t = sim.strong_rng.exp(sim.opts.workload.strong_every_ms);
            sim.schedule(t, Ev::Strong);
        }
        if sim.opts.workload.check_every_ms > 0 {
            let t = sim.check_rng.exp(sim.opts.workload.check_every_ms);
            sim.schedule(t, Ev::Check);
        }
        if sim.opts.faults.injects() {
            let t = sim.fault_rng.exp(sim.opts.faults.every_ms);
            sim.schedule(t, Ev::Fault);
        }
        if sim.opts.faults.backup_every_ms > 0 {
            sim.schedule(sim.opts.faults.backup_every_ms, Ev::Backup);
        }
        if let Durability::Buffered { flush_every_ms } = sim.opts.durability {
            for i in 0..sim.opts.nodes {
                let t = sim.fault_rng.range(1, flush_every_ms.max(1));
                sim.schedule(t, Ev::Flush(i));
            }
        }
        if sim.opts.sample_every_ms > 0 {
            sim.schedule(0, Ev::Sample);
        }
        sim.schedule(PROGRESS_EVERY_MS, Ev::Progress);
        for k in 0..sim.script.len() {
            let at = sim.script[k].0;
            sim.schedule(at, Ev::Step(k));
        }
        sim
    }

    fn schedule(&mut self, after: u64, ev: Ev) {
        self.order += 1;
        self.queue.insert((self.now + after, self.order), ev);
    }

    /// Node `i`'s wall clock (ms since the Unix epoch): the simulation starts
    /// on 2023-11-14, and each node's clock is off by its skew.
    pub fn local_now(&self, i: usize) -> u64 {
        (EPOCH_MS + self.now as i64 + self.nodes[i].offset) as u64
    }

    /// The time of an input at node `i`: the simulation's own clock as its
    /// monotonic time (it never goes back), and its wall clock, skew and
    /// jumps included, for its keyspace.
    pub fn clock(&self, i: usize) -> Now {
        Now {
            mono: self.now,
            wall: self.local_now(i),
        }
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether node `i` is up.
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].replica.is_some()
    }

    /// Node `i`'s replica, if it is up.
    pub fn replica(&mut self, i: usize) -> Option<&mut Replica<MemoryBackend>> {
        self.nodes[i].replica.as_mut()
    }

    fn fail(&mut self, why: String) {
        self.trace.record(self.now, format_args!("FAIL {why}"));
        if self.failures.len() < 50 {
            self.failures.push(why);
        }
    }

    /// Whether every node is up and holds the same variables with the same
    /// states as n0 (with `--mirror`: of those the two must both hold, see
    /// `mirror::audience`).
    pub fn converged(&mut self) -> bool {
        let n = self.nodes.len();
        if !(0..n).all(|i| self.is_up(i)) {
            return false;
        }
        let first = self.view(0);
        if !self.opts.workload.mirror {
            return (1..n).all(|i| self.view(i) == first);
        }
        (1..n).all(|i| {
            let v = self.view(i);
            shared(&first, 0, i, n) == shared(&v, 0, i, n)
        })
    }

    fn handle(&mut self, ev: Ev) {
        self.stats.events += 1;
        self.handle_one(ev);
        self.check_owned();
    }

    fn handle_one(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver {
                from,
                to,
                gen,
                bytes,
            } => self.deliver(from, to, gen, bytes),
            Ev::Timer(i) => {
                if self.nodes[i].timer.is_some_and(|t| t <= self.now) {
                    self.nodes[i].timer = None;
                    let (at, n) = self.nodes[i].timeouts_now;
                    self.nodes[i].timeouts_now = if at == self.now {
                        (at, n + 1)
                    } else {
                        (self.now, 1)
                    };
                    if n >= 10_000 {
                        self.fail(format!(
                            "n{i} asked for its timer 10000 times at the same instant (a timer livelock)"
                        ));
                        self.nodes[i].timeouts_now = (self.now, 0);
                        return;
                    }
                    let now = self.clock(i);
                    if let Some(r) = self.nodes[i].replica.as_mut() {
                        self.trace.record(self.now, format_args!("timeout n{i}"));
                        r.handle_timeout(now);
                        self.after_input(i);
                    }
                }
            }
            Ev::Client => {
                if self.phase == Phase::Safety {
                    self.client_op();
                    let next = self.work_rng.exp(self.opts.workload.op_every_ms);
                    self.schedule(next, Ev::Client);
                }
            }
            Ev::Check => {
                if matches!(self.phase, Phase::Safety | Phase::Liveness) {
                    self.start_check();
                    let next = self.check_rng.exp(self.opts.workload.check_every_ms);
                    self.schedule(next, Ev::Check);
                }
            }
            Ev::Strong => {
                if self.phase == Phase::Safety {
                    self.strong_op();
                    let next = self.strong_rng.exp(self.opts.workload.strong_every_ms);
                    self.schedule(next, Ev::Strong);
                }
            }
            Ev::Fault => {
                if self.phase == Phase::Safety {
                    self.random_fault();
                    let next = self.fault_rng.exp(self.opts.faults.every_ms);
                    self.schedule(next, Ev::Fault);
                }
            }
            Ev::Do(a) => {
                if self.phase == Phase::Safety {
                    self.act(a);
                }
            }
            Ev::Connect(a, b) => self.connect(a, b),
            Ev::Flush(i) => {
                if let Durability::Buffered { flush_every_ms } = self.opts.durability {
                    let now = self.clock(i);
                    if let Some(r) = self.nodes[i].replica.as_mut() {
                        let synced = r.keyspace().sync();
                        r.handle_local_writes(now);
                        if let Err(e) = synced {
                            self.fail(format!("n{i} could not flush: {e}"));
                        }
                        self.after_input(i);
                    }
                    self.schedule(flush_every_ms.max(1), Ev::Flush(i));
                }
            }
            Ev::Backup => {
                if self.phase == Phase::Safety {
                    self.backup();
                    self.schedule(self.opts.faults.backup_every_ms.max(1), Ev::Backup);
                }
            }
            Ev::Sample => {
                if self.phase != Phase::Done {
                    self.sample();
                    self.schedule(self.opts.sample_every_ms.max(1), Ev::Sample);
                }
            }
            Ev::Progress => {
                if self.phase != Phase::Done {
                    self.check_progress();
                    self.schedule(PROGRESS_EVERY_MS, Ev::Progress);
                }
            }
            Ev::Converge => {
                if self.phase == Phase::Liveness {
                    if self.converged() && self.owners_probed() {
                        self.converged_at = Some(self.now);
                        self.marks.push((self.now, Mark::Converged));
                        self.trace.record(self.now, format_args!("converged"));
                        self.phase = Phase::Done;
                    } else {
                        self.schedule(100, Ev::Converge);
                    }
                }
            }
            Ev::Step(k) => {
                let step = self.script[k].1.clone();
                self.trace.record(self.now, format_args!("step {step:?}"));
                match step {
                    Step::Split(sides) => self.split(&sides),
                    Step::HealAll => self.heal_all(),
                    Step::Cut(a, b) => self.cut_link(a, b),
                    Step::Heal(a, b) => self.heal_link(a, b),
                    Step::Crash(i) => self.crash(i),
                    Step::Restart(i) => self.restart(i),
                    Step::RestoreOldest(i) => self.restore(i, Some(0)),
                    Step::ClockJump(i, by) => self.jump_clock(i, by),
                    Step::Check(name, f) => {
                        if let Err(e) = f(self) {
                            self.fail(format!("check {name:?} at {} ms: {e}", self.now));
                        }
                    }
                    Step::Do(name, f) => {
                        if let Err(e) = f(self) {
                            self.fail(format!("step {name:?} at {} ms: {e}", self.now));
                        }
                    }
                }
            }
        }
    }

    /// Runs every event due up to simulated time `until`.
    pub fn run_until(&mut self, until: u64) {
        while let Some(entry) = self.queue.first_entry() {
            let at = entry.key().0;
            if at > until || self.phase == Phase::Done {
                break;
            }
            let ev = entry.remove();
            self.now = at;
            self.handle(ev);
        }
        self.now = self.now.max(until);
    }

    /// Runs the safety phase, then the liveness phase: heals the network,
    /// restarts every node, and waits (at most `liveness_ms`) for convergence.
    pub fn run(&mut self) {
        self.run_until(self.opts.safety_ms);
        self.phase = Phase::Liveness;
        self.marks.push((self.now, Mark::Liveness));
        self.trace.record(self.now, format_args!("liveness phase"));
        self.heal_all();
        for i in 0..self.nodes.len() {
            self.restart(i);
        }
        self.schedule(0, Ev::Converge);
        let end = self.now + self.opts.liveness_ms;
        self.run_until(end);
        if self.converged_at.is_none() {
            self.phase = Phase::Done;
            let why = self.sync_report();
            self.fail(format!(
                "liveness: the cluster did not converge within {} ms of healing; {why}",
                self.opts.liveness_ms
            ));
        }
    }
}
