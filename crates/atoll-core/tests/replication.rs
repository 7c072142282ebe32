//! The anti-entropy protocol between in-process replicas: virtual time, per-link
//! latency, deterministic loss and partitions. No I/O, no threads, no clock.
//!
//! Over 1 600 lines: one staged scenario per test, each a story of its own
//! (acks, retransmission, state transfer in chunks and in parts, limits,
//! incarnations, clocks). Due to be split by subject when next extended.

use atoll_core::protocol::{Message, VarDelta};
use atoll_core::testkit::{id, inc, Net};
use atoll_core::{
    Event, Keyspace, KeyspaceConfig, Now, Op, ProtocolError, Replica, ReplicaConfig, TransferReason,
};
use atoll_crdt::variable::{Bytes, Kind, State};
use atoll_crdt::ReplicaId;
use atoll_store::MemoryBackend;

fn every_type_ops(net: &mut Net, i: usize) {
    net.incr(i, "hits", 10 + i as i64);
    let v = || Bytes::from(vec![i as u8]);
    net.write(i, "motd", Op::RegisterSet { value: v() });
    net.write(i, "ver", Op::MvRegisterSet { value: v() });
    net.add(i, "tags", v());
    net.write(i, "jobs", Op::BagInsert { values: vec![v()] });
    let cart = Op::MapChange {
        key: format!("k{}", i % 2),
        incr: None,
        set: None,
        add: Some(v()),
    };
    net.write(i, "cart", cart);
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
        net.add(0, &format!("s{}", i % 7), vec![i as u8]);
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
        .handle_message(
            0,
            id(0),
            &Message::Ack {
                from: 0,
                seq: 1_000,
            }
            .encode(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("beyond our log end"), "{e}");
    let e = n
        .handle_message(0, ReplicaId(7), &Message::Ack { from: 0, seq: 0 }.encode())
        .unwrap_err();
    assert!(matches!(e, ProtocolError::UnknownPeer(ReplicaId(7))));
    let bad_delta = Message::Deltas {
        from: 0,
        to: 1,
        base: 0,
        vars: vec![atoll_core::protocol::VarDelta {
            name: "hits".into(),
            kind: Kind::Counter,
            delta: vec![1, 42],
        }],
        complete: false,
    };
    let e = n.handle_message(0, id(0), &bad_delta.encode()).unwrap_err();
    assert!(matches!(e, ProtocolError::Hostile { .. }), "{e}");
    assert_eq!(net.state(1, "hits"), before);
}

/// A delta larger than this node's `max_delta_len` (from a peer that did not
/// know it yet: its `Hello` was lost or late) is not merged and not
/// acknowledged: the node tells the sender its limits again, and the sender
/// sends the interval again within them.
#[test]
fn a_delta_over_max_delta_len_is_answered_with_the_limits() {
    let mut net = Net::new(
        2,
        KeyspaceConfig {
            max_delta_len: 300,
            ..KeyspaceConfig::default()
        },
    );
    net.full_mesh();
    net.run(1_000);
    while net.nodes[1].poll_transmit().is_some() {}
    let mut set = atoll_crdt::OrSet::new();
    for k in 0..40u32 {
        set.add(ReplicaId(77), Bytes::from(k.to_be_bytes()));
    }
    let delta = atoll_crdt::codec::encode(&State::Set(set));
    assert!(delta.len() > 300);
    let mut counter = atoll_crdt::PNCounter::default();
    let small = counter.add(ReplicaId(77), 5).unwrap();
    let big = Message::Deltas {
        from: 0,
        to: 1,
        base: 0,
        vars: vec![
            // A delta it accepts, before the one it does not: neither is merged.
            atoll_core::protocol::VarDelta {
                name: "hits".into(),
                kind: Kind::Counter,
                delta: atoll_crdt::codec::encode(&State::Counter(small)),
            },
            atoll_core::protocol::VarDelta {
                name: "members".into(),
                kind: Kind::Set,
                delta,
            },
        ],
        complete: false,
    };
    net.nodes[1]
        .handle_message(net.now, id(0), &big.encode())
        .unwrap();
    assert!(net.state(1, "members").is_none());
    assert!(net.state(1, "hits").is_none());
    let sent: Vec<Message> = std::iter::from_fn(|| net.nodes[1].poll_transmit())
        .map(|t| Message::decode(&t.payload, 1 << 20).unwrap())
        .collect();
    assert!(
        matches!(&sent[..], [Message::Hello { limits, .. }] if limits.max_delta_len == 300),
        "{sent:?}"
    );
}

/// Nodes may accept different sizes: each learns from its peers' `Hello`
/// what they accept, and sends them nothing larger. Node 1 takes deltas of
/// at most 2 000 bytes and messages of at most 64 KiB; node 0's coalesced
/// runs are larger, so they reach node 1 by state transfer, in parts small
/// enough for its messages, and node 1 refuses nothing (the harness would
/// panic). Node 0's own limits are the defaults.
#[test]
fn nodes_with_different_limits_send_each_other_what_they_accept() {
    let config = ReplicaConfig {
        state_for_new_peers_after: 0,
        retransmit_ms: 50,
        ..ReplicaConfig::default()
    };
    let mut net = Net::with_config(2, KeyspaceConfig::default(), config.clone());
    let small = KeyspaceConfig {
        max_delta_len: 2_000,
        ..KeyspaceConfig::default()
    };
    let ks = Keyspace::open(MemoryBackend::new(), small, id(1), ReplicaId(78), 0).unwrap();
    net.nodes[1] = Replica::new(
        ks,
        ReplicaConfig {
            max_message_len: 64 << 10,
            ..config
        },
    );
    assert_eq!(net.nodes[1].limits().max_delta_len, 2_000);
    fill_set(&mut net, 0, "members", 3_000);
    // Joined at the checkpoint into runs of up to 64 KiB (coalesce_bytes).
    net.nodes[0].keyspace().checkpoint().unwrap();
    let longest = net.nodes[0]
        .keyspace()
        .deltas_since(0, 10_000)
        .unwrap()
        .iter()
        .map(|(_, e)| e.delta.len())
        .max()
        .unwrap();
    assert!(longest > 2_000, "a run of {longest} bytes");
    net.full_mesh();
    net.run(60_000);
    net.assert_converged(&["members"]);
    // Node 0 did not send the runs as deltas: it brought node 1 past them by
    // state transfer.
    assert!(
        net.events.iter().any(|(i, e)| *i == 0
            && matches!(e, Event::StateTransferStarted { why: TransferReason::EntryTooLarge { len, .. }, .. } if *len > 2_000)),
        "{:?}",
        net.events.iter().filter(|(i, e)| *i == 0 && !matches!(e, Event::Applied(_))).collect::<Vec<_>>()
    );
    // And back: node 1's writes reach node 0 as deltas.
    net.incr(1, "hits", 5);
    net.run(10_000);
    net.assert_converged(&["members", "hits"]);
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
    ks.apply("hits", Op::CounterAdd { by: n }, 0).unwrap();
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

/// A peer's record of a restored node's log, taken from the original after
/// it joined a run of entries into the run's last, must not be read against
/// the backup's numbering, which still has the run's content in its first
/// entries. The simulator found it: four nodes, a peer cut off while the
/// original joined the run, the original restored from a backup taken before.
#[test]
fn a_peer_s_record_of_a_joined_log_is_not_trusted_past_a_backup_s_settled_point() {
    let config = KeyspaceConfig {
        checkpoint_every: 1_000,
        ..KeyspaceConfig::default()
    };
    let open = |disk: MemoryBackend, incarnation| {
        Keyspace::open(disk, config.clone(), ReplicaId(1), incarnation, 0).unwrap()
    };
    let disk = MemoryBackend::new();
    let mut ks = open(disk.clone(), ReplicaId(10));
    let mut peer = open(MemoryBackend::new(), ReplicaId(20));
    for n in 1..=3 {
        add(&mut ks, n);
    }
    ks.flush().unwrap();
    ks.checkpoint().unwrap();
    assert_eq!(ship(&mut ks, &mut peer, 0), 3);
    for n in 4..=10 {
        add(&mut ks, n);
    }
    // Durable, not joined yet: the backup has entries 4 to 10 as they were.
    ks.sync().unwrap();
    let backup = disk.snapshot();
    // The original joins entries 4 to 10 into entry 10. The peer is sent
    // entries 4 to 9 of that log, which are gone: it holds the log through 9
    // and has not one of those increments.
    ks.checkpoint().unwrap();
    let after_3: Vec<u64> = ks
        .deltas_since(3, 100)
        .unwrap()
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(after_3, [10], "the run was joined into its last entry");
    drop(ks);
    let mut restored = open(backup, ReplicaId(11));
    let from = restored.resume_point(ReplicaId(10), 9);
    assert!(from <= 3, "resumed at {from}");
    ship(&mut restored, &mut peer, from);
    let total = match peer.state("hits").unwrap() {
        Some(State::Counter(c)) => c.value(),
        other => panic!("{other:?}"),
    };
    assert_eq!(total, 55, "1 + 2 + ... + 10");
    // The restored node's own numbering is trusted as it is.
    assert_eq!(restored.resume_point(ReplicaId(11), 10), 10);
}

#[test]
fn a_peer_catching_up_is_sent_joined_runs() {
    let config = KeyspaceConfig {
        checkpoint_every: 256,
        ..KeyspaceConfig::default()
    };
    let mut net = Net::new(2, config);
    net.full_mesh();
    net.cut(0, 1);
    let mut hits = 0;
    for i in 0..3000u32 {
        net.add(0, "members", i.to_be_bytes().to_vec());
        if i % 7 == 0 {
            net.incr(0, "hits", 1);
            hits += 1;
        }
    }
    let ops = 3000 + hits as usize;
    // At each checkpoint, each variable's run became one entry; the log still
    // holds everything from the start.
    let storage = net.nodes[0].keyspace().storage();
    let log = storage.log_after(0, usize::MAX).unwrap();
    assert!(
        log.len() * 10 < ops,
        "{} entries for {ops} operations",
        log.len()
    );
    assert_eq!(storage.first_seq().unwrap(), Some(1));
    assert_eq!(log.last().map(|(seq, _)| *seq), Some(ops as u64));
    net.heal(0, 1);
    net.run(10_000);
    net.assert_converged(&["members", "hits"]);
    assert_eq!(net.counter(1, "hits"), hits);
    let State::Set(members) = net.state(1, "members").unwrap() else {
        unreachable!()
    };
    assert_eq!(members.len(), 3000);
}

/// A peer that holds nothing of a long log is sent each variable's state
/// once, not the log; below the threshold (or with it off), the log.
#[test]
fn a_new_peer_of_a_long_log_is_sent_the_state() {
    let run = |state_for_new_peers_after, max_message_len| {
        let config = ReplicaConfig {
            state_for_new_peers_after,
            max_message_len,
            max_batch_bytes: 500,
            ..ReplicaConfig::default()
        };
        let mut net = Net::with_config(2, KeyspaceConfig::default(), config);
        // Node 0 writes before node 1 ever connects.
        for i in 0..300u32 {
            net.add(0, "members", i.to_be_bytes().to_vec());
        }
        net.incr(0, "hits", 7);
        net.full_mesh();
        net.run(10_000);
        net.assert_converged(&["members", "hits"]);
        assert_eq!(net.counter(1, "hits"), 7);
        let transfers: u64 = net.nodes[0]
            .peers()
            .iter()
            .map(|p| p.stats.state_transfers)
            .sum();
        let count = |kind| net.delivered.get(&(0, 1, kind)).copied().unwrap_or(0);
        (transfers, count("state"), count("state-part"))
    };
    let big = 1 << 20;
    let (transfers, states, parts) = run(100, big);
    assert_eq!(transfers, 1, "a log of 301 entries, threshold 100");
    assert!(states > 0);
    assert_eq!(parts, 0, "a 3 KB state is one part");
    assert_eq!(
        run(1_000, big),
        (0, 0, 0),
        "a log shorter than the threshold"
    );
    assert_eq!(run(0, big), (0, 0, 0), "turned off");
    // The set's state (about 3 KB) does not fit in a message of 2 KB: it
    // goes in parts, each within the limit.
    let (transfers, _, parts) = run(100, 2_000);
    assert_eq!(transfers, 1);
    assert!(parts > 1, "{parts} parts");
}

/// A state transfer of many variables (more than one page of names, in many
/// chunks) brings every one of them.
#[test]
fn a_state_transfer_of_many_variables_brings_them_all() {
    let config = ReplicaConfig {
        state_for_new_peers_after: 1,
        max_batch_bytes: 1_000,
        ..ReplicaConfig::default()
    };
    let mut net = Net::with_config(2, KeyspaceConfig::default(), config);
    let names: Vec<String> = (0..700).map(|i| format!("c{i:04}")).collect();
    for (i, name) in names.iter().enumerate() {
        net.incr(0, name, i as i64 + 1);
    }
    net.full_mesh();
    net.run(20_000);
    for (i, name) in names.iter().enumerate() {
        assert_eq!(net.counter(1, name), i as i128 + 1, "{name}");
    }
    let chunks = net.delivered.get(&(0, 1, "state")).copied().unwrap_or(0);
    assert!(chunks > 3, "{chunks} state chunks");
    let transfers: u64 = net.nodes[0]
        .peers()
        .iter()
        .map(|p| p.stats.state_transfers)
        .sum();
    assert_eq!(transfers, 1);
}

#[test]
fn the_gossip_interval_sends_writes_together() {
    // 100 writes, one per millisecond (the link's latency is 5 ms).
    let run = |gossip_interval_ms| {
        let config = ReplicaConfig {
            retransmit_ms: 500,
            gossip_interval_ms,
            ..ReplicaConfig::default()
        };
        let mut net = Net::with_config(2, KeyspaceConfig::default(), config);
        net.full_mesh();
        net.run(1_000);
        let before = net.delivered.get(&(0, 1, "deltas")).copied().unwrap_or(0);
        for _ in 0..100 {
            net.incr(0, "hits", 1);
            net.run(1);
        }
        net.run(5_000);
        assert_eq!(
            net.counter(1, "hits"),
            100,
            "gossip interval {gossip_interval_ms}"
        );
        net.delivered[&(0, 1, "deltas")] - before
    };
    let eager = run(0);
    let batched = run(40);
    // Nearly one interval per write (a few join while the window is full).
    assert!(eager >= 50, "without a gossip interval: {eager} intervals");
    // One at the first write, then at most one per 40 ms of the ~100 ms.
    assert!(
        (2..=5).contains(&batched),
        "with 40 ms: {batched} intervals"
    );
}

/// Restarts replica `i` from its storage as a new incarnation (and, if
/// `wipe`, from empty storage instead), and reconnects it to replica 0.
fn restart(net: &mut Net, i: usize, incarnation: u64, wipe: bool) {
    net.cut(0, i);
    let backend = if wipe {
        MemoryBackend::new()
    } else {
        net.nodes[i].keyspace().storage().backend().clone()
    };
    let ks = Keyspace::open(
        backend,
        KeyspaceConfig::default(),
        id(i),
        ReplicaId(incarnation),
        net.now,
    )
    .unwrap();
    net.nodes[i] = Replica::new(ks, ReplicaConfig::default());
    net.nodes[i].add_peer(id(0));
    net.down.remove(&(0, i));
    net.down.remove(&(i, 0));
    let (inc0, inc_i) = (
        net.nodes[0].keyspace().incarnation(),
        net.nodes[i].keyspace().incarnation(),
    );
    net.nodes[0].set_connected(id(i), Some(inc_i), net.now);
    net.nodes[i].set_connected(id(0), Some(inc0), net.now);
}

#[test]
fn a_restarted_peer_resumes_where_it_was() {
    let mut net = Net::new(3, KeyspaceConfig::default());
    net.link(&[(0, 1), (0, 2)]);
    for i in 0..400u32 {
        net.add(0, "members", i.to_be_bytes().to_vec());
    }
    net.run(5_000);
    // Replica 1 restarts from its storage; replica 2 loses its storage.
    let sent_to =
        |net: &Net, i: usize, kind| net.delivered.get(&(0, i, kind)).copied().unwrap_or(0);
    let bytes = |net: &mut Net| {
        let before = net.bytes_delivered;
        net.run(5_000);
        net.bytes_delivered - before
    };
    let before = (sent_to(&net, 1, "deltas"), sent_to(&net, 1, "deltas-empty"));
    restart(&mut net, 1, 0xbeef, false);
    let resumed = bytes(&mut net);
    let intervals_after_restart = sent_to(&net, 1, "deltas") - before.0;
    let empty_after_restart = sent_to(&net, 1, "deltas-empty") - before.1;
    restart(&mut net, 2, 0xcafe, true);
    let full = bytes(&mut net);
    // The restarted one was sent no deltas, only told that it holds
    // everything (an empty, complete interval); the wiped one was sent all
    // 400 elements.
    assert_eq!(intervals_after_restart, 0);
    assert_eq!(empty_after_restart, 1);
    assert!(
        resumed * 20 < full,
        "resumed {resumed} bytes, full resync {full}"
    );
    net.add(0, "members", Bytes::from(vec![1]));
    net.run(5_000);
    net.assert_converged(&["members"]);
    let State::Set(members) = net.state(1, "members").unwrap() else {
        unreachable!()
    };
    assert_eq!(members.len(), 401);
}

#[test]
fn an_interval_lost_before_a_restart_is_sent_again() {
    let add = |net: &mut Net, member: u8| {
        net.add(0, "members", Bytes::from(vec![member]));
    };
    let mut net = Net::new(2, KeyspaceConfig::default());
    net.full_mesh();
    net.run(1_000);
    // The interval adding 1 is lost on the wire; the one adding 2 arrives.
    add(&mut net, 1);
    net.pump();
    net.queue
        .retain(|_, (from, to, _)| !(*from == 0 && *to == 1));
    add(&mut net, 2);
    net.run(10);
    let members = |net: &mut Net| match net.state(1, "members") {
        Some(State::Set(s)) => s.len(),
        _ => 0,
    };
    // The one after the gap waits for it: nothing is merged out of order.
    assert_eq!(members(&mut net), 0);
    // Replica 1 restarts before the lost interval is sent again: it must not
    // claim to hold what came after the gap.
    restart(&mut net, 1, 0xbeef, false);
    net.run(5_000);
    assert_eq!(members(&mut net), 2);
    net.assert_converged(&["members"]);
}

#[test]
fn runs_written_before_a_restart_are_joined_after_it() {
    let config = KeyspaceConfig {
        checkpoint_every: 100,
        ..KeyspaceConfig::default()
    };
    let mut net = Net::new(1, config.clone());
    for i in 0..250u32 {
        net.add(0, "members", i.to_be_bytes().to_vec());
    }
    let entries = |ks: &Keyspace<MemoryBackend>| ks.storage().log_after(0, usize::MAX).unwrap();
    // The checkpoints at 100 and 200 joined their runs; the 50 since are one each.
    let before = entries(net.nodes[0].keyspace()).len();
    assert_eq!(before, 2 + 50);
    let backend = net.nodes[0].keyspace().storage().backend().clone();
    let mut ks = Keyspace::open(backend, config, id(0), ReplicaId(0xbeef), net.now).unwrap();
    let after = entries(&ks);
    assert!(after.len() <= 3, "{} entries after reopening", after.len());
    assert_eq!(after.last().map(|(seq, _)| *seq), Some(250));
    assert_eq!(ks.storage().first_seq().unwrap(), Some(1));
    let Some(State::Set(members)) = ks.state("members").unwrap().cloned() else {
        unreachable!()
    };
    assert_eq!(members.len(), 250);
}

#[test]
fn a_run_is_not_joined_past_an_entry_of_its_variable_from_another_origin() {
    let mut net = Net::new(1, KeyspaceConfig::default());
    // Node 0's log: 1-3 its increments, 4 a decrement from elsewhere
    // (which followed them there), 5-6 its increments again.
    for _ in 0..3 {
        net.incr(0, "c", 1);
    }
    let mut counter = atoll_crdt::PNCounter::new();
    let delta = counter.add(id(1), -2).unwrap();
    let now = net.now;
    net.nodes[0]
        .keyspace()
        .merge(
            inc(1),
            "c",
            Kind::Counter,
            &atoll_crdt::codec::encode(&State::Counter(delta)),
            now,
        )
        .unwrap();
    for _ in 0..2 {
        net.incr(0, "c", 1);
    }
    net.nodes[0].keyspace().checkpoint().unwrap();
    let log = net.nodes[0]
        .keyspace()
        .storage()
        .log_after(0, usize::MAX)
        .unwrap();
    let at: Vec<(u64, ReplicaId)> = log.iter().map(|(seq, e)| (*seq, e.origin)).collect();
    // The first run ends before the decrement: a peer merging the log in
    // order never holds the decrement without the increments before it.
    assert_eq!(at, [(3, inc(0)), (4, inc(1)), (6, inc(0))]);
}

/// State parts node 0 sent node 1 that arrived.
fn parts_delivered(net: &Net) -> u64 {
    net.delivered
        .get(&(0, 1, "state-part"))
        .copied()
        .unwrap_or(0)
}

/// A set of sixty members, and its state cut into parts of about 100 bytes.
fn sixty_members_in_parts() -> (State, Vec<Vec<u8>>) {
    let mut source = atoll_crdt::OrSet::new();
    for k in 0..60u32 {
        source.add(ReplicaId(77), Bytes::from(k.to_be_bytes()));
    }
    let state = State::Set(source);
    let parts = parts_of(&state, 100);
    assert!(parts.len() >= 4, "{} parts", parts.len());
    (state, parts)
}

/// Part `index` of a set's `parts`, as node 0 sends it.
fn part_message(
    parts: &[Vec<u8>],
    as_of: u64,
    name: &str,
    version: u64,
    index: u32,
    last: bool,
) -> Vec<u8> {
    Message::StatePart {
        as_of,
        after: String::new(),
        name: name.into(),
        kind: Kind::Set,
        version,
        index,
        part: parts[index as usize].clone(),
        end: index as usize + 1 == parts.len(),
        last,
    }
    .encode()
}

/// The parts node 1 acknowledged since the last call, by index.
fn part_acks(net: &mut Net) -> Vec<u32> {
    std::iter::from_fn(|| net.nodes[1].poll_transmit())
        .filter_map(|t| match Message::decode(&t.payload, 1 << 20).unwrap() {
            Message::StatePartAck { index, .. } => Some(index),
            _ => None,
        })
        .collect()
}

/// `state` cut into parts of about `max` bytes, as a sender cuts it.
fn parts_of(state: &State, max: usize) -> Vec<Vec<u8>> {
    let mut parts = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let part = state.encode_part(after.as_deref(), max).unwrap();
        parts.push(part.bytes);
        match part.next {
            Some(next) => after = Some(next),
            None => return parts,
        }
    }
}

/// Adds `n` members to set `name` at node `i`, and removes every fifth.
fn fill_set(net: &mut Net, i: usize, name: &str, n: u32) {
    for k in 0..n {
        net.add(i, name, Bytes::from(k.to_be_bytes()));
    }
    for k in (0..n).step_by(5) {
        net.write(
            i,
            name,
            Op::SetChange {
                add: Vec::new(),
                remove: vec![Bytes::from(k.to_be_bytes())],
            },
        );
    }
}

/// Joining runs of log entries at a checkpoint moves a run's content into
/// its last entry. A peer that received that entry but lost an earlier one
/// of the run must still get the earlier one's content: the log is joined
/// only up to what every connected peer acknowledged in turn. (The
/// simulator found this with two nodes: node 0's go-back-N skipped node 1's
/// own entries, took node 1's early ack of the moved-into entry for all, and
/// node 1 never got the first add.)
#[test]
fn a_run_is_not_joined_into_an_entry_a_peer_got_before_the_run_s_start() {
    let config = ReplicaConfig {
        max_batch_entries: 1,
        retransmit_ms: 100,
        state_for_new_peers_after: 0,
        ..ReplicaConfig::default()
    };
    let mut net = Net::with_config(2, KeyspaceConfig::default(), config);
    let add = |net: &mut Net, k: u32| net.add(0, "s", Bytes::from(k.to_be_bytes()));
    // Node 0's log: 1 = its add of 1, 2 = node 1's counter, 3 = its add of 2.
    add(&mut net, 1);
    let mut counter = atoll_crdt::PNCounter::new();
    let delta = counter.add(id(1), 5).unwrap();
    let now = net.now;
    net.nodes[0]
        .keyspace()
        .merge(
            inc(1),
            "c",
            Kind::Counter,
            &atoll_crdt::codec::encode(&State::Counter(delta)),
            now,
        )
        .unwrap();
    add(&mut net, 2);
    net.full_mesh();
    // The interval carrying entry 1 is lost; the one carrying entry 3 arrives.
    let mut lost = false;
    for _ in 0..1_000 {
        net.run(1);
        let first = net.queue.iter().find_map(|(key, (from, to, bytes))| {
            match Message::decode(bytes, 1 << 20).unwrap() {
                Message::Deltas { from: 0, vars, .. }
                    if (*from, *to) == (0, 1) && !vars.is_empty() =>
                {
                    Some(*key)
                }
                _ => None,
            }
        });
        if let Some(key) = first {
            net.queue.remove(&key);
            lost = true;
            break;
        }
    }
    assert!(lost, "entry 1 was sent");
    net.run(50);
    // A checkpoint now would join entries 1 and 3 (one variable, one origin).
    net.nodes[0].keyspace().checkpoint().unwrap();
    net.run(60_000);
    // (The counter stands for node 1's own write: node 0 never sends it back.)
    net.assert_converged(&["s"]);
    let State::Set(members) = net.state(1, "s").unwrap() else {
        unreachable!()
    };
    assert!(members.contains(&Bytes::from(1u32.to_be_bytes())));
}

/// State chunks are pipelined as intervals are: up to `max_in_flight` go
/// before the first is acknowledged, so a keyspace of many small variables
/// reaches a new peer in fewer round trips. The same chunks arrive.
#[test]
fn state_chunks_go_several_at_a_time() {
    let run = |max_in_flight| {
        let config = ReplicaConfig {
            state_for_new_peers_after: 1,
            max_batch_bytes: 60,
            state_part_bytes: 300,
            max_in_flight,
            retransmit_ms: 1_000,
            ..ReplicaConfig::default()
        };
        let mut net = Net::with_config(2, KeyspaceConfig::default(), config);
        for v in 0..60 {
            net.incr(0, &format!("c{v:02}"), v + 1);
        }
        // And one in parts in the middle, after chunks still in flight.
        fill_set(&mut net, 0, "c30-members", 100);
        // All sent as stored: the set is read once, by the chunk that stops
        // before it, and cut from that read.
        net.nodes[0].keyspace().checkpoint().unwrap();
        net.full_mesh();
        let start = net.now;
        net.run(60_000);
        let names: Vec<String> = (0..60).map(|v| format!("c{v:02}")).collect();
        let mut all: Vec<&str> = names.iter().map(String::as_str).collect();
        all.push("c30-members");
        net.assert_converged(&all);
        let status = &net.nodes[0].peers()[0];
        assert_eq!(status.transfer, None, "over");
        assert_eq!(status.stats.retransmits, 0, "nothing was lost");
        // The receiver recorded that it holds the sender's log.
        let holds = net.nodes[1].keyspace().peer_holds(id(0)).unwrap();
        assert!(holds.is_some_and(|(_, seq)| seq > 0), "{holds:?}");
        let chunks = net.delivered.get(&(0, 1, "state")).copied().unwrap_or(0);
        (chunks, net.now - start)
    };
    let (chunks, stop_and_wait) = run(1);
    assert!(chunks > 10, "{chunks} chunks");
    let (chunks8, eight) = run(8);
    assert_eq!(chunks8, chunks, "the same chunks");
    assert!(
        eight * 3 < stop_and_wait,
        "{eight} ms with 8 in flight, {stop_and_wait} ms with one"
    );
}

/// A chunk lost in a pipelined transfer while those after it are
/// acknowledged: the sender's cursor stops before it, and the timeout sends
/// it, and everything after it, again.
#[test]
fn a_lost_chunk_is_sent_again_though_later_ones_were_acknowledged() {
    let config = ReplicaConfig {
        state_for_new_peers_after: 1,
        max_batch_bytes: 60,
        max_in_flight: 8,
        retransmit_ms: 200,
        ..ReplicaConfig::default()
    };
    let mut net = Net::with_config(2, KeyspaceConfig::default(), config);
    let names: Vec<String> = (0..30).map(|v| format!("c{v:02}")).collect();
    for (v, name) in names.iter().enumerate() {
        net.incr(0, name, v as i64 + 1);
    }
    net.full_mesh();
    // Step until node 0 has queued its second chunk, and lose it.
    let mut lost = None;
    for _ in 0..1_000 {
        net.run(1);
        let second = net.queue.iter().find_map(|(key, (from, to, bytes))| {
            match Message::decode(bytes, 1 << 20).unwrap() {
                Message::State { after, vars, .. }
                    if (*from, *to) == (0, 1) && !after.is_empty() =>
                {
                    Some((*key, vars[0].name.clone()))
                }
                _ => None,
            }
        });
        if let Some((key, name)) = second {
            net.queue.remove(&key);
            lost = Some(name);
            break;
        }
    }
    let lost = lost.expect("a second chunk was sent");
    net.run(60_000);
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    net.assert_converged(&all);
    assert_eq!(net.counter(1, &lost), net.counter(0, &lost));
    let status = &net.nodes[0].peers()[0];
    assert_eq!(status.transfer, None, "over");
    assert!(status.stats.retransmits >= 1, "sent again");
}

/// A chunk lost in a pipelined transfer: those after it arrive first. The
/// receiver merges them (a join is always safe), but records that it holds
/// the sender's log only once every chunk from the first through the last
/// arrived in turn, as the sender's go-back-N sends them again.
#[test]
fn a_lost_chunk_leaves_no_false_record_of_what_is_held() {
    let mut net = Net::new(2, KeyspaceConfig::default());
    net.full_mesh();
    net.run(1_000);
    let chunk = |after: &str, name: &str, n: i64, last: bool| {
        let mut counter = atoll_crdt::PNCounter::new();
        counter.add(ReplicaId(5), n).unwrap();
        Message::State {
            as_of: 7,
            after: after.into(),
            vars: vec![VarDelta {
                name: name.into(),
                kind: Kind::Counter,
                delta: atoll_crdt::codec::encode(&State::Counter(counter)),
            }],
            last,
        }
        .encode()
    };
    let holds = |net: &mut Net| {
        net.nodes[1]
            .keyspace()
            .peer_holds(id(0))
            .unwrap()
            .map(|h| h.1)
    };
    let before = holds(&mut net);
    let deliver = |net: &mut Net, m: &[u8]| net.nodes[1].handle_message(net.now, id(0), m).unwrap();
    deliver(&mut net, &chunk("", "a", 1, false));
    // The chunk after "a" is lost; the last arrives.
    deliver(&mut net, &chunk("b", "c", 3, true));
    assert_eq!(net.counter(1, "c"), 3, "merged");
    assert_eq!(holds(&mut net), before, "not recorded: a chunk is missing");
    // Sent again in turn: the lost one, then the last.
    deliver(&mut net, &chunk("a", "b", 2, false));
    deliver(&mut net, &chunk("b", "c", 3, true));
    assert_eq!(holds(&mut net), Some(7));
}

/// A state larger than the peer's `max_state_len` (from its `Hello`) is
/// not sent: the peer would refuse it and drop the connection, again at
/// every reconnect. The transfer stops there, once, says why, and goes on
/// when the peer comes back with a larger limit. Both ways of sending a
/// state are checked: cut from its stored encoding (unchanged since the
/// checkpoint) and encoded from memory a part at a time.
#[test]
fn a_state_larger_than_the_peer_accepts_is_held_back() {
    for stored in [true, false] {
        let config = ReplicaConfig {
            state_for_new_peers_after: 1,
            state_part_bytes: 300,
            retransmit_ms: 50,
            ..ReplicaConfig::default()
        };
        let mut net = Net::with_config(2, KeyspaceConfig::default(), config.clone());
        let ks = Keyspace::open(
            MemoryBackend::new(),
            KeyspaceConfig::default(),
            id(1),
            ReplicaId(78),
            0,
        )
        .unwrap();
        net.nodes[1] = Replica::new(
            ks,
            ReplicaConfig {
                max_state_len: 2_000,
                ..config
            },
        );
        net.incr(0, "a-hits", 1);
        fill_set(&mut net, 0, "members", 400);
        net.incr(0, "z-hits", 2);
        if stored {
            net.nodes[0].keyspace().checkpoint().unwrap();
        }
        net.full_mesh();
        // Node 1 would refuse the set as hostile (the testkit panics on
        // that), and the network would not go quiet.
        net.run(60_000);
        let blocked: Vec<_> = net
            .events
            .iter()
            .filter_map(|(i, e)| match e {
                Event::StateTransferBlocked { peer, blocked } if *i == 0 && *peer == id(1) => {
                    Some(blocked.clone())
                }
                _ => None,
            })
            .collect();
        assert_eq!(blocked.len(), 1, "held back once: {blocked:?}");
        let b = &blocked[0];
        assert_eq!((b.name.as_str(), b.limit), ("members", 2_000));
        assert!(b.bytes > 2_000, "{b:?}");
        if !stored {
            // Found a part at a time: no further than the part that crossed.
            assert!(b.bytes <= 2_000 + 300 + 64, "{b:?}");
        }
        let status = net.nodes[0]
            .peers()
            .into_iter()
            .find(|p| p.id == id(1))
            .unwrap();
        let transfer = status.transfer.expect("still under way");
        assert_eq!(transfer.blocked.as_ref(), Some(b));
        assert_eq!(transfer.done_through, "a-hits");
        assert!(b.to_string().contains("max_state_len"), "{b}");
        // What comes before it arrived; it and what follows did not.
        assert_eq!(net.counter(1, "a-hits"), 1);
        assert!(net.state(1, "members").is_none());
        assert!(net.state(1, "z-hits").is_none());
        // Node 1 restarts with the default limit: the transfer goes on.
        restart(&mut net, 1, 79, false);
        net.run(60_000);
        net.assert_converged(&["a-hits", "members", "z-hits"]);
        let status = net.nodes[0]
            .peers()
            .into_iter()
            .find(|p| p.id == id(1))
            .unwrap();
        assert!(status.transfer.is_none(), "{status:?}");
    }
}

/// A state larger than `state_part_bytes` goes in parts, up to
/// `max_in_flight` of them unacknowledged: the same parts arrive, sooner.
#[test]
fn a_large_state_goes_in_parts_several_at_a_time() {
    let run = |max_in_flight| {
        let config = ReplicaConfig {
            state_for_new_peers_after: 1,
            state_part_bytes: 300,
            max_in_flight,
            retransmit_ms: 1_000,
            ..ReplicaConfig::default()
        };
        let mut net = Net::with_config(2, KeyspaceConfig::default(), config);
        fill_set(&mut net, 0, "members", 400);
        net.incr(0, "hits", 3);
        net.full_mesh();
        let start = net.now;
        net.run(60_000);
        net.assert_converged(&["members", "hits"]);
        let parts = parts_delivered(&net);
        let retransmits: u64 = net.nodes[0]
            .peers()
            .iter()
            .map(|p| p.stats.retransmits)
            .sum();
        assert_eq!(retransmits, 0, "nothing was lost");
        (parts, net.now - start)
    };
    let (parts, stop_and_wait) = run(1);
    // 320 members of about 16 bytes each, in parts of 300 bytes.
    assert!(parts > 10, "{parts} parts");
    let (parts4, four) = run(4);
    assert_eq!(parts4, parts, "the same parts");
    assert!(
        four * 2 < stop_and_wait,
        "four in flight took {four} ms, one at a time {stop_and_wait} ms"
    );
}

/// A state transfer sends a variable unchanged since the last checkpoint as
/// it is stored, cut into the parts its tree would give, without loading it.
#[test]
fn a_state_unchanged_since_the_checkpoint_is_sent_as_stored() {
    let config = ReplicaConfig {
        state_for_new_peers_after: 1,
        state_part_bytes: 300,
        ..ReplicaConfig::default()
    };
    let mut net = Net::with_config(2, KeyspaceConfig::default(), config.clone());
    fill_set(&mut net, 0, "members", 400);
    net.incr(0, "hits", 3);
    let members = net.state(0, "members").unwrap();
    let ks = net.nodes[0].keyspace();
    ks.checkpoint().unwrap();
    ks.flush().unwrap();
    // Reopened: nothing is loaded.
    let backend = ks.storage().backend().clone();
    let ks = Keyspace::open(
        backend,
        KeyspaceConfig::default(),
        id(0),
        ReplicaId(77),
        net.now,
    )
    .unwrap();
    net.nodes[0] = Replica::new(ks, config);
    assert_eq!(net.nodes[0].keyspace().loaded(), 0);
    net.full_mesh();
    net.run(60_000);
    assert_eq!(
        net.nodes[0].keyspace().loaded(),
        0,
        "sent without loading either variable"
    );
    assert_eq!(
        parts_delivered(&net) as usize,
        parts_of(&members, 300).len()
    );
    assert_eq!(net.state(1, "members").unwrap(), members);
    net.assert_converged(&["members", "hits"]);
    // Changed since: it is encoded from its tree, and arrives changed.
    net.add(0, "members", Bytes::from(vec![9; 3]));
    net.run(10_000);
    net.assert_converged(&["members", "hits"]);
}

/// A state that changes while its parts are on the way is sent again, from
/// one state: parts of two states are never joined.
#[test]
fn a_state_changed_while_in_parts_arrives_whole() {
    let config = ReplicaConfig {
        state_for_new_peers_after: 1,
        state_part_bytes: 200,
        max_in_flight: 2,
        ..ReplicaConfig::default()
    };
    let mut net = Net::with_config(2, KeyspaceConfig::default(), config);
    fill_set(&mut net, 0, "members", 300);
    net.full_mesh();
    // Until some parts arrived, and not all.
    while parts_delivered(&net) < 3 {
        net.run(1);
    }
    let status = net.nodes[0].peers()[0].clone();
    let transfer = status.transfer.expect("under way");
    let (name, sent, acked) = transfer.in_parts.expect("in parts");
    assert_eq!(name, "members");
    assert!(
        sent >= 3 && acked <= sent && sent - acked <= 2,
        "{sent} sent, {acked} acked"
    );
    assert_eq!(transfer.done_through, "");
    assert!(status.stats.state_parts_sent >= 3);
    assert!(net.nodes[1].peers()[0].stats.state_parts_received >= 3);
    assert!(net.state(1, "members").is_none(), "merged only once whole");
    // Node 0 changes the set: one member goes, two come, one of them (5,
    // removed before) among the members already sent. Joined with the
    // parts sent before, the new state's context would claim 5's new add
    // without its member, and the add would be lost.
    net.write(
        0,
        "members",
        Op::SetChange {
            add: Vec::new(),
            remove: vec![Bytes::from(7u32.to_be_bytes())],
        },
    );
    for k in [5u32, 1001] {
        net.add(0, "members", Bytes::from(k.to_be_bytes()));
    }
    net.run(60_000);
    net.assert_converged(&["members"]);
    assert_eq!(net.nodes[0].peers()[0].transfer, None, "over");
    let State::Set(members) = net.state(1, "members").unwrap() else {
        unreachable!()
    };
    assert_eq!(members.len(), 240 - 1 + 2);
    assert!(!members.contains(&Bytes::from(7u32.to_be_bytes())));
    assert!(members.contains(&Bytes::from(5u32.to_be_bytes())));
    assert!(members.contains(&Bytes::from(1001u32.to_be_bytes())));
    // The transfer started the set over: more parts than one state has.
    let one_state = parts_of(&net.state(0, "members").unwrap(), 200).len() as u64;
    let sent = parts_delivered(&net);
    assert!(
        sent > one_state,
        "{sent} parts sent, {one_state} in one state"
    );
}

/// Parts may arrive in any order and twice; the state is merged once all
/// arrived, and the end part is acknowledged only then. Parts past the
/// receiver's `max_state_len` in all disconnect the sender.
#[test]
fn state_parts_in_any_order_are_merged_once_all_arrived() {
    let (state, parts) = sixty_members_in_parts();
    let n = parts.len() as u32;
    let message = |version, index| part_message(&parts, 0, "members", version, index, true);
    let acks = part_acks;
    let mut net = Net::new(2, KeyspaceConfig::default());
    net.full_mesh();
    acks(&mut net);
    // The end part first: kept, not acknowledged.
    net.nodes[1]
        .handle_message(0, id(0), &message(5, n - 1))
        .unwrap();
    assert_eq!(acks(&mut net), Vec::<u32>::new());
    // The others backwards, one of them twice; a part of an earlier state
    // (version 4) is dropped without an ack.
    for i in (1..n - 1).rev() {
        net.nodes[1]
            .handle_message(0, id(0), &message(5, i))
            .unwrap();
        assert_eq!(acks(&mut net), vec![i]);
    }
    net.nodes[1]
        .handle_message(0, id(0), &message(4, 2))
        .unwrap();
    assert_eq!(acks(&mut net), Vec::<u32>::new());
    net.nodes[1]
        .handle_message(0, id(0), &message(5, 2))
        .unwrap();
    assert_eq!(acks(&mut net), vec![2]);
    assert!(
        net.state(1, "members").is_none(),
        "not merged before all arrived"
    );
    net.nodes[1]
        .handle_message(0, id(0), &message(5, 0))
        .unwrap();
    assert_eq!(acks(&mut net), vec![0, n - 1], "the end part once merged");
    assert_eq!(net.state(1, "members"), Some(state));

    // A receiver that accepts states of at most 300 bytes.
    let mut net = Net::with_config(
        2,
        KeyspaceConfig::default(),
        ReplicaConfig {
            max_state_len: 300,
            ..ReplicaConfig::default()
        },
    );
    net.full_mesh();
    let mut refused = None;
    for i in 0..n {
        if let Err(e) = net.nodes[1].handle_message(0, id(0), &message(5, i)) {
            refused = Some((i, e));
            break;
        }
    }
    let (at, e) = refused.expect("refused past 300 bytes");
    assert!(at >= 2 && at < n - 1, "refused at part {at}");
    assert!(matches!(e, ProtocolError::Hostile { .. }), "{e}");
    assert!(e.to_string().contains("max_state_len"), "{e}");
    assert!(net.state(1, "members").is_none());
}

/// The log entries of one variable in an interval are joined into one
/// delta: the interval stops before their sum passes what the peer accepts
/// as a delta, so a peer catching up on a long log is never sent a joined
/// delta it must refuse.
#[test]
fn joined_deltas_stay_within_what_the_peer_accepts() {
    let ks = KeyspaceConfig {
        max_delta_len: 2_000,
        coalesce_bytes: 0,
        ..KeyspaceConfig::default()
    };
    let config = ReplicaConfig {
        // The log, not the state, and every entry joined (none shipped whole).
        state_for_new_peers_after: 0,
        ship_whole_bytes: 1 << 20,
        max_batch_bytes: 256 << 10,
        retransmit_ms: 50,
        ..ReplicaConfig::default()
    };
    let mut net = Net::with_config(2, ks, config);
    fill_set(&mut net, 0, "members", 400);
    net.full_mesh();
    net.run(60_000);
    net.assert_converged(&["members"]);
    let intervals = net.delivered[&(0, 1, "deltas")];
    assert!(intervals >= 3, "in several intervals: {intervals}");
}

/// A state larger than the largest delta a peer accepts (`max_delta_len`)
/// still reaches a new peer, in parts; that peer logs it as one entry, too
/// large to send as a delta, and brings its own peers past that entry by
/// state transfer. (Sent as a delta, it would be refused, and the line
/// A–B–C would never converge.)
#[test]
fn a_state_larger_than_a_delta_is_forwarded_by_state_transfer() {
    let ks = KeyspaceConfig {
        max_delta_len: 2_000,
        ..KeyspaceConfig::default()
    };
    let config = ReplicaConfig {
        state_for_new_peers_after: 1,
        state_part_bytes: 500,
        max_batch_bytes: 500,
        retransmit_ms: 50,
        ..ReplicaConfig::default()
    };
    let mut net = Net::with_config(3, ks, config);
    fill_set(&mut net, 0, "members", 400);
    // B and C, empty and up to date with each other; then A joins B.
    net.link(&[(1, 2)]);
    net.run(1_000);
    net.link(&[(0, 1)]);
    net.run(60_000);
    net.assert_converged(&["members"]);
    let logged: Vec<usize> = net.nodes[1]
        .keyspace()
        .deltas_since(0, 100)
        .unwrap()
        .into_iter()
        .filter(|(_, e)| e.name == "members")
        .map(|(_, e)| e.delta.len())
        .collect();
    assert!(
        logged.iter().any(|&len| len > 2_000),
        "B logged the state as one entry larger than a delta: {logged:?}"
    );
    let b_to_c = net.nodes[1]
        .peers()
        .into_iter()
        .find(|p| p.id == id(2))
        .expect("C is B's peer");
    assert_eq!(b_to_c.stats.state_transfers, 1, "C was sent the state");
    let why: Vec<&TransferReason> = net
        .events
        .iter()
        .filter_map(|(i, e)| match e {
            Event::StateTransferStarted { peer, why, .. } if *i == 1 && *peer == id(2) => Some(why),
            _ => None,
        })
        .collect();
    assert!(
        matches!(why[..], [TransferReason::EntryTooLarge { name, len }] if name == "members" && *len > 2_000),
        "{why:?}"
    );
    let c_from_b = net.nodes[2]
        .peers()
        .into_iter()
        .find(|p| p.id == id(1))
        .expect("B is C's peer");
    assert!(c_from_b.stats.state_parts_received > 1, "in parts");
}

/// Two ways the receiver of a state in parts lost parts it had acknowledged,
/// so that the end part was never acknowledged and the sender started the
/// variable over forever (the simulator found both, seeds 6100 and 5831):
/// a part of an earlier transfer, delayed on the way, replaced the parts
/// kept; and once merged, the parts the sender sent again after starting
/// over were kept as a new state that never completed.
#[test]
fn a_receiver_of_parts_keeps_them_from_stale_parts_and_acks_a_merged_state_s_again() {
    let (state, parts) = sixty_members_in_parts();
    let n = parts.len() as u32;
    let message = |as_of, name, index| part_message(&parts, as_of, name, 5, index, false);
    let acks = part_acks;
    let mut net = Net::new(2, KeyspaceConfig::default());
    net.full_mesh();
    acks(&mut net);
    // Part 0 is lost; the others arrive.
    for i in 1..n - 1 {
        net.nodes[1]
            .handle_message(0, id(0), &message(40, "members", i))
            .unwrap();
    }
    assert_eq!(acks(&mut net), (1..n - 1).collect::<Vec<_>>());
    // A part of an earlier transfer (as of 30), of another variable: dropped.
    net.nodes[1]
        .handle_message(0, id(0), &message(30, "archive", 0))
        .unwrap();
    assert_eq!(acks(&mut net), Vec::<u32>::new());
    // The end part: kept, not acknowledged (part 0 is missing).
    net.nodes[1]
        .handle_message(0, id(0), &message(40, "members", n - 1))
        .unwrap();
    assert_eq!(acks(&mut net), Vec::<u32>::new());
    // The sender heard nothing for a while and starts over: part 0 completes
    // the state.
    net.nodes[1]
        .handle_message(0, id(0), &message(40, "members", 0))
        .unwrap();
    assert_eq!(acks(&mut net), vec![0, n - 1], "merged from the parts kept");
    assert_eq!(net.state(1, "members"), Some(state));
    // It sent only part 0 since it started over, so it counts only the ack
    // of that; it goes on with the others. Each is acknowledged at once,
    // the end part too.
    for i in 1..n {
        net.nodes[1]
            .handle_message(0, id(0), &message(40, "members", i))
            .unwrap();
        assert_eq!(acks(&mut net), vec![i]);
    }
}

/// A round trip longer than `retransmit_ms`: a variable in parts is started
/// over when no ack came since the last timeout, and without backing off it
/// was started over before the first ack could come back, forever.
#[test]
fn a_state_in_parts_arrives_over_a_round_trip_longer_than_the_retransmit_timeout() {
    let config = ReplicaConfig {
        state_for_new_peers_after: 1,
        state_part_bytes: 200,
        max_in_flight: 1,
        // Each way takes 5 ms (`testkit::LATENCY`).
        retransmit_ms: 3,
        ..ReplicaConfig::default()
    };
    // The log is truncated: the peer is sent the state.
    let ks_config = KeyspaceConfig {
        log_retain: 10,
        checkpoint_every: 16,
        ..KeyspaceConfig::default()
    };
    let mut net = Net::with_config(2, ks_config, config);
    fill_set(&mut net, 0, "members", 300);
    net.full_mesh();
    net.run(60_000);
    net.assert_converged(&["members"]);
    assert!(parts_delivered(&net) > 5, "in parts: {:?}", net.delivered);
}

/// A stale `StateAck` (a duplicate of the one before a variable went in
/// parts) does not cancel the wait for the parts in flight: lost parts are
/// still sent again.
#[test]
fn a_stale_state_ack_does_not_stall_a_state_in_parts() {
    let config = ReplicaConfig {
        state_for_new_peers_after: 1,
        state_part_bytes: 200,
        max_in_flight: 2,
        retransmit_ms: 50,
        ..ReplicaConfig::default()
    };
    let mut net = Net::with_config(2, KeyspaceConfig::default(), config);
    fill_set(&mut net, 0, "members", 300);
    net.full_mesh();
    while parts_delivered(&net) < 1 {
        net.run(1);
    }
    let as_of = net.nodes[0].peers()[0]
        .transfer
        .clone()
        .expect("under way")
        .as_of;
    // Everything sent from now on is lost, until the window is full.
    net.drop_every = Some(1);
    net.run(20);
    let (_, sent, acked) = net.nodes[0].peers()[0]
        .transfer
        .clone()
        .and_then(|t| t.in_parts)
        .expect("in parts");
    assert_eq!(sent - acked, 2, "the window is full of lost parts");
    net.drop_every = None;
    let stale = Message::StateAck {
        as_of,
        through: String::new(),
        last: false,
    };
    net.nodes[0]
        .handle_message(net.now, id(1), &stale.encode())
        .unwrap();
    net.run(60_000);
    net.assert_converged(&["members"]);
}

/// A replica's timers run on the monotonic clock and its keyspace on the
/// wall clock: a write is stamped with the wall time, and a wall clock set
/// back an hour delays no retransmission, since the monotonic one went on.
#[test]
fn timers_run_on_the_monotonic_clock_and_writes_on_the_wall_clock() {
    const WALL: u64 = 1_700_000_000_000;
    let open = |i: usize| {
        let ks = Keyspace::open(
            MemoryBackend::new(),
            KeyspaceConfig::default(),
            id(i),
            inc(i),
            WALL,
        )
        .unwrap();
        Replica::new(ks, ReplicaConfig::default())
    };
    let mut a = open(0);
    let retransmit = a.config().retransmit_ms;
    a.add_peer(id(1));
    let at = |mono: u64, wall: u64| Now { mono, wall };
    a.set_connected(id(1), Some(inc(1)), at(5, WALL));
    let drain = |a: &mut Replica<MemoryBackend>| -> Vec<Message> {
        std::iter::from_fn(|| a.poll_transmit())
            .map(|t| Message::decode(&t.payload, 1 << 20).unwrap())
            .collect()
    };
    drain(&mut a);
    // The peer says it holds nothing of a's log.
    let hello = Message::Hello {
        holds: None,
        limits: a.limits(),
    };
    a.handle_message(at(6, WALL), id(1), &hello.encode())
        .unwrap();
    drain(&mut a);
    let value = Bytes::from(vec![7]);
    let out = a
        .write(at(10, WALL + 10), "motd", Op::RegisterSet { value })
        .unwrap();
    assert_eq!(out.ts.physical_ms, WALL + 10, "stamped with the wall time");
    let deltas = |msgs: &[Message]| {
        msgs.iter()
            .filter(|m| matches!(m, Message::Deltas { vars, .. } if !vars.is_empty()))
            .count()
    };
    assert_eq!(deltas(&drain(&mut a)), 1, "the write is shipped");
    // The wall clock goes back an hour; the monotonic one moves on past
    // the retransmit timeout. The unacknowledged interval goes again.
    let deadline = a.poll_timeout().expect("a retransmit timer");
    assert!(
        deadline <= 10 + retransmit,
        "on the monotonic clock: {deadline}"
    );
    a.handle_timeout(at(10 + retransmit, WALL - 3_600_000));
    assert_eq!(
        deltas(&drain(&mut a)),
        1,
        "sent again, though the wall clock went back"
    );
    // The keyspace's clock never goes back: a write now still orders after.
    let value = Bytes::from(vec![8]);
    let later = a
        .write(
            at(20 + retransmit, WALL - 3_600_000),
            "motd",
            Op::RegisterSet { value },
        )
        .unwrap();
    assert!(later.ts > out.ts, "{:?} after {:?}", later.ts, out.ts);
}

/// What a replica records holding of a peer's log advances only over
/// contiguous intervals: an interval that arrives after a lost one does not
/// advance it. Were it to, a peer restarted before it sent the lost one
/// again would trust the record, resume after it, and never send it.
#[test]
fn an_interval_after_a_lost_one_does_not_advance_what_is_held() {
    let mut net = Net::new(2, KeyspaceConfig::default());
    net.full_mesh();
    net.run(100);
    // The first write's interval is lost on the way; the second's arrives.
    net.add(0, "s", vec![1]);
    net.pump();
    let before = net.queue.len();
    net.queue.retain(|_, (from, to, bytes)| {
        let lost = *from == 0
            && *to == 1
            && matches!(
                Message::decode(bytes, 1 << 30),
                Ok(Message::Deltas { ref vars, .. }) if !vars.is_empty()
            );
        !lost
    });
    assert_eq!(net.queue.len() + 1, before, "one interval lost");
    net.add(0, "s", vec![2]);
    net.run(20);
    let holds = net.nodes[1].keyspace().peer_holds(id(0)).unwrap();
    assert_eq!(
        holds.map(|(_, seq)| seq),
        Some(0),
        "node 1 holds nothing of node 0's log contiguously: {holds:?}"
    );
    // Node 0 restarts from its storage before it sends the first again; it
    // resumes node 1 from what node 1 says it holds.
    net.cut(0, 1);
    let backend = net.nodes[0].keyspace().storage().backend().clone();
    let ks = Keyspace::open(
        backend,
        KeyspaceConfig::default(),
        id(0),
        ReplicaId(900),
        net.now,
    )
    .unwrap();
    net.nodes[0] = Replica::new(ks, ReplicaConfig::default());
    net.nodes[0].add_peer(id(1));
    net.down.clear();
    let (inc0, inc1) = (
        net.nodes[0].keyspace().incarnation(),
        net.nodes[1].keyspace().incarnation(),
    );
    net.nodes[0].set_connected(id(1), Some(inc1), net.now);
    net.nodes[1].set_connected(id(0), Some(inc0), net.now);
    net.run(10_000);
    net.assert_converged(&["s"]);
}
