//! `atoll run`'s configuration file, read into a `NodeConfig`: every
//! setting checked once, with errors that name the file, the field, the
//! value and what is accepted.

use std::path::{Path, PathBuf};

/// `atoll run`'s configuration file. Relative paths are relative to the file.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RunConfig {
    /// The data directory.
    data_dir: PathBuf,
    /// The certificate directory made by `atoll init`.
    cert_dir: PathBuf,
    /// The address to listen on for peers (host:port; a host name is resolved).
    listen: String,
    /// Peers to connect to (host:port each; a host name is resolved at
    /// start and again while the node runs).
    #[serde(default)]
    peers: Vec<String>,
    /// Where the local HTTP API listens (default 127.0.0.1:7780; "off" for none).
    http: Option<String>,
    /// The HTTP API's bearer token (required unless it listens on loopback).
    http_token: Option<String>,
    /// "durable" (default) or "buffered".
    #[serde(default)]
    durability: Option<String>,
    /// With "buffered": the flush interval (default 100).
    flush_every_ms: Option<u64>,
    /// Delta-log entries kept (default 100000).
    log_retain: Option<u64>,
    /// The variables kept in memory, by encoded size plus a fixed cost
    /// each (default: all used).
    cache_bytes: Option<usize>,
    /// Delta-log entries between checkpoints (default 4096).
    checkpoint_every: Option<u64>,
    /// Join runs of delta-log entries into entries of up to this many bytes
    /// at each checkpoint (default 65536; 0: never).
    coalesce_bytes: Option<usize>,
    /// Re-send unacknowledged deltas after this long (default 1000).
    retransmit_ms: Option<u64>,
    /// The least time between two delta messages to one peer, so that writes
    /// in between travel together (default 0: send each write at once).
    gossip_interval_ms: Option<u64>,
    /// A peer that holds nothing of a log spanning this many entries is sent
    /// the state instead (default 4096; 0: never).
    state_for_new_peers_after: Option<u64>,
    /// In a state transfer, a variable's state larger than this goes in parts
    /// of about this size (default 65536).
    state_part_bytes: Option<usize>,
    /// The largest variable state accepted from a peer in a state transfer
    /// (default 67108864; at most 268435456).
    max_state_len: Option<usize>,
    /// The most delta bytes per message (default 262144).
    max_batch_bytes: Option<usize>,
    /// The most delta messages in flight to one peer (default 8; 1 is stop-and-wait).
    max_in_flight: Option<usize>,
    /// How long a request for a variable's owner waits for its answer
    /// (default 5000).
    request_timeout_ms: Option<u64>,
    /// The most requests waiting for answers from one peer (default 1024).
    max_requests_per_peer: Option<usize>,
    /// Answers of requests applied here kept for requests sent again
    /// (default 4096).
    answers_kept: Option<usize>,
    /// Move an owned variable to the node that uses it most after this many
    /// operations in the window (default 32; 0: never).
    migrate_min_ops: Option<u32>,
    /// The share of them (percent, 51 to 100) one other node must have asked
    /// for (default 75).
    migrate_share_pct: Option<u8>,
    /// The window (default 10000).
    migrate_window_ms: Option<u64>,
    /// The least time between two moves of one variable (default 30000).
    migrate_cooldown_ms: Option<u64>,
    /// How often bag elements move to connected nodes whose shares are low
    /// (default 1000; 0: never).
    rebalance_every_ms: Option<u64>,
    /// The most elements given away per bag per round (default 64).
    rebalance_max_moves: Option<usize>,
    /// This node's site, for placement rules.
    site: Option<String>,
    /// How often the node checks its peers' consistency (ms; none: never
    /// by itself).
    check_every_ms: Option<u64>,
    /// Where check reports go: "log" (default) or "file" (`check_file`).
    check_exporter: Option<String>,
    /// The file of JSON lines, with `check_exporter = "file"`.
    check_file: Option<PathBuf>,
    /// Which reports: "on_conflict" (default) or "always".
    check_report: Option<String>,
    /// Variables owned by rule: `[[owned]]` tables.
    #[serde(default)]
    owned: Vec<OwnedToml>,
    /// The HTTP API's tokens per namespace: `[[http_tokens]]` tables
    /// (`atoll token create` prints one).
    #[serde(default)]
    http_tokens: Vec<TokenToml>,
}

/// An `[[http_tokens]]` entry: a token kept as its SHA-256 (64 hex
/// digits), the namespaces it reaches (`"*"`: all) and its access
/// (`read`, `write` or `admin`).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenToml {
    sha256: String,
    namespaces: Vec<String>,
    access: String,
}

/// The tokens, checked.
fn http_tokens(tokens: Vec<TokenToml>) -> Result<Vec<atoll::HttpToken>, String> {
    tokens
        .into_iter()
        .map(|t| {
            let access = atoll::Access::parse(&t.access).ok_or_else(|| {
                format!(
                    "[[http_tokens]] access = {:?}: say \"read\", \"write\" or \"admin\"",
                    t.access
                )
            })?;
            if t.namespaces.is_empty() {
                return Err(
                    "[[http_tokens]]: namespaces is empty; name some, or \"*\" for all".into(),
                );
            }
            for ns in t.namespaces.iter().filter(|n| *n != "*") {
                atoll::validate_namespace(ns).map_err(|e| format!("[[http_tokens]]: {e}"))?;
            }
            atoll::HttpToken::from_hash(&t.sha256, t.namespaces, access).ok_or_else(|| {
                format!(
                    "[[http_tokens]] sha256 = {:?}: 64 hex digits (atoll token create prints it)",
                    t.sha256
                )
            })
        })
        .collect()
}

/// An `[[owned]]` rule: names beginning with `prefix` are owned, on the
/// node or site `placement` names (a node id is 16 hex digits; anything
/// else is a site), or where first used.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnedToml {
    prefix: String,
    placement: Option<String>,
}

/// The placement rules, checked: a prefix that can name a variable, a
/// placement that is a node id or a site name.
fn owned_rules(rules: Vec<OwnedToml>) -> Result<Vec<atoll::OwnedRule>, String> {
    rules
        .into_iter()
        .map(|r| {
            if r.prefix.is_empty() || atoll::is_reserved(&r.prefix) {
                return Err(format!(
                    "[[owned]] prefix = {:?}: a prefix must be non-empty and outside the system's \"_atoll.\"",
                    r.prefix
                ));
            }
            let place = match r.placement {
                None => atoll::Place::Anywhere,
                Some(p) if p.len() == 16 && p.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    atoll::Place::Node(atoll::ReplicaId(u64::from_str_radix(&p, 16).map_err(|e| e.to_string())?))
                }
                Some(p) if p.is_empty() => {
                    return Err(format!("[[owned]] prefix = {:?}: placement is a node id (16 hex digits) or a site name, not empty", r.prefix))
                }
                Some(site) => atoll::Place::Site(site),
            };
            Ok(atoll::OwnedRule {
                prefix: r.prefix,
                place,
            })
        })
        .collect()
}

pub(crate) fn node_config(path: &Path) -> Result<atoll::NodeConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let rc: RunConfig =
        toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let file = path.display();
    let resolve = |field: &str, value: &str| -> Result<std::net::SocketAddr, String> {
        atoll::resolve_peer(value).map_err(|why| {
            format!("{file}: {field} = {value:?} is not an address: {why} (say host:port, like 127.0.0.1:7700 or localhost:7700)")
        })
    };
    let listen = resolve("listen", &rc.listen)?;
    let mut c = atoll::NodeConfig::new(base.join(&rc.data_dir), base.join(&rc.cert_dir), listen);
    // An address is dialed as it is; a host name must resolve now, and is
    // resolved again while the node runs (it follows the host).
    for p in &rc.peers {
        match p.parse::<std::net::SocketAddr>() {
            Ok(addr) => c.peers.push(addr),
            Err(_) => {
                resolve("peers", p)?;
                c.peer_hosts.push(p.clone());
            }
        }
    }
    // flush_every_ms may be given without "buffered", where the store's
    // check does not look at it; every other number is checked with the
    // whole configuration, below.
    if let Some(v) = rc.flush_every_ms {
        atoll::check_range("flush_every_ms", v, 1, 3_600_000)
            .map_err(|e| format!("{file}: {e}"))?;
    }
    c.http = match rc.http.as_deref() {
        None => Some(std::net::SocketAddr::from(([127, 0, 0, 1], 7780))),
        Some("off") => None,
        Some(a) => Some(a.parse().map_err(|_| {
            format!(
                "{}: http {a:?} is not an address like 127.0.0.1:7780 (or \"off\")",
                path.display()
            )
        })?),
    };
    c.http_token = rc.http_token;
    c.store.durability = match rc.durability.as_deref() {
        None | Some("durable") => atoll::Durability::Durable,
        Some("buffered") => atoll::Durability::Buffered {
            flush_every_ms: rc.flush_every_ms.unwrap_or(100),
        },
        Some(other) => {
            return Err(format!(
                "{}: durability is \"durable\" or \"buffered\", not {other:?}",
                path.display()
            ))
        }
    };
    if let Some(v) = rc.log_retain {
        c.store.log_retain = v;
    }
    if let Some(v) = rc.cache_bytes {
        c.store.cache_bytes = Some(v);
    }
    if let Some(v) = rc.checkpoint_every {
        c.store.checkpoint_every = v;
    }
    if let Some(v) = rc.coalesce_bytes {
        c.store.coalesce_bytes = v;
    }
    if let Some(v) = rc.retransmit_ms {
        c.replica.retransmit_ms = v;
    }
    if let Some(v) = rc.gossip_interval_ms {
        c.replica.gossip_interval_ms = v;
    }
    if let Some(v) = rc.state_for_new_peers_after {
        c.replica.state_for_new_peers_after = v;
    }
    if let Some(v) = rc.state_part_bytes {
        c.replica.state_part_bytes = v;
    }
    if let Some(v) = rc.max_state_len {
        c.replica.max_state_len = v;
    }
    if let Some(v) = rc.max_batch_bytes {
        c.replica.max_batch_bytes = v;
    }
    if let Some(v) = rc.max_in_flight {
        c.replica.max_in_flight = v;
    }
    if let Some(v) = rc.request_timeout_ms {
        c.replica.request_timeout_ms = v;
    }
    if let Some(v) = rc.max_requests_per_peer {
        c.replica.max_requests_per_peer = v;
    }
    if let Some(v) = rc.answers_kept {
        c.replica.answers_kept = v;
    }
    let m = &mut c.replica.migration;
    m.min_ops = rc.migrate_min_ops.unwrap_or(m.min_ops);
    m.share_pct = rc.migrate_share_pct.unwrap_or(m.share_pct);
    m.window_ms = rc.migrate_window_ms.unwrap_or(m.window_ms);
    m.cooldown_ms = rc.migrate_cooldown_ms.unwrap_or(m.cooldown_ms);
    let r = &mut c.replica.rebalance;
    r.every_ms = rc.rebalance_every_ms.unwrap_or(r.every_ms);
    r.max_moves = rc.rebalance_max_moves.unwrap_or(r.max_moves);
    if rc.site.as_deref() == Some("") {
        return Err(format!("{file}: site must not be empty"));
    }
    c.replica.site = rc.site;
    c.checks.every_ms = rc.check_every_ms;
    c.checks.exporter = match (rc.check_exporter.as_deref(), rc.check_file) {
        (None | Some("log"), None) => atoll::CheckExporter::Log,
        (Some("file"), Some(path)) => atoll::CheckExporter::File(base.join(path)),
        (Some("file"), None) => {
            return Err(format!(
                "{file}: check_exporter = \"file\" needs check_file"
            ))
        }
        (None | Some("log"), Some(_)) => {
            return Err(format!(
                "{file}: check_file is for check_exporter = \"file\""
            ))
        }
        (Some(other), _) => {
            return Err(format!(
                "{file}: check_exporter is \"log\" or \"file\", not {other:?}"
            ))
        }
    };
    c.checks.report = match rc.check_report.as_deref() {
        None | Some("on_conflict") => atoll::CheckReporting::OnConflict,
        Some("always") => atoll::CheckReporting::Always,
        Some(other) => {
            return Err(format!(
                "{file}: check_report is \"always\" or \"on_conflict\", not {other:?}"
            ))
        }
    };
    c.replica.owned = owned_rules(rc.owned).map_err(|e| format!("{file}: {e}"))?;
    c.http_tokens = http_tokens(rc.http_tokens).map_err(|e| format!("{file}: {e}"))?;
    c.validate().map_err(|e| format!("{file}: {e}"))?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::node_config;

    fn config(extra: &str) -> Result<atoll::NodeConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let text = format!(
            "data_dir = \"data\"\ncert_dir = \"certs\"\nlisten = \"127.0.0.1:0\"\n{extra}\n"
        );
        std::fs::write(&path, text).unwrap();
        node_config(&path)
    }

    #[test]
    fn cache_bytes_is_read() {
        assert_eq!(config("").unwrap().store.cache_bytes, None);
        let set = config("cache_bytes = 1048576").unwrap();
        assert_eq!(set.store.cache_bytes, Some(1 << 20));
    }

    #[test]
    fn state_part_bytes_is_read_and_checked() {
        let default = config("").unwrap();
        assert_eq!(default.replica.state_part_bytes, 64 << 10);
        let set = config("state_part_bytes = 1000").unwrap();
        assert_eq!(set.replica.state_part_bytes, 1000);
        let err = config("state_part_bytes = 0").err().unwrap();
        assert!(
            err.contains("state_part_bytes = 0 is out of range: it must be from 1 to"),
            "{err}"
        );
    }

    #[test]
    fn max_state_len_is_read_and_checked() {
        let default = config("").unwrap();
        assert_eq!(default.replica.max_state_len, 64 << 20);
        let set = config("max_state_len = 200000000").unwrap();
        assert_eq!(set.replica.max_state_len, 200_000_000);
        for bad in ["0", "300000000"] {
            let err = config(&format!("max_state_len = {bad}")).err().unwrap();
            assert!(
                err.contains(&format!("max_state_len = {bad} is out of range")),
                "{err}"
            );
        }
    }

    #[test]
    fn every_number_is_range_checked_naming_the_field_and_value() {
        for (field, bad) in [
            ("log_retain", "0"),
            ("checkpoint_every", "0"),
            ("retransmit_ms", "0"),
            ("flush_every_ms", "0"),
            ("max_in_flight", "0"),
            ("max_batch_bytes", "0"),
            ("request_timeout_ms", "0"),
            ("max_requests_per_peer", "0"),
            ("answers_kept", "0"),
            ("migrate_share_pct", "50"),
            ("migrate_window_ms", "0"),
            ("rebalance_max_moves", "0"),
        ] {
            let err = config(&format!("{field} = {bad}")).err().unwrap();
            assert!(
                err.contains(&format!("{field} = {bad} is out of range: it must be from")),
                "{field}: {err}"
            );
        }
    }

    #[test]
    fn check_settings_are_read_and_checked() {
        let default = config("").unwrap();
        assert_eq!(default.checks, atoll::CheckConfig::default());
        let set = config(
            "check_every_ms = 60000\ncheck_exporter = \"file\"\ncheck_file = \"c.jsonl\"\ncheck_report = \"always\"",
        )
        .unwrap();
        assert_eq!(set.checks.every_ms, Some(60_000));
        assert!(
            matches!(&set.checks.exporter, atoll::CheckExporter::File(p) if p.ends_with("c.jsonl"))
        );
        assert_eq!(set.checks.report, atoll::CheckReporting::Always);
        for (bad, says) in [
            ("check_exporter = \"file\"", "needs check_file"),
            ("check_file = \"x\"", "is for check_exporter"),
            ("check_exporter = \"syslog\"", "not \"syslog\""),
            ("check_report = \"never\"", "not \"never\""),
        ] {
            let err = config(bad).err().unwrap();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn placement_rules_and_the_site_are_read_and_checked() {
        let c = config(
            "site = \"paris\"\n[[owned]]\nprefix = \"stock:\"\nplacement = \"lyon\"\n\
             [[owned]]\nprefix = \"lock:\"\nplacement = \"00000000000000ff\"\n\
             [[owned]]\nprefix = \"job:\"\n",
        )
        .unwrap();
        assert_eq!(c.replica.site.as_deref(), Some("paris"));
        let places: Vec<_> = c
            .replica
            .owned
            .iter()
            .map(|r| (r.prefix.as_str(), r.place.clone()))
            .collect();
        assert_eq!(
            places,
            [
                ("stock:", atoll::Place::Site("lyon".into())),
                ("lock:", atoll::Place::Node(atoll::ReplicaId(255))),
                ("job:", atoll::Place::Anywhere),
            ]
        );
        for bad in ["prefix = \"\"", "prefix = \"_atoll.x\""] {
            let err = config(&format!("[[owned]]\n{bad}")).err().unwrap();
            assert!(err.contains("a prefix must be non-empty"), "{err}");
        }
        let err = config("[[owned]]\nprefix = \"a\"\nsite = \"x\"")
            .err()
            .unwrap();
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn addresses_may_be_host_names_and_a_bad_one_names_the_field_and_value() {
        let c = config("peers = [\"localhost:7711\", \"127.0.0.1:7712\"]").unwrap();
        assert_eq!(c.peer_hosts, ["localhost:7711"]);
        assert_eq!(c.peers, ["127.0.0.1:7712".parse().unwrap()]);
        let err = config("peers = [\"nonsense\"]").err().unwrap();
        assert!(
            err.contains("peers = \"nonsense\" is not an address"),
            "{err}"
        );
    }
}
