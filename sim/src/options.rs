//! What a run simulates: cluster shape, workload, faults and protocol bounds,
//! as plain data. [`Options::for_seed`] draws every intensity from the seed;
//! a scenario or the command line may then override any field.

use crate::rng::Rng;

/// How acknowledged writes are made durable (the store's `Durability`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Every write is flushed before it is acknowledged: a crash loses nothing acknowledged.
    Durable,
    /// Writes are flushed every `flush_every_ms`; a crash may lose the last
    /// interval's acknowledged writes (and only those).
    Buffered {
        /// The flush interval (simulated ms).
        flush_every_ms: u64,
    },
}

/// Who is a peer of whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// Every pair of nodes.
    Full,
    /// A ring plus random chords, `degree` peers per node on average: updates
    /// travel transitively.
    Sparse {
        /// Peers per node (at least 2).
        degree: usize,
    },
}

/// Message delivery delay: uniform in `min_ms..=max_ms`, plus with
/// probability `spike` an extra `spike_ms` (a tail that reorders messages).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Latency {
    /// Least delay.
    pub min_ms: u64,
    /// Greatest ordinary delay.
    pub max_ms: u64,
    /// Probability of a spike.
    pub spike: f64,
    /// A spike's extra delay.
    pub spike_ms: u64,
}

/// The faults injected during the safety phase. All are data: a scenario sets
/// them, [`Options::for_seed`] randomises them.
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    /// Delivery delay.
    pub latency: Latency,
    /// Probability that a message is dropped.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Mean simulated time between fault injections (ms).
    pub every_ms: u64,
    /// Random splits of the cluster into two or three sides.
    pub partitions: bool,
    /// One-way link failures: messages in one direction are dropped while the
    /// connection stays up (a gray failure that only retransmission repairs).
    pub one_way: bool,
    /// A link that goes down and up again and again.
    pub flapping: bool,
    /// Swizzle-clogging: cut a random set of links one by one, then restore
    /// them in random order.
    pub clogging: bool,
    /// Partitions lasting simulated hours to days (otherwise up to seconds).
    pub long_partitions: bool,
    /// Node crashes that lose what was not flushed, then restarts.
    pub crashes: bool,
    /// Restores of a node from an old backup of its storage.
    pub restores: bool,
    /// How often each node's storage is backed up (ms, 0 = never), for restores.
    pub backup_every_ms: u64,
    /// Each node's clock starts up to this far off (ms, either way).
    pub clock_skew_ms: u64,
    /// Sudden clock jumps, forward or back, of up to `clock_skew_ms`.
    pub clock_jumps: bool,
}

impl Faults {
    /// No faults: a perfect network with a fixed 1 ms delay.
    pub fn none() -> Faults {
        Faults {
            latency: Latency {
                min_ms: 1,
                max_ms: 1,
                spike: 0.0,
                spike_ms: 0,
            },
            loss: 0.0,
            duplicate: 0.0,
            every_ms: 1_000,
            partitions: false,
            one_way: false,
            flapping: false,
            clogging: false,
            long_partitions: false,
            crashes: false,
            restores: false,
            backup_every_ms: 0,
            clock_skew_ms: 0,
            clock_jumps: false,
        }
    }

    /// The names [`Faults::keep_only`] accepts.
    pub const NAMES: [&'static str; 11] = [
        "latency",
        "loss",
        "duplicate",
        "partitions",
        "one-way",
        "flapping",
        "clogging",
        "long-partitions",
        "crashes",
        "restores",
        "clock",
    ];

    /// Every fault on, with intensities drawn from `rng`.
    pub fn random(rng: &mut Rng) -> Faults {
        let min_ms = rng.range(1, 20);
        Faults {
            latency: Latency {
                min_ms,
                max_ms: min_ms + rng.range(0, 80),
                spike: [0.0, 0.01, 0.05][rng.index(3)],
                spike_ms: rng.range(100, 2_000),
            },
            loss: [0.0, 0.01, 0.05, 0.2][rng.index(4)],
            duplicate: [0.0, 0.01, 0.05][rng.index(3)],
            every_ms: rng.range(300, 3_000),
            partitions: true,
            one_way: true,
            flapping: true,
            clogging: true,
            long_partitions: true,
            crashes: true,
            restores: true,
            backup_every_ms: rng.range(2_000, 20_000),
            clock_skew_ms: rng.range(0, 60_000),
            clock_jumps: true,
        }
    }

    /// Keeps only the faults named in `names` (see [`Faults::NAMES`]); the
    /// others are turned off. `latency` keeps the drawn delays (otherwise 1 ms).
    pub fn keep_only(&mut self, names: &[String]) -> Result<(), String> {
        for n in names {
            if !Faults::NAMES.contains(&n.as_str()) {
                return Err(format!(
                    "unknown fault {n:?}; the faults are: {}",
                    Faults::NAMES.join(", ")
                ));
            }
        }
        let on = |n: &str| names.iter().any(|x| x == n);
        let none = Faults::none();
        if !on("latency") {
            self.latency = none.latency;
        }
        if !on("loss") {
            self.loss = 0.0;
        }
        if !on("duplicate") {
            self.duplicate = 0.0;
        }
        self.partitions &= on("partitions");
        self.one_way &= on("one-way");
        self.flapping &= on("flapping");
        self.clogging &= on("clogging");
        self.long_partitions &= on("long-partitions");
        self.crashes &= on("crashes");
        self.restores &= on("restores");
        if !on("clock") {
            self.clock_skew_ms = 0;
            self.clock_jumps = false;
        }
        Ok(())
    }

    /// Whether any fault injection (beyond delay, loss and duplication) is on.
    pub fn injects(&self) -> bool {
        self.partitions
            || self.one_way
            || self.flapping
            || self.clogging
            || self.crashes
            || self.restores
            || self.clock_jumps
    }
}

/// Relative weights of the operation types clients issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    /// Counter increments and decrements.
    pub counter: u32,
    /// Last-writer-wins register writes.
    pub register: u32,
    /// Multi-value register writes.
    pub mv_register: u32,
    /// Set adds and removes.
    pub set: u32,
    /// Map key updates (counter, register, set fields) and key removals.
    pub map: u32,
    /// Bag inserts, takes and transfers.
    pub bag: u32,
}

/// What clients do.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Mean simulated time between two client operations, cluster-wide (ms).
    pub op_every_ms: u64,
    /// The mix of operation types.
    pub mix: Mix,
    /// Variables of each type (small, so that operations collide).
    pub vars_per_type: usize,
    /// Distinct set elements and map keys (small, so adds and removes collide).
    pub elements: u64,
    /// Of every 100 operations, how many go to a name shared by every type
    /// (`x0`, `x1`, ...) rather than to one of their own type's: a name
    /// created as two types on two sides of a split is a type conflict,
    /// which every replica must resolve alike, and an operation of the
    /// losing type there is refused.
    pub shared_names: u32,
    /// Mean simulated time between two strong operations on owned
    /// variables (ownership changes, compare-and-set, claims, a bounded
    /// counter), cluster-wide (ms; 0: none).
    pub strong_every_ms: u64,
    /// Of every 100 strong operations, how many come from the variable's
    /// favourite node of the moment (the rest from any node).
    pub strong_locality_pct: u8,
    /// How long each variable's favourite node stays its favourite, on
    /// average (ms).
    pub favourite_every_ms: u64,
    /// Strong operations come from n1 and n2 in turn, half each (for the
    /// migration benchmark's two equal users), instead of as above.
    pub strong_from_two: bool,
    /// Of every 100 strong operations, how many change the owner (eight
    /// in nine ask for ownership, one in nine releases).
    pub strong_owner_changes_pct: u8,
    /// When owned variables move to where they are used.
    pub migration: atoll_core::Migration,
    /// When bag elements move to nodes whose shares are low.
    pub rebalance: atoll_core::Rebalance,
    /// Placement rules: nodes on sites `s0` and `s1` (even and odd
    /// nodes), `o-claim` owned on site `s0`, `o-reg` owned where first
    /// used (`world::owned`).
    pub placement: bool,
    /// Mirroring under faults (`world::mirror`): namespace `pair` mirrored
    /// over n0-n1 only, `loc` never; a third of the operations go to them.
    pub mirror: bool,
    /// Escrow of `o-stock`'s decrement rights: clients enable it (floor
    /// 0) from time to time, and nodes then decrement out of the rights
    /// granted them (`world::owned`).
    pub escrow: bool,
    /// Mean simulated time between consistency checks (ms; 0: none). In
    /// half the runs (`world::checks`).
    pub check_every_ms: u64,
}

impl Workload {
    /// Every type, evenly mixed.
    pub fn default_mix() -> Workload {
        Workload {
            op_every_ms: 20,
            mix: Mix {
                counter: 3,
                register: 2,
                mv_register: 1,
                set: 3,
                map: 2,
                bag: 3,
            },
            vars_per_type: 2,
            elements: 12,
            shared_names: 3,
            strong_every_ms: 0,
            strong_locality_pct: 0,
            strong_owner_changes_pct: 9,
            favourite_every_ms: 5_000,
            strong_from_two: false,
            migration: atoll_core::Migration::default(),
            rebalance: atoll_core::Rebalance::default(),
            placement: false,
            mirror: false,
            escrow: false,
            check_every_ms: 0,
        }
    }
}

/// Everything a run needs besides its seed.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Who peers with whom.
    pub topology: Topology,
    /// Length of the safety phase: faults and client operations (simulated ms).
    pub safety_ms: u64,
    /// The most simulated time the liveness phase may take to converge.
    pub liveness_ms: u64,
    /// Clients.
    pub workload: Workload,
    /// Faults.
    pub faults: Faults,
    /// Durability of acknowledged writes.
    pub durability: Durability,
    /// Protocol: how long before resending (ms).
    pub retransmit_ms: u64,
    /// Protocol: the most delta bytes per message.
    pub max_batch_bytes: usize,
    /// Protocol: the most log entries per message.
    pub max_batch_entries: usize,
    /// Protocol: the most intervals in flight per peer (1 = stop-and-wait).
    pub max_in_flight: usize,
    /// Storage: the most delta-log entries kept.
    pub log_retain: u64,
    /// Storage: log entries between checkpoints.
    pub checkpoint_every: u64,
    /// Storage: runs of log entries are joined at checkpoints into entries of
    /// up to this many bytes (0: never).
    pub coalesce_bytes: usize,
    /// Protocol: log entries this large are sent as they are, unjoined.
    pub ship_whole_bytes: usize,
    /// Protocol: the least time between two new intervals to one peer (ms).
    pub gossip_interval_ms: u64,
    /// Protocol: a peer that holds nothing of a log spanning this many
    /// entries is sent the state instead (0: never).
    pub state_for_new_peers_after: u64,
    /// Protocol: in a state transfer, states larger than this go in parts.
    pub state_part_bytes: usize,
    /// Storage: the largest delta accepted from a peer. A log entry larger
    /// than this (a large state merged from a transfer, or a long run joined
    /// at a checkpoint) reaches peers by state transfer.
    pub max_delta_len: usize,
    /// Odd-numbered nodes run other protocol settings than even ones (window,
    /// batch and part sizes, retransmission, gossip interval): nodes of one
    /// cluster need not agree on them.
    pub mixed_configs: bool,
    /// Storage: how far back the index of changes reaches (log sequence
    /// numbers); a peer the log no longer reaches, but this does, is sent
    /// only the variables changed since what it holds.
    pub changes_retain: u64,
    /// Storage: the variables kept in memory, by encoded size (`None`: all).
    pub cache_bytes: Option<usize>,
    /// Remote timestamps further ahead than this are refused (ms).
    pub max_clock_skew_ms: u64,
    /// How often to sample divergence for the report (ms; 0 = never).
    pub sample_every_ms: u64,
}

impl Options {
    /// The options of a randomised run: every fault on, with cluster size,
    /// intensities, durability and protocol bounds drawn from `seed`. Small
    /// bounds are favoured, so that batching, log truncation and state
    /// transfer happen often.
    ///
    /// A drawn two-node cluster has no restores: with two nodes, restores
    /// show a known bag anomaly (docs/simulation.md) that would fail the
    /// sweep. [`Options::for_seed_with_nodes`] keeps them.
    pub fn for_seed(seed: u64) -> Options {
        let mut o = Self::drawn(seed);
        if o.nodes == 2 {
            o.faults.restores = false;
        }
        o
    }

    /// As [`Options::for_seed`], but with `nodes` nodes and every drawn fault
    /// kept, restores included (`atoll-sim --nodes N`).
    pub fn for_seed_with_nodes(seed: u64, nodes: usize) -> Options {
        Options {
            nodes,
            ..Self::drawn(seed)
        }
    }

    fn drawn(seed: u64) -> Options {
        // A stream of its own, so that adding a field here does not perturb the run's stream.
        let mut rng = Rng::new(seed ^ 0x5eed_0f0f_0915_u64);
        let faults = Faults::random(&mut rng);
        let durability = if rng.chance(0.5) {
            Durability::Durable
        } else {
            Durability::Buffered {
                flush_every_ms: rng.range(5, 500),
            }
        };
        // Two nodes too: no third one forwards what a peer missed, which hid
        // a bug from sweeps of three to six.
        let nodes = rng.range(2, 6) as usize;
        Options {
            nodes,
            topology: Topology::Full,
            safety_ms: rng.range(10_000, 40_000),
            liveness_ms: 120_000,
            workload: Workload {
                op_every_ms: rng.range(5, 40),
                ..Workload::default_mix()
            },
            faults,
            durability,
            retransmit_ms: rng.range(50, 1_000),
            max_batch_bytes: [200, 2_000, 64 << 10][rng.index(3)],
            max_batch_entries: [4, 64, 4096][rng.index(3)],
            max_in_flight: [1, 2, 4, 8][rng.index(4)],
            log_retain: rng.range(20, 400),
            checkpoint_every: rng.range(4, 64),
            max_clock_skew_ms: 300_000,
            sample_every_ms: 0,
            // Drawn last, so that the draws above stay as they were.
            coalesce_bytes: [0, 300, 3_000, 64 << 10][rng.index(4)],
            ship_whole_bytes: [100, 1_000, 4 << 10][rng.index(3)],
            gossip_interval_ms: [0, 0, 10, 150][rng.index(4)],
            state_for_new_peers_after: [0, 1, 20, 4096][rng.index(4)],
            state_part_bytes: [40, 300, 64 << 10][rng.index(3)],
            max_delta_len: [16 << 20, 16 << 20, 16 << 20, 2_000][rng.index(4)],
            mixed_configs: rng.chance(0.25),
            changes_retain: 1 << 40,
            cache_bytes: None,
        }
        .with_strong(seed)
        .with_rebalance(seed)
        .with_escrow(seed)
    }

    /// Escrow of the bounded counter's rights (in half the runs), checks,
    /// how far back the index of changes reaches, and the cache's budget,
    /// each drawn from a stream of its own.
    fn with_escrow(mut self, seed: u64) -> Options {
        let mut rng = Rng::new(seed ^ 0x00e5_c0e0_0000);
        self.workload.escrow = rng.chance(0.5);
        let mut rng = Rng::new(seed ^ 0x00c4_ec6c_0001);
        self.workload.check_every_ms = [0, 0, 1_000, 5_000][rng.index(4)];
        let mut rng = Rng::new(seed ^ 0x00c4_a6e5_0002);
        self.changes_retain = [50, 500, 1 << 40, 1 << 40][rng.index(4)];
        let mut rng = Rng::new(seed ^ 0x00ca_c4e0_0003);
        self.cache_bytes = [None, None, Some(0), Some(300)][rng.index(4)];
        self
    }

    /// How often bags are rebalanced (never, in one run of four), drawn
    /// from a stream of their own.
    fn with_rebalance(mut self, seed: u64) -> Options {
        let mut rng = Rng::new(seed ^ 0x00ba_6ba6_0000);
        self.workload.rebalance = atoll_core::Rebalance {
            every_ms: [0, 100, 500, 2_000][rng.index(4)],
            max_moves: [1, 4, 64][rng.index(3)],
        };
        self.workload.placement = rng.chance(0.5);
        self
    }

    /// Strong operations on owned variables, every 20 to 200 ms, drawn
    /// from a stream of their own (the draws above stay as they were).
    fn with_strong(mut self, seed: u64) -> Options {
        let mut rng = Rng::new(seed ^ 0x0057_0e6d_0f0f);
        self.workload.strong_every_ms = rng.range(20, 200);
        self.workload.strong_locality_pct = [0, 50, 70, 90][rng.index(4)];
        self.workload.migration = atoll_core::Migration {
            min_ops: [0, 4, 8, 32][rng.index(4)],
            share_pct: [60, 75, 90][rng.index(3)],
            window_ms: [1_000, 5_000, 10_000][rng.index(3)],
            cooldown_ms: [0, 1_000, 30_000][rng.index(3)],
        };
        self
    }

    /// A quiet cluster: no faults, durable, the default workload.
    pub fn calm(nodes: usize) -> Options {
        Options {
            nodes,
            topology: Topology::Full,
            safety_ms: 10_000,
            liveness_ms: 120_000,
            workload: Workload::default_mix(),
            faults: Faults::none(),
            durability: Durability::Durable,
            retransmit_ms: 200,
            max_batch_bytes: 64 << 10,
            max_batch_entries: 4096,
            max_in_flight: 8,
            log_retain: 10_000,
            checkpoint_every: 256,
            max_clock_skew_ms: 300_000,
            sample_every_ms: 0,
            coalesce_bytes: 64 << 10,
            ship_whole_bytes: 4 << 10,
            gossip_interval_ms: 0,
            state_for_new_peers_after: atoll_core::ReplicaConfig::default()
                .state_for_new_peers_after,
            state_part_bytes: atoll_core::ReplicaConfig::default().state_part_bytes,
            max_delta_len: atoll_core::KeyspaceConfig::default().max_delta_len,
            mixed_configs: false,
            changes_retain: 1 << 40,
            cache_bytes: None,
        }
    }
}
