//! Consistency checks between in-process replicas: a healthy cluster is
//! `ok`; a peer cut off is `unreachable`; a peer that has not seen all
//! updates yet is `in_flight`; a replica whose stored state was damaged is
//! `divergent` in exactly the damaged variable, which the repair converges.

use atoll_core::testkit::{id, Net};
use atoll_core::{CheckReport, CheckResult, KeyspaceConfig, Op};
use atoll_crdt::variable::{Bytes, State};
use atoll_crdt::{PNCounter, ReplicaId};
use atoll_store::{Backend, BatchOp};

fn cluster() -> Net {
    let mut net = Net::new(3, KeyspaceConfig::default());
    net.full_mesh();
    net.run(1_000);
    for i in 0..3 {
        net.incr(i, "hits", 1 + i as i64);
        net.add(i, "tags", Bytes::from(vec![i as u8]));
    }
    net.write(
        0,
        "jobs",
        Op::BagInsert {
            values: vec![Bytes::from(vec![7])],
        },
    );
    net.run(2_000);
    net
}

fn results(r: &CheckReport) -> Vec<CheckResult> {
    r.nodes.iter().map(|n| n.result).collect()
}

#[test]
fn a_converged_cluster_is_ok_everywhere() {
    let mut net = cluster();
    for at in 0..3 {
        let r = net.check(at);
        assert_eq!(results(&r), [CheckResult::Ok; 2], "from {at}: {r:?}");
        assert!(r.variables >= 3);
        assert!(r.nodes.iter().all(|n| n.root == Some(r.root)));
    }
}

#[test]
fn a_peer_cut_off_is_unreachable_and_one_behind_is_in_flight() {
    let mut net = cluster();
    net.cut(0, 2);
    let r = net.check(0);
    assert_eq!(results(&r), [CheckResult::Ok, CheckResult::Unreachable]);
    // Node 1 does not get node 0's deltas yet: in flight, not divergent.
    net.blocked.insert((0, 1, "deltas"));
    net.incr(0, "hits", 5);
    let r = net.check(0);
    assert_eq!(r.nodes[0].result, CheckResult::InFlight, "{r:?}");
    assert_eq!(r.differing.len(), 1);
    assert_eq!(r.differing[0].name, "hits");
    net.blocked.clear();
    net.heal(0, 2);
    net.run(3_000);
    assert_eq!(results(&net.check(0)), [CheckResult::Ok; 2]);
}

#[test]
fn a_damaged_variable_is_divergent_alone_and_repaired() {
    let mut net = cluster();
    // Node 1's disk is damaged while it is down: its stored counter gets
    // a total no write made, in an encoding that still decodes.
    let disk = net.backup(1);
    let mut damaged = PNCounter::new();
    damaged.add(ReplicaId(0xbad), 40).unwrap();
    let bytes = atoll_crdt::codec::encode(&State::Counter(damaged));
    let mut d = disk.clone();
    d.apply(vec![BatchOp::Put(
        [b"s".as_slice(), b"hits"].concat(),
        bytes,
    )])
    .unwrap();
    d.flush().unwrap();
    net.reopen(1, disk, ReplicaId(777));
    net.run(3_000);
    let r = net.check(0);
    assert_eq!(r.nodes[0].node, id(1));
    assert_eq!(r.nodes[0].result, CheckResult::Divergent, "{r:?}");
    assert_eq!(r.nodes[1].result, CheckResult::Ok);
    let names: Vec<&str> = r.differing.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["hits"]);
    assert_eq!(r.nodes[0].repaired, 1);
    // The repair joined the two states: the next check is ok everywhere.
    net.run(3_000);
    assert_eq!(results(&net.check(0)), [CheckResult::Ok; 2]);
    assert_eq!(results(&net.check(2)), [CheckResult::Ok; 2]);
    assert_eq!(net.counter(0, "hits"), net.counter(1, "hits"));
}

/// The digest tree kept up to date write by write equals the one built
/// from scratch over the same data (another opening of the same storage).
#[test]
fn the_tree_kept_up_to_date_equals_one_built_from_scratch() {
    use atoll_core::Keyspace;
    use atoll_store::MemoryBackend;
    let disk = MemoryBackend::new();
    let open = |disk: MemoryBackend, inc: u64| {
        Keyspace::open(
            disk,
            KeyspaceConfig::default(),
            ReplicaId(1),
            ReplicaId(inc),
            0,
        )
        .unwrap()
    };
    let mut ks = open(disk.clone(), 10);
    let empty = ks.digest_tree().unwrap();
    assert_eq!(empty.variables, 0);
    for i in 0..200u8 {
        let name = format!("v{}", i % 37);
        let op = match i % 3 {
            0 => Op::CounterAdd { by: i64::from(i) },
            1 if i % 37 == 1 => Op::CounterAdd { by: 1 },
            _ => Op::CounterAdd { by: -1 },
        };
        ks.apply(&name, op, 0).unwrap();
        if i % 50 == 0 {
            // Used midway: later writes update it, they do not rebuild it.
            ks.digest_tree().unwrap();
        }
    }
    ks.apply(
        "tags",
        Op::SetChange {
            add: vec![Bytes::from(vec![1])],
            remove: vec![],
        },
        0,
    )
    .unwrap();
    let kept = ks.digest_tree().unwrap();
    assert_eq!(kept.variables, 38);
    ks.flush().unwrap();
    drop(ks);
    let mut fresh = open(disk, 11);
    assert_eq!(fresh.digest_tree().unwrap(), kept);
    assert_ne!(kept.root, empty.root);
}
