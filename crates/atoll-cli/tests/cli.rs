//! The `atoll` binary against a data dir: writes persist across invocations,
//! errors are one line on stderr with a non-zero exit.

use std::path::Path;
use std::process::{Command, Output};

fn atoll(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_atoll"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("ATOLL_DATA_DIR")
        .output()
        .expect("run atoll")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = atoll(dir, args);
    assert!(
        out.status.success(),
        "atoll {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_second_invocation_sees_the_first_ones_writes() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    assert_eq!(ok(d, &["counter", "incr", "hits", "5"]), "5\n");
    assert_eq!(ok(d, &["counter", "decr", "hits", "2"]), "3\n");
    assert_eq!(ok(d, &["counter", "get", "hits"]), "3\n");
    ok(d, &["register", "set", "motd", "hello world"]);
    assert_eq!(ok(d, &["register", "get", "motd"]), "hello world\n");
    ok(d, &["set", "add", "tags", "a", "b", "c"]);
    ok(d, &["set", "remove", "tags", "b"]);
    assert_eq!(ok(d, &["set", "list", "tags"]), "a\nc\n");
    assert!(atoll(d, &["set", "contains", "tags", "a"]).status.success());
    assert_eq!(
        atoll(d, &["set", "contains", "tags", "b"]).status.code(),
        Some(1)
    );
    ok(d, &["bag", "insert", "jobs", "j1", "j2"]);
    let taken = ok(d, &["bag", "take", "jobs"]);
    assert!(taken == "j1\n" || taken == "j2\n", "{taken}");
    assert_eq!(ok(d, &["bag", "list", "jobs"]).lines().count(), 1);
    ok(d, &["bag", "take", "jobs"]);
    let none = atoll(d, &["bag", "take", "jobs"]);
    assert_eq!(
        none.status.code(),
        Some(1),
        "taking from an empty bag exits 1"
    );
    ok(d, &["map", "incr", "cart", "apples", "3"]);
    ok(d, &["map", "set", "cart", "note", "ring"]);
    assert!(ok(d, &["map", "get", "cart", "apples"]).contains("counter\t3"));
    assert_eq!(ok(d, &["map", "keys", "cart"]), "apples\nnote\n");
    assert_eq!(
        ok(d, &["ls"]),
        "cart\tmap\nhits\tcounter\njobs\tbag\nmotd\tregister\ntags\tset\n"
    );
}

#[test]
fn json_output_is_machine_readable() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    ok(d, &["counter", "incr", "hits", "7"]);
    ok(d, &["set", "add", "s", "x"]);
    let v: serde_json::Value =
        serde_json::from_str(&ok(d, &["--json", "counter", "get", "hits"])).unwrap();
    assert_eq!(v["value"], 7);
    let v: serde_json::Value = serde_json::from_str(&ok(d, &["--json", "ls"])).unwrap();
    assert_eq!(v["variables"][0]["name"], "hits");
    assert_eq!(v["variables"][0]["type"], "counter");
    assert_eq!(v["variables"][1]["type"], "set");
    let v: serde_json::Value = serde_json::from_str(&ok(d, &["--json", "info"])).unwrap();
    assert_eq!(v["variables"], 2);
    assert_eq!(v["last_seq"], 2);
}

#[test]
fn a_type_mismatch_exits_non_zero_naming_both_types() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    ok(d, &["counter", "incr", "hits"]);
    let out = atoll(d, &["set", "add", "hits", "x"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("counter") && err.contains("set"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_input_says_what_to_fix() {
    let d = tempfile::tempdir().unwrap();
    let out = atoll(d.path(), &["counter", "incr", "has space"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: invalid variable name"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args(["counter", "get", "x"])
        .env_remove("ATOLL_DATA_DIR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("--data-dir"));
}

#[test]
fn init_and_run_a_node_that_stops_gracefully_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let d = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_atoll");
    let init = Command::new(bin)
        .args(["init", "--new-cluster"])
        .arg(d.path().join("certs"))
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    // Data written before the node runs is served by it and still there after.
    ok(&d.path().join("data"), &["counter", "incr", "hits", "4"]);
    std::fs::write(
        d.path().join("node.toml"),
        "data_dir = \"data\"\ncert_dir = \"certs\"\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let mut child = Command::new(bin)
        .args(["run", "--config"])
        .arg(d.path().join("node.toml"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("listening on 127.0.0.1:"), "{first}");
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "node exited with {status}");
    assert_eq!(lines.next().unwrap().unwrap(), "stopped; data flushed");
    assert_eq!(
        ok(&d.path().join("data"), &["counter", "get", "hits"]),
        "4\n"
    );
}

#[test]
fn a_bad_run_config_is_one_clear_error() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("bad.toml"),
        "listen = \"127.0.0.1:0\"\nlisten_port = 3\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args(["run", "--config"])
        .arg(d.path().join("bad.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("bad.toml"), "{err}");
}
