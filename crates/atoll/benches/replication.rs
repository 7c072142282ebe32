//! Replication between two nodes on loopback, against a raw quinn stream
//! carrying the same bytes, in the same run.
//!
//! - Throughput: node A adds N distinct members to a set; then node B starts,
//!   empty, and the clock runs until B holds all N. Ops/s applied at B (this
//!   includes B's start and handshake). The baseline sends the same number of payload bytes,
//!   in frames of the same average size, over one raw quinn stream with the
//!   same mutual-TLS configuration, and stops when the receiver has read them all.
//!   Both are run `RUNS` times, interleaved (a new empty B each time, then raw
//!   quinn with that run's bytes, so that both see the machine alike); the
//!   ratio is of the medians, since a single run of either can be off by
//!   several times here. The process's CPU time (all threads) from B's
//!   connection until it holds all is reported too, against raw quinn's.
//! - A floor, in the same run: raw quinn again, its receiver also writing
//!   the bytes into raw sled (each frame as it arrives, or all at the end;
//!   the faster counts). No store that keeps what it receives in sled can
//!   beat it; the bench prints what the 0.5 target leaves per element
//!   beyond it, and what atoll takes.
//! - Latency: a durable write at A until B's change feed reports it; p50, p99.
//!
//! Run: `cargo bench -p atoll --bench replication`

mod common;

use atoll::{Config, Durability, Node, NodeConfig};
use atoll_net::certs;
use std::path::Path;
use std::time::{Duration, Instant};

const N: usize = 20_000;
/// Catch-ups (each followed by a raw quinn transfer of its bytes) measured;
/// medians are reported.
const RUNS: usize = 9;

/// One catch-up of a new, empty B.
struct Run {
    started: Duration,
    connected: Duration,
    held: Duration,
    bytes: usize,
    msgs: usize,
    /// CPU time of the whole process from B's connection until it held all.
    cpu: Option<Duration>,
    /// Raw quinn carrying the same bytes in frames of the same average size,
    /// right after: its time, and its CPU time.
    raw: Timed,
    /// Floors: raw quinn again, its receiver writing what it receives into
    /// raw sled (see [`raw_quinn`]), each frame as it arrives, or all of it
    /// in one value at the end.
    floor_frames: Timed,
    floor_whole: Timed,
}

/// A baseline transfer's time, and the process's CPU time meanwhile.
#[derive(Clone, Copy)]
struct Timed {
    took: Duration,
    cpu: Option<Duration>,
}

/// CPU time used so far by every thread of this process (Linux: the sum of
/// `/proc/self/task/*/schedstat`, in nanoseconds); `None` elsewhere.
fn cpu_time() -> Option<Duration> {
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path().join("schedstat");
        // A thread may end between the listing and the read.
        if let Ok(text) = std::fs::read_to_string(path) {
            ns += text.split(' ').next()?.parse::<u64>().ok()?;
        }
    }
    Some(Duration::from_nanos(ns))
}

fn pair(root: &Path, tag: &str, durability: Durability) -> (Node, Node) {
    let ca = root.join(format!("{tag}-certs-a"));
    certs::new_cluster(&ca).unwrap();
    certs::join(&ca, &root.join(format!("{tag}-certs-b"))).unwrap();
    let start = |who: &str, peers: Vec<std::net::SocketAddr>| {
        let mut c = NodeConfig::new(
            root.join(format!("{tag}-data-{who}")),
            root.join(format!("{tag}-certs-{who}")),
            "127.0.0.1:0".parse().unwrap(),
        );
        c.store = Config::new(root.join(format!("{tag}-data-{who}"))).durability(durability);
        c.peers = peers;
        c.http = None;
        Node::start(c).unwrap()
    };
    let a = start("a", vec![]);
    let b = start("b", vec![a.local_addr()]);
    let t = Instant::now();
    while !a.status().peers.iter().any(|(p, _)| p.connected) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "nodes did not connect"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    (a, b)
}

/// Sends `total` bytes in frames of `frame` bytes over one raw quinn stream
/// with the cluster's mutual TLS; returns the time until the receiver read
/// all, and the process's CPU time meanwhile.
///
/// With `sink` (a directory and a value size), the receiver also writes
/// what it receives into a raw sled database opened there (before the clock
/// starts): each `value` bytes are inserted as soon as they have arrived,
/// under a key of their own, the rest at the end, and nothing is flushed.
/// That is the least a store that keeps what it receives in sled must add
/// to the transfer: a floor, kinder than what a store must really do
/// (nothing is decoded, validated or indexed).
fn raw_quinn(
    certs_a: &Path,
    certs_b: &Path,
    total: usize,
    frame: usize,
    sink: Option<(&Path, usize)>,
) -> Timed {
    let value = sink.map_or(frame, |(_, value)| value);
    let db = sink.map(|(dir, _)| {
        sled::Config::new()
            .path(dir)
            .flush_every_ms(None)
            .open()
            .unwrap()
    });
    common::runtime().block_on(async {
        let (server, client, addr) = common::raw_endpoints(certs_a, certs_b);
        let receiver = tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            let (_send, mut recv) = conn.accept_bi().await.unwrap();
            let mut got = 0usize;
            let mut buf = vec![0u8; 64 << 10];
            // What arrived of the value being built, when writing (a frame,
            // or everything).
            let mut pending: Vec<u8> = Vec::with_capacity(value.min(total));
            let mut frames = 0u64;
            while got < total {
                match recv.read(&mut buf).await.unwrap() {
                    Some(n) => {
                        got += n;
                        let Some(db) = &db else { continue };
                        let mut rest = &buf[..n];
                        while !rest.is_empty() {
                            let take = rest.len().min(value - pending.len());
                            pending.extend_from_slice(&rest[..take]);
                            rest = &rest[take..];
                            if pending.len() == value || got == total && rest.is_empty() {
                                db.insert(frames.to_be_bytes(), &pending[..]).unwrap();
                                frames += 1;
                                pending.clear();
                            }
                        }
                    }
                    None => break,
                }
            }
            // The database is closed after the clock stops (closing flushes).
            (got, db)
        });
        let conn = client
            .connect(addr, certs::NODE_NAME)
            .unwrap()
            .await
            .unwrap();
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        let payload = vec![7u8; frame];
        let cpu = cpu_time();
        let start = Instant::now();
        let mut sent = 0;
        while sent < total {
            let n = frame.min(total - sent);
            send.write_all(&payload[..n]).await.unwrap();
            sent += n;
        }
        let (got, db) = receiver.await.unwrap();
        let took = start.elapsed();
        let cpu = cpu_time().zip(cpu).map(|(end, start)| end - start);
        assert_eq!(got, total);
        drop(db);
        Timed { took, cpu }
    })
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let root = tempfile::tempdir().unwrap();

    // Throughput: A writes everything alone; then B starts (empty) and the
    // clock runs until B holds it all. That is replication plus B's start and
    // handshake, not A's write path.
    let ca = root.path().join("t-certs-a");
    certs::new_cluster(&ca).unwrap();
    certs::join(&ca, &root.path().join("t-certs-b")).unwrap();
    let node = |data: &str, certs: &str, peers: Vec<std::net::SocketAddr>| {
        let mut c = NodeConfig::new(
            root.path().join(format!("t-data-{data}")),
            root.path().join(format!("t-certs-{certs}")),
            "127.0.0.1:0".parse().unwrap(),
        );
        c.store = Config::new(root.path().join(format!("t-data-{data}"))).durability(
            Durability::Buffered {
                flush_every_ms: 100,
            },
        );
        c.peers = peers;
        c.http = None;
        Node::start(c).unwrap()
    };
    let a = node("a", "a", vec![]);
    let set = a.set::<String>("members").unwrap();
    let start = Instant::now();
    for i in 0..N {
        set.add(&format!("member-{i:06}")).unwrap();
    }
    let written = start.elapsed();
    a.flush().unwrap();
    // Each run starts a new, empty B (its own data directory, so its own id).
    let mut runs = Vec::new();
    // For profiling: `ATOLL_BENCH_RUNS=50` runs more catch-ups,
    // `ATOLL_BENCH_ONLY=catchup` runs only them (no raw quinn, no latency),
    // and `ATOLL_BENCH_WINDOWS=1` prints each catch-up's window.
    let only_catchup = std::env::var("ATOLL_BENCH_ONLY").is_ok_and(|v| v == "catchup");
    let count = std::env::var("ATOLL_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RUNS);
    for run in 0..count {
        let start = Instant::now();
        let b = node(&format!("b{run}"), "b", vec![a.local_addr()]);
        let started = start.elapsed();
        let seen = b.set::<String>("members").unwrap();
        let mut connected = None;
        let mut cpu_connected = None;
        while seen.len().unwrap() < N {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "B did not catch up"
            );
            if connected.is_none() && b.status().peers.iter().any(|(p, _)| p.connected) {
                connected = Some(start.elapsed());
                cpu_connected = cpu_time();
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let held = start.elapsed();
        if std::env::var("ATOLL_BENCH_WINDOWS").is_ok() {
            // For `perf record -k mono`: the window on the monotonic clock
            // (Linux prints an `Instant` as its `timespec`).
            eprintln!(
                "window {:?} {:?}",
                start + connected.unwrap_or(held),
                start + held
            );
        }
        let cpu = cpu_time()
            .zip(cpu_connected)
            .map(|(end, start)| end - start);
        let stats = a
            .status()
            .peers
            .iter()
            .find(|(p, _)| p.id == b.replica_id())
            .map(|(p, _)| p.stats)
            .expect("A knows B");
        drop((seen, b));
        let (bytes, msgs) = (stats.bytes_sent as usize, stats.messages_sent as usize);
        // Right after, so that both see the machine in the same state.
        let frame = (bytes / msgs.max(1)).max(1);
        let baseline = |sink: Option<(&Path, usize)>| {
            if only_catchup {
                Timed {
                    took: Duration::ZERO,
                    cpu: None,
                }
            } else {
                raw_quinn(
                    &root.path().join("t-certs-a"),
                    &root.path().join("t-certs-b"),
                    bytes,
                    frame,
                    sink,
                )
            }
        };
        let raw = baseline(None);
        let floor_frames = baseline(Some((&root.path().join(format!("floor-{run}-f")), frame)));
        let floor_whole = baseline(Some((
            &root.path().join(format!("floor-{run}-w")),
            usize::MAX,
        )));
        runs.push(Run {
            started,
            connected: connected.unwrap_or(held),
            held,
            bytes,
            msgs,
            cpu,
            raw,
            floor_frames,
            floor_whole,
        });
    }
    drop(a);
    let ops = |d: Duration| N as f64 / d.as_secs_f64();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let cpu_ms = |d: Option<Duration>| d.map_or("?".to_string(), |d| format!("{:.1}", ms(d)));
    println!(
        "replication throughput, {N} set adds, two nodes on 127.0.0.1 (A wrote them at {:.0} ops/s, buffered, before any B started); {} runs, each with a new empty B, each followed by raw quinn carrying its bytes in frames of its average size\n",
        ops(written),
        runs.len()
    );
    for r in &runs {
        println!(
            "B: started in {:.1} ms, connected at {:.1} ms, held all {N} at {:.1} ms ({:.1} ms after connecting, {} ms of CPU; {} bytes in {} messages); raw quinn {:.2} ms, {} ms of CPU; raw quinn + raw sled {:.2} ms ({} ms of CPU) by frames, {:.2} ms ({} ms of CPU) whole",
            ms(r.started),
            ms(r.connected),
            ms(r.held),
            ms(r.held - r.connected),
            cpu_ms(r.cpu),
            r.bytes,
            r.msgs,
            ms(r.raw.took),
            cpu_ms(r.raw.cpu),
            ms(r.floor_frames.took),
            cpu_ms(r.floor_frames.cpu),
            ms(r.floor_whole.took),
            cpu_ms(r.floor_whole.cpu),
        );
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let from_start = median(runs.iter().map(|r| r.held).collect());
    let from_connection = median(runs.iter().map(|r| r.held - r.connected).collect());
    // A baseline's median time, and its median CPU time if known in every run.
    let baseline = |of: fn(&Run) -> Timed| {
        let took = median(runs.iter().map(|r| of(r).took).collect());
        let cpu: Option<Vec<Duration>> = runs.iter().map(|r| of(r).cpu).collect();
        (took, cpu.map(median))
    };
    let (raw, raw_cpu) = baseline(|r| r.raw);
    let floor_frames = baseline(|r| r.floor_frames);
    let floor_whole = baseline(|r| r.floor_whole);
    // The kinder of the two floors: the one that leaves the target more.
    let (floor, floor_cpu) = if floor_whole.0 < floor_frames.0 {
        floor_whole
    } else {
        floor_frames
    };
    let cpu: Option<Vec<Duration>> = runs.iter().map(|r| r.cpu).collect();
    let mid = |f: fn(&Run) -> usize| {
        let mut v: Vec<usize> = runs.iter().map(f).collect();
        v.sort();
        v[v.len() / 2]
    };
    let (bytes, msgs) = (mid(|r| r.bytes), mid(|r| r.msgs));
    println!("\nmedians:\n");
    println!("| path                         | payload bytes | messages | ops/s at receiver |");
    println!("|------------------------------|--------------:|---------:|------------------:|");
    println!(
        "| atoll (state in parts, QUIC) | {bytes:>13} | {msgs:>8} | {:>17.0} |",
        ops(from_connection)
    );
    println!(
        "| raw quinn, same bytes        | {bytes:>13} | {msgs:>8} | {:>17.0} |",
        ops(raw)
    );
    println!(
        "| raw quinn + raw sled, frames | {bytes:>13} | {msgs:>8} | {:>17.0} |",
        ops(floor_frames.0)
    );
    println!(
        "| raw quinn + raw sled, whole  | {bytes:>13} | {msgs:>8} | {:>17.0} |",
        ops(floor_whole.0)
    );
    println!(
        "\nratio atoll / raw quinn (medians) = {:.2} from B's start, {:.2} from B's connection (target: at least 0.5)",
        raw.as_secs_f64() / from_start.as_secs_f64(),
        raw.as_secs_f64() / from_connection.as_secs_f64()
    );
    // What the target leaves for everything a store does beyond carrying
    // the bytes and writing them down: decoding, validating, indexing.
    let budget = raw.as_secs_f64() * 2.0 - floor.as_secs_f64();
    println!(
        "floor (raw quinn + raw sled, the faster way) / raw quinn = {:.2}; atoll / floor = {:.2}; at 0.5 of raw quinn, a catch-up leaves {:.0} ns per element beyond the floor (atoll takes {:.0})",
        raw.as_secs_f64() / floor.as_secs_f64(),
        floor.as_secs_f64() / from_connection.as_secs_f64(),
        budget * 1e9 / N as f64,
        (from_connection.as_secs_f64() - floor.as_secs_f64()) * 1e9 / N as f64,
    );
    if let (Some(cpu), Some(raw_cpu), Some(floor_cpu)) = (cpu.map(median), raw_cpu, floor_cpu) {
        println!(
            "CPU time of the process (medians): atoll {:.1} ms from B's connection, raw quinn {:.1} ms, floor {:.1} ms; ratio to raw quinn {:.2}, to the floor {:.2}\n",
            ms(cpu),
            ms(raw_cpu),
            ms(floor_cpu),
            raw_cpu.as_secs_f64() / cpu.as_secs_f64(),
            floor_cpu.as_secs_f64() / cpu.as_secs_f64()
        );
    }

    if only_catchup {
        return;
    }
    // Latency, durable writes.
    let (a, b) = pair(root.path(), "l", Durability::Durable);
    let c = a.counter("tick").unwrap();
    let mut feed = b.watch("tick").unwrap();
    let mut lat = Vec::new();
    for _ in 0..300 {
        let t = Instant::now();
        c.incr(1).unwrap();
        loop {
            match feed.try_recv() {
                Ok(Some(_)) => break,
                Ok(None) => std::thread::sleep(Duration::from_micros(50)),
                Err(e) => panic!("{e}"),
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "write never became visible"
            );
        }
        lat.push(t.elapsed());
    }
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("write-to-visible latency, durable writes, 300 samples: p50 {:.2} ms, p99 {:.2} ms (includes A's flush and fdatasync)", ms(lat[lat.len() / 2]), ms(lat[lat.len() * 99 / 100]));
}
