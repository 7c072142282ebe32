//! Bytes on the wire, measured on the deterministic in-process network
//! (`atoll_core::testkit`): exact and repeatable, no timing involved.
//!
//! 1. Bytes per counter increment at steady state: two replicas, one
//!    increments, every increment is shipped and acknowledged on its own.
//! 2. Delta sync against a state-based mode of the same code: 15 replicas in a
//!    partial mesh (a ring plus chords), each adding elements to one shared set
//!    over many rounds. The state-based mode ships each changed variable's whole
//!    state instead of the joined deltas.
//! 3. A new peer's catch-up on many small variables by state transfer, with
//!    one state chunk in flight (stop-and-wait, as before protocol 7) or up
//!    to `max_in_flight`: virtual time, 5 ms each way.
//!
//! Run: `cargo bench -p atoll-core --bench sync`

use atoll_core::testkit::Net;
use atoll_core::{KeyspaceConfig, ReplicaConfig};
use atoll_crdt::variable::State;

fn counter_bytes_per_increment() -> (f64, f64) {
    let mut net = Net::new(2, KeyspaceConfig::default());
    net.full_mesh();
    // Warm up, then measure.
    for _ in 0..100 {
        net.incr(0, "hits", 1);
        net.run(100);
    }
    let (bytes0, msgs0) = (net.bytes_delivered, net.delivered.values().sum::<u64>());
    let n = 1000;
    for _ in 0..n {
        net.incr(0, "hits", 1);
        net.run(100);
    }
    let bytes = (net.bytes_delivered - bytes0) as f64 / n as f64;
    let msgs = (net.delivered.values().sum::<u64>() - msgs0) as f64 / n as f64;
    assert_eq!(net.counter(1, "hits"), 1100);
    (bytes, msgs)
}

fn set_workload(state_based: bool, max_in_flight: usize) -> u64 {
    const N: usize = 15;
    const ROUNDS: usize = 40;
    let config = ReplicaConfig {
        state_based,
        max_in_flight,
        retransmit_ms: 50,
        ..ReplicaConfig::default()
    };
    let mut net = Net::with_config(N, KeyspaceConfig::default(), config);
    let pairs: Vec<(usize, usize)> = (0..N)
        .flat_map(|i| [(i, (i + 1) % N), (i, (i + 4) % N)])
        .collect();
    net.link(&pairs);
    for round in 0..ROUNDS {
        for i in 0..N {
            let member = format!("r{i}-e{round}").into_bytes();
            net.add(i, "members", member);
        }
        net.run(20);
    }
    net.run(60_000);
    net.assert_converged(&["members"]);
    match net.state(0, "members") {
        Some(State::Set(s)) => assert_eq!(s.len(), N * ROUNDS),
        other => panic!("{other:?}"),
    }
    net.bytes_delivered
}

/// Virtual ms until a new peer holds 50 000 counters, sent as state in
/// chunks of `max_batch_bytes`, `max_in_flight` of them unacknowledged;
/// and the chunks sent.
fn catch_up_on_small_variables(max_in_flight: usize) -> (u64, u64) {
    const VARS: i64 = 50_000;
    let config = ReplicaConfig {
        state_for_new_peers_after: 1,
        max_in_flight,
        ..ReplicaConfig::default()
    };
    let mut net = Net::with_config(2, KeyspaceConfig::default(), config);
    for v in 0..VARS {
        net.incr(0, &format!("counter-{v:06}"), v + 1);
    }
    net.full_mesh();
    let start = net.now;
    net.run(600_000);
    assert_eq!(net.counter(1, "counter-049999"), VARS as i128);
    assert_eq!(net.nodes[0].peers()[0].transfer, None, "over");
    let chunks = net.delivered.get(&(0, 1, "state")).copied().unwrap_or(0);
    (net.now - start, chunks)
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let (bytes, msgs) = counter_bytes_per_increment();
    println!("counter increment at steady state: {bytes:.1} bytes and {msgs:.2} messages on the wire per increment (delta + ack)\n");
    println!("set workload, 15 replicas, ring + chords, 600 adds:");
    println!("| intervals in flight | delta bytes | state-based bytes | delta / state |");
    println!("|--------------------:|------------:|------------------:|--------------:|");
    for window in [1, ReplicaConfig::default().max_in_flight] {
        let delta = set_workload(false, window);
        let state = set_workload(true, window);
        println!(
            "| {window:>19} | {delta:>11} | {state:>17} | {:>13.3} |",
            delta as f64 / state as f64
        );
    }
    println!("\ntarget: delta / state at most 0.05");
    let (one, chunks) = catch_up_on_small_variables(1);
    let window = ReplicaConfig::default().max_in_flight;
    let (many, chunks_many) = catch_up_on_small_variables(window);
    assert_eq!(chunks, chunks_many, "the same chunks");
    println!(
        "\na new peer's catch-up on 50 000 counters by state transfer ({chunks} chunks, 5 ms each way): \
         {one} ms with one chunk in flight, {many} ms with up to {window}"
    );
}
