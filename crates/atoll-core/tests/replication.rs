//! The anti-entropy protocol between in-process replicas: virtual time, per-link
//! latency, deterministic loss and partitions. No I/O, no threads, no clock.

use atoll_core::protocol::Message;
use atoll_core::{Error, Event, Keyspace, KeyspaceConfig, ProtocolError, Replica, ReplicaConfig};
use atoll_crdt::variable::{Kind, MapValue, State};
use atoll_crdt::{set_add, CrdtError, ReplicaId, Timestamp};
use atoll_store::MemoryBackend;
use std::collections::{BTreeMap, BTreeSet};

const LATENCY: u64 = 5;

struct Net {
    nodes: Vec<Replica<MemoryBackend>>,
    now: u64,
    /// (deliver at, order) -> (from, to, bytes)
    queue: BTreeMap<(u64, u64), (usize, usize, Vec<u8>)>,
    order: u64,
    down: BTreeSet<(usize, usize)>,
    /// Drop every n-th message put on the wire.
    drop_every: Option<u64>,
    sent: u64,
    /// Messages delivered, by (from, to, message type).
    delivered: BTreeMap<(usize, usize, &'static str), u64>,
    events: Vec<(usize, Event)>,
}

fn id(i: usize) -> ReplicaId {
    ReplicaId(100 + i as u64)
}

fn inc(i: usize) -> ReplicaId {
    ReplicaId(1000 + i as u64)
}

fn kind_name(m: &Message) -> &'static str {
    match m {
        Message::Deltas { .. } => "deltas",
        Message::Ack { .. } => "ack",
        Message::State { .. } => "state",
        Message::StateAck { .. } => "state-ack",
    }
}

impl Net {
    fn new(n: usize, ks_config: KeyspaceConfig) -> Net {
        let nodes = (0..n)
            .map(|i| {
                let ks = Keyspace::open(MemoryBackend::new(), ks_config.clone(), id(i), inc(i), 0)
                    .unwrap();
                Replica::new(
                    ks,
                    ReplicaConfig {
                        retransmit_ms: 50,
                        ..ReplicaConfig::default()
                    },
                )
            })
            .collect();
        Net {
            nodes,
            now: 0,
            queue: BTreeMap::new(),
            order: 0,
            down: BTreeSet::new(),
            drop_every: None,
            sent: 0,
            delivered: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    /// Makes `pairs` peers of each other and connects them.
    fn link(&mut self, pairs: &[(usize, usize)]) {
        for &(a, b) in pairs {
            self.nodes[a].add_peer(id(b));
            self.nodes[b].add_peer(id(a));
            self.nodes[a].set_connected(id(b), Some(inc(b)), self.now);
            self.nodes[b].set_connected(id(a), Some(inc(a)), self.now);
        }
    }

    fn full_mesh(&mut self) {
        let n = self.nodes.len();
        let pairs: Vec<_> = (0..n)
            .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
            .collect();
        self.link(&pairs);
    }

    fn cut(&mut self, a: usize, b: usize) {
        self.down.insert((a, b));
        self.down.insert((b, a));
        self.nodes[a].set_connected(id(b), None, self.now);
        self.nodes[b].set_connected(id(a), None, self.now);
    }

    fn heal(&mut self, a: usize, b: usize) {
        self.down.remove(&(a, b));
        self.down.remove(&(b, a));
        self.nodes[a].set_connected(id(b), Some(inc(b)), self.now);
        self.nodes[b].set_connected(id(a), Some(inc(a)), self.now);
    }

    fn pump(&mut self) {
        for i in 0..self.nodes.len() {
            while let Some(t) = self.nodes[i].poll_transmit() {
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
            while let Some(e) = self.nodes[i].poll_event() {
                self.events.push((i, e));
            }
        }
    }

    /// Runs until nothing is in flight and no timer is pending, or `max_ms` pass.
    fn run(&mut self, max_ms: u64) {
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
                if !self.down.contains(&(from, to)) {
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

    fn write(
        &mut self,
        i: usize,
        name: &str,
        kind: Kind,
        op: impl FnOnce(&mut State, ReplicaId, Timestamp) -> Result<State, CrdtError>,
    ) {
        let now = self.now;
        let ks = self.nodes[i].keyspace();
        ks.update(name, kind, now, |s, ctx| {
            let d = op(s, ctx.replica, ctx.ts).map_err(|source| Error::Crdt {
                name: name.into(),
                source,
            })?;
            Ok((Some(d), ()))
        })
        .unwrap();
        self.nodes[i].handle_local_writes(now);
    }

    fn incr(&mut self, i: usize, name: &str, n: i64) {
        self.write(i, name, Kind::Counter, |s, r, _| match s {
            State::Counter(c) => c.add(r, n).map(State::Counter),
            _ => unreachable!(),
        });
    }

    fn state(&mut self, i: usize, name: &str) -> Option<State> {
        self.nodes[i].keyspace().state(name).unwrap().cloned()
    }

    fn assert_converged(&mut self, names: &[&str]) {
        for name in names {
            let first = self.state(0, name);
            assert!(first.is_some(), "{name} missing at node 0");
            for i in 1..self.nodes.len() {
                assert_eq!(self.state(i, name), first, "{name} differs at node {i}");
            }
        }
    }

    fn counter(&mut self, i: usize, name: &str) -> i128 {
        match self.state(i, name) {
            Some(State::Counter(c)) => c.value(),
            None => 0,
            other => panic!("{other:?}"),
        }
    }
}

fn every_type_ops(net: &mut Net, i: usize) {
    net.incr(i, "hits", 10 + i as i64);
    net.write(i, "motd", Kind::Register, |s, r, ts| match s {
        State::Register(x) => Ok(State::Register(x.set(ts, r, vec![i as u8]))),
        _ => unreachable!(),
    });
    net.write(i, "ver", Kind::MvRegister, |s, r, _| match s {
        State::MvRegister(x) => Ok(State::MvRegister(x.write(r, vec![i as u8]))),
        _ => unreachable!(),
    });
    net.write(i, "tags", Kind::Set, |s, r, _| match s {
        State::Set(x) => Ok(State::Set(x.add(r, vec![i as u8]))),
        _ => unreachable!(),
    });
    net.write(i, "jobs", Kind::Bag, |s, r, _| match s {
        State::Bag(x) => Ok(State::Bag(x.insert(r, vec![i as u8]).1)),
        _ => unreachable!(),
    });
    net.write(i, "cart", Kind::Map, |s, r, _| match s {
        State::Map(m) => m
            .update(format!("k{}", i % 2), |v, c| {
                Ok(MapValue::with_set(set_add(&v.set, c, r, vec![i as u8])))
            })
            .map(State::Map),
        _ => unreachable!(),
    });
}

const ALL: [&str; 6] = ["hits", "motd", "ver", "tags", "jobs", "cart"];

#[test]
fn three_replicas_converge_on_every_type() {
    let mut net = Net::new(3, KeyspaceConfig::default());
    net.full_mesh();
    for i in 0..3 {
        every_type_ops(&mut net, i);
    }
    net.run(10_000);
    net.assert_converged(&ALL);
    assert_eq!(net.counter(2, "hits"), 10 + 11 + 12);
}

#[test]
fn a_line_converges_without_an_end_to_end_link() {
    let mut net = Net::new(3, KeyspaceConfig::default());
    net.link(&[(0, 1), (1, 2)]);
    every_type_ops(&mut net, 0);
    every_type_ops(&mut net, 2);
    net.run(10_000);
    net.assert_converged(&ALL);
    assert!(!net
        .delivered
        .keys()
        .any(|(f, t, _)| (*f, *t) == (0, 2) || (*f, *t) == (2, 0)));
}

#[test]
fn a_partition_heals_and_both_sides_writes_survive() {
    let mut net = Net::new(3, KeyspaceConfig::default());
    net.full_mesh();
    net.incr(0, "hits", 1);
    net.run(1_000);
    net.cut(0, 2);
    net.cut(1, 2);
    for _ in 0..20 {
        net.incr(0, "hits", 1);
        net.incr(2, "hits", 100);
    }
    net.run(1_000);
    assert_eq!(net.counter(1, "hits"), 21);
    assert_eq!(net.counter(2, "hits"), 2001);
    net.heal(0, 2);
    net.heal(1, 2);
    net.run(10_000);
    net.assert_converged(&["hits"]);
    assert_eq!(net.counter(0, "hits"), 2021);
}

#[test]
fn a_lossy_network_converges_by_retransmission() {
    let mut net = Net::new(3, KeyspaceConfig::default());
    net.full_mesh();
    net.drop_every = Some(3);
    for round in 0..10 {
        for i in 0..3 {
            net.incr(i, "hits", 1);
            if round % 3 == 0 {
                every_type_ops(&mut net, i);
            }
        }
        net.run(20);
    }
    net.run(60_000);
    net.assert_converged(&ALL);
    let retransmits: u64 = net
        .nodes
        .iter()
        .flat_map(|n| n.peers())
        .map(|p| p.stats.retransmits)
        .sum();
    assert!(retransmits > 0, "lost messages must have been sent again");
}

#[test]
fn a_peer_behind_the_log_catches_up_by_state_transfer() {
    let config = KeyspaceConfig {
        checkpoint_every: 4,
        log_retain: 8,
        ..KeyspaceConfig::default()
    };
    let mut net = Net::new(3, config);
    net.full_mesh();
    every_type_ops(&mut net, 2);
    net.run(1_000);
    net.cut(0, 2);
    net.cut(1, 2);
    for i in 0..60 {
        net.incr(0, "hits", 1);
        net.write(0, &format!("s{}", i % 7), Kind::Set, |s, r, _| match s {
            State::Set(x) => Ok(State::Set(x.add(r, vec![i as u8]))),
            _ => unreachable!(),
        });
    }
    net.run(1_000);
    // Node 0's log no longer holds what node 2 needs.
    let first = net.nodes[0]
        .keyspace()
        .storage()
        .first_seq()
        .unwrap()
        .unwrap();
    let acked_by_2 = net.nodes[0]
        .peers()
        .iter()
        .find(|p| p.id == id(2))
        .unwrap()
        .acked;
    assert!(
        acked_by_2 + 1 < first,
        "acked {acked_by_2}, log starts at {first}"
    );
    net.heal(0, 2);
    net.heal(1, 2);
    net.run(10_000);
    assert!(net
        .events
        .iter()
        .any(|(_, e)| matches!(e, Event::StateTransferStarted { .. })));
    let names: Vec<String> = (0..7).map(|i| format!("s{i}")).collect();
    let mut all: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    all.extend(ALL);
    net.assert_converged(&all);
    assert_eq!(net.counter(2, "hits"), 60 + 12);
}

#[test]
fn nothing_is_sent_back_to_where_it_came_from() {
    let mut net = Net::new(2, KeyspaceConfig::default());
    net.full_mesh();
    for _ in 0..10 {
        net.incr(0, "hits", 1);
        net.run(100);
    }
    net.run(1_000);
    net.assert_converged(&["hits"]);
    assert!(net.delivered.get(&(0, 1, "deltas")).copied().unwrap_or(0) > 0);
    assert_eq!(
        net.delivered.get(&(1, 0, "deltas")),
        None,
        "node 1 sent node 0's deltas back"
    );
}

#[test]
fn unflushed_writes_stay_home_until_flushed() {
    let config = KeyspaceConfig {
        flush_each_write: false,
        ..KeyspaceConfig::default()
    };
    let mut net = Net::new(2, config);
    net.full_mesh();
    net.incr(0, "hits", 5);
    net.run(1_000);
    assert_eq!(
        net.counter(1, "hits"),
        0,
        "an unflushed write left the replica"
    );
    net.nodes[0].keyspace().flush().unwrap();
    net.nodes[0].handle_local_writes(net.now);
    net.run(1_000);
    assert_eq!(net.counter(1, "hits"), 5);
}

#[test]
fn hostile_messages_are_refused_without_changing_state() {
    let mut net = Net::new(2, KeyspaceConfig::default());
    net.full_mesh();
    net.incr(0, "hits", 1);
    net.run(1_000);
    let before = net.state(1, "hits");
    let n = &mut net.nodes[1];
    let e = n
        .handle_message(0, id(0), b"\x01\xff\xff garbage")
        .unwrap_err();
    assert!(matches!(e, ProtocolError::Hostile { .. }), "{e}");
    let e = n
        .handle_message(0, id(0), &Message::Ack { seq: 1_000 }.encode())
        .unwrap_err();
    assert!(e.to_string().contains("beyond our log end"), "{e}");
    let e = n
        .handle_message(0, ReplicaId(7), &Message::Ack { seq: 0 }.encode())
        .unwrap_err();
    assert!(matches!(e, ProtocolError::UnknownPeer(ReplicaId(7))));
    let bad_delta = Message::Deltas {
        from: 0,
        to: 1,
        vars: vec![atoll_core::protocol::VarDelta {
            name: "hits".into(),
            kind: Kind::Counter,
            delta: vec![1, 42],
        }],
    };
    let e = n.handle_message(0, id(0), &bad_delta.encode()).unwrap_err();
    assert!(matches!(e, ProtocolError::Hostile { .. }), "{e}");
    assert_eq!(net.state(1, "hits"), before);
}

/// Every log entry of `from` after `after`, merged into `to`; returns the last seq.
fn ship(from: &mut Keyspace<MemoryBackend>, to: &mut Keyspace<MemoryBackend>, after: u64) -> u64 {
    let mut last = after;
    for (seq, e) in from.deltas_since(after, 10_000).unwrap() {
        to.merge(from.replica_id(), &e.name, e.kind, &e.delta, 0)
            .unwrap();
        last = seq;
    }
    last
}

fn add(ks: &mut Keyspace<MemoryBackend>, n: i64) {
    ks.update("hits", Kind::Counter, 0, |s, ctx| match s {
        State::Counter(c) => Ok((Some(State::Counter(c.add(ctx.replica, n).unwrap())), ())),
        _ => unreachable!(),
    })
    .unwrap();
}

#[test]
fn a_keyspace_restored_from_a_backup_never_reissues_dots() {
    let disk = MemoryBackend::new();
    let mut peer = Keyspace::open(
        MemoryBackend::new(),
        KeyspaceConfig::default(),
        ReplicaId(2),
        ReplicaId(20),
        0,
    )
    .unwrap();
    let mut ks = Keyspace::open(
        disk.clone(),
        KeyspaceConfig::default(),
        ReplicaId(1),
        ReplicaId(10),
        0,
    )
    .unwrap();
    add(&mut ks, 5);
    ks.flush().unwrap();
    let backup = disk.snapshot();
    add(&mut ks, 3);
    ship(&mut ks, &mut peer, 0);
    drop(ks);
    // The backup comes back and keeps counting: a new opening, a new incarnation.
    let mut restored = Keyspace::open(
        backup,
        KeyspaceConfig::default(),
        ReplicaId(99),
        ReplicaId(11),
        0,
    )
    .unwrap();
    assert_eq!(
        restored.replica_id(),
        ReplicaId(1),
        "the node keeps its identity"
    );
    add(&mut restored, 4);
    ship(&mut restored, &mut peer, 0);
    let total = match peer.state("hits").unwrap() {
        Some(State::Counter(c)) => c.value(),
        other => panic!("{other:?}"),
    };
    assert_eq!(total, 5 + 3 + 4, "an acknowledged increment was lost");
}
