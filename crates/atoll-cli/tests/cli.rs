//! The `atoll` binary against a data dir: writes persist across invocations,
//! errors are one line on stderr with a non-zero exit.

mod common;

use common::{atoll, ok, remote, remote_ok, start_node};
use std::process::Command;

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

/// Owned variables on a data directory (a node of its own): strong
/// operations answer by exit code, ownership changes show in `owner`.
#[test]
fn strong_operations_need_an_owner_and_answer_by_exit_code() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let code = |args: &[&str]| atoll(d, args).status.code();
    assert_eq!(
        code(&["register", "cas", "lock", "a"]),
        Some(1),
        "not owned"
    );
    assert_eq!(ok(d, &["owner", "lock"]), "ownerless (epoch 0)\n");
    assert!(ok(d, &["own", "lock"]).starts_with("owner "));
    assert_eq!(ok(d, &["register", "cas", "lock", "a"]), "swapped\n");
    assert_eq!(code(&["register", "cas", "lock", "b"]), Some(1));
    assert_eq!(
        ok(d, &["register", "cas", "lock", "b", "--expected", "a"]),
        "swapped\n"
    );
    ok(d, &["own", "users"]);
    assert_eq!(ok(d, &["set", "claim", "users", "ann"]), "claimed\n");
    assert_eq!(code(&["set", "claim", "users", "ann"]), Some(1));
    ok(d, &["own", "stock"]);
    ok(d, &["counter", "incr", "stock", "3"]);
    assert_eq!(ok(d, &["counter", "decr-if", "stock", "2"]), "1\n");
    assert_eq!(code(&["counter", "decr-if", "stock", "2"]), Some(1));
    ok(d, &["own", "release", "lock"]);
    assert_eq!(ok(d, &["owner", "lock"]), "ownerless (epoch 2)\n");
    assert_eq!(
        ok(d, &["own", "force", "lock", "--to", "00000000000000ff"]),
        "owner 00000000000000ff (epoch 3), forced by an operator\n"
    );
    // Ownership records are not listed as variables.
    assert_eq!(
        ok(d, &["ls"]),
        "lock\tregister\nstock\tcounter\nusers\tset\n"
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

#[test]
fn two_run_processes_joined_by_peer_add_converge_through_the_cli() {
    let d = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_atoll");
    let init = |args: &[&str]| {
        assert!(Command::new(bin)
            .current_dir(d.path())
            .args(args)
            .output()
            .unwrap()
            .status
            .success())
    };
    init(&["init", "--new-cluster", "certs-one"]);
    init(&["init", "--join", "certs-one", "certs-two"]);
    let (mut one, _id1, _addr1, url1) = start_node(d.path(), "one");
    let (mut two, id2, addr2, url2) = start_node(d.path(), "two");
    // peer add connects, learns the peer's id and prints it.
    assert_eq!(remote_ok(&url1, &["peer", "add", &addr2]).trim(), id2);
    remote_ok(&url1, &["counter", "incr", "hits", "5"]);
    remote_ok(&url2, &["counter", "incr", "hits", "7"]);
    remote_ok(&url2, &["set", "add", "tags", "x", "y"]);
    remote_ok(&url1, &["register", "set", "motd", "hello"]);
    remote_ok(&url1, &["bag", "insert", "jobs", "j1"]);
    remote_ok(&url2, &["map", "incr", "cart", "apples", "3"]);
    let start = std::time::Instant::now();
    loop {
        let a = remote_ok(&url1, &["counter", "get", "hits"]);
        let b = remote_ok(&url2, &["counter", "get", "hits"]);
        if a == "12\n" && b == "12\n" {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "no convergence: {a:?} {b:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let start = std::time::Instant::now();
    while remote_ok(&url1, &["map", "get", "cart", "apples"]) != "counter\t3\nregister\t\nset\t\n"
        || remote_ok(&url2, &["bag", "list", "jobs"]).lines().count() != 1
    {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "the other variables did not converge"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(remote_ok(&url1, &["set", "list", "tags"]), "x\ny\n");
    assert_eq!(remote_ok(&url2, &["register", "get", "motd"]), "hello\n");
    // Only the owner can take; the other side sees it gone.
    assert_eq!(
        remote(&url2, &["bag", "take", "jobs"]).status.code(),
        Some(1)
    );
    assert_eq!(remote_ok(&url1, &["bag", "take", "jobs"]), "j1\n");
    let peers = remote_ok(&url1, &["peer", "list"]);
    assert!(
        peers.lines().nth(1).is_some_and(|l| l.starts_with(&id2)
                && l.split('\t').nth(2) == Some("true")
                // No transfer under way.
                && l.split('\t').nth(8) == Some("-")),
        "{peers}"
    );
    assert!(
        peers.starts_with("id\taddress")
            && peers
                .lines()
                .next()
                .unwrap()
                .ends_with("\ttransfer\tlast disconnect\tlag ms\tholds\tstuck")
    );
    let status = remote_ok(&url2, &["status"]);
    assert!(
        status.contains("peers\t1 (1 connected, 0 addresses not answering)"),
        "{status}"
    );
    assert!(
        status.contains(" in memory, ") && status.contains(" bytes)"),
        "{status}"
    );
    assert!(remote_ok(&url1, &["ls"]).contains("hits\tcounter"));
    // Errors through the API are one clear line too.
    let mismatch = remote(&url1, &["set", "add", "hits", "z"]);
    assert_eq!(mismatch.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&mismatch.stderr).contains("is a counter, not a set"));
    // Removing a peer, then readmitting it.
    assert_eq!(
        remote_ok(&url1, &["peer", "remove", &id2]).trim(),
        format!("removed {id2}")
    );
    assert!(remote_ok(&url1, &["peer", "list"])
        .contains(&format!("{id2}\tremoved (refused by every node)")));
    assert_eq!(
        remote_ok(&url1, &["peer", "readmit", &id2]).trim(),
        format!("readmitted {id2}")
    );
    assert!(!remote_ok(&url1, &["peer", "list"]).contains("removed"));
    let again = remote(&url1, &["peer", "readmit", &id2]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not removed"));
    for node in [&mut one, &mut two] {
        assert!(Command::new("kill")
            .args(["-TERM", &node.0.id().to_string()])
            .status()
            .unwrap()
            .success());
        assert!(node.0.wait().unwrap().success());
    }
}

#[test]
fn peer_and_status_need_a_node() {
    let d = tempfile::tempdir().unwrap();
    let out = atoll(d.path(), &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--node URL"));
    let out = remote("http://127.0.0.1:9", &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the node"));
}
