//! Consistency checks on real nodes over QUIC: a healthy cluster is `ok`
//! everywhere; a node that is down is `unreachable`; a node whose stored
//! state was damaged on disk while it was stopped (a value that still
//! decodes) is `divergent` in exactly that variable, which the check
//! repairs, so that the next check is `ok` again.

use atoll::{CheckReport, CheckResult, Node};
use atoll_crdt::variable::State;
use atoll_crdt::{PNCounter, ReplicaId};
use atoll_store::{Backend, BatchOp, SledBackend};
use atoll_tests::{connected, wait_until, Cluster};

fn result_of(r: &CheckReport, node: ReplicaId) -> Option<CheckResult> {
    r.nodes.iter().find(|n| n.node == node).map(|n| n.result)
}

/// Checks from `n` until `done` holds (what is in flight settles), at most
/// 20 times.
fn check_until(n: &Node, what: &str, done: impl Fn(&CheckReport) -> bool) -> CheckReport {
    let mut last = None;
    for _ in 0..20 {
        let r = n.check().unwrap();
        if done(&r) {
            return r;
        }
        last = Some(r);
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("no check found {what}: the last said {last:?}");
}

fn all_ok(r: &CheckReport) -> bool {
    r.nodes.iter().all(|n| n.result == CheckResult::Ok)
}

#[test]
fn a_check_finds_a_node_down_and_exactly_the_variable_damaged_on_its_disk() {
    let c = Cluster::new(3);
    let a = c.start(0, &[]);
    let b = c.start(1, &[a.local_addr()]);
    let peers = [a.local_addr(), b.local_addr()];
    let n3 = c.start(2, &peers);
    wait_until("the three are connected", || connected(&[&a, &b, &n3], 2));
    for (i, n) in [&a, &b, &n3].iter().enumerate() {
        n.counter("hits").unwrap().incr(i as i64 + 1).unwrap();
        n.set::<String>("tags")
            .unwrap()
            .add(&format!("t{i}"))
            .unwrap();
    }
    let r = check_until(&a, "every node ok", all_ok);
    assert_eq!(r.nodes.len(), 2);
    assert!(r.variables >= 2);
    // Node 2 stops: unreachable.
    let third = n3.replica_id();
    n3.shutdown().unwrap();
    let r = check_until(&a, "node 2 unreachable", |r| {
        result_of(r, third) == Some(CheckResult::Unreachable)
    });
    assert_eq!(result_of(&r, b.replica_id()), Some(CheckResult::Ok));
    // Its disk is damaged while it is down: its counter gets a total no
    // write made.
    {
        let mut disk = SledBackend::open(&c.dir("data", 2), None, atoll_store::STATES).unwrap();
        let mut damaged = PNCounter::new();
        damaged.add(ReplicaId(0xbad), 40).unwrap();
        let bytes = atoll_crdt::codec::encode(&State::Counter(damaged));
        disk.apply(vec![BatchOp::Put(
            [b"s".as_slice(), b"hits"].concat(),
            bytes,
        )])
        .unwrap();
        disk.flush().unwrap();
    }
    let n3 = c.start(2, &peers);
    wait_until("node 2 is back and up to date", || {
        connected(&[&a, &b, &n3], 2)
    });
    let r = check_until(&a, "node 2 divergent", |r| {
        result_of(r, third) == Some(CheckResult::Divergent)
    });
    let names: Vec<&str> = r.differing.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["hits"], "{r:?}");
    assert_eq!(result_of(&r, b.replica_id()), Some(CheckResult::Ok));
    // Repaired: the next checks are ok everywhere, from any node.
    check_until(&a, "every node ok after the repair", all_ok);
    check_until(&n3, "every node ok, seen from node 2", all_ok);
    let value = |n: &Node| n.counter("hits").unwrap().value().unwrap();
    assert_eq!(value(&a), value(&n3));
    assert_eq!(value(&a), 6 + 40, "the repair joined the two states");
}

/// A node checks by itself every `every_ms`, and writes every report as a
/// line of JSON to its file, opened again for each (a rotated file is
/// followed).
#[test]
fn background_checks_write_their_reports_to_a_file() {
    let c = Cluster::new(2);
    let file = c.dir("checks", 0).with_extension("jsonl");
    let mut config = c.config(0, &[]);
    config.checks = atoll::CheckConfig {
        every_ms: Some(100),
        exporter: atoll::CheckExporter::File(file.clone()),
        report: atoll::CheckReporting::Always,
    };
    let a = Node::start(config).unwrap();
    let b = c.start(1, &[a.local_addr()]);
    wait_until("the two are connected", || connected(&[&a, &b], 1));
    let lines = |f: &std::path::Path| std::fs::read_to_string(f).unwrap_or_default();
    wait_until("a report with node 1 ok is written", || {
        lines(&file).lines().any(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["nodes"][1]["result"] == "ok"
        })
    });
    // With each node's address, as a knows it.
    let line = lines(&file).lines().last().unwrap().to_string();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        v["nodes"][0]["address"],
        a.local_addr().to_string(),
        "{line}"
    );
    assert!(v["nodes"][1]["address"].is_string(), "{line}");
    // Rotated: the next report goes to a new file at the path.
    std::fs::rename(&file, file.with_extension("old")).unwrap();
    wait_until("a report is written to the new file", || {
        !lines(&file).is_empty()
    });
    let (_, runs, _) = a.last_check();
    assert!(runs >= 2);
}
