//! The CLI against a running node's HTTP API (`--node URL`): the data
//! commands' operations (see `data.rs`), and the admin commands.

use crate::{Cmd, NsCmd, Output, PeerCmd};
use atoll::ops::{path_segment as seg, Request};
use serde_json::{json, Value};

/// A node's HTTP API.
pub(crate) struct Remote {
    base: String,
    token: Option<String>,
}

impl Remote {
    pub(crate) fn new(base: String, token: Option<String>) -> Self {
        // A bare host:port means the plain HTTP API.
        let base = if base.contains("://") {
            base
        } else {
            format!("http://{base}")
        };
        Remote {
            base: base.trim_end_matches('/').to_string(),
            token,
        }
    }

    /// Runs a data operation on the node, in namespace `ns`; its answer.
    pub(crate) fn run_op(&self, op: &Request, ns: &str) -> Result<Value, String> {
        let (method, path, body) = op.request_in(ns);
        self.call(method, &path, body)
    }

    /// `atoll watch`: prints each change event of namespace `ns` as it
    /// comes (`seq`, `name`, `type`, `local` or `merged`; with `json`, the
    /// event's JSON with its `id`), and each `lagged` event, until the
    /// node closes the stream.
    pub(crate) fn watch(
        &self,
        ns: &str,
        prefix: &str,
        after: Option<&str>,
        json: bool,
    ) -> Result<Output, String> {
        use std::io::{BufRead, Write};
        let base = match ns {
            atoll::DEFAULT_NS => "/v1/watch".to_string(),
            ns => format!("/v1/ns/{}/watch", seg(ns)),
        };
        let url = format!("{}{base}?prefix={}", self.base, seg(prefix));
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(std::time::Duration::from_secs(10))
            .build();
        let mut req = agent.get(&url);
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        if let Some(id) = after {
            req = req.set("Last-Event-ID", id);
        }
        let res = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => {
                let v: Value = r.into_json().unwrap_or(Value::Null);
                return Err(v["error"]
                    .as_str()
                    .map_or(format!("{url}: HTTP {code}"), String::from));
            }
            Err(e) => return Err(format!("cannot reach the node at {}: {e}", self.base)),
        };
        let mut out = std::io::stdout().lock();
        let (mut id, mut event) = (String::new(), String::new());
        for line in std::io::BufReader::new(res.into_reader()).lines() {
            let line = line.map_err(|e| format!("the stream broke: {e}"))?;
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                let mut data: Value = serde_json::from_str(v.trim()).unwrap_or(Value::Null);
                let text = match (json, event.as_str()) {
                    (true, _) => {
                        data["event"] = Value::from(event.as_str());
                        if event == "change" {
                            data["id"] = Value::from(id.as_str());
                        }
                        data.to_string()
                    }
                    (false, "change") => format!(
                        "{}\t{}\t{}\t{}",
                        data["seq"],
                        data["name"].as_str().unwrap_or(""),
                        data["type"].as_str().unwrap_or(""),
                        if data["local"] == true {
                            "local"
                        } else {
                            "merged"
                        }
                    ),
                    (false, _) => format!("{event}\t{}", data["why"].as_str().unwrap_or("")),
                };
                // Whoever reads may go away: stop then.
                if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
                    break;
                }
            }
        }
        Ok(Output {
            text: vec![],
            json: Value::Null,
            ok: true,
        })
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{}", self.base, path);
        let mut req = ureq::request(method, &url).timeout(std::time::Duration::from_secs(30));
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match res {
            Ok(r) => r
                .into_json::<Value>()
                .map_err(|e| format!("{url}: bad response: {e}")),
            Err(ureq::Error::Status(code, r)) => {
                let v: Value = r.into_json().unwrap_or(Value::Null);
                Err(v["error"]
                    .as_str()
                    .map_or(format!("{url}: HTTP {code}"), String::from))
            }
            Err(e) => Err(format!("cannot reach the node at {}: {e}", self.base)),
        }
    }
}

fn out(text: Vec<String>, json: Value) -> Output {
    Output {
        text,
        json,
        ok: true,
    }
}

pub(crate) fn run(r: &Remote, cmd: Cmd) -> Result<Output, String> {
    Ok(match cmd {
        Cmd::Mirror(m) => {
            let (method, path) = m.route();
            let v = r.call(method, &path, None)?;
            out(crate::namespaces::mirror_text(&m, &v), v)
        }
        Cmd::Ns(ns) => {
            let (method, path) = match &ns {
                NsCmd::List => ("GET", "/v1/ns".to_string()),
                NsCmd::Create { name } => ("PUT", format!("/v1/ns/{}", seg(name))),
                NsCmd::Drop { name, force } => {
                    ("DELETE", format!("/v1/ns/{}?force={force}", seg(name)))
                }
            };
            let v = r.call(method, &path, None)?;
            let text = match ns {
                NsCmd::List => v["namespaces"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|n| n.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
                NsCmd::Create { name } => vec![format!("namespace {name} created")],
                NsCmd::Drop { name, .. } => vec![match v["dropped"].as_bool() {
                    Some(true) => format!("namespace {name} dropped"),
                    _ => format!("no namespace {name}"),
                }],
            };
            out(text, v)
        }
        Cmd::Info | Cmd::Status => {
            let v = r.call("GET", "/v1/status", None)?;
            let text = vec![
                format!("node\t{}", v["id"].as_str().unwrap_or("")),
                format!("listen\t{}", v["listen"].as_str().unwrap_or("")),
                format!(
                    "variables\t{} ({} in memory, counting {} bytes)",
                    v["variables"], v["variables_loaded"], v["resident_bytes"]
                ),
                format!("log seq\t{}", v["last_seq"]),
                format!(
                    "peers\t{} ({} connected, {} addresses not answering)",
                    v["peers"],
                    v["connected"],
                    v["unanswered"].as_array().map_or(0, Vec::len)
                ),
            ];
            out(text, v)
        }
        Cmd::Check => {
            let v = r.call("POST", "/v1/check", None)?;
            let mut text = vec![format!("check {} in {} ms", v["check"], v["duration_ms"])];
            let mut divergent = false;
            for n in v["nodes"].as_array().into_iter().flatten() {
                let result = n["result"].as_str().unwrap_or("?");
                divergent |= result == "divergent";
                text.push(format!(
                    "{}  {}  {}  {} variables  {}",
                    n["node"].as_str().unwrap_or("?"),
                    n["address"].as_str().unwrap_or("-"),
                    result,
                    n["variables"],
                    n["checksum"].as_str().unwrap_or("-"),
                ));
            }
            for d in v["differing"].as_array().into_iter().flatten() {
                text.push(format!(
                    "differs: {} at {} (here {}, there {})",
                    d["name"].as_str().unwrap_or("?"),
                    d["node"].as_str().unwrap_or("?"),
                    d["here"].as_str().unwrap_or("absent"),
                    d["there"].as_str().unwrap_or("absent"),
                ));
            }
            Output {
                text,
                json: v,
                ok: !divergent,
            }
        }
        Cmd::Peer(p) => match p {
            PeerCmd::Add { addr } => {
                let v = r.call("POST", "/v1/peers", Some(json!({"addr": addr})))?;
                out(vec![v["id"].as_str().unwrap_or("").to_string()], v)
            }
            PeerCmd::Remove { id } => {
                let v = r.call("DELETE", &format!("/v1/peers/{}", seg(&id)), None)?;
                out(
                    vec![format!("removed {}", v["removed"].as_str().unwrap_or(""))],
                    v,
                )
            }
            PeerCmd::Readmit { id } => {
                let v = r.call("POST", &format!("/v1/peers/{}/readmit", seg(&id)), None)?;
                out(
                    vec![format!(
                        "readmitted {}",
                        v["readmitted"].as_str().unwrap_or("")
                    )],
                    v,
                )
            }
            PeerCmd::List => {
                // A state transfer's progress, or "-".
                let transfer = |t: &serde_json::Value| -> String {
                    if t.is_null() {
                        return "-".into();
                    }
                    let through = t["done_through"].as_str().unwrap_or("");
                    let why = t["why"]
                        .as_str()
                        .map_or(String::new(), |w| format!(" ({w})"));
                    let mut s = format!(
                        "to seq {}{why}, done through {}",
                        t["as_of"],
                        if through.is_empty() {
                            "(none yet)"
                        } else {
                            through
                        }
                    );
                    if let Some(name) = t["in_parts"]["name"].as_str() {
                        s += &format!(
                            "; {name} in parts: {} sent, {} acked",
                            t["in_parts"]["sent"], t["in_parts"]["acked"]
                        );
                    }
                    if let Some(why) = t["blocked"]["why"].as_str() {
                        s += &format!("; HELD BACK: {why}");
                    }
                    s
                };
                let v = r.call("GET", "/v1/peers", None)?;
                let mut text = vec![
                    "id\taddress\tconnected\tlast contact ms\tacked\tlag\tbytes in\tbytes out\ttransfer\tlast disconnect\tlag ms\tholds\tstuck"
                        .to_string(),
                ];
                if let Some(rows) = v["peers"].as_array() {
                    for p in rows {
                        let stuck = match p["stuck"]["reason"].as_str() {
                            Some(why) => format!("for {} ms: {why}", p["stuck"]["since_ms_ago"]),
                            None => "-".into(),
                        };
                        text.push(format!(
                            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                            p["id"].as_str().unwrap_or(""),
                            p["addr"].as_str().unwrap_or("-"),
                            p["connected"],
                            p["last_contact_ms_ago"],
                            p["acked"],
                            p["lag"],
                            p["bytes_in"],
                            p["bytes_out"],
                            transfer(&p["transfer"]),
                            p["last_disconnect"].as_str().unwrap_or("-"),
                            p["lag_ms"],
                            p["holds"],
                            stuck,
                        ));
                    }
                }
                for a in v["unanswered"].as_array().into_iter().flatten() {
                    let since = a["since_ms_ago"].as_u64().unwrap_or(0);
                    text.push(match a["reason"].as_str() {
                        Some(why) => format!(
                            "-\t{}\tno: refused for {since} ms: {why}",
                            a["addr"].as_str().unwrap_or("")
                        ),
                        None => format!(
                            "-\t{}\tno: dialing for {since} ms, no answer",
                            a["addr"].as_str().unwrap_or("")
                        ),
                    });
                }
                for id in v["removed"].as_array().into_iter().flatten() {
                    text.push(format!(
                        "{}\tremoved (refused by every node)",
                        id.as_str().unwrap_or("")
                    ));
                }
                out(text, v)
            }
        },
        _ => unreachable!("data commands, init and run are handled before"),
    })
}
