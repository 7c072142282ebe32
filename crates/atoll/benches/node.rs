//! A node's write path against Redis, in the same run: 1 and 16 concurrent
//! HTTP clients incrementing one counter over loopback (wrk, `POST
//! /v1/counter/hits` with `{"by":1}`), durable and buffered, against
//! redis-benchmark's `INCR` with as many clients on redis-server with an
//! append-only file (`appendfsync always` for durable, `everysec` for
//! buffered). The node runs in this process, on its own runtime, as
//! `atoll run` would; wrk and Redis are processes of their own.
//!
//! Needs `wrk`; Redis is optional (without it, atoll's figures alone):
//! `apt-get install wrk redis-server redis-tools`.
//!
//! Last, the floor of the measurement: the same HTTP stack with no store
//! behind it (axum on a two-worker runtime, the same JSON in and out). The
//! CPU column is this process's CPU time per request: the node's, or the
//! bare server's.
//!
//! Run: `cargo bench -p atoll --bench node` (`-- --seconds N`: each run's
//! length, 5 by default).

use atoll::{Config, Durability, Node, NodeConfig};
use atoll_net::certs;
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::Duration;

const BUFFERED: Durability = Durability::Buffered {
    flush_every_ms: 100,
};

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// CPU time this process has used (user and system), in ms: the node's,
/// or the bare server's (wrk and Redis are other processes).
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // utime and stime, in clock ticks of 10 ms.
    ticks(11)
        .zip(ticks(12))
        .map_or(f64::NAN, |(u, s)| (u + s) * 10.0)
}

/// Requests per second, p50 latency (ms), and this process's CPU time per
/// request (µs) of wrk against the server at `addr`.
fn wrk(addr: SocketAddr, clients: usize, seconds: u64, dir: &std::path::Path) -> (f64, f64, f64) {
    let cpu = cpu_ms();
    let (rps, p50) = wrk_run(addr, clients, seconds, dir);
    let per = (cpu_ms() - cpu) * 1000.0 / (rps * seconds as f64);
    (rps, p50, per)
}

fn wrk_run(addr: SocketAddr, clients: usize, seconds: u64, dir: &std::path::Path) -> (f64, f64) {
    let script = dir.join("incr.lua");
    std::fs::write(
        &script,
        "wrk.method = \"POST\"\nwrk.body = '{\"by\":1}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
    )
    .expect("writes the wrk script");
    let threads = clients.min(2);
    let out = Command::new("wrk")
        .args([
            &format!("-t{threads}"),
            &format!("-c{clients}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(format!("http://{addr}/v1/counter/hits"))
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let p50 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("50%"))
        .map(|v| latency_ms(v.trim()))
        .unwrap_or(f64::NAN);
    if text.contains("Non-2xx") {
        eprintln!("wrk saw errors:\n{text}");
    }
    (rps, p50)
}

/// wrk's latency ("1.23ms", "850.00us", "1.01s") in ms.
fn latency_ms(v: &str) -> f64 {
    let num = |s: &str| s.parse::<f64>().unwrap_or(f64::NAN);
    if let Some(us) = v.strip_suffix("us") {
        num(us) / 1000.0
    } else if let Some(ms) = v.strip_suffix("ms") {
        num(ms)
    } else if let Some(s) = v.strip_suffix('s') {
        num(s) * 1000.0
    } else {
        f64::NAN
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Requests per second of redis-benchmark's INCR against a redis-server
/// with an append-only file fsynced as `fsync` says.
fn redis(fsync: &str, clients: usize, seconds: u64, dir: &std::path::Path) -> f64 {
    let port = free_port();
    let data = dir.join(format!("redis-{fsync}-{clients}"));
    std::fs::create_dir_all(&data).expect("a redis directory");
    let mut server = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--appendonly", "yes", "--appendfsync", fsync, "--save", ""])
        .arg("--dir")
        .arg(&data)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    // Until it answers.
    for _ in 0..100 {
        let up = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "ping"])
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"PONG"));
        if up {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // As many requests as about `seconds` take (a first short run says).
    let rate = |n: u64| {
        let out = Command::new("redis-benchmark")
            .args(["-p", &port.to_string(), "-t", "incr", "-q"])
            .args(["-c", &clients.to_string(), "-n", &n.to_string()])
            .output()
            .expect("redis-benchmark runs");
        // Progress lines end in carriage returns; the last says
        // "INCR: N requests per second, ...".
        let text = String::from_utf8_lossy(&out.stdout);
        text.rsplit("INCR:")
            .next()
            .and_then(|last| last.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let probe = rate(2_000);
    let rps = rate(((probe * seconds as f64) as u64).max(2_000));
    let _ = server.kill();
    let _ = server.wait();
    rps
}

fn start_node(dir: &std::path::Path, durability: Durability, tag: &str) -> Node {
    let certs_dir = dir.join(format!("certs-{tag}"));
    certs::new_cluster(&certs_dir).expect("certificates");
    let mut config = NodeConfig::new(
        dir.join(format!("data-{tag}")),
        &certs_dir,
        "127.0.0.1:0".parse().expect("an address"),
    );
    config.store = Config {
        durability,
        ..Config::new(dir.join(format!("data-{tag}")))
    };
    Node::start(config).expect("the node starts")
}

/// The floor of this measurement: an HTTP server on the same stack (axum
/// on a two-worker tokio runtime, as the node's) that parses the same JSON
/// body and answers the same JSON, counting in an atomic: no store, no
/// lock, no disk. Returns its address and the runtime that serves it.
fn bare_server() -> (SocketAddr, tokio::runtime::Runtime) {
    use axum::routing::post;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let count = Arc::new(AtomicI64::new(0));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("binds");
    let addr = listener.local_addr().expect("an address");
    let app = axum::Router::new().route(
        "/v1/counter/{name}",
        post(
            move |axum::Json(b): axum::Json<serde_json::Value>| async move {
                let by = b["by"].as_i64().unwrap_or(0);
                let v = count.fetch_add(by, Ordering::Relaxed) + by;
                axum::Json(serde_json::json!({ "value": v }))
            },
        ),
    );
    rt.spawn(async move { axum::serve(listener, app).await });
    (addr, rt)
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let seconds = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    if !have("wrk") {
        println!("this benchmark drives the node with wrk: apt-get install wrk");
        return;
    }
    let with_redis = have("redis-server") && have("redis-benchmark") && have("redis-cli");
    if !with_redis {
        println!(
            "redis-server, redis-benchmark or redis-cli is missing: atoll's figures alone \
             (apt-get install redis-server redis-tools for the comparison)\n"
        );
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    println!("one counter incremented over loopback, {seconds} s per run:");
    println!("| durability | clients | atoll req/s | p50 ms | CPU µs/req | Redis req/s | atoll / Redis |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (durability, name, fsync) in [
        (Durability::Durable, "durable", "always"),
        (BUFFERED, "buffered 100 ms", "everysec"),
    ] {
        for clients in [1, 16] {
            let tag = format!("{}-{clients}", fsync);
            let node = start_node(dir.path(), durability, &tag);
            let addr = node.http_addr().expect("the node serves HTTP");
            let (rps, p50, cpu) = wrk(addr, clients, seconds, dir.path());
            let hits = node.counter("hits").and_then(|c| c.value()).unwrap_or(0);
            let _ = node.shutdown();
            assert!(hits > 0, "the node counted the increments");
            let (redis_rps, ratio) = match with_redis {
                true => {
                    let r = redis(fsync, clients, seconds, dir.path());
                    (format!("{r:.0}"), format!("**{:.2}**", rps / r))
                }
                false => ("-".into(), "-".into()),
            };
            println!(
                "| {name} | {clients} | {rps:.0} | {p50:.2} | {cpu:.0} | {redis_rps} | {ratio} |"
            );
        }
    }
    // The floor: the same HTTP stack with nothing behind it.
    let (addr, rt) = bare_server();
    for clients in [1, 16] {
        let (rps, p50, cpu) = wrk(addr, clients, seconds, dir.path());
        println!(
            "| (HTTP alone: axum, no store) | {clients} | {rps:.0} | {p50:.2} | {cpu:.0} | | |"
        );
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    println!("\ntargets: durable 16 clients at least 1.0x Redis (appendfsync always); buffered 16 clients at least 0.5x Redis (everysec)");
}
