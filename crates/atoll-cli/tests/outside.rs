//! What a new user hits from the outside, on real `atoll run` processes:
//! a type conflict across a split, counters past 64 bits, the offline bag
//! fence, the reserved system prefix, the HTTP error contract, one request
//! as one operation, and what an operator can see.
//!
//! Over 600 lines: each test is one tour of running processes, and they
//! share the HTTP helpers above them; split it by subject (owned variables,
//! operators' views) when it is next extended.

mod common;

use common::{atoll, init_cluster, remote, remote_ok, start, wait_until};
use serde_json::{json, Value};

/// An HTTP call: status, content type and JSON body (`Null` if none).
fn http(
    method: &str,
    url: &str,
    body: Option<&str>,
    content_type: Option<&str>,
) -> (u16, String, Value) {
    let headers: Vec<(&str, &str)> = content_type
        .map(|ct| ("Content-Type", ct))
        .into_iter()
        .collect();
    common::http_with(method, url, body, &headers)
}

fn get(url: &str) -> Value {
    let (status, _, v) = http("GET", url, None, None);
    assert_eq!(status, 200, "GET {url}: {v}");
    v
}

fn post(url: &str, body: Value) -> (u16, Value) {
    let (status, _, v) = http(
        "POST",
        url,
        Some(&body.to_string()),
        Some("application/json"),
    );
    (status, v)
}

fn last_seq(url: &str) -> u64 {
    get(&format!("{url}/v1/status"))["last_seq"]
        .as_u64()
        .unwrap()
}

/// Owned variables through the HTTP API of two node processes: one owns,
/// the other's strong operations go to it, and both report the owner.
#[test]
fn a_strong_operation_at_one_node_runs_at_the_owner_across_processes() {
    let d = tempfile::tempdir().unwrap();
    init_cluster(d.path(), &["one", "two"]);
    let one = start(d.path(), "one", "");
    let two = start(d.path(), "two", "");
    remote_ok(&one.url, &["peer", "add", &two.addr]);
    wait_until("the two are connected and up to date", || {
        let peers = get(&format!("{}/v1/peers", one.url));
        let status = get(&format!("{}/v1/status", two.url));
        peers["peers"][0]["connected"] == true && status["fenced"] == false
    });
    let owned = remote_ok(&one.url, &["own", "lock"]);
    assert_eq!(owned, format!("owner {} (epoch 1)\n", one.id));
    wait_until("node two knows the owner", || {
        remote_ok(&two.url, &["owner", "lock"]) == owned
    });
    assert_eq!(
        remote_ok(&two.url, &["register", "cas", "lock", "two"]),
        "swapped\n"
    );
    let metrics = ureq::get(&format!("{}/metrics", two.url))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        metrics.contains("atoll_owner_ops_total{at=\"forwarded\"} 1\n"),
        "{metrics}"
    );
    let lost = remote(&one.url, &["register", "cas", "lock", "one"]);
    assert_eq!(lost.status.code(), Some(1), "the value is two's now");
    // The owner's answer over HTTP: 409 for a strong operation on a
    // variable nobody owns.
    let r = ureq::post(&format!("{}/v1/set/free/claim", two.url))
        .send_json(serde_json::json!({"member": "m"}));
    match r {
        Err(ureq::Error::Status(409, _)) => {}
        other => panic!("{other:?}"),
    }
    // Moved to node two: node one's operations now go there.
    remote_ok(&one.url, &["own", "move", "lock", "--to", &two.id]);
    wait_until("node two owns it", || {
        remote_ok(&two.url, &["owner", "lock"]).starts_with(&format!("owner {} (epoch 2)", two.id))
    });
    assert_eq!(
        remote_ok(
            &one.url,
            &["register", "cas", "lock", "one", "--expected", "two"]
        ),
        "swapped\n"
    );
    // A map entry's register, swapped at the map's owner (node two), and
    // read at node one at once with --strong.
    remote_ok(&one.url, &["own", "move", "config", "--to", &two.id]);
    wait_until("node two owns the map", || {
        remote_ok(&one.url, &["owner", "config"]).starts_with(&format!("owner {}", two.id))
    });
    let cas = |url: &str, args: &[&str]| remote(url, &[&["map", "cas", "config"], args].concat());
    assert_eq!(cas(&one.url, &["mode", "blue"]).status.code(), Some(0));
    assert_eq!(cas(&one.url, &["mode", "red"]).status.code(), Some(1));
    let swapped = cas(&two.url, &["mode", "green", "--expected", "blue"]);
    assert_eq!(swapped.status.code(), Some(0));
    let strong = remote_ok(&one.url, &["map", "get", "config", "mode", "--strong"]);
    assert!(strong.contains("green"), "{strong}");
    assert_eq!(
        get(&format!("{}/v1/register/lock?strong=true", two.url))["value"],
        "one"
    );
    // Escrow on a counter node two owns, enabled from node one: node one
    // is granted rights, and decrements out of them locally.
    remote_ok(&one.url, &["own", "move", "stock", "--to", &two.id]);
    wait_until("node one knows node two owns the stock", || {
        remote_ok(&one.url, &["owner", "stock"]).starts_with(&format!("owner {}", two.id))
    });
    remote_ok(&two.url, &["counter", "incr", "stock", "10"]);
    let shown = remote_ok(&one.url, &["counter", "escrow", "stock", "--floor", "0"]);
    assert!(shown.starts_with("floor 0"), "{shown}");
    let mine = |field: &str| -> i64 {
        let e = get(&format!("{}/v1/counter/stock/escrow", one.url));
        let nodes = e["escrow"]["nodes"].as_array().cloned().unwrap_or_default();
        nodes
            .iter()
            .find(|n| n["node"] == one.id.as_str())
            .and_then(|n| n[field].as_i64())
            .unwrap_or(0)
    };
    wait_until("node one holds rights", || mine("balance") > 0);
    let decr = remote(&one.url, &["counter", "decr-if", "stock"]);
    assert_eq!(decr.status.code(), Some(0));
    assert_eq!(mine("spent"), 1, "spent at node one, out of its balance");
    let (status, _) = post(
        &format!("{}/v1/counter/stock/escrow", two.url),
        serde_json::json!({"floor": 3}),
    );
    assert_eq!(status, 409, "a floor does not change");
    one.process.stop();
    two.process.stop();
}

#[test]
fn a_name_created_as_two_types_apart_is_a_reported_conflict_and_replication_flows_on() {
    let d = tempfile::tempdir().unwrap();
    init_cluster(d.path(), &["one", "two"]);
    let one = start(d.path(), "one", "");
    let two = start(d.path(), "two", "");
    remote_ok(&one.url, &["counter", "incr", "x", "5"]);
    remote_ok(&two.url, &["set", "add", "x", "hello"]);
    // Written after the conflicting entry: it must all arrive.
    for _ in 0..21 {
        remote_ok(&one.url, &["counter", "incr", "after", "1"]);
    }
    remote_ok(&one.url, &["peer", "add", &two.addr]);
    for url in [&one.url, &two.url] {
        wait_until("the conflict resolves alike and the rest arrives", || {
            remote_ok(url, &["counter", "get", "x"]) == "5\n"
                && remote_ok(url, &["counter", "get", "after"]) == "21\n"
                && remote_ok(url, &["set", "list", "_atoll.conflict/set/x"]) == "hello\n"
        });
        assert_eq!(
            remote_ok(url, &["conflicts"]),
            "x\tkept counter\tset moved to _atoll.conflict/set/x\n"
        );
        wait_until("every interval is acknowledged", || {
            let peers = get(&format!("{url}/v1/peers"));
            peers["peers"][0]["lag"] == 0 && peers["peers"][0]["stuck"].is_null()
        });
        let metrics = ureq::get(&format!("{url}/metrics"))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        assert!(metrics.contains("atoll_conflicts_total 1\n"), "{metrics}");
    }
    // The conflict copy is read-only; the set's writer now gets a clear error.
    let refused = remote(&two.url, &["set", "add", "_atoll.conflict/set/x", "more"]);
    assert_eq!(refused.status.code(), Some(1));
    let refused = remote(&two.url, &["set", "add", "x", "again"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is a counter, not a set"));
    // Logged once, on each node, at warn.
    for node in [&one, &two] {
        assert_eq!(
            node.log().matches("type conflict").count(),
            1,
            "{}",
            node.log()
        );
    }
    // An idle, healthy link: keep-alives keep its last contact recent.
    std::thread::sleep(std::time::Duration::from_millis(5_000));
    for url in [&one.url, &two.url] {
        let peers = get(&format!("{url}/v1/peers"));
        let ago = peers["peers"][0]["last_contact_ms_ago"].as_u64().unwrap();
        // Keep-alives every second, looked at every second: about 2 s at
        // most, with room for a loaded machine; 5 s without them.
        assert!(ago < 3_500, "last contact {ago} ms ago on an idle link");
        let up = peers["peers"][0]["connected_since_ms_ago"]
            .as_u64()
            .unwrap();
        assert!(up >= 3_000, "connected {up} ms ago");
    }
    one.process.stop();
    two.process.stop();
}

#[test]
fn a_counter_past_the_64_bit_range_is_read_everywhere() {
    let d = tempfile::tempdir().unwrap();
    init_cluster(d.path(), &["one"]);
    let one = start(d.path(), "one", "");
    let url = format!("{}/v1/counter/neg", one.url);
    assert_eq!(post(&url, json!({"by": i64::MIN})).0, 200);
    let (status, v) = post(&url, json!({"by": -1}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["value"], "-9223372036854775809");
    assert_eq!(get(&url)["value"], "-9223372036854775809");
    assert_eq!(
        remote_ok(&one.url, &["counter", "get", "neg"]),
        "-9223372036854775809\n"
    );
    // Within 64 bits it is a number; a map's counter field the same way.
    let (_, v) = post(
        &format!("{}/v1/counter/pos", one.url),
        json!({"by": i64::MAX}),
    );
    assert_eq!(v["value"], json!(i64::MAX));
    let (_, v) = post(
        &format!("{}/v1/counter/pos", one.url),
        json!({"by": i64::MAX}),
    );
    assert_eq!(v["value"], json!(u64::MAX - 1));
    // One replica's total cannot pass u64::MAX (refused, nothing changes)...
    let (status, v) = post(&format!("{}/v1/counter/pos", one.url), json!({"by": 2}));
    assert_eq!(status, 400, "{v}");
    let m = format!("{}/v1/map/m/k", one.url);
    post(&m, json!({"incr": i64::MIN}));
    let (status, v) = post(&m, json!({"incr": -1}));
    assert_eq!(
        (status, &v["counter"]),
        (200, &json!("-9223372036854775809"))
    );
    one.process.stop();
    // And offline, on the data directory.
    let out = atoll(&d.path().join("data-one"), &["counter", "get", "neg"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "-9223372036854775809\n"
    );
    // ...but replicas' totals sum past it: each opening is a replica of its own.
    let data = d.path().join("data-one");
    assert_eq!(
        common::ok(&data, &["counter", "incr", "pos", "2"]),
        "18446744073709551616\n"
    );
    let out = common::ok(&data, &["--json", "counter", "get", "pos"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["value"], "18446744073709551616");
}

#[test]
fn a_store_of_a_cluster_opened_offline_does_not_take_from_bags() {
    let d = tempfile::tempdir().unwrap();
    init_cluster(d.path(), &["one", "two"]);
    let one = start(d.path(), "one", "");
    let two = start(d.path(), "two", "");
    // By host name: resolved when added.
    let port = two.addr.rsplit(':').next().unwrap();
    let by_name = format!("localhost:{port}");
    assert_eq!(
        remote_ok(&one.url, &["peer", "add", &by_name]).trim(),
        two.id
    );
    remote_ok(&one.url, &["bag", "insert", "jobs", "j1"]);
    wait_until("the job reaches two", || {
        remote_ok(&two.url, &["bag", "list", "jobs"])
            .lines()
            .count()
            == 1
    });
    one.process.stop();
    two.process.stop();
    let data = d.path().join("data-one");
    let out = atoll(&data, &["bag", "take", "jobs"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("opened without a node"), "{err}");
    assert!(err.contains("--last-of-cluster"), "{err}");
    // Transfers too.
    let listed = common::ok(&data, &["bag", "list", "jobs"]);
    let id = listed.split('\t').next().unwrap().to_string();
    let out = atoll(&data, &["bag", "transfer", "jobs", &id, &two.id]);
    assert_eq!(out.status.code(), Some(1));
    // Other types are not fenced.
    common::ok(&data, &["counter", "incr", "hits"]);
    // The documented override, for the last node of a cluster.
    assert_eq!(
        common::ok(&data, &["--last-of-cluster", "bag", "take", "jobs"]),
        "j1\n"
    );
    // A store that never joined a cluster is not fenced.
    let lone = d.path().join("lone");
    common::ok(&lone, &["bag", "insert", "b", "v"]);
    assert_eq!(common::ok(&lone, &["bag", "take", "b"]), "v\n");
}

#[test]
fn system_variables_are_not_writable_through_the_data_api() {
    let d = tempfile::tempdir().unwrap();
    init_cluster(d.path(), &["one"]);
    let one = start(d.path(), "one", "");
    let before = last_seq(&one.url);
    for (path, body) in [
        (
            "/v1/set/_atoll.removed",
            json!({"add": ["00000000000000ff"]}),
        ),
        ("/v1/set/_atoll.peers", json!({"add": ["127.0.0.1:9"]})),
        ("/v1/counter/_atoll.x", json!({"by": 1})),
    ] {
        let (status, v) = post(&format!("{}{path}", one.url), body);
        assert_eq!(status, 403, "{path}: {v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("reserved for the system"),
            "{v}"
        );
    }
    let (status, _, v) = http(
        "GET",
        &format!("{}/v1/set/_atoll.peers", one.url),
        None,
        None,
    );
    assert_eq!(status, 403, "{v}");
    assert_eq!(last_seq(&one.url), before, "nothing was written");
    let out = remote(&one.url, &["set", "add", "_atoll.peers", "127.0.0.1:9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reserved"));
    one.process.stop();
    let out = atoll(
        &d.path().join("data-one"),
        &["set", "add", "_atoll.removed", "x"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reserved"));
}

#[test]
fn every_error_answer_is_json_with_a_message() {
    let d = tempfile::tempdir().unwrap();
    init_cluster(d.path(), &["one"]);
    let one = start(d.path(), "one", "");
    let u = |p: &str| format!("{}{p}", one.url);
    let json_ct = Some("application/json");
    let long = format!("/v1/counter/{}", "a".repeat(20_000));
    // Method, URL, body, content type, the status, and what the message says.
    type Case<'a> = (
        &'a str,
        String,
        Option<&'a str>,
        Option<&'a str>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        ("GET", u("/v1/nope"), None, None, 404, "no such route"),
        (
            "DELETE",
            u("/v1/counter/x"),
            None,
            None,
            405,
            "is not allowed",
        ),
        (
            "POST",
            u("/v1/counter/x"),
            Some("{\"by\": 1}"),
            None,
            415,
            "Content-Type: application/json",
        ),
        (
            "POST",
            u("/v1/counter/x"),
            Some("{\"byy\": 1}"),
            json_ct,
            422,
            "missing field `by`",
        ),
        (
            "POST",
            u("/v1/counter/x"),
            Some("{\"by\": "),
            json_ct,
            400,
            "",
        ),
        ("GET", u(&long), None, None, 414, "over the limit"),
        (
            "GET",
            u("/v1/counter/bad%20name"),
            None,
            None,
            400,
            "invalid variable name",
        ),
        ("GET", u("/v1/counter/missing"), None, None, 200, ""),
    ];
    for (method, url, body, ct, want, says) in cases {
        let (status, content_type, v) = http(method, &url, body, ct);
        assert_eq!(status, want, "{method} {}: {v}", &url[..url.len().min(80)]);
        if want >= 400 {
            assert_eq!(content_type, "application/json", "{method} {want}");
            let msg = v["error"].as_str().unwrap_or("");
            assert!(!msg.is_empty() && msg.contains(says), "{want}: {v}");
        }
    }
    // A body over the limit: the answer is read while the body is still
    // being sent (the server answers, and closes, as soon as it is over).
    let (status, answer) = oversized_post(&one.url, "/v1/set/s", 17 << 20);
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("application/json"), "{answer}");
    assert!(
        answer.contains("\"error\":") && answer.contains("over the limit"),
        "{answer}"
    );
    one.process.stop();
}

/// POSTs `len` bytes of JSON, reading the answer on another thread while
/// they go; the status and the whole answer.
fn oversized_post(url: &str, path: &str, len: usize) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut reader = s.try_clone().unwrap();
    let answer = std::thread::spawn(move || {
        let mut answer = Vec::new();
        let _ = reader.read_to_end(&mut answer);
        answer
    });
    let _ = write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    let chunk = vec![b' '; 64 << 10];
    let mut sent = 0;
    while sent < len && s.write_all(&chunk).is_ok() {
        sent += chunk.len();
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    let answer = String::from_utf8_lossy(&answer.join().unwrap()).to_string();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

#[test]
fn one_request_is_one_operation_all_or_nothing() {
    let d = tempfile::tempdir().unwrap();
    init_cluster(d.path(), &["one"]);
    let one = start(d.path(), "one", "");
    let members: Vec<String> = (0..50_000).map(|i| format!("m{i}")).collect();
    let before = last_seq(&one.url);
    let (status, v) = post(&format!("{}/v1/set/big", one.url), json!({"add": members}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        last_seq(&one.url),
        before + 1,
        "one log entry for the request"
    );
    let list = get(&format!("{}/v1/set/big", one.url));
    assert_eq!(list["members"].as_array().unwrap().len(), 50_000);
    // Bag inserts and a map request of several fields: one entry each.
    let values: Vec<String> = (0..1000).map(|i| format!("v{i}")).collect();
    let (status, v) = post(&format!("{}/v1/bag/b", one.url), json!({"insert": values}));
    assert_eq!((status, v["ids"].as_array().unwrap().len()), (200, 1000));
    assert_eq!(last_seq(&one.url), before + 2);
    let (status, v) = post(
        &format!("{}/v1/map/m/k", one.url),
        json!({"incr": 3, "set": "s", "add": "a"}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (&v["counter"], &v["register"], &v["set"]),
        (&json!(3), &json!("s"), &json!(["a"]))
    );
    assert_eq!(last_seq(&one.url), before + 3);
    // A request one value of which is refused changes nothing.
    let too_big = "x".repeat((1 << 20) + 10);
    let (status, v) = post(
        &format!("{}/v1/set/partial", one.url),
        json!({"add": ["fine", too_big]}),
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(last_seq(&one.url), before + 3);
    assert_eq!(
        get(&format!("{}/v1/set/partial", one.url))["members"],
        json!([])
    );
    one.process.stop();
}

#[test]
fn a_peer_given_by_host_name_is_dialed() {
    let d = tempfile::tempdir().unwrap();
    init_cluster(d.path(), &["one", "two"]);
    let two = start(d.path(), "two", "");
    let port = two.addr.rsplit(':').next().unwrap();
    let one = start(d.path(), "one", &format!("peers = [\"localhost:{port}\"]"));
    remote_ok(&one.url, &["counter", "incr", "hits", "3"]);
    wait_until("the write reaches two", || {
        remote_ok(&two.url, &["counter", "get", "hits"]) == "3\n"
    });
    let peers = get(&format!("{}/v1/peers", one.url));
    assert_eq!(peers["peers"][0]["id"], two.id.as_str());
    assert_eq!(peers["unanswered"], json!([]));
    one.process.stop();
    two.process.stop();
}

#[test]
fn an_operator_sees_every_peer_its_state_and_why_takes_wait() {
    let d = tempfile::tempdir().unwrap();
    init_cluster(d.path(), &["one"]);
    // A configured peer that never answers: a UDP port nothing listens on.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    drop(silent);
    let one = start(d.path(), "one", &format!("peers = [\"{silent_addr}\"]"));
    let list = remote_ok(&one.url, &["peer", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with(&format!("-\t{silent_addr}\tno: "))),
        "{list}"
    );
    let status = remote_ok(&one.url, &["status"]);
    assert!(status.contains("1 addresses not answering"), "{status}");
    let metrics = ureq::get(&format!("{}/metrics", one.url))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "atoll_peer_address_unanswered{{addr=\"{silent_addr}\"}} 1"
        )),
        "{metrics}"
    );
    remote_ok(&one.url, &["bag", "insert", "jobs", "j"]);
    let out = remote(&one.url, &["bag", "take", "jobs"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1 configured peer(s) not yet heard from"),
        "{err}"
    );
    // A bare host:port for --node works.
    let bare = one.url.trim_start_matches("http://");
    assert!(remote_ok(bare, &["status"]).contains("node\t"));
    // The node logs (to stderr) at info by default: its start and its stop.
    let log = one.log.clone();
    one.process.stop();
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.contains("node started"), "{log}");
    assert!(log.contains("node stopped; data flushed"), "{log}");
}

/// `atoll check` against a node process: every peer ok, in a line each;
/// the report as JSON with the nodes' addresses and the conflicts.
#[test]
fn atoll_check_reports_every_peer_ok() {
    let d = tempfile::tempdir().unwrap();
    init_cluster(d.path(), &["one", "two"]);
    let one = start(d.path(), "one", "");
    let two = start(d.path(), "two", "");
    remote_ok(&one.url, &["peer", "add", &two.addr]);
    remote_ok(&two.url, &["counter", "incr", "hits", "3"]);
    wait_until("node one has the write", || {
        remote_ok(&one.url, &["counter", "get", "hits"]) == "3\n"
    });
    let mut text = String::new();
    wait_until("a check finds node two ok", || {
        text = remote_ok(&one.url, &["check"]);
        text.lines()
            .any(|l| l.starts_with(&two.id) && l.contains("  ok  "))
    });
    assert!(text.lines().any(|l| l.starts_with(&one.id)), "{text}");
    let (status, v) = post(&format!("{}/v1/check", one.url), serde_json::json!({}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["nodes"][1]["address"], two.addr.as_str());
    assert!(v["conflicts"].as_array().is_some_and(|c| c.is_empty()));
    one.process.stop();
    two.process.stop();
}
