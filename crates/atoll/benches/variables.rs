//! A store of many small variables: the time to create them, the time to
//! open the store again, the process's memory after reading every one with
//! and without a cache budget, and a new peer's catch-up (its time and its
//! peak memory).
//!
//! Each phase runs in a process of its own (this benchmark started again
//! with `--phase ...`), so that each memory figure is that phase's alone:
//! memory a process freed is not always given back, and two stores in one
//! process cannot be told apart. Memory is the process's resident set: at
//! the end (`VmRSS`) and at its highest (`VmHWM`).
//!
//! Run: `cargo bench -p atoll --bench variables` (`-- --variables N`: how
//! many, a million by default; `-- --budget MIB`: the cache budget, 16 by
//! default).

use atoll::{Config, Durability, Node, NodeConfig, Store};
use atoll_net::certs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BUFFERED: Durability = Durability::Buffered {
    flush_every_ms: 100,
};

/// A line of this process's `/proc/self/status` (in kB), in MiB.
fn mem_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn memory() -> String {
    format!(
        "resident {:.0} MiB, peak {:.0} MiB",
        mem_mib("VmRSS:"),
        mem_mib("VmHWM:")
    )
}

fn name(v: usize) -> String {
    format!("v{v:07}")
}

fn budget(arg: &str) -> Option<usize> {
    arg.parse::<usize>().ok().map(|mib| mib << 20)
}

fn label(budget: Option<usize>) -> String {
    budget.map_or("no budget".into(), |b| format!("{} MiB budget", b >> 20))
}

fn open_store(dir: &Path, budget: Option<usize>) -> Store {
    Store::open_with(Config {
        durability: BUFFERED,
        cache_bytes: budget,
        ..Config::new(dir)
    })
    .expect("opens")
}

/// Phase: `n` counters, each incremented once, buffered.
fn write(dir: &Path, n: usize, budget: Option<usize>) {
    let start = Instant::now();
    let store = open_store(dir, budget);
    for v in 0..n {
        store
            .counter(&name(v))
            .and_then(|c| c.incr(1))
            .expect("a write");
        if v > 0 && v % 100_000 == 0 {
            eprintln!("  ({v} written, {:.0} s)", start.elapsed().as_secs_f64());
        }
    }
    store.flush().expect("flushes");
    println!(
        "- written ({}) in {:.1} s ({:.0}/s); {}",
        label(budget),
        start.elapsed().as_secs_f64(),
        n as f64 / start.elapsed().as_secs_f64(),
        memory()
    );
}

/// Phase: open the store, then read every counter.
fn open(dir: &Path, n: usize, budget: Option<usize>) {
    let start = Instant::now();
    let store = open_store(dir, budget);
    let opened = start.elapsed();
    let after_open = memory();
    let start = Instant::now();
    let mut sum = 0i128;
    for v in 0..n {
        sum += store
            .counter(&name(v))
            .and_then(|c| c.value())
            .expect("a read");
    }
    assert_eq!(sum, n as i128, "every counter holds 1");
    println!(
        "- {}: opened in {:.2} s ({after_open}); every counter read in {:.1} s; then {}",
        label(budget),
        opened.as_secs_f64(),
        start.elapsed().as_secs_f64(),
        memory()
    );
}

fn node_config(data: &Path, certs: &Path, budget: Option<usize>, peers: Vec<String>) -> NodeConfig {
    let mut c = NodeConfig::new(data, certs, "127.0.0.1:0".parse().expect("an address"));
    c.store = Config {
        durability: BUFFERED,
        cache_bytes: budget,
        ..Config::new(data)
    };
    c.peers = peers
        .iter()
        .map(|p| p.parse().expect("a peer address"))
        .collect();
    c.http = None;
    c
}

/// Phase: serve the store as a node; print its address; stop when stdin
/// closes.
fn serve(data: &Path, certs: &Path, budget: Option<usize>) {
    let node = Node::start(node_config(data, certs, budget, vec![])).expect("starts");
    println!("{}", node.local_addr());
    std::io::stdout().flush().expect("stdout");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(node);
}

/// Phase: a new, empty node with `peer` as its peer, until it holds all
/// `n` counters.
fn join(data: &Path, certs: &Path, peer: &str, n: usize, budget: Option<usize>) {
    let start = Instant::now();
    let node = Node::start(node_config(data, certs, budget, vec![peer.into()])).expect("starts");
    let last = node.counter(&name(n - 1)).expect("a counter");
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(3600),
            "the new node did not catch up within an hour"
        );
        let caught_up = node
            .status()
            .peers
            .iter()
            .any(|(p, _)| p.connected && p.caught_up && !p.transferring);
        if caught_up && last.value().expect("a read") == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = start.elapsed();
    let stats = node
        .status()
        .peers
        .iter()
        .map(|(p, _)| p.stats)
        .next()
        .expect("a peer");
    let at_end = memory();
    let mut sum = 0i128;
    for v in (0..n).step_by((n / 1000).max(1)) {
        sum += node
            .counter(&name(v))
            .and_then(|c| c.value())
            .expect("a read");
    }
    assert_eq!(
        sum,
        n.div_ceil((n / 1000).max(1)) as i128,
        "the counters arrived"
    );
    println!(
        "- a new peer ({}) caught up in {:.1} s, {:.0} MiB received; {at_end}",
        label(budget),
        took.as_secs_f64(),
        stats.bytes_received as f64 / (1 << 20) as f64,
    );
}

fn me() -> PathBuf {
    std::env::current_exe().expect("this benchmark's path")
}

fn phase(args: &[&str]) {
    let status = Command::new(me())
        .arg("--phase")
        .args(args)
        .status()
        .expect("the phase runs");
    assert!(status.success(), "phase {args:?} failed");
}

fn arg_after(flag: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1).cloned()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--test" || a == "--list") {
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--phase") {
        let a = |k: usize| args.get(i + k).map(String::as_str).unwrap_or("");
        let n = |k: usize| a(k).parse::<usize>().expect("a count");
        match a(1) {
            "write" => write(Path::new(a(2)), n(3), budget(a(4))),
            "open" => open(Path::new(a(2)), n(3), budget(a(4))),
            "serve" => serve(Path::new(a(2)), Path::new(a(3)), budget(a(4))),
            "join" => join(Path::new(a(2)), Path::new(a(3)), a(4), n(5), budget(a(6))),
            other => panic!("no phase {other}"),
        }
        return;
    }
    let n: usize = arg_after("--variables")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
        .max(1);
    let mib = arg_after("--budget").unwrap_or_else(|| "16".into());
    let root = tempfile::tempdir().expect("a temporary directory");
    let data = root.path().join("a");
    let data_s = data.to_string_lossy();
    let ns = n.to_string();
    println!("{n} counters in one store, buffered (each phase a process of its own):");
    phase(&["write", &data_s, &ns, &mib]);
    phase(&["open", &data_s, &ns, &mib]);
    phase(&["open", &data_s, &ns, "none"]);

    let (ca, cb) = (root.path().join("certs-a"), root.path().join("certs-b"));
    certs::new_cluster(&ca).expect("certificates");
    certs::join(&ca, &cb).expect("certificates");
    let mut server = Command::new(me())
        .args(["--phase", "serve", &data_s])
        .arg(&ca)
        .arg(&mib)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the serving node starts");
    let mut addr = String::new();
    BufReader::new(server.stdout.take().expect("its stdout"))
        .read_line(&mut addr)
        .expect("its address");
    let joiner = root.path().join("b");
    phase(&[
        "join",
        &joiner.to_string_lossy(),
        &cb.to_string_lossy(),
        addr.trim(),
        &ns,
        &mib,
    ]);
    drop(server.stdin.take());
    let _ = server.wait();
}
