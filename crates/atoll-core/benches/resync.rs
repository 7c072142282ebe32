//! Resync after a split, measured in bytes on the deterministic in-process
//! network (`atoll_core::testkit`): exact and repeatable, no timing.
//!
//! Two replicas hold N small variables (counters), then are split. One
//! changes 1 000 of them, and more than its log keeps (`log_retain` 100),
//! so that once the split heals the log no longer reaches back to what the
//! other holds. Counted: every payload byte both ways from the heal until
//! both hold the same, for N = 10 000, 100 000 and 1 000 000; by the index
//! of changes (only the variables changed since what the peer holds), and
//! by a full state transfer of every variable (`resync_max_changed` 0), in
//! the same run. "What changed" is the changed variables' names and
//! encoded states: what any resync must carry.
//!
//! Run: `cargo bench -p atoll-core --bench resync` (add `-- --quick` for
//! N up to 100 000 only).

use atoll_core::testkit::Net;
use atoll_core::{KeyspaceConfig, ReplicaConfig};
use atoll_crdt::codec;

const CHANGED: usize = 1_000;

struct Resync {
    bytes: u64,
    messages: u64,
    changed_bytes: u64,
}

fn name(v: usize) -> String {
    format!("v{v:07}")
}

fn resync(vars: usize, by_changes: bool) -> Resync {
    let ks = KeyspaceConfig {
        log_retain: 100,
        checkpoint_every: 100,
        ..KeyspaceConfig::default()
    };
    let config = ReplicaConfig {
        // The first sync is a state transfer too, whatever the mode.
        state_for_new_peers_after: 1,
        resync_max_changed: if by_changes { 100_000 } else { 0 },
        ..ReplicaConfig::default()
    };
    let mut net = Net::with_config(2, ks, config);
    for v in 0..vars {
        net.incr(0, &name(v), 1);
    }
    net.full_mesh();
    net.run(3_600_000);
    assert_eq!(net.counter(1, &name(vars - 1)), 1, "first sync");
    net.cut(0, 1);
    // Spread over the names, each changed once.
    let step = vars / CHANGED;
    let changed: Vec<String> = (0..CHANGED).map(|i| name(i * step)).collect();
    for n in &changed {
        net.incr(0, n, 1);
    }
    net.run(1_000);
    let first = net.nodes[0]
        .keyspace()
        .storage()
        .first_seq()
        .expect("readable");
    let held = net.nodes[0].peers()[0].acked;
    assert!(
        first.is_some_and(|f| held + 1 < f),
        "the log no longer reaches back"
    );
    let changed_bytes = changed
        .iter()
        .map(|n| {
            let state = net.state(0, n).expect("exists");
            (n.len() + codec::encode(&state).len()) as u64
        })
        .sum();
    let (bytes0, msgs0) = (net.bytes_delivered, net.delivered.values().sum::<u64>());
    net.heal(0, 1);
    net.run(3_600_000);
    for n in &changed {
        assert_eq!(net.counter(1, n), 2, "{n} resynced");
    }
    Resync {
        bytes: net.bytes_delivered - bytes0,
        messages: net.delivered.values().sum::<u64>() - msgs0,
        changed_bytes,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let sizes: &[usize] = if quick {
        &[10_000, 100_000]
    } else {
        &[10_000, 100_000, 1_000_000]
    };
    println!("resync after a split in which {CHANGED} small variables changed:");
    println!(
        "| variables | what changed (bytes) | by changes: bytes | messages | / changed | full transfer: bytes | messages | / changed |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &vars in sizes {
        let by = resync(vars, true);
        let full = resync(vars, false);
        println!(
            "| {vars} | {} | {} | {} | **{:.2}** | {} | {} | {:.1} |",
            by.changed_bytes,
            by.bytes,
            by.messages,
            by.bytes as f64 / by.changed_bytes as f64,
            full.bytes,
            full.messages,
            full.bytes as f64 / full.changed_bytes as f64,
        );
    }
    println!("\ntarget: by changes at most 2x what changed, flat in the number of variables");
}
