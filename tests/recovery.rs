//! The recovery scenarios an operator expects, on real nodes over QUIC: a
//! new node bootstraps from its peers; a node down longer than the log is
//! resynced by sending only what changed; a node restored from an old
//! backup loses nothing that it or a peer acknowledged and a peer still
//! holds; a type conflict shows in the next check's report. Each ends with
//! a consistency check that finds every node `ok`.

use atoll::{CheckReport, CheckResult, Config, Node};
use atoll_tests::{connected, copy_dir, wait_until, Cluster};
use std::path::Path;

const COUNTERS: usize = 300;

fn name(i: usize) -> String {
    format!("c{i:04}")
}

fn value(n: &Node, name: &str) -> i128 {
    n.counter(name).unwrap().value().unwrap()
}

/// Checks from `n` until each of its `peers` is `ok` (what is in flight
/// settles), at most 25 times.
fn check_all_ok(n: &Node, peers: usize) -> CheckReport {
    let mut last = None;
    for _ in 0..25 {
        let r = n.check().unwrap();
        if r.nodes.len() == peers && r.nodes.iter().all(|n| n.result == CheckResult::Ok) {
            return r;
        }
        last = Some(r);
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("no check found every node ok: the last said {last:?}");
}

#[test]
fn a_new_empty_node_bootstraps_itself_from_its_peers() {
    let c = Cluster::new(3);
    let a = c.start(0, &[]);
    let b = c.start(1, &[a.local_addr()]);
    for i in 0..COUNTERS {
        let at = if i % 2 == 0 { &a } else { &b };
        at.counter(&name(i)).unwrap().incr(i as i64 + 1).unwrap();
    }
    let last = name(COUNTERS - 1);
    wait_until("a and b hold everything", || {
        value(&a, &last) == COUNTERS as i128 && value(&b, &name(0)) == 1
    });
    // An empty data directory, dialing both.
    let n = c.start(2, &[a.local_addr(), b.local_addr()]);
    wait_until("the new node holds every counter", || {
        (0..COUNTERS).all(|i| value(&n, &name(i)) == i as i128 + 1)
    });
    wait_until("all three are connected", || connected(&[&a, &b, &n], 2));
    check_all_ok(&n, 2);
}

#[test]
fn a_node_down_longer_than_the_log_is_resynced_with_only_what_changed() {
    let c = Cluster::new(2);
    let mut ca = c.config(0, &[]);
    ca.store = Config {
        checkpoint_every: 16,
        log_retain: 32,
        ..Config::new(c.dir("data", 0))
    };
    let a = Node::start(ca).unwrap();
    let b = c.start(1, &[a.local_addr()]);
    for i in 0..COUNTERS {
        a.counter(&name(i)).unwrap().incr(1).unwrap();
    }
    let last = name(COUNTERS - 1);
    wait_until("b holds every counter", || value(&b, &last) == 1);
    b.shutdown().unwrap();
    // Five counters change, more times than a's log keeps.
    for round in 0..20 {
        for i in 0..5 {
            a.counter(&name(i * 50)).unwrap().incr(round + 1).unwrap();
        }
    }
    let first = a.deltas_since(0, 1).unwrap()[0].0;
    assert!(first > COUNTERS as u64, "a's log starts at {first}");
    let stats = |a: &Node| a.status().peers[0].0.stats;
    let before = stats(&a);
    let b = c.start(1, &[a.local_addr()]);
    let changed = 1 + (1..=20).sum::<i128>();
    wait_until("b holds the changes", || {
        (0..5).all(|i| value(&b, &name(i * 50)) == changed)
    });
    // Only the variables changed: no full transfer, and a fraction of the
    // bytes of every counter's state (about 20 bytes each).
    let after = stats(&a);
    assert!(
        after.changed_transfers > before.changed_transfers,
        "{after:?}"
    );
    assert_eq!(
        after.state_transfers - after.changed_transfers,
        before.state_transfers - before.changed_transfers,
        "no full transfer: {after:?}"
    );
    let sent = after.bytes_sent - before.bytes_sent;
    assert!(
        sent < 20 * COUNTERS as u64 / 4,
        "{sent} bytes sent to resync"
    );
    wait_until("connected", || connected(&[&a, &b], 1));
    check_all_ok(&b, 1);
}

#[test]
fn a_node_restored_from_an_old_backup_loses_nothing_a_peer_holds() {
    let c = Cluster::new(2);
    let a = c.start(0, &[]);
    let b = c.start(1, &[a.local_addr()]);
    a.counter("from-a").unwrap().incr(1).unwrap();
    b.counter("from-b").unwrap().incr(10).unwrap();
    wait_until("both see both", || {
        value(&a, "from-b") == 10 && value(&b, "from-a") == 1
    });
    b.shutdown().unwrap();
    let backup = c.root.path().join("backup");
    copy_dir(&c.dir("data", 1), &backup);
    // After the backup: b acknowledges a's writes, and a holds b's.
    let b = c.start(1, &[a.local_addr()]);
    a.counter("from-a").unwrap().incr(2).unwrap();
    a.set::<String>("after").unwrap().add(&"a".into()).unwrap();
    b.counter("from-b").unwrap().incr(20).unwrap();
    b.set::<String>("after").unwrap().add(&"b".into()).unwrap();
    let members = |n: &Node| n.set::<String>("after").unwrap().members().unwrap().len();
    // Everything reached the other node (a write only b holds would be
    // lost with b's disk: that is what a backup restore costs).
    wait_until("both see everything", || {
        value(&a, "from-b") == 30
            && value(&b, "from-a") == 3
            && members(&a) == 2
            && members(&b) == 2
    });
    b.shutdown().unwrap();
    std::fs::remove_dir_all(c.dir("data", 1)).unwrap();
    copy_dir(&backup, &c.dir("data", 1));
    let b = c.start(1, &[a.local_addr()]);
    // Everything either acknowledged, which a holds, comes back to b; and
    // b's new writes count on top.
    b.counter("from-b").unwrap().incr(300).unwrap();
    wait_until("both hold everything", || {
        [&a, &b]
            .iter()
            .all(|n| value(n, "from-a") == 3 && value(n, "from-b") == 330 && members(n) == 2)
    });
    wait_until("connected", || connected(&[&a, &b], 1));
    check_all_ok(&a, 1);
}

#[test]
fn a_type_conflict_shows_in_the_next_check() {
    let c = Cluster::new(2);
    let file = c.dir("checks", 0).with_extension("jsonl");
    let mut config = c.config(0, &[]);
    config.checks = atoll::CheckConfig {
        every_ms: Some(100),
        exporter: atoll::CheckExporter::File(file.clone()),
        report: atoll::CheckReporting::Always,
    };
    let a = Node::start(config).unwrap();
    // Apart, the two create "x" as two types.
    let b = c.start(1, &[]);
    a.counter("x").unwrap().incr(1).unwrap();
    b.set::<String>("x").unwrap().add(&"hello".into()).unwrap();
    b.shutdown().unwrap();
    let b = c.start(1, &[a.local_addr()]);
    wait_until("connected", || connected(&[&a, &b], 1));
    let lines = |f: &Path| std::fs::read_to_string(f).unwrap_or_default();
    wait_until("a report names the conflict, with every node ok", || {
        lines(&file).lines().any(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let conflict = &v["conflicts"][0];
            conflict["name"] == "x"
                && conflict["kept"] == "counter"
                && conflict["moved"] == "set"
                && v["nodes"]
                    .as_array()
                    .is_some_and(|n| n.len() == 2 && n.iter().all(|n| n["result"] == "ok"))
        })
    });
    assert_eq!(
        b.conflicts().unwrap().len(),
        1,
        "b resolved it alike: {:?}",
        b.conflicts()
    );
}
