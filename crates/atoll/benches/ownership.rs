//! Owned variables: what a strong operation costs, against baselines in the
//! same run.
//!
//! - At the owner: a compare-and-set of an owned register against the same
//!   node's ownerless register write, and a decrement-if of an owned counter
//!   against an ownerless increment; one embedded store, one caller, writes
//!   alternated in rounds. Buffered (the CPU path) and durable (each write
//!   flushed and synced). Target: at most 1.2 times the ownerless write.
//! - Forwarded: a compare-and-set made at node B on a register node A owns,
//!   two nodes on 127.0.0.1 over QUIC with mutual TLS, one at a time, against
//!   one raw quinn request/response round trip (64 bytes each way on one
//!   bidirectional stream, the same TLS identities); p50 and p99. Target: at
//!   most 2 times. The nodes write buffered, so that the owner's disk is not
//!   what is measured; durable figures follow for reference.
//!
//! Run: `cargo bench -p atoll --bench ownership`

mod common;

use atoll::{Config, Durability, Node, NodeConfig, Store};
use atoll_net::certs;
use std::path::Path;
use std::time::{Duration, Instant};

const BUFFERED: Durability = Durability::Buffered {
    flush_every_ms: 100,
};

/// Rounds of each operation, alternated; the medians are compared.
const ROUNDS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Nanoseconds per call of `f`, over `n` calls.
fn per_op(n: usize, mut f: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn at_owner(root: &Path, durability: Durability, n: usize) {
    let tag = match durability {
        Durability::Durable => "durable",
        Durability::Buffered { .. } => "buffered",
    };
    let store =
        Store::open_with(Config::new(root.join(format!("owner-{tag}"))).durability(durability))
            .unwrap();
    store.own("owned-reg").unwrap();
    store.own("owned-stock").unwrap();
    let free = store.register::<u64>("free-reg").unwrap();
    let owned = store.register::<u64>("owned-reg").unwrap();
    let hits = store.counter("free-hits").unwrap();
    let stock = store.counter("owned-stock").unwrap();
    stock.incr(i64::MAX / 2).unwrap();
    let (mut set, mut cas, mut incr, mut decr) = (vec![], vec![], vec![], vec![]);
    let mut last: Option<u64> = None;
    let mut next = 0u64;
    for _ in 0..ROUNDS {
        set.push(per_op(n, |i| free.set(&(i as u64)).unwrap()));
        cas.push(per_op(n, |_| {
            next += 1;
            assert!(owned.compare_and_set(last.as_ref(), &next).unwrap());
            last = Some(next);
        }));
        incr.push(per_op(n, |_| {
            hits.incr(1).unwrap();
        }));
        decr.push(per_op(n, |_| {
            assert!(stock.decrement_if(1, 0).unwrap().0);
        }));
    }
    let (set, cas, incr, decr) = (median(set), median(cas), median(incr), median(decr));
    println!(
        "{tag:>8} | register: ownerless set {:>8.1} µs, owned compare-and-set {:>8.1} µs, ratio {:.2} | counter: ownerless incr {:>8.1} µs, owned decrement-if {:>8.1} µs, ratio {:.2}",
        set / 1e3,
        cas / 1e3,
        cas / set,
        incr / 1e3,
        decr / 1e3,
        decr / incr
    );
}

fn pair(root: &Path, tag: &str, durability: Durability) -> (Node, Node) {
    let ca = root.join(format!("{tag}-certs-a"));
    certs::new_cluster(&ca).unwrap();
    certs::join(&ca, &root.join(format!("{tag}-certs-b"))).unwrap();
    let start = |who: &str, peers: Vec<std::net::SocketAddr>| {
        let data = root.join(format!("{tag}-data-{who}"));
        let mut c = NodeConfig::new(
            data.clone(),
            root.join(format!("{tag}-certs-{who}")),
            "127.0.0.1:0".parse().unwrap(),
        );
        c.store = Config::new(data).durability(durability);
        c.peers = peers;
        c.http = None;
        // The register stays at A, however much B uses it.
        c.replica.migration.min_ops = 0;
        Node::start(c).unwrap()
    };
    let a = start("a", vec![]);
    let b = start("b", vec![a.local_addr()]);
    let t = Instant::now();
    while a.fenced() || b.fenced() || !a.status().peers.iter().any(|(p, _)| p.connected) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "nodes did not connect"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    (a, b)
}

/// Latencies (sorted) of `n` compare-and-sets made at B on a register A
/// owns.
fn forwarded(root: &Path, tag: &str, durability: Durability, n: usize) -> Vec<Duration> {
    let (a, b) = pair(root, tag, durability);
    a.own("lock").unwrap();
    let t = Instant::now();
    while b.owner("lock").unwrap().owner() != Some(a.replica_id()) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "B never heard of the owner"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let reg = b.register::<u64>("lock").unwrap();
    let mut last = None;
    let mut lat = Vec::with_capacity(n);
    for i in 0..n as u64 + 100 {
        let start = Instant::now();
        assert!(reg.compare_and_set(last.as_ref(), &i).unwrap());
        // The first 100 warm the connection up.
        if i >= 100 {
            lat.push(start.elapsed());
        }
        last = Some(i);
    }
    lat.sort();
    drop((a, b));
    lat
}

/// Latencies (sorted) of `n` raw quinn round trips: 64 bytes each way on
/// one bidirectional stream, between two endpoints with the cluster's TLS.
fn raw_round_trips(certs_a: &Path, certs_b: &Path, n: usize) -> Vec<Duration> {
    common::runtime().block_on(async {
        let (server, client, addr) = common::raw_endpoints(certs_a, certs_b);
        let echo = tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let mut buf = [0u8; 64];
            while recv.read_exact(&mut buf).await.is_ok() {
                send.write_all(&buf).await.unwrap();
            }
        });
        let conn = client
            .connect(addr, certs::NODE_NAME)
            .unwrap()
            .await
            .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let mut buf = [7u8; 64];
        let mut lat = Vec::with_capacity(n);
        for i in 0..n + 100 {
            let start = Instant::now();
            send.write_all(&buf).await.unwrap();
            recv.read_exact(&mut buf).await.unwrap();
            if i >= 100 {
                lat.push(start.elapsed());
            }
        }
        send.finish().unwrap();
        drop(conn);
        echo.abort();
        lat.sort();
        lat
    })
}

fn pct(lat: &[Duration], p: usize) -> f64 {
    lat[(lat.len() * p / 100).min(lat.len() - 1)].as_secs_f64() * 1e3
}

fn main() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    println!("a strong operation at the owner against the same node's ownerless write (medians of {ROUNDS} alternated rounds; target: ratio at most 1.2)");
    at_owner(root, BUFFERED, 20_000);
    at_owner(root, Durability::Durable, 1_000);

    const N: usize = 2_000;
    println!("\na compare-and-set forwarded from node B to the owner A, against one raw quinn round trip (64 bytes each way), {N} each, one at a time, 127.0.0.1; target: at most 2x at p50 and p99");
    let mut rows = Vec::new();
    for (tag, durability) in [("buffered", BUFFERED), ("durable", Durability::Durable)] {
        let atoll = forwarded(root, tag, durability, N);
        let raw = raw_round_trips(
            &root.join(format!("{tag}-certs-a")),
            &root.join(format!("{tag}-certs-b")),
            N,
        );
        rows.push((tag, atoll, raw));
    }
    println!("| nodes write | forwarded p50 | p99 | raw quinn p50 | p99 | ratio p50 | ratio p99 |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (tag, atoll, raw) in rows {
        println!(
            "| {tag} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.2} | {:.2} |",
            pct(&atoll, 50),
            pct(&atoll, 99),
            pct(&raw, 50),
            pct(&raw, 99),
            pct(&atoll, 50) / pct(&raw, 50),
            pct(&atoll, 99) / pct(&raw, 99),
        );
    }
}
