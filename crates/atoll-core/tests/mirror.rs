//! Mirroring per namespace and per link between in-process replicas: a
//! local namespace never leaves its node, a linked one goes only over its
//! links, enabling one sends what was written while it was local, what a
//! peer sends of a namespace not shared is refused without stalling the
//! link, and checks compare only what two nodes share.

use atoll_core::testkit::{id, Net};
use atoll_core::{namespaced, CheckResult, Event, KeyspaceConfig, PeerStatus};

fn mesh() -> Net {
    let mut net = Net::new(3, KeyspaceConfig::default());
    net.full_mesh();
    net.run(1_000);
    net
}

/// What node `at` reports of its peer `peer`.
fn peer(net: &mut Net, at: usize, peer: usize) -> PeerStatus {
    net.nodes[at]
        .peers()
        .into_iter()
        .find(|p| p.id == id(peer))
        .expect("a peer")
}

fn has(net: &mut Net, at: usize, name: &str) -> bool {
    net.state(at, name).is_some()
}

#[test]
fn a_local_namespace_stays_and_a_linked_one_goes_only_over_its_link() {
    let mut net = mesh();
    let now = net.now;
    net.nodes[0].set_mirrored(now, "shared", true).unwrap();
    net.nodes[0].set_mirrored(now, "pair", true).unwrap();
    net.nodes[0]
        .set_mirror_link(now, "pair", id(1), true)
        .unwrap();
    let names: Vec<String> = ["shared", "pair", "local"]
        .iter()
        .map(|ns| namespaced(ns, "n"))
        .collect();
    for name in &names {
        net.incr(0, name, 5);
    }
    net.incr(0, "plain", 1);
    net.run(3_000);
    // Every node holds the same mirroring.
    let config = net.nodes[0].mirroring().clone();
    for i in 1..3 {
        assert_eq!(net.nodes[i].mirroring(), &config);
    }
    let [shared, pair, local] = [&names[0], &names[1], &names[2]];
    for i in 1..3 {
        assert_eq!(net.counter(i, shared), 5);
        assert_eq!(
            net.counter(i, "plain"),
            1,
            "the default namespace is mirrored"
        );
        assert!(!has(&mut net, i, local), "a local namespace left node 0");
    }
    assert_eq!(net.counter(1, pair), 5);
    assert!(!has(&mut net, 2, pair), "node 2 is not linked for pair");
    // Node 1 holds pair, but forwards it to no node it is not linked with.
    net.incr(1, pair, 2);
    net.run(3_000);
    assert_eq!(net.counter(0, pair), 7);
    assert!(!has(&mut net, 2, pair));
    // The senders' counters say the same.
    let to2 = peer(&mut net, 0, 2).namespaces;
    assert!(to2["shared"].sent_bytes > 0, "{to2:?}");
    assert!(
        !to2.contains_key("pair") && !to2.contains_key("local"),
        "{to2:?}"
    );
    let from1 = peer(&mut net, 1, 2).namespaces;
    assert!(!from1.contains_key("pair"), "{from1:?}");
    assert!(peer(&mut net, 0, 1).namespaces["pair"].sent_bytes > 0);
    // A check compares what two nodes share: ok everywhere.
    let r = check(&mut net, 0);
    assert!(r.iter().all(|&c| c == CheckResult::Ok), "{r:?}");
}

#[test]
fn enabling_a_namespace_sends_what_was_written_while_it_was_local() {
    let mut net = mesh();
    let later = namespaced("later", "n");
    net.incr(0, &later, 3);
    net.incr(1, &later, 4);
    net.run(2_000);
    assert_eq!(net.counter(2, &later), 0, "local until enabled");
    assert_eq!(net.counter(0, &later), 3);
    let now = net.now;
    net.nodes[2].set_mirrored(now, "later", true).unwrap();
    net.run(5_000);
    for i in 0..3 {
        assert_eq!(net.counter(i, &later), 7, "at node {i}");
    }
    // Disabled again: new writes stay where they are made.
    let now = net.now;
    net.nodes[0].set_mirrored(now, "later", false).unwrap();
    net.run(2_000);
    net.incr(1, &later, 10);
    net.run(2_000);
    assert_eq!(net.counter(0, &later), 7);
    assert_eq!(net.counter(1, &later), 17);
}

#[test]
fn what_a_peer_sends_of_a_namespace_not_shared_is_refused_and_the_link_goes_on() {
    let mut net = mesh();
    let now = net.now;
    net.nodes[0].set_mirrored(now, "ns", true).unwrap();
    net.run(2_000);
    let name = namespaced("ns", "n");
    // Node 1 has not heard that node 0 stopped mirroring ns when it writes.
    net.cut(0, 1);
    net.cut(1, 2);
    let now = net.now;
    net.nodes[0].set_mirrored(now, "ns", false).unwrap();
    net.incr(1, &name, 9);
    net.run(500);
    net.heal(0, 1);
    net.run(3_000);
    assert_eq!(net.counter(0, &name), 0, "refused");
    let refused = peer(&mut net, 0, 1).namespaces["ns"];
    assert!(
        refused.refused_vars >= 1 && refused.refused_bytes > 0,
        "{refused:?}"
    );
    let reported = net.events.iter().any(|(at, e)| {
        *at == 0
            && matches!(e, Event::MirrorRefused { peer, namespace, first, .. }
                if *peer == id(1) && namespace == "ns" && *first == name)
    });
    assert!(reported, "a refusal is reported");
    // The link goes on: what follows is merged.
    net.incr(1, "after", 1);
    net.run(2_000);
    assert_eq!(net.counter(0, "after"), 1);
    assert!(peer(&mut net, 0, 1).stuck.is_none());
}

#[test]
fn an_owned_variable_does_not_move_to_a_node_its_namespace_is_not_mirrored_to() {
    let mut net = mesh();
    let name = namespaced("local", "n");
    net.incr(0, &name, 1);
    let now = net.now;
    net.nodes[0].force_owner(now, &name, id(0)).unwrap();
    net.run(1_000);
    let now = net.now;
    let e = net.nodes[0].force_owner(now, &name, id(1)).unwrap_err();
    assert!(e.to_string().contains("not mirrored"), "{e}");
    net.run(1_000);
    assert!(!has(&mut net, 1, &name));
}

/// A check from node `at`, run to its end: each peer's result.
fn check(net: &mut Net, at: usize) -> Vec<CheckResult> {
    net.check(at).nodes.iter().map(|n| n.result).collect()
}

#[test]
fn a_state_transfer_to_a_new_peer_carries_only_what_it_mirrors() {
    let config = atoll_core::ReplicaConfig {
        retransmit_ms: 50,
        state_for_new_peers_after: 1,
        ..Default::default()
    };
    let mut net = Net::with_config(2, KeyspaceConfig::default(), config);
    let now = net.now;
    net.nodes[0].set_mirrored(now, "shared", true).unwrap();
    // More local variables than a page of names, before and after the
    // shared ones in name order.
    for i in 0..600 {
        net.incr(0, &namespaced("edge", &format!("v{i:03}")), 1);
        net.incr(0, &namespaced("zone", &format!("v{i:03}")), 1);
    }
    net.incr(0, &namespaced("shared", "a"), 2);
    net.incr(0, "plain", 3);
    net.link(&[(0, 1)]);
    net.run(10_000);
    let transferred = net.events.iter().any(|(at, e)| {
        *at == 0 && matches!(e, Event::StateTransferStarted { peer, .. } if *peer == id(1))
    });
    assert!(
        transferred,
        "a new peer of a long log gets a state transfer"
    );
    assert_eq!(net.counter(1, &namespaced("shared", "a")), 2);
    assert_eq!(net.counter(1, "plain"), 3);
    let held = net.nodes[1].keyspace().variables().unwrap();
    assert!(
        held.iter()
            .all(|(n, _)| !n.contains("/edge/") && !n.contains("/zone/")),
        "{held:?}"
    );
    let sent = peer(&mut net, 0, 1).namespaces;
    assert!(
        !sent.contains_key("edge") && !sent.contains_key("zone"),
        "{sent:?}"
    );
}

#[test]
fn a_transfer_owed_for_mirroring_survives_a_restart() {
    let mut net = Net::new(2, KeyspaceConfig::default());
    net.full_mesh();
    net.run(1_000);
    // Written while local: node 1 acknowledges node 0's log past it.
    let name = namespaced("later", "n");
    net.incr(0, &name, 3);
    net.incr(0, "plain", 1);
    net.run(2_000);
    assert_eq!(net.counter(1, "plain"), 1);
    // Enabled while node 1 is away; node 0 restarts before it is back.
    net.cut(0, 1);
    let now = net.now;
    net.nodes[0].set_mirrored(now, "later", true).unwrap();
    net.run(500);
    // Checkpointed: node 1's record of node 0's log holds across the
    // restart, so nothing is sent again but what the record owes.
    net.nodes[0].keyspace().flush().unwrap();
    let disk = net.backup(0);
    net.reopen(0, disk, atoll_core::testkit::inc(7));
    net.heal(0, 1);
    net.run(10_000);
    assert_eq!(net.counter(1, &name), 3, "the owed transfer was sent");
    // Paid: a later restart sends no transfer again.
    let seen = net.events.len();
    let disk = net.backup(0);
    net.reopen(0, disk, atoll_core::testkit::inc(8));
    net.run(5_000);
    let again = net.events[seen..].iter().any(|(at, e)| {
        *at == 0
            && matches!(e, Event::StateTransferStarted { why, .. }
                if *why == atoll_core::TransferReason::Mirrored)
    });
    assert!(!again, "the record of the owed transfer is gone once paid");
}

#[test]
fn a_namespace_with_no_setting_here_yet_is_taken_from_a_peer() {
    use atoll_core::protocol::{Message, VarDelta};
    let mut net = mesh();
    net.incr(1, "c", 1);
    let counter = net.state(1, "c").unwrap();
    // Node 2's intervals, one variable each.
    let interval = |name: &str, from: u64| {
        Message::Deltas {
            from,
            to: from + 1,
            base: from,
            vars: vec![VarDelta {
                name: name.to_string(),
                kind: counter.kind(),
                delta: atoll_crdt::codec::encode(&counter),
            }],
            complete: false,
        }
        .encode()
    };
    // Node 0 has no setting for "fresh": the peer's must be newer.
    let fresh = namespaced("fresh", "n");
    let now = net.now;
    net.nodes[0]
        .handle_message(now, id(2), &interval(&fresh, 0))
        .unwrap();
    assert!(net.state(0, &fresh).is_some(), "taken");
    // Node 0's own setting keeps "kept" local: refused.
    net.nodes[0].set_mirrored(now, "kept", false).unwrap();
    let kept = namespaced("kept", "n");
    net.nodes[0]
        .handle_message(now, id(2), &interval(&kept, 1))
        .unwrap();
    assert!(net.state(0, &kept).is_none(), "refused");
}
