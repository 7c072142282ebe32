//! Bag shares between in-process replicas: elements move from a node with
//! a surplus to connected nodes whose shares are low, so that a take
//! anywhere finds one without a round trip; never to a node cut off; and
//! an operator adopts the share of a node gone for good.

use atoll_core::testkit::{id, Net};
use atoll_core::{Answer, Event, KeyspaceConfig, Op};
use atoll_crdt::variable::{Bytes, State};
use atoll_crdt::ReplicaId;

fn shares(net: &mut Net, at: usize, name: &str) -> Vec<usize> {
    let Some(State::Bag(bag)) = net.state(at, name) else {
        return vec![0; net.nodes.len()];
    };
    (0..net.nodes.len())
        .map(|i| bag.iter().filter(|(_, e)| e.owner == id(i)).count())
        .collect()
}

fn insert(net: &mut Net, at: usize, n: u8) {
    let values = (0..n).map(|x| Bytes::from(vec![x])).collect();
    net.write(at, "jobs", Op::BagInsert { values });
}

fn take(net: &mut Net, at: usize) -> bool {
    matches!(net.write(at, "jobs", Op::BagTake), Answer::Taken(Some(_)))
}

#[test]
fn a_surplus_goes_to_low_shares_and_a_take_anywhere_finds_an_element() {
    let mut net = Net::new(3, KeyspaceConfig::default());
    net.full_mesh();
    insert(&mut net, 0, 30);
    net.run(5_000);
    for i in 0..3 {
        assert_eq!(shares(&mut net, i, "jobs"), [10, 10, 10], "at replica {i}");
    }
    // Node 2 takes its whole share, and more: it is given elements again.
    for _ in 0..10 {
        assert!(take(&mut net, 2));
    }
    net.run(5_000);
    let after = shares(&mut net, 0, "jobs");
    assert_eq!(after.iter().sum::<usize>(), 20);
    assert!(after[2] > 0, "{after:?}");
    assert!(take(&mut net, 2), "a take at node 2 finds an element");
    // Each element given was given once, by its owner.
    let given: usize = net
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Rebalanced { moves, .. } => Some(moves.len()),
            _ => None,
        })
        .sum();
    assert!(given >= 20, "{given}");
}

#[test]
fn nothing_moves_to_a_node_cut_off_and_shares_are_not_pulled_back_and_forth() {
    let mut net = Net::new(3, KeyspaceConfig::default());
    net.full_mesh();
    // Every node hears from every other once (a fenced node gives nothing).
    net.run(1_000);
    net.cut(0, 2);
    net.cut(1, 2);
    insert(&mut net, 0, 20);
    net.run(5_000);
    assert_eq!(shares(&mut net, 0, "jobs"), [10, 10, 0]);
    net.heal(0, 2);
    net.heal(1, 2);
    net.run(5_000);
    let balanced = shares(&mut net, 0, "jobs");
    assert_eq!(balanced.iter().sum::<usize>(), 20);
    assert!(balanced.iter().all(|n| (6..=7).contains(n)), "{balanced:?}");
    // Settled: more rounds move nothing.
    let moves = |net: &Net| {
        net.events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Rebalanced { .. }))
            .count()
    };
    let before = moves(&net);
    net.run(10_000);
    assert_eq!(moves(&net), before);
}

#[test]
fn an_operator_adopts_the_share_of_a_node_gone_for_good() {
    let mut net = Net::new(3, KeyspaceConfig::default());
    net.full_mesh();
    insert(&mut net, 2, 6);
    net.run(5_000);
    let before = shares(&mut net, 0, "jobs");
    assert_eq!(before, [2, 2, 2]);
    // Node 2 is gone: its elements are taken by nobody until adopted.
    net.cut(0, 2);
    net.cut(1, 2);
    let adopted = net.write(0, "jobs", Op::BagAdopt { from: id(2) });
    let Answer::Adopted(ids) = adopted else {
        panic!("{adopted:?}")
    };
    assert_eq!(ids.len(), 2);
    net.run(5_000);
    assert_eq!(shares(&mut net, 1, "jobs")[2], 0);
    let total: usize = shares(&mut net, 1, "jobs").iter().sum();
    assert_eq!(total, 6);
    // Adopting from itself, or again, changes nothing.
    let again = net.write(0, "jobs", Op::BagAdopt { from: id(2) });
    assert_eq!(again, Answer::Adopted(Vec::new()));
    let me: ReplicaId = id(0);
    assert_eq!(
        net.write(0, "jobs", Op::BagAdopt { from: me }),
        Answer::Adopted(Vec::new())
    );
}

/// A node fenced after it opened (it may run on a restored backup, and
/// hold elements it gave away or took) gives nothing until its peers have
/// brought it up to date.
#[test]
fn a_fenced_node_gives_nothing() {
    let mut net = Net::new(3, KeyspaceConfig::default());
    // Node 0 waits for three peers; it knows two: it stays fenced.
    net.nodes[0].expect_peers(3);
    net.full_mesh();
    insert(&mut net, 0, 30);
    net.run(5_000);
    assert!(net.nodes[0].fenced());
    assert_eq!(shares(&mut net, 1, "jobs"), [30, 0, 0]);
}

/// A take at a node whose share of an owned bag is empty goes to the
/// bag's owner, which takes one of its own elements: any element the owner
/// holds is found, once.
#[test]
fn a_take_with_an_empty_share_is_made_at_the_owned_bag_s_owner() {
    let config = atoll_core::ReplicaConfig {
        retransmit_ms: 50,
        rebalance: atoll_core::Rebalance {
            every_ms: 0,
            max_moves: 0,
        },
        ..atoll_core::ReplicaConfig::default()
    };
    let mut net = Net::with_config(3, KeyspaceConfig::default(), config);
    net.full_mesh();
    net.run(1_000);
    let own = atoll_core::protocol::Body::Own { to: id(0) };
    assert_eq!(net.request(0, "jobs", own, 10_000).unwrap(), Answer::Done);
    insert(&mut net, 0, 3);
    net.run(1_000);
    let take_at = |net: &mut Net, i: usize| {
        let body = atoll_core::protocol::Body::Op(Op::BagTake);
        match net.request(i, "jobs", body, 10_000).unwrap() {
            Answer::Taken(t) => t.map(|(id, _)| id),
            other => panic!("{other:?}"),
        }
    };
    let mut taken = std::collections::BTreeSet::new();
    for i in [1, 2, 1] {
        let id = take_at(&mut net, i).expect("an element, from the owner's share");
        assert!(taken.insert(id), "taken twice");
        // The taker's copy shows it gone at once.
        let Some(State::Bag(bag)) = net.state(i, "jobs") else {
            panic!("no bag at {i}");
        };
        assert!(bag.get(id).is_none());
    }
    assert_eq!(take_at(&mut net, 2), None, "the bag is empty");
    net.run(1_000);
    assert_eq!(shares(&mut net, 0, "jobs"), [0, 0, 0]);
}
