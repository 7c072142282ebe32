//! Where owned variables live, between in-process replicas: variables
//! owned by placement rules, granted on first use where the rule places
//! them, and moves by use, which placement bounds.

use atoll_core::protocol::Body;
use atoll_core::testkit::{id, Net};
use atoll_core::{
    Answer, Error, Event, KeyspaceConfig, Migration, Op, OwnedRule, OwnershipError, Place,
    ReplicaConfig, Requested,
};
use atoll_crdt::variable::Bytes;
use atoll_crdt::Ownership;

const WAIT: u64 = 10_000;

fn b(x: u8) -> Bytes {
    Bytes::from(vec![x])
}

fn ownership(net: &mut Net, i: usize, name: &str) -> Ownership {
    net.nodes[i].ownership(name).unwrap()
}

/// Three connected replicas on sites a, b and b, with the rules: `stock:`
/// on site b, `lock:` on replica 0, `job:` wherever first used; moves by
/// use after 8 operations.
fn placed_net() -> Net {
    let rules = vec![
        OwnedRule {
            prefix: "stock:".into(),
            place: Place::Site("b".into()),
        },
        OwnedRule {
            prefix: "lock:".into(),
            place: Place::Node(id(0)),
        },
        OwnedRule {
            prefix: "job:".into(),
            place: Place::Anywhere,
        },
    ];
    let mut net = Net::with_config(3, KeyspaceConfig::default(), migrating());
    for (i, site) in ["a", "b", "b"].into_iter().enumerate() {
        let config = ReplicaConfig {
            owned: rules.clone(),
            site: Some(site.into()),
            ..migrating()
        };
        net.nodes[i].set_config(config);
        let now = net.now;
        net.nodes[i].announce_site(now).unwrap();
    }
    net.full_mesh();
    net.run(1_000);
    net
}

fn migrating() -> ReplicaConfig {
    ReplicaConfig {
        retransmit_ms: 50,
        migration: Migration {
            min_ops: 8,
            share_pct: 75,
            window_ms: 5_000,
            cooldown_ms: 1_000,
        },
        ..ReplicaConfig::default()
    }
}

fn set_reg(net: &mut Net, at: usize, name: &str, x: u8) -> Answer {
    let op = Body::Op(Op::RegisterSet { value: b(x) });
    net.request(at, name, op, WAIT).unwrap()
}

#[test]
fn every_replica_learns_every_site() {
    let mut net = placed_net();
    for i in 0..3 {
        let sites: Vec<_> = (0..3).map(|j| net.nodes[i].site_of(id(j))).collect();
        assert_eq!(
            sites,
            [Some("a".into()), Some("b".into()), Some("b".into())],
            "at replica {i}"
        );
    }
}

/// A write that runs at an owner, on a variable a rule owns, makes it
/// owned where the rule says, from any replica, with no call to own it;
/// an increment (which stays local) does not.
#[test]
fn a_variable_a_rule_owns_is_granted_on_first_use_where_the_rule_places_it() {
    let mut net = placed_net();
    for (at, name, owner) in [
        (2, "job:1", 2),
        (0, "job:2", 0),
        (1, "lock:1", 0),
        (2, "lock:2", 0),
        (1, "stock:1", 1),
        (2, "stock:2", 2),
    ] {
        assert_eq!(set_reg(&mut net, at, name, 7), Answer::Done, "{name}");
        net.run(1_000);
        for i in 0..3 {
            assert_eq!(
                ownership(&mut net, i, name),
                Ownership::owned(1, id(owner)),
                "{name} at replica {i}"
            );
        }
    }
    // From site a, a variable placed on site b goes to one of its nodes,
    // the same whichever asks.
    set_reg(&mut net, 0, "stock:3", 1);
    net.run(1_000);
    let owner = ownership(&mut net, 0, "stock:3").owner().unwrap();
    assert!([id(1), id(2)].contains(&owner), "{owner}");
    // Increments stay local, owned or not.
    net.incr(0, "stock:4", 5);
    net.run(1_000);
    assert_eq!(ownership(&mut net, 1, "stock:4"), Ownership::default());
    // A strong operation is granted like a write: a claim on a rule's
    // variable is never refused as ownerless.
    let claim = Body::Op(Op::SetAddIfAbsent { member: b(1) });
    let r = net.request(0, "job:set", claim, WAIT).unwrap();
    assert_eq!(r, Answer::Claimed(true));
    // A variable no rule covers stays ownerless.
    set_reg(&mut net, 0, "free", 1);
    assert_eq!(ownership(&mut net, 0, "free"), Ownership::default());
}

/// Placement wins: a manual move off the variable's site is refused,
/// within it allowed; use from another site never moves it there.
#[test]
fn placement_wins_over_a_manual_move_and_over_use() {
    let mut net = placed_net();
    set_reg(&mut net, 1, "stock:x", 1);
    net.run(1_000);
    assert_eq!(ownership(&mut net, 0, "stock:x").owner(), Some(id(1)));
    let r = net.request(0, "stock:x", Body::Own { to: id(0) }, WAIT);
    match r {
        Err(Error::Ownership(OwnershipError::Refused { why, .. })) => {
            assert!(why.contains("places it on site \"b\""), "{why}");
        }
        other => panic!("{other:?}"),
    }
    // Used from replica 0 (site a) only: it stays on site b.
    net.now += 1_500;
    for x in 0..20 {
        set_reg(&mut net, 0, "stock:x", x);
    }
    net.run(1_000);
    assert!(
        !net.events
            .iter()
            .any(|(_, e)| matches!(e, Event::Migrating { .. })),
        "no move off the site"
    );
    // Used from replica 2 (site b), once replica 0's use left the window:
    // it moves there.
    net.now += 6_000;
    for x in 0..12 {
        set_reg(&mut net, 2, "stock:x", x);
    }
    net.run(1_000);
    assert_eq!(ownership(&mut net, 0, "stock:x").owner(), Some(id(2)));
    // A variable placed on a node never moves by use.
    set_reg(&mut net, 0, "lock:x", 1);
    net.now += 1_500;
    for x in 0..20 {
        set_reg(&mut net, 1, "lock:x", x);
    }
    net.run(1_000);
    assert_eq!(ownership(&mut net, 2, "lock:x").owner(), Some(id(0)));
    let now = net.now;
    let r = net.nodes[0]
        .request(now, "lock:x", Body::Op(Op::RegisterSet { value: b(1) }))
        .unwrap();
    assert!(matches!(r, Requested::Done { at_owner: true, .. }), "{r:?}");
}

fn migrating_net() -> Net {
    let config = atoll_core::ReplicaConfig {
        retransmit_ms: 50,
        migration: atoll_core::Migration {
            min_ops: 8,
            share_pct: 75,
            window_ms: 5_000,
            cooldown_ms: 1_000,
        },
        ..atoll_core::ReplicaConfig::default()
    };
    let mut net = Net::with_config(3, KeyspaceConfig::default(), config);
    net.full_mesh();
    net.run(1_000);
    net.request(0, "seat", Body::Own { to: id(0) }, WAIT)
        .unwrap();
    net.run(1_000);
    net
}

fn claim(net: &mut Net, at: usize, m: u8) {
    let op = Body::Op(Op::SetAddIfAbsent { member: b(m) });
    net.request(at, "seat", op, WAIT).unwrap();
}

/// An owned variable used mostly from another node moves there, once.
#[test]
fn a_variable_moves_to_the_node_that_uses_it_most() {
    let mut net = migrating_net();
    claim(&mut net, 0, 0);
    // Past the cooldown since it arrived (the network is quiet: no event
    // moves time).
    net.now += 1_500;
    for m in 1..=12 {
        claim(&mut net, 2, m);
    }
    net.run(1_000);
    let moves: Vec<_> = net
        .events
        .iter()
        .filter_map(|(i, e)| match e {
            Event::Migrating { to, .. } => Some((*i, *to)),
            _ => None,
        })
        .collect();
    assert_eq!(moves, vec![(0, id(2))]);
    for i in 0..3 {
        assert_eq!(ownership(&mut net, i, "seat"), Ownership::owned(2, id(2)));
    }
    // Its operations now run there without a round trip.
    let now = net.now;
    let op = Body::Op(Op::SetAddIfAbsent { member: b(99) });
    let r = net.nodes[2].request(now, "seat", op).unwrap();
    assert!(matches!(r, Requested::Done { .. }), "{r:?}");
}

/// Two nodes using a variable equally do not pull it back and forth.
#[test]
fn a_variable_used_equally_from_two_nodes_stays() {
    let mut net = migrating_net();
    net.now += 1_500;
    for m in 0..40 {
        claim(&mut net, 1 + usize::from(m % 2), m);
    }
    net.run(1_000);
    assert!(
        !net.events
            .iter()
            .any(|(_, e)| matches!(e, Event::Migrating { .. })),
        "no move"
    );
    assert_eq!(ownership(&mut net, 1, "seat").owner(), Some(id(0)));
}
