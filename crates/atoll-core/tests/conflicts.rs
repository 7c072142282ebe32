//! A name created with two types on two sides of a split: a conflict that
//! every replica resolves alike, not a poison message that stalls the link.

use atoll_core::testkit::{id, inc, Net};
use atoll_core::{conflict_name, Event, Keyspace, KeyspaceConfig, Op, Replica, ReplicaConfig};
use atoll_crdt::variable::{Bytes, Kind, State};
use atoll_crdt::{OrSet, PNCounter, ReplicaId};
use atoll_store::MemoryBackend;

fn set_add(net: &mut Net, i: usize, name: &str, member: &[u8]) {
    let member = Bytes::from(member.to_vec());
    net.add(i, name, member);
}

fn members(s: Option<State>) -> Vec<Vec<u8>> {
    match s {
        Some(State::Set(x)) => x.iter().map(|b| b.to_vec()).collect(),
        other => panic!("not a set: {other:?}"),
    }
}

#[test]
fn a_name_made_a_counter_and_a_set_apart_resolves_alike_and_the_link_keeps_flowing() {
    let mut net = Net::new(2, KeyspaceConfig::default());
    net.incr(0, "x", 5);
    set_add(&mut net, 1, "x", b"hello");
    // Written after the conflicting entry, on the side whose delta loses
    // the name there: it must arrive all the same.
    for _ in 0..21 {
        net.incr(1, "after", 1);
    }
    net.full_mesh();
    net.run(10_000);
    let copy = conflict_name("x", Kind::Set);
    assert_eq!(copy, "_atoll.conflict/set/x");
    net.assert_converged(&["x", "after", &copy]);
    // The counter (the lesser kind) keeps the name on both; the set's data
    // lives on in the copy.
    for i in 0..2 {
        assert_eq!(net.counter(i, "x"), 5);
        assert_eq!(members(net.state(i, &copy)), vec![b"hello".to_vec()]);
        assert_eq!(net.counter(i, "after"), 21);
        // Every interval was acknowledged: nothing is retransmitted forever.
        for p in net.nodes[i].peers() {
            assert_eq!(p.lag, 0, "node {i}: {p:?}");
            assert!(p.stuck.is_none(), "node {i}: {p:?}");
        }
    }
    // Each node reported the conflict once.
    for i in 0..2 {
        let found: Vec<_> = net
            .events
            .iter()
            .filter_map(|(n, e)| match e {
                Event::Conflict(c) if *n == i => Some(c.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(found.len(), 1, "node {i}: {found:?}");
        assert_eq!((found[0].kept, found[0].moved), (Kind::Counter, Kind::Set));
        assert_eq!(found[0].copy, copy);
    }
    // A later write of the losing type at the node that had it is refused,
    // as any write of the wrong type is.
    let ks = net.nodes[1].keyspace();
    let op = Op::SetChange {
        add: Vec::new(),
        remove: Vec::new(),
    };
    let wrong = ks.apply("x", op, 1);
    assert!(
        matches!(wrong, Err(atoll_core::Error::TypeMismatch { .. })),
        "{:?}",
        wrong.err()
    );
}

#[test]
fn later_writes_of_the_losing_type_from_a_peer_go_to_the_copy() {
    let mut net = Net::new(2, KeyspaceConfig::default());
    net.incr(0, "x", 1);
    set_add(&mut net, 1, "x", b"a");
    net.full_mesh();
    net.run(5_000);
    // Node 1 still has a set "x" nowhere now: a new set write to "x" there
    // is refused. Its peer's set deltas that were still in the log, and
    // the copy, converge.
    let copy = conflict_name("x", Kind::Set);
    net.assert_converged(&["x", &copy]);
    net.incr(1, "x", 2);
    net.run(5_000);
    net.assert_converged(&["x", &copy]);
    assert_eq!(net.counter(0, "x"), 3);
}

fn counter_delta(r: ReplicaId, by: i64) -> State {
    State::Counter(PNCounter::new().add(r, by).unwrap())
}

fn set_delta(r: ReplicaId, member: &[u8]) -> State {
    State::Set(OrSet::default().add(r, Bytes::from(member.to_vec())))
}

#[test]
fn a_variable_moved_to_its_copy_is_recovered_so_after_a_crash() {
    for checkpoint_every in [1, 4096] {
        let backend = MemoryBackend::new();
        let config = KeyspaceConfig {
            checkpoint_every,
            ..KeyspaceConfig::default()
        };
        let open = || Keyspace::open(backend.clone(), config.clone(), id(1), inc(1), 0).unwrap();
        let mut ks = open();
        // Ours: a set, written before and after a checkpoint.
        ks.merge_state(
            ReplicaId(7),
            "x",
            Kind::Set,
            set_delta(ReplicaId(7), b"a"),
            None,
            0,
        )
        .unwrap();
        ks.checkpoint().unwrap();
        ks.merge_state(
            ReplicaId(9),
            "x",
            Kind::Set,
            set_delta(ReplicaId(9), b"b"),
            None,
            0,
        )
        .unwrap();
        // A counter "x" from elsewhere wins the name.
        let applied = ks
            .merge_state(
                ReplicaId(8),
                "x",
                Kind::Counter,
                counter_delta(ReplicaId(8), 4),
                None,
                0,
            )
            .unwrap()
            .unwrap();
        assert_eq!(applied.kind, Kind::Counter);
        // And a set delta of "x" still on its way goes to the copy.
        ks.merge_state(
            ReplicaId(10),
            "x",
            Kind::Set,
            set_delta(ReplicaId(10), b"c"),
            None,
            0,
        )
        .unwrap();
        ks.flush().unwrap();
        let before = (
            ks.state("x").unwrap().cloned(),
            ks.state("_atoll.conflict/set/x").unwrap().cloned(),
        );
        drop(ks);
        backend.crash(0);
        let mut ks = open();
        let after = (
            ks.state("x").unwrap().cloned(),
            ks.state("_atoll.conflict/set/x").unwrap().cloned(),
        );
        assert_eq!(before, after, "checkpoint_every {checkpoint_every}");
        assert!(matches!(after.0, Some(State::Counter(ref c)) if c.value() == 4));
        assert_eq!(members(after.1).len(), 3);
        assert_eq!(ks.kind_of("x").unwrap(), Some(Kind::Counter));
    }
}

#[test]
fn a_system_variable_or_a_copy_of_another_kind_is_refused_as_hostile() {
    let backend = MemoryBackend::new();
    let ks = Keyspace::open(backend, KeyspaceConfig::default(), id(1), inc(1), 0).unwrap();
    let mut r = Replica::new(ks, ReplicaConfig::default());
    r.add_peer(id(2));
    r.set_connected(id(2), Some(inc(2)), 0);
    let mut ks_set = |name: &str, d: State| {
        let kind = d.kind();
        r.keyspace().merge_state(inc(2), name, kind, d, None, 0)
    };
    ks_set("_atoll.peers", set_delta(inc(2), b"127.0.0.1:1")).unwrap();
    let e = ks_set("_atoll.peers", counter_delta(inc(2), 1)).unwrap_err();
    assert!(matches!(e, atoll_core::Error::TypeMismatch { .. }), "{e}");
    // A conflict copy's name says its kind: another is no conflict.
    let e = ks_set("_atoll.conflict/set/y", counter_delta(inc(2), 1)).unwrap_err();
    assert!(matches!(e, atoll_core::Error::TypeMismatch { .. }), "{e}");
    // Nor may a copy name a system variable or nest.
    for bad in [
        "_atoll.conflict/set/_atoll.peers",
        "_atoll.conflict/nokind/y",
    ] {
        let e = atoll_core::validate_name(bad).unwrap_err();
        assert!(
            matches!(e, atoll_core::Error::InvalidName { .. }),
            "{bad}: {e}"
        );
    }
    atoll_core::validate_name("_atoll.conflict/set/y").unwrap();
}
