//! Escrow of a bounded counter's decrement rights between in-process
//! replicas: rights granted ahead of a split let every side decrement
//! locally, never below the floor; they follow use while connected; and
//! they travel with the counter when its owner changes.

use atoll_core::protocol::Body;
use atoll_core::testkit::{id, Net};
use atoll_core::{Answer, Error, KeyspaceConfig, Op, OwnershipError, Requested};
use atoll_crdt::ReplicaId;

const WAIT: u64 = 10_000;

/// Three connected replicas; `stock` holds `start`, is owned by replica 0
/// and has escrow with floor 0, and rounds have spread the rights.
fn stocked(start: i64) -> Net {
    let mut net = Net::new(3, KeyspaceConfig::default());
    net.full_mesh();
    net.run(1_000);
    net.incr(0, "stock", start);
    let own = net.request(0, "stock", Body::Own { to: id(0) }, WAIT);
    assert_eq!(own.unwrap(), Answer::Done);
    let enable = Body::Op(Op::CounterEscrow { floor: 0 });
    assert_eq!(net.request(1, "stock", enable, WAIT).unwrap(), Answer::Done);
    net.run(5_000);
    net
}

fn balance(net: &mut Net, at: usize, of: usize) -> i128 {
    let (e, c) = net.nodes[at]
        .escrow_and_counter("stock")
        .unwrap()
        .expect("escrow");
    e.balance(id(of), &c)
}

/// A conditional decrement of 1 at replica `i`, run where the replica
/// routes it; `Some(done)`, or `None` if it could not reach an owner.
fn take_one(net: &mut Net, i: usize) -> Option<bool> {
    let op = Op::CounterDecrementIf { by: 1, floor: 0 };
    match net.request(i, "stock", Body::Op(op), WAIT) {
        Ok(Answer::Decremented { done, .. }) => Some(done),
        Ok(other) => panic!("{other:?}"),
        Err(Error::Ownership(OwnershipError::OwnerUnreachable { .. })) => None,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn rights_are_granted_ahead_and_spent_locally_through_a_split_never_below_the_floor() {
    let mut net = stocked(30);
    // Idle: each node's target is a third.
    for i in 1..3 {
        let b = balance(&mut net, 0, i);
        assert!((5..=10).contains(&b), "node {i} holds {b}");
    }
    // Node 2 is cut off from both others.
    net.cut(0, 2);
    net.cut(1, 2);
    let held = balance(&mut net, 2, 2);
    let mut done = 0;
    for _ in 0..40 {
        match take_one(&mut net, 2) {
            Some(true) => done += 1,
            Some(false) => panic!("refused, not unreachable"),
            None => break,
        }
    }
    assert_eq!(
        done, held,
        "node 2 spends exactly what it held, with no owner"
    );
    // The other side goes on too, down to the floor and no further.
    let mut other = 0;
    for _ in 0..40 {
        if take_one(&mut net, 1) == Some(true) {
            other += 1;
        }
    }
    assert_eq!(done + other, 30, "every right spent once: {done} + {other}");
    for i in 0..3 {
        assert!(net.counter(i, "stock") >= 0, "replica {i}");
    }
    net.heal(0, 2);
    net.heal(1, 2);
    net.run(5_000);
    net.assert_converged(&["stock", "_atoll.escrow/stock"]);
    assert_eq!(net.counter(0, "stock"), 0);
    assert_eq!(take_one(&mut net, 2), Some(false));
}

#[test]
fn rights_follow_use_and_come_back_from_idle_nodes() {
    let mut net = stocked(90);
    let before = balance(&mut net, 0, 1);
    // Node 1 decrements steadily: its target grows, node 2's shrinks.
    for _ in 0..10 {
        for _ in 0..4 {
            assert_eq!(take_one(&mut net, 1), Some(true));
        }
        net.run(1_000);
    }
    let (b1, b2) = (balance(&mut net, 0, 1), balance(&mut net, 0, 2));
    assert!(b1 > b2, "the busy node holds more: {b1} vs {b2}");
    assert!(b1 + 40 > before, "it was granted more than it started with");
    // What nobody holds stays in the pool: never more than the value.
    let value = net.counter(0, "stock");
    let (escrow, c) = net.nodes[0].escrow_and_counter("stock").unwrap().unwrap();
    assert!(
        escrow.held(&c) <= value,
        "{} held of {value}",
        escrow.held(&c)
    );
}

#[test]
fn the_pool_refuses_what_it_does_not_hold_and_plain_decrements_obey_it() {
    let mut net = stocked(9);
    net.cut(0, 1);
    net.cut(0, 2);
    // The owner spends its pool, then refuses: the rest is held elsewhere.
    let pool_part = (0..20)
        .filter(|_| take_one(&mut net, 0) == Some(true))
        .count();
    assert!(pool_part < 9, "{pool_part}");
    let plain = net.request(0, "stock", Body::Op(Op::CounterAdd { by: -1 }), WAIT);
    assert!(
        matches!(
            plain,
            Err(Error::Ownership(OwnershipError::BelowFloor { .. }))
        ),
        "{plain:?}"
    );
    // A floor does not change once set.
    let again = net.request(0, "stock", Body::Op(Op::CounterEscrow { floor: 5 }), WAIT);
    assert!(
        matches!(again, Err(Error::Ownership(OwnershipError::Escrow { .. }))),
        "{again:?}"
    );
}

#[test]
fn a_new_owner_knows_every_grant_made_before_it() {
    let mut net = Net::new(3, KeyspaceConfig::default());
    net.full_mesh();
    net.run(1_000);
    net.incr(0, "stock", 30);
    let own = net.request(0, "stock", Body::Own { to: id(0) }, WAIT);
    assert_eq!(own.unwrap(), Answer::Done);
    net.run(1_000);
    // Node 1 hears no gossip: what it learns of the escrow comes with the
    // offer that hands it the counter.
    net.blocked.insert((0, 1, "deltas"));
    net.blocked.insert((2, 1, "deltas"));
    let enable = Body::Op(Op::CounterEscrow { floor: 0 });
    assert_eq!(net.request(0, "stock", enable, WAIT).unwrap(), Answer::Done);
    net.run(5_000);
    assert!(balance(&mut net, 0, 2) > 0, "node 2 was granted rights");
    net.nodes[0].move_owner(net.now, "stock", id(1)).unwrap();
    net.run(3_000);
    assert_eq!(
        net.nodes[1].ownership("stock").unwrap().owner(),
        Some(id(1))
    );
    let (at_new, c) = net.nodes[1]
        .escrow_and_counter("stock")
        .unwrap()
        .expect("escrow came with the offer");
    assert_eq!(at_new.balance(id(2), &c), balance(&mut net, 0, 2));
    // Everything spent anywhere still stops at the floor.
    net.blocked.clear();
    let mut done = 0;
    for _ in 0..3 {
        for i in 0..3 {
            for _ in 0..20 {
                if take_one(&mut net, i) == Some(true) {
                    done += 1;
                }
            }
        }
        net.run(3_000);
    }
    assert_eq!(done, 30);
    for i in 0..3 {
        assert_eq!(net.counter(i, "stock"), 0, "replica {i}");
    }
}

#[test]
fn a_node_restored_from_an_old_backup_spends_nothing_until_its_peers_caught_it_up() {
    let mut net = stocked(30);
    let held = balance(&mut net, 1, 1);
    assert!(held >= 2, "{held}");
    let backup = net.backup(1);
    // Node 1 spends all it holds, cut off from the others; its peers see it.
    net.cut(0, 1);
    net.cut(1, 2);
    for _ in 0..held {
        assert_eq!(take_one(&mut net, 1), Some(true));
    }
    net.heal(0, 1);
    net.heal(1, 2);
    net.run(3_000);
    // Its disk is lost; it comes back from the backup, which shows the
    // rights unspent. Until both peers brought it up to date, it spends
    // nothing: the decrement goes to the owner...
    net.reopen(1, backup, ReplicaId(555));
    assert!(net.nodes[1].fenced());
    assert_eq!(
        balance(&mut net, 1, 1),
        held,
        "the backup shows them unspent"
    );
    let now = net.now;
    let op = Op::CounterDecrementIf { by: 1, floor: 0 };
    match net.nodes[1].request(now, "stock", Body::Op(op)) {
        Ok(Requested::Sent(_)) => {}
        other => panic!("a fenced node spent locally: {other:?}"),
    }
    // ... and once they did, it knows what it spent.
    net.run(3_000);
    assert!(!net.nodes[1].fenced());
    let (_, c) = net.nodes[1].escrow_and_counter("stock").unwrap().unwrap();
    let spent = atoll_crdt::spent_by(&c, id(1));
    assert_eq!(
        i128::from(spent),
        held,
        "its spends came back from its peers"
    );
    for _ in 0..40 {
        take_one(&mut net, 1);
        take_one(&mut net, 2);
        net.run(500);
    }
    for i in 0..3 {
        assert_eq!(net.counter(i, "stock"), 0, "replica {i}");
    }
}

#[test]
fn rights_an_owner_was_granted_before_are_spent_once() {
    let mut net = stocked(30);
    let mine = balance(&mut net, 0, 1);
    assert!(mine > 0);
    net.nodes[0].move_owner(net.now, "stock", id(1)).unwrap();
    net.run(20);
    assert_eq!(
        net.nodes[1].ownership("stock").unwrap().owner(),
        Some(id(1))
    );
    // At once, before any round: the new owner decrements out of its pool,
    // then out of what it was granted before, given back to the pool.
    let mut done = 0;
    while take_one(&mut net, 1) == Some(true) {
        done += 1;
    }
    assert!(done >= mine, "{done} of {mine}");
    // Moved on at once too: node 1 holds nothing more to spend.
    net.nodes[1].move_owner(net.now, "stock", id(2)).unwrap();
    net.run(20);
    assert_eq!(
        net.nodes[2].ownership("stock").unwrap().owner(),
        Some(id(2))
    );
    assert!(balance(&mut net, 1, 1) <= 0);
    // Rounds and decrements everywhere until none is made: 30 in all.
    for _ in 0..4 {
        net.run(3_000);
        for i in 0..3 {
            while take_one(&mut net, i) == Some(true) {
                done += 1;
            }
        }
    }
    assert_eq!(done, 30);
    for i in 0..3 {
        assert_eq!(net.counter(i, "stock"), 0, "replica {i}");
    }
}
