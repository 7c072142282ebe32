//! The atoll demo: three islands split, keep writing, heal and converge.
//!
//! Three nodes run in this process, each with its own sled database and its own
//! certificate from a fresh cluster CA, talking QUIC with mutual TLS over
//! 127.0.0.1. One node is cut off the network; both sides keep writing
//! counters, a set, a register and a bag; the split heals; every node prints
//! the same converged state and how long converging took.
//!
//! Run: `cargo run --release --example quickstart`

use atoll::certs;
use atoll::{Node, NodeConfig, Result, TransportConfig};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn snapshot(n: &Node) -> Result<BTreeMap<&'static str, String>> {
    let mut bag: Vec<String> = n
        .bag::<String>("tickets")?
        .elements()?
        .into_iter()
        .map(|e| e.value)
        .collect();
    bag.sort();
    let mut visitors = n.set::<String>("visitors")?.members()?;
    visitors.sort();
    Ok(BTreeMap::from([
        ("hits (counter)", n.counter("hits")?.value()?.to_string()),
        ("visitors (set)", format!("{visitors:?}")),
        (
            "motd (register)",
            format!("{:?}", n.register::<String>("motd")?.get()?),
        ),
        ("tickets (bag)", format!("{bag:?}")),
    ]))
}

fn wait(what: &str, mut cond: impl FnMut() -> Result<bool>) -> Result<Duration> {
    let start = Instant::now();
    while !cond()? {
        if start.elapsed() > Duration::from_secs(30) {
            panic!("timed out waiting until {what}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(start.elapsed())
}

fn main() -> Result<()> {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = |what: &str, i: usize| root.path().join(format!("{what}-{i}"));
    certs::new_cluster(&dir("certs", 0)).expect("cluster CA");
    for i in 1..3 {
        certs::join(&dir("certs", 0), &dir("certs", i)).expect("node certificate");
    }
    let names = ["lagoon", "reef", "islet"];
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..3 {
        let mut config = NodeConfig::new(
            dir("data", i),
            dir("certs", i),
            "127.0.0.1:0".parse().unwrap(),
        );
        config.peers = nodes.iter().map(|n| n.local_addr()).collect();
        let mut transport = TransportConfig::new(config.listen, 0, 0);
        transport.reconnect_max = Duration::from_millis(200);
        config.transport = Some(transport);
        config.replica.retransmit_ms = 200;
        nodes.push(Node::start(config)?);
    }
    for (n, node) in names.iter().zip(&nodes) {
        println!(
            "{n:>6}: node {} on {}",
            node.replica_id(),
            node.local_addr()
        );
    }
    let connected =
        |n: &Node, k: usize| n.status().peers.iter().filter(|(p, _)| p.connected).count() == k;
    wait("the mesh is up", || {
        Ok(nodes.iter().all(|n| connected(n, 2)))
    })?;

    println!("\n== connected: everyone writes");
    for (i, n) in nodes.iter().enumerate() {
        n.counter("hits")?.incr(10)?;
        n.set::<String>("visitors")?
            .add(&format!("{}-first", names[i]))?;
        n.bag::<String>("tickets")?
            .insert(&format!("ticket-{}", names[i]))?;
    }
    nodes[0]
        .register::<String>("motd")?
        .set(&"welcome".to_string())?;
    wait("everyone has everything", || {
        let s = snapshot(&nodes[0])?;
        Ok(s.get("hits (counter)").map(String::as_str) == Some("30")
            && nodes.iter().all(|n| snapshot(n).is_ok_and(|x| x == s)))
    })?;

    println!("== split: islet is cut off the network; both sides keep writing");
    nodes[2].set_partitioned(true);
    wait("the split is seen", || {
        Ok(connected(&nodes[0], 1) && connected(&nodes[2], 0))
    })?;
    nodes[0].counter("hits")?.incr(5)?;
    nodes[1].counter("hits")?.decr(2)?;
    nodes[2].counter("hits")?.incr(100)?;
    nodes[0]
        .set::<String>("visitors")?
        .remove(&"islet-first".to_string())?;
    nodes[2]
        .set::<String>("visitors")?
        .add(&"islet-first".to_string())?; // re-add: add wins
    nodes[2]
        .set::<String>("visitors")?
        .add(&"islet-alone".to_string())?;
    nodes[1]
        .register::<String>("motd")?
        .set(&"reef says hi".to_string())?;
    nodes[2]
        .register::<String>("motd")?
        .set(&"islet was here".to_string())?;
    let t0 = nodes[0].bag::<String>("tickets")?.take()?;
    let t2 = nodes[2].bag::<String>("tickets")?.take()?;
    nodes[2]
        .bag::<String>("tickets")?
        .insert(&"ticket-islet-2".to_string())?;
    println!("   lagoon took {t0:?}, islet took {t2:?} (each only what it owns)");
    wait("lagoon and reef agree", || {
        Ok(snapshot(&nodes[0])? == snapshot(&nodes[1])?)
    })?;
    for (n, node) in names.iter().zip(&nodes) {
        println!("   {n:>6} sees hits = {}", node.counter("hits")?.value()?);
    }

    println!("== heal");
    nodes[2].set_partitioned(false);
    let took = wait("the islands converge", || {
        let s = snapshot(&nodes[0])?;
        Ok(nodes[1..].iter().all(|n| snapshot(n).is_ok_and(|x| x == s)))
    })?;

    for (n, node) in names.iter().zip(&nodes) {
        println!("\n{n}:");
        for (k, v) in snapshot(node)? {
            println!("  {k:<16} {v}");
        }
    }
    println!(
        "\nconverged: all three identical, {:.1} ms after the split healed (QUIC + mutual TLS on 127.0.0.1)",
        took.as_secs_f64() * 1e3
    );
    for n in nodes {
        n.shutdown()?;
    }
    Ok(())
}
