//! Bags on real nodes over QUIC: elements inserted at one node spread to
//! the others' shares while they are connected, so that a take at any node
//! finds one at once; the share of a node gone for good is adopted by an
//! operator; on an owned bag, a take with an empty share is made at the
//! owner.

use atoll::Node;
use atoll_tests::{wait_until, Cluster};

fn shares(n: &Node, ids: &[atoll::ReplicaId]) -> Vec<usize> {
    let elements = n.bag::<String>("jobs").unwrap().elements().unwrap();
    ids.iter()
        .map(|id| elements.iter().filter(|e| e.owner == *id).count())
        .collect()
}

#[test]
fn elements_spread_to_every_share_and_a_gone_nodes_share_is_adopted() {
    let c = Cluster::new(3);
    let a = c.start(0, &[]);
    let b = c.start(1, &[a.local_addr()]);
    let n3 = c.start(2, &[a.local_addr(), b.local_addr()]);
    let mut nodes = vec![a, b, n3];
    let ids: Vec<_> = nodes.iter().map(|n| n.replica_id()).collect();
    wait_until("every node is connected and up to date", || {
        nodes.iter().all(|n| {
            let s = n.status();
            s.peers.len() == 2 && s.peers.iter().all(|(p, _)| p.connected) && !n.fenced()
        })
    });
    let jobs: Vec<String> = (0..30).map(|i| format!("job-{i}")).collect();
    nodes[0]
        .bag::<String>("jobs")
        .unwrap()
        .insert_all(&jobs)
        .unwrap();
    wait_until("every node holds a third of the jobs", || {
        nodes.iter().all(|n| shares(n, &ids) == [10, 10, 10])
    });
    // A take at node 2 finds one of its own at once.
    let taken = nodes[2].bag::<String>("jobs").unwrap().take().unwrap();
    assert!(taken.is_some());
    wait_until("every node knows of the take", || {
        nodes.iter().all(|n| shares(n, &ids) == [10, 10, 9])
    });
    // Node 2 is gone for good: node 0 adopts its share.
    let gone = nodes.pop().unwrap();
    gone.shutdown().unwrap();
    let adopted = nodes[0]
        .bag::<String>("jobs")
        .unwrap()
        .adopt(ids[2])
        .unwrap();
    assert_eq!(adopted.len(), 9);
    wait_until("node 1 sees the adoption", || {
        let s = shares(&nodes[1], &ids);
        s[2] == 0 && s.iter().sum::<usize>() == 29
    });
    // Node 1 takes half its share: now low against node 0's, it is given
    // elements again, up to an even split.
    let bag = nodes[1].bag::<String>("jobs").unwrap();
    for _ in 0..5 {
        assert!(bag.take().unwrap().is_some());
    }
    wait_until("node 1's share is filled up again", || {
        let s = shares(&nodes[1], &ids);
        s[0] + s[1] == 24 && s[0].abs_diff(s[1]) <= 1
    });
}

/// On an owned bag, a take at a node whose share is empty is made at the
/// owner, out of its share, over QUIC.
#[test]
fn a_take_with_an_empty_share_goes_to_the_owned_bag_s_owner() {
    let c = Cluster::new(2);
    let no_rebalance = |i: usize, peers: &[std::net::SocketAddr]| {
        let mut config = c.config(i, peers);
        config.replica.rebalance.every_ms = 0;
        Node::start(config).unwrap()
    };
    let a = no_rebalance(0, &[]);
    let b = no_rebalance(1, &[a.local_addr()]);
    wait_until("the two are connected and up to date", || {
        [&a, &b].iter().all(|n| {
            let s = n.status();
            s.peers.len() == 1 && s.peers[0].0.connected && !n.fenced()
        })
    });
    a.own("jobs").unwrap();
    a.bag::<String>("jobs")
        .unwrap()
        .insert_all(&["one".to_string(), "two".to_string()])
        .unwrap();
    wait_until("node 1 knows the owner", || {
        b.owner("jobs").unwrap().owner() == Some(a.replica_id())
    });
    let jobs = b.bag::<String>("jobs").unwrap();
    let mut got = vec![jobs.take().unwrap(), jobs.take().unwrap()];
    got.sort();
    assert_eq!(got, [Some("one".to_string()), Some("two".to_string())]);
    assert_eq!(jobs.take().unwrap(), None, "the bag is empty");
}
