//! The middle tier of resync: a peer the log no longer reaches back to is
//! sent only the variables changed since what it holds, when the index of
//! changes reaches back that far; otherwise every variable.

use atoll_core::testkit::{id, inc, Net};
use atoll_core::{Event, KeyspaceConfig, ReplicaConfig};
use atoll_crdt::ReplicaId;

const VARS: usize = 300;
const CHANGED: usize = 7;

fn config() -> KeyspaceConfig {
    KeyspaceConfig {
        checkpoint_every: 16,
        log_retain: 32,
        ..KeyspaceConfig::default()
    }
}

/// Two replicas holding `VARS` counters, then split: node 0 changes the
/// first `CHANGED` of them (and node 1 another one of its own) until its
/// log no longer reaches back to what node 1 holds.
fn split_past_the_log(ks: KeyspaceConfig, replica: ReplicaConfig) -> Net {
    let mut net = Net::with_config(2, ks, replica);
    net.full_mesh();
    for v in 0..VARS {
        net.incr(0, &format!("c{v:04}"), 1);
    }
    net.run(5_000);
    net.assert_converged(&["c0000", "c0299"]);
    net.cut(0, 1);
    for round in 0..20 {
        for v in 0..CHANGED {
            net.incr(0, &format!("c{v:04}"), round + 1);
        }
    }
    net.incr(1, "c0100", 5);
    net.run(1_000);
    let first = net.nodes[0].keyspace().storage().first_seq().unwrap();
    let acked = net.nodes[0].peers()[0].acked;
    assert!(
        first.is_some_and(|f| acked + 1 < f),
        "node 1 holds through {acked}, the log starts at {first:?}"
    );
    net
}

fn names() -> Vec<String> {
    (0..VARS).map(|v| format!("c{v:04}")).collect()
}

/// The transfer node 0 started to node 1: how many variables it sent, if
/// only the changed ones.
fn transfers(net: &Net) -> Vec<Option<u64>> {
    net.events
        .iter()
        .filter_map(|(i, e)| match e {
            Event::StateTransferStarted { peer, changed, .. } if *i == 0 && *peer == id(1) => {
                Some(*changed)
            }
            _ => None,
        })
        .collect()
}

/// Heals the split and runs until converged; the bytes it took, and the
/// transfers node 0 started to node 1 meanwhile.
fn heal_and_converge(net: &mut Net) -> (u64, Vec<Option<u64>>) {
    let before = net.bytes_delivered;
    let earlier = transfers(net).len();
    net.heal(0, 1);
    net.run(10_000);
    let names = names();
    let names: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    net.assert_converged(&names);
    assert_eq!(net.counter(1, "c0000"), 1 + (1..=20).sum::<i128>());
    assert_eq!(net.counter(0, "c0100"), 6, "node 1's own change came back");
    (
        net.bytes_delivered - before,
        transfers(net)[earlier..].to_vec(),
    )
}

#[test]
fn a_peer_behind_the_log_is_sent_only_the_variables_changed_since_what_it_holds() {
    let mut net = split_past_the_log(config(), ReplicaConfig::default());
    let (bytes, sent) = heal_and_converge(&mut net);
    // The changed ones, and those changed in the checkpoint interval that
    // ended just before the split (the index records a variable at the
    // checkpoint after its change): far fewer than all of them.
    assert_eq!(sent.len(), 1, "{sent:?}");
    let n = sent[0].expect("only what changed");
    assert!(
        (CHANGED as u64..=CHANGED as u64 + 16).contains(&n),
        "{n} variables sent"
    );

    // The same split, the index not reaching back: every variable.
    let short = KeyspaceConfig {
        changes_retain: 10,
        ..config()
    };
    let mut full = split_past_the_log(short, ReplicaConfig::default());
    let (full_bytes, sent) = heal_and_converge(&mut full);
    assert_eq!(sent, [None]);
    assert!(
        bytes * 5 < full_bytes,
        "{bytes} bytes to resync what changed, {full_bytes} for a full transfer"
    );
}

#[test]
fn more_changes_than_resync_max_changed_send_every_variable() {
    let replica = ReplicaConfig {
        resync_max_changed: CHANGED - 1,
        retransmit_ms: 50,
        ..ReplicaConfig::default()
    };
    let mut net = split_past_the_log(config(), replica);
    let (_, sent) = heal_and_converge(&mut net);
    assert_eq!(sent, [None]);
}

#[test]
fn the_index_of_changes_survives_a_restart_of_the_sender() {
    let mut net = split_past_the_log(config(), ReplicaConfig::default());
    net.nodes[0].keyspace().flush().unwrap();
    let disk = net.backup(0);
    net.reopen(0, disk, ReplicaId(inc(0).0 + 1_000));
    // Cut before the Hellos crossed: back, node 0 waits for node 1's
    // Hello again rather than take it to hold nothing.
    net.cut(0, 1);
    // More changes after the restart: those to variables loaded from disk
    // leave their earlier entry in the index, which only sends them once
    // more.
    net.incr(0, "c0003", 1);
    net.incr(0, "c0200", 1);
    net.nodes[0].keyspace().checkpoint().unwrap();
    let before = transfers(&net).len();
    net.heal(0, 1);
    net.run(10_000);
    let sent = &transfers(&net)[before..];
    assert_eq!(sent.len(), 1, "{sent:?}");
    let n = sent[0].expect("only what changed");
    assert!(
        (CHANGED as u64 + 1..=CHANGED as u64 + 17).contains(&n),
        "{n}"
    );
    let names = names();
    let names: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    net.assert_converged(&names);
    assert_eq!(net.counter(1, "c0200"), 2);
    assert_eq!(net.counter(1, "c0003"), 1 + (1..=20).sum::<i128>() + 1);
}

/// Two replicas holding 10 counters, checkpointed, then split; node 0
/// then adds 5 to `c0001` (the entry right after what node 1 holds) and
/// checkpoints at it, so that the index records `c0001` at exactly
/// `held + 1`. Checkpoints only when asked; a log of 8 entries; an index
/// that reaches back `changes_retain`. Returns the network and `held`.
fn split_after_one_change(changes_retain: u64) -> (Net, u64) {
    let ks = KeyspaceConfig {
        checkpoint_every: 1_000,
        log_retain: 8,
        changes_retain,
        ..KeyspaceConfig::default()
    };
    let mut net = Net::new(2, ks);
    net.full_mesh();
    for v in 0..10 {
        net.incr(0, &format!("c{v:04}"), 1);
    }
    net.run(1_000);
    net.nodes[0].keyspace().checkpoint().unwrap();
    let held = net.nodes[0].peers()[0].acked;
    net.cut(0, 1);
    net.incr(0, "c0001", 5);
    net.nodes[0].keyspace().checkpoint().unwrap();
    (net, held)
}

#[test]
fn a_variable_recorded_at_the_checkpoint_just_after_what_the_peer_holds_is_sent() {
    let (mut net, held) = split_after_one_change(KeyspaceConfig::default().changes_retain);
    assert_eq!(net.nodes[0].keyspace().last_seq(), held + 1);
    for _ in 0..20 {
        net.incr(0, "c0002", 1);
    }
    net.nodes[0].keyspace().checkpoint().unwrap();
    let first = net.nodes[0].keyspace().storage().first_seq().unwrap();
    assert!(first.is_some_and(|f| f > held + 1), "{first:?}");
    net.heal(0, 1);
    net.run(5_000);
    assert_eq!(transfers(&net).last(), Some(&Some(2)), "c0001 and c0002");
    assert_eq!(net.counter(1, "c0001"), 6);
    assert_eq!(net.counter(1, "c0002"), 21);
}

#[test]
fn an_index_that_forgot_what_the_peer_lacks_sends_every_variable() {
    let (mut net, held) = split_after_one_change(10);
    for _ in 0..30 {
        net.incr(0, "c0002", 1);
    }
    // The index forgets what is more than 10 entries old, c0001's entry too.
    net.nodes[0].keyspace().checkpoint().unwrap();
    let from = net.nodes[0].keyspace().storage().changes_from();
    assert!(
        from > held,
        "the index starts after {from}, node 1 holds {held}"
    );
    net.heal(0, 1);
    net.run(5_000);
    assert_eq!(transfers(&net).last(), Some(&None), "every variable");
    assert_eq!(net.counter(1, "c0001"), 6);
    assert_eq!(net.counter(1, "c0002"), 31);
}
