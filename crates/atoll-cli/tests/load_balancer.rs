//! Three `atoll run` nodes behind a real nginx (round robin, failing over
//! to the next node on an error or a timeout): clients write and read
//! through nginx while one node is stopped (SIGSTOP) and later continued.
//! Every write nginx acknowledged is on every node once the cluster
//! converges, and every read through nginx is answered.
//!
//! Needs nginx (`apt-get install nginx`; `.ci/run` installs it and sets
//! `ATOLL_REQUIRE_NGINX=1`, so that there the test cannot pass without
//! it). Without nginx and that variable, the test says so and passes.

mod common;

use common::{init_cluster, start, wait_until, Started};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The nginx configuration of docs/operations.md (*Behind a load
/// balancer*), with this test's paths and ports.
fn nginx_conf(dir: &std::path::Path, listen: u16, upstreams: &[String]) -> String {
    let servers: String = upstreams
        .iter()
        .map(|u| format!("        server {u} max_fails=1 fail_timeout=2s;\n"))
        .collect();
    let d = dir.display();
    format!(
        r#"worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream atoll {{
{servers}    }}
    server {{
        listen 127.0.0.1:{listen};
        location / {{
            proxy_pass http://atoll;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_read_timeout 2s;
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_next_upstream_tries 3;
        }}
    }}
}}
"#
    )
}

/// nginx, stopped with SIGTERM when the test ends (SIGKILL to the master
/// would leave its worker running).
struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// An HTTP call with a client timeout: its status, or `None` if it failed.
fn call(method: &str, url: &str, body: Option<&str>) -> (Option<u16>, Value) {
    let req = ureq::request(method, url).timeout(Duration::from_secs(20));
    let res = match body {
        Some(b) => req.set("Content-Type", "application/json").send_string(b),
        None => req.call(),
    };
    match res {
        Ok(r) => {
            let status = r.status();
            (Some(status), r.into_json().unwrap_or(Value::Null))
        }
        Err(ureq::Error::Status(code, r)) => (Some(code), r.into_json().unwrap_or(Value::Null)),
        Err(_) => (None, Value::Null),
    }
}

fn members(url: &str) -> Vec<String> {
    let (_, v) = call("GET", &format!("{url}/v1/set/log"), None);
    v["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Sends `sig` to the node's process and waits until it took effect:
/// stopped (`T`) after `-STOP`, running again after `-CONT`.
fn signal(node: &Started, sig: &str) {
    let pid = node.process.0.id().to_string();
    assert!(Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success());
    let stopped = sig == "-STOP";
    wait_until("the signal takes effect", || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state follows the command name, which is in parentheses.
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        (state == Some("T")) == stopped
    });
}

#[test]
fn writes_through_nginx_survive_a_stopped_node_and_reach_every_node() {
    if !common::have_tool("nginx", "ATOLL_REQUIRE_NGINX", "apt-get install nginx") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    init_cluster(d.path(), &["a", "b", "c"]);
    let a = start(d.path(), "a", "");
    let b = start(d.path(), "b", "");
    let c = start(d.path(), "c", "");
    // Added at a, into the replicated peer set: every node dials every other.
    common::remote_ok(&a.url, &["peer", "add", &b.addr]);
    common::remote_ok(&a.url, &["peer", "add", &c.addr]);
    let nodes = [&a, &b, &c];
    wait_until("every node connects to both others", || {
        nodes.iter().all(|n| {
            let (_, v) = call("GET", &format!("{}/v1/peers", n.url), None);
            v["peers"]
                .as_array()
                .is_some_and(|p| p.iter().filter(|p| p["connected"] == true).count() == 2)
        })
    });

    let port = free_port();
    let upstreams: Vec<String> = nodes
        .iter()
        .map(|n| n.url.trim_start_matches("http://").to_string())
        .collect();
    let conf = d.path().join("nginx.conf");
    std::fs::write(&conf, nginx_conf(d.path(), port, &upstreams)).unwrap();
    let nginx = Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .args(["-p"])
        .arg(d.path())
        .args(["-g", "daemon off;"])
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts");
    let _nginx = Nginx(nginx);
    let lb = format!("http://127.0.0.1:{port}");
    wait_until("nginx answers", || {
        call("GET", &format!("{lb}/v1/set/log"), None).0 == Some(200)
    });

    // Writes and reads through nginx; b stopped in the middle third.
    let mut acked = Vec::new();
    let (mut reads, mut reads_ok) = (0, 0);
    for i in 0..150 {
        if i == 50 {
            signal(&b, "-STOP");
            // Stopped: b itself answers nothing now.
            let direct = ureq::get(&format!("{}/v1/set/log", b.url))
                .timeout(Duration::from_secs(1))
                .call();
            assert!(direct.is_err(), "b answered while stopped");
        }
        if i == 100 {
            signal(&b, "-CONT");
        }
        if (50..100).contains(&i) {
            // Paced, so that b's stop outlasts nginx's fail_timeout (2 s)
            // several times: nginx tries b again, and must fail over each
            // time.
            std::thread::sleep(Duration::from_millis(150));
        }
        let member = format!("w-{i:03}");
        let body = format!(r#"{{"add":["{member}"]}}"#);
        if call("POST", &format!("{lb}/v1/set/log"), Some(&body)).0 == Some(200) {
            acked.push(member);
        }
        if i % 5 == 0 {
            reads += 1;
            if call("GET", &format!("{lb}/v1/set/log"), None).0 == Some(200) {
                reads_ok += 1;
            }
        }
    }
    assert_eq!(reads_ok, reads, "every read through nginx is answered");
    // Failover keeps writes going: every one is acknowledged, those made
    // while b was stopped too (a request nginx sent b timed out, and went
    // to the next node).
    assert_eq!(acked.len(), 150, "writes acknowledged: {acked:?}");

    // Every acknowledged write on every node, once they converge.
    for n in nodes {
        wait_until("every acknowledged write is on every node", || {
            let held = members(&n.url);
            acked.iter().all(|m| held.contains(m))
        });
    }
}
