//! What the tests of the `atoll` binary share: running it on a data
//! directory, and running nodes (`atoll run`) as child processes.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Runs `atoll --data-dir DIR ARGS`.
pub fn atoll(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_atoll"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("ATOLL_DATA_DIR")
        .env_remove("ATOLL_NS")
        .output()
        .expect("run atoll")
}

/// [`atoll`], which must succeed; its stdout.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let out = atoll(dir, args);
    assert!(
        out.status.success(),
        "atoll {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A child `atoll run` that is killed if the test fails.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    /// Stops it with SIGTERM and waits: it must exit cleanly.
    pub fn stop(mut self) {
        assert!(Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .unwrap()
            .success());
        assert!(self.0.wait().unwrap().success());
    }
}

/// A started node: the process, its node id, peer address, HTTP URL, and
/// the file its log (stderr) goes to.
pub struct Started {
    pub process: Running,
    pub id: String,
    pub addr: String,
    pub url: String,
    pub log: PathBuf,
}

impl Started {
    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts `atoll run` on a config in `dir` named `name` (data in
/// `data-NAME`, certificates in `certs-NAME`, made by `atoll init`), with
/// `extra` TOML lines.
pub fn start(dir: &Path, name: &str, extra: &str) -> Started {
    use std::io::{BufRead, BufReader};
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!("data_dir = \"data-{name}\"\ncert_dir = \"certs-{name}\"\nlisten = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n{extra}\n"),
    )
    .unwrap();
    let log = dir.join(format!("{name}.log"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args(["run", "--config"])
        .arg(dir.join(format!("{name}.toml")))
        .env_remove("ATOLL_NODE")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let first = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    // "atoll node ID listening on ADDR (http URL, data DIR)"
    let words: Vec<&str> = first.split_whitespace().collect();
    assert_eq!(&words[..2], ["atoll", "node"], "{first}");
    Started {
        process: Running(child),
        id: words[2].to_string(),
        addr: words[5].to_string(),
        url: words[7].trim_end_matches(',').to_string(),
        log,
    }
}

/// [`start`] with no extra settings, as a tuple: process, id, address, URL.
pub fn start_node(dir: &Path, name: &str) -> (Running, String, String, String) {
    let s = start(dir, name, "");
    (s.process, s.id, s.addr, s.url)
}

/// Runs `atoll --node URL ARGS`.
pub fn remote(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args(["--node", url])
        .args(args)
        .env_remove("ATOLL_DATA_DIR")
        .env_remove("ATOLL_NS")
        .output()
        .unwrap()
}

/// [`remote`], which must succeed; its stdout.
pub fn remote_ok(url: &str, args: &[&str]) -> String {
    let out = remote(url, args);
    assert!(
        out.status.success(),
        "atoll --node {url} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Makes certificates for a cluster of `names` in `dir` (the first makes the CA).
pub fn init_cluster(dir: &Path, names: &[&str]) {
    let bin = env!("CARGO_BIN_EXE_atoll");
    let run = |args: &[&str]| {
        let out = Command::new(bin)
            .current_dir(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let first = format!("certs-{}", names[0]);
    run(&["init", "--new-cluster", &first]);
    for n in &names[1..] {
        run(&["init", "--join", &first, &format!("certs-{n}")]);
    }
}

/// A new HTTP token from `atoll token create ARGS` in `dir`: the secret,
/// and the `[[http_tokens]]` entry for a node's config (its hash only).
pub fn new_token(dir: &Path, args: &[&str]) -> (String, String) {
    let out = atoll(dir, &[&["token", "create"], args].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let secret = text
        .lines()
        .next()
        .unwrap()
        .strip_prefix("token\t")
        .unwrap()
        .to_string();
    let entry: String = text
        .lines()
        .skip_while(|l| !l.starts_with("[["))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!entry.contains(&secret), "the config keeps the hash only");
    (secret, entry)
}

/// Waits (at most 30 s) until `f` holds.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An HTTP call with these headers (a body is sent as JSON): status,
/// content type and JSON body (`Null` if none).
pub fn http_with(
    method: &str,
    url: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, String, serde_json::Value) {
    let mut req = ureq::request(method, url).timeout(Duration::from_secs(60));
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let res = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    let r = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = r.status();
    let ct = r.content_type().to_string();
    let text = r.into_string().unwrap_or_default();
    (
        status,
        ct,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// Whether `tool` is installed. A test that needs it runs without it only
/// where `required_by` (an environment variable `.ci/run` sets) is unset:
/// there it says what to install, and returns false.
pub fn have_tool(tool: &str, required_by: &str, install: &str) -> bool {
    let have = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        assert!(
            std::env::var(required_by).is_err(),
            "{tool} is required here ({required_by}) and not installed"
        );
        eprintln!("{tool} is not installed ({install}): this test did not run");
    }
    have
}
