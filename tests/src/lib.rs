//! Shared helpers for the integration tests: a cluster of nodes in one
//! process, each with its own data directory and certificate, replicating
//! over real QUIC with mutual TLS on 127.0.0.1.

use atoll::{Node, NodeConfig};
use atoll_net::certs;
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a test waits for anything.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Certificates from one cluster CA and a data directory per node.
pub struct Cluster {
    /// Where everything lives.
    pub root: tempfile::TempDir,
    nodes: usize,
}

impl Cluster {
    /// Certificates for `nodes` nodes.
    pub fn new(nodes: usize) -> Cluster {
        let root = tempfile::tempdir().unwrap();
        certs::new_cluster(&root.path().join("certs0")).unwrap();
        for i in 1..nodes {
            certs::join(
                &root.path().join("certs0"),
                &root.path().join(format!("certs{i}")),
            )
            .unwrap();
        }
        Cluster { root, nodes }
    }

    /// Node `i`'s directory of kind `what` (data, certs).
    pub fn dir(&self, what: &str, i: usize) -> PathBuf {
        self.root.path().join(format!("{what}{i}"))
    }

    /// Node `i`'s configuration, dialing `peers`.
    pub fn config(&self, i: usize, peers: &[SocketAddr]) -> NodeConfig {
        assert!(i < self.nodes);
        let mut c = NodeConfig::new(
            self.dir("data", i),
            self.dir("certs", i),
            "127.0.0.1:0".parse().unwrap(),
        );
        c.peers = peers.to_vec();
        c.replica.retransmit_ms = 200;
        c
    }

    /// Starts node `i`, dialing `peers`.
    pub fn start(&self, i: usize, peers: &[SocketAddr]) -> Node {
        Node::start(self.config(i, peers)).unwrap()
    }
}

/// Polls `cond` until it holds; panics with `what` after the timeout.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < TIMEOUT, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether every node in `nodes` has `peers` peers, all connected, and is
/// not fenced.
pub fn connected(nodes: &[&Node], peers: usize) -> bool {
    nodes.iter().all(|n| {
        let s = n.status();
        s.peers.len() == peers && s.peers.iter().all(|(p, _)| p.connected) && !n.fenced()
    })
}

/// Copies the directory `from` into `to`, recursively (a backup of a
/// stopped node's data directory, say).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
