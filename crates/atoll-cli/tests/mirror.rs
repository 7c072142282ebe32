//! Mirroring per namespace on three `atoll run` processes: two applications
//! share the cluster, one namespace mirrored to every node, one to a single
//! peer, one local only. Each application sees only its own data through
//! its own token, and a node a namespace is not mirrored to never receives
//! a byte of it: it holds none of it, and the senders' per-namespace
//! counters sent it none.

mod common;

use common::{init_cluster, remote_ok, start, wait_until, Started};
use serde_json::Value;

/// An HTTP call with a bearer token (a body is JSON): status and JSON body.
fn call(node: &Started, method: &str, path: &str, body: Option<&str>, token: &str) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("Authorization", auth.as_str())];
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    let url = format!("{}{path}", node.url);
    let (status, _, v) = common::http_with(method, &url, body, &headers);
    (status, v)
}

/// A call that must succeed: its JSON body.
fn ok(node: &Started, method: &str, path: &str, body: Option<&str>, token: &str) -> Value {
    let (status, v) = call(node, method, path, body, token);
    assert_eq!(status, 200, "{method} {path} at {}: {v}", node.url);
    v
}

/// The names of namespace `ns`'s variables a node holds.
fn names(node: &Started, ns: &str) -> Vec<String> {
    let v = ok(node, "GET", &format!("/v1/ns/{ns}/vars"), None, "root");
    v["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap().to_string())
        .collect()
}

/// What node `from` counts of namespace `ns` for its peer `to`: whether
/// it shares it, and the bytes sent.
fn traffic(from: &Started, ns: &str, to: &Started) -> (bool, u64) {
    let v = ok(from, "GET", &format!("/v1/mirror/{ns}"), None, "root");
    let p = v["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer"] == to.id.as_str())
        .unwrap_or_else(|| panic!("{} lists no peer {}: {v}", from.url, to.id))
        .clone();
    (p["shared"] == true, p["sent_bytes"].as_u64().unwrap())
}

#[test]
fn two_applications_share_three_nodes_and_each_namespace_goes_only_where_it_is_mirrored() {
    let d = tempfile::tempdir().unwrap();
    init_cluster(d.path(), &["a", "b", "c"]);
    // The shop application's token reaches its namespace; the billing
    // application's reaches billing and the site's local readings.
    let (shop, shop_entry) = common::new_token(d.path(), &["--ns", "shop", "--write"]);
    let (billing, billing_entry) =
        common::new_token(d.path(), &["--ns", "billing,readings", "--write"]);
    let config = format!("http_token = \"root\"\n{shop_entry}\n{billing_entry}");
    let a = start(d.path(), "a", &config);
    let b = start(d.path(), "b", &config);
    let c = start(d.path(), "c", &config);
    remote_ok(&a.url, &["--token", "root", "peer", "add", &b.addr]);
    remote_ok(&a.url, &["--token", "root", "peer", "add", &c.addr]);
    let nodes = [&a, &b, &c];
    wait_until("every node connects to both others", || {
        nodes.iter().all(|n| {
            let v = ok(n, "GET", "/v1/peers", None, "root");
            v["peers"]
                .as_array()
                .is_some_and(|p| p.iter().filter(|p| p["connected"] == true).count() == 2)
        })
    });

    // Set up at a, over HTTP and the CLI: shop mirrored to every node,
    // billing to b only, readings local.
    for ns in ["shop", "billing", "readings"] {
        ok(&a, "PUT", &format!("/v1/ns/{ns}"), None, "root");
    }
    ok(&a, "PUT", "/v1/mirror/shop", None, "root");
    let cli = |args: &[&str]| remote_ok(&a.url, &[&["--token", "root", "mirror"], args].concat());
    cli(&["enable", "billing"]);
    cli(&["peer", "add", "billing", &b.id]);
    // The setting is replicated: every node shows it.
    for n in nodes {
        wait_until("every node holds the mirroring", || {
            let v = ok(n, "GET", "/v1/mirror/billing", None, "root");
            v["mirrored"] == true && v["links"].as_array().is_some_and(|l| l.len() == 1)
        });
    }

    // Each application writes through a, with its own token.
    let post = |path: &str, body: &str, token: &str| {
        let method = if path.contains("/register/") {
            "PUT"
        } else {
            "POST"
        };
        ok(&a, method, path, Some(body), token)
    };
    let big = "x".repeat(2_000);
    post("/v1/ns/shop/counter/orders", r#"{"by":3}"#, &shop);
    post(
        "/v1/ns/shop/register/note",
        &format!(r#"{{"value":"{big}"}}"#),
        &shop,
    );
    post("/v1/ns/billing/counter/invoices", r#"{"by":5}"#, &billing);
    post(
        "/v1/ns/billing/register/terms",
        &format!(r#"{{"value":"{big}"}}"#),
        &billing,
    );
    post("/v1/ns/readings/counter/kwh", r#"{"by":7}"#, &billing);
    post(
        "/v1/ns/readings/register/raw",
        &format!(r#"{{"value":"{big}"}}"#),
        &billing,
    );
    // b writes to billing too: it reaches a, and not c.
    ok(
        &b,
        "POST",
        "/v1/ns/billing/counter/invoices",
        Some(r#"{"by":1}"#),
        &billing,
    );

    let value =
        |n: &Started, path: &str, token: &str| ok(n, "GET", path, None, token)["value"].clone();
    wait_until("shop reaches b and c, billing reaches b", || {
        value(&b, "/v1/ns/shop/counter/orders", &shop) == 3
            && value(&c, "/v1/ns/shop/counter/orders", &shop) == 3
            && value(&b, "/v1/ns/billing/counter/invoices", &billing) == 6
            && value(&a, "/v1/ns/billing/counter/invoices", &billing) == 6
    });
    // Quiet: a's and b's peers hold all of their logs.
    for n in [&a, &b] {
        wait_until("every peer holds the whole log", || {
            let v = ok(n, "GET", "/v1/peers", None, "root");
            v["peers"]
                .as_array()
                .is_some_and(|p| p.iter().all(|p| p["lag"] == 0))
        });
    }

    // What each node holds.
    assert_eq!(names(&c, "shop"), ["note", "orders"]);
    assert_eq!(names(&b, "billing"), ["invoices", "terms"]);
    assert!(names(&c, "billing").is_empty(), "billing reached c");
    assert!(names(&b, "readings").is_empty(), "readings left a");
    assert!(names(&c, "readings").is_empty(), "readings left a");
    assert_eq!(names(&a, "readings"), ["kwh", "raw"]);
    // What the senders counted: nothing of billing to c, from a or from b;
    // nothing of readings to anyone; shop and billing where mirrored.
    assert_eq!(traffic(&a, "billing", &c), (false, 0));
    assert_eq!(traffic(&b, "billing", &c), (false, 0));
    assert_eq!(traffic(&a, "readings", &b), (false, 0));
    assert_eq!(traffic(&a, "readings", &c), (false, 0));
    let (shared, sent) = traffic(&a, "billing", &b);
    assert!(shared && sent > 2_000, "billing to b: {sent} bytes");
    for to in [&b, &c] {
        let (shared, sent) = traffic(&a, "shop", to);
        assert!(shared && sent > 2_000, "shop to {}: {sent} bytes", to.id);
    }
    // The same counters in the metrics.
    let metrics = ureq::get(&format!("{}/metrics", a.url))
        .set("Authorization", "Bearer root")
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let line = format!(
        "atoll_mirror_sent_bytes_total{{namespace=\"billing\",peer=\"{}\"}}",
        b.id
    );
    assert!(metrics.contains(&line), "{metrics}");
    let line = format!(
        "atoll_mirror_sent_bytes_total{{namespace=\"billing\",peer=\"{}\"}}",
        c.id
    );
    assert!(!metrics.contains(&line), "{metrics}");

    // Each application sees its own data only.
    let (status, _) = call(&a, "GET", "/v1/ns/billing/counter/invoices", None, &shop);
    assert_eq!(status, 403);
    let (status, _) = call(&a, "GET", "/v1/ns/shop/counter/orders", None, &billing);
    assert_eq!(status, 403);
    let (status, _) = call(&a, "GET", "/v1/mirror", None, &billing);
    assert_eq!(status, 403, "mirroring is admin");
    let v = ok(&c, "GET", "/v1/ns", None, &shop);
    assert_eq!(v["namespaces"], serde_json::json!(["shop"]));

    // The CLI's status says the same.
    let status = remote_ok(&a.url, &["--token", "root", "mirror", "status", "billing"]);
    assert!(status.starts_with("billing\tmirrored over "), "{status}");
    assert!(
        status.contains(&format!("{}\tnot shared", c.id)),
        "{status}"
    );
    let status = remote_ok(&c.url, &["--token", "root", "mirror", "status", "readings"]);
    assert!(status.starts_with("readings\tlocal"), "{status}");
}
