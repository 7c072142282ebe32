//! The data and admin commands against a running node's HTTP API (`--node URL`).

use crate::{BagCmd, Cmd, CounterCmd, MapCmd, Output, PeerCmd, RegisterCmd, SetCmd};
use serde_json::{json, Value};

/// A node's HTTP API.
pub(crate) struct Remote {
    base: String,
    token: Option<String>,
}

/// Percent-encodes a path segment (names may hold `/`, `:` and `@`).
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Remote {
    pub(crate) fn new(base: String, token: Option<String>) -> Self {
        Remote {
            base: base.trim_end_matches('/').to_string(),
            token,
        }
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

fn lines(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().map_or(x.to_string(), String::from))
                .collect()
        })
        .unwrap_or_default()
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
        Cmd::Counter(c) => {
            let v = match c {
                CounterCmd::Incr { name, n } => r.call(
                    "POST",
                    &format!("/v1/counter/{}", seg(&name)),
                    Some(json!({"by": n})),
                )?,
                CounterCmd::Decr { name, n } => {
                    let by = n.checked_neg().ok_or("decrement too large")?;
                    r.call(
                        "POST",
                        &format!("/v1/counter/{}", seg(&name)),
                        Some(json!({"by": by})),
                    )?
                }
                CounterCmd::Get { name } => {
                    r.call("GET", &format!("/v1/counter/{}", seg(&name)), None)?
                }
            };
            out(vec![v["value"].to_string()], v)
        }
        Cmd::Register(c) => match c {
            RegisterCmd::Set { name, value } => {
                let v = r.call(
                    "PUT",
                    &format!("/v1/register/{}", seg(&name)),
                    Some(json!({"value": value})),
                )?;
                out(vec!["ok".into()], v)
            }
            RegisterCmd::Get { name } => {
                let v = r.call("GET", &format!("/v1/register/{}", seg(&name)), None)?;
                out(
                    v["value"]
                        .as_str()
                        .map(|s| vec![s.to_string()])
                        .unwrap_or_default(),
                    v,
                )
            }
        },
        Cmd::Set(c) => match c {
            SetCmd::Add { name, members } => {
                let v = r.call(
                    "POST",
                    &format!("/v1/set/{}", seg(&name)),
                    Some(json!({"add": members})),
                )?;
                out(vec!["ok".into()], v)
            }
            SetCmd::Remove { name, members } => {
                let v = r.call(
                    "POST",
                    &format!("/v1/set/{}", seg(&name)),
                    Some(json!({"remove": members})),
                )?;
                out(vec![format!("removed {}", lines(&v["removed"]).len())], v)
            }
            SetCmd::List { name } => {
                let v = r.call("GET", &format!("/v1/set/{}", seg(&name)), None)?;
                out(lines(&v["members"]), v)
            }
            SetCmd::Contains { name, member } => {
                let v = r.call("GET", &format!("/v1/set/{}", seg(&name)), None)?;
                let has = lines(&v["members"]).contains(&member);
                Output {
                    text: vec![has.to_string()],
                    json: json!({"name": name, "member": member, "present": has}),
                    ok: has,
                }
            }
        },
        Cmd::Bag(c) => match c {
            BagCmd::Insert { name, values } => {
                let v = r.call(
                    "POST",
                    &format!("/v1/bag/{}", seg(&name)),
                    Some(json!({"insert": values})),
                )?;
                out(lines(&v["ids"]), v)
            }
            BagCmd::Take { name } => {
                let v = r.call("POST", &format!("/v1/bag/{}/take", seg(&name)), None)?;
                let taken = v["taken"].as_str().map(String::from);
                Output {
                    ok: taken.is_some(),
                    text: taken.into_iter().collect(),
                    json: v,
                }
            }
            BagCmd::List { name } => {
                let v = r.call("GET", &format!("/v1/bag/{}", seg(&name)), None)?;
                let text = v["elements"]
                    .as_array()
                    .map(|els| {
                        els.iter()
                            .map(|e| {
                                format!(
                                    "{}\t{}\t{}",
                                    e["id"].as_str().unwrap_or(""),
                                    e["owner"].as_str().unwrap_or(""),
                                    e["value"].as_str().unwrap_or("")
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out(text, v)
            }
        },
        Cmd::Map(c) => match c {
            MapCmd::Incr { name, key, n } => {
                let v = r.call(
                    "POST",
                    &format!("/v1/map/{}/{}", seg(&name), seg(&key)),
                    Some(json!({"incr": n})),
                )?;
                out(vec![v["counter"].to_string()], v)
            }
            MapCmd::Set { name, key, value } => {
                let v = r.call(
                    "POST",
                    &format!("/v1/map/{}/{}", seg(&name), seg(&key)),
                    Some(json!({"set": value})),
                )?;
                out(vec!["ok".into()], v)
            }
            MapCmd::Add { name, key, member } => {
                let v = r.call(
                    "POST",
                    &format!("/v1/map/{}/{}", seg(&name), seg(&key)),
                    Some(json!({"add": member})),
                )?;
                out(vec!["ok".into()], v)
            }
            MapCmd::Remove { name, key } => {
                let v = r.call(
                    "DELETE",
                    &format!("/v1/map/{}/{}", seg(&name), seg(&key)),
                    None,
                )?;
                let was = v["removed"].as_bool().unwrap_or(false);
                out(vec![if was { "removed" } else { "absent" }.into()], v)
            }
            MapCmd::Get { name, key } => {
                let v = r.call(
                    "GET",
                    &format!("/v1/map/{}/{}", seg(&name), seg(&key)),
                    None,
                )?;
                let text = vec![
                    format!("counter\t{}", v["counter"]),
                    format!("register\t{}", v["register"].as_str().unwrap_or("")),
                    format!("set\t{}", lines(&v["set"]).join(",")),
                ];
                out(text, v)
            }
            MapCmd::Keys { name } => {
                let v = r.call("GET", &format!("/v1/map/{}", seg(&name)), None)?;
                out(lines(&v["keys"]), v)
            }
        },
        Cmd::Ls => {
            let v = r.call("GET", "/v1/vars", None)?;
            let text = v["variables"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| {
                            format!(
                                "{}\t{}",
                                x["name"].as_str().unwrap_or(""),
                                x["type"].as_str().unwrap_or("")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out(text, v)
        }
        Cmd::Info | Cmd::Status => {
            let v = r.call("GET", "/v1/status", None)?;
            let text = vec![
                format!("node\t{}", v["id"].as_str().unwrap_or("")),
                format!("listen\t{}", v["listen"].as_str().unwrap_or("")),
                format!("variables\t{}", v["variables"]),
                format!("log seq\t{}", v["last_seq"]),
                format!("peers\t{} ({} connected)", v["peers"], v["connected"]),
            ];
            out(text, v)
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
            PeerCmd::List => {
                let v = r.call("GET", "/v1/peers", None)?;
                let mut text = vec![
                    "id\taddress\tconnected\tlast contact ms\tacked\tlag\tbytes in\tbytes out"
                        .to_string(),
                ];
                if let Some(rows) = v["peers"].as_array() {
                    for p in rows {
                        text.push(format!(
                            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                            p["id"].as_str().unwrap_or(""),
                            p["addr"].as_str().unwrap_or("-"),
                            p["connected"],
                            p["last_contact_ms_ago"],
                            p["acked"],
                            p["lag"],
                            p["bytes_in"],
                            p["bytes_out"]
                        ));
                    }
                }
                out(text, v)
            }
        },
        Cmd::Init { .. } | Cmd::Run { .. } => unreachable!("handled before"),
    })
}
