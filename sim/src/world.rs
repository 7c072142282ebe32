//! The simulated world: replicas of atoll-core on crashable in-memory storage,
//! a faulty network between them, clients, and one virtual clock, all driven
//! from a single seeded RNG on one thread.
//!
//! Over 1 600 lines: the scheduler, the network model, node lifecycle, fault
//! injection, the workload's client and the inline checks. It is due to be
//! split by concern; the link-progress check already lives in `progress.rs`.

use crate::options::{Durability, Options, Topology};
use crate::rng::Rng;
use crate::trace::Trace;
use crate::workload::{self, Loss, Record};
use atoll_core::protocol::Message;
use atoll_core::{Event, Keyspace, KeyspaceConfig, ProtocolError, Replica, ReplicaConfig};
use atoll_crdt::variable::{Kind, State};
use atoll_crdt::ReplicaId;
use atoll_store::MemoryBackend;
use std::collections::BTreeMap;

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
}

/// What happened, for the report's timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mark {
    /// A node crashed.
    Crash(usize),
    /// A node came back up (from its storage, or from a backup taken at the given time).
    Up(usize, Option<u64>),
    /// A link went down (`true`: one way only, from the first to the second).
    Cut(usize, usize, bool),
    /// A link came back.
    Heal(usize, usize, bool),
    /// A node's clock jumped.
    Jump(usize, i64),
    /// The liveness phase began.
    Liveness,
    /// Every replica holds the same state.
    Converged,
}

/// One divergence sample: for each node, how many variables differ from the
/// join of every node's state (0: it has everything any node has).
#[derive(Clone, Debug)]
pub struct Sample {
    /// When.
    pub at: u64,
    /// Per node (`None`: down).
    pub behind: Vec<Option<u32>>,
}

/// How often the link-progress invariant is checked (simulated ms).
const PROGRESS_EVERY_MS: u64 = 5_000;

/// Counters over a run.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Simulated events handled.
    pub events: u64,
    /// Operations acknowledged.
    pub acked: u64,
    /// Operations that changed nothing (a take from an empty bag, ...).
    pub no_ops: u64,
    /// Operations refused because the node was down.
    pub unavailable: u64,
    /// Owner-only operations refused while the node was fenced after a restart.
    pub fenced: u64,
    /// Messages put on the wire.
    pub sent: u64,
    /// Messages delivered to a replica.
    pub delivered: u64,
    /// Messages lost (loss, cut links, closed connections).
    pub dropped: u64,
    /// Messages delivered twice.
    pub duplicated: u64,
    /// Payload bytes delivered.
    pub bytes: u64,
    /// Crashes.
    pub crashes: u64,
    /// Restores from backup.
    pub restores: u64,
    /// Link cuts.
    pub cuts: u64,
    /// Clock jumps.
    pub jumps: u64,
    /// State transfers begun.
    pub state_transfers: u64,
    /// Acknowledged operations lost in a way their durability allows.
    pub allowed_losses: u64,
    /// The longest delta log seen.
    pub max_log: u64,
    /// The most messages in flight on one link.
    pub max_in_flight: u64,
    /// Operations refused because their shared name is another type at
    /// that node.
    pub mismatched: u64,
    /// Type conflicts resolved (each conflict copy created at a node counts once).
    pub conflicts: u64,
}

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
        let first_op = sim.work_rng.exp(sim.opts.workload.op_every_ms);
        sim.schedule(first_op, Ev::Client);
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

    fn build_topology(&mut self, rng: &mut Rng) {
        let n = self.opts.nodes;
        let add = |peers: &mut Vec<Vec<usize>>, a: usize, b: usize| {
            if a != b && !peers[a].contains(&b) {
                peers[a].push(b);
                peers[b].push(a);
            }
        };
        match self.opts.topology {
            Topology::Full => {
                for a in 0..n {
                    for b in a + 1..n {
                        add(&mut self.peers, a, b);
                    }
                }
            }
            Topology::Sparse { degree } => {
                for a in 0..n {
                    add(&mut self.peers, a, (a + 1) % n);
                }
                let chords = n * degree.saturating_sub(2) / 2;
                for _ in 0..chords {
                    let (a, b) = (rng.index(n), rng.index(n));
                    add(&mut self.peers, a, b);
                }
            }
        }
        for p in &mut self.peers {
            p.sort_unstable();
        }
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

    fn ks_config(&self, i: usize) -> KeyspaceConfig {
        // With mixed settings, odd nodes accept other delta sizes: each
        // learns from its peers' Hello what they accept.
        let max_delta_len = match (
            self.opts.mixed_configs && i % 2 == 1,
            self.opts.max_delta_len,
        ) {
            (false, n) => n,
            (true, 2_000) => 16 << 20,
            (true, _) => 2_000,
        };
        KeyspaceConfig {
            flush_each_write: self.opts.durability == Durability::Durable,
            max_clock_skew_ms: self.opts.max_clock_skew_ms,
            max_delta_len,
            checkpoint_every: self.opts.checkpoint_every,
            log_retain: self.opts.log_retain,
            coalesce_bytes: self.opts.coalesce_bytes,
        }
    }

    fn replica_config(&self, i: usize) -> ReplicaConfig {
        let o = &self.opts;
        let config = ReplicaConfig {
            max_batch_bytes: o.max_batch_bytes,
            max_batch_entries: o.max_batch_entries,
            max_in_flight: o.max_in_flight,
            retransmit_ms: o.retransmit_ms,
            ship_whole_bytes: o.ship_whole_bytes,
            gossip_interval_ms: o.gossip_interval_ms,
            state_for_new_peers_after: o.state_for_new_peers_after,
            state_part_bytes: o.state_part_bytes,
            ..ReplicaConfig::default()
        };
        if !(o.mixed_configs && i % 2 == 1) {
            return config;
        }
        // Other settings on odd nodes (each differs from the drawn one).
        let other = |v: usize, a: usize, b: usize| if v == a { b } else { a };
        ReplicaConfig {
            max_batch_bytes: other(o.max_batch_bytes, 2_000, 200),
            max_in_flight: other(o.max_in_flight, 1, 4),
            retransmit_ms: (o.retransmit_ms * 2).min(2_000),
            ship_whole_bytes: other(o.ship_whole_bytes, 1_000, 100),
            gossip_interval_ms: if o.gossip_interval_ms == 0 { 10 } else { 0 },
            state_part_bytes: other(o.state_part_bytes, 300, 64 << 10),
            // Smaller messages than the others send by default.
            max_message_len: 256 << 10,
            ..config
        }
    }

    fn start_node(&mut self, i: usize) {
        // A fresh incarnation, as the node draws one at random on every start.
        let incarnation = ReplicaId(self.fault_rng.next_u64() | 1 << 63);
        let backend = self.nodes[i].backend.clone();
        // The settings drawn must be ones a node would accept.
        let checked = self
            .ks_config(i)
            .validate()
            .and(self.replica_config(i).validate());
        if let Err(e) = checked {
            self.fail(format!("n{i} drew a configuration a node refuses: {e}"));
        }
        let ks = Keyspace::open(
            backend,
            self.ks_config(i),
            self.nodes[i].id,
            incarnation,
            self.local_now(i),
        );
        let ks = match ks {
            Ok(ks) => ks,
            Err(e) => {
                self.fail(format!("n{i} could not reopen its storage: {e}"));
                return;
            }
        };
        let mut r = Replica::new(ks, self.replica_config(i));
        for &p in &self.peers[i] {
            r.add_peer(node_id(p));
        }
        self.nodes[i].replica = Some(r);
        self.nodes[i].disk.clear();
        self.trace
            .record(self.now, format_args!("up n{i} as {}", incarnation.0));
        for p in self.peers[i].clone() {
            self.refresh_link(i, p);
        }
        self.after_input(i);
    }

    fn fail(&mut self, why: String) {
        self.trace.record(self.now, format_args!("FAIL {why}"));
        if self.failures.len() < 50 {
            self.failures.push(why);
        }
    }

    fn link_wanted(&self, a: usize, b: usize) -> bool {
        self.is_up(a)
            && self.is_up(b)
            && !self.cut.contains_key(&(a, b))
            && !self.cut.contains_key(&(b, a))
    }

    /// Brings a connection in line with the links and nodes: down at once when
    /// it should be, up after a reconnect delay when it may be.
    fn refresh_link(&mut self, a: usize, b: usize) {
        let key = pair(a, b);
        let want = self.link_wanted(a, b);
        let c = self.conns.entry(key).or_default();
        if c.up && !want {
            c.up = false;
            c.gen += 1;
            self.trace
                .record(self.now, format_args!("disconnect n{} n{}", key.0, key.1));
            for (x, y) in [(key.0, key.1), (key.1, key.0)] {
                let now = self.local_now(x);
                if let Some(r) = self.nodes[x].replica.as_mut() {
                    r.set_connected(node_id(y), None, now);
                    self.after_input(x);
                }
            }
        } else if !c.up && want && !c.connecting {
            c.connecting = true;
            let delay = self.net_rng.range(1, 100);
            self.schedule(delay, Ev::Connect(key.0, key.1));
        }
    }

    fn connect(&mut self, a: usize, b: usize) {
        let want = self.link_wanted(a, b);
        let c = self.conns.entry((a, b)).or_default();
        c.connecting = false;
        if c.up || !want {
            return;
        }
        c.up = true;
        c.gen += 1;
        self.trace
            .record(self.now, format_args!("connect n{a} n{b}"));
        for (x, y) in [(a, b), (b, a)] {
            let inc = self.nodes[y]
                .replica
                .as_ref()
                .map(|r| r.keyspace_ref().incarnation());
            let now = self.local_now(x);
            if let Some(r) = self.nodes[x].replica.as_mut() {
                r.set_connected(node_id(y), inc, now);
            }
            self.after_input(x);
        }
    }

    /// Moves a replica's outputs into the world after any input to it.
    fn after_input(&mut self, i: usize) {
        let Some(r) = self.nodes[i].replica.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        while let Some(t) = r.poll_transmit() {
            out.push(t);
        }
        let mut events = Vec::new();
        while let Some(e) = r.poll_event() {
            events.push(e);
        }
        let deadline = r.poll_timeout();
        let ks = r.keyspace_ref();
        let last = ks.last_seq();
        let first = ks
            .storage()
            .first_seq()
            .expect("in-memory storage cannot fail");
        let log_len = first.map_or(0, |f| last + 1 - f);
        // Entries may leave the log only once every peer acknowledged them, or
        // when the retention bound forces them out.
        let floor = r.peers().iter().map(|p| p.acked).min().unwrap_or(last);
        let allowed = self.nodes[i]
            .may_drop
            .max(floor)
            .max(last.saturating_sub(self.opts.log_retain));
        self.nodes[i].may_drop = allowed;
        if let Some(f) = first {
            if f > allowed + 1 {
                self.fail(format!(
                    "n{i} dropped log entries through {} before every peer acknowledged them (allowed through {allowed})",
                    f - 1
                ));
            }
        }
        let bound = self.opts.log_retain + self.opts.checkpoint_every;
        self.stats.max_log = self.stats.max_log.max(log_len);
        if log_len > bound {
            self.fail(format!(
                "n{i}'s delta log holds {log_len} entries, over its bound of {bound} (log_retain + checkpoint_every)"
            ));
        }
        let max_queue = ReplicaConfig::default().max_queued_transmits;
        if out.len() > max_queue {
            self.fail(format!(
                "n{i} queued {} messages, over its bound of {max_queue}",
                out.len()
            ));
        }
        for e in events {
            match e {
                Event::StateTransferStarted { peer, .. } => {
                    self.stats.state_transfers += 1;
                    self.trace.record(
                        self.now,
                        format_args!("n{i} state transfer to n{}", index_of(peer)),
                    );
                }
                Event::StateTransferBlocked { peer, blocked } => {
                    // Every node here accepts states of any size the
                    // workload makes.
                    self.fail(format!(
                        "n{i}'s state transfer to n{} was held back: {blocked}",
                        index_of(peer)
                    ));
                }
                Event::SendFailed { peer, error } => {
                    self.fail(format!(
                        "n{i} could not read its log to send to n{}: {error}",
                        index_of(peer)
                    ));
                }
                Event::Unfenced => {
                    self.trace.record(self.now, format_args!("n{i} unfenced"));
                }
                // The merge error that begins it fails the run (`deliver`).
                Event::PeerStuck { .. } => {}
                // Checked where the last ack arrives (`deliver`).
                Event::StateTransferFinished { .. } => {}
                Event::Conflict(c) => {
                    self.stats.conflicts += 1;
                    self.trace.record(
                        self.now,
                        format_args!("n{i} conflict {} kept {} moved {}", c.name, c.kept, c.moved),
                    );
                }
                Event::Applied(a) => {
                    self.trace.record(
                        self.now,
                        format_args!("n{i} merged {} seq {}", a.name, a.seq),
                    );
                }
            }
        }
        for t in out {
            self.transmit(i, index_of(t.to), t.payload);
        }
        // The replica's deadline is on its own clock.
        let at = deadline.map(|d| {
            let d = i64::try_from(d).unwrap_or(i64::MAX);
            let global = d.saturating_sub(self.nodes[i].offset + EPOCH_MS);
            (global.max(self.now as i64) as u64).max(self.now)
        });
        if at != self.nodes[i].timer {
            self.nodes[i].timer = at;
            if let Some(at) = at {
                self.order += 1;
                self.queue.insert((at, self.order), Ev::Timer(i));
            }
        }
    }

    fn transmit(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        self.stats.sent += 1;
        let c = self.conns.get(&pair(from, to)).copied().unwrap_or_default();
        let kind = match Message::decode(&bytes, usize::MAX) {
            Ok(m) => {
                if let Message::Deltas { to: end, vars, .. } = &m {
                    self.deltas_to.insert((from, to), (c.gen, *end));
                    *self.deltas_sent.entry((from, to)).or_default() += 1;
                    // A sender that has the receiver's Hello (its limits)
                    // sends it no larger delta.
                    let known = self.nodes[from]
                        .replica
                        .as_ref()
                        .and_then(|r| r.limits_of(node_id(to)));
                    let largest = vars.iter().map(|v| v.delta.len() as u64).max();
                    if let (Some(known), Some(largest)) = (known, largest) {
                        if largest > known.max_delta_len {
                            self.fail(format!(
                                "n{from} sent n{to} a delta of {largest} bytes, over the {} its Hello said it accepts",
                                known.max_delta_len
                            ));
                        }
                    }
                }
                atoll_core::testkit::kind_name(&m)
            }
            Err(_) => "undecodable",
        };
        if !c.up
            || self.one_way.contains_key(&(from, to))
            || self.net_rng.chance(self.current_loss())
        {
            self.stats.dropped += 1;
            self.trace.record(
                self.now,
                format_args!("drop n{from}->n{to} {kind} {}B", bytes.len()),
            );
            return;
        }
        let copies = if self.net_rng.chance(self.current_duplicate()) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for k in 0..copies {
            let lat = self.opts.faults.latency;
            let mut delay = self.net_rng.range(lat.min_ms, lat.max_ms);
            if self.phase == Phase::Safety && self.net_rng.chance(lat.spike) {
                delay += lat.spike_ms;
            }
            self.trace.record(
                self.now,
                format_args!(
                    "send n{from}->n{to} {kind} {}B +{delay}ms{}",
                    bytes.len(),
                    if k == 1 { " dup" } else { "" }
                ),
            );
            let n = self.in_flight.entry((from, to)).or_default();
            *n += 1;
            self.stats.max_in_flight = self.stats.max_in_flight.max(*n);
            self.schedule(
                delay,
                Ev::Deliver {
                    from,
                    to,
                    gen: c.gen,
                    bytes: bytes.clone(),
                },
            );
        }
    }

    fn current_loss(&self) -> f64 {
        match self.phase {
            Phase::Safety => self.opts.faults.loss,
            _ => 0.0,
        }
    }

    fn current_duplicate(&self) -> f64 {
        match self.phase {
            Phase::Safety => self.opts.faults.duplicate,
            _ => 0.0,
        }
    }

    fn deliver(&mut self, from: usize, to: usize, gen: u64, bytes: Vec<u8>) {
        if let Some(n) = self.in_flight.get_mut(&(from, to)) {
            *n = n.saturating_sub(1);
        }
        let c = self.conns.get(&pair(from, to)).copied().unwrap_or_default();
        if !c.up || c.gen != gen || self.one_way.contains_key(&(from, to)) {
            self.stats.dropped += 1;
            self.trace
                .record(self.now, format_args!("lost n{from}->n{to} in flight"));
            return;
        }
        let now = self.local_now(to);
        if !self.is_up(to) {
            return;
        }
        self.stats.delivered += 1;
        self.stats.bytes += bytes.len() as u64;
        self.trace.record(
            self.now,
            format_args!("deliver n{from}->n{to} {}B", bytes.len()),
        );
        // An ack covering the interval in flight must release the next one at once.
        // Decoded once here for both checks (the replica decodes its own copy).
        let msg = Message::decode(&bytes, usize::MAX).ok();
        let covers = match msg {
            Some(Message::Ack { seq, .. }) => self
                .deltas_to
                .get(&(to, from))
                .is_some_and(|&(g, end)| g == gen && end <= seq),
            _ => false,
        };
        let sent_before = self.deltas_sent.get(&(to, from)).copied().unwrap_or(0);
        // The last chunk (or part) of a state transfer leaves the peer
        // acknowledged through `as_of`.
        let transfer_done = match msg {
            Some(
                Message::StateAck {
                    as_of, last: true, ..
                }
                | Message::StatePartAck { as_of, .. },
            ) => self.nodes[to].replica.as_ref().and_then(|r| {
                r.peers()
                    .iter()
                    .find(|p| p.id == node_id(from) && p.transferring)
                    .map(|_| as_of)
            }),
            _ => None,
        };
        let r = self.nodes[to].replica.as_mut().expect("up");
        match r.handle_message(now, node_id(from), &bytes) {
            Ok(()) => {}
            Err(e @ (ProtocolError::Hostile { .. } | ProtocolError::UnknownPeer(_))) => {
                self.fail(format!("n{to} refused a message from n{from}: {e}"));
            }
            Err(e @ ProtocolError::Merge { .. }) => {
                self.fail(format!("n{to} could not merge from n{from}: {e}"));
            }
        }
        self.after_input(to);
        if let Some(as_of) = transfer_done {
            let r = self.nodes[to].replica.as_ref().expect("up");
            if let Some(p) = r.peers().iter().find(|p| p.id == node_id(from)) {
                if !p.transferring && p.acked < as_of {
                    self.fail(format!(
                        "n{to} finished a state transfer to n{from} as of {as_of} but holds it acknowledged only through {}",
                        p.acked
                    ));
                }
            }
        }
        if covers {
            let r = self.nodes[to].replica.as_ref().expect("up");
            let shippable = r.keyspace_ref().flushed_seq();
            let behind = r
                .peers()
                .iter()
                .find(|p| p.id == node_id(from))
                .is_some_and(|p| {
                    let last_end = self.deltas_to.get(&(to, from)).map_or(0, |d| d.1);
                    p.connected && !p.transferring && p.acked >= last_end && p.acked < shippable
                });
            let sent = self.deltas_sent.get(&(to, from)).copied().unwrap_or(0) > sent_before;
            // Unless the gossip interval holds the next one back: then a timer
            // must be set for no later than the interval from now.
            let gap = r.config().gossip_interval_ms;
            let held = gap > 0 && r.poll_timeout().is_some_and(|at| at <= now + gap);
            if behind && !sent && !held {
                self.fail(format!(
                    "n{to} got n{from}'s ack of its interval in flight, has more to send, and sent nothing"
                ));
            }
        }
    }

    fn client_op(&mut self) {
        let ids: Vec<ReplicaId> = (0..self.nodes.len()).map(node_id).collect();
        let i = self.work_rng.index(self.nodes.len());
        let (var, op) = workload::next_op(&mut self.work_rng, &self.opts.workload, &ids);
        let now = self.local_now(i);
        let Some(r) = self.nodes[i].replica.as_mut() else {
            self.stats.unavailable += 1;
            return;
        };
        if op.owner_only() && r.fenced() {
            self.stats.fenced += 1;
            self.trace
                .record(self.now, format_args!("n{i} fenced {var} {op:?}"));
            return;
        }
        let actor = r.keyspace_ref().incarnation();
        let owned = match op {
            workload::Op::BagTransfer { .. } => {
                let node = r.keyspace_ref().replica_id();
                r.keyspace()
                    .read(&var, Kind::Bag, |s| Ok(workload::owned_by(s, node)))
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        };
        let store_op = op.to_store(&owned);
        let res = r.write(now, &var, store_op.clone()).map(|out| {
            let outcome = workload::Op::outcome(&store_op, &out.answer);
            (out.delta.map(|d| (d, outcome, out.ts)), out.applied)
        });
        match res {
            Ok((Some((delta, outcome, ts)), applied)) => {
                debug_assert!(applied.is_some());
                self.stats.acked += 1;
                let id = self.history.len() as u64;
                let rec = Record {
                    id,
                    at: self.now,
                    node: i,
                    actor,
                    ts,
                    var,
                    op,
                    outcome,
                    delta,
                    lost: None,
                };
                self.trace.record(self.now, format_args!("ack {rec}"));
                self.history.push(rec);
                self.after_input(i);
            }
            Ok((None, _)) => {
                self.stats.no_ops += 1;
            }
            // A shared name that is another type here: refused, as the
            // store's handles refuse it.
            Err(atoll_core::Error::TypeMismatch { .. }) if var.starts_with('x') => {
                self.stats.mismatched += 1;
                self.trace
                    .record(self.now, format_args!("n{i} mismatched {var} {op:?}"));
            }
            Err(e) => self.fail(format!("n{i}: {var} {op:?} failed: {e}")),
        }
    }

    /// The state of every variable at node `i` (its storage's, if it is down).
    pub fn view(&mut self, i: usize) -> BTreeMap<String, State> {
        match self.nodes[i].replica.as_mut() {
            Some(r) => read_all(r.keyspace()),
            None => self.nodes[i].disk.clone(),
        }
    }

    fn state_of(&mut self, i: usize, var: &str) -> Option<State> {
        match self.nodes[i].replica.as_mut() {
            Some(r) => r
                .keyspace()
                .state(var)
                .expect("in-memory storage cannot fail")
                .cloned(),
            None => self.nodes[i].disk.get(var).cloned(),
        }
    }

    /// After node `i` lost data (its states were `before`): marks every
    /// acknowledged operation no node holds any more as lost, and why. Only
    /// operations on variables whose state at `i` changed can have been lost.
    fn mark_losses(&mut self, i: usize, before: &BTreeMap<String, State>, restore: bool) {
        let durable = self.opts.durability == Durability::Durable;
        let mut after = self.view(i);
        let changed: std::collections::BTreeSet<String> = before
            .iter()
            .filter(|(n, s)| after.get(*n) != Some(s))
            .map(|(n, _)| n.clone())
            .collect();
        if changed.is_empty() {
            return;
        }
        // Each node's state of a variable, copied once for the whole pass.
        let mut states: BTreeMap<String, Vec<Option<State>>> = BTreeMap::new();
        for k in 0..self.history.len() {
            if self.history[k].lost.is_some() {
                continue;
            }
            // An operation on a shared name is held under the name, or in
            // its conflict copy where another type kept the name.
            let var = self.history[k].var.clone();
            let copy = atoll_core::conflict_name(&var, self.history[k].op.kind());
            if !changed.contains(&var) && !changed.contains(&copy) {
                continue;
            }
            let delta = self.history[k].delta.clone();
            let mut held = false;
            for var in [var, copy] {
                let row = states.entry(var.clone()).or_insert_with(|| {
                    (0..self.nodes.len())
                        .map(|n| self.state_of(n, &var))
                        .collect()
                });
                // Held here, or by any node? The cheap test (nothing left once
                // stripped) everywhere first; the full one (a join that changes
                // nothing), which copies the state, only if that finds nothing.
                held = after
                    .get_mut(&var)
                    .is_some_and(|s| workload::strips_to_nothing(s, &delta))
                    || row
                        .iter_mut()
                        .flatten()
                        .any(|s| workload::strips_to_nothing(s, &delta))
                    || after
                        .get(&var)
                        .is_some_and(|s| workload::includes(s, &delta))
                    || row.iter().flatten().any(|s| workload::includes(s, &delta));
                if held {
                    break;
                }
            }
            if held {
                continue;
            }
            let (at, node) = (self.now, i);
            let why = if restore {
                Loss::Restore { at, node }
            } else if durable {
                Loss::DurableCrash { at, node }
            } else {
                Loss::BufferedCrash { at, node }
            };
            if matches!(why, Loss::DurableCrash { .. }) {
                let rec = self.history[k].to_string();
                self.fail(format!(
                    "acknowledged {rec} was lost when n{i} crashed, under durable writes"
                ));
            } else {
                self.stats.allowed_losses += 1;
            }
            self.trace
                .record(self.now, format_args!("lost op #{k}: {why:?}"));
            self.history[k].lost = Some(why);
        }
    }

    /// Crashes node `i`: it stops, and its storage loses whatever was not flushed
    /// (some of the newest unflushed batches may survive).
    pub fn crash(&mut self, i: usize) {
        if !self.is_up(i) {
            return;
        }
        let before = self.view(i);
        self.nodes[i].replica = None;
        self.stats.crashes += 1;
        let backend = self.nodes[i].backend.clone();
        let keep = self.fault_rng.range(0, backend.unflushed() as u64) as usize;
        backend.crash(keep);
        self.trace.record(
            self.now,
            format_args!("crash n{i} keeping {keep} unflushed"),
        );
        self.marks.push((self.now, Mark::Crash(i)));
        self.nodes[i].timer = None;
        // What its storage holds now: open a copy, so the real one is untouched.
        let copy = Keyspace::open(
            backend.snapshot(),
            self.ks_config(i),
            self.nodes[i].id,
            ReplicaId(0),
            self.local_now(i),
        );
        self.nodes[i].disk = match copy {
            Ok(mut ks) => read_all(&mut ks),
            Err(e) => {
                self.fail(format!(
                    "n{i}'s storage cannot be opened after a crash: {e}"
                ));
                BTreeMap::new()
            }
        };
        for p in self.peers[i].clone() {
            self.refresh_link(i, p);
        }
        self.mark_losses(i, &before, false);
    }

    /// Restarts node `i` from its storage, if it is down.
    pub fn restart(&mut self, i: usize) {
        if self.is_up(i) {
            return;
        }
        self.marks.push((self.now, Mark::Up(i, None)));
        self.start_node(i);
    }

    /// Crashes node `i` (if up) and brings it back from backup number `which`
    /// (the oldest if `None`; nothing happens if it has no backup).
    pub fn restore(&mut self, i: usize, which: Option<usize>) {
        if self.nodes[i].backups.is_empty() {
            return;
        }
        self.crash(i);
        let before = self.view(i);
        let k = which.unwrap_or(0).min(self.nodes[i].backups.len() - 1);
        let (taken, backup) = &self.nodes[i].backups[k];
        let taken = *taken;
        self.nodes[i].backend = backup.snapshot();
        self.stats.restores += 1;
        self.trace.record(
            self.now,
            format_args!("restore n{i} from backup of {taken}"),
        );
        self.marks.push((self.now, Mark::Up(i, Some(taken))));
        self.start_node(i);
        self.mark_losses(i, &before, true);
    }

    fn cut_link(&mut self, a: usize, b: usize) {
        self.stats.cuts += 1;
        *self.cut.entry((a, b)).or_default() += 1;
        *self.cut.entry((b, a)).or_default() += 1;
        self.trace.record(self.now, format_args!("cut n{a} n{b}"));
        self.marks.push((self.now, Mark::Cut(a, b, false)));
        self.refresh_link(a, b);
    }

    fn heal_link(&mut self, a: usize, b: usize) {
        let mut healed = false;
        for k in [(a, b), (b, a)] {
            if let Some(n) = self.cut.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    self.cut.remove(&k);
                    healed = true;
                }
            }
        }
        if healed {
            self.trace.record(self.now, format_args!("heal n{a} n{b}"));
            self.marks.push((self.now, Mark::Heal(a, b, false)));
        }
        self.refresh_link(a, b);
    }

    /// Cuts every link between the sides.
    pub fn split(&mut self, sides: &[Vec<usize>]) {
        for (x, s) in sides.iter().enumerate() {
            for t in &sides[x + 1..] {
                for &a in s {
                    for &b in t {
                        self.cut_link(a, b);
                    }
                }
            }
        }
    }

    /// Restores every cut link, both ways and one way.
    pub fn heal_all(&mut self) {
        let cut: Vec<(usize, usize)> = self.cut.keys().copied().collect();
        self.cut.clear();
        let one: Vec<(usize, usize)> = self.one_way.keys().copied().collect();
        self.one_way.clear();
        for (a, b) in one {
            self.marks.push((self.now, Mark::Heal(a, b, true)));
        }
        for (a, b) in cut {
            if a < b {
                self.marks.push((self.now, Mark::Heal(a, b, false)));
            }
            self.refresh_link(a, b);
        }
        self.trace.record(self.now, format_args!("heal all"));
    }

    /// Moves node `i`'s clock by `by` ms, within the configured skew bound.
    pub fn jump_clock(&mut self, i: usize, by: i64) {
        let bound = (self.opts.max_clock_skew_ms / 4) as i64;
        let before = self.nodes[i].offset;
        self.nodes[i].offset = (before + by).clamp(-bound, bound);
        let moved = self.nodes[i].offset - before;
        self.stats.jumps += 1;
        self.trace
            .record(self.now, format_args!("clock n{i} {moved:+}ms"));
        self.marks.push((self.now, Mark::Jump(i, moved)));
        // Its timer is on its own clock: re-read the deadline.
        self.nodes[i].timer = None;
        if self.is_up(i) {
            let now = self.local_now(i);
            if let Some(r) = self.nodes[i].replica.as_mut() {
                r.handle_timeout(now);
            }
            self.after_input(i);
        }
    }

    fn act(&mut self, a: Action) {
        match a {
            Action::Cut(a, b) => self.cut_link(a, b),
            Action::Heal(a, b) => self.heal_link(a, b),
            Action::OneWay(a, b) => {
                *self.one_way.entry((a, b)).or_default() += 1;
                self.stats.cuts += 1;
                self.trace
                    .record(self.now, format_args!("one-way cut n{a}->n{b}"));
                self.marks.push((self.now, Mark::Cut(a, b, true)));
            }
            Action::OneWayHeal(a, b) => {
                if let Some(n) = self.one_way.get_mut(&(a, b)) {
                    *n -= 1;
                    if *n == 0 {
                        self.one_way.remove(&(a, b));
                        self.trace
                            .record(self.now, format_args!("one-way heal n{a}->n{b}"));
                        self.marks.push((self.now, Mark::Heal(a, b, true)));
                    }
                }
            }
            Action::Crash(i) => self.crash(i),
            Action::Restart(i) => self.restart(i),
            Action::Restore(i, which) => self.restore(i, which),
            Action::Jump(i, by) => self.jump_clock(i, by),
        }
    }

    fn partition_ms(&mut self) -> u64 {
        let f = &self.opts.faults;
        if f.long_partitions && self.fault_rng.chance(0.2) {
            // Hours to days; whatever outlasts the safety phase is healed by the liveness phase.
            self.fault_rng.range(600_000, 3 * 86_400_000)
        } else {
            self.fault_rng.exp(2_000)
        }
    }

    /// Injects one random fault from those enabled.
    fn random_fault(&mut self) {
        let f = self.opts.faults.clone();
        let n = self.nodes.len();
        let mut kinds = Vec::new();
        if n > 1 {
            if f.partitions {
                kinds.push(0);
            }
            if f.one_way {
                kinds.push(1);
            }
            if f.flapping {
                kinds.push(2);
            }
            if f.clogging {
                kinds.push(3);
            }
        }
        if f.crashes {
            kinds.push(4);
        }
        if f.restores {
            kinds.push(5);
        }
        if f.clock_jumps && f.clock_skew_ms > 0 {
            kinds.push(6);
        }
        if kinds.is_empty() {
            return;
        }
        let rng = &mut self.fault_rng;
        let links: Vec<(usize, usize)> = (0..n)
            .flat_map(|a| {
                self.peers[a]
                    .iter()
                    .filter(move |&&b| b > a)
                    .map(move |&b| (a, b))
            })
            .collect();
        match kinds[rng.index(kinds.len())] {
            0 => {
                let mut order: Vec<usize> = (0..n).collect();
                rng.shuffle(&mut order);
                let sides = if n > 2 && rng.chance(0.3) { 3 } else { 2 };
                let mut groups = vec![Vec::new(); sides];
                for (k, x) in order.into_iter().enumerate() {
                    // The first `sides` nodes seed the groups, so none is empty.
                    let g = if k < sides { k } else { rng.index(sides) };
                    groups[g].push(x);
                }
                let dur = self.partition_ms();
                let mut cuts = Vec::new();
                for (x, s) in groups.iter().enumerate() {
                    for t in &groups[x + 1..] {
                        for &a in s {
                            for &b in t {
                                if self.peers[a].contains(&b) {
                                    cuts.push((a, b));
                                }
                            }
                        }
                    }
                }
                self.trace
                    .record(self.now, format_args!("split {groups:?} for {dur}ms"));
                for (a, b) in cuts {
                    self.cut_link(a, b);
                    self.schedule(dur, Ev::Do(Action::Heal(a, b)));
                }
            }
            1 if !links.is_empty() => {
                let (a, b) = links[rng.index(links.len())];
                let (a, b) = if rng.chance(0.5) { (a, b) } else { (b, a) };
                let dur = rng.exp(3_000);
                self.act(Action::OneWay(a, b));
                self.schedule(dur, Ev::Do(Action::OneWayHeal(a, b)));
            }
            2 if !links.is_empty() => {
                let (a, b) = links[rng.index(links.len())];
                let flips = rng.range(2, 12);
                let period = rng.range(20, 1_000);
                for k in 0..flips {
                    self.schedule(k * 2 * period, Ev::Do(Action::Cut(a, b)));
                    self.schedule(k * 2 * period + period, Ev::Do(Action::Heal(a, b)));
                }
            }
            3 if !links.is_empty() => {
                let mut chosen = links.clone();
                rng.shuffle(&mut chosen);
                chosen.truncate(rng.range(1, links.len() as u64) as usize);
                let step = rng.range(10, 500);
                let mut t = 0;
                for &(a, b) in &chosen {
                    self.schedule(t, Ev::Do(Action::Cut(a, b)));
                    t += step;
                }
                let mut back = chosen;
                self.fault_rng.shuffle(&mut back);
                t += self.fault_rng.exp(1_000);
                for (a, b) in back {
                    self.schedule(t, Ev::Do(Action::Heal(a, b)));
                    t += step;
                }
            }
            4 => {
                let i = rng.index(n);
                let down = if f.long_partitions && rng.chance(0.1) {
                    rng.range(60_000, 86_400_000)
                } else {
                    rng.exp(1_500)
                };
                self.act(Action::Crash(i));
                self.schedule(down, Ev::Do(Action::Restart(i)));
            }
            5 => {
                let i = rng.index(n);
                let k = rng.index(self.nodes[i].backups.len().max(1));
                self.act(Action::Restore(i, Some(k)));
            }
            6 => {
                let i = rng.index(n);
                let by = rng.range(1, f.clock_skew_ms.max(1)) as i64;
                let by = if rng.chance(0.5) { by } else { -by };
                self.act(Action::Jump(i, by));
            }
            _ => {}
        }
    }

    fn backup(&mut self) {
        for i in 0..self.nodes.len() {
            if !self.is_up(i) {
                continue;
            }
            let snap = self.nodes[i].backend.snapshot();
            let b = &mut self.nodes[i].backups;
            // Keep the first backup (the oldest) and the four newest.
            if b.len() >= 5 {
                b.remove(1);
            }
            b.push((self.now, snap));
        }
        self.trace.record(self.now, format_args!("backup"));
    }

    fn sample(&mut self) {
        let views: Vec<Option<BTreeMap<String, State>>> = (0..self.nodes.len())
            .map(|i| self.is_up(i).then(|| self.view(i)))
            .collect();
        let mut all: BTreeMap<String, State> = BTreeMap::new();
        for v in views.iter().flatten() {
            for (name, s) in v {
                match all.get_mut(name) {
                    Some(a) => {
                        let _ = a.join(s.clone());
                    }
                    None => {
                        all.insert(name.clone(), s.clone());
                    }
                }
            }
        }
        let behind = views
            .iter()
            .map(|v| {
                v.as_ref()
                    .map(|v| all.iter().filter(|(n, s)| v.get(*n) != Some(s)).count() as u32)
            })
            .collect();
        self.samples.push(Sample {
            at: self.now,
            behind,
        });
    }

    /// Checks the link-progress invariant on every pair (see `progress`).
    fn check_progress(&mut self) {
        let mut failures = Vec::new();
        for x in 0..self.nodes.len() {
            let Some(r) = self.nodes[x].replica.as_ref() else {
                continue;
            };
            for p in r.peers() {
                let y = index_of(p.id);
                let gen = self
                    .conns
                    .get(&pair(x, y))
                    .filter(|c| c.up && self.link_wanted(x, y))
                    .map(|c| c.gen);
                failures.extend(self.progress.observe(self.now, x, y, gen, &p));
            }
        }
        for f in failures {
            self.fail(f);
        }
    }

    /// Each node's log end and its view of each peer, for diagnosing a stall.
    pub fn sync_report(&mut self) -> String {
        let mut out = Vec::new();
        let views: Vec<BTreeMap<String, State>> =
            (0..self.nodes.len()).map(|i| self.view(i)).collect();
        for (i, v) in views.iter().enumerate().skip(1) {
            let differ: Vec<&String> = v
                .keys()
                .chain(views[0].keys())
                .filter(|n| v.get(*n) != views[0].get(*n))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            if !differ.is_empty() {
                out.push(format!("n{i} differs from n0 on {differ:?}"));
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(r) = &n.replica else {
                out.push(format!("n{i} down"));
                continue;
            };
            let ks = r.keyspace_ref();
            let peers: Vec<String> = r
                .peers()
                .iter()
                .map(|p| {
                    format!(
                        "n{}: acked {} lag {}{}{}{}",
                        index_of(p.id),
                        p.acked,
                        p.lag,
                        if p.connected { "" } else { " disconnected" },
                        if p.transferring { " transferring" } else { "" },
                        if p.caught_up { "" } else { " not caught up" },
                    )
                })
                .collect();
            out.push(format!(
                "n{i} log {} (flushed {}){} [{}]",
                ks.last_seq(),
                ks.flushed_seq(),
                if r.fenced() { " fenced" } else { "" },
                peers.join(", ")
            ));
        }
        out.join("; ")
    }

    /// Whether every node is up and holds the same variables with the same states.
    pub fn converged(&mut self) -> bool {
        if !(0..self.nodes.len()).all(|i| self.is_up(i)) {
            return false;
        }
        let first = self.view(0);
        (1..self.nodes.len()).all(|i| self.view(i) == first)
    }

    fn handle(&mut self, ev: Ev) {
        self.stats.events += 1;
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
                    let now = self.local_now(i);
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
                    let now = self.local_now(i);
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
                    if self.converged() {
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
