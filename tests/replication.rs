//! Nodes replicating over real QUIC with mutual TLS on 127.0.0.1.
//!
//! Over 800 lines: one scenario per test, each a story on real nodes, sharing
//! the `Cluster` helper at the top.

use atoll::{Config, Node, NodeConfig};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use atoll_tests::{copy_dir, wait_until, Cluster, TIMEOUT};

#[derive(Debug, PartialEq)]
struct Snapshot {
    hits: i128,
    tags: BTreeSet<String>,
    motd: Option<String>,
    jobs: BTreeSet<String>,
    cart: i128,
}

fn snapshot(n: &Node) -> Snapshot {
    Snapshot {
        hits: n.counter("hits").unwrap().value().unwrap(),
        tags: n
            .set::<String>("tags")
            .unwrap()
            .members()
            .unwrap()
            .into_iter()
            .collect(),
        motd: n.register::<String>("motd").unwrap().get().unwrap(),
        jobs: n
            .bag::<String>("jobs")
            .unwrap()
            .elements()
            .unwrap()
            .into_iter()
            .map(|e| e.value)
            .collect(),
        cart: n.map("cart").unwrap().counter("apples").unwrap(),
    }
}

fn write_all_types(n: &Node, tag: &str) {
    n.counter("hits").unwrap().incr(1).unwrap();
    n.set::<String>("tags")
        .unwrap()
        .add(&tag.to_string())
        .unwrap();
    n.register::<String>("motd")
        .unwrap()
        .set(&format!("from {tag}"))
        .unwrap();
    n.bag::<String>("jobs")
        .unwrap()
        .insert(&format!("job-{tag}"))
        .unwrap();
    n.map("cart").unwrap().incr("apples", 2).unwrap();
}

fn converged(nodes: &[&Node]) -> bool {
    let first = snapshot(nodes[0]);
    nodes[1..].iter().all(|n| snapshot(n) == first)
}

#[test]
fn three_nodes_converge_on_every_type() {
    let c = Cluster::new(3);
    let a = c.start(0, &[]);
    let b = c.start(1, &[a.local_addr()]);
    let n3 = c.start(2, &[a.local_addr(), b.local_addr()]);
    for (n, tag) in [(&a, "a"), (&b, "b"), (&n3, "c")] {
        write_all_types(n, tag);
    }
    wait_until("all three converge", || {
        converged(&[&a, &b, &n3]) && snapshot(&a).hits == 3
    });
    let s = snapshot(&n3);
    assert_eq!(s.tags.len(), 3);
    assert_eq!(s.jobs.len(), 3);
    assert_eq!(s.cart, 6);
    let st = a.status();
    assert_eq!(st.peers.len(), 2);
    assert!(st
        .peers
        .iter()
        .all(|(p, addr)| p.connected && addr.is_some()));
}

#[test]
fn a_line_converges_without_an_end_to_end_link() {
    let c = Cluster::new(3);
    let line = |i: usize, peers: &[SocketAddr]| {
        let mut cfg = c.config(i, peers);
        cfg.learn_peers = false;
        Node::start(cfg).unwrap()
    };
    let a = line(0, &[]);
    let b = line(1, &[a.local_addr()]);
    let n3 = line(2, &[b.local_addr()]);
    write_all_types(&a, "a");
    write_all_types(&n3, "c");
    wait_until("the line converges", || {
        converged(&[&a, &b, &n3]) && snapshot(&b).hits == 2
    });
    assert!(
        a.status()
            .peers
            .iter()
            .all(|(p, _)| p.id != n3.replica_id()),
        "a and c were linked"
    );
}

#[test]
fn a_stopped_node_restarts_from_its_data_dir_and_converges() {
    let c = Cluster::new(3);
    let a = c.start(0, &[]);
    let b = c.start(1, &[a.local_addr()]);
    let n3 = c.start(2, &[a.local_addr()]);
    write_all_types(&n3, "c");
    wait_until("c's writes spread", || converged(&[&a, &b, &n3]));
    let c_id = n3.replica_id();
    n3.shutdown().unwrap();
    for i in 0..20 {
        a.counter("hits").unwrap().incr(1).unwrap();
        b.set::<String>("tags")
            .unwrap()
            .add(&format!("while-c-was-down-{i}"))
            .unwrap();
    }
    // Its data directory still holds its own data (read before it starts:
    // once started, it may catch up at once).
    {
        let store = atoll::Store::open(c.dir("data", 2)).unwrap();
        assert_eq!(store.replica_id(), c_id);
        assert_eq!(
            store.counter("hits").unwrap().value().unwrap(),
            1,
            "c kept its own data"
        );
    }
    let n3 = c.start(2, &[a.local_addr()]);
    assert_eq!(n3.replica_id(), c_id);
    wait_until("c catches up", || {
        converged(&[&a, &b, &n3]) && snapshot(&n3).hits == 21
    });
    assert_eq!(snapshot(&n3).tags.len(), 21);
}

/// A removed node is refused by every node, not only the one that removed
/// it, and its later writes reach no one; its certificate is still valid.
#[test]
fn a_removed_node_is_refused_by_the_whole_cluster() {
    let c = Cluster::new(3);
    let a = c.start(0, &[]);
    let b = c.start(1, &[a.local_addr()]);
    let n3 = c.start(2, &[a.local_addr(), b.local_addr()]);
    write_all_types(&n3, "c");
    wait_until("all three converge", || converged(&[&a, &b, &n3]));
    let connected_to = |n: &Node, id: atoll::ReplicaId| {
        n.status()
            .peers
            .iter()
            .any(|(p, _)| p.id == id && p.connected)
    };
    wait_until("b and c connect", || connected_to(&b, n3.replica_id()));
    assert!(a.remove_peer(n3.replica_id()).unwrap());
    assert_eq!(a.removed_peers().unwrap(), vec![n3.replica_id()]);
    wait_until("b learns that c was removed", || {
        b.removed_peers().unwrap() == vec![n3.replica_id()]
    });
    wait_until("a and b drop c", || {
        !connected_to(&a, n3.replica_id()) && !connected_to(&b, n3.replica_id())
    });
    wait_until("c is told why", || {
        n3.status()
            .refusals
            .iter()
            .any(|(_, why)| why.contains("removed from this cluster"))
    });
    n3.counter("hits").unwrap().incr(100).unwrap();
    // Several retransmission periods (200 ms here) and reconnection attempts.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!connected_to(&a, n3.replica_id()) && !connected_to(&b, n3.replica_id()));
    assert_eq!(snapshot(&a).hits, snapshot(&b).hits);
    assert_ne!(snapshot(&a).hits, snapshot(&n3).hits);

    // Readmitted (from b this time): both accept it again, it reconnects by
    // itself, and what it wrote while refused arrives.
    assert!(b.readmit_peer(n3.replica_id()).unwrap());
    assert!(!b.readmit_peer(n3.replica_id()).unwrap(), "only once");
    wait_until("a learns of the readmission", || {
        a.removed_peers().unwrap().is_empty()
    });
    wait_until("c reconnects to both", || {
        connected_to(&a, n3.replica_id()) && connected_to(&b, n3.replica_id())
    });
    wait_until("all three converge again", || converged(&[&a, &b, &n3]));
    assert_eq!(snapshot(&a).hits, snapshot(&n3).hits);
}

/// A restarted node is sent what it missed, not everything again: each side
/// says on connecting what it durably holds of the other's log.
#[test]
fn a_restarted_node_is_sent_only_what_it_missed() {
    let c = Cluster::new(2);
    let a = c.start(0, &[]);
    let b = c.start(1, &[a.local_addr()]);
    let members = a.set::<String>("members").unwrap();
    for i in 0..1000 {
        members.add(&format!("member-{i:04}")).unwrap();
    }
    let b_set = b.set::<String>("members").unwrap();
    wait_until("b holds the 1000", || b_set.len().unwrap() == 1000);
    let sent_to_b = |a: &Node| {
        a.status()
            .peers
            .iter()
            .map(|(p, _)| p.stats.bytes_sent)
            .sum::<u64>()
    };
    let first_sync = sent_to_b(&a);
    drop(b_set);
    b.shutdown().unwrap();
    members.add(&"while-b-was-down".to_string()).unwrap();
    let before = sent_to_b(&a);
    let b = c.start(1, &[a.local_addr()]);
    let b_set = b.set::<String>("members").unwrap();
    wait_until("b catches up", || b_set.len().unwrap() == 1001);
    wait_until("a hears b's acks", || {
        a.status()
            .peers
            .iter()
            .all(|(p, _)| p.connected && p.lag == 0)
    });
    let resync = sent_to_b(&a) - before;
    assert!(
        resync * 20 < first_sync,
        "{resync} bytes after the restart, {first_sync} for the first sync"
    );
}

#[test]
fn a_peer_kept_away_longer_than_the_log_catches_up_by_state_transfer() {
    let c = Cluster::new(2);
    let mut ca = c.config(0, &[]);
    ca.store = Config {
        checkpoint_every: 4,
        log_retain: 8,
        ..Config::new(c.dir("data", 0))
    };
    let a = Node::start(ca).unwrap();
    let b = c.start(1, &[a.local_addr()]);
    a.counter("hits").unwrap().incr(1).unwrap();
    wait_until("b connects and syncs", || snapshot(&b).hits == 1);
    b.shutdown().unwrap();
    for i in 0..50 {
        a.counter("hits").unwrap().incr(1).unwrap();
        a.set::<String>(&format!("s{}", i % 5))
            .unwrap()
            .add(&i.to_string())
            .unwrap();
    }
    let first = a.deltas_since(0, 1).unwrap()[0].0;
    assert!(
        first > 2,
        "a's log should have been truncated, starts at {first}"
    );
    let b = c.start(1, &[a.local_addr()]);
    wait_until("b catches up", || snapshot(&b).hits == 51);
    for i in 0..5 {
        let name = format!("s{i}");
        assert_eq!(b.set::<String>(&name).unwrap().len().unwrap(), 10, "{name}");
    }
    let transfers: u64 = a
        .status()
        .peers
        .iter()
        .map(|(p, _)| p.stats.state_transfers)
        .sum();
    assert!(transfers >= 1, "no state transfer happened");
}

/// A state larger than `state_part_bytes` reaches a new peer in parts, over
/// QUIC, several in flight, and arrives whole; it is larger than the largest
/// delta the nodes accept (16 KiB here), so the peer passes it on to a third
/// node by state transfer too.
#[test]
fn a_large_state_reaches_a_new_peer_in_parts() {
    let c = Cluster::new(3);
    let small_deltas = |i: usize, peers: &[SocketAddr]| {
        let mut config = c.config(i, peers);
        config.store = Config::new(c.dir("data", i))
            .durability(atoll::Durability::Buffered { flush_every_ms: 20 });
        config.store.max_delta_len = 16 << 10;
        config
    };
    let mut ca = small_deltas(0, &[]);
    ca.replica.state_for_new_peers_after = 1;
    ca.replica.state_part_bytes = 4096;
    let a = Node::start(ca).unwrap();
    let big = a.set::<String>("big").unwrap();
    for i in 0..3000 {
        big.add(&format!("member-{i:05}")).unwrap();
    }
    a.flush().unwrap();
    let b = Node::start(small_deltas(1, &[a.local_addr()])).unwrap();
    let seen = b.set::<String>("big").unwrap();
    wait_until("b holds every member", || seen.len().unwrap() == 3000);
    assert_eq!(seen.members().unwrap(), big.members().unwrap());
    let stats = a
        .status()
        .peers
        .iter()
        .find(|(p, _)| p.id == b.replica_id())
        .map(|(p, _)| p.stats)
        .expect("a knows b");
    assert_eq!(stats.state_transfers, 1);
    // About 60 KB of state in parts of 4 KiB.
    assert!(
        stats.state_parts_sent >= 10,
        "{} parts",
        stats.state_parts_sent
    );
    // Not, say, the state many times over (a few retransmissions are fine).
    assert!(stats.bytes_sent < 1_000_000, "{} bytes", stats.bytes_sent);
    let received = b
        .status()
        .peers
        .iter()
        .find(|(p, _)| p.id == a.replica_id())
        .map(|(p, _)| p.stats.state_parts_received)
        .expect("b knows a");
    assert!(received >= 10, "{received} parts received");
    wait_until("the transfer is over", || {
        a.status().peers.iter().all(|(p, _)| p.transfer.is_none())
    });

    // B logged the state as one entry, too large for a delta: a new node C
    // that B sends its log to (it is far shorter than 4096 entries) gets
    // that entry by state transfer.
    let cc = Node::start(small_deltas(2, &[b.local_addr()])).unwrap();
    let at_c = cc.set::<String>("big").unwrap();
    wait_until("c holds every member", || at_c.len().unwrap() == 3000);
    wait_until("b sent c the state", || {
        b.status()
            .peers
            .iter()
            .any(|(p, _)| p.id == cc.replica_id() && p.stats.state_transfers >= 1)
    });
}

/// Nodes configured with different limits (here B takes deltas of at most
/// 16 KiB and messages of at most 256 KiB; A the defaults, 16 MiB) learn
/// each other's from their `Hello` and send nothing larger: A's runs of
/// 64 KiB joined at its checkpoint reach B by state transfer, and neither
/// node refuses anything.
#[test]
fn nodes_with_different_limits_converge_without_refusals() {
    let c = Cluster::new(2);
    let mut ca = c.config(0, &[]);
    // The log, not the state, for a new peer.
    ca.replica.state_for_new_peers_after = 0;
    let a = Node::start(ca).unwrap();
    let big = a.set::<String>("big").unwrap();
    for i in 0..3000 {
        big.add(&format!("member-{i:05}")).unwrap();
    }
    a.flush().unwrap();
    let mut cb = c.config(1, &[a.local_addr()]);
    cb.store.max_delta_len = 16 << 10;
    cb.replica.max_message_len = 256 << 10;
    let b = Node::start(cb).unwrap();
    let seen = b.set::<String>("big").unwrap();
    wait_until("b holds every member", || seen.len().unwrap() == 3000);
    assert_eq!(seen.members().unwrap(), big.members().unwrap());
    let to_b = |a: &Node| {
        a.status()
            .peers
            .iter()
            .find(|(p, _)| p.id == b.replica_id())
            .map(|(p, _)| p.stats)
            .expect("a knows b")
    };
    assert!(
        to_b(&a).state_transfers >= 1,
        "the runs went by state transfer"
    );
    // And back, as deltas.
    b.counter("hits").unwrap().incr(3).unwrap();
    let hits = a.counter("hits").unwrap();
    wait_until("a sees b's write", || hits.value().unwrap() == 3);
    assert!(
        a.status().disconnects.is_empty(),
        "{:?}",
        a.status().disconnects
    );
    assert!(
        b.status().disconnects.is_empty(),
        "{:?}",
        b.status().disconnects
    );
}

/// A state larger than the receiver's `max_state_len` (its `Hello` gives
/// it) is held back by the sender rather than sent to be refused: no
/// connection is dropped, and the sender's status and `/v1/peers` say which
/// variable, and what to raise. (A receiver that is sent one anyway, its
/// `Hello` not yet arrived, still refuses it: a core test covers that.)
#[test]
fn a_state_larger_than_the_peer_accepts_is_held_back_and_status_says_why() {
    let c = Cluster::new(2);
    let mut ca = c.config(0, &[]);
    ca.replica.state_for_new_peers_after = 1;
    ca.replica.state_part_bytes = 4096;
    let a = Node::start(ca).unwrap();
    let big = a.set::<String>("big").unwrap();
    for i in 0..3000 {
        big.add(&format!("member-{i:05}")).unwrap();
    }
    let mut cb = c.config(1, &[a.local_addr()]);
    cb.replica.max_state_len = 16 << 10;
    let b = Node::start(cb).unwrap();
    let to_b = |a: &Node| {
        a.status()
            .peers
            .into_iter()
            .find(|(p, _)| p.id == b.replica_id())
            .map(|(p, _)| p)
    };
    let blocked = |a: &Node| to_b(a).and_then(|p| p.transfer).and_then(|t| t.blocked);
    wait_until("a holds the set back", || blocked(&a).is_some());
    let why = blocked(&a).unwrap();
    assert_eq!((why.name.as_str(), why.limit), ("big", 16 << 10));
    assert!(why.bytes > 16 << 10, "{why:?}");
    let (_, peers) = http(a.http_addr().unwrap(), "GET", "/v1/peers", None);
    assert!(
        peers.contains("\"blocked\":{") && peers.contains("raise max_state_len on the peer"),
        "{peers}"
    );
    // Whatever was in flight has arrived by now: nothing was refused.
    std::thread::sleep(Duration::from_millis(300));
    assert!(to_b(&a).is_some_and(|p| p.connected));
    assert!(
        a.status().disconnects.is_empty(),
        "{:?}",
        a.status().disconnects
    );
    assert!(
        b.status().disconnects.is_empty(),
        "{:?}",
        b.status().disconnects
    );
    assert_eq!(b.set::<String>("big").unwrap().len().unwrap(), 0);
}

#[test]
fn a_missing_certificate_directory_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let cfg = NodeConfig::new(
        d.path().join("data"),
        Path::new("/nonexistent/certs"),
        "127.0.0.1:0".parse().unwrap(),
    );
    let e = Node::start(cfg).err().expect("must fail");
    assert!(e.to_string().contains("/nonexistent/certs"), "{e}");
}

#[test]
fn a_garbage_frame_closes_that_connection_and_the_node_serves_the_others() {
    let c = Cluster::new(3);
    let a = c.start(0, &[]);
    let b = c.start(1, &[a.local_addr()]);
    wait_until("b connects", || {
        a.status().peers.iter().any(|(p, _)| p.connected)
    });
    let identity = atoll_net::tls::Identity::load(&c.dir("certs", 2)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let closed = rt.block_on(async {
        let (conn, mut send, _recv) = atoll_net::probe(
            &identity,
            a.local_addr(),
            77,
            atoll_core::protocol::PROTOCOL_VERSION,
        )
        .await
        .unwrap();
        atoll_net::frame::write_frame(&mut send, b"\x01this is not a message")
            .await
            .unwrap();
        tokio::time::timeout(TIMEOUT, conn.closed())
            .await
            .expect("a closes the connection")
    });
    let why = format!("{closed}");
    assert!(why.contains("broke the protocol"), "{why}");
    // a still replicates with b.
    b.counter("hits").unwrap().incr(7).unwrap();
    wait_until("a still serves b", || snapshot(&a).hits == 7);
}

#[test]
fn nodes_learn_their_peers_peers() {
    let c = Cluster::new(3);
    let a = c.start(0, &[]);
    let b = c.start(1, &[a.local_addr()]);
    let n3 = c.start(2, &[b.local_addr()]);
    wait_until("c learns a from b and connects to it", || {
        n3.status()
            .peers
            .iter()
            .any(|(p, _)| p.id == a.replica_id() && p.connected)
    });
}

#[test]
fn a_data_dir_restored_from_an_old_copy_rejoins_without_corrupting_anyone() {
    let c = Cluster::new(2);
    let a = c.start(0, &[]);
    let b = c.start(1, &[a.local_addr()]);
    b.counter("hits").unwrap().incr(5).unwrap();
    wait_until("a sees 5", || snapshot(&a).hits == 5);
    b.shutdown().unwrap();
    let backup = c.root.path().join("backup");
    copy_dir(&c.dir("data", 1), &backup);
    // b runs on, and its later increments reach a.
    let b = c.start(1, &[a.local_addr()]);
    b.counter("hits").unwrap().incr(3).unwrap();
    wait_until("a sees 8", || snapshot(&a).hits == 8);
    b.shutdown().unwrap();
    // b's directory is restored from the old copy; it forgot its +3.
    std::fs::remove_dir_all(c.dir("data", 1)).unwrap();
    copy_dir(&backup, &c.dir("data", 1));
    let b = c.start(1, &[a.local_addr()]);
    assert_eq!(
        snapshot(&b).hits,
        5,
        "the restored copy holds the old value"
    );
    b.counter("hits").unwrap().incr(4).unwrap();
    // Every acknowledged increment counts, everywhere: 5 + 3 + 4.
    wait_until("both reach 12", || {
        snapshot(&a).hits == 12 && snapshot(&b).hits == 12
    });
    a.counter("hits").unwrap().incr(1).unwrap();
    wait_until("both reach 13", || {
        snapshot(&a).hits == 13 && snapshot(&b).hits == 13
    });
}

/// One plain HTTP/1.1 request; returns the status line and body.
fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.lines().next().unwrap_or("").to_string();
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[test]
fn the_http_api_checks_its_token_and_serves_metrics() {
    let c = Cluster::new(2);
    let mut cfg = c.config(0, &[]);
    cfg.http_token = Some("s3cret".into());
    let a = Node::start(cfg).unwrap();
    let b = c.start(1, &[a.local_addr()]);
    b.counter("hits").unwrap().incr(2).unwrap();
    wait_until("a sees b's write", || snapshot(&a).hits == 2);
    let api = a.http_addr().unwrap();
    assert!(http(api, "GET", "/v1/status", None).0.contains("401"));
    assert!(http(api, "GET", "/v1/status", Some("wrong"))
        .0
        .contains("401"));
    let (status, body) = http(api, "GET", "/v1/status", Some("s3cret"));
    assert!(status.contains("200"), "{status}");
    assert!(
        body.contains(&format!("\"id\":\"{}\"", a.replica_id())),
        "{body}"
    );
    let (_, metrics) = http(api, "GET", "/metrics", Some("s3cret"));
    assert!(metrics.contains("# TYPE atoll_peer_lag gauge"), "{metrics}");
    assert!(
        metrics.contains(&format!(
            "atoll_peer_connected{{peer=\"{}\"}} 1",
            b.replica_id()
        )),
        "{metrics}"
    );
    assert!(metrics.contains("atoll_merged_deltas_total "), "{metrics}");
    // The counter at least is loaded: it was written to.
    assert!(metrics.contains("\natoll_variables_loaded "), "{metrics}");
    assert!(a.status().variables_loaded >= 1);
    assert!(
        metrics.contains("# TYPE atoll_peer_state_parts_sent_total counter"),
        "{metrics}"
    );
    let (_, peers) = http(api, "GET", "/v1/peers", Some("s3cret"));
    assert!(peers.contains("\"transfer\":null"), "{peers}");
    assert!(peers.contains("\"state_parts_out\":0"), "{peers}");
    assert!(peers.contains("\"last_disconnect\":null"), "{peers}");
    // B's limits, from its Hello: the defaults.
    assert!(
        peers.contains("\"max_delta_len\":16777216")
            && peers.contains("\"max_state_len\":67108864"),
        "{peers}"
    );
    let (status, body) = http(api, "GET", "/v1/counter/has%20space", Some("s3cret"));
    assert!(
        status.contains("400") && body.contains("invalid variable name"),
        "{status} {body}"
    );
    // Peers are removed by id or by address; anything else is a clear 400.
    let (status, body) = http(api, "DELETE", "/v1/peers/127.0.0.1%3A9", Some("s3cret"));
    assert!(
        status.contains("404") && body.contains("no peer at 127.0.0.1:9"),
        "{status} {body}"
    );
    let (status, body) = http(api, "DELETE", "/v1/peers/nonsense", Some("s3cret"));
    assert!(
        status.contains("400") && body.contains("nor an address"),
        "{status} {body}"
    );
    // Off loopback, a token is mandatory.
    let mut open = c.config(1, &[]);
    open.store = Config::new(c.root.path().join("other-data"));
    open.http = Some("0.0.0.0:0".parse().unwrap());
    let e = Node::start(open).err().expect("must refuse");
    assert!(e.to_string().contains("set http_token"), "{e}");
}

/// A node restarted (it could be a restored backup) takes bag elements only
/// once its peers have brought it up to date; until then `take` says why.
#[test]
fn bag_takes_wait_for_peers_after_a_restart() {
    let c = Cluster::new(2);
    let a = c.start(0, &[]);
    let b = c.start(1, &[a.local_addr()]);
    let jobs = b.bag::<String>("jobs").unwrap();
    jobs.insert(&"j1".to_string()).unwrap();
    jobs.insert(&"j2".to_string()).unwrap();
    wait_until("b is unfenced and a has the jobs", || {
        !b.fenced() && a.bag::<String>("jobs").unwrap().len().unwrap() == 2
    });
    let a_addr = a.local_addr();
    drop(jobs);
    b.shutdown().unwrap();
    a.shutdown().unwrap();
    // b comes back while a is down: it must not take.
    let b = c.start(1, &[a_addr]);
    let e = b.bag::<String>("jobs").unwrap().take().unwrap_err();
    assert!(
        matches!(e, atoll::Error::Core(atoll::CoreError::Fenced { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("retry"), "{e}");
    // It names whom it waits for: a's address is configured, a never answered.
    assert!(
        e.to_string()
            .contains("1 configured peer(s) not yet heard from"),
        "{e}"
    );
    // Other types stay available.
    b.counter("hits").unwrap().incr(1).unwrap();
    // If a is gone for good, forgetting its address (it never answered this
    // run of b) lets b take again; forgetting it twice finds nothing.
    assert!(b.remove_peer_at(a_addr).unwrap());
    assert!(!b.fenced());
    let took = b.bag::<String>("jobs").unwrap().take().unwrap();
    assert!(took.is_some_and(|j| j == "j1" || j == "j2"));
    assert!(!b.remove_peer_at(a_addr).unwrap());
    drop(b);
}

/// Sends `op` to the node's HTTP API as `Request::request` says; the JSON answer.
fn http_op(addr: SocketAddr, op: &atoll::ops::Request) -> serde_json::Value {
    use std::io::{Read, Write};
    let (method, path, body) = op.request();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{op:?}: {resp}");
    serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap()
}

/// Every data operation, sent over HTTP as the remote CLI sends it, answers
/// what running it on the store answers, and reads back what it wrote.
#[test]
fn every_operation_answers_the_same_over_http_and_on_the_store() {
    use atoll::ops::Request;
    let c = Cluster::new(1);
    let a = c.start(0, &[]);
    let api = a.http_addr().unwrap();
    let (n, k) = (|s: &str| s.to_string(), "k/1 x".to_string());
    let writes = [
        Request::CounterAdd {
            name: n("c:1"),
            by: 5,
        },
        Request::RegisterSet {
            name: n("r"),
            value: n("v"),
        },
        Request::SetChange {
            name: n("s"),
            add: vec![n("a"), n("b")],
            remove: vec![n("a")],
        },
        Request::BagInsert {
            name: n("b"),
            values: vec![n("x")],
        },
        Request::MapChange {
            name: n("m"),
            key: k.clone(),
            incr: Some(2),
            set: Some(n("w")),
            add: Some(n("y")),
        },
        Request::MapChange {
            name: n("m"),
            key: n("gone"),
            incr: Some(1),
            set: None,
            add: None,
        },
        Request::MapRemove {
            name: n("m"),
            key: n("gone"),
        },
    ];
    for op in &writes {
        let over_http = http_op(api, op);
        // The same keys as the store's own answer to the same request.
        let local = op.apply(&a).unwrap();
        let keys =
            |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&over_http), keys(&local), "{op:?}");
    }
    let reads = [
        Request::CounterGet { name: n("c:1") },
        Request::RegisterGet { name: n("r") },
        Request::SetList { name: n("s") },
        Request::BagList { name: n("b") },
        Request::MapGet {
            name: n("m"),
            key: k.clone(),
        },
        Request::MapKeys { name: n("m") },
        Request::Vars,
    ];
    for op in &reads {
        assert_eq!(http_op(api, op), op.apply(&a).unwrap(), "{op:?}");
    }
    // Both ran every write once each.
    assert_eq!(http_op(api, &reads[0])["value"], 10);
    assert_eq!(http_op(api, &reads[2])["members"], serde_json::json!(["b"]));
    assert_eq!(http_op(api, &reads[4])["counter"], 4);
    assert_eq!(http_op(api, &reads[5])["keys"], serde_json::json!([k]));
    let took = http_op(api, &Request::BagTake { name: n("b") });
    assert!(took["taken"] == "x", "{took}");
}
