//! Namespaces from the outside: `atoll ns` and `--ns` on a data directory,
//! and the `/v1/ns/{ns}/...` routes of two `atoll run` processes that
//! replicate a namespace created on one of them.

mod common;

use common::{atoll, init_cluster, ok, remote, remote_ok, start, wait_until};
use serde_json::Value;

/// An HTTP call with these headers (a body is JSON): status and JSON body.
fn http(method: &str, url: &str, body: Option<&str>, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut all = headers.to_vec();
    if body.is_some() {
        all.push(("Content-Type", "application/json"));
    }
    let (status, _, v) = common::http_with(method, url, body, &all);
    (status, v)
}

#[test]
fn a_namespace_on_a_data_directory_keeps_its_names_and_types_apart() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // Not created yet: refused, saying how to create it.
    let out = atoll(
        dir,
        &["--ns", "billing", "counter", "incr", "invoices", "1"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("atoll ns create billing"), "{err}");

    assert_eq!(
        ok(dir, &["ns", "create", "billing"]).trim(),
        "namespace billing created"
    );
    assert_eq!(ok(dir, &["ns", "list"]), "default\nbilling\n");
    // The same name, a counter in one namespace and a set in the other.
    ok(dir, &["--ns", "billing", "counter", "incr", "x", "5"]);
    ok(dir, &["set", "add", "x", "a"]);
    assert_eq!(ok(dir, &["--ns", "billing", "counter", "get", "x"]), "5\n");
    assert_eq!(ok(dir, &["set", "list", "x"]), "a\n");
    // Each listing shows its own namespace's variables only, by their
    // names within it.
    assert_eq!(ok(dir, &["--ns", "billing", "ls"]), "x\tcounter\n");
    let default_ls = ok(dir, &["ls"]);
    assert!(default_ls.contains("x\tset"), "{default_ls}");
    assert!(!default_ls.contains("counter"), "{default_ls}");
    // The namespace's prefix is not a way around it from the default one.
    let out = atoll(dir, &["counter", "get", "_atoll.ns/billing/x"]);
    assert!(!out.status.success());
    // A namespace that holds variables is dropped only with --force, and
    // the drop says why it was refused.
    let out = atoll(dir, &["ns", "drop", "billing"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds 1 variables"), "{err}");
    assert_eq!(
        ok(dir, &["ns", "drop", "billing", "--force"]).trim(),
        "namespace billing dropped"
    );
    assert_eq!(ok(dir, &["ns", "list"]), "default\n");
    // Created again, its data shows again (atoll deletes no variable).
    ok(dir, &["ns", "create", "billing"]);
    assert_eq!(ok(dir, &["--ns", "billing", "counter", "get", "x"]), "5\n");
    // Bad names are refused with the rule.
    let out = atoll(dir, &["ns", "create", "Billing"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("lowercase"));
    assert!(atoll(dir, &["ns", "drop", "default"]).status.code() == Some(1));
    // Mirroring: a namespace is local until enabled, and a mirrored one is
    // dropped only with --force.
    assert_eq!(
        ok(dir, &["mirror", "status", "billing"]),
        "billing\tlocal\n"
    );
    ok(dir, &["mirror", "enable", "billing"]);
    assert_eq!(
        ok(dir, &["mirror", "status"]),
        "default\tmirrored to every peer\nbilling\tmirrored to every peer\n"
    );
    let out = atoll(dir, &["ns", "drop", "billing"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is mirrored"));
    let out = atoll(dir, &["mirror", "peer", "add", "billing", "nope"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a node id"));
    // A link narrows it; the last link of a mirrored namespace stays
    // until its mirroring is disabled (with none, it would go everywhere).
    let peer = "00000000000000aa";
    ok(dir, &["mirror", "peer", "add", "billing", peer]);
    let status = ok(dir, &["mirror", "status", "billing"]);
    assert!(status.starts_with("billing\tmirrored over "), "{status}");
    let out = atoll(dir, &["mirror", "peer", "remove", "billing", peer]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("last link"));
    ok(dir, &["mirror", "disable", "billing"]);
    ok(dir, &["mirror", "peer", "remove", "billing", peer]);
    assert_eq!(
        ok(dir, &["mirror", "status", "billing"]),
        "billing\tlocal\n"
    );
    let out = atoll(dir, &["mirror", "enable", "nowhere"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("atoll ns create nowhere"));
}

#[test]
fn a_namespace_created_on_one_node_serves_on_both_over_http_and_the_cli() {
    let d = tempfile::tempdir().unwrap();
    init_cluster(d.path(), &["a", "b"]);
    let a = start(d.path(), "a", "");
    let b = start(d.path(), "b", &format!("peers = [\"{}\"]", a.addr));
    let (ua, ub) = (a.url.clone(), b.url.clone());

    // Unknown namespace: 404 with the way out.
    let (status, v) = http(
        "POST",
        &format!("{ua}/v1/ns/billing/counter/inv"),
        Some(r#"{"by":1}"#),
        &[],
    );
    assert_eq!(status, 404, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("atoll ns create billing"),
        "{v}"
    );

    let (status, _) = http("PUT", &format!("{ua}/v1/ns/billing"), None, &[]);
    assert_eq!(status, 200);
    remote_ok(&ua, &["mirror", "enable", "billing"]);
    let (status, v) = http(
        "POST",
        &format!("{ua}/v1/ns/billing/counter/inv"),
        Some(r#"{"by":3}"#),
        &[],
    );
    assert_eq!(
        (status, &v["name"], &v["value"]),
        (200, &Value::from("inv"), &Value::from(3)),
        "{v}"
    );
    // The default namespace's `inv` is another variable.
    let (_, v) = http("GET", &format!("{ua}/v1/counter/inv"), None, &[]);
    assert_eq!(v["value"], 0, "{v}");
    // A client cannot pick a namespace by the header the API uses inside.
    let (status, _) = http(
        "POST",
        &format!("{ua}/v1/counter/inv"),
        Some(r#"{"by":10}"#),
        &[("x-atoll-namespace", "billing")],
    );
    assert_eq!(status, 200);
    // An error names the path the client sent.
    let (status, v) = http(
        "DELETE",
        &format!("{ua}/v1/ns/billing/counter/inv"),
        None,
        &[],
    );
    assert_eq!(status, 405, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("/v1/ns/billing/counter/inv"),
        "{v}"
    );
    // Only data routes live in a namespace.
    let (status, v) = http("GET", &format!("{ua}/v1/ns/billing/status"), None, &[]);
    assert_eq!(status, 404, "{v}");

    // The namespace and its variable reach b; b serves them under the same
    // names, and the CLI's --ns reaches them through either node.
    wait_until("b knows the namespace and its counter", || {
        let (status, v) = http("GET", &format!("{ub}/v1/ns/billing/counter/inv"), None, &[]);
        status == 200 && v["value"] == 3
    });
    let (_, v) = http("GET", &format!("{ub}/v1/ns"), None, &[]);
    assert_eq!(v["namespaces"], serde_json::json!(["default", "billing"]));
    remote_ok(&ub, &["--ns", "billing", "counter", "incr", "inv", "4"]);
    wait_until("a sees b's increment in the namespace", || {
        remote_ok(&ua, &["--ns", "billing", "counter", "get", "inv"]) == "7\n"
    });
    assert_eq!(remote_ok(&ua, &["counter", "get", "inv"]), "10\n");
    let (_, v) = http("GET", &format!("{ub}/v1/ns/billing/vars"), None, &[]);
    assert_eq!(
        v["variables"],
        serde_json::json!([{"name": "inv", "type": "counter"}]),
        "{v}"
    );
    // Admin over the CLI.
    assert_eq!(remote_ok(&ub, &["ns", "list"]), "default\nbilling\n");
    let out = remote(&ub, &["ns", "drop", "billing"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("atoll mirror disable billing"), "{err}");
    remote_ok(&ub, &["mirror", "disable", "billing"]);
    let out = remote(&ub, &["ns", "drop", "billing"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds 1 variables"));
}

/// `atoll token create` prints a token and its config entry; the node
/// keeps the hash. Each token reaches its namespaces only, with its
/// access; a missing or wrong token is 401, a wrong namespace or access
/// 403; the admin routes need an admin token.
#[test]
fn tokens_reach_only_their_namespaces_with_their_access() {
    let d = tempfile::tempdir().unwrap();
    init_cluster(d.path(), &["a"]);
    let create = |args: &[&str]| common::new_token(d.path(), args);
    let (billing, billing_entry) = create(&["--ns", "billing", "--write"]);
    let (reader, reader_entry) = create(&["--ns", "shop,billing", "--read"]);
    let a = start(
        d.path(),
        "a",
        &format!("http_token = \"root\"\n{billing_entry}\n{reader_entry}"),
    );
    let url = a.url.clone();
    let bearer = |t: &str| format!("Bearer {t}");
    let (root, bill, read) = (bearer("root"), bearer(&billing), bearer(&reader));
    let auth = |t: &str| vec![("Authorization", t.to_string())];
    let call = |method: &str, path: &str, body: Option<&str>, token: &str| {
        let h = auth(token);
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        http(method, &format!("{url}{path}"), body, &h)
    };
    for ns in ["billing", "shop"] {
        assert_eq!(call("PUT", &format!("/v1/ns/{ns}"), None, &root).0, 200);
    }
    // No token, or an unknown one: 401.
    assert_eq!(
        http("GET", &format!("{url}/v1/ns/billing/counter/x"), None, &[]).0,
        401
    );
    assert_eq!(
        call("GET", "/v1/ns/billing/counter/x", None, "Bearer nope").0,
        401
    );
    // The billing token writes billing, and nothing else.
    let (s, v) = call(
        "POST",
        "/v1/ns/billing/counter/x",
        Some(r#"{"by":2}"#),
        &bill,
    );
    assert_eq!((s, &v["value"]), (200, &Value::from(2)), "{v}");
    let (s, v) = call("POST", "/v1/ns/shop/counter/x", Some(r#"{"by":2}"#), &bill);
    assert_eq!(s, 403, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("does not reach namespace \"shop\""),
        "{v}"
    );
    assert_eq!(
        call("GET", "/v1/counter/x", None, &bill).0,
        403,
        "nor the default namespace"
    );
    // The reader reads both, and writes neither.
    assert_eq!(
        call("GET", "/v1/ns/billing/counter/x", None, &read).1["value"],
        2
    );
    let (s, v) = call("POST", "/v1/ns/shop/counter/x", Some(r#"{"by":1}"#), &read);
    assert_eq!(s, 403, "{v}");
    // Each lists the namespaces it reaches.
    assert_eq!(
        call("GET", "/v1/ns", None, &bill).1["namespaces"],
        serde_json::json!(["billing"])
    );
    assert_eq!(
        call("GET", "/v1/ns", None, &read).1["namespaces"],
        serde_json::json!(["billing", "shop"])
    );
    assert_eq!(
        call("GET", "/v1/ns", None, &root).1["namespaces"],
        serde_json::json!(["default", "billing", "shop"])
    );
    // Admin routes: the admin token only.
    for (method, path) in [
        ("GET", "/v1/status"),
        ("GET", "/v1/peers"),
        ("PUT", "/v1/ns/other"),
        ("GET", "/metrics"),
    ] {
        assert_eq!(call(method, path, None, &bill).0, 403, "{method} {path}");
        assert_eq!(call(method, path, None, &root).0, 200, "{method} {path}");
    }
    // The CLI takes a token too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args([
            "--node", &url, "--token", &billing, "--ns", "billing", "counter", "get", "x",
        ])
        .env_remove("ATOLL_NS")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2\n");
}

/// `atoll watch` follows a namespace's changes as server-sent events:
/// those of its variables with the prefix, local ones marked so; resumed
/// after an event id, it replays what came since from the log; resumed
/// with another node's id, it says changes were lost.
#[test]
fn watch_streams_a_namespace_s_changes_and_resumes_after_an_event() {
    use std::io::BufRead;
    use std::sync::mpsc;
    let d = tempfile::tempdir().unwrap();
    init_cluster(d.path(), &["a"]);
    let a = start(d.path(), "a", "");
    let url = a.url.clone();
    remote_ok(&url, &["ns", "create", "billing"]);
    let follow = |args: &[&str]| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_atoll"))
            .args(["--node", &url, "--ns", "billing", "--json", "watch"])
            .args(args)
            .env_remove("ATOLL_NS")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel::<Value>();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                    break;
                }
            }
        });
        (common::Running(child), rx)
    };
    let next = |rx: &mpsc::Receiver<Value>| {
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .expect("an event")
    };
    let (watcher, rx) = follow(&["--prefix", "inv"]);
    // Until the stream is up: a write it sees.
    let mut first = Value::Null;
    for _ in 0..100 {
        remote_ok(&url, &["--ns", "billing", "counter", "incr", "inv", "1"]);
        if let Ok(v) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
            first = v;
            break;
        }
    }
    assert_eq!(first["event"], "change", "{first}");
    assert_eq!(
        (&first["name"], &first["type"], &first["local"]),
        (
            &Value::from("inv"),
            &Value::from("counter"),
            &Value::from(true)
        )
    );
    // Other names, and the default namespace, are not this watch's.
    remote_ok(&url, &["--ns", "billing", "counter", "incr", "other", "1"]);
    remote_ok(&url, &["counter", "incr", "inv-default", "1"]);
    remote_ok(&url, &["--ns", "billing", "set", "add", "invited", "x"]);
    loop {
        let v = next(&rx);
        match v["name"].as_str() {
            Some("invited") => {
                assert_eq!(v["type"], "set", "{v}");
                break;
            }
            // The loop above may have written twice before its first event.
            Some("inv") => {}
            _ => panic!("not this watch's: {v}"),
        }
    }
    drop(watcher);

    // Resumed after the first event: what came since, from the log.
    let id = first["id"].as_str().unwrap().to_string();
    let (_w, rx) = follow(&["--after", &id]);
    let mut names = std::collections::BTreeSet::new();
    while !(names.contains("invited") && names.contains("other")) {
        let v = next(&rx);
        assert_eq!(v["event"], "change", "{v}");
        assert!(
            v["seq"].as_u64() > first["seq"].as_u64(),
            "{v} after {first}"
        );
        // Only this namespace's (the default namespace's inv is not).
        assert!(names.len() <= 3, "{names:?}");
        names.insert(v["name"].as_str().unwrap().to_string());
    }
    // Another node's id: it says so.
    let (_w, rx) = follow(&["--after", "0123456789abcdef:5"]);
    let v = next(&rx);
    assert_eq!(v["event"], "lagged", "{v}");
    assert!(v["why"].as_str().unwrap().contains("another node's"), "{v}");
}
