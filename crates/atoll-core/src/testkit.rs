//! A deterministic in-process network of [`Replica`]s on in-memory storage, for
//! tests, benchmarks and the simulator: virtual time, per-message latency,
//! deterministic loss and partitions. No I/O, no threads, no clock.

use crate::protocol::Message;
use crate::{Answer, CheckReport, Event, Keyspace, KeyspaceConfig, Op, Replica, ReplicaConfig};
use atoll_crdt::variable::{Bytes, State};
use atoll_crdt::ReplicaId;
use atoll_store::MemoryBackend;
use std::collections::{BTreeMap, BTreeSet};

/// Delivery latency of every message (ms).
pub const LATENCY: u64 = 5;

/// Replicas on a simulated network: virtual time, fixed latency, deterministic
/// loss and partitions, all on one thread. Deterministic: the same calls give
/// the same run.
pub struct Net {
    /// The replicas; replica `i` has node id [`id`]`(i)`.
    pub nodes: Vec<Replica<MemoryBackend>>,
    /// Virtual time (ms).
    pub now: u64,
    /// (deliver at, order) -> (from, to, bytes)
    pub queue: BTreeMap<(u64, u64), (usize, usize, Vec<u8>)>,
    /// Tie-breaker for messages due at the same time.
    pub order: u64,
    /// Directed links that are cut.
    pub down: BTreeSet<(usize, usize)>,
    /// Messages of one kind ([`kind_name`]) dropped from one replica to
    /// another: (from, to, kind).
    pub blocked: BTreeSet<(usize, usize, &'static str)>,
    /// Drop every n-th message put on the wire.
    pub drop_every: Option<u64>,
    /// Messages put on the wire.
    pub sent: u64,
    /// Payload bytes delivered.
    pub bytes_delivered: u64,
    /// Messages delivered, by (from, to, message type).
    pub delivered: BTreeMap<(usize, usize, &'static str), u64>,
    /// Events the replicas reported, with the replica index.
    pub events: Vec<(usize, Event)>,
}

/// The node id of replica `i`.
pub fn id(i: usize) -> ReplicaId {
    ReplicaId(100 + i as u64)
}

/// The incarnation of replica `i`.
pub fn inc(i: usize) -> ReplicaId {
    ReplicaId(1000 + i as u64)
}

/// A message's type, for counting.
pub fn kind_name(m: &Message) -> &'static str {
    match m {
        // An empty complete interval: "you have everything I hold".
        Message::Deltas { vars, .. } if vars.is_empty() => "deltas-empty",
        Message::Deltas { .. } => "deltas",
        Message::Ack { .. } => "ack",
        Message::State { .. } => "state",
        Message::StateAck { .. } => "state-ack",
        Message::StatePart { .. } => "state-part",
        Message::StatePartAck { .. } => "state-part-ack",
        Message::Hello { .. } => "hello",
        Message::Request { .. } => "request",
        Message::Reply { .. } => "reply",
        Message::Offer { .. } => "offer",
        Message::Accept { .. } => "accept",
        Message::DigestAsk { .. } => "digest-ask",
        Message::Digests(_) => "digests",
        Message::Repair { .. } => "repair",
    }
}

impl Net {
    /// `n` replicas with empty in-memory storage and no links.
    pub fn new(n: usize, ks_config: KeyspaceConfig) -> Net {
        let config = ReplicaConfig {
            retransmit_ms: 50,
            ..ReplicaConfig::default()
        };
        Net::with_config(n, ks_config, config)
    }

    /// [`Net::new`] with the given protocol configuration.
    pub fn with_config(n: usize, ks_config: KeyspaceConfig, config: ReplicaConfig) -> Net {
        let nodes = (0..n)
            .map(|i| {
                // In-memory storage cannot fail to open.
                let ks = Keyspace::open(MemoryBackend::new(), ks_config.clone(), id(i), inc(i), 0)
                    .expect("in-memory keyspace");
                Replica::new(ks, config.clone())
            })
            .collect();
        Net {
            nodes,
            now: 0,
            queue: BTreeMap::new(),
            order: 0,
            down: BTreeSet::new(),
            blocked: BTreeSet::new(),
            drop_every: None,
            sent: 0,
            bytes_delivered: 0,
            delivered: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    /// Makes `pairs` peers of each other and connects them.
    pub fn link(&mut self, pairs: &[(usize, usize)]) {
        for &(a, b) in pairs {
            self.nodes[a].add_peer(id(b));
            self.nodes[b].add_peer(id(a));
            self.connect(a, b);
        }
    }

    /// Tells `a` and `b` they are connected, each running as the
    /// incarnation the other's keyspace opened as.
    fn connect(&mut self, a: usize, b: usize) {
        let (inc_a, inc_b) = (
            self.nodes[a].keyspace_ref().incarnation(),
            self.nodes[b].keyspace_ref().incarnation(),
        );
        self.nodes[a].set_connected(id(b), Some(inc_b), self.now);
        self.nodes[b].set_connected(id(a), Some(inc_a), self.now);
    }

    /// Links every pair.
    pub fn full_mesh(&mut self) {
        let n = self.nodes.len();
        let pairs: Vec<_> = (0..n)
            .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
            .collect();
        self.link(&pairs);
    }

    /// Cuts the link between `a` and `b` both ways.
    pub fn cut(&mut self, a: usize, b: usize) {
        self.down.insert((a, b));
        self.down.insert((b, a));
        self.nodes[a].set_connected(id(b), None, self.now);
        self.nodes[b].set_connected(id(a), None, self.now);
    }

    /// Restores the link between `a` and `b`.
    pub fn heal(&mut self, a: usize, b: usize) {
        self.down.remove(&(a, b));
        self.down.remove(&(b, a));
        self.connect(a, b);
    }

    /// Moves every replica's transmits onto the wire and collects events.
    pub fn pump(&mut self) {
        for i in 0..self.nodes.len() {
            let out = self.nodes[i].drain();
            for t in out.transmits {
                let to = (t.to.0 - 100) as usize;
                self.sent += 1;
                if self.down.contains(&(i, to))
                    || self.drop_every.is_some_and(|k| self.sent % k == 0)
                {
                    continue;
                }
                self.order += 1;
                self.queue
                    .insert((self.now + LATENCY, self.order), (i, to, t.payload));
            }
            self.events.extend(out.events.into_iter().map(|e| (i, e)));
        }
    }

    /// Runs until nothing is in flight and no timer is pending, or `max_ms` pass.
    pub fn run(&mut self, max_ms: u64) {
        let end = self.now + max_ms;
        for _ in 0..1_000_000 {
            self.pump();
            let next_msg = self.queue.keys().next().map(|k| k.0);
            let next_timer = self.nodes.iter().filter_map(|n| n.poll_timeout()).min();
            let Some(next) = next_msg.into_iter().chain(next_timer).min() else {
                return;
            };
            if next > end {
                self.now = end;
                return;
            }
            self.now = self.now.max(next);
            if next_msg == Some(next) {
                let (key, (from, to, bytes)) = self.queue.pop_first().unwrap();
                debug_assert_eq!(key.0, next);
                let m = Message::decode(&bytes, 1 << 30).unwrap();
                *self.delivered.entry((from, to, kind_name(&m))).or_default() += 1;
                self.bytes_delivered += bytes.len() as u64;
                if !self.down.contains(&(from, to))
                    && !self.blocked.contains(&(from, to, kind_name(&m)))
                {
                    self.nodes[to]
                        .handle_message(self.now, id(from), &bytes)
                        .unwrap();
                }
            } else {
                for n in &mut self.nodes {
                    n.handle_timeout(self.now);
                }
            }
        }
        panic!("the network did not go quiet");
    }

    /// A copy of what replica `i` flushed, as a backup of its disk would
    /// hold.
    pub fn backup(&self, i: usize) -> MemoryBackend {
        self.nodes[i].keyspace_ref().storage().backend().snapshot()
    }

    /// Replica `i` opened again on `disk` (a backup, say) as a new
    /// incarnation `incarnation`, with the same peers, every link to them
    /// connected again (messages in flight to or from it are lost).
    pub fn reopen(&mut self, i: usize, disk: MemoryBackend, incarnation: ReplicaId) {
        let ks_config = self.nodes[i].keyspace_ref().config().clone();
        let config = self.nodes[i].config().clone();
        let peers: Vec<usize> = self.nodes[i]
            .peers()
            .iter()
            .map(|p| (p.id.0 - 100) as usize)
            .collect();
        let ks =
            Keyspace::open(disk, ks_config, id(i), incarnation, 0).expect("in-memory keyspace");
        let mut replica = Replica::new(ks, config);
        replica.expect_peers(peers.len());
        self.queue.retain(|_, (from, to, _)| *from != i && *to != i);
        self.nodes[i] = replica;
        let now = self.now;
        for j in peers {
            self.nodes[i].add_peer(id(j));
            self.nodes[j].set_connected(id(i), None, now);
            self.connect(i, j);
        }
    }

    /// A local write at replica `i` ([`Replica::write`]), then sends it.
    pub fn write(&mut self, i: usize, name: &str, op: Op) -> Answer {
        let now = self.now;
        self.nodes[i].write(now, name, op).unwrap().answer
    }

    /// A request at replica `i` ([`Replica::request`]): its answer, at
    /// once if it ran there, or once it came back (the network runs for
    /// at most `max_ms` meanwhile).
    pub fn request(
        &mut self,
        i: usize,
        name: &str,
        body: crate::protocol::Body,
        max_ms: u64,
    ) -> crate::Result<Answer> {
        let now = self.now;
        let id = match self.nodes[i].request(now, name, body)? {
            crate::Requested::Done { answer, .. } => return Ok(answer),
            crate::Requested::Sent(id) => id,
        };
        let end = self.now + max_ms;
        let seen = self.events.len();
        while self.now < end {
            let step = (self.now + 1).min(end);
            self.run(step - self.now);
            self.now = self.now.max(step);
            for (at, e) in &self.events[seen..] {
                if let Event::Answered {
                    id: got, result, ..
                } = e
                {
                    if *at == i && *got == id {
                        return result.clone().map_err(crate::Error::from);
                    }
                }
            }
        }
        panic!("request {id} at node {i} got no answer in {max_ms} ms");
    }

    /// Adds `n` to counter `name` at replica `i`.
    pub fn incr(&mut self, i: usize, name: &str, n: i64) {
        self.write(i, name, Op::CounterAdd { by: n });
    }

    /// Adds `member` to set `name` at replica `i`.
    pub fn add(&mut self, i: usize, name: &str, member: impl Into<Bytes>) {
        let op = Op::SetChange {
            add: vec![member.into()],
            remove: Vec::new(),
        };
        self.write(i, name, op);
    }

    /// The state of `name` at replica `i`.
    pub fn state(&mut self, i: usize, name: &str) -> Option<State> {
        self.nodes[i].keyspace().state(name).unwrap().cloned()
    }

    /// Panics unless every replica holds the same state for each of `names`.
    pub fn assert_converged(&mut self, names: &[&str]) {
        for name in names {
            let first = self.state(0, name);
            assert!(first.is_some(), "{name} missing at node 0");
            for i in 1..self.nodes.len() {
                assert_eq!(self.state(i, name), first, "{name} differs at node {i}");
            }
        }
    }

    /// The value of counter `name` at replica `i`.
    pub fn counter(&mut self, i: usize, name: &str) -> i128 {
        match self.state(i, name) {
            Some(State::Counter(c)) => c.value(),
            None => 0,
            other => panic!("{other:?}"),
        }
    }

    /// A consistency check from replica `at`, run to its end: its report.
    pub fn check(&mut self, at: usize) -> CheckReport {
        let seen = self.events.len();
        let check = self.nodes[at].check(self.now).expect("a check starts");
        for _ in 0..200 {
            self.run(50);
            for (i, e) in &self.events[seen..] {
                if let (true, Event::Checked(r)) = (*i == at, e) {
                    if r.id == check {
                        return (**r).clone();
                    }
                }
            }
        }
        panic!("check {check} at {at} never ended");
    }
}
