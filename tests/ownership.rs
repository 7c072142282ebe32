//! Owned variables on real nodes over QUIC: ownership taken and moved,
//! strong operations raced from every node with exactly one winner, a
//! bounded counter raced to its floor, a typed error when the owner is
//! away, and escrowed rights spent without it.

use atoll::{CoreError, Error, Node, OwnershipError};
use atoll_tests::{wait_until, Cluster};
use std::sync::Barrier;

/// Three connected nodes, every one up to date with the others (so that
/// none is fenced).
fn three(c: &Cluster) -> Vec<Node> {
    three_with(c, |_, _| {})
}

/// [`three`], each node's configuration changed by `configure` first.
fn three_with(c: &Cluster, configure: impl Fn(usize, &mut atoll::NodeConfig)) -> Vec<Node> {
    let start = |i: usize, peers: &[std::net::SocketAddr]| {
        let mut config = c.config(i, peers);
        configure(i, &mut config);
        Node::start(config).unwrap()
    };
    let a = start(0, &[]);
    let b = start(1, &[a.local_addr()]);
    let n3 = start(2, &[a.local_addr(), b.local_addr()]);
    let nodes = vec![a, b, n3];
    wait_until(
        "every node connects to the others and is up to date",
        || {
            nodes.iter().all(|n| {
                let s = n.status();
                s.peers.len() == 2 && s.peers.iter().all(|(p, _)| p.connected) && !n.fenced()
            })
        },
    );
    nodes
}

fn ownership_error(e: Error) -> OwnershipError {
    match e {
        Error::Core(CoreError::Ownership(e)) => e,
        e => panic!("expected an ownership error, got {e}"),
    }
}

#[test]
fn strong_operations_race_from_every_node_with_one_winner_each() {
    let c = Cluster::new(3);
    let nodes = three(&c);
    // Node 1 owns the register and the claims, node 2 the stock.
    for name in ["leader", "usernames"] {
        nodes[1].own(name).unwrap();
    }
    nodes[2].own("stock").unwrap();
    let owners = [
        ("leader", nodes[1].replica_id()),
        ("usernames", nodes[1].replica_id()),
        ("stock", nodes[2].replica_id()),
    ];
    wait_until("every node knows the owners", || {
        nodes.iter().all(|n| {
            owners
                .iter()
                .all(|(name, o)| n.owner(name).unwrap().owner() == Some(*o))
        })
    });
    // A compare-and-set from the unwritten register, raced from every node.
    let barrier = Barrier::new(3);
    let won: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let barrier = &barrier;
                s.spawn(move || {
                    let reg = n.register::<String>("leader").unwrap();
                    barrier.wait();
                    reg.compare_and_set(None, &format!("node-{i}")).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    // A claim raced from every node, twenty times.
    for round in 0..20 {
        let member = format!("user-{round}");
        let claimed: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = nodes
                .iter()
                .map(|n| {
                    let member = &member;
                    s.spawn(move || {
                        let set = n.set::<String>("usernames").unwrap();
                        set.add_if_absent(member).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(claimed.iter().filter(|c| **c).count(), 1, "round {round}");
    }
    // A bounded counter: 30 in stock, raced down by every node, never below 0.
    nodes[0].counter("stock").unwrap().incr(30).unwrap();
    wait_until("the owner sees the stock", || {
        nodes[2].counter("stock").unwrap().value().unwrap() == 30
    });
    let taken: Vec<i64> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|n| {
                s.spawn(move || {
                    let stock = n.counter("stock").unwrap();
                    let mut taken = 0;
                    for _ in 0..20 {
                        let (done, value) = stock.decrement_if(1, 0).unwrap();
                        assert!(value >= 0);
                        taken += i64::from(done);
                    }
                    taken
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(taken.iter().sum::<i64>(), 30, "{taken:?}");
    // A strong read anywhere sees what the owner has, at once.
    for n in &nodes {
        assert_eq!(n.counter("stock").unwrap().value_strong().unwrap(), 0);
        assert_eq!(
            n.set::<String>("usernames")
                .unwrap()
                .members_strong()
                .unwrap()
                .len(),
            20
        );
    }
    wait_until("every node sees the stock at 0", || {
        nodes
            .iter()
            .all(|n| n.counter("stock").unwrap().value().unwrap() == 0)
    });
}

#[test]
fn ownership_moves_and_an_unreachable_owner_is_a_typed_error() {
    let c = Cluster::new(3);
    let mut nodes = three(&c);
    nodes[0].own("lock").unwrap();
    let first = nodes[0].replica_id();
    wait_until("every node knows the owner", || {
        nodes
            .iter()
            .all(|n| n.owner("lock").unwrap().owner() == Some(first))
    });
    let lock = |n: &Node| n.register::<String>("lock").unwrap();
    assert!(lock(&nodes[2]).compare_and_set(None, &"a".into()).unwrap());
    // Moved to node 2, with its state: the value written stays.
    nodes[2].own("lock").unwrap();
    let record = nodes[2].owner("lock").unwrap();
    assert_eq!(record.owner(), Some(nodes[2].replica_id()));
    assert!(record.epoch >= 2, "{record:?}");
    assert!(!lock(&nodes[1]).compare_and_set(None, &"b".into()).unwrap());
    assert!(lock(&nodes[1])
        .compare_and_set(Some(&"a".into()), &"b".into())
        .unwrap());
    // The owner stops: strong operations elsewhere fail, typed, in bounded time.
    let owner = nodes.pop().unwrap();
    owner.shutdown().unwrap();
    let started = std::time::Instant::now();
    let e = lock(&nodes[0])
        .compare_and_set(Some(&"b".into()), &"c".into())
        .unwrap_err();
    match ownership_error(e) {
        OwnershipError::OwnerUnreachable { owner, .. } => {
            assert_eq!(owner, Some(record.owner().unwrap()))
        }
        e => panic!("{e}"),
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // Writes that cannot break a strong operation stay local.
    nodes[0].counter("hits").unwrap().incr(1).unwrap();
}

/// Placement rules on real nodes: a variable under `stock:` is owned by a
/// node of site b from its first write, wherever that write is made, and
/// cannot be moved off the site.
#[test]
fn a_rule_places_variables_on_a_site_from_their_first_write() {
    let c = Cluster::new(3);
    let nodes = three_with(&c, |i, config| {
        config.replica.site = Some(["a", "b", "b"][i].to_string());
        config.replica.owned = vec![atoll::OwnedRule {
            prefix: "stock:".into(),
            place: atoll::Place::Site("b".into()),
        }];
    });
    let ids: Vec<_> = nodes.iter().map(|n| n.replica_id()).collect();
    wait_until("every node knows every site", || {
        nodes.iter().all(|n| {
            ids.iter().map(|id| n.site_of(*id)).collect::<Vec<_>>()
                == [Some("a".into()), Some("b".into()), Some("b".into())]
        })
    });
    nodes[0]
        .register::<String>("stock:1")
        .unwrap()
        .set(&"x".into())
        .unwrap();
    // Node 0 learns the grant by gossip (the write's reply carries the
    // variable, not its record).
    wait_until("node 0 knows the owner", || {
        nodes[0].owner("stock:1").unwrap().owner().is_some()
    });
    let owner = nodes[0].owner("stock:1").unwrap().owner();
    assert!(owner == Some(ids[1]) || owner == Some(ids[2]), "{owner:?}");
    let reg = nodes[1].register::<String>("stock:1").unwrap();
    assert!(reg.compare_and_set(Some(&"x".into()), &"y".into()).unwrap());
    let e = nodes[2].own_by("stock:1", ids[0]).unwrap_err();
    match ownership_error(e) {
        // Refused at the owner (node 1), or by node 2 if it owns it.
        OwnershipError::Refused { why, .. } | OwnershipError::Placement { why, .. } => {
            assert!(why.contains("places it on site \"b\""), "{why}")
        }
        e => panic!("{e}"),
    }
    // An increment stays local and makes nothing owned.
    nodes[0].counter("stock:2").unwrap().incr(3).unwrap();
    assert_eq!(nodes[0].owner("stock:2").unwrap().owner(), None);
}

/// Migration by use on real nodes: a variable owned at node 0 and used
/// from node 2 in a burst moves to node 2, and its strong operations then
/// run there without a round trip.
#[test]
fn a_variable_moves_to_the_node_that_uses_it_after_a_burst() {
    let c = Cluster::new(3);
    let nodes = three_with(&c, |_, config| {
        config.replica.migration = atoll::Migration {
            min_ops: 8,
            share_pct: 75,
            window_ms: 10_000,
            cooldown_ms: 0,
        };
    });
    nodes[0].own("seats").unwrap();
    let far = nodes[2].replica_id();
    wait_until("node 2 knows the owner", || {
        nodes[2].owner("seats").unwrap().owner() == Some(nodes[0].replica_id())
    });
    let seats = nodes[2].set::<String>("seats").unwrap();
    for i in 0..20 {
        assert!(seats.add_if_absent(&format!("seat-{i}")).unwrap());
    }
    wait_until("the seats moved to node 2, everywhere", || {
        nodes.iter().all(|n| {
            let record = n.owner("seats").unwrap();
            record.owner() == Some(far) && record.handoff().is_none()
        })
    });
    // Every claim made before the move is still there, and claims now run
    // at node 2.
    assert_eq!(seats.members_strong().unwrap().len(), 20);
    assert!(!seats.add_if_absent(&"seat-3".to_string()).unwrap());
}

/// Escrow on real nodes: rights granted while connected let the two nodes
/// left decrement locally once the owner is gone, each up to its balance,
/// and the counter never goes below its floor.
#[test]
fn escrowed_rights_keep_decrements_going_without_the_owner() {
    let c = Cluster::new(3);
    let mut nodes = three_with(&c, |_, config| {
        config.replica.rebalance.every_ms = 100;
        config.replica.request_timeout_ms = 500;
    });
    nodes[0].own("stock").unwrap();
    let stock = |n: &Node| n.counter("stock").unwrap();
    stock(&nodes[0]).incr(60).unwrap();
    stock(&nodes[1]).enable_escrow(0).unwrap();
    let balance = |n: &Node| {
        let me = n.replica_id();
        let e = stock(n).escrow().unwrap();
        e.and_then(|e| e.nodes.iter().find(|r| r.node == me).map(|r| r.balance))
            .unwrap_or(0)
    };
    wait_until("nodes 1 and 2 hold rights", || {
        balance(&nodes[1]) > 0 && balance(&nodes[2]) > 0
    });
    let owner = nodes.remove(0);
    let gone = owner.replica_id();
    owner.shutdown().unwrap();
    // Once both know the owner is gone, no grant and no give-back moves.
    wait_until("nodes 1 and 2 see the owner gone", || {
        nodes.iter().all(|n| {
            let s = n.status();
            s.peers.iter().all(|(p, _)| p.id != gone || !p.connected)
        })
    });
    let held: Vec<i128> = nodes.iter().map(balance).collect();
    let done: Vec<i128> = std::thread::scope(|s| {
        let runs: Vec<_> = nodes
            .iter()
            .map(|n| {
                s.spawn(move || {
                    let mut done = 0;
                    loop {
                        match stock(n).decrement_if(1, 0) {
                            Ok((true, _)) => done += 1,
                            Ok((false, _)) => break,
                            Err(e) => match ownership_error(e) {
                                OwnershipError::OwnerUnreachable { .. } => break,
                                e => panic!("{e}"),
                            },
                        }
                    }
                    done
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(done, held, "each node spent exactly its balance, locally");
    for n in &nodes {
        assert!(stock(n).value().unwrap() >= 0);
    }
    wait_until("the two agree", || {
        stock(&nodes[0]).value().unwrap() == stock(&nodes[1]).value().unwrap()
    });
    assert_eq!(
        stock(&nodes[0]).value().unwrap(),
        60 - held.iter().sum::<i128>()
    );
}
