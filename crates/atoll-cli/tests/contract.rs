//! The HTTP API against its published contract: schemathesis (from PyPI)
//! reads `GET /v1/openapi.json` of a running `atoll run` node and drives
//! every route it lists with generated requests (valid and invalid), with
//! a bounded number of examples. No answer may be a 5xx, and every answer
//! must match the document (status, content type, body schema).
//!
//! Needs schemathesis (`pip install schemathesis`; `.ci/run` installs it
//! and sets `ATOLL_REQUIRE_SCHEMATHESIS=1`, so that there the test cannot
//! pass without it). Without it and that variable, the test says so and
//! passes.

mod common;

use common::{init_cluster, start};
use std::process::Command;

#[test]
fn every_route_keeps_the_published_contract() {
    if !common::have_tool(
        "schemathesis",
        "ATOLL_REQUIRE_SCHEMATHESIS",
        "pip install schemathesis",
    ) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    init_cluster(d.path(), &["a"]);
    let a = start(d.path(), "a", "");
    // The document lists the routes the router serves.
    let doc: serde_json::Value = ureq::get(&format!("{}/v1/openapi.json", a.url))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    for path in [
        "/v1/counter/{name}",
        "/v1/ns/{ns}",
        "/v1/watch",
        "/v1/peers",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} in the document");
    }
    // Its cache goes in the test's directory, not the checkout.
    let out = Command::new("schemathesis")
        .current_dir(d.path())
        .arg("run")
        .arg(format!("{}/v1/openapi.json", a.url))
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,content_type_conformance",
            // A stream never ends: its contract is tested in namespaces.rs.
            "--exclude-path",
            "/v1/watch",
            "--max-examples",
            "10",
            "--phases",
            "examples,coverage,fuzzing",
            "--request-timeout",
            "10",
            "--no-color",
            // The same cases each run.
            "--seed",
            "1",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("schemathesis runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("passed"), "{text}");
}
